//! `ferry hash` and `ferry timeline` (issue 18) against real oracles: qemu-img convert plus
//! the coreutils *sum tools for disk digests, `sha256sum -c` in a kernel loop mount for the
//! file manifest, and The Sleuth Kit's `fls -r -m /` for the body file.

use crate::common::{self, ferry_ok, kernel, qemu_img, qemu_io, Unchanged};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `qemu-img convert -O raw IMG` then TOOL (sha256sum...) of the result: the oracle.
fn qemu_digest(image: &Path, tool: &str, scratch: &Path) -> String {
    let _ = std::fs::remove_file(scratch);
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        scratch.to_str().unwrap(),
    ]);
    let out = common::run(Command::new(tool).arg(scratch));
    out.split_whitespace().next().unwrap().to_string()
}

#[test]
fn disk_digests_match_qemu_img_and_coreutils() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sparse = d.join("sparse.raw");
    common::make_mixed_raw(&sparse, 48 << 20, 7);
    let dense = d.join("dense.raw");
    common::run(
        Command::new("cp")
            .arg("--sparse=never")
            .arg(&sparse)
            .arg(&dense),
    );
    // A compressed base under an overlay that rewrites, zeroes and discards parts of it.
    let base = d.join("base.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        sparse.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x5a 1M 3M",
            "write -z 8M 2M",
            "write -P 0x11 47M 1M",
            "discard 20M 64k",
        ],
    );
    let vmdk = d.join("disk.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        top.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
    let images = [&sparse, &dense, &base, &top, &vmdk];
    let guard = Unchanged::new(&images.map(|p| p.as_path()));
    let scratch = dir.path().join("oracle.raw");
    for image in images {
        for (algo, tool) in [
            ("sha256", "sha256sum"),
            ("sha1", "sha1sum"),
            ("md5", "md5sum"),
        ] {
            let want = qemu_digest(image, tool, &scratch);
            let out = ferry_ok(&["hash", "--algo", algo, image.to_str().unwrap()]);
            let got = out.split_whitespace().next().unwrap();
            assert_eq!(got, want, "{algo} of {}", image.display());
        }
    }
    let _ = std::fs::remove_file(&scratch);
    drop(guard);
}

/// Files whose names and contents a manifest must get right: spaces, a backslash, an empty
/// file, a sparse one, a hard link, a file under a symlinked directory's real path.
fn populate(src: &Path) {
    std::fs::create_dir_all(src.join("etc/deep/er")).unwrap();
    std::fs::write(src.join("etc/hostname"), "guest\n").unwrap();
    std::fs::write(src.join("etc/with space"), "a b c").unwrap();
    std::fs::write(src.join("etc/back\\slash"), "bs").unwrap();
    std::fs::write(src.join("etc/empty"), "").unwrap();
    std::fs::write(
        src.join("etc/deep/er/data"),
        common::pseudo_random(3, 300_000),
    )
    .unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(5 << 20).unwrap();
    std::fs::hard_link(src.join("etc/hostname"), src.join("hostname.link")).unwrap();
    std::os::unix::fs::symlink("etc", src.join("etc.link")).unwrap();
}

#[test]
fn file_manifest_is_accepted_by_sha256sum_in_a_kernel_mount() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(&img, "32M", Some(&src), &[]);
    let guard = Unchanged::new(&[&img]);
    let manifest = ferry_ok(&["hash", "--files", img.to_str().unwrap()]);
    drop(guard);
    assert!(manifest.contains("  etc/with space\n"), "{manifest}");
    assert!(manifest.contains("  sparse\n"), "{manifest}");
    assert_eq!(manifest.lines().count(), 7, "{manifest}");
    let list = dir.path().join("manifest");
    std::fs::write(&list, &manifest).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let Some(m) = kernel::mount_or_skip(&img, &mnt, "ro") else {
        return;
    };
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg("--strict")
        .arg(&list)
        .current_dir(m.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = String::from_utf8_lossy(&out.stdout).matches(": OK").count();
    assert_eq!(ok, 7);
}

/// Each of fls's lines agrees with ferry's line of the same name: inode, mode string, uid,
/// gid and size exactly, the four times to the second (ferry adds the fraction).
fn assert_fields_agree(got: &BTreeMap<String, Vec<String>>, want: &BTreeMap<String, Vec<String>>) {
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g[..5], w[..5], "{name}");
        for i in 5..9 {
            assert_eq!(
                g[i].split('.').next().unwrap(),
                w[i],
                "{name} time field {i}"
            );
        }
    }
}

/// Body-file lines by name (fields after the name).
fn body(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 11, "not a body-file line: {l}");
            (
                f[1].to_string(),
                f[2..].iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn timeline_agrees_with_fls_field_by_field() {
    if !have("fls") {
        assert!(
            !kernel::required(),
            "fls (sleuthkit) missing: contrib/setup.sh installs it"
        );
        eprintln!("SKIP: fls (sleuthkit) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(&img, "32M", Some(&src), &["-I", "256", "-b", "4096"]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // Modify it through the kernel: created, renamed, deleted, re-owned, re-moded, special
    // files; times with nanoseconds come from the kernel.
    {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        let r = m.path();
        std::fs::write(r.join("new file"), "fresh").unwrap();
        std::fs::rename(r.join("etc/hostname"), r.join("etc/hostname.old")).unwrap();
        std::fs::remove_file(r.join("etc/empty")).unwrap();
        std::fs::create_dir(r.join("var")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname.old", r.join("var/link")).unwrap();
        common::run(Command::new("mkfifo").arg(r.join("var/fifo")));
        common::run(
            Command::new("chown")
                .arg("1234:567")
                .arg(r.join("new file")),
        );
        common::run(Command::new("chmod").arg("6750").arg(r.join("new file")));
        common::run(Command::new("chmod").arg("1777").arg(r.join("var")));
        common::run(
            Command::new("touch")
                .args(["-d", "1999-12-31 23:59:59.25"])
                .arg(r.join("sparse")),
        );
        // Removed by the kernel, which zeroes the records: their inodes (a file with data,
        // a directory and what it held, fast and slow symlinks) become fls's orphans.
        std::fs::remove_dir_all(r.join("etc/deep")).unwrap();
        std::fs::remove_file(r.join("etc.link")).unwrap();
        std::os::unix::fs::symlink("t".repeat(100), r.join("var/long")).unwrap();
        std::os::unix::fs::symlink("short", r.join("var/short")).unwrap();
        m.unmount().unwrap();
    }
    {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        std::fs::remove_file(m.path().join("var/long")).unwrap();
        std::fs::remove_file(m.path().join("var/short")).unwrap();
        m.unmount().unwrap();
    }
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    drop(guard);
    let fls = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    // Everything fls prints, its virtual $OrphanFiles directory and the unnamed free inodes
    // under it included.
    let fls = body(&fls);
    let ours = body(&ours);
    let orphans = |b: &BTreeMap<String, Vec<String>>| {
        b.keys()
            .filter(|n| n.starts_with("/$OrphanFiles/OrphanFile-"))
            .count()
    };
    eprintln!("orphans: fls {}, ferry {}", orphans(&fls), orphans(&ours));
    assert!(
        orphans(&fls) >= 3,
        "the kernel's removals left fewer orphans than expected: {fls:?}"
    );
    // One past the last inode (8192 here), type "V".
    assert_eq!(fls["/$OrphanFiles"][..2], ["8193", "V/V---------"]);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        fls.keys().collect::<Vec<_>>(),
        "names"
    );
    let mut fractional = 0;
    for (name, want) in &fls {
        let got = &ours[name];
        // inode, mode string, uid, gid, size exactly.
        assert_eq!(got[..5], want[..5], "{name}");
        // atime, mtime, ctime, crtime: fls prints whole seconds; ferry adds the fraction.
        for i in 5..9 {
            let whole = got[i].split('.').next().unwrap();
            assert_eq!(whole, want[i], "{name} time field {i}: ours {}", got[i]);
            fractional += usize::from(got[i].contains('.'));
        }
        if name != "/$OrphanFiles" {
            assert_ne!(want[8], "0", "{name}: crtime expected on 256-byte inodes");
        }
    }
    assert!(
        fractional > 0,
        "no nanoseconds at all in a kernel-modified ext4"
    );
    assert_eq!(ours["/sparse"][6], "946684799.25");
    assert_eq!(ours["/new file"][1], "r/rrwsr-s---");
    assert_eq!(ours["/new file"][2..4], ["1234", "567"]);
    // mactime reads it.
    let bodyfile = dir.path().join("body");
    std::fs::write(&bodyfile, ferry_ok(&["timeline", img.to_str().unwrap()])).unwrap();
    if have("mactime") {
        let t = common::run(
            Command::new("mactime")
                .args(["-b"])
                .arg(&bodyfile)
                .args(["-d"]),
        );
        assert!(t.contains("/etc/hostname.old"), "{t}");
    }
}

fn debugfs_w(img: &Path, request: &str) {
    common::run(Command::new("debugfs").args(["-w", "-R", request]).arg(img));
}

/// Whether fls (sleuthkit) and debugfs are here; a SKIP (a failure under FERRY_REQUIRE_FUSE=1)
/// when not.
fn have_fls_and_debugfs() -> bool {
    if have("fls") && have("debugfs") {
        return true;
    }
    assert!(
        !kernel::required(),
        "fls or debugfs missing: contrib/setup.sh installs them"
    );
    eprintln!("SKIP: fls (sleuthkit) or debugfs is not installed");
    false
}

/// Removed entries: an ext4 made with mkfs -d, changed through kernel mounts (created,
/// renamed, deleted) and through debugfs `rm`, `kill_file` and `unlink` (a removed directory
/// whose records ferry lists below it, as fls does) (e2fsprogs' unlink merges the record into its
/// predecessor and leaves its bytes, as kernels before 6.x did; this kernel zeroes a removed
/// record, so what it deletes is gone for fls and ferry alike). One freed inode is then
/// reused by a new file elsewhere. Every line fls prints for a removed name, ferry prints
/// the same: name with "(deleted)" or "(deleted-realloc)", inode, mode, uid, gid, size, and
/// the four times (whole seconds; ferry adds the fraction).
#[test]
fn timeline_lists_deleted_entries_as_fls_does() {
    if !have_fls_and_debugfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d/sub")).unwrap();
    for i in 1..=8 {
        std::fs::write(src.join(format!("d/file{i}")), format!("content {i}\n")).unwrap();
    }
    std::fs::write(src.join("d/sub/inner"), "inner").unwrap();
    std::fs::create_dir_all(src.join("d/gonedir/deeper")).unwrap();
    std::fs::write(src.join("d/gonedir/kept"), "kept").unwrap();
    std::fs::write(src.join("d/gonedir/also-gone"), "also").unwrap();
    std::fs::write(src.join("d/gonedir/deeper/leaf"), "leaf").unwrap();
    std::os::unix::fs::symlink("file1", src.join("d/link")).unwrap();
    std::fs::write(src.join("top"), "top").unwrap();
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(&img, "16M", Some(&src), &["-I", "256"]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        let r = m.path();
        std::fs::write(r.join("d/kernel new"), "new").unwrap();
        std::fs::rename(r.join("d/file1"), r.join("d/renamed1")).unwrap();
        std::fs::remove_file(r.join("d/file8")).unwrap();
        m.unmount().unwrap();
    }
    for f in [
        "/d/file2",
        "/d/file4",
        "/d/file5",
        "/d/link",
        "/d/sub/inner",
        "/top",
    ] {
        debugfs_w(&img, &format!("rm {f}"));
    }
    {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        // The lowest free inode is file2's: the new file takes it, its old name stays in /d.
        std::fs::write(m.path().join("reuse"), "reused").unwrap();
        m.unmount().unwrap();
    }
    // A removed directory whose blocks stay: its inode and blocks freed (kill_file), its name
    // then removed (the record survives). One of its files was removed before it (a removed
    // record in a removed directory); the rest keep their inodes (fls: "deleted-realloc").
    debugfs_w(&img, "kill_file /d/gonedir/also-gone");
    debugfs_w(&img, "unlink /d/gonedir/also-gone");
    debugfs_w(&img, "kill_file /d/gonedir");
    debugfs_w(&img, "unlink /d/gonedir");
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    let json = ferry_ok(&["timeline", "--json", img.to_str().unwrap()]);
    drop(guard);
    let fls = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let removed = |text: &str| -> BTreeMap<String, Vec<String>> {
        body(text)
            .into_iter()
            .filter(|(n, _)| n.contains(" (deleted"))
            .collect()
    };
    let (want, got) = (removed(&fls), removed(&ours));
    let orphans = |b: &BTreeMap<String, Vec<String>>| {
        b.keys().filter(|n| n.starts_with("/$OrphanFiles/")).count()
    };
    eprintln!(
        "removed entries: fls {}, ferry {}; of them orphans: fls {}, ferry {}",
        want.len(),
        got.len(),
        orphans(&want),
        orphans(&got)
    );
    // file8, removed by the kernel (its record zeroed), is an orphan.
    assert!(orphans(&want) >= 1, "{fls}");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "removed names\nfls:\n{fls}\nferry:\n{ours}"
    );
    assert_fields_agree(&got, &want);
    for must in [
        "/d/file2 (deleted-realloc)",
        "/d/file4 (deleted)",
        "/d/sub/inner (deleted)",
        "/d/link -> file1 (deleted)",
        "/d/gonedir (deleted)",
        "/d/gonedir/kept (deleted-realloc)",
        "/d/gonedir/also-gone (deleted)",
        "/d/gonedir/deeper (deleted-realloc)",
    ] {
        assert!(want.contains_key(must), "fls lacks {must}:\n{fls}");
    }
    // The reused inode's metadata is the new file's, as fls shows it.
    assert_eq!(got["/d/file2 (deleted-realloc)"][4], "6");
    let flagged: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["deleted"] == true)
        .collect();
    assert_eq!(flagged.len(), want.len(), "{json}");
    assert!(flagged
        .iter()
        .any(|v| v["path"] == "/d/file2" && v["reallocated"] == true));
}

/// An orphan directory whose blocks still hold its records: `/d/od` loses its name (debugfs
/// `unlink`, then a kernel mount gives a same-length name the record's bytes, so no removed
/// name reaches it) and is freed with its blocks left (`kill_file`), as are one of its files
/// (its record removed too), a subdirectory and that one's file, and a record in the
/// subdirectory that names the subdirectory itself (a loop). fls lists `od` as
/// `$OrphanFiles/OrphanFile-N` with everything below it; ferry prints exactly fls's lines,
/// field by field (whole seconds; ferry adds the fraction), the loop entered once. (Where fls's
/// de-duplicating walk meets a record in use it stops, so orphans after it are listed at the
/// top as well; ferry follows.)
#[test]
fn timeline_descends_into_orphan_directories_as_fls_does() {
    if !have_fls_and_debugfs() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d/od/deeper")).unwrap();
    std::fs::create_dir_all(src.join("d/od/sub2")).unwrap();
    std::fs::write(src.join("d/od/deeper/leaf"), "leaf").unwrap();
    std::fs::write(src.join("d/od/kept"), "kept").unwrap();
    std::fs::write(src.join("d/od/gone"), "gone").unwrap();
    std::fs::write(src.join("d/od/sub2/f"), "sub2 file").unwrap();
    std::fs::write(src.join("d/aaaa"), "a").unwrap();
    std::fs::write(src.join("d/zzzz"), "z").unwrap();
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(&img, "16M", Some(&src), &["-I", "256"]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ino = |m: &Path, p: &str| std::fs::metadata(m.join(p)).unwrap().ino();
    let (od, gone, sub2, f) = {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        let r = m.path().to_path_buf();
        let inos = (
            ino(&r, "d/od"),
            ino(&r, "d/od/gone"),
            ino(&r, "d/od/sub2"),
            ino(&r, "d/od/sub2/f"),
        );
        m.unmount().unwrap();
        inos
    };
    debugfs_w(&img, &format!("ln <{sub2}> <{sub2}>/back"));
    debugfs_w(&img, "unlink /d/od");
    {
        let Some(m) = kernel::mount_or_skip(&img, &mnt, "") else {
            return;
        };
        // Two letters, as "od": the kernel puts the record where od's was.
        std::fs::write(m.path().join("d/nn"), "").unwrap();
        m.unmount().unwrap();
    }
    debugfs_w(&img, &format!("kill_file <{gone}>"));
    debugfs_w(&img, &format!("unlink <{od}>/gone"));
    for i in [f, sub2, od] {
        debugfs_w(&img, &format!("kill_file <{i}>"));
    }
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    let json = ferry_ok(&["timeline", "--json", img.to_str().unwrap()]);
    drop(guard);
    let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let (want, got) = (body(&fls_text), body(&ours));
    let top = format!("/$OrphanFiles/OrphanFile-{od}");
    for must in [
        format!("{top} (deleted)"),
        format!("{top}/kept (deleted-realloc)"),
        format!("{top}/deeper (deleted-realloc)"),
        format!("{top}/gone (deleted)"),
        format!("{top}/sub2 (deleted)"),
        format!("{top}/sub2/f (deleted)"),
        format!("{top}/sub2/back (deleted)"),
    ] {
        assert!(want.contains_key(&must), "fls lacks {must}:\n{fls_text}");
    }
    assert!(
        !want
            .keys()
            .any(|k| k.starts_with(&format!("{top}/sub2/back/"))),
        "fls entered the loop:\n{fls_text}"
    );
    assert!(
        !want.contains_key("/d/od (deleted)"),
        "od's name survived: not an orphan\n{fls_text}"
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "names\nfls:\n{fls_text}\nferry:\n{ours}"
    );
    assert_fields_agree(&got, &want);
    // Only the orphan itself is marked one; what lies below it was reached by a name.
    let orphans: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["orphan"] == true)
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    assert!(orphans.contains(&top), "{orphans:?}");
    assert!(
        orphans.iter().all(|p| !p.starts_with(&format!("{top}/"))),
        "{orphans:?}"
    );
    // The data under the orphan is ferry's to list, never to change: checked by `guard`.
}

/// NTFS: files removed through ntfs-3g keep their MFT records (in-use flag cleared), which fls
/// lists as removed entries under their parent directory, or, once that directory's record was
/// reused, under `$OrphanFiles` by their own name, with what a removed directory held below it;
/// mkntfs's reserved records 16-23 are `OrphanFile-N`. ferry lists the same removed names, and
/// per line the same record number, type letters, size (files) and the four times (whole
/// seconds). Not compared: uid/gid and permission bits (ferry shows NTFS ownership and modes as
/// ntfs-3g does, fls from the security id and read-only flag), directory sizes (fls: the index
/// root) and fls's extra `($FILE_NAME)` lines, which ferry does not print for any file.
#[test]
fn timeline_lists_removed_ntfs_records_as_fls_does() {
    if !have("fls") || !common::have_tools(&["mkntfs", "ntfs-3g"]) {
        assert!(
            !kernel::required(),
            "fls, mkntfs or ntfs-3g missing: contrib/setup.sh installs them"
        );
        eprintln!("SKIP: fls (sleuthkit), mkntfs or ntfs-3g is not installed");
        return;
    }
    use common::ntfs3g::Ntfs3g;
    let (_dir, img, mnt) = ntfs_scratch();
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        let r = &m.0;
        std::fs::create_dir_all(r.join("docs/sub")).unwrap();
        std::fs::create_dir_all(r.join("gonedir/inner")).unwrap();
        std::fs::write(r.join("docs/a.txt"), "hello\n").unwrap();
        std::fs::write(r.join("docs/b.txt"), "bye\n").unwrap();
        std::fs::write(r.join("docs/big.bin"), vec![0x5au8; 5000]).unwrap();
        std::fs::write(r.join("docs/sub/s.txt"), "s\n").unwrap();
        std::fs::write(r.join("gonedir/inner/i.txt"), "i\n").unwrap();
        std::fs::write(r.join("gonedir/g.txt"), "g\n").unwrap();
        std::fs::write(r.join("top.txt"), "top\n").unwrap();
    }
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        let r = &m.0;
        for f in ["docs/b.txt", "docs/big.bin", "top.txt"] {
            std::fs::remove_file(r.join(f)).unwrap();
        }
        std::fs::remove_dir_all(r.join("gonedir")).unwrap();
        // Takes the lowest free record, gonedir's: what gonedir held is orphaned.
        std::fs::write(r.join("docs/new.txt"), "new\n").unwrap();
    }
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    drop(guard);
    let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let (want, got) = (removed_ntfs_names(&fls_text), removed_ntfs_names(&ours));
    for must in [
        "/docs/b.txt (deleted)",
        "/docs/big.bin (deleted)",
        "/top.txt (deleted)",
        "/$OrphanFiles/g.txt (deleted)",
        "/$OrphanFiles/inner (deleted)",
        "/$OrphanFiles/inner/i.txt (deleted)",
        "/$OrphanFiles/OrphanFile-16 (deleted)",
    ] {
        assert!(want.contains_key(must), "fls lacks {must}:\n{fls_text}");
    }
    assert_removed_like_fls(&want, &got, &fls_text, &ours);
    // The live files are still listed, and a removed name is never a live one's.
    let all = body(&ours);
    assert!(all.contains_key("/docs/new.txt"), "{ours}");
    assert!(!all.contains_key("/docs/b.txt"), "{ours}");
}

/// The NTFS tools the index-slack tests need (fls, mkntfs, ntfs-3g, libfaketime), or a loud
/// skip.
fn ntfs_slack_tools() -> Option<std::path::PathBuf> {
    let lib = common::ntfs3g::faketime_lib();
    if !have("fls") || !common::have_tools(&["mkntfs", "ntfs-3g"]) || lib.is_none() {
        assert!(
            !kernel::required(),
            "fls, mkntfs, ntfs-3g or libfaketime missing: contrib/setup.sh installs them"
        );
        eprintln!("SKIP: fls (sleuthkit), mkntfs, ntfs-3g or libfaketime is not installed");
        return None;
    }
    lib
}

/// A fresh 16 MiB mkntfs image in a temporary directory (removed when the first value is
/// dropped), and a mountpoint beside it.
fn ntfs_scratch() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ntfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    common::run(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&img));
    let mnt = dir.path().join("mnt");
    (dir, img, mnt)
}

/// The removed names of an NTFS body file (fls's or ferry's), without fls's extra
/// `($FILE_NAME)` lines.
fn removed_ntfs_names(text: &str) -> BTreeMap<String, Vec<String>> {
    body(text)
        .into_iter()
        .filter(|(n, _)| n.contains(" (deleted") && !n.contains("($FILE_NAME)"))
        .collect()
}

/// The removed names of fls's body file (`want`, from `fls_text`) and of ferry's (`got`,
/// from `ours`) agree: the same names; for each, the same record, type letters and four
/// times (seconds), and the size of a regular file; a name without metadata fully the same.
fn assert_removed_like_fls(
    want: &BTreeMap<String, Vec<String>>,
    got: &BTreeMap<String, Vec<String>>,
    fls_text: &str,
    ours: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "removed names\nfls:\n{fls_text}\nferry:\n{ours}"
    );
    for (name, w) in want {
        let g = &got[name];
        if no_meta(&w[1]) {
            assert_eq!(g, w, "{name}: a name without metadata");
            continue;
        }
        // fls: record-type-id.
        assert_eq!(g[0], w[0].split('-').next().unwrap(), "{name} record");
        assert_eq!(g[1][..3], w[1][..3], "{name} type letters");
        if w[1][2..].starts_with('r') {
            assert_eq!(g[4], w[4], "{name} size");
        }
        for i in 5..9 {
            assert_eq!(
                g[i].split('.').next().unwrap(),
                w[i],
                "{name} time field {i}"
            );
        }
    }
}

/// Whether a body-file mode column has no metadata behind it (fls: the name's inode holds
/// another file now, or none).
fn no_meta(mode: &str) -> bool {
    mode.ends_with("/----------")
}

/// NTFS index slack: removing an index entry moves the next ones down over it, so stale
/// entries stay past a node's used size, and fls lists the plausible ones as removed names
/// of the directory ("r/" or "d/" from the entry's own $FILE_NAME flags; a name from a
/// removed MFT record alone is "-/"). ntfs-3g fills a directory with enough files for INDX
/// blocks and a small one whose index is only $INDEX_ROOT, under a 2019 clock (fls 4.11
/// takes slack entries only with times from 1970 to 2019-12-26), then removes some, renames
/// some (the old name's record is the same file: "(deleted-realloc)") and creates files that
/// take the freed records (the old name's record moved on: fls shows no metadata). A
/// directory written with today's clock has slack fls does not take. ferry lists the same
/// removed names with the same record numbers, type letters, sizes and times (fields as in
/// `timeline_lists_removed_ntfs_records_as_fls_does`), the names without metadata field for
/// field; and the live names as fls lists them.
#[test]
fn timeline_lists_ntfs_index_slack_names_as_fls_does() {
    let Some(lib) = ntfs_slack_tools() else {
        return;
    };
    use common::ntfs3g::Ntfs3g;
    let (_dir, img, mnt) = ntfs_scratch();
    {
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-01 12:00:00");
        let r = &m.0;
        std::fs::create_dir_all(r.join("many")).unwrap();
        std::fs::create_dir_all(r.join("small")).unwrap();
        for i in 1..=120 {
            std::fs::write(r.join(format!("many/f{i:03}.txt")), format!("file {i}\n")).unwrap();
        }
        for n in ["a", "b", "c"] {
            std::fs::write(r.join(format!("small/{n}.txt")), n).unwrap();
        }
    }
    // Today's clock, before the 2019 removals so that their records stay free.
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        std::fs::create_dir_all(m.0.join("late")).unwrap();
        for i in 1..=60 {
            std::fs::write(m.0.join(format!("late/l{i:03}.txt")), "late\n").unwrap();
        }
    }
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        for i in (3..=60).step_by(7) {
            std::fs::remove_file(m.0.join(format!("late/l{i:03}.txt"))).unwrap();
        }
    }
    {
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-02 12:00:00");
        let r = &m.0;
        for i in (5..=120).step_by(9) {
            std::fs::remove_file(r.join(format!("many/f{i:03}.txt"))).unwrap();
        }
        for i in [11, 31, 51] {
            std::fs::rename(
                r.join(format!("many/f{i:03}.txt")),
                r.join(format!("many/g{i:03}.txt")),
            )
            .unwrap();
        }
        std::fs::remove_file(r.join("small/c.txt")).unwrap();
    }
    {
        // Take the six lowest free records: some of /many's.
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-03 12:00:00");
        for i in 1..=6 {
            std::fs::write(m.0.join(format!("new{i}.txt")), "new\n").unwrap();
        }
    }
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    let json = ferry_ok(&["timeline", "--json", img.to_str().unwrap()]);
    drop(guard);
    let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let pick = |text: &str, deleted: bool| -> BTreeMap<String, Vec<String>> {
        body(text)
            .into_iter()
            .filter(|(n, _)| {
                n.contains(" (deleted") == deleted && !n.contains("($FILE_NAME)")
                    // fls lists the metadata files' streams ($Extend/$ObjId:$O...).
                    && (deleted || !n.starts_with("/$"))
            })
            .collect()
    };
    let (want, got) = (pick(&fls_text, true), pick(&ours, true));
    // The cases this test is about, as fls shows them (from the slack: a type letter).
    let slack: Vec<(&String, &Vec<String>)> = want
        .iter()
        .filter(|(n, w)| n.starts_with("/many/") && !w[1].starts_with("-/"))
        .collect();
    let has = |what: &str, f: &dyn Fn(&str, &Vec<String>) -> bool| {
        assert!(
            slack.iter().any(|(n, w)| f(n, w)),
            "fls lists no slack name {what}:\n{fls_text}"
        );
    };
    has("with its removed record", &|n, w| {
        n.ends_with(" (deleted)") && !no_meta(&w[1])
    });
    has("whose record a new file took", &|n, w| {
        n.ends_with(" (deleted)") && no_meta(&w[1]) && w[0] != "0"
    });
    has("of a renamed file", &|n, _| {
        n.ends_with(" (deleted-realloc)") && n.contains("/f031.txt")
    });
    assert!(
        want.iter()
            .all(|(n, w)| !n.starts_with("/late/") || w[1].starts_with("-/")),
        "fls 4.11 took a slack name written after 2019:\n{fls_text}"
    );
    assert!(
        want.contains_key("/small/c.txt (deleted)"),
        "fls lacks small/c.txt:\n{fls_text}"
    );
    assert_removed_like_fls(&want, &got, &fls_text, &ours);
    // The live names: the same, with the same records, type letters and times.
    let (want, got) = (pick(&fls_text, false), pick(&ours, false));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "live names\nfls:\n{fls_text}\nferry:\n{ours}"
    );
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g[0], w[0].split('-').next().unwrap(), "{name} record");
        assert_eq!(g[1][..3], w[1][..3], "{name} type letters");
        for i in 5..9 {
            assert_eq!(g[i].split('.').next().unwrap(), w[i], "{name} time {i}");
        }
    }
    // JSON Lines carry the same removed names, the renamed file's old name as reallocated.
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let removed = rows.iter().filter(|r| r["deleted"] == true).count();
    // Per line: a name listed twice (from the slack and from a removed record, with two
    // record numbers) is one key of `body`.
    let lines = ours.lines().filter(|l| l.contains(" (deleted")).count();
    assert_eq!(removed, lines, "{json}");
    assert!(
        rows.iter()
            .any(|r| r["path"] == "/many/f031.txt" && r["reallocated"] == true),
        "{json}"
    );
}

/// A removed NTFS directory's own index: fls reads it as a live one's and counts every name in
/// it as removed, in the slack and in the used part alike (a name found there keeps the type
/// letter of its $FILE_NAME). ntfs-3g removes a directory's files one by one before the
/// directory, so its index ends up with stale entries only; files removed earlier add their
/// own. Under the 2019 clock of fls's window (see the index-slack test above).
#[test]
fn timeline_lists_removed_ntfs_directories_names_as_fls_does() {
    let Some(lib) = ntfs_slack_tools() else {
        return;
    };
    use common::ntfs3g::Ntfs3g;
    let (_dir, img, mnt) = ntfs_scratch();
    {
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-01 12:00:00");
        let r = &m.0;
        std::fs::create_dir_all(r.join("gone/sub")).unwrap();
        std::fs::create_dir_all(r.join("gone/deep/er")).unwrap();
        std::fs::create_dir_all(r.join("keep")).unwrap();
        for i in 1..=40 {
            std::fs::write(r.join(format!("gone/f{i}.txt")), format!("{i}\n")).unwrap();
        }
        std::fs::write(r.join("gone/sub/s.txt"), "s").unwrap();
        std::fs::write(r.join("gone/deep/er/z.txt"), "z").unwrap();
        std::fs::write(r.join("keep/k.txt"), "k").unwrap();
    }
    {
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-02 12:00:00");
        for i in [3, 9, 17, 33] {
            std::fs::remove_file(m.0.join(format!("gone/f{i}.txt"))).unwrap();
        }
    }
    {
        let m = Ntfs3g::mount_at(&img, &mnt, "rw", &lib, "@2019-06-03 12:00:00");
        std::fs::remove_dir_all(m.0.join("gone")).unwrap();
    }
    let guard = Unchanged::new(&[&img]);
    let ours = ferry_ok(&["timeline", img.to_str().unwrap()]);
    drop(guard);
    let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let (want, got) = (removed_ntfs_names(&fls_text), removed_ntfs_names(&ours));
    // What this test is about, as fls shows it: names from the removed directory's index
    // (with a type letter; a removed record alone gives "-/").
    let from_index = want
        .iter()
        .filter(|(n, w)| n.starts_with("/gone/") && !w[1].starts_with("-/"))
        .count();
    assert!(
        from_index >= 2 && want.contains_key("/gone/sub (deleted)"),
        "fls lists too few names from /gone's index:\n{fls_text}"
    );
    assert_removed_like_fls(&want, &got, &fls_text, &ours);
    assert!(body(&ours).contains_key("/keep/k.txt"), "{ours}");
}

/// Garbage in the slack of an NTFS directory's INDX blocks (the fixup bytes at each 512-byte
/// stride's end left alone, so the blocks still read): random bytes, and entries planted
/// with this directory as parent that break one of fls's checks each (name length 0, an
/// unknown namespace, an allocated size below the real one, a 2021 time, a length not a
/// multiple of 4, a record past the MFT, a name running past the block) besides plausible
/// ones. The timeline never fails and lists every live file; the removed names it takes
/// from the slack are those fls takes (same record numbers).
#[test]
fn timeline_survives_garbled_ntfs_index_slack() {
    if ntfs_slack_tools().is_none() {
        return;
    }
    use common::ntfs3g::Ntfs3g;
    let (dir, img, mnt) = ntfs_scratch();
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        std::fs::create_dir_all(m.0.join("d")).unwrap();
        for i in 0..80 {
            std::fs::write(m.0.join(format!("d/file{i:02}.txt")), "x").unwrap();
        }
    }
    {
        let m = Ntfs3g::mount(&img, &mnt, "rw");
        for i in (0..80).step_by(6) {
            std::fs::remove_file(m.0.join(format!("d/file{i:02}.txt"))).unwrap();
        }
    }
    let live: Vec<String> = (0..80)
        .filter(|i| i % 6 != 0)
        .map(|i| format!("/d/file{i:02}.txt"))
        .collect();
    let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&img));
    let dir_rec: u64 = body(&fls_text)["/d"][0]
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let clean = std::fs::read(&img).unwrap();
    // 4 KiB INDX blocks that hold `dir_rec`: /d's own, and the root's if it has one (planted
    // entries there name the wrong parent, so neither tool takes them).
    let blocks: Vec<usize> = (0..clean.len())
        .step_by(4096)
        .filter(|&at| {
            clean[at..at + 4] == *b"INDX"
                && clean[at..at + 4096]
                    .windows(8)
                    .any(|w| w[..6] == dir_rec.to_le_bytes()[..6])
        })
        .collect();
    assert!(!blocks.is_empty(), "no INDX block of /d found");
    // 2019-06-01 and 2021-01-01 as NTFS times.
    let ok_time: u64 = (1_559_347_200 + 11_644_473_600) * 10_000_000;
    let late_time: u64 = (1_609_459_200 + 11_644_473_600) * 10_000_000;
    let u32le =
        |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    for round in 0..16u64 {
        let mut data = clean.clone();
        for &at in &blocks {
            let used_end = at + 0x18 + u32le(&data, at + 0x1c);
            let end = at + 0x18 + u32le(&data, at + 0x20);
            let noise = common::pseudo_random(round * 31 + at as u64, end - used_end);
            let mut saved = Vec::new();
            for s in (at + 510..end).step_by(512) {
                saved.push((s, data[s], data[s + 1]));
            }
            data[used_end..end].copy_from_slice(&noise);
            if round % 4 != 0 {
                // Entries from an 8-byte boundary on, each breaking one check (kind 0: none).
                let mut p = (used_end + 7) & !7;
                let mut k = round as usize;
                while p + 0x100 < end {
                    // A name of 255 units running past the key, still inside the block.
                    let kind = match k % 8 {
                        6 if p + 0x300 >= end => 0,
                        kind => kind,
                    };
                    k += 1;
                    // Unique names ("p" and a counter, then letters): lines are keyed by name.
                    let name_units = 5 + (noise[(p - used_end) % noise.len()] % 20) as usize;
                    let key = 0x42 + 2 * name_units;
                    let mut len = (16 + key + 7) & !7;
                    let rec = if kind == 5 {
                        1 << 40
                    } else {
                        30 + (k as u64 % 40)
                    };
                    data[p..p + 8].copy_from_slice(&(rec | 1 << 48).to_le_bytes());
                    if kind == 4 {
                        len += 2;
                    }
                    data[p + 8..p + 10].copy_from_slice(&(len as u16).to_le_bytes());
                    data[p + 10..p + 12].copy_from_slice(&(key as u16).to_le_bytes());
                    data[p + 12..p + 16].fill(0);
                    let f = p + 16;
                    data[f..f + 8].copy_from_slice(&(dir_rec | 1 << 48).to_le_bytes());
                    let t = if kind == 3 { late_time } else { ok_time };
                    for o in [8, 16, 24, 32] {
                        data[f + o..f + o + 8].copy_from_slice(&t.to_le_bytes());
                    }
                    let (alloc, real) = if kind == 2 { (8u64, 64u64) } else { (64, 8) };
                    data[f + 0x28..f + 0x30].copy_from_slice(&alloc.to_le_bytes());
                    data[f + 0x30..f + 0x38].copy_from_slice(&real.to_le_bytes());
                    data[f + 0x38..f + 0x40].fill(0);
                    data[f + 0x40] = match kind {
                        1 => 0,
                        6 => 255,
                        _ => name_units as u8,
                    };
                    data[f + 0x41] = if kind == 7 { 9 } else { 0 };
                    let units = if kind == 6 { 255 } else { name_units };
                    let tag = format!("p{k:04}");
                    for i in 0..units {
                        let c = tag
                            .as_bytes()
                            .get(i)
                            .copied()
                            .unwrap_or(b'a' + (i % 26) as u8);
                        data[f + 0x42 + 2 * i] = c;
                        data[f + 0x43 + 2 * i] = 0;
                    }
                    p += len.max(16) + 8 * (k % 3);
                    p = (p + 7) & !7;
                }
            }
            for (s, a, b) in saved {
                data[s] = a;
                data[s + 1] = b;
            }
        }
        let garbled = dir.path().join("garbled.img");
        std::fs::write(&garbled, &data).unwrap();
        let out = Command::new(common::ferry_bin())
            .args(["timeline", garbled.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "round {round}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = body(&text);
        for p in &live {
            assert!(ours.contains_key(p), "round {round}: {p} lost");
        }
        let fls_text = common::run(Command::new("fls").args(["-r", "-m", "/"]).arg(&garbled));
        let records = |b: &BTreeMap<String, Vec<String>>| -> Vec<String> {
            let mut v: Vec<String> = b
                .iter()
                .filter(|(n, w)| {
                    n.starts_with("/d/")
                        && n.contains(" (deleted")
                        && !n.contains("($FILE_NAME)")
                        && !w[1].starts_with("-/")
                })
                .map(|(_, w)| w[0].split('-').next().unwrap().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            records(&ours),
            records(&body(&fls_text)),
            "round {round}: records of the slack names\nfls:\n{fls_text}\nferry:\n{text}"
        );
    }
}

/// Random bytes in the slack of a directory block (no metadata_csum, so the block is still
/// read): the timeline still lists every live entry, does not crash, and whatever it takes
/// for removed entries has a name a kernel could have written.
#[test]
fn timeline_survives_garbled_directory_slack() {
    if !have("debugfs") {
        assert!(!kernel::required(), "debugfs missing");
        eprintln!("SKIP: debugfs is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("d/f{i}")), "x").unwrap();
    }
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(
        &img,
        "8M",
        Some(&src),
        &["-b", "1024", "-O", "^metadata_csum,^dir_index"],
    );
    let blocks = common::run(Command::new("debugfs").args(["-R", "blocks /d"]).arg(&img));
    let blk: u64 = blocks.split_whitespace().next().unwrap().parse().unwrap();
    let bs = 1024usize;
    let mut data = std::fs::read(&img).unwrap();
    let at = blk as usize * bs;
    // The last live record spans the rest of the block; its slack starts after its name.
    let mut off = 0;
    loop {
        let rec_len = u16::from_le_bytes([data[at + off + 4], data[at + off + 5]]) as usize;
        if off + rec_len >= bs {
            break;
        }
        off += rec_len;
    }
    let slack = off + ((8 + data[at + off + 6] as usize + 3) & !3);
    for round in 0..20u64 {
        let noise = common::pseudo_random(round + 1, bs - slack);
        data[at + slack..at + bs].copy_from_slice(&noise);
        // Every other round, plant plausible headers in the noise so the checks are reached.
        if round % 2 == 1 {
            let mut p = at + slack;
            while p + 12 <= at + bs {
                data[p..p + 4].copy_from_slice(&((round as u32 % 40) + 1).to_le_bytes());
                data[p + 4..p + 6].copy_from_slice(&12u16.to_le_bytes());
                data[p + 6] = (noise[p - at - slack] % 5) + 1;
                data[p + 7] = noise[p - at - slack + 1] % 9;
                p += 12;
            }
        }
        std::fs::write(&img, &data).unwrap();
        // JSON: a garbled name may hold '|', which a body file cannot tell from a separator.
        let out = Command::new(common::ferry_bin())
            .args(["timeline", "--json", img.to_str().unwrap()])
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(101), "round {round}: panicked");
        let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for i in 0..5 {
            let p = format!("/d/f{i}");
            assert!(
                rows.iter()
                    .any(|r| r["path"] == p.as_str() && r.get("deleted").is_none()),
                "round {round}: {p} lost"
            );
        }
        for r in rows.iter().filter(|r| r["deleted"] == true) {
            let path = r["path"].as_str().unwrap();
            let base = path.strip_prefix("/d/").expect(path);
            assert!(
                !base.is_empty() && !base.contains('/') && !base.contains('\0'),
                "round {round}: impossible name {path:?}"
            );
            let ino = r["inode"].as_u64().unwrap();
            assert!(
                ino <= 2048,
                "round {round}: inode {ino} past the filesystem's"
            );
        }
    }
}

#[test]
fn timeline_hash_column_matches_md5sum() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let img = dir.path().join("fs.img");
    kernel::mkfs_ext4(&img, "32M", Some(&src), &[]);
    let out = ferry_ok(&["timeline", "--hash", "md5", img.to_str().unwrap()]);
    let digest_of = |name: &str| {
        out.lines()
            .find(|l| l.split('|').nth(1) == Some(name))
            .and_then(|l| l.split('|').next())
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_string()
    };
    for (name, host) in [
        ("/etc/deep/er/data", "etc/deep/er/data"),
        ("/sparse", "sparse"),
    ] {
        let want = common::run(Command::new("md5sum").arg(src.join(host)));
        assert_eq!(
            digest_of(name),
            want.split_whitespace().next().unwrap(),
            "{name}"
        );
    }
    // Directories have no digest.
    assert_eq!(digest_of("/etc"), "0");
}

/// `ferry diff`: a copy edited through a kernel mount, turned into an overlay over the
/// original with `qemu-img convert -B`, lists exactly the recorded edits, each with its kind.
#[test]
fn diff_lists_exactly_the_edits_made_through_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src");
    for dir in ["etc/sub", "var/lib", "home/u"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    let put = |p: &str, data: &[u8]| std::fs::write(src.join(p), data).unwrap();
    put(
        "etc/fstab",
        b"/dev/hda1 / ext4 defaults 0 1\n/dev/hda2 swap swap defaults 0 0\n",
    );
    put("etc/hostname", b"old\n");
    put("etc/gone", b"bye\n");
    put("etc/moved", b"moving\n");
    put("etc/mode", b"m\n");
    put("etc/owner", b"o\n");
    put("etc/xattr", b"x\n");
    put("etc/same-size", b"aaaa\n");
    put("var/lib/big", &common::pseudo_random(4, 3 << 20));
    put("home/u/untouched", b"keep\n");
    std::os::unix::fs::symlink("hostname", src.join("etc/link")).unwrap();
    let base = d.join("base.raw");
    kernel::mkfs_ext4(&base, "32M", Some(&src), &[]);
    let _same = Unchanged::new(&[&base]);
    let copy = d.join("copy.raw");
    std::fs::copy(&base, &copy).unwrap();
    let Some(m) = kernel::mount_or_skip(&copy, &d.join("mnt"), "") else {
        return;
    };
    let r = m.path().to_path_buf();
    common::sh(&format!(
        "cd '{}' && printf '/dev/vda1 / ext4 defaults 0 1\\n/dev/vda2 swap swap defaults 0 0\\n' > etc/fstab \
         && echo new > etc/new && rm etc/gone && mv etc/moved etc/sub/moved-here && chmod 600 etc/mode \
         && chown 12:34 etc/owner && setfattr -n user.k -v v etc/xattr && printf 'bbbb\\n' > etc/same-size \
         && ln -sfn fstab etc/link && mkdir etc/newdir \
         && dd if=/dev/urandom of=var/lib/big bs=4096 seek=100 count=1 conv=notrunc status=none",
        r.display()
    ));
    m.unmount().unwrap();
    let over = d.join("over.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-B",
        base.to_str().unwrap(),
        "-F",
        "raw",
        copy.to_str().unwrap(),
        over.to_str().unwrap(),
    ]);
    let want: BTreeMap<&str, (&str, &[&str])> = [
        ("/etc/fstab", ("modified", &["content", "mtime"][..])),
        ("/etc/new", ("added", &[][..])),
        ("/etc/gone", ("removed", &[][..])),
        ("/etc/sub/moved-here", ("renamed", &[][..])),
        ("/etc/mode", ("modified", &["mode"][..])),
        ("/etc/owner", ("modified", &["owner"][..])),
        ("/etc/xattr", ("modified", &["xattrs"][..])),
        ("/etc/same-size", ("modified", &["mtime", "content"][..])),
        ("/etc/link", ("modified", &["target"][..])),
        ("/etc/newdir", ("added", &[][..])),
        ("/var/lib/big", ("modified", &["mtime", "content"][..])),
    ]
    .into_iter()
    .collect();
    for args in [
        vec!["diff", "--json", over.to_str().unwrap()],
        vec![
            "diff",
            "--json",
            base.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    ] {
        let j: serde_json::Value = serde_json::from_str(&ferry_ok(&args)).unwrap();
        let got: BTreeMap<String, (String, Vec<String>)> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let what = c["what"]
                    .as_array()
                    .map(|w| w.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                (
                    c["path"].as_str().unwrap().to_string(),
                    (c["kind"].as_str().unwrap().to_string(), what),
                )
            })
            .collect();
        let paths: Vec<&String> = got.keys().collect();
        assert_eq!(paths, want.keys().collect::<Vec<_>>(), "{args:?}");
        for (p, (kind, what)) in &want {
            let (gk, gw) = &got[*p];
            assert_eq!(gk, kind, "{p}");
            for w in *what {
                assert!(gw.iter().any(|x| x == w), "{p}: {w} not in {gw:?}");
            }
        }
        let renamed = j
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "renamed")
            .unwrap();
        assert_eq!(renamed["from"], "/etc/moved");
    }
    // The text view: one line a path, and -u shows the fstab edit as diff -u would.
    let text = ferry_ok(&["diff", "-u", over.to_str().unwrap()]);
    assert!(text.contains("+ /etc/new\n"), "{text}");
    assert!(text.contains("- /etc/gone\n"), "{text}");
    assert!(
        text.contains("> /etc/moved -> /etc/sub/moved-here"),
        "{text}"
    );
    assert!(
        text.contains("--- a/etc/fstab\n+++ b/etc/fstab\n"),
        "{text}"
    );
    assert!(
        text.contains("\n-/dev/hda1 / ext4 defaults 0 1\n")
            && text.contains("\n+/dev/vda1 / ext4 defaults 0 1\n"),
        "{text}"
    );
    // A guest compared with itself: nothing.
    assert_eq!(
        ferry_ok(&["diff", base.to_str().unwrap(), base.to_str().unwrap()]),
        ""
    );
}

/// `ferry diff OVERLAY` compares only the inodes the overlay's clusters hold: on a partitioned
/// guest edited through a kernel loop mount (the copy then made an overlay over the original) (adds, removes, renames of a file and of a
/// directory, chmod, chown, xattrs, content, symlink retarget, a deep new directory, a hard
/// link), its output is the full walk's, line for line and in JSON, and it says it took the
/// short way. A data block patched behind its unchanged inode (on the raw disk) is not
/// attributable: ferry must then fall back to the full walk, and still find the change with
/// `--content`.
#[test]
fn diff_of_an_overlay_follows_the_change_and_matches_the_full_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src");
    for dir in [
        "etc/sub",
        "usr/bin",
        "usr/share/a/b",
        "usr/share/gone-dir/x",
        "home/u",
    ] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    let put = |p: &str, data: &[u8]| std::fs::write(src.join(p), data).unwrap();
    put("etc/fstab", b"/dev/sda1 / ext4 defaults 0 1\n");
    put("etc/hostname", b"old\n");
    put("etc/gone", b"bye\n");
    put("etc/moved", b"moving\n");
    put("etc/mode", b"m\n");
    put("etc/owner", b"o\n");
    put("etc/xattr", b"x\n");
    put("usr/share/gone-dir/x/f", b"f\n");
    put("usr/share/big", &common::pseudo_random(9, 2 << 20));
    for i in 0..400 {
        put(&format!("usr/share/a/b/f{i}"), format!("{i}\n").as_bytes());
    }
    put("home/u/patched", &common::pseudo_random(5, 64 << 10));
    std::os::unix::fs::symlink("hostname", src.join("etc/link")).unwrap();
    let fs_img = d.join("fs.raw");
    kernel::mkfs_ext4(&fs_img, "63M", Some(&src), &["-b", "4096"]);
    let base = d.join("base.raw");
    const PART: u64 = 1 << 20;
    common::sfdisk_image(&base, 64 << 20, "label: dos\nstart=2048, type=83\n");
    common::write_into(&base, PART, &fs_img);
    let part_len = 63u64 << 20;
    let _same = Unchanged::new(&[&base]);
    let copy = d.join("copy.raw");
    std::fs::copy(&base, &copy).unwrap();
    let m = match kernel::KernelMount::range(&copy, PART, part_len, &d.join("mnt"), "") {
        Ok(m) => m,
        Err(e) if kernel::required() => panic!("cannot mount (FERRY_REQUIRE_FUSE=1): {e}"),
        Err(e) => {
            eprintln!("SKIP: cannot mount: {e}");
            return;
        }
    };
    common::sh(&format!("cd '{}' && {KERNEL_EDITS}", m.path().display()));
    m.unmount().unwrap();
    let over = d.join("over.qcow2");
    overlay_of_difference(&copy, &base, &over);
    let o = over.to_str().unwrap();
    let fast = diff_fast_as_full(o);
    for line in [
        "= /etc/hostname (mtime, content)\n",
        "+ /etc/new\n",
        "- /etc/gone\n",
        "> /etc/moved -> /etc/sub/moved-here\n",
        "> /usr/share/a -> /usr/share/a-renamed\n",
        "> /usr/share/a/b/f399 -> /usr/share/a-renamed/b/f399\n",
        "- /usr/share/gone-dir/x/f\n",
        "= /etc/mode (mode)\n",
        "= /etc/owner (owner)\n",
        "= /etc/xattr (xattrs)\n",
        "+ /usr/new/deep/er/still/file\n",
        "+ /etc/fstab-link\n",
        "= /etc/fstab (nlink)\n",
        "= /usr/share/big (mtime, content)\n",
    ] {
        assert!(fast.contains(line), "{line:?} not in\n{fast}");
    }
    assert!(fast.contains("= /etc/link ("), "{fast}");
    assert_eq!(
        run_diff(&["diff", "--json", o]).0,
        run_diff(&["diff", "--json", "--full-walk", o]).0
    );
    // Untouched files are not listed.
    assert!(
        !fast.contains("/home/u") && !fast.contains("/usr/bin"),
        "{fast}"
    );

    // A block of /home/u/patched overwritten on the raw disk: its inode says nothing.
    let blk = common::run(
        Command::new("debugfs")
            .args(["-R", "bmap /home/u/patched 3"])
            .arg(&fs_img),
    );
    let blk: u64 = blk.trim().parse().expect("debugfs bmap");
    let patched = d.join("patched.raw");
    std::fs::copy(&base, &patched).unwrap();
    common::sh(&format!(
        "printf 'behind its back' | dd of='{}' bs=1 seek={} conv=notrunc status=none",
        patched.display(),
        PART + blk * 4096
    ));
    let over2 = d.join("over2.qcow2");
    overlay_of_difference(&patched, &base, &over2);
    let o2 = over2.to_str().unwrap();
    let (out, log) = run_diff(&["-v", "diff", o2]);
    assert!(log.contains("comparing the whole trees"), "{log}");
    assert_eq!(out, "");
    let (out, _) = run_diff(&["diff", "--content", o2]);
    assert_eq!(out, "= /home/u/patched (content)\n");
}

/// The edits the ext4 and XFS diff tests make through a kernel mount (a file's number freed
/// before a new file is made, so a reused number is met too).
const KERNEL_EDITS: &str = "echo new > etc/hostname && rm etc/gone && echo new > etc/new \
     && mv etc/moved etc/sub/moved-here && mv usr/share/a usr/share/a-renamed \
     && rm -r usr/share/gone-dir && chmod 600 etc/mode && chown 12:34 etc/owner \
     && setfattr -n user.k -v v etc/xattr && ln -sfn fstab etc/link \
     && mkdir -p usr/new/deep/er/still && echo deep > usr/new/deep/er/still/file \
     && ln etc/fstab etc/fstab-link \
     && dd if=/dev/urandom of=usr/share/big bs=4096 seek=7 count=2 conv=notrunc status=none";

/// `ferry diff OVERLAY` by the short way (the log says it was taken), which must print what
/// the full walk prints; that output.
fn diff_fast_as_full(overlay: &str) -> String {
    let (fast, log) = run_diff(&["-v", "diff", overlay]);
    assert!(log.contains("inodes the overlay may have changed"), "{log}");
    let (full, _) = run_diff(&["diff", "--full-walk", overlay]);
    assert_eq!(fast, full);
    fast
}

/// An overlay of `from` over `base` holding only the clusters that differ (`convert -B` would
/// write every cluster): an overlay over `from`, rebased onto `base` in safe mode.
fn overlay_of_difference(from: &Path, base: &Path, to: &Path) {
    let (f, t) = (from.to_str().unwrap(), to.to_str().unwrap());
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", f, "-F", "raw", t]);
    qemu_img(&[
        "rebase",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "raw",
        t,
    ]);
}

/// Runs ferry, which must succeed: (stdout, stderr).
fn run_diff(args: &[&str]) -> (String, String) {
    let out = common::run_ferry(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The same on an NTFS volume edited through ntfs-3g (the MFT records the overlay holds stand
/// for the inodes): the short way is taken, and its output is the full walk's, line for line
/// and in JSON, with every edit in it and nothing untouched.
#[test]
fn diff_of_an_ntfs_overlay_follows_the_change() {
    if !common::have_tools(&["mkntfs", "ntfs-3g", "setfattr"]) {
        assert!(
            !kernel::required(),
            "mkntfs, ntfs-3g or setfattr missing: contrib/setup.sh installs them"
        );
        eprintln!("SKIP: mkntfs, ntfs-3g or setfattr is not installed");
        return;
    }
    use common::ntfs3g::Ntfs3g;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = d.join("base.img");
    std::fs::File::create(&base)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    common::run(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&base));
    let mnt = d.join("mnt");
    {
        let m = Ntfs3g::mount(&base, &mnt, "rw");
        let r = &m.0;
        for dir in ["etc/sub", "usr/share/a/b", "usr/share/gone-dir/x", "home/u"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        let put = |p: &str, data: &[u8]| std::fs::write(r.join(p), data).unwrap();
        put("etc/fstab", b"/dev/sda1 / ext4 defaults 0 1\n");
        put("etc/hostname", b"old\n");
        put("etc/gone", b"bye\n");
        put("etc/moved", b"moving\n");
        put("etc/xattr", b"x\n");
        put("usr/share/gone-dir/x/f", b"f\n");
        put("usr/share/big", &common::pseudo_random(9, 2 << 20));
        for i in 0..400 {
            put(&format!("usr/share/a/b/f{i}"), format!("{i}\n").as_bytes());
        }
        put("home/u/kept", &common::pseudo_random(5, 64 << 10));
        std::os::unix::fs::symlink("hostname", r.join("etc/link")).unwrap();
    }
    let _same = Unchanged::new(&[&base]);
    let copy = d.join("copy.img");
    std::fs::copy(&base, &copy).unwrap();
    {
        let m = Ntfs3g::mount(&copy, &mnt, "rw");
        common::sh(&format!(
            "cd '{}' && echo new > etc/hostname && rm etc/gone && echo new > etc/new \
             && mv etc/moved etc/sub/moved-here && mv usr/share/a usr/share/a-renamed \
             && rm -r usr/share/gone-dir && setfattr -n user.k -v v etc/xattr \
             && ln -sfn fstab etc/link \
             && mkdir -p usr/new/deep/er/still && echo deep > usr/new/deep/er/still/file \
             && ln etc/fstab etc/fstab-link \
             && dd if=/dev/urandom of=usr/share/big bs=4096 seek=7 count=2 conv=notrunc \
                status=none",
            m.0.display()
        ));
    }
    let over = d.join("over.qcow2");
    overlay_of_difference(&copy, &base, &over);
    let o = over.to_str().unwrap();
    let fast = diff_fast_as_full(o);
    for line in [
        "+ /etc/new\n",
        "- /etc/gone\n",
        "> /etc/moved -> /etc/sub/moved-here\n",
        "> /usr/share/a -> /usr/share/a-renamed\n",
        "- /usr/share/gone-dir/x/f\n",
        "+ /usr/new/deep/er/still/file\n",
        "+ /etc/fstab-link\n",
    ] {
        assert!(fast.contains(line), "{line:?} not in\n{fast}");
    }
    for path in ["/etc/hostname", "/etc/xattr", "/etc/link", "/usr/share/big"] {
        assert!(
            fast.contains(&format!("= {path} (")),
            "{path} not in\n{fast}"
        );
    }
    assert_eq!(
        run_diff(&["diff", "--json", o]).0,
        run_diff(&["diff", "--json", "--full-walk", o]).0
    );
    assert!(!fast.contains("/home/u"), "{fast}");
}

/// The same on XFS (a RHEL guest's root) edited through a kernel loop mount: the inodes the
/// overlay's blocks hold (found by what each v5 block says it is) stand for the change; the
/// short way is taken, and its output is the full walk's. A removed file's number given to a
/// new one (/etc/gone's to /etc/new, often) is a removal and an addition, not a rename.
#[test]
fn diff_of_an_xfs_overlay_follows_the_change() {
    if !common::have_tools(&["mkfs.xfs", "setfattr"]) {
        assert!(
            !kernel::required(),
            "mkfs.xfs or setfattr missing: contrib/setup.sh installs them"
        );
        eprintln!("SKIP: mkfs.xfs or setfattr is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = d.join("base.img");
    const LEN: u64 = 320 << 20;
    std::fs::File::create(&base).unwrap().set_len(LEN).unwrap();
    common::run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&base));
    let mnt = d.join("mnt");
    let mount = |img: &Path| match kernel::KernelMount::range(img, 0, LEN, &mnt, "") {
        Ok(m) => Some(m),
        Err(e) if kernel::required() => panic!("cannot mount (FERRY_REQUIRE_FUSE=1): {e}"),
        Err(e) => {
            eprintln!("SKIP: cannot mount: {e}");
            None
        }
    };
    let Some(m) = mount(&base) else { return };
    common::sh(&format!(
        "cd '{}' && mkdir -p etc/sub usr/share/a/b usr/share/gone-dir/x home/u \
         && echo /dev/sda1 > etc/fstab && echo old > etc/hostname && echo bye > etc/gone \
         && echo moving > etc/moved && echo m > etc/mode && echo o > etc/owner \
         && echo x > etc/xattr && echo f > usr/share/gone-dir/x/f \
         && head -c 2M /dev/urandom > usr/share/big && head -c 64K /dev/urandom > home/u/kept \
         && for i in $(seq 0 399); do echo $i > usr/share/a/b/f$i; done \
         && ln -s hostname etc/link",
        m.path().display()
    ));
    m.unmount().unwrap();
    let _same = Unchanged::new(&[&base]);
    let copy = d.join("copy.img");
    common::run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&base)
            .arg(&copy),
    );
    let Some(m) = mount(&copy) else { return };
    common::sh(&format!("cd '{}' && {KERNEL_EDITS}", m.path().display()));
    m.unmount().unwrap();
    let over = d.join("over.qcow2");
    overlay_of_difference(&copy, &base, &over);
    let o = over.to_str().unwrap();
    let fast = diff_fast_as_full(o);
    for line in [
        "= /etc/hostname (mtime, content)\n",
        "+ /etc/new\n",
        "- /etc/gone\n",
        "> /etc/moved -> /etc/sub/moved-here\n",
        "> /usr/share/a -> /usr/share/a-renamed\n",
        "- /usr/share/gone-dir/x/f\n",
        "= /etc/mode (mode)\n",
        "= /etc/owner (owner)\n",
        "= /etc/xattr (xattrs)\n",
        "+ /usr/new/deep/er/still/file\n",
        "+ /etc/fstab-link\n",
        "= /usr/share/big (mtime, content)\n",
    ] {
        assert!(fast.contains(line), "{line:?} not in\n{fast}");
    }
    assert!(fast.contains("= /etc/link ("), "{fast}");
    assert_eq!(
        run_diff(&["diff", "--json", o]).0,
        run_diff(&["diff", "--json", "--full-walk", o]).0
    );
    assert!(!fast.contains("/home/u"), "{fast}");
}

/// XFS removed entries (no fls here knows XFS: sleuthkit 4.11): names removed through the
/// kernel from a single-block directory (adjacent ones, so the free spaces merge, and the
/// last) and from a multi-block one, with the inode numbers `stat` gave them before. ferry
/// lists exactly those names as deleted, each with its old inode number, "(deleted-realloc)"
/// exactly where the kernel gave the number to a file created afterwards (and it does give
/// some); live entries and
/// short-form directories (whose removed entries are overwritten) list nothing removed.
#[test]
fn timeline_lists_removed_xfs_entries_with_their_inodes() {
    if !common::have_tools(&["mkfs.xfs"]) {
        assert!(
            !kernel::required(),
            "mkfs.xfs missing: contrib/setup.sh installs it"
        );
        eprintln!("SKIP: mkfs.xfs is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let img = d.join("xfs.img");
    const LEN: u64 = 320 << 20;
    std::fs::File::create(&img).unwrap().set_len(LEN).unwrap();
    common::run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&img));
    let mnt = d.join("mnt");
    let mount = || match kernel::KernelMount::range(&img, 0, LEN, &mnt, "") {
        Ok(m) => Some(m),
        Err(e) if kernel::required() => panic!("cannot mount (FERRY_REQUIRE_FUSE=1): {e}"),
        Err(e) => {
            eprintln!("SKIP: cannot mount: {e}");
            None
        }
    };
    let inodes = |root: &Path, dir: &str| -> BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    format!("/{dir}/{}", e.file_name().to_string_lossy()),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect()
    };
    let Some(m) = mount() else { return };
    common::sh(&format!(
        "cd '{}' && mkdir blk big sf other blk/subdir \
         && for i in $(seq -w 0 19); do echo $i > blk/file-$i; done \
         && for i in $(seq -w 0 399); do echo $i > big/entry-with-a-longer-name-$i; done \
         && echo a > sf/a && echo b > sf/b",
        m.path().display()
    ));
    let mut before = inodes(m.path(), "blk");
    before.extend(inodes(m.path(), "big"));
    before.extend(inodes(m.path(), "sf"));
    m.unmount().unwrap();
    let removed = [
        "/blk/file-03",
        "/blk/file-04",
        "/blk/file-10",
        "/blk/subdir",
        "/big/entry-with-a-longer-name-000",
        "/big/entry-with-a-longer-name-101",
        "/big/entry-with-a-longer-name-102",
        "/big/entry-with-a-longer-name-103",
        "/big/entry-with-a-longer-name-250",
        "/big/entry-with-a-longer-name-399",
    ];
    let Some(m) = mount() else { return };
    for r in removed {
        let p = m.path().join(&r[1..]);
        if r.ends_with("subdir") {
            std::fs::remove_dir(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::remove_file(m.path().join("sf/a")).unwrap();
    m.unmount().unwrap();
    // New files: those in /blk get numbers from its AG's chunk, where the removed files'
    // numbers are free (their names go to the block's largest free space, after the removed
    // names); those in /other are in another AG.
    let Some(m) = mount() else { return };
    common::sh(&format!(
        "cd '{}' && for i in 1 2 3; do echo $i > other/new-$i; echo $i > blk/new-$i; done",
        m.path().display()
    ));
    let mut now = inodes(m.path(), "other");
    now.extend(inodes(m.path(), "blk"));
    let reused: std::collections::BTreeSet<u64> = now
        .iter()
        .filter(|(p, _)| p.contains("/new-"))
        .map(|(_, &i)| i)
        .collect();
    m.unmount().unwrap();
    let guard = Unchanged::new(&[&img]);
    let json = ferry_ok(&["timeline", "--json", img.to_str().unwrap()]);
    let body_text = ferry_ok(&["timeline", img.to_str().unwrap()]);
    drop(guard);
    let flagged: BTreeMap<String, serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["deleted"] == true)
        .map(|v| (v["path"].as_str().unwrap().to_string(), v))
        .collect();
    let want: Vec<&str> = removed.to_vec();
    assert_eq!(
        flagged.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut w = want.clone();
            w.sort();
            w
        },
        "removed names listed\n{json}"
    );
    let mut realloc = 0;
    for (path, v) in &flagged {
        let ino = before[path];
        assert_eq!(v["inode"], ino, "{path}: {v}");
        let again = reused.contains(&ino);
        realloc += usize::from(again);
        assert_eq!(
            v["reallocated"], again,
            "{path}: {v} (new files: {reused:?})"
        );
        let suffix = if again {
            "(deleted-realloc)"
        } else {
            "(deleted)"
        };
        assert!(
            body_text
                .lines()
                .any(|l| l.contains(&format!("|{path} {suffix}|"))),
            "{path} {suffix} not in\n{body_text}"
        );
    }
    eprintln!(
        "{} removed XFS entries listed, {realloc} of them with their numbers in use again",
        flagged.len()
    );
    assert!(
        realloc > 0,
        "no removed number was given out again: {reused:?}"
    );
    assert!(!body_text.contains("/sf/a ("), "{body_text}");
}

/// Every read command on evidence that cannot be written: an immutable file (`chattr +i`) and
/// then a read-only loop mount of the filesystem holding it. Each must work, and the image's
/// bytes must be the same after all of them.
#[test]
fn read_commands_work_on_read_only_evidence_and_change_nothing() {
    if !have("chattr") {
        eprintln!("SKIP: no chattr");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let evidence = tmp.path().join("evidence.img");
    kernel::mkfs_ext4(&evidence, "256M", None, &[]);
    let emnt = tmp.path().join("evidence");
    let Some(rw) = kernel::mount_or_skip(&evidence, &emnt, "") else {
        return;
    };
    let g = common::guest::xen(&emnt.join("case"), "qcow2");
    let img = g.images[0].clone();
    let rel = img.strip_prefix(&emnt).unwrap().to_path_buf();
    let before = common::sha256_file(&img);
    common::run(Command::new("chattr").arg("+i").arg(&img));
    read_everything(&img, tmp.path(), "immutable");
    assert_eq!(
        common::sha256_file(&img),
        before,
        "an immutable image changed"
    );
    common::run(Command::new("chattr").arg("-i").arg(&img));
    rw.unmount().unwrap();
    let ro = kernel::KernelMount::new(&evidence, &emnt, "ro").unwrap();
    let img = ro.path().join(rel);
    read_everything(&img, tmp.path(), "read-only medium");
    assert_eq!(common::sha256_file(&img), before, "the image changed");
    drop(ro);
}

fn read_everything(img: &Path, scratch: &Path, what: &str) {
    let i = img.to_str().unwrap();
    for args in [
        vec!["info", i],
        vec!["map", i],
        vec!["filesystems", "--all", i],
        vec!["inspect", "--json", i],
        vec!["ls", "-lR", i, "/"],
        vec!["cat", i, "/etc/fstab"],
        vec!["hash", i],
        vec!["hash", "--files", i],
        vec!["timeline", i],
        vec!["diff", i, i],
        vec!["fix", "--dry-run", i],
    ] {
        let o = common::run_ferry(&args);
        // fix --dry-run exits 2 when it would change something: still a success here.
        assert!(
            matches!(o.status.code(), Some(0 | 2)),
            "{what}: ferry {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !o.stdout.is_empty() || args[0] == "diff",
            "{what}: ferry {args:?}: no output"
        );
    }
    // And a FUSE mount of it, walked whole.
    if std::path::Path::new("/dev/fuse").exists() {
        let mnt = scratch.join(format!("mnt-{}", what.replace(' ', "-")));
        let m = kernel::FerryMount::new(&[img.as_os_str()], &mnt)
            .unwrap_or_else(|e| panic!("{what}: mount: {e}"));
        let snap = kernel::walk(&mnt);
        assert!(
            snap.contains_key(&b"etc/fstab"[..]),
            "{what}: the mount shows no /etc/fstab"
        );
        drop(m);
    }
}

/// `timeline --json` says what the body file says, one JSON object a line; with
/// `--all-filesystems` a partition outside the guest's fstab is listed too, under its device.
#[test]
fn timeline_json_and_all_filesystems() {
    use common::guest::{debian_root, mkfs, put};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = d.join("root");
    debian_root(
        &root,
        "UUID=0b5e7a55-1111-4222-8333-944445555666 / ext4 defaults 0 1\n",
    );
    let data = d.join("data");
    put(&data, "/cases/notes.txt", "not in fstab\n");
    put(&data, "/cases/more/b.bin", common::pseudo_random(3, 5000));
    let (p1, p2) = (d.join("p1.img"), d.join("p2.img"));
    mkfs(
        &p1,
        "ext4",
        24 << 20,
        "0b5e7a55-1111-4222-8333-944445555666",
        None,
        Some(&root),
        &[],
    );
    mkfs(
        &p2,
        "ext4",
        8 << 20,
        "0b5e7a55-1111-4222-8333-944445555777",
        None,
        Some(&data),
        &[],
    );
    let disk = d.join("disk.img");
    common::sfdisk_image(
        &disk,
        40 << 20,
        "label: gpt\nstart=2048, size=49152\nstart=51200, size=16384\n",
    );
    common::write_into(&disk, 2048 * 512, &p1);
    common::write_into(&disk, 51200 * 512, &p2);
    let i = disk.to_str().unwrap();

    let body = ferry_ok(&["timeline", i]);
    let json = ferry_ok(&["timeline", "--json", "--hash", "md5", i]);
    let hashed = ferry_ok(&["timeline", "--hash", "md5", i]);
    assert_eq!(body.lines().count(), json.lines().count());
    for (b, j) in hashed.lines().zip(json.lines()) {
        let f: Vec<&str> = b.split('|').collect();
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        let name = f[1].split(" -> ").next().unwrap();
        assert_eq!(v["path"], name, "{b}");
        assert_eq!(v["inode"].to_string(), f[2], "{b}");
        assert_eq!(v["mode"], f[3], "{b}");
        assert_eq!(v["size"].to_string(), f[6], "{b}");
        let mtime: f64 = f[8].parse().unwrap();
        assert!((v["mtime"].as_f64().unwrap() - mtime).abs() < 1e-3, "{b}");
        if f[3].starts_with("r/") {
            assert_eq!(v["digest"], f[0], "{b}");
        }
    }
    assert!(
        !body.contains("notes.txt"),
        "the data partition is not in the guest's tree"
    );

    let all = ferry_ok(&["timeline", "--all-filesystems", i]);
    let extra: Vec<&str> = all.lines().filter(|l| l.contains("|/dev/sda2:/")).collect();
    let names: std::collections::BTreeSet<&str> =
        extra.iter().map(|l| l.split('|').nth(1).unwrap()).collect();
    for want in [
        "/dev/sda2:/cases",
        "/dev/sda2:/cases/notes.txt",
        "/dev/sda2:/cases/more",
        "/dev/sda2:/cases/more/b.bin",
    ] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    // The guest's own tree is there as before, once.
    assert_eq!(all.lines().count() - extra.len(), body.lines().count());
}
