//! `ferry mount` (FUSE) against the kernel: the same ext2/3/4 image mounted by the kernel
//! (loop, read-only) and by ferry (through raw, qcow2 and VMDK wrappers), walked with the
//! ordinary file API and compared stat for stat and byte for byte; `find -printf` of both must
//! be identical; `ferry ls`/`ferry cat` must agree with the mount. Also the CLI's errors.
//!
//! Needs root (loop mounts), /dev/fuse and e2fsprogs: skips loudly without them, fails under
//! FERRY_REQUIRE_FUSE=1. Every mount is undone by a Drop guard with bounded waits.

use crate::common;

use common::kernel::{self, FerryMount, KernelMount, Snapshot};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Whether this machine can run the test; says why not (or fails under FERRY_REQUIRE_FUSE).
fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    let tools = common::have_tools(&["mkfs.ext4", "debugfs", "getfattr", "setfattr", "setfacl"]);
    if root && fuse && tools {
        return true;
    }
    let why = format!("root: {root}, /dev/fuse: {fuse}, e2fsprogs: {tools}");
    assert!(
        !kernel::required(),
        "cannot run FUSE tests ({why}) and FERRY_REQUIRE_FUSE=1"
    );
    eprintln!("SKIP: FUSE mount tests need root, /dev/fuse and e2fsprogs ({why})");
    false
}

/// A tree like a guest's: a copy of the host's /etc and part of /usr/share/doc, plus the
/// cases real trees rarely have (sparse files, every symlink length class, device nodes,
/// FIFOs, sockets, hard links, odd names, a directory of 3000 entries, old and far-future times).
fn build_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    common::sh(&format!(
        "cp -a /etc '{0}/etc' 2>/dev/null; mkdir -p '{0}/usr/share/doc' && \
         cp -a /usr/share/doc/[a-f]* '{0}/usr/share/doc/' 2>/dev/null; true",
        root.display()
    ));
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    w("large", &common::pseudo_random(7, (9 << 20) + 4321));
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&common::pseudo_random(8, 70000), 3 << 20)
        .unwrap();
    f.write_all_at(b"end", (64 << 20) - 3).unwrap();
    drop(f);
    for n in [1usize, 59, 60, 61, 300, 1000] {
        let target: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        std::os::unix::fs::symlink(&target, root.join(format!("link{n}"))).unwrap();
    }
    std::os::unix::fs::symlink("/etc/hostname", root.join("abs_link")).unwrap();
    std::fs::hard_link(root.join("large"), root.join("etc/large_hardlink")).unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"odd\xff\x01name")), b"x").unwrap();
    w("with space and\nnewline", b"y");
    w(&"n".repeat(255), b"longest name");
    // mkfs -d links names one by one (quadratic): large directories are made in
    // `large_directory` by the kernel instead.
    std::fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..3000 {
        w(&format!("many/file-{i:05}-padding-the-name"), b"");
    }
    common::sh(&format!(
        "cd '{}' && mkfifo fifo && mknod tty c 4 64 && mknod blk b 259 70000 && \
         python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")' && \
         chown 1234:5678 large && chmod 4751 large && chown -h 70000:80000 link1 && \
         touch -h -d '2100-03-04 05:06:07.123456789' large && touch -d '1960-01-01 00:00:00.5' fifo",
        root.display()
    ));
    // Extended attributes: small ones in the inode, a large one that needs the xattr block,
    // security and trusted namespaces, and POSIX ACLs (mkfs -d copies them all).
    w("xattrs", b"xattrs");
    std::fs::create_dir_all(root.join("acl_dir")).unwrap();
    common::sh(&format!(
        "cd '{}' && setfattr -n user.small -v hello xattrs && \
         python3 -c \"import os; os.setxattr('xattrs', 'user.big', bytes(range(256)) * 2 + bytes(200))\" && \
         setfattr -n trusted.t -v 1 xattrs && setfattr -n security.s -v label xattrs && \
         setfattr -n user.on_dir -v d etc && setfacl -m u:1234:rwx,g:55:r xattrs && \
         setfacl -d -m u:1234:rx acl_dir && setfacl -m u:42:r acl_dir",
        root.display()
    ));
}

/// The kernel's snapshot of the tree under `root`, with the root's inode number left out:
/// FUSE always calls the root node 1, whatever the filesystem says.
fn walk(root: &Path) -> Snapshot {
    let mut s = kernel::walk(root);
    s.get_mut(&b""[..]).expect("root").ino = 0;
    s
}

/// The issue's `find -printf` line for every path, the root's inode number left out.
fn find_printf(root: &Path) -> Vec<u8> {
    let out = Command::new("find")
        .arg(root)
        .args([
            "-mindepth",
            "1",
            "-printf",
            "%P %y %m %U %G %s %n %i %T@ %C@ %l\\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').collect();
    lines.sort();
    lines.join(&b'\n')
}

/// `getfattr -d -m - -e hex -R` of the tree (every namespace, values in hex), paths relative,
/// one block per file sorted by path: the walk follows readdir order, which for hashed
/// directories is hash order in the kernel and on-disk order in ferry.
fn getfattr(root: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-", "-e", "hex", "-R", "-P", "."])
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("user.small"),
        "no xattrs seen under {}",
        root.display()
    );
    let mut blocks: Vec<String> = text.split("\n\n").map(str::to_string).collect();
    blocks.sort();
    blocks
}

fn mkfs(image: &Path, src: &Path, size: &str, args: &[&str]) {
    kernel::mkfs_ext4(image, size, Some(src), args);
}

fn wrap(raw: &Path, fmt: &str) -> PathBuf {
    if fmt == "raw" {
        return raw.to_path_buf();
    }
    let out = raw.with_extension(fmt);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if fmt == "vmdk" {
        args.extend(["-o", "subformat=streamOptimized"]);
    }
    let (r, o) = (raw.to_str().unwrap(), out.to_str().unwrap());
    args.extend([r, o]);
    common::qemu_img(&args);
    out
}

fn ferry_out(args: &[&OsStr]) -> std::process::Output {
    Command::new(common::ferry_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn matches_the_kernel() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let variants: &[(&str, &[&str], &str)] = &[
        ("ext4", &[], "qcow2"),
        ("ext4-nocsum", &["-O", "^metadata_csum"], "raw"),
        ("ext4-inline", &["-O", "inline_data"], "vmdk"),
        ("ext4-bigalloc", &["-O", "bigalloc", "-C", "16384"], "raw"),
        ("ext4-no64bit", &["-O", "^64bit"], "raw"),
        ("ext4-noextent", &["-O", "^extent,^64bit"], "raw"),
        ("ext3", &["-t", "ext3"], "qcow2"),
        ("ext2-1k", &["-t", "ext2", "-b", "1024"], "raw"),
    ];
    for (name, args, fmt) in variants {
        let raw = tmp.path().join(format!("{name}.img"));
        mkfs(&raw, &src, "400M", args);
        let image = wrap(&raw, fmt);
        let guard = common::Unchanged::new(&[&image]);
        let kmnt = tmp.path().join("kernel");
        let fmnt = tmp.path().join("ferry");
        let _k =
            KernelMount::new(&raw, &kmnt, "ro").unwrap_or_else(|e| panic!("kernel mount: {e}"));
        let f = FerryMount::new(&[image.as_os_str()], &fmnt)
            .unwrap_or_else(|e| panic!("{name}: ferry mount: {e}"));
        let kernel = walk(&kmnt);
        let ours = walk(&fmnt);
        kernel::assert_same(&kernel, &ours, name);
        assert_eq!(
            find_printf(&kmnt),
            find_printf(&fmnt),
            "{name}: find -printf differs"
        );
        assert_eq!(getfattr(&kmnt), getfattr(&fmnt), "{name}: getfattr differs");
        let sk = nix_statvfs(&kmnt);
        let sf = nix_statvfs(&fmnt);
        assert_eq!(sk, sf, "{name}: statvfs differs");
        drop(f);
        drop(guard);
        eprintln!(
            "{name} ({fmt}): {} paths agree with the kernel",
            kernel.len()
        );
    }
}

/// statvfs fields that describe the filesystem (not the mount flags).
fn nix_statvfs(p: &Path) -> [u64; 7] {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    [
        s.f_bsize,
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_namemax,
    ]
}

#[test]
fn ls_and_cat_agree_with_the_mount() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc/sub")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"guest\n").unwrap();
    std::fs::write(src.join("etc/big"), common::pseudo_random(3, 3 << 20)).unwrap();
    std::fs::write(src.join("etc/sub/x"), b"x").unwrap();
    std::os::unix::fs::symlink("../etc/hostname", src.join("etc/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/sub", src.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("loop2", src.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", src.join("loop2")).unwrap();
    // A partitioned disk: the filesystem is chosen by its device name.
    let disk = tmp.path().join("disk.img");
    common::sfdisk_image(
        &disk,
        64 << 20,
        "label: gpt\nstart=2048, size=40960\nstart=43008\n",
    );
    let part = tmp.path().join("part.img");
    mkfs(&part, &src, "20M", &[]);
    common::write_into(&disk, 2048 * 512, &part);
    let disk_q = wrap(&disk, "qcow2");
    let mnt = tmp.path().join("mnt");
    let _m = FerryMount::new(
        &[
            disk_q.as_os_str(),
            OsStr::new("-m"),
            OsStr::new("/dev/sda1"),
        ],
        &mnt,
    )
    .expect("mount");
    // The kernel's view of the same partition, through a loop device over its byte range.
    let k = KernelMount::range(
        &disk,
        2048 * 512,
        40960 * 512,
        &tmp.path().join("kernel"),
        "ro",
    )
    .unwrap_or_else(|e| panic!("kernel mount of the partition: {e}"));
    kernel::assert_same(&walk(k.path()), &walk(&mnt), "/dev/sda1 of a GPT disk");
    k.unmount().unwrap();
    let dev = format!("{}:/dev/sda1", disk_q.display());
    let dev = OsStr::new(&dev);
    for path in [
        "/etc/hostname",
        "/etc/big",
        "etc/rel",
        "/dirlink/x",
        "/etc/sub/../hostname",
    ] {
        let out = ferry_out(&[OsStr::new("cat"), dev, OsStr::new(path)]);
        assert!(
            out.status.success(),
            "cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The mount resolves /dirlink inside the guest only through ferry; compare with the
        // file the path names inside the guest.
        let inside = path
            .replace("/dirlink", "/etc/sub")
            .replace("etc/rel", "etc/hostname");
        let want = std::fs::read(mnt.join(inside.trim_start_matches('/'))).unwrap();
        assert_eq!(out.stdout, want, "cat {path}");
    }
    let out = ferry_out(&[OsStr::new("cat"), dev, OsStr::new("/loop1")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too many levels of symbolic links"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ferry_out(&[OsStr::new("cat"), dev, OsStr::new("/nope")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope: no such file or directory"));
    // ls: the names the mount lists, sorted, without . and ..
    for dir in ["/", "/etc", "/dirlink"] {
        let out = ferry_out(&[OsStr::new("ls"), dev, OsStr::new(dir)]);
        assert!(out.status.success());
        let inside = dir.replace("/dirlink", "/etc/sub");
        let mut want: Vec<Vec<u8>> = std::fs::read_dir(mnt.join(inside.trim_start_matches('/')))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        want.sort();
        let got: Vec<Vec<u8>> = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, want, "ls {dir}");
    }
    // ls -l: mode, links, owners and size as stat on the mount says.
    let out = ferry_out(&[OsStr::new("ls"), dev, OsStr::new("/etc"), OsStr::new("-l")]);
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = f[7];
        let m = std::fs::symlink_metadata(mnt.join("etc").join(name)).unwrap();
        assert_eq!(f[1], m.nlink().to_string(), "{line}");
        assert_eq!(f[2], m.uid().to_string(), "{line}");
        assert_eq!(f[4], m.size().to_string(), "{line}");
        let t = if m.file_type().is_symlink() {
            'l'
        } else if m.is_dir() {
            'd'
        } else {
            '-'
        };
        assert!(f[0].starts_with(t), "{line}");
    }
    assert!(text.contains("rel -> ../etc/hostname"), "{text}");
}

#[test]
fn cli_errors_are_clear() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let img = tmp.path().join("a.img");
    mkfs(&img, &src, "8M", &[]);
    let img2 = tmp.path().join("b.img");
    mkfs(&img2, &src, "8M", &[]);
    let mnt = tmp.path().join("mnt");
    let err = |args: &[&OsStr]| {
        let out = ferry_out(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = tmp.path().join("missing");
    let e = err(&[OsStr::new("mount"), img.as_os_str(), missing.as_os_str()]);
    assert!(e.contains("does not exist"), "{e}");
    let e = err(&[OsStr::new("mount"), img.as_os_str(), img2.as_os_str()]);
    assert!(e.contains("is not a directory"), "{e}");
    std::fs::create_dir(&mnt).unwrap();
    let e = err(&[
        OsStr::new("mount"),
        img.as_os_str(),
        img2.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(
        e.contains("several filesystems") && e.contains("/dev/sdb"),
        "{e}"
    );
    let e = err(&[
        OsStr::new("mount"),
        img.as_os_str(),
        OsStr::new("-m"),
        OsStr::new("/dev/sdz"),
        mnt.as_os_str(),
    ]);
    assert!(
        e.contains("no device /dev/sdz") && e.contains("/dev/sda"),
        "{e}"
    );
    let e = err(&[OsStr::new("umount"), mnt.as_os_str()]);
    assert!(e.contains("not a mountpoint"), "{e}");
    // Only ferry's mounts are ferry's to unmount.
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "none"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let e = err(&[OsStr::new("umount"), mnt.as_os_str()]);
    assert!(
        e.contains("not a ferry mount") && e.contains("tmpfs"),
        "{e}"
    );
    assert!(ferry::mount::is_mountpoint(&mnt).unwrap());
    let e = err(&[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()]);
    assert!(e.contains("is busy"), "{e}");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    // A directory bind-mounted onto itself is a mountpoint too.
    let st = Command::new("mount")
        .arg("--bind")
        .args([&mnt, &mnt])
        .status()
        .unwrap();
    assert!(st.success());
    let e = err(&[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()]);
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert!(e.contains("is busy"), "{e}");
    let e = err(&[
        OsStr::new("mount"),
        OsStr::new("--threads"),
        OsStr::new("100000"),
        img.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(e.contains("at most 256 threads"), "{e}");
    // -f is the format, as in qemu-img (a wrong one is refused by name).
    let e = err(&[
        OsStr::new("mount"),
        OsStr::new("-f"),
        OsStr::new("qcow2"),
        img.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(e.contains("qcow2"), "{e}");
    let m = FerryMount::new(
        &[OsStr::new("-f"), OsStr::new("raw"), img.as_os_str()],
        &mnt,
    )
    .expect("mount");
    assert!(mnt.join("lost+found").is_dir());
    // The daemon widens the kernel's readahead for the mount (after `ferry mount` returns).
    let dev = std::fs::metadata(&mnt).unwrap().dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let want = ferry::mount::READAHEAD_KB.to_string();
    // Opening for writing changes nothing; where sysfs is read-only (some containers) the
    // daemon cannot widen it either, and the mount works as before.
    if std::fs::OpenOptions::new().write(true).open(&knob).is_ok() {
        let start = Instant::now();
        let mut seen = String::new();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            seen = std::fs::read_to_string(&knob).unwrap_or_default();
            if seen.trim() == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(seen.trim(), want, "{knob}");
    } else {
        eprintln!("SKIP: {knob} is not writable here; the readahead is not checked");
    }
    // The root shows the filesystem's own inode number (ext4's 2), as the kernel's mount.
    assert_eq!(std::fs::metadata(&mnt).unwrap().ino(), 2);
    let e = err(&[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()]);
    assert!(e.contains("is busy"), "{e}");
    // Read-only: writes are refused by the kernel or by us.
    assert!(std::fs::write(mnt.join("new"), b"x").is_err());
    // A busy mount is not torn down under a process using it.
    let f = std::fs::File::open(mnt.join("lost+found")).unwrap();
    let e = err(&[OsStr::new("umount"), mnt.as_os_str()]);
    assert!(e.contains("busy"), "{e}");
    drop(f);
    drop(m);
    assert!(!ferry::mount::is_mountpoint(&mnt).unwrap());
}

#[test]
fn concurrent_readers_see_the_same_bytes() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let files: Vec<Vec<u8>> = (0..8)
        .map(|i| common::pseudo_random(i, (3 << 20) + i as usize * 777))
        .collect();
    for (i, d) in files.iter().enumerate() {
        std::fs::write(src.join(format!("f{i}")), d).unwrap();
    }
    let raw = tmp.path().join("c.img");
    mkfs(&raw, &src, "64M", &[]);
    let image = wrap(&raw, "qcow2");
    let mnt = tmp.path().join("mnt");
    let _m = FerryMount::new(&[image.as_os_str()], &mnt).expect("mount");
    std::thread::scope(|s| {
        for (i, d) in files.iter().enumerate() {
            let mnt = &mnt;
            s.spawn(move || {
                let f = std::fs::File::open(mnt.join(format!("f{i}"))).unwrap();
                // Unaligned reads at scattered offsets, as a database or a tar would do.
                let mut off = 0usize;
                let mut step = 4096 * 37 + i;
                while off < d.len() {
                    let n = (d.len() - off).min(100_000 + i);
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, off as u64).unwrap();
                    assert_eq!(buf, d[off..off + n], "f{i} at {off}");
                    off += step;
                    step = step * 3 / 2;
                }
                assert_eq!(std::fs::read(mnt.join(format!("f{i}"))).unwrap(), *d);
            });
        }
    });
}

#[test]
fn large_directory() {
    if !can_mount() {
        return;
    }
    let t = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("big.img");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    mkfs(&raw, &src, "256M", &["-N", "131072"]);
    // The kernel builds the directory, so it gets the hashed (htree) index a guest's would.
    let kmnt = tmp.path().join("kernel");
    let rw = KernelMount::new(&raw, &kmnt, "").unwrap();
    let names: Vec<String> = (0..100_000)
        .map(|i| format!("entry-{i:06}-{:x}", i * 7919))
        .collect();
    std::fs::create_dir(kmnt.join("d")).unwrap();
    for n in &names {
        std::fs::File::create(kmnt.join("d").join(n)).unwrap();
    }
    rw.unmount().unwrap();
    eprintln!("built by the kernel in {:?}", t.elapsed());
    let image = wrap(&raw, "qcow2");
    let _k = KernelMount::new(&raw, &kmnt, "ro").unwrap_or_else(|e| panic!("kernel mount: {e}"));
    let fmnt = tmp.path().join("ferry");
    {
        // Cold lookups by name, no listing first: each is a LOOKUP through the directory.
        let _f = FerryMount::new(&[image.as_os_str()], &fmnt).expect("mount");
        for n in names.iter().step_by(97) {
            let k = std::fs::symlink_metadata(kmnt.join("d").join(n)).unwrap();
            let f = std::fs::symlink_metadata(fmnt.join("d").join(n)).unwrap();
            assert_eq!(
                (k.ino(), k.mode(), k.mtime_nsec()),
                (f.ino(), f.mode(), f.mtime_nsec()),
                "{n}"
            );
        }
        assert!(std::fs::symlink_metadata(fmnt.join("d/entry-not-there")).is_err());
        eprintln!("lookups done at {:?}", t.elapsed());
    }
    let _f = FerryMount::new(&[image.as_os_str()], &fmnt).expect("mount");
    let kernel = walk(&kmnt);
    eprintln!("kernel walk done at {:?}", t.elapsed());
    let ours = walk(&fmnt);
    eprintln!("ferry walk done at {:?}", t.elapsed());
    kernel::assert_same(&kernel, &ours, "100k-entry directory");
    assert_eq!(
        find_printf(&kmnt),
        find_printf(&fmnt),
        "find -printf differs"
    );
}

/// Real images written by other tools (../shared/corpus): ferry's mount equals the kernel's.
#[test]
fn corpus_images_match_the_kernel() {
    if !can_mount() {
        return;
    }
    let Some(corpus) = common::corpus() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let images = [
        "dissect.extfs/ext4.bin.gz",
        "dissect.extfs/ext4_sparse.bin.gz",
        "dissect.extfs/ext4_symlink_test.bin.gz",
        "ext4-view-rs/test_disk1.bin.zst",
        "ext4-view-rs/test_disk_4k_block_journal.bin.zst",
        "ext4-view-rs/test_disk_ext2.bin.zst",
        "ext4-view-rs/test_disk_ext3.bin.zst",
    ];
    for name in images {
        let img = common::unpack(&corpus.join(name), tmp.path());
        let guard = common::Unchanged::new(&[&img]);
        let kmnt = tmp.path().join("kernel");
        let fmnt = tmp.path().join("ferry");
        // An image that needs journal recovery: the kernel's view is that of a copy it
        // recovered (a read-only loop device cannot be recovered in place); ferry replays the
        // journal in memory on the untouched original.
        let features = common::run_tool("dumpe2fs", &["-h", img.to_str().unwrap()]);
        let kimg = if features.contains("needs_recovery") {
            let copy = tmp.path().join("recovered.img");
            std::fs::copy(&img, &copy).unwrap();
            KernelMount::new(&copy, &kmnt, "")
                .unwrap_or_else(|e| panic!("{name}: recovering mount: {e}"))
                .unmount()
                .unwrap();
            copy
        } else {
            img.clone()
        };
        let _k =
            KernelMount::new(&kimg, &kmnt, "ro").unwrap_or_else(|e| panic!("kernel mount: {e}"));
        let _f = FerryMount::new(&[img.as_os_str()], &fmnt)
            .unwrap_or_else(|e| panic!("{name}: ferry mount: {e}"));
        let kernel = walk(&kmnt);
        kernel::assert_same(&kernel, &walk(&fmnt), name);
        assert_eq!(
            find_printf(&kmnt),
            find_printf(&fmnt),
            "{name}: find -printf"
        );
        assert_eq!(nix_statvfs(&kmnt), nix_statvfs(&fmnt), "{name}: statvfs");
        drop(_f);
        drop(_k);
        drop(guard);
        eprintln!("{name}: {} paths agree with the kernel", kernel.len());
    }
}

/// Parses debugfs's `imap` answer: the byte offset of inode `path` in `image`.
fn inode_offset(image: &Path, path: &str) -> u64 {
    let out = common::run_tool(
        "debugfs",
        &["-R", &format!("imap {path}"), image.to_str().unwrap()],
    );
    let block: u64 = out
        .split("located at block ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("debugfs imap: {out}"));
    let off = out.split("offset 0x").nth(1).unwrap().trim();
    let off = u64::from_str_radix(off, 16).unwrap();
    block * 4096 + off
}

fn blocks_of(image: &Path, path: &str) -> Vec<u64> {
    let out = common::run_tool(
        "debugfs",
        &["-R", &format!("blocks {path}"), image.to_str().unwrap()],
    );
    out.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// One damaged file and one damaged directory: EIO on those, everything else as the kernel
/// shows it, and the mount keeps serving.
#[test]
fn damage_is_eio_and_the_rest_stays_browsable() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::create_dir_all(src.join("ok")).unwrap();
    std::fs::write(src.join("victim"), common::pseudo_random(1, 100_000)).unwrap();
    std::fs::write(src.join("ok/file"), common::pseudo_random(2, 50_000)).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("dir/f{i}")), b"x").unwrap();
    }
    let img = tmp.path().join("d.img");
    mkfs(&img, &src, "16M", &["-b", "4096", "-O", "^metadata_csum"]);
    // The victim's extent header (i_block, at 0x28 in the inode) and the directory's block.
    let at = inode_offset(&img, "/victim") + 0x28;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xde; 12], at).unwrap();
    let dir_block = blocks_of(&img, "/dir")[0];
    f.write_all_at(&common::pseudo_random(9, 4096), dir_block * 4096)
        .unwrap();
    drop(f);
    let mnt = tmp.path().join("mnt");
    let _m = FerryMount::new(&[img.as_os_str()], &mnt).expect("mount");
    let e = std::fs::read(mnt.join("victim")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = std::fs::read_dir(mnt.join("dir"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        std::fs::read(mnt.join("ok/file")).unwrap(),
        common::pseudo_random(2, 50_000)
    );
    let mut names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "lost+found", "ok", "victim"]);
}

/// The promise of "no root": an unprivileged user mounts (through fusermount3), reads and
/// unmounts.
#[test]
fn mounts_without_root() {
    if !can_mount() {
        return;
    }
    if !common::have_tools(&["setpriv", "fusermount3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), b"from an unprivileged mount\n").unwrap();
    let dir = tmp.path().join("user");
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    mkfs(&dir.join("d.img"), &src, "8M", &[]);
    // The binary is copied next to the image so the unprivileged user can run it wherever
    // the build directory is.
    std::fs::copy(common::ferry_bin(), dir.join("ferry")).unwrap();
    common::sh(&format!(
        "chmod 755 '{0}' '{1}' && chown -R nobody '{1}'",
        tmp.path().display(),
        dir.display()
    ));
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "env",
            "XDG_RUNTIME_DIR=",
        ])
        .args(args)
        .current_dir(&dir);
        kernel::run_bounded(&mut c)
    };
    if let Err(err) = as_nobody(&["./ferry", "mount", "d.img", "mnt"]) {
        panic!("mount as nobody: {err}");
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "cat",
            "mnt/hello",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let umount = as_nobody(&["./ferry", "umount", "mnt"]);
    if umount.is_err() {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("mnt"))
            .status();
    }
    assert_eq!(
        out.stdout,
        b"from an unprivileged mount\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(umount.is_ok(), "umount as nobody: {umount:?}");
    assert!(!ferry::mount::is_mountpoint(&dir.join("mnt")).unwrap());
}

/// A user who may not open /dev/fuse (mode 0600, as on a machine without the fuse3 package's
/// udev rule) is told so and what to do, instead of a bare "Permission denied". The 0600
/// device is a node of our own bind-mounted over /dev/fuse in a private mount namespace, so
/// other tests keep the real one.
#[test]
fn a_mount_without_access_to_dev_fuse_says_what_to_do() {
    if !can_mount() {
        return;
    }
    if !common::have_tools(&["setpriv", "fusermount3", "unshare", "mknod"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), b"hi\n").unwrap();
    let dir = tmp.path().join("user");
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    mkfs(&dir.join("d.img"), &src, "8M", &[]);
    std::fs::copy(common::ferry_bin(), dir.join("ferry")).unwrap();
    common::sh(&format!(
        "chmod 755 '{0}' '{1}' && chown -R nobody '{1}' && mknod '{0}/fuse' c 10 229 && chmod 600 '{0}/fuse'",
        tmp.path().display(),
        dir.display()
    ));
    let script = format!(
        "mount --bind '{}/fuse' /dev/fuse && exec setpriv --reuid=nobody --regid=nogroup \
         --clear-groups env XDG_RUNTIME_DIR= ./ferry mount d.img mnt",
        tmp.path().display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .current_dir(&dir);
    let err = match kernel::run_bounded(&mut c) {
        Ok(out) => {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(dir.join("mnt"))
                .status();
            panic!("mounted without access to /dev/fuse: {out}");
        }
        Err(e) => e,
    };
    assert!(
        err.contains("/dev/fuse is not open to you (mode 0600, owner uid 0)")
            && err.contains("chmod 0666 /dev/fuse"),
        "{err}"
    );
    assert!(!err.contains("os error 13"), "{err}");
    assert!(!ferry::mount::is_mountpoint(&dir.join("mnt")).unwrap());
}

/// guestmount's habits: `-a IMAGE`, `-o allow_other,ro`, `--pid-file`.
#[test]
fn guestmount_style_options() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"guest\n").unwrap();
    let img = tmp.path().join("fs.img");
    mkfs(&img, &src, "8M", &[]);
    let mnt = tmp.path().join("mnt");
    let pid = tmp.path().join("ferry.pid");
    let m = FerryMount::new(
        &[
            OsStr::new("-a"),
            img.as_os_str(),
            OsStr::new("-o"),
            OsStr::new("allow_other,ro"),
            OsStr::new("--pid-file"),
            pid.as_os_str(),
        ],
        &mnt,
    )
    .expect("mount");
    assert_eq!(std::fs::read(mnt.join("etc/hostname")).unwrap(), b"guest\n");
    // The pid file is there once `ferry mount` returns and names the serving daemon.
    let n: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The daemon (forked off `ferry mount`, which has exited) leads a session of its own.
    let cmdline = std::fs::read(format!("/proc/{n}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("mount"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    let stat = std::fs::read_to_string(format!("/proc/{n}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], n.to_string(), "not a session leader: {stat}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .expect("the mount in mountinfo");
    assert!(line.contains(" ro,") || line.contains(" ro "), "{line}");
    assert!(line.contains("allow_other"), "{line}");
    drop(m);
    assert!(!pid.exists(), "the pid file outlives the mount");
    // Unknown options are refused by name before anything is mounted.
    let o = common::run_ferry(&[
        "mount",
        "-o",
        "uid=5",
        img.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`uid=5` is not supported"));
}
