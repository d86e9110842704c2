//! The ext2/3/4 reader against the kernel: images made by `mkfs.ext4 -d` from a tree built here,
//! mounted read-only through a loop device, walked by both and compared field by field. Also:
//! the same image through qcow2, and damaged images (truncated, mutated) that must not panic
//! or hang.

use crate::common;

use common::kernel::{self, KernelMount, Snapshot};
use ferry::block::mem::MemDevice;
use ferry::block::BlockDevice;
use ferry::fs::ext4::Ext4;
use ferry::fs::{FileType, Filesystem};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The tree every image is made from.
fn build_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    std::fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    std::fs::create_dir_all(root.join("big")).unwrap();
    w("empty", b"");
    // With inline_data: a directory whose records spill from i_block into "system.data".
    std::fs::create_dir_all(root.join("mid")).unwrap();
    for i in 0..6 {
        w(&format!("mid/m{i}"), b"");
    }
    w("small", b"hello ext4\n");
    w("a/b/c/d/deep", b"deep file");
    w("large", &common::pseudo_random(1, 5 << 20 | 123));
    w("one_block", &common::pseudo_random(2, 4096));
    for i in 0..1000 {
        w(
            &format!("big/entry-{i:04}-with-a-longer-name"),
            format!("{i}").as_bytes(),
        );
    }
    // Sparse: holes at the start, in the middle and at the end.
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    f.set_len(40 << 20).unwrap();
    f.write_all_at(&common::pseudo_random(3, 10000), 5 << 20)
        .unwrap();
    f.write_all_at(b"tail", 30 << 20).unwrap();
    drop(f);
    // Past the double-indirect range of 1 KiB blocks (12 + 256 + 65536 blocks): triple indirect.
    let f = std::fs::File::create(root.join("far")).unwrap();
    f.set_len(70 << 20).unwrap();
    f.write_all_at(b"triple", 66 << 20).unwrap();
    drop(f);
    // 1500 one-block extents: an extent tree of depth 2 with 1 KiB blocks, 1 with 4 KiB.
    let f = std::fs::File::create(root.join("fragmented")).unwrap();
    for i in 0..1500u64 {
        f.write_all_at(&common::pseudo_random(i, 1000), i * 8192)
            .unwrap();
    }
    drop(f);
    let f = std::fs::File::create(root.join("prealloc")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"end", 1 << 20).unwrap();
    drop(f);
    let f = std::fs::File::create(root.join("all_hole")).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);
    for n in [1usize, 59, 60, 61, 500] {
        let target: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        std::os::unix::fs::symlink(&target, root.join(format!("link{n}"))).unwrap();
    }
    std::os::unix::fs::symlink("a/b/c/d/deep", root.join("link_deep")).unwrap();
    std::fs::hard_link(root.join("small"), root.join("a/hardlink")).unwrap();
    std::fs::hard_link(root.join("small"), root.join("a/b/hardlink2")).unwrap();
    w("with space", b"spaces");
    w("ünïcødé-名前", b"utf8");
    std::fs::write(root.join(OsStr::from_bytes(b"bad\xffbyte")), b"ff").unwrap();
    w(&"n".repeat(255), b"longest name");
    common::sh(&format!("mkfifo '{}'", root.join("fifo").display()));
    common::sh(&format!(
        "mknod '{}' c 4 64 2>/dev/null || true",
        root.join("tty").display()
    ));
    common::sh(&format!(
        "mknod '{}' b 259 70000 2>/dev/null || true",
        root.join("blk").display()
    ));
    common::sh(&format!(
        "chown 1234:5678 '{}' 2>/dev/null || true",
        root.join("small").display()
    ));
    common::sh(&format!(
        "chown -h 70000:80000 '{}' 2>/dev/null || true",
        root.join("link1").display()
    ));
    common::sh(&format!(
        "chmod 4751 '{}'",
        root.join("one_block").display()
    ));
    common::sh(&format!(
        "touch -h -d '2100-03-04 05:06:07.123456789' '{}'",
        root.join("one_block").display()
    ));
    common::sh(&format!(
        "touch -h -d '1960-01-01 00:00:00.5' '{}'",
        root.join("small").display()
    ));
}

/// Mounts `image` read-only at `mnt` (noload where the driver knows it: ext2 does not).
fn mount(image: &Path, mnt: &Path) -> Option<KernelMount> {
    KernelMount::new(image, mnt, "ro,noload")
        .ok()
        .or_else(|| kernel::mount_or_skip(image, mnt, "ro"))
}

fn mkfs(image: &Path, src: &Path, size: &str, args: &[&str]) {
    kernel::mkfs_ext4(image, size, Some(src), args);
}

fn open(image: &Path) -> Ext4 {
    Ext4::open(ferry::block::open(image).unwrap()).unwrap()
}

/// Preallocates blocks 5..=40 of /prealloc (inside its hole) as an unwritten extent and fills
/// them with garbage on disk: both readers must still show zeros there.
fn add_unwritten(image: &Path) {
    let img = image.to_str().unwrap();
    common::run_tool("debugfs", &["-w", "-R", "fallocate /prealloc 5 40", img]);
    let ex = common::run_tool("debugfs", &["-R", "ex /prealloc", img]);
    let line = ex
        .lines()
        .find(|l| l.contains("Uninit"))
        .unwrap_or_else(|| panic!("no unwritten extent made: {ex}"));
    // " 0/ 0   2/  3     5 -    40  1628 -  1663     36 Uninit"
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (pstart, len) = (nums[6], nums[8]);
    let bs =
        if common::run_tool("dumpe2fs", &["-h", img]).contains("Block size:               1024") {
            1024
        } else {
            4096
        };
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&vec![0xaa; (len * bs) as usize], pstart * bs)
        .unwrap();
}

/// Lets the kernel grow an inline directory and write an inline file past i_block, so their
/// records and bytes spill into "system.data" (mke2fs -d converts to blocks instead).
fn kernel_writes_inline(image: &Path, mnt: &Path) {
    let _m = match KernelMount::new(image, mnt, "") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIP: cannot mount read-write to grow inline data: {e}");
            return;
        }
    };
    std::fs::create_dir(mnt.join("spill")).unwrap();
    for i in 0..5 {
        std::fs::write(mnt.join(format!("spill/s{i}")), b"").unwrap();
    }
    std::fs::write(mnt.join("spill/k100"), common::pseudo_random(9, 100)).unwrap();
}

#[test]
fn matches_the_kernel() {
    if !common::have_tools(&["mkfs.ext4", "blkid", "debugfs", "dumpe2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let variants: &[(&str, &[&str])] = &[
        ("ext4", &[]),
        ("ext4-1k", &["-b", "1024"]),
        ("ext4-no64bit", &["-O", "^64bit"]),
        ("ext4-noextent", &["-O", "^extent,^64bit"]),
        ("ext4-nocsum-256", &["-O", "^metadata_csum", "-I", "256"]),
        ("ext4-128", &["-I", "128"]),
        ("ext4-bigalloc", &["-O", "bigalloc", "-C", "16384"]),
        ("ext4-meta_bg", &["-O", "meta_bg,^resize_inode"]),
        // Small groups and few inodes per group, so inodes live in several meta groups.
        (
            "ext4-1k-meta_bg",
            &[
                "-b",
                "1024",
                "-g",
                "1024",
                "-i",
                "65536",
                "-O",
                "meta_bg,^resize_inode",
            ],
        ),
        ("ext4-sparse_super2", &["-O", "sparse_super2"]),
        ("ext4-inline", &["-O", "inline_data"]),
        (
            "ext4-inline-1k",
            &["-O", "inline_data", "-b", "1024", "-I", "1024"],
        ),
        ("ext3", &["-t", "ext3"]),
        ("ext2", &["-t", "ext2"]),
        ("ext2-1k", &["-t", "ext2", "-b", "1024"]),
    ];
    for (name, args) in variants {
        let image = tmp.path().join(format!("{name}.img"));
        mkfs(&image, &src, "96M", args);
        if name.contains("inline") {
            kernel_writes_inline(&image, &tmp.path().join("mnt"));
        }
        if !name.starts_with("ext2") && !name.starts_with("ext3") && !name.contains("noextent") {
            add_unwritten(&image);
        }
        let fs = open(&image);
        let blkid_type = common::blkid(&image)
            .get("TYPE")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            fs.info().kind,
            blkid_type,
            "{name}: kind differs from blkid"
        );
        let ours = kernel::snapshot(&fs);
        assert!(ours.len() > 1000, "{name}: only {} paths", ours.len());
        let Some(_m) = mount(&image, &tmp.path().join("mnt")) else {
            continue;
        };
        let kernel = kernel::walk(&tmp.path().join("mnt"));
        kernel::assert_same(&kernel, &ours, name);
        eprintln!("{name}: {} paths agree with the kernel", kernel.len());
    }
}

#[test]
fn reads_through_qcow2() {
    if !common::have_tools(&["mkfs.ext4", "qemu-img"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let raw = tmp.path().join("fs.img");
    mkfs(&raw, &src, "96M", &[]);
    let q = tmp.path().join("fs.qcow2");
    common::qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    let via_qcow2 = kernel::snapshot(&open(&q));
    let via_raw = kernel::snapshot(&open(&raw));
    kernel::assert_same(&via_raw, &via_qcow2, "qcow2");
    // The generic entry point finds the same filesystem.
    let fs = ferry::fs::open(ferry::block::open(&q).unwrap()).unwrap();
    assert_eq!(fs.info().kind, "ext4");
    assert_eq!(kernel::snapshot(fs.as_ref()), via_raw);
}

#[test]
fn refuses_non_ext4() {
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(vec![0u8; 1 << 20]));
    assert!(Ext4::open(dev).is_err());
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(vec![0u8; 100]));
    assert!(Ext4::open(dev).is_err());
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(vec![0u8; 1 << 20]));
    assert!(matches!(
        ferry::fs::open(dev),
        Err(ferry::fs::Error::Unsupported(_))
    ));
}

/// Walks whatever it can of a damaged filesystem, ignoring errors, with bounds on the work so
/// that a corrupt size or a directory loop cannot make the test itself run forever.
fn walk_damaged(fs: &Ext4) {
    let _ = fs.info();
    let _ = fs.statfs();
    let mut todo = vec![(fs.root_ino(), 0)];
    let mut visited = 0;
    let mut buf = vec![0u8; 64 << 10];
    while let Some((ino, depth)) = todo.pop() {
        visited += 1;
        if visited > 5000 {
            return;
        }
        let Ok(a) = fs.getattr(ino) else { continue };
        match a.kind {
            FileType::Directory if depth < 8 => {
                if let Ok(entries) = kernel::list(fs, ino, 13) {
                    for e in entries.into_iter().take(2000) {
                        let _ = fs.lookup(ino, &e.name);
                        if e.name != b"." && e.name != b".." {
                            todo.push((e.ino, depth + 1));
                        }
                    }
                }
            }
            FileType::RegularFile => {
                let mut off = 0;
                while off < (1 << 20) {
                    match fs.read(ino, off, &mut buf) {
                        Ok(n) if n > 0 => off += n as u64,
                        _ => break,
                    }
                }
                // Far into a possibly huge (corrupt) size.
                let _ = fs.read(ino, a.size.saturating_sub(10), &mut buf);
            }
            FileType::Symlink => {
                let _ = fs.readlink(ino);
            }
            _ => {}
        }
    }
}

/// Opens and walks `img` on a thread with a deadline: a panic or a hang fails with `label`.
fn survive(img: Vec<u8>, label: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(img));
        if let Ok(fs) = Ext4::open(dev) {
            walk_damaged(&fs);
        }
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{label}: hang (over 10 s)"),
        Err(_) => panic!("{label}: panicked"),
    }
}

/// The byte ranges worth damaging: superblock, group descriptors, the first inode table blocks
/// and the blocks of a few directories, found with dumpe2fs/debugfs.
fn hot_ranges(image: &Path) -> Vec<(usize, usize)> {
    let bs = 1024usize;
    let mut hot = vec![(1024, 2048), (2048, 3072)];
    let dump = common::run_tool("dumpe2fs", &[image.to_str().unwrap()]);
    for line in dump.lines() {
        if let Some(rest) = line.trim().strip_prefix("Inode table at ") {
            let first: usize = rest.split('-').next().unwrap().trim().parse().unwrap();
            hot.push((first * bs, (first + 8) * bs));
        }
    }
    // Extent tree blocks and indirect blocks of /frag, as debugfs names them.
    let stat = common::run_tool("debugfs", &["-R", "stat /frag", image.to_str().unwrap()]);
    for tok in stat.split([',', ' ', '\n']) {
        let meta = ["(ETB", "(IND)", "(DIND)", "(TIND)"];
        if meta.iter().any(|m| tok.starts_with(m)) {
            if let Some(b) = tok.rsplit(':').next().and_then(|n| n.parse::<usize>().ok()) {
                hot.push((b * bs, (b + 1) * bs));
            }
        }
    }
    for dir in ["/", "/d", "/big"] {
        let out = common::run_tool(
            "debugfs",
            &["-R", &format!("blocks {dir}"), image.to_str().unwrap()],
        );
        for b in out
            .split_whitespace()
            .filter_map(|w| w.parse::<usize>().ok())
            .take(4)
        {
            hot.push((b * bs, (b + 1) * bs));
        }
    }
    hot
}

#[test]
fn damaged_images_do_not_panic_or_hang() {
    if !common::have_tools(&["mkfs.ext4", "dumpe2fs", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::create_dir_all(src.join("big")).unwrap();
    std::fs::write(src.join("d/file"), common::pseudo_random(5, 70000)).unwrap();
    std::fs::write(src.join("d/e/small"), b"x").unwrap();
    for i in 0..120 {
        std::fs::write(src.join(format!("big/name-{i:03}")), b"").unwrap();
    }
    std::os::unix::fs::symlink("x".repeat(100), src.join("slow")).unwrap();
    std::os::unix::fs::symlink("fast", src.join("fast")).unwrap();
    // 300 small extents: extent index and leaf blocks (ext4), indirect blocks (ext2).
    let f = std::fs::File::create(src.join("frag")).unwrap();
    for i in 0..300u64 {
        f.write_all_at(&[b'x'; 100], i * 3072).unwrap();
    }
    drop(f);
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"data", 600_000).unwrap();
    drop(f);
    for (name, args) in [
        ("ext4", &["-b", "1024", "-N", "256"][..]),
        ("ext2", &["-t", "ext2", "-b", "1024", "-N", "256"][..]),
        (
            "inline",
            &["-O", "inline_data", "-b", "1024", "-N", "256"][..],
        ),
    ] {
        let image = tmp.path().join(format!("{name}.img"));
        mkfs(&image, &src, "2M", args);
        let orig = std::fs::read(&image).unwrap();
        // The intact image walks cleanly.
        walk_damaged(&Ext4::open(Arc::new(MemDevice(orig.clone()))).unwrap());
        for cut in [
            0,
            1000,
            1024,
            2047,
            2048,
            3072,
            8192,
            65536,
            orig.len() / 2,
            orig.len() - 1024,
        ] {
            survive(orig[..cut].to_vec(), &format!("{name} truncated to {cut}"));
        }
        let hot = hot_ranges(&image);
        eprintln!("{name}: mutating {} hot ranges", hot.len());
        for (i, m) in common::mutants(&orig, &hot, 1500, 0xe4).enumerate() {
            survive(m, &format!("{name} mutant {i}"));
        }
    }
}

/// 64 KiB blocks: the kernel on 4 KiB pages cannot mount them, so the oracle is ferry's own
/// view of a 4 KiB-block image of the same tree (inode numbers and allocation left out). This
/// covers rec_len's 64 KiB encoding.
#[test]
fn block_size_64k_matches_4k() {
    if !common::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let strip = |m: Snapshot| -> Snapshot {
        m.into_iter()
            // The root and lost+found are made by mke2fs at its own time.
            .filter(|(p, _)| !p.is_empty() && p != b"lost+found")
            .map(|(p, mut r)| {
                r.ino = 0;
                r.blocks = 0;
                r.atime = (0, 0); // mke2fs reading the source tree updates its atimes
                if r.kind == FileType::Directory {
                    r.size = 0; // a directory's size is its block count
                }
                (p, r)
            })
            .collect()
    };
    let mut views = Vec::new();
    for bs in ["4096", "65536"] {
        let image = tmp.path().join(format!("{bs}.img"));
        mkfs(&image, &src, "512M", &["-b", bs]);
        let fs = open(&image);
        assert_eq!(fs.info().block_size.to_string(), bs);
        views.push(strip(kernel::snapshot(&fs)));
    }
    kernel::assert_same(&views[0], &views[1], "64 KiB blocks");
}

/// Feature flags: needs_recovery over a clean journal opens as is; unknown or unreadable
/// INCOMPAT features are refused with their names.
#[test]
fn incompat_features() {
    if !common::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    let image = tmp.path().join("fs.img");
    mkfs(&image, &src, "8M", &[]);
    let orig = std::fs::read(&image).unwrap();
    let with_incompat = |bits: u32| {
        let mut img = orig.clone();
        let at = 1024 + 0x60;
        let v = u32::from_le_bytes(img[at..at + 4].try_into().unwrap()) | bits;
        img[at..at + 4].copy_from_slice(&v.to_le_bytes());
        Ext4::open(Arc::new(MemDevice(img)))
    };
    let fs = with_incompat(0x4).expect("needs_recovery is readable");
    let f = fs.lookup(fs.root_ino(), b"f").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(fs.read(f.ino, 0, &mut buf).unwrap(), 7);
    assert_eq!(&buf[..7], b"content");
    for (bits, word) in [
        (0x4000_0000, "unknown bits 0x40000000"),
        (0x8, "journal_dev"),
        (0x1000, "dirdata"),
    ] {
        match with_incompat(bits) {
            Err(e @ ferry::fs::Error::Unsupported(_)) => {
                assert!(e.to_string().contains(word), "{e}");
                assert_eq!(ferry::mount::errno(&e), libc_eopnotsupp());
            }
            Err(e) => panic!("incompat {bits:#x}: wrong error {e}"),
            Ok(_) => panic!("incompat {bits:#x} accepted"),
        }
    }
    let (dev, root) = (fs.getattr(fs.root_ino()).unwrap(), fs.root_ino());
    assert_eq!(dev.ino, root);
    assert!(matches!(
        fs.read(root, 0, &mut buf),
        Err(ferry::fs::Error::IsDir(2))
    ));
    assert!(matches!(
        fs.readlink(f.ino),
        Err(ferry::fs::Error::NotSymlink(_))
    ));
    assert!(matches!(
        fs.lookup(f.ino, b"x"),
        Err(ferry::fs::Error::NotDir(_))
    ));
    assert!(matches!(
        fs.lookup(root, &[b'n'; 256]),
        Err(ferry::fs::Error::NameTooLong { .. })
    ));
    assert!(fs.getattr(0).is_err() && fs.getattr(u64::MAX).is_err());
    assert_eq!(fs.read(f.ino, 1 << 40, &mut buf).unwrap(), 0);
}

/// EOPNOTSUPP on Linux (the tests do not depend on libc).
fn libc_eopnotsupp() -> i32 {
    95
}

/// The free blocks `dumpe2fs` lists ("Free blocks: 5-9, 12"), as sorted, merged ranges.
fn dumpe2fs_free(image: &Path) -> Vec<std::ops::Range<u64>> {
    let out = common::run(
        std::process::Command::new(common::tool("dumpe2fs").expect("dumpe2fs")).arg(image),
    );
    let mut v: Vec<std::ops::Range<u64>> = Vec::new();
    for l in out.lines() {
        let Some(list) = l.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for item in list.split(", ").filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let r = a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap() + 1;
            match v.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => v.push(r),
            }
        }
    }
    v
}

/// `unused` gives exactly the blocks dumpe2fs lists free, on 1 KiB and 4 KiB filesystems
/// (with uninitialised groups, flex_bg, and without), after files were deleted through the
/// kernel; a journal left to replay, or a bitmap at odds with its descriptor, makes it refuse.
#[test]
fn unused_space_is_what_dumpe2fs_lists_free() {
    if !common::have_tools(&["mkfs.ext4", "dumpe2fs", "debugfs"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    build_tree(&tree);
    for (bs, extra) in [
        ("1024", &["-O", "^flex_bg"][..]),
        ("4096", &[][..]),
        (
            "4096",
            &["-O", "^uninit_bg,^metadata_csum,^flex_bg", "-t", "ext3"][..],
        ),
    ] {
        let img = d.path().join(format!("u{bs}.img"));
        let mut args = vec!["-b", bs];
        args.extend(extra);
        kernel::mkfs_ext4(&img, "96M", Some(&tree), &args);
        if let Some(m) = kernel::mount_or_skip(&img, &d.path().join("m"), "") {
            std::fs::remove_file(m.path().join("large")).unwrap();
            std::fs::remove_dir_all(m.path().join("big")).unwrap();
            std::fs::write(m.path().join("new"), common::pseudo_random(3, 3 << 20)).unwrap();
            m.unmount().unwrap();
        }
        let fs = Ext4::open(ferry::block::open(&img).unwrap()).unwrap();
        let b = u64::from(fs.info().block_size);
        let ours: Vec<_> = fs
            .unused()
            .unwrap()
            .into_iter()
            .map(|r| {
                assert_eq!((r.start % b, r.end % b), (0, 0));
                r.start / b..r.end / b
            })
            .collect();
        assert_eq!(ours, dumpe2fs_free(&img), "-b {bs} {extra:?}");
        let total: u64 = ours.iter().map(|r| r.end - r.start).sum();
        assert_eq!(total * b, fs.info().free_bytes, "-b {bs} {extra:?}");
    }

    // A free count in one descriptor that disagrees with its bitmap.
    let img = d.path().join("u4096.img");
    common::run(
        std::process::Command::new(common::tool("debugfs").unwrap())
            .args(["-w", "-R", "set_bg 0 free_blocks_count 7"])
            .arg(&img),
    );
    let unused_err = |img: &Path| {
        let fs = Ext4::open(ferry::block::open(img).unwrap()).unwrap();
        fs.unused().unwrap_err().to_string()
    };
    let e = unused_err(&img);
    assert!(e.contains("group 0") && e.contains("descriptor"), "{e}");

    // A journal still to replay.
    let img = d.path().join("u1024.img");
    common::run(
        std::process::Command::new(common::tool("debugfs").unwrap())
            .args(["-w", "-R", "feature needs_recovery"])
            .arg(&img),
    );
    let e = unused_err(&img);
    assert!(e.contains("journal"), "{e}");
}

/// Damage is reported with the structure, its byte position on the device and the values
/// expected and found: the superblock's magic, and a file's inode whose checksum no longer
/// matches (one byte changed at the position debugfs gives for it).
#[test]
fn damage_names_structure_offset_and_values() {
    if !common::have_tools(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    let image = tmp.path().join("fs.img");
    mkfs(&image, &src, "8M", &["-b", "1024", "-O", "metadata_csum"]);
    let orig = std::fs::read(&image).unwrap();

    let mut bad = orig.clone();
    bad[1024 + 0x38] = 0x54;
    let err = Ext4::open(Arc::new(MemDevice(bad))).err().unwrap();
    let c = err.corruption().unwrap_or_else(|| panic!("{err}"));
    assert_eq!((c.what, c.offset), ("superblock", Some(0x438)), "{err}");
    let m = c.mismatch.as_ref().unwrap();
    assert_eq!(
        (m.expected.as_str(), m.found.as_str()),
        ("0xef53", "0xef54")
    );
    assert!(err.to_string().contains("at offset 0x438"), "{err}");

    // "Inode 12 is part of block group 0\n\tlocated at block 36, offset 0x0b00"
    let imap = common::run_tool("debugfs", &["-R", "imap /f", image.to_str().unwrap()]);
    let nums: Vec<u64> = imap
        .split(|c: char| !c.is_ascii_hexdigit() && c != 'x')
        .filter_map(|w| match w.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => w.parse().ok(),
        })
        .collect();
    let (ino, blk, off) = (nums[0], nums[2], nums[3]);
    let at = blk * 1024 + off;
    let mut bad = orig;
    // i_mtime: covered by the checksum, checked by nothing before it.
    bad[at as usize + 0x10] ^= 0x01;
    let fs = Ext4::open(Arc::new(MemDevice(bad))).unwrap();
    let err = fs.getattr(ino).unwrap_err();
    let c = err.corruption().unwrap_or_else(|| panic!("{err}"));
    assert_eq!((c.what, c.ino, c.block), ("inode", ino, blk), "{err}");
    assert_eq!(c.offset, Some(at), "{err}");
    let m = c.mismatch.as_ref().unwrap();
    assert_ne!(m.expected, m.found, "{err}");
    assert!(
        err.to_string().contains(&format!(
            "corrupt inode (inode {ino}, block {blk}) at offset {at:#x}: checksum mismatch: expected "
        )),
        "{err}"
    );
}
