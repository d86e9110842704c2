//! Journal replay against the kernel. Images that need recovery are made two ways: with
//! debugfs's journal_write (transactions built from the blocks a change touched, with revokes,
//! escaped blocks, uncommitted transactions, transaction IDs wrapping at 2^32 and a log wrapped
//! around the journal's end), and by the kernel itself (a copy of a loop-mounted image taken
//! after fsync, before the metadata is written in place). The oracle is the kernel recovering
//! a copy of the same image: ferry's view of the unrecovered source must equal the kernel's
//! view of the recovered copy, path for path and stat field for stat field, and the source must
//! not change. Damaged journals: ferry must agree with the kernel on whether the image can be
//! recovered, and never panic or hang.

use crate::common;

use common::kernel::{self, KernelMount, Snapshot};

use ferry::block::mem::MemDevice;
use ferry::block::BlockDevice;
use ferry::fs::ext4::journal::ReplayInfo;
use ferry::fs::ext4::{Ext4, OpenOptions};
use ferry::fs::Filesystem;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The jbd2 magic number, as it starts every journal block (and escaped data blocks).
const JBD2_MAGIC: [u8; 4] = [0xc0, 0x3b, 0x39, 0x98];

/// Whether loop mounts work here (root, loop devices); otherwise skips loudly, or fails when
/// FERRY_REQUIRE_FUSE=1.
fn can_mount(dir: &Path) -> bool {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "dumpe2fs"]) {
        return false;
    }
    let img = dir.join("probe.img");
    mkfs(&img, None, "8M", &[]);
    kernel::mount_or_skip(&img, &dir.join("probe"), "ro").is_some()
}

fn mkfs(image: &Path, src: Option<&Path>, size: &str, args: &[&str]) {
    kernel::mkfs_ext4(image, size, src, args);
}

/// Mounts `image` at `mnt`, or says why the kernel refused.
fn try_mount(image: &Path, mnt: &Path, opts: &str) -> Option<KernelMount> {
    KernelMount::new(image, mnt, opts)
        .map_err(|e| eprintln!("{e}"))
        .ok()
}

/// The kernel's view after it recovers a copy of `image` (a read-write mount replays the
/// journal and processes orphans; the walk is on a read-only mount after that), or None when
/// the kernel refuses to mount it.
fn kernel_recovered(image: &Path, dir: &Path) -> Option<Snapshot> {
    let copy = dir.join("kernel-copy.img");
    std::fs::copy(image, &copy).unwrap();
    let mnt = dir.join("kmnt");
    let rw = try_mount(&copy, &mnt, "loop")?;
    drop(rw);
    let _ro = try_mount(&copy, &mnt, "ro,loop").expect("remount of a recovered copy");
    let tree = kernel::walk(&mnt);
    Some(tree)
}

/// ferry's view of `image` (without touching it), with what replay did; Err with the error
/// text when ferry refuses it.
fn ferry_view(image: &Path, opts: OpenOptions) -> Result<(Snapshot, Option<ReplayInfo>), String> {
    let _same = common::Unchanged::new(&[image]);
    let dev = ferry::block::open(image).map_err(|e| e.to_string())?;
    let fs = Ext4::open_with(dev, opts).map_err(|e| e.to_string())?;
    Ok((kernel::snapshot(&fs), fs.journal_replay().cloned()))
}

fn needs_recovery(image: &Path) -> bool {
    let mut sb = [0u8; 4];
    std::fs::File::open(image)
        .unwrap()
        .read_exact_at(&mut sb, 1024 + 0x60)
        .unwrap();
    u32::from_le_bytes(sb) & 0x4 != 0
}

/// Checks ferry's replayed view of `image` against the kernel's recovery of a copy, and that
/// replay changed the view (the test would prove nothing otherwise). Returns what replay did.
fn check_against_kernel(image: &Path, dir: &Path, what: &str) -> ReplayInfo {
    assert!(needs_recovery(image), "{what}: needs_recovery is not set");
    let (ours, info) = ferry_view(image, OpenOptions::default()).unwrap();
    let info = info.unwrap_or_else(|| panic!("{what}: nothing replayed"));
    let kernel = kernel_recovered(image, dir).unwrap_or_else(|| panic!("{what}: kernel refused"));
    kernel::assert_same(&kernel, &ours, what);
    let (stale, _) = ferry_view(
        image,
        OpenOptions {
            replay_journal: false,
        },
    )
    .unwrap();
    assert_ne!(stale, ours, "{what}: replay changed nothing visible");
    eprintln!(
        "{what}: {} paths agree with the kernel; {} transactions, {} blocks, {} revoke hits",
        kernel.len(),
        info.transactions(),
        info.blocks_mapped,
        info.revoke_hits
    );
    info
}

/// The tree the images start from.
fn build_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("small", b"hello journal\n");
    w("keep/unchanged", &common::pseudo_random(1, 20000));
    w("keep/also", &common::pseudo_random(2, 3000));
    w("big", &common::pseudo_random(3, 300_000));
    for i in 0..40 {
        w(&format!("dir/f{i:02}"), format!("file {i}\n").as_bytes());
    }
    std::os::unix::fs::symlink("small", root.join("link")).unwrap();
}

/// What a running system does between two commits: creates, appends, overwrites, renames,
/// deletes, links, a directory grown to several blocks, a file whose blocks start with the
/// jbd2 magic (escaped in the log when data is journaled), metadata changes.
fn change_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| std::fs::write(root.join(p), data).unwrap();
    w("new-small", b"created after mkfs\n");
    w("new-medium", &common::pseudo_random(10, 150_000));
    let mut magic = Vec::new();
    for i in 0..8u8 {
        magic.extend_from_slice(&JBD2_MAGIC);
        magic.extend_from_slice(&[i; 4092]);
    }
    w("magic", &magic);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("small"))
        .unwrap();
    f.write_all(b"appended line\n").unwrap();
    drop(f);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("big"))
        .unwrap();
    f.write_all_at(&common::pseudo_random(11, 5000), 100_000)
        .unwrap();
    drop(f);
    std::fs::create_dir(root.join("grown")).unwrap();
    for i in 0..150 {
        w(
            &format!("grown/a-rather-long-file-name-{i:04}"),
            format!("{i}").as_bytes(),
        );
    }
    for i in 0..20 {
        std::fs::remove_file(root.join(format!("dir/f{i:02}"))).unwrap();
    }
    std::fs::rename(root.join("dir/f30"), root.join("renamed")).unwrap();
    std::fs::hard_link(root.join("new-small"), root.join("dir/hardlink")).unwrap();
    std::os::unix::fs::symlink("x".repeat(200), root.join("slowlink")).unwrap();
    std::fs::set_permissions(
        root.join("keep/also"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(root.join("link")).unwrap();
}

/// The journal features dumpe2fs reports, so a variant can be checked to exercise what it
/// claims to.
fn journal_features(image: &Path) -> String {
    let out = common::run_tool("dumpe2fs", &["-h", image.to_str().unwrap()]);
    out.lines()
        .find_map(|l| l.strip_prefix("Journal features:"))
        .unwrap_or("")
        .to_string()
}

/// Log tags with the escape flag (the block's first four bytes were the jbd2 magic), as
/// debugfs's logdump lists them.
fn escaped_tags(image: &Path) -> usize {
    let out = common::run_tool("debugfs", &["-R", "logdump -a", image.to_str().unwrap()]);
    out.lines()
        .filter_map(|l| l.split("(flags 0x").nth(1))
        .filter_map(|f| u32::from_str_radix(f.trim_end_matches(')'), 16).ok())
        .filter(|f| f & 1 != 0)
        .count()
}

fn assert_features(image: &Path, want: &[&str], what: &str) {
    let have = journal_features(image);
    for w in want {
        assert!(
            have.split_whitespace().any(|f| f == *w),
            "{what}: journal features '{have}' lack {w}"
        );
    }
}

/// The fs blocks (of `bs` bytes) that differ between two images, and their new content.
fn changed_blocks(old: &[u8], new: &[u8], bs: usize) -> (Vec<u64>, Vec<u8>) {
    let mut list = Vec::new();
    let mut data = Vec::new();
    for (i, (a, b)) in old.chunks(bs).zip(new.chunks(bs)).enumerate() {
        if a != b {
            list.push(i as u64);
            data.extend_from_slice(b);
        }
    }
    (list, data)
}

/// The physical blocks of the journal inode, in logical order.
fn journal_blocks(image: &Path) -> Vec<u64> {
    let out = common::run_tool("debugfs", &["-R", "blocks <8>", image.to_str().unwrap()]);
    out.split_whitespace().map(|w| w.parse().unwrap()).collect()
}

fn block_size(image: &Path) -> usize {
    let out = common::run_tool("dumpe2fs", &["-h", image.to_str().unwrap()]);
    let line = out.lines().find(|l| l.starts_with("Block size:")).unwrap();
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Runs debugfs -w with `script` on its standard input.
fn debugfs_script(image: &Path, script: &str) -> String {
    let out = common::run_with_stdin(
        Command::new(common::tool("debugfs").unwrap())
            .args(["-w", "-f", "-"])
            .arg(image),
        script.as_bytes(),
    );
    assert!(out.status.success(), "debugfs failed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("while writing journal") && !text.contains("while opening journal"),
        "debugfs journal commands failed:\n{text}"
    );
    text
}

fn join(list: &[u64]) -> String {
    list.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets the journal superblock's s_sequence (before any transaction is written, while it has
/// no checksum yet).
fn set_journal_sequence(image: &Path, seq: u32) {
    let jsb = journal_blocks(image)[0] * block_size(image) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(&seq.to_be_bytes(), jsb + 0x18).unwrap();
}

/// Rotates the journal's circular log so that it starts `back` blocks before the log's end and
/// the transactions straddle it, and points s_start at the new place (re-checksumming the journal superblock). Nothing
/// in the log depends on its position, so the kernel recovers it the same way.
fn rotate_log(image: &Path, back: u64) {
    let bs = block_size(image) as u64;
    let blocks = journal_blocks(image);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut jsb = vec![0u8; bs as usize];
    f.read_exact_at(&mut jsb, blocks[0] * bs).unwrap();
    let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let (maxlen, first, start) = (
        be(&jsb, 0x10) as u64,
        be(&jsb, 0x14) as u64,
        be(&jsb, 0x1c) as u64,
    );
    let len = maxlen - first;
    let by = (len - back + len - (start - first)) % len;
    let mut log = vec![0u8; (len * bs) as usize];
    for i in 0..len {
        let at = (i * bs) as usize;
        f.read_exact_at(
            &mut log[at..at + bs as usize],
            blocks[(first + i) as usize] * bs,
        )
        .unwrap();
    }
    for i in 0..len {
        let to = first + (i + by) % len;
        let at = (i * bs) as usize;
        f.write_all_at(&log[at..at + bs as usize], blocks[to as usize] * bs)
            .unwrap();
    }
    let new_start = first + (start - first + by) % len;
    jsb[0x1c..0x20].copy_from_slice(&(new_start as u32).to_be_bytes());
    if jsb[0x50] == 4 {
        jsb[0xfc..0x100].fill(0);
        let c = !crc32c::crc32c(&jsb[..1024]);
        jsb[0xfc..0x100].copy_from_slice(&c.to_be_bytes());
    }
    f.write_all_at(&jsb, blocks[0] * bs).unwrap();
}

/// A data block of `path` in `image` (the first one).
fn first_block_of(image: &Path, path: &str) -> u64 {
    let out = common::run_tool(
        "debugfs",
        &["-R", &format!("bmap {path} 0"), image.to_str().unwrap()],
    );
    out.trim().parse().unwrap()
}

#[test]
fn debugfs_transactions_match_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let src = tmp.path().join("src");
    build_tree(&src);
    struct Variant {
        name: &'static str,
        features: &'static [&'static str],
        mkfs: &'static [&'static str],
        jo: &'static str,
        sequence: Option<u32>,
        rotate: bool,
    }
    let variants = [
        // metadata_csum: checksum v3, 64-bit block numbers.
        Variant {
            name: "ext4-1k-csum3",
            features: &["journal_checksum_v3", "journal_64bit"],
            mkfs: &["-b", "1024"],
            jo: "jo -c",
            sequence: None,
            rotate: false,
        },
        Variant {
            name: "ext4-csum2-wrapped",
            features: &["journal_checksum_v2", "journal_64bit"],
            mkfs: &[],
            jo: "jo -c -v 2",
            sequence: Some(0xffff_fffe),
            rotate: true,
        },
        Variant {
            name: "ext4-32bit-csum3-wrapped",
            features: &["journal_checksum_v3"],
            mkfs: &["-O", "^64bit", "-b", "1024"],
            jo: "jo -c",
            sequence: Some(0xffff_ffff),
            rotate: true,
        },
        Variant {
            name: "ext4-32bit-csum2",
            features: &["journal_checksum_v2"],
            mkfs: &["-O", "^64bit"],
            jo: "jo -c -v 2",
            sequence: None,
            rotate: false,
        },
        // No checksums: 12-byte tags with 64-bit numbers, 8-byte tags without.
        Variant {
            name: "ext4-nocsum",
            features: &["journal_64bit"],
            mkfs: &["-O", "^metadata_csum"],
            jo: "jo",
            sequence: None,
            rotate: true,
        },
        Variant {
            name: "ext3",
            features: &[],
            mkfs: &["-t", "ext3"],
            jo: "jo",
            sequence: Some(0x7fff_fff0),
            rotate: false,
        },
    ];
    for v in variants {
        let base = tmp.path().join(format!("{}.img", v.name));
        mkfs(&base, Some(&src), "48M", v.mkfs);
        // The change, made by the kernel on a copy: the blocks it touched are the transactions.
        let changed = tmp.path().join("changed.img");
        std::fs::copy(&base, &changed).unwrap();
        {
            let m = try_mount(&changed, &tmp.path().join("mnt"), "loop").unwrap();
            change_tree(m.path());
        }
        let bs = block_size(&base);
        let (old, new) = (
            std::fs::read(&base).unwrap(),
            std::fs::read(&changed).unwrap(),
        );
        let jblocks: std::collections::HashSet<u64> = journal_blocks(&base).into_iter().collect();
        let (all, _) = changed_blocks(&old, &new, bs);
        let list: Vec<u64> = all.into_iter().filter(|b| !jblocks.contains(b)).collect();
        assert!(
            list.len() > 20,
            "{}: only {} blocks changed",
            v.name,
            list.len()
        );
        if let Some(seq) = v.sequence {
            set_journal_sequence(&base, seq);
        }
        // Transactions: the change in three parts; garbage over an unchanged file's block,
        // revoked by a later transaction; and garbage over another one written and revoked
        // in the same transaction (the last one, debugfs puts revokes after the data).
        let data_of = |blocks: &[u64]| -> Vec<u8> {
            blocks
                .iter()
                .flat_map(|&b| new[b as usize * bs..(b as usize + 1) * bs].to_vec())
                .collect()
        };
        let thirds: Vec<&[u64]> = list.chunks(list.len().div_ceil(3)).collect();
        let victim1 = first_block_of(&base, "/keep/unchanged");
        let victim2 = first_block_of(&base, "/keep/also");
        let garbage = tmp.path().join("garbage.bin");
        std::fs::write(&garbage, common::pseudo_random(99, bs)).unwrap();
        let mut script = format!("{}\n", v.jo);
        for (i, part) in thirds.iter().enumerate() {
            let file = tmp.path().join(format!("part{i}.bin"));
            std::fs::write(&file, data_of(part)).unwrap();
            script += &format!("jw -b {} {}\n", join(part), file.display());
            if i == 0 {
                script += &format!("jw -b {victim1} {}\n", garbage.display());
            }
        }
        script += &format!("jw -r {victim1}\n");
        script += &format!("jw -b {victim2} -r {victim2} {}\n", garbage.display());
        script += "jc\n";
        let image = tmp.path().join(format!("{}-journaled.img", v.name));
        std::fs::copy(&base, &image).unwrap();
        debugfs_script(&image, &script);
        if v.rotate {
            rotate_log(&image, 20);
        }
        assert_features(&image, v.features, v.name);
        let f = journal_features(&image);
        assert_eq!(
            f.contains("64bit"),
            v.features.contains(&"journal_64bit"),
            "{f}"
        );
        assert!(!f.contains("checksum") || !v.features.is_empty(), "{f}");
        assert!(escaped_tags(&image) > 0, "{}: no escaped block", v.name);
        let info = check_against_kernel(&image, tmp.path(), v.name);
        assert_eq!(info.transactions(), 6, "{}", v.name);
        assert_eq!(info.revoke_hits, 2, "{}: revoked copies", v.name);
        // The kernel's view of the change itself agrees too (a third, independent view).
        let m = try_mount(&changed, &tmp.path().join("mnt"), "ro,loop").unwrap();
        let direct = kernel::walk(m.path());
        drop(m);
        let (ours, _) = ferry_view(&image, OpenOptions::default()).unwrap();
        kernel::assert_same(&direct, &ours, &format!("{} vs the changed image", v.name));
    }
}

/// A transaction written but not committed is not replayed, and neither is anything after it.
#[test]
fn uncommitted_transactions_are_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let src = tmp.path().join("src");
    build_tree(&src);
    let image = tmp.path().join("fs.img");
    mkfs(&image, Some(&src), "32M", &["-b", "1024"]);
    let victim = first_block_of(&image, "/keep/unchanged");
    let good = tmp.path().join("good.bin");
    let bad = tmp.path().join("bad.bin");
    // A committed transaction rewrites /keep/also's first block; an uncommitted one after it
    // would overwrite /keep/unchanged.
    let target = first_block_of(&image, "/keep/also");
    std::fs::write(&good, common::pseudo_random(7, 1024)).unwrap();
    std::fs::write(&bad, common::pseudo_random(8, 1024)).unwrap();
    debugfs_script(
        &image,
        &format!(
            "jo -c\njw -b {target} {}\njw -b {victim} -c {}\njc\n",
            good.display(),
            bad.display()
        ),
    );
    let info = check_against_kernel(&image, tmp.path(), "uncommitted");
    assert_eq!(info.transactions(), 1);
    let fs = Ext4::open(ferry::block::open(&image).unwrap()).unwrap();
    let also = fs.lookup(ferry::fs::ext4::ROOT_INO, b"keep").unwrap();
    let also = fs.lookup(also.ino, b"also").unwrap();
    let mut buf = vec![0u8; 1024];
    fs.read(also.ino, 0, &mut buf).unwrap();
    assert_eq!(buf, common::pseudo_random(7, 1024));
}

/// Copies `image` while it is mounted read-write with `opts` and `work` has just run and
/// fsynced: the copy needs recovery and holds transactions not yet written in place.
fn copy_while_mounted(image: &Path, opts: &str, copy: &Path, work: impl FnOnce(&Path)) {
    let m = try_mount(image, &image.with_extension("mnt"), opts)
        .unwrap_or_else(|| panic!("cannot mount {} with {opts}", image.display()));
    work(m.path());
    std::fs::copy(image, copy).unwrap();
    drop(m);
}

/// fsyncs every file and directory under `root` (a commit per fsync at most, no writeback of
/// the metadata in place, unlike sync or syncfs).
fn fsync_tree(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        if m.is_dir() || m.is_file() {
            std::fs::File::open(&p).unwrap().sync_all().unwrap();
        }
    }
}

#[test]
fn kernel_journals_match_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let src = tmp.path().join("src");
    build_tree(&src);
    type Variant<'a> = (&'a str, &'a [&'a str], &'a str, &'a [&'a str]);
    let variants: &[Variant] = &[
        (
            "ext4",
            &[],
            "loop",
            &["journal_checksum_v3", "journal_64bit"],
        ),
        (
            "ext4-1k-no64bit",
            &["-b", "1024", "-O", "^64bit"],
            "loop",
            &["journal_checksum_v3"],
        ),
        // Data blocks in the log, the ones starting with the magic number escaped.
        (
            "ext4-data-journal",
            &[],
            "loop,data=journal",
            &["journal_checksum_v3"],
        ),
        ("ext3", &["-t", "ext3"], "loop", &[]),
        // Transaction checksums v1 (crc32_be), then v1 and v3 with asynchronous commits.
        (
            "ext4-csum1-32bit",
            &["-O", "^metadata_csum,^64bit"],
            "loop,journal_checksum",
            &["journal_checksum"],
        ),
        (
            "ext4-csum1-async",
            &["-O", "^metadata_csum"],
            "loop,data=writeback,journal_async_commit",
            &["journal_checksum", "journal_async_commit", "journal_64bit"],
        ),
        (
            "ext4-csum3-async",
            &[],
            "loop,data=writeback,journal_async_commit",
            &["journal_checksum_v3", "journal_async_commit"],
        ),
    ];
    for (name, args, opts, features) in variants {
        let image = tmp.path().join(format!("{name}.img"));
        mkfs(&image, Some(&src), "48M", args);
        let copy = tmp.path().join(format!("{name}-crashed.img"));
        copy_while_mounted(&image, opts, &copy, |root| {
            change_tree(root);
            // An unlinked file still open: an orphan the kernel frees at recovery.
            let orphan = root.join("orphan");
            std::fs::write(&orphan, common::pseudo_random(5, 50_000)).unwrap();
            let held = std::fs::File::open(&orphan).unwrap();
            std::fs::remove_file(&orphan).unwrap();
            fsync_tree(root);
            held.sync_all().unwrap();
        });
        assert_features(&copy, features, name);
        if name.contains("data-journal") {
            assert!(escaped_tags(&copy) > 0, "{name}: no escaped block");
        }
        check_against_kernel(&copy, tmp.path(), name);
    }
}

/// Fast commits are not replayed: ferry shows the tree as of the last full commit and says so.
#[test]
fn fast_commit_area_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let src = tmp.path().join("src");
    build_tree(&src);
    let image = tmp.path().join("fc.img");
    mkfs(&image, Some(&src), "48M", &["-O", "fast_commit"]);
    let copy = tmp.path().join("fc-crashed.img");
    copy_while_mounted(&image, "loop", &copy, |root| {
        // A full commit first (a new directory forces one), then fsyncs eligible for fast
        // commits.
        std::fs::create_dir(root.join("full")).unwrap();
        std::fs::write(root.join("full/x"), b"x").unwrap();
        fsync_tree(root);
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("small"))
            .unwrap();
        (&f).write_all(b"fast\n").unwrap();
        f.sync_all().unwrap();
    });
    let (ours, info) = ferry_view(&copy, OpenOptions::default()).unwrap();
    let info = info.expect("replayed");
    assert!(info.fast_commit_pending, "{info:?}");
    assert!(ours.contains_key(&b"full/x"[..]));
    // The fast commit holds the append: the kernel shows it, ferry (honestly) does not.
    let kernel = kernel_recovered(&copy, tmp.path()).unwrap();
    assert_eq!(kernel[&b"small"[..]].size, 14 + 5);
    assert_eq!(ours[&b"small"[..]].size, 14);
}

/// A needs_recovery image whose journal is clean, and one whose journal is external: both open
/// without replay.
#[test]
fn nothing_to_replay() {
    if !common::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fs.img");
    let src = tmp.path().join("src");
    build_tree(&src);
    mkfs(&image, Some(&src), "16M", &[]);
    let mut img = std::fs::read(&image).unwrap();
    img[1024 + 0x60] |= 0x4;
    let fs = Ext4::open(Arc::new(MemDevice(img.clone()))).unwrap();
    assert!(fs.journal_replay().is_none());
    let clean = kernel::snapshot(&fs);
    // An external journal (s_journal_inum 0, a device number and UUID instead).
    img[1024 + 0xe0..1024 + 0xe4].fill(0);
    img[1024 + 0xe4..1024 + 0xe8].copy_from_slice(&0x0801u32.to_le_bytes());
    let fs = Ext4::open(Arc::new(MemDevice(img.clone()))).unwrap();
    assert!(fs.journal_replay().is_none());
    assert_eq!(kernel::snapshot(&fs), clean);
    // Both a journal inode and a device: the kernel refuses, so does ferry.
    img[1024 + 0xe0..1024 + 0xe4].copy_from_slice(&8u32.to_le_bytes());
    assert!(Ext4::open(Arc::new(MemDevice(img))).is_err());
}

/// Where the parts of a debugfs-made journal are: journal block → byte offset in the image.
struct Layout {
    bs: usize,
    blocks: Vec<u64>,
}

impl Layout {
    fn at(&self, jblk: usize) -> usize {
        self.blocks[jblk] as usize * self.bs
    }
}

/// A 1 KiB-block csum v3 image with three committed transactions (a descriptor, 3 data
/// blocks and a commit each, at journal blocks 1.., 6.., 11..) and a revoke-only fourth
/// (revoke at 16, commit at 17).
fn three_transactions(dir: &Path) -> (PathBuf, Layout) {
    let src = dir.join("src3");
    build_tree(&src);
    let image = dir.join("three.img");
    mkfs(&image, Some(&src), "16M", &["-b", "1024"]);
    let b1 = first_block_of(&image, "/keep/unchanged");
    let b2 = first_block_of(&image, "/keep/also");
    let b3 = first_block_of(&image, "/small");
    let data = dir.join("three.bin");
    std::fs::write(&data, common::pseudo_random(12, 3 * 1024)).unwrap();
    let d = data.display();
    debugfs_script(
        &image,
        &format!(
            "jo -c\njw -b {b1},{b2},{b3} {d}\njw -b {b2},{b3},{b1} {d}\njw -b {b3},{b1},{b2} {d}\n\
             jw -r {b3}\njc\n"
        ),
    );
    let l = Layout {
        bs: 1024,
        blocks: journal_blocks(&image),
    };
    // debugfs stamps commits with the wall clock (and puts the seconds in the high half of
    // h_commit_sec); fixed, increasing times make the commit-time rule deterministic.
    let mut img = std::fs::read(&image).unwrap();
    for (jblk, sec) in COMMITS {
        set_commit_time(&mut img, &l, jblk, sec, true);
    }
    std::fs::write(&image, img).unwrap();
    (image, l)
}

/// The commit times `three_transactions` gives its commit blocks: (journal block, seconds).
const COMMITS: [(usize, u64); 4] = [
    (5, 1_700_000_001),
    (10, 1_700_000_002),
    (15, 1_700_000_003),
    (17, 1_700_000_004),
];

/// Sets h_commit_sec of commit block `jblk` and, with `fix`, its csum v3 checksum: crc32c
/// over the block with the checksum field zeroed, seeded with the crc32c of the journal UUID.
fn set_commit_time(img: &mut [u8], l: &Layout, jblk: usize, sec: u64, fix: bool) {
    let at = l.at(jblk);
    img[at + 48..at + 56].copy_from_slice(&sec.to_be_bytes());
    if fix {
        let uuid = l.at(0) + 0x30;
        let seed = crc32c::crc32c(&img[uuid..uuid + 16]);
        img[at + 16..at + 20].fill(0);
        let c = !crc32c::crc32c_append(seed, &img[at..at + l.bs]);
        img[at + 16..at + 20].copy_from_slice(&c.to_be_bytes());
    }
}

/// Sets the journal's INCOMPAT_ASYNC_COMMIT feature, re-checksumming its superblock.
fn set_async_commit(img: &mut [u8], l: &Layout) {
    let jsb = l.at(0);
    img[jsb + 0x2b] |= 0x04;
    img[jsb + 0xfc..jsb + 0x100].fill(0);
    let c = !crc32c::crc32c(&img[jsb..jsb + 1024]);
    img[jsb + 0xfc..jsb + 0x100].copy_from_slice(&c.to_be_bytes());
}

/// Targeted damage to the journal: ferry must accept exactly what the kernel accepts, and
/// then show what it shows.
#[test]
fn damaged_journals_agree_with_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    if !can_mount(tmp.path()) {
        return;
    }
    let (image, l) = three_transactions(tmp.path());
    let orig = std::fs::read(&image).unwrap();
    // `expect_ok`: what the kernel is known to do (None: only agreement is asserted). Returns
    // what ferry did: its replay, or its error.
    let check = |name: &str, img: &[u8], expect_ok: Option<bool>| {
        let path = tmp.path().join("damaged.img");
        std::fs::write(&path, img).unwrap();
        let kernel = kernel_recovered(&path, tmp.path());
        let ours = ferry_view(&path, OpenOptions::default());
        assert!(
            expect_ok.is_none_or(|ok| ok == kernel.is_some()),
            "{name}: the kernel {} it",
            if kernel.is_some() {
                "accepts"
            } else {
                "refuses"
            }
        );
        match (kernel, ours) {
            (Some(k), Ok((o, info))) => {
                kernel::assert_same(&k, &o, name);
                Ok(info)
            }
            (None, Err(e)) => {
                assert!(
                    e.contains("journal"),
                    "{name}: error does not say where: {e}"
                );
                eprintln!("{name}: both refuse; ferry says: {e}");
                Err(e)
            }
            (k, o) => panic!(
                "{name}: kernel {}, ferry {:?}",
                if k.is_some() { "recovers" } else { "refuses" },
                o.map(|(_, i)| i)
            ),
        }
    };
    let flip = |at: usize| {
        let mut m = orig.clone();
        m[at] ^= 0x55;
        m
    };
    let ended_before = |name: &str, r: Result<Option<ReplayInfo>, String>, tid: u32| {
        let info = r
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: nothing replayed"));
        assert_eq!(info.end_transaction, tid, "{name}: {info:?}");
    };
    let refused = |name: &str, r: Result<Option<ReplayInfo>, String>, what: &str| {
        let e = r.unwrap_err();
        assert!(e.contains(what), "{name}: error does not name {what}: {e}");
    };
    ended_before("intact", check("intact", &orig, Some(true)), 5);
    // A commit block failing its checksum (do_one_pass, PASS_SCAN). Older than the previous
    // commit: a stale block, the log ends before it. Otherwise the kernel sets
    // j_failed_commit and jbd2_journal_load refuses ("journal transaction 3 ... is corrupt").
    // The flipped byte makes commit 3's time much later.
    let r = check("commit 3 header", &flip(l.at(15) + 50), Some(false));
    refused("commit 3 header", r, "transaction 3");
    let with_time = |jblk: usize, sec: u64| {
        let mut m = orig.clone();
        set_commit_time(&mut m, &l, jblk, sec, false);
        m
    };
    let (t2, t3) = (COMMITS[1].1, COMMITS[2].1);
    assert!(t2 < t3);
    let r = check("commit 3 older", &with_time(15, t2 - 1), Some(true));
    ended_before("commit 3 older", r, 3);
    let r = check("commit 3 same second", &with_time(15, t2), Some(false));
    refused("commit 3 same second", r, "transaction 3");
    // The first commit is never older than "no commit yet".
    let r = check("commit 1 header", &flip(l.at(5) + 50), Some(false));
    refused("commit 1 header", r, "transaction 1");
    // With async commit the commit block may reach the disk before its transaction: a bad
    // one ends the log there (checksum v3: later commits are not held against it).
    let mut m = flip(l.at(15) + 50);
    set_async_commit(&mut m, &l);
    let r = check("commit 3 header, async commit", &m, Some(true));
    ended_before("commit 3 header, async commit", r, 3);
    // Past the commit header: the kernel accepts a commit block checksummed as if the rest
    // of it were zeros (a partly written block).
    let r = check("commit 3 tail", &flip(l.at(15) + 500), Some(true));
    ended_before("commit 3 tail", r, 5);
    // A data copy with a bad checksum: the kernel refuses to mount. Unless a later revoke
    // record cancels the copy: it is then not even checked.
    let r = check("data copy", &flip(l.at(7) + 10), Some(false));
    refused("data copy", r, "transaction 2");
    let r = check("revoked data copy", &flip(l.at(8) + 10), Some(true));
    ended_before("revoked data copy", r, 5);
    // A descriptor that fails its checksum, followed by a valid commit: corruption.
    let r = check("descriptor 2", &flip(l.at(6) + 900), Some(false));
    refused("descriptor 2", r, "transaction 2");
    // No magic where transaction 2 starts: the log ends after transaction 1.
    let mut m = orig.clone();
    m[l.at(6)..l.at(6) + 4].fill(0);
    let r = check("log ends early", &m, Some(true));
    ended_before("log ends early", r, 2);
    // The journal superblock: magic, then a checksum failure.
    refused(
        "jsb magic",
        check("jsb magic", &flip(l.at(0)), Some(false)),
        "journal",
    );
    let r = check("jsb sequence", &flip(l.at(0) + 0x18), Some(false));
    refused("jsb sequence", r, "journal");
    // A revoke block claiming more records than it holds (checksum fixed up): EINVAL.
    let mut m = orig.clone();
    let rb = l.at(16);
    m[rb + 12..rb + 16].copy_from_slice(&1024u32.to_be_bytes());
    let c = !crc32c::crc32c(&{
        let mut b = m[rb..rb + 1024].to_vec();
        b[1020..].fill(0);
        b
    });
    m[rb + 1020..rb + 1024].copy_from_slice(&c.to_be_bytes());
    let r = check("revoke count", &m, Some(false));
    refused("revoke count", r, "transaction 4");
}

/// Opens and walks `img` on a thread with a deadline: a panic or a hang fails with `label`.
fn survive(img: Vec<u8>, label: &str) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice(img));
        let ok = match Ext4::open(dev) {
            Ok(fs) => {
                let mut buf = vec![0u8; 1 << 16];
                let mut todo = vec![fs.root_ino()];
                let mut n = 0;
                while let Some(ino) = todo.pop() {
                    n += 1;
                    if n > 500 {
                        break;
                    }
                    let _ = fs.read(ino, 0, &mut buf);
                    let _ = fs.readdir(ino, 0, &mut |e, _| {
                        if e.name != b"." && e.name != b".." {
                            todo.push(e.ino);
                        }
                        todo.len() < 1000
                    });
                }
                true
            }
            Err(_) => false,
        };
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(ok) => ok,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{label}: hang (over 10 s)"),
        Err(_) => panic!("{label}: panicked"),
    }
}

#[test]
fn garbled_journals_do_not_panic_or_hang() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "dumpe2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, l) = three_transactions(tmp.path());
    let orig = std::fs::read(&image).unwrap();
    assert!(survive(orig.clone(), "intact"));
    // Truncated inside the journal and around it.
    let (j0, jlast) = (l.at(0), l.at(l.blocks.len() - 1));
    for cut in [
        orig.len() - 1,
        j0,
        j0 + 512,
        l.at(1),
        l.at(7) + 100,
        l.at(17),
        jlast,
    ] {
        survive(orig[..cut].to_vec(), &format!("truncated to {cut}"));
    }
    // Mutants of the log's blocks and of the journal superblock.
    let hot: Vec<(usize, usize)> = (0..18).map(|j| (l.at(j), l.at(j) + 1024)).collect();
    let mut opened = 0;
    let n = 1500;
    for i in 0..n {
        // One at a time: the image is 16 MiB.
        let m = common::mutants(&orig, &hot, 1, 0x10c + i as u64)
            .next()
            .unwrap();
        opened += usize::from(survive(m, &format!("mutant {i}")));
    }
    eprintln!("{opened} of {n} journal mutants open");
    // Most damage stops replay early or is refused; either way some must still open.
    assert!(opened > 0 && opened < n);
}

/// The fuzz target's entry point: a journal dumped out of its filesystem, recovered on its own.
#[test]
fn replays_a_journal_on_its_own() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "dumpe2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = three_transactions(tmp.path());
    let dump = tmp.path().join("journal.bin");
    common::run_tool(
        "debugfs",
        &[
            "-R",
            &format!("dump <8> {}", dump.display()),
            image.to_str().unwrap(),
        ],
    );
    // The filesystem's block numbers must lie inside the device: pad the journal to 16 MiB.
    let mut journal = std::fs::read(&dump).unwrap();
    journal.resize(16 << 20, 0);
    let dev = Arc::new(MemDevice(journal));
    let (view, info) = ferry::fs::ext4::journal::replay_device(dev, 1024)
        .unwrap()
        .unwrap();
    assert_eq!((info.transactions(), info.blocks_mapped), (4, 2));
    // Transactions 1-3 copy three blocks each; /small's three copies are revoked by the 4th.
    assert_eq!((info.blocks_replayed, info.revoke_hits), (6, 3));
    let fs = Ext4::open(ferry::block::open(&image).unwrap()).unwrap();
    assert_eq!(fs.journal_replay(), Some(&info));
    // The last copy wins: /keep/unchanged's first block is the 2nd block of the data file.
    let data = common::pseudo_random(12, 3 * 1024);
    let b1 = first_block_of(&image, "/keep/unchanged");
    let copy = view.copy_of(b1).unwrap();
    let mut buf = vec![0u8; 1024];
    view.read_at(&mut buf, b1 * 1024).unwrap();
    assert_eq!(buf, &data[1024..2048]);
    assert!(!copy.escaped);
}
