//! The `ferry` binary as a user runs it: info/map/convert against qemu-img's answers.

use crate::common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn chain_fixture(d: &Path) -> std::path::PathBuf {
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 24 << 20, 5);
    let mid = d.join("mid.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "compression_type=zstd",
        raw.to_str().unwrap(),
        mid.to_str().unwrap(),
    ]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "30M",
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x42 3M 300k",
            "write -z 8M 2M",
            "write -P 0x43 29M 64k",
        ],
    );
    top
}

#[test]
fn convert_is_identical_to_qemu_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let top = chain_fixture(d);
    let _g = Unchanged::new(&[&top, &d.join("mid.qcow2")]);
    let out = d.join("out.raw");
    let stats: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "convert",
        top.to_str().unwrap(),
        "-O",
        "raw",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let want = qemu_raw(&top, d);
    let got = std::fs::read(&out).unwrap();
    assert!(got == want, "ferry convert differs from qemu-img convert");
    let size = stats["virtual_size"].as_u64().unwrap();
    assert_eq!(size, want.len() as u64);
    assert_eq!(
        stats["bytes_read"].as_u64().unwrap() + stats["bytes_skipped"].as_u64().unwrap(),
        size
    );
    // Sparse: nothing beyond the non-zero 4 KiB blocks is allocated in the output.
    let nonzero_blocks = want
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64;
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated <= nonzero_blocks * 4096 + (1 << 20),
        "output not sparse: {allocated} bytes allocated for {nonzero_blocks} data blocks"
    );
    assert_eq!(
        stats["bytes_written"].as_u64().unwrap(),
        nonzero_blocks * 4096
    );
    // One worker gives the same bytes.
    let out1 = d.join("out1.raw");
    ferry_ok(&[
        "convert",
        "--threads",
        "1",
        top.to_str().unwrap(),
        "-O",
        "raw",
        out1.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out1).unwrap() == want);
}

#[test]
fn info_json_describes_the_chain_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let top = chain_fixture(dir.path());
    let ours: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "info",
        "--json",
        "--backing-chain",
        top.to_str().unwrap(),
    ]))
    .unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--backing-chain",
        "--output=json",
        top.to_str().unwrap(),
    ]))
    .unwrap();
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        for k in [
            "format",
            "virtual-size",
            "cluster-size",
            "backing-filename",
            "backing-filename-format",
            "actual-size",
            "format-specific",
        ] {
            assert_eq!(o[k], t[k], "{k}");
        }
    }
    let text = ferry_ok(&["info", top.to_str().unwrap()]);
    assert!(
        text.contains("backing file: mid.qcow2") && text.contains("compression_type: zstd"),
        "{text}"
    );
}

#[test]
fn map_json_is_qemu_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let top = chain_fixture(dir.path());
    let ours: serde_json::Value =
        serde_json::from_str(&ferry_ok(&["map", "--json", top.to_str().unwrap()])).unwrap();
    let theirs = qemu_map_classes(&top);
    let ours: Vec<(u64, u64, Class)> = ours
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (data, zero) = (e["data"].as_bool().unwrap(), e["zero"].as_bool().unwrap());
            let c = Class {
                data: data && !zero,
                zero,
                present: e["present"].as_bool().unwrap(),
            };
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                c,
            )
        })
        .collect();
    // Every byte classified alike: expand both to boundaries and compare.
    let class_at = |v: &[(u64, u64, Class)], at: u64| {
        v.iter()
            .find(|(s, l, _)| *s <= at && at < s + l)
            .map(|x| x.2)
    };
    let mut points: Vec<u64> = ours.iter().chain(theirs.iter()).map(|x| x.0).collect();
    points.sort_unstable();
    points.dedup();
    for p in points {
        assert_eq!(class_at(&ours, p), class_at(&theirs, p), "at {p:#x}");
    }
    // Depths agree too: compressed data lives one layer down.
    assert!(ferry_ok(&["map", top.to_str().unwrap()]).contains("data*  1"));
}

#[test]
fn convert_refuses_to_overwrite_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let top = chain_fixture(d);
    let mid = d.join("mid.qcow2");
    let g = Unchanged::new(&[&top, &mid]);
    for target in [&top, &mid] {
        let o = run_ferry(&[
            "convert",
            top.to_str().unwrap(),
            "-O",
            "raw",
            target.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("refusing to write over"), "{err}");
    }
    drop(g);
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run_ferry(&["info", d.join("nope.qcow2").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope.qcow2") && err.contains("cannot open"),
        "{err}"
    );
    let o = run_ferry(&["convert", "x", "-O", "vhdx", "y"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not supported"));
    // -f raw shows a qcow2 file's own bytes.
    let img = d.join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    let info: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "info",
        "-f",
        "raw",
        "--json",
        img.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["format"], "raw");
    assert_eq!(
        info["virtual-size"].as_u64().unwrap(),
        std::fs::metadata(&img).unwrap().len()
    );
    // -f of the wrong format: what the file is, not a corrupt-descriptor riddle.
    let o = run_ferry(&["info", "-f", "vmdk", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("this is a qcow2 image, not vmdk"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn convert_fails_cleanly_on_a_corrupt_table_mid_copy() {
    // A bad L2 table far into the image: the copy starts, a reader fails, and every thread of
    // the copy engine must stop and report it (no hang, exit status 1, the structure named).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("r.raw");
    make_mixed_raw(&raw, 20 << 20, 3);
    let img = d.join("c.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    // L1 entry 5 (4 KiB clusters: 2 MiB per L2 table, so guest 10-12 MiB) → past the end.
    b[l1 + 5 * 8..l1 + 6 * 8].copy_from_slice(&(0x8000_0000_0000_0000u64 | 1 << 40).to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let args: Vec<String> = [
        "convert",
        img.to_str().unwrap(),
        "-O",
        "raw",
        d.join("o.raw").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let _ = tx.send(run_ferry(&a));
    });
    let o = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("ferry convert hung on a corrupt image");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("qcow2 L2 table") && err.contains("c.qcow2"),
        "{err}"
    );
}

/// `ferry map | head -1`: when the reader goes away, ferry stops quietly with success.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let d = tempfile::tempdir().unwrap();
    let img = chain_fixture(d.path());
    let mut child = std::process::Command::new(ferry_bin())
        .args(["map", img.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn warnings_have_one_style_and_q_silences_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    // incompatible_features (big-endian u64 at byte 72): bit 0, the dirty bit.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[79] |= 1;
    std::fs::write(&img, &bytes).unwrap();
    let o = run_ferry(&["info", img.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("ferry: warning: ") && l.contains("dirty bit")),
        "{err}"
    );
    assert!(!err.contains("[WARN"), "{err}");
    let o = run_ferry(&["-q", "info", img.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    // After the command as well (a global flag), and -v adds what ferry does.
    let o = run_ferry(&["info", "-q", img.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    let o = run_ferry(&["info", "-q", "-v", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "-q and -v exclude each other");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let bash = ferry_ok(&["completions", "bash"]);
    for c in [
        "info", "convert", "mount", "umount", "fix", "v2v", "timeline",
    ] {
        assert!(bash.contains(c), "{c} missing from the bash completions");
    }
    assert!(bash.contains("--force-share") && bash.contains("--output-format"));
    let zsh = ferry_ok(&["completions", "zsh"]);
    assert!(
        zsh.starts_with("#compdef ferry"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
    let page = ferry_ok(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH ferry"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mandir = dir.path().join("man1");
    ferry_ok(&["man", "--dir", mandir.to_str().unwrap()]);
    for p in ["ferry.1", "ferry-mount.1", "ferry-convert.1", "ferry-fix.1"] {
        let text = std::fs::read_to_string(mandir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(text.contains(".TH"), "{p}");
    }
    // man(1) renders them without complaint where it is installed.
    if let Ok(o) = std::process::Command::new("man")
        .args(["--warnings", "-l", "-Tutf8"])
        .arg(mandir.join("ferry-mount.1"))
        .env("MANWIDTH", "80")
        .output()
    {
        // Bold and underline come as overstrikes (c BS c) when not on a terminal.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&o.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(
            text.contains("--overlay") && text.contains("NAME"),
            "{text}"
        );
        assert!(
            o.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// ls -R/--csv/--json/--checksum, several paths, cat of several files and the virt-ls style
/// `-a IMAGE`, checked against the directory mkfs.ext4 -d built the image from.
#[test]
fn ls_and_cat_take_virt_ls_and_virt_cat_habits() {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for d in ["etc/sub/deeper", "var/log", "empty"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let files: [(&str, Vec<u8>); 5] = [
        ("etc/hostname", b"guest\n".to_vec()),
        ("etc/a,b \"quoted\"", b"comma\n".to_vec()),
        ("etc/sub/deeper/big", pseudo_random(9, 300_000)),
        ("var/log/messages", b"one\ntwo\n".to_vec()),
        ("etc/sub/x", Vec::new()),
    ];
    for (p, data) in &files {
        std::fs::write(src.join(p), data).unwrap();
    }
    std::fs::set_permissions(
        src.join("etc/hostname"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("../hostname", src.join("etc/sub/link")).unwrap();
    let img = tmp.path().join("fs.img");
    crate::common::kernel::mkfs_ext4(&img, "16M", Some(&src), &[]);
    let i = img.to_str().unwrap();

    // -R: every path below /, in full, as the source tree has them (plus lost+found).
    let listed: std::collections::BTreeSet<String> = ferry_ok(&["ls", "-R", i, "/"])
        .lines()
        .map(String::from)
        .filter(|l| !l.starts_with("/lost+found"))
        .collect();
    let mut want = std::collections::BTreeSet::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            want.insert(format!("/{}", p.strip_prefix(&src).unwrap().display()));
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    assert_eq!(listed, want);

    // --csv --checksum: mode (with type bits), size and sha256 of each file under /etc.
    let csv = ferry_ok(&["ls", "-R", "--csv", "--checksum", "-a", i, "/etc"]);
    let mut rows = 0;
    for line in csv.lines() {
        // The one quoted name holds a comma and doubled quotes.
        let (fields, path): (Vec<&str>, String) = if let Some(q) = line.find('"') {
            let end = line.rfind('"').unwrap();
            let before: Vec<&str> = line[..q].trim_end_matches(',').split(',').collect();
            (before, line[q + 1..end].replace("\"\"", "\""))
        } else {
            let f: Vec<&str> = line.split(',').collect();
            (f[..6].to_vec(), f[6].to_string())
        };
        let host = src.join(path.trim_start_matches('/'));
        let m = std::fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(fields[0], format!("{:o}", m.mode()), "{line}");
        if !m.is_dir() {
            assert_eq!(fields[4], m.len().to_string(), "{line}");
        }
        if m.is_file() {
            let digest = hex(&sha2::Sha256::digest(std::fs::read(&host).unwrap()));
            assert!(line.ends_with(&format!(",{digest}")), "{line}");
        }
        if m.file_type().is_symlink() {
            assert!(line.contains(",../hostname"), "{line}");
        }
        rows += 1;
    }
    assert_eq!(rows, want.iter().filter(|p| p.starts_with("/etc/")).count());

    // --json: the same sizes, targets and digests as objects.
    let j: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "ls",
        "--json",
        "--checksum=md5",
        i,
        "/var/log",
    ]))
    .unwrap();
    let arr = j.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["path"], "messages");
    assert_eq!(arr[0]["size"], 8);
    let md5 = sh(&format!(
        "md5sum < '{}'",
        src.join("var/log/messages").display()
    ));
    assert_eq!(arr[0]["checksum"], md5.split_whitespace().next().unwrap());

    // Several paths: each under a header, as ls(1) prints them.
    let two = ferry_ok(&["ls", i, "/var", "/empty"]);
    assert_eq!(two, "/var:\nlog\n\n/empty:\n");
    // cat of several files, with the image first or as -a.
    let want = [b"guest\n".as_slice(), b"one\ntwo\n"].concat();
    for args in [
        vec!["cat", i, "/etc/hostname", "/var/log/messages"],
        vec!["cat", "-a", i, "/etc/hostname", "/var/log/messages"],
    ] {
        let o = run_ferry(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, want, "{args:?}");
    }
    let o = run_ferry(&["cat", i, "/etc"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/etc: is a directory"));
    let o = run_ferry(&["ls"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("give the guest's image"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `convert -p` off a terminal prints what `qemu-img convert -p` prints there.
#[test]
fn progress_off_a_terminal_is_qemu_img_s() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_mixed_raw(&src, 24 << 20, 3);
    let shape = |out: &str| -> Vec<f64> {
        assert!(out.ends_with("(100.00/100%)\r\n"), "{out:?}");
        out.trim_end_matches('\n')
            .split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.strip_prefix("    (").unwrap_or_else(|| panic!("{s:?}"));
                s.strip_suffix("/100%)").unwrap().parse::<f64>().unwrap()
            })
            .collect()
    };
    let theirs = qemu_img(&[
        "convert",
        "-p",
        "-O",
        "raw",
        src.to_str().unwrap(),
        dir.path().join("q.raw").to_str().unwrap(),
    ]);
    let q = shape(&theirs);
    let ours = ferry_ok(&[
        "convert",
        "-p",
        "-O",
        "raw",
        src.to_str().unwrap(),
        dir.path().join("f.raw").to_str().unwrap(),
    ]);
    let f = shape(&ours);
    for v in [&q, &f] {
        assert_eq!(v.first(), Some(&0.0));
        assert_eq!(v.last(), Some(&100.0));
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{v:?}");
    }
}

/// The executable loads libc and nothing else (docs/ARCHITECTURE.md, "Start-up cost"): a first
/// command after boot reads each library it loads from disk. libm's two functions are defined
/// in the executable (src/cli/cmath.rs), GCC's unwinder is linked in by build.rs where the
/// toolchain has `libgcc_eh.a`.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_executable_loads_only_libc() {
    let out = std::process::Command::new("readelf")
        .args(["-dW"])
        .arg(ferry_bin())
        .output()
        .expect("readelf (binutils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let needed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_owned()))
        .collect();
    let static_unwinder = std::process::Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .is_ok_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute());
    let allowed: &[&str] = if static_unwinder {
        &["libc.so.6"]
    } else {
        eprintln!("no libgcc_eh.a: libgcc_s.so.1 is allowed");
        &["libc.so.6", "libgcc_s.so.1"]
    };
    assert!(!needed.is_empty(), "no NEEDED entries read");
    for lib in &needed {
        assert!(
            allowed.contains(&lib.as_str()),
            "the executable needs {lib}: {needed:?}"
        );
    }
}

/// Clusters allocated on a hole of the host file (`preallocation=falloc`: unwritten extents)
/// are data in the map, as in qemu-img's, with their pages in the page cache or not: ferry
/// asked the host and answered zero until something had read them.
#[test]
fn preallocated_clusters_map_as_qemu_with_a_cold_cache() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("falloc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "preallocation=falloc",
        img.to_str().unwrap(),
        "4M",
    ]);
    let evict = || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&img).unwrap();
        // SAFETY: posix_fadvise on an open file only drops clean cached pages.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0);
    };
    evict();
    let cold = map_json_shape(&ferry_json(&["map", "--json", img.to_str().unwrap()]));
    let theirs = map_json_shape(
        &serde_json::from_str(&qemu_img(&["map", "--output=json", img.to_str().unwrap()])).unwrap(),
    );
    assert_eq!(cold, theirs);
    assert!(
        matches!(theirs[..], [(0, len, false, true, Some(_))] if len == 4 << 20),
        "qemu-img's own view changed: {theirs:?}"
    );
    std::fs::read(&img).unwrap();
    let warm = map_json_shape(&ferry_json(&["map", "--json", img.to_str().unwrap()]));
    assert_eq!(warm, theirs);
}
