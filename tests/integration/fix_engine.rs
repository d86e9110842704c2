//! The fix engine and `ferry fix` on hostile and awkward input: symlinks aiming out of the
//! tree, loops, huge and binary files, special files, broken rule files; attributes and line
//! endings kept; the dry-run diff checked with GNU diff and patch; the CLI end to end.

use crate::common;
use crate::fixguest;

use common::{ferry_bin, have_tools, pseudo_random, run};
use ferry::fix::engine;
use ferry::fix::{self, detect, rule, standard, FileTree, HostTree, Selection};
use ferry::fs::files;
use fixguest::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

fn rules_dir(rules: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in rules {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn plan_custom(g: &Guest, rules: &[(&str, &str)]) -> ferry::fix::Result<engine::Plan> {
    let d = rules_dir(rules);
    let rules = rule::load_dir(d.path())?;
    let tree = HostTree::new(g.root())?;
    let facts = detect::detect(&tree);
    engine::plan(&tree, &rules, &facts, &Selection::default())
}

const FSTAB_RULE: &str = "name = \"fstab\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"rewrite-devices\"\npath = \"/etc/fstab\"\nformat = \"fstab\"\n";

fn ferry(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(ferry_bin()).args(args).output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

// --- paths never leave the tree -------------------------------------------------------

#[test]
fn symlinks_out_of_the_tree_resolve_inside_it() {
    let outer = tempfile::tempdir().unwrap();
    let sentinel = outer.path().join("fstab");
    std::fs::write(&sentinel, "/dev/sda1 / ext4 defaults 0 0\n").unwrap();
    let g = Guest::new();
    // Relative links that climb past the root, and an absolute link naming the host path.
    g.link("/etc/fstab", "../../../../../../../../fstab")
        .file("/fstab", "/dev/sdb1 /data ext4 defaults 0 0\n")
        .link("/etc/crypttab", sentinel.to_str().unwrap())
        .file(
            &format!("{}", sentinel.display()),
            "root /dev/sdc2 none luks\n",
        );
    let host_before = std::fs::read(&sentinel).unwrap();
    let tree = HostTree::new(g.root()).unwrap();
    assert_eq!(tree.resolve("/etc/fstab").unwrap(), "/fstab");
    assert_eq!(
        tree.resolve("/etc/crypttab").unwrap(),
        sentinel.to_str().unwrap()
    );
    let rules = standard::rules().unwrap();
    let facts = detect::detect(&tree);
    engine::plan(&tree, &rules, &facts, &Selection::default())
        .unwrap()
        .apply(&tree)
        .unwrap();
    assert_eq!(
        std::fs::read(&sentinel).unwrap(),
        host_before,
        "a host file outside the tree changed"
    );
    assert_eq!(g.read("/fstab"), "/dev/vdb1 /data ext4 defaults 0 0\n");
    assert_eq!(g.readlink("/etc/fstab"), "../../../../../../../../fstab");
    assert_eq!(
        g.read(&format!("{}", sentinel.display())),
        "root /dev/vdc2 none luks\n"
    );
}

#[test]
fn escaping_parent_directories_stay_inside() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::create_dir(outer.path().join("etc")).unwrap();
    let host_fstab = outer.path().join("etc/fstab");
    std::fs::write(&host_fstab, "/dev/sda1 / ext4 defaults 0 0\n").unwrap();
    let g = Guest::new();
    // /etc itself is a link to the host's directory by absolute path and by `..`.
    g.link("/etc", outer.path().join("etc").to_str().unwrap())
        .link("/boot", "../../../../..");
    let tree = HostTree::new(g.root()).unwrap();
    assert_eq!(
        tree.resolve("/boot/etc/fstab").unwrap(),
        "/etc/fstab".replace("/etc", &format!("{}/etc", outer.path().display()))
    );
    // Writes through such links create files inside the guest, never beside it.
    tree.create_dir_all(&format!("{}/etc", outer.path().display()), 0o755)
        .unwrap();
    tree.write("/etc/fstab", b"new\n", ferry::fs::files::Attrs::root(0o644))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&host_fstab).unwrap(),
        "/dev/sda1 / ext4 defaults 0 0\n"
    );
    assert_eq!(
        g.read(&format!("{}/etc/fstab", outer.path().display())),
        "new\n"
    );
    // `..` above the root is the root; `..` after a link is the parent of its target.
    assert_eq!(tree.resolve("/../../boot/../..").unwrap(), "/");
    assert_eq!(
        tree.resolve("/etc/../x").unwrap(),
        format!("{}/x", outer.path().display())
    );
}

#[test]
fn symlink_loops_are_errors_and_nothing_is_written() {
    let g = rhel7();
    g.link("/etc/crypttab", "/etc/crypttab.d/x")
        .link("/etc/crypttab.d", "/etc/crypttab");
    let before = g.fingerprint();
    let out = ferry(&[os("fix"), g.root().as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too many levels of symbolic links"), "{err}");
    assert_eq!(g.fingerprint(), before);
}

#[test]
fn rule_paths_with_dotdot_are_refused() {
    let bad = FSTAB_RULE.replace("/etc/fstab", "/etc/../../../etc/fstab");
    match rule::parse("r.toml", &bad) {
        Err(fix::Error::Schema { line, field, .. }) => {
            assert_eq!((line, field.as_str()), (6, "path"))
        }
        other => panic!("{other:?}"),
    }
}

// --- bad files ------------------------------------------------------------------------

#[test]
fn huge_binary_and_special_files() {
    // A 1 GiB (sparse) fstab: refused by size, before reading it, and nothing written.
    let g = rhel7();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(g.host("/etc/fstab"))
        .unwrap();
    f.set_len(1 << 30).unwrap();
    let before = g.fingerprint();
    let t = std::time::Instant::now();
    match plan_custom(&g, &[("a.toml", FSTAB_RULE)]) {
        Err(fix::Error::Step { source, .. }) => {
            assert!(
                matches!(*source, fix::Error::Files(files::Error::TooLarge { size, .. }) if size == 1 << 30),
                "{source}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed().as_secs() < 5);
    assert_eq!(g.fingerprint(), before);

    // A binary fstab: refused as text.
    let g = rhel7();
    g.bytes("/etc/fstab", b"/dev/sda1 / ext4\0\x01\x02 defaults 0 0\n");
    match plan_custom(&g, &[("a.toml", FSTAB_RULE)]) {
        Err(e @ fix::Error::Step { .. }) => assert!(
            e.to_string()
                .contains("binary file (NUL byte at offset 16)"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    // A FIFO and a directory where fstab should be are not files: left alone, no hang.
    for special in ["fifo", "dir"] {
        let g = rhel7();
        std::fs::remove_file(g.host("/etc/fstab")).unwrap();
        if special == "fifo" {
            let c = std::ffi::CString::new(g.host("/etc/fstab").to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        } else {
            g.dir("/etc/fstab");
        }
        let plan = plan_custom(&g, &[("a.toml", FSTAB_RULE)]).unwrap();
        assert!(plan.is_empty());
    }

    // A dangling link is a missing file.
    let g = rhel7();
    std::fs::remove_file(g.host("/etc/fstab")).unwrap();
    g.link("/etc/fstab", "/nonexistent/fstab");
    assert!(plan_custom(&g, &[("a.toml", FSTAB_RULE)])
        .unwrap()
        .is_empty());
}

#[test]
fn an_error_in_a_later_rule_writes_nothing() {
    let g = rhel7();
    g.bytes("/etc/crypttab", b"\0binary");
    let crypt = FSTAB_RULE.replace("fstab", "crypttab");
    let d = rules_dir(&[("10-a.toml", FSTAB_RULE), ("20-b.toml", &crypt)]);
    let before = g.fingerprint();
    let out = ferry(&[
        os("fix"),
        g.root().as_os_str(),
        os("--no-standard"),
        os("--rules"),
        d.path().as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule `crypttab`")
            && err.contains("20-b.toml:4")
            && err.contains("/etc/crypttab: binary file"),
        "{err}"
    );
    assert_eq!(
        g.fingerprint(),
        before,
        "the fstab edit of the first rule must not be written"
    );
}

#[test]
fn catastrophic_patterns_run_in_linear_time() {
    let g = Guest::new();
    let mut line = "a".repeat(200_000);
    line.push_str("b\n");
    g.file("/etc/x", &line);
    let r = "name = \"x\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"replace\"\npath = \"/etc/x\"\npattern = '(a+)+$'\nwith = \"z\"\n[[edit]]\naction = \"comment\"\npath = \"/etc/x\"\npattern = '^(a|aa|aaa)*(a*)*c'\n";
    let t = std::time::Instant::now();
    let plan = plan_custom(&g, &[("x.toml", r)]).unwrap();
    assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
    assert!(plan.is_empty());
    // A pattern whose compiled form would be huge is refused when the rule is read.
    let big = r.replace("(a+)+$", "(a{1000}){1000}");
    assert!(matches!(
        rule::parse("x.toml", &big),
        Err(fix::Error::Schema { line: 7, .. })
    ));
}

#[test]
fn non_idempotent_rules_are_refused() {
    let g = Guest::new();
    g.file("/etc/x", "foo\n");
    let r = "name = \"grow\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"replace\"\npath = \"/etc/x\"\npattern = 'foo'\nwith = \"foo foo\"\n";
    let before = g.fingerprint();
    match plan_custom(&g, &[("grow.toml", r)]) {
        Err(e) => assert!(e.to_string().contains("not idempotent"), "{e}"),
        Ok(_) => panic!("a rule that grows the file on every run must be refused"),
    }
    assert_eq!(g.fingerprint(), before);
}

// --- what edits keep ------------------------------------------------------------------

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

#[test]
fn edits_keep_mode_owner_xattrs_and_line_endings() {
    let g = rhel7();
    let fstab = g.host("/etc/fstab");
    g.chmod("/etc/fstab", 0o640);
    std::os::unix::fs::lchown(&fstab, Some(12), Some(34)).unwrap();
    let label = b"system_u:object_r:etc_t:s0\0";
    let have_user = set_xattr(&fstab, "user.ferry", b"kept");
    let have_selinux = set_xattr(&fstab, "security.selinux", label);
    if !have_user && !have_selinux {
        eprintln!("SKIP (xattrs): the temporary directory's filesystem takes no xattrs");
    }
    // CRLF line endings survive an edit, and the inserted comment mark is the only change.
    let ifcfg = "DEVICE=eth0\r\nHWADDR=00:0c:29:3e:5b:7a\r\nONBOOT=yes";
    g.file("/etc/sysconfig/network-scripts/ifcfg-eth0", ifcfg);
    let tree = HostTree::new(g.root()).unwrap();
    let facts = detect::detect(&tree);
    engine::plan(
        &tree,
        &standard::rules().unwrap(),
        &facts,
        &Selection::default(),
    )
    .unwrap()
    .apply(&tree)
    .unwrap();
    let m = std::fs::metadata(&fstab).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 12, 34));
    assert!(g.read("/etc/fstab").contains("/dev/vda1"));
    if have_user {
        assert_eq!(xattr(&fstab, "user.ferry").as_deref(), Some(&b"kept"[..]));
    }
    if have_selinux {
        assert_eq!(
            xattr(&fstab, "security.selinux").as_deref(),
            Some(&label[..])
        );
    }
    assert_eq!(
        g.read("/etc/sysconfig/network-scripts/ifcfg-eth0"),
        "DEVICE=eth0\r\n#HWADDR=00:0c:29:3e:5b:7a\r\nONBOOT=yes"
    );
    // No temporary files are left behind.
    assert!(
        g.listing().iter().all(|l| !l.contains(".ferry-")),
        "{:?}",
        g.listing()
    );
}

#[test]
fn write_rules_set_mode_and_owner_and_the_diff_shows_them() {
    let g = Guest::new();
    g.file("/etc/motd", "hello\n").chmod("/etc/motd", 0o600);
    let r = "name = \"w\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"write\"\npath = \"/etc/motd\"\ncontent = \"hello\\n\"\nmode = \"0644\"\nowner = \"0:4\"\n[[edit]]\naction = \"write\"\npath = \"/opt/new/dir/file\"\ncontent = \"x\"\nmode = \"0755\"\n[[edit]]\naction = \"symlink\"\npath = \"/etc/link\"\ntarget = \"/dev/null\"\n[[edit]]\naction = \"delete\"\npath = \"/etc/gone\"\n";
    g.file("/etc/gone", "bye\n");
    let plan = plan_custom(&g, &[("w.toml", r)]).unwrap();
    let diff = plan.diff();
    assert!(diff.contains("diff --ferry a/etc/motd b/etc/motd\nold mode 100600\nnew mode 100644\nold owner 0:0\nnew owner 0:4\n"), "{diff}");
    assert!(diff.contains("new file mode 100755\n--- /dev/null\n+++ b/opt/new/dir/file\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n"), "{diff}");
    assert!(
        diff.contains(
            "diff --ferry a/etc/link b/etc/link\nnew file mode 120000\nnew symlink -> /dev/null\n"
        ),
        "{diff}"
    );
    assert!(
        diff.contains(
            "deleted file mode 100644\n--- a/etc/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
        ),
        "{diff}"
    );
    plan.apply(&HostTree::new(g.root()).unwrap()).unwrap();
    let m = std::fs::metadata(g.host("/etc/motd")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o644, 4));
    assert_eq!(g.mode("/opt/new/dir/file"), 0o755);
    assert_eq!(g.mode("/opt/new/dir"), 0o755);
    assert_eq!(g.readlink("/etc/link"), "/dev/null");
    assert!(!g.exists("/etc/gone"));
}

// --- the diff against GNU diff and patch ------------------------------------------------

#[test]
fn dry_run_diff_matches_diff_and_patch() {
    if !have_tools(&["patch", "diff"]) {
        return;
    }
    for make in [rhel7 as fn() -> Guest, rhel5, debian6, sles12, alpine] {
        let g = make();
        let copy = tempfile::tempdir().unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", g.root().display()))
            .arg(copy.path()));
        let before = g.fingerprint();
        let out = ferry(&[
            os("fix"),
            g.root().as_os_str(),
            os("--dry-run"),
            os("--json"),
        ]);
        // Changes pending: exit status 2.
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(g.fingerprint(), before, "--dry-run changed the tree");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["changed"], true);
        let diff = report["diff"].as_str().unwrap().to_string();

        // Each modified file's hunks are what `diff -u` prints.
        let tree = HostTree::new(g.root()).unwrap();
        let plan = engine::plan(
            &tree,
            &standard::rules().unwrap(),
            &detect::detect(&tree),
            &Selection::default(),
        )
        .unwrap();
        let mut compared = 0;
        for c in &plan.changes {
            if let (engine::Node::File { data: a, .. }, engine::Node::File { data: b, .. }) =
                (&c.before, &c.after)
            {
                if a == b {
                    continue;
                }
                let d = tempfile::tempdir().unwrap();
                std::fs::write(d.path().join("a"), a).unwrap();
                std::fs::write(d.path().join("b"), b).unwrap();
                let o = Command::new("diff")
                    .arg("-u")
                    .arg(d.path().join("a"))
                    .arg(d.path().join("b"))
                    .output()
                    .unwrap();
                let gnu = String::from_utf8_lossy(&o.stdout);
                let gnu_hunks: String = gnu.lines().skip(2).map(|l| format!("{l}\n")).collect();
                assert_eq!(ferry::fix::diff::unified(a, b, 3), gnu_hunks, "{}", c.path);
                compared += 1;
            }
        }
        assert!(compared >= 2);

        // `patch -p1` turns the copy into the fixed tree, file content for file content.
        let mut p = Command::new("patch");
        p.arg("-p1").arg("-E").arg("-s").arg("-d").arg(copy.path());
        let o = common::run_with_stdin(&mut p, diff.as_bytes());
        assert!(
            o.status.success(),
            "patch: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let out = ferry(&[os("fix"), g.root().as_os_str()]);
        assert!(out.status.success());
        let files = |root: &Path| -> Vec<(String, Vec<u8>)> {
            let mut v = Vec::new();
            for l in listing(root) {
                let rel = l.split(' ').next().unwrap().to_string();
                let p = root.join(&rel);
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_file() {
                    v.push((rel, std::fs::read(&p).unwrap()));
                }
            }
            v
        };
        // patch(1) neither deletes binary files nor creates empty ones: leave those out.
        let beyond_patch: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| {
                let data = |n: &engine::Node| match n {
                    engine::Node::File { data, .. } => Some(data.clone()),
                    _ => None,
                };
                let (a, b) = (data(&c.before), data(&c.after));
                a.iter().chain(b.iter()).any(|d| d.contains(&0))
                    || (a.is_none() && b.as_ref().is_some_and(|d| d.is_empty()))
            })
            .map(|c| c.path.trim_start_matches('/').to_string())
            .collect();
        let keep = |v: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
            v.into_iter()
                .filter(|(p, _)| !beyond_patch.contains(p))
                .collect()
        };
        let (a, b) = (keep(files(copy.path())), keep(files(g.root())));
        let differ: Vec<&String> = a
            .iter()
            .map(|(p, _)| p)
            .chain(b.iter().map(|(p, _)| p))
            .filter(|p| a.iter().find(|(q, _)| q == *p) != b.iter().find(|(q, _)| q == *p))
            .collect();
        assert!(
            differ.is_empty(),
            "patched copy and fixed tree differ in {differ:?}"
        );
    }
}

// --- the command line ------------------------------------------------------------------

#[test]
fn cli_reports_then_has_nothing_to_do() {
    let g = rhel5();
    let out = ferry(&[os("fix"), g.root().as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("fixed      fstab-devices"), "{text}");
    assert!(text.contains("/etc/fstab (+2 -2)"), "{text}");
    assert!(
        text.contains("skipped    grub2-devices             boot loader is grub, not grub2"),
        "{text}"
    );
    assert!(
        text.contains("skipped    net-dhcp                  opt-in: run it with --enable net-dhcp")
    );
    assert!(
        text.lines().last().unwrap().starts_with("Changed "),
        "{text}"
    );
    let again = ferry(&[os("fix"), g.root().as_os_str()]);
    let text = String::from_utf8(again.stdout).unwrap();
    assert!(
        text.ends_with("Nothing to do: every rule that applies to this guest is already done.\n"),
        "{text}"
    );
    assert!(!text.contains("fixed "));
    let json = ferry(&[os("fix"), g.root().as_os_str(), os("--json")]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changed"], false);
    assert_eq!(v["facts"]["distro"], "rhel");
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] != "applied"));
}

#[test]
fn cli_exit_statuses_and_usage_errors() {
    let g = rhel5();
    let dry = ferry(&[os("fix"), g.root().as_os_str(), os("--dry-run")]);
    assert_eq!(dry.status.code(), Some(2), "changes pending");
    assert!(ferry(&[os("fix"), g.root().as_os_str()]).status.success());
    let dry = ferry(&[os("fix"), g.root().as_os_str(), os("--dry-run")]);
    assert_eq!(dry.status.code(), Some(0), "nothing pending");
    // --list needs no guest.
    let list = ferry(&[os("fix"), os("--list")]);
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("fstab-devices"));
    let both = ferry(&[
        os("fix"),
        g.root().as_os_str(),
        os("--only"),
        os("fstab-devices"),
        os("--skip"),
        os("fstab-devices"),
    ]);
    assert!(!both.status.success());
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(err.contains("both --only and --skip"), "{err}");
    // A directory that holds no guest is an error, not "nothing to do".
    let empty = tempfile::tempdir().unwrap();
    let none = ferry(&[os("fix"), empty.path().as_os_str()]);
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("no operating system found"), "{err}");
}

#[test]
fn cli_only_skip_facts_and_unknown_names() {
    let g = rhel7();
    let facts = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(
        facts.path(),
        "[[devices.devices]]\ndevice = \"/dev/sda1\"\nstable = \"LABEL=boot\"\n",
    )
    .unwrap();
    let out = ferry(&[
        os("fix"),
        g.root().as_os_str(),
        os("--only"),
        os("fstab-devices"),
        os("--facts"),
        facts.path().as_os_str(),
        os("--json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["files"][0]["lines_added"], 1);
    assert!(g
        .read("/etc/fstab")
        .contains("\nLABEL=boot               /boot"));
    assert!(
        g.read("/boot/grub2/grub.cfg").contains("root=/dev/xvda1"),
        "only fstab-devices ran"
    );
    let out = ferry(&[
        os("fix"),
        g.root().as_os_str(),
        os("--skip"),
        os("no-such-rule"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule named `no-such-rule`"));
    let bad = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(bad.path(), "{\"init\": \"upstartd\"}").unwrap();
    let out = ferry(&[
        os("fix"),
        g.root().as_os_str(),
        os("--facts"),
        bad.path().as_os_str(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown variant `upstartd`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_schema_errors_name_file_line_and_field() {
    let g = rhel7();
    let cases = [
        ("name = \"x\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"replace\"\npath = \"/etc/fstab\"\npattern = \"[unclosed\"\nwith = \"\"\n", ":7: pattern: "),
        ("name = \"x\"\ndescription = \"d\"\nwhy = \"w\"\nwhen = { distro = [\"rhel >= seven\"] }\n[[edit]]\naction = \"delete\"\npath = \"/x\"\n", ":4: when.distro: "),
        ("name = \"x\"\ndescription = \"d\"\nwhy = \"w\"\n\n[[edit]]\naction = \"delete\"\npath = \"/x\"\ncolour = \"red\"\n", ":8: colour: unknown field `colour`"),
        ("name = \"x\"\ndescription = \"d\"\n[[edit]\n", ":3: "),
        ("name = \"Bad Name\"\ndescription = \"d\"\nwhy = \"w\"\n[[edit]]\naction = \"delete\"\npath = \"/x\"\n", ":1: name: "),
    ];
    for (text, want) in cases {
        let d = rules_dir(&[("broken.toml", text)]);
        let out = ferry(&[
            os("fix"),
            g.root().as_os_str(),
            os("--rules"),
            d.path().as_os_str(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("broken.toml{want}")),
            "want {want:?} in {err}"
        );
    }
}

// --- rule files that are not rule files ---------------------------------------------------

#[test]
fn garbage_rule_files_are_errors_not_panics() {
    let mut n_ok = 0;
    for (name, text) in standard::FILES {
        let bytes = text.as_bytes();
        let r = pseudo_random(name.len() as u64, 4096);
        for i in 0..200 {
            let mut m = bytes.to_vec();
            let at = u32::from_le_bytes(r[(i * 4) % 4090..(i * 4) % 4090 + 4].try_into().unwrap())
                as usize;
            match i % 4 {
                0 => m.truncate(at % m.len()),
                1 => m[at % bytes.len()] = r[i % 4096],
                2 => m.insert(at % bytes.len(), b"[\"'{}=\n"[i % 7]),
                _ => m
                    .splice(
                        at % bytes.len()..at % bytes.len(),
                        r[..i % 64].iter().copied(),
                    )
                    .for_each(drop),
            }
            if let Ok(s) = String::from_utf8(m) {
                if rule::parse("m.toml", &s).is_ok() {
                    n_ok += 1;
                }
            }
        }
    }
    for len in [0, 1, 7, 100, 5000] {
        let junk = String::from_utf8_lossy(&pseudo_random(len as u64 + 9, len)).into_owned();
        assert!(rule::parse("junk.toml", &junk).is_err());
    }
    // Some mutants stay valid (a changed letter in a description): the parser ran on both kinds.
    assert!(n_ok > 0);
}
