//! The jbd2 journal writer against real tools. The change to journal is made by e2fsprogs, not
//! by ferry: image A comes from mkfs.ext4, image B is a copy of A changed by `debugfs -w`
//! (mkdir, a file written whose blocks begin with the jbd2 magic, a symlink, inode fields set,
//! an unlink), and the transaction is every block where A and B differ. ferry journals that
//! transaction into a copy of A and "crashes" before or while writing the blocks home; then
//! `debugfs logdump` must list it, e2fsck must replay it to exactly B's blocks and then find the
//! filesystem clean, the kernel's replay must show B's tree, and ferry's own replay (in memory
//! and onto the device) must give B too. Crashing after every single block written (with any
//! unflushed writes lost or kept) must give A or B, never a mix. Variants: mkfs.ext4 defaults
//! (metadata_csum: csum v3 journal), 4 KiB blocks, ^metadata_csum (no journal checksum, v1,
//! v2), ^64bit, ext3 with 1 KiB blocks.

use crate::common;

use common::kernel;
use ferry::block::{BlockDevice, Describe, Extent, ExtentKind, LayerInfo};
use ferry::fs::ext4::journal::superblock::{JournalSuperblock, INCOMPAT_CSUM_V2};
use ferry::fs::ext4::journal::writer::{replay_onto, Checkpoint, JournalMap, JournalWriter};
use ferry::fs::ext4::{Ext4, OpenOptions};
use ferry::fs::Filesystem;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const JBD2_MAGIC: [u8; 4] = [0xc0, 0x3b, 0x39, 0x98];

/// A raw image file opened read-write (the writer's device in these tests).
struct FileDev {
    file: File,
    len: u64,
}

impl FileDev {
    fn open(path: &Path) -> Arc<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len();
        Arc::new(FileDev { file, len })
    }
}

impl BlockDevice for FileDev {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> ferry::block::Result<()> {
        ferry::block::check_range(off, buf.len() as u64, self.len)?;
        self.file.read_exact_at(buf, off).unwrap();
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> ferry::block::Result<()> {
        ferry::block::check_range(off, buf.len() as u64, self.len)?;
        self.file.write_all_at(buf, off).unwrap();
        Ok(())
    }
    /// Nothing to do: these tests model a crash with `CrashDev`, not with the host's power,
    /// and thousands of fsyncs of scratch images would only slow them down.
    fn flush(&self) -> ferry::block::Result<()> {
        Ok(())
    }
    fn extents(&self, off: u64, len: u64) -> ferry::block::Result<Vec<Extent>> {
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for FileDev {
    fn info(&self) -> ferry::block::Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

/// Which writes not yet flushed survive a crash: a disk may reorder them.
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// None: the disk wrote everything in order up to the crash.
    Nothing,
    /// All of them: only what was flushed survives.
    Unflushed,
    /// Every other one, counted from the last flush.
    EveryOther,
}

/// A device that crashes after `budget` blocks written: later writes and flushes fail, and the
/// writes since the last flush reach the file only as `lost` says. Writes are counted (and
/// torn) in blocks of `bs`.
struct CrashDev {
    inner: Arc<FileDev>,
    bs: usize,
    lost: Lost,
    st: Mutex<CrashState>,
}

struct CrashState {
    budget: u64,
    written: u64,
    unflushed: Vec<(u64, Vec<u8>)>,
    crashed: bool,
}

impl CrashDev {
    fn new(inner: Arc<FileDev>, bs: usize, budget: u64, lost: Lost) -> Arc<Self> {
        Arc::new(CrashDev {
            inner,
            bs,
            lost,
            st: Mutex::new(CrashState {
                budget,
                written: 0,
                unflushed: Vec::new(),
                crashed: false,
            }),
        })
    }

    fn crash(&self, st: &mut CrashState) {
        st.crashed = true;
        for (i, (off, data)) in st.unflushed.drain(..).enumerate() {
            let keep = match self.lost {
                Lost::Nothing => true,
                Lost::Unflushed => false,
                Lost::EveryOther => i % 2 == 0,
            };
            if keep {
                self.inner.write_at(&data, off).unwrap();
            }
        }
    }
}

impl BlockDevice for CrashDev {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> ferry::block::Result<()> {
        self.inner.read_at(buf, off)?;
        let st = self.st.lock();
        let end = off + buf.len() as u64;
        for (at, data) in &st.unflushed {
            let (s, e) = (*at.max(&off), (at + data.len() as u64).min(end));
            if s < e {
                buf[(s - off) as usize..(e - off) as usize]
                    .copy_from_slice(&data[(s - at) as usize..(e - at) as usize]);
            }
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> ferry::block::Result<()> {
        let mut st = self.st.lock();
        for (i, piece) in buf.chunks(self.bs).enumerate() {
            if st.crashed || st.written == st.budget {
                if !st.crashed {
                    self.crash(&mut st);
                }
                return Err(ferry::block::Error::ReadOnly);
            }
            st.written += 1;
            st.unflushed
                .push((off + (i * self.bs) as u64, piece.to_vec()));
        }
        Ok(())
    }
    fn flush(&self) -> ferry::block::Result<()> {
        let mut st = self.st.lock();
        if st.crashed {
            return Err(ferry::block::Error::ReadOnly);
        }
        for (off, data) in st.unflushed.drain(..) {
            self.inner.write_at(&data, off)?;
        }
        self.inner.flush()
    }
    fn extents(&self, off: u64, len: u64) -> ferry::block::Result<Vec<Extent>> {
        self.inner.extents(off, len)
    }
}

impl Describe for CrashDev {
    fn info(&self) -> ferry::block::Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

fn tools() -> bool {
    common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs"])
}

/// Runs a debugfs script read-write on `image`.
fn debugfs_w(image: &Path, script: &str) {
    let out = common::run_with_stdin(
        Command::new(common::tool("debugfs").unwrap())
            .arg("-w")
            .arg("-f")
            .arg("-")
            .arg(image),
        script.as_bytes(),
    );
    assert!(out.status.success(), "debugfs: {out:?}");
}

fn debugfs_r(image: &Path, req: &str) -> String {
    let out = Command::new(common::tool("debugfs").unwrap())
        .arg("-R")
        .arg(req)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// e2fsck with `args`; (exit code, output).
fn e2fsck(image: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(common::tool("e2fsck").unwrap())
        .args(args)
        .arg(image)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn assert_fsck_clean(image: &Path, what: &str) {
    let (code, out) = e2fsck(image, &["-fn"]);
    assert_eq!(code, 0, "{what}: e2fsck -fn is not clean:\n{out}");
}

fn dumpe2fs_h(image: &Path) -> String {
    let out = Command::new(common::tool("dumpe2fs").unwrap())
        .arg("-h")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn needs_recovery(image: &Path) -> bool {
    let mut b = [0u8; 4];
    File::open(image)
        .unwrap()
        .read_exact_at(&mut b, 1024 + 0x60)
        .unwrap();
    u32::from_le_bytes(b) & 0x4 != 0
}

/// Block size and the filesystem blocks of the journal of `image`.
fn geometry(image: &Path) -> (usize, BTreeSet<u64>) {
    let dev = ferry::block::open(image).unwrap();
    let fs = Ext4::open_with(
        dev,
        OpenOptions {
            replay_journal: false,
        },
    )
    .unwrap();
    let map = JournalMap::from_fs(&fs).unwrap();
    let blocks = (0..map.len()).map(|j| map.physical(j).unwrap()).collect();
    (fs.block_size() as usize, blocks)
}

type Blocks = Vec<(u64, Arc<[u8]>)>;

/// The blocks of `b` that differ from `a`, outside the journal.
fn diff(a: &[u8], b: &[u8], bs: usize, journal: &BTreeSet<u64>) -> Blocks {
    a.chunks(bs)
        .zip(b.chunks(bs))
        .enumerate()
        .filter(|(i, (x, y))| x != y && !journal.contains(&(*i as u64)))
        .map(|(i, (_, y))| (i as u64, Arc::from(y)))
        .collect()
}

/// Whether `img` equals `want` in every block outside the journal, and (unless `with_sb`) the
/// superblock's block, which e2fsck rewrites. Returns the first differing block.
fn first_difference(
    img: &[u8],
    want: &[u8],
    bs: usize,
    journal: &BTreeSet<u64>,
    with_sb: bool,
) -> Option<u64> {
    let sb_block = (1024 / bs) as u64;
    img.chunks(bs)
        .zip(want.chunks(bs))
        .enumerate()
        .map(|(i, p)| (i as u64, p))
        .find(|(i, (x, y))| x != y && !journal.contains(i) && (with_sb || *i != sb_block))
        .map(|(i, _)| i)
}

/// A file of 40 KiB whose every 1 KiB starts with the jbd2 magic: its blocks are escaped in
/// the log.
fn magic_file(path: &Path) -> Vec<u8> {
    let mut v = common::pseudo_random(7, 40 * 1024);
    for c in v.chunks_mut(1024) {
        c[..4].copy_from_slice(&JBD2_MAGIC);
    }
    std::fs::write(path, &v).unwrap();
    v
}

struct Pair {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    bs: usize,
    journal: BTreeSet<u64>,
    tx: Blocks,
}

impl Pair {
    fn bytes(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    /// A fresh copy of A named `name`.
    fn copy_a(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::copy(&self.a, &p).unwrap();
        p
    }
}

/// Image A from mkfs.ext4 `args` (and `journal_incompat` patched into its empty journal), B
/// = A changed by debugfs, and the transaction between them.
fn make_pair(mkfs_args: &[&str], journal_setup: Option<&dyn Fn(&Path)>) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for i in 0..30 {
        let p = root.join(format!("dir/file-{i:02}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("file {i}\n")).unwrap();
    }
    std::fs::write(root.join("small"), b"hello\n").unwrap();
    std::fs::write(root.join("big"), common::pseudo_random(3, 70_000)).unwrap();
    let a = dir.path().join("a.img");
    kernel::mkfs_ext4(&a, "16M", Some(&root), mkfs_args);
    if let Some(f) = journal_setup {
        f(&a);
    }
    let b = dir.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let host = dir.path().join("magic.bin");
    magic_file(&host);
    debugfs_w(
        &b,
        &format!(
            "mkdir /newdir\nwrite {} /newdir/magic\nsymlink /newdir/link /small\n\
             sif /small uid 4242\nsif /small mode 0100600\nrm /dir/file-03\nrm /big\n",
            host.display()
        ),
    );
    assert_fsck_clean(&b, "B made by debugfs");
    let (bs, journal) = geometry(&a);
    let tx = diff(&Pair::bytes(&a), &Pair::bytes(&b), bs, &journal);
    assert!(tx.len() > 10, "debugfs changed only {} blocks", tx.len());
    assert!(
        tx.iter().any(|(_, d)| d[..4] == JBD2_MAGIC),
        "no block to escape"
    );
    Pair {
        dir,
        a,
        b,
        bs,
        journal,
        tx,
    }
}

/// Journals `tx` into `image` and leaves it in the log (a crash before the home writes).
fn commit_without_checkpoint(image: &Path, txs: &[(&Blocks, &[u64])]) -> u32 {
    let dev = FileDev::open(image);
    let (mut w, replayed) = JournalWriter::open_device(dev).unwrap();
    assert!(replayed.is_none());
    w.set_checkpoint(Checkpoint::Deferred);
    let first = w.next_transaction();
    for (tx, revoked) in txs {
        w.commit(tx, revoked).unwrap();
    }
    first
}

/// The kernel's view of `image` after it recovers a copy (None when mounts are unavailable).
fn kernel_tree(image: &Path, dir: &Path, recover: bool) -> Option<kernel::Snapshot> {
    let copy = dir.join("kernel-copy.img");
    std::fs::copy(image, &copy).unwrap();
    let mnt = dir.join("kmnt");
    if recover {
        let rw = kernel::mount_or_skip(&copy, &mnt, "loop")?;
        rw.unmount().unwrap();
        assert!(!needs_recovery(&copy), "the kernel left needs_recovery set");
    }
    let ro = kernel::mount_or_skip(&copy, &mnt, "ro,loop")?;
    let tree = kernel::walk(ro.path());
    drop(ro);
    Some(tree)
}

fn ferry_tree(image: &Path) -> kernel::Snapshot {
    let _same = common::Unchanged::new(&[image]);
    let fs = Ext4::open(ferry::block::open(image).unwrap()).unwrap();
    kernel::snapshot(&fs as &dyn Filesystem)
}

/// The whole check of one variant: a committed transaction left in the log replays to B by
/// every reader.
fn crash_before_checkpoint(name: &str, mkfs_args: &[&str], journal_setup: Option<&dyn Fn(&Path)>) {
    if !tools() {
        return;
    }
    let p = make_pair(mkfs_args, journal_setup);
    let crashed = p.copy_a("crashed.img");
    let tid = commit_without_checkpoint(&crashed, &[(&p.tx, &[])]);
    assert!(needs_recovery(&crashed), "{name}: needs_recovery not set");
    let b_bytes = Pair::bytes(&p.b);

    // debugfs sees the transaction: its commit block and every block it logs.
    let log = debugfs_r(&crashed, "logdump -a");
    assert!(
        log.contains(&format!(
            "Found expected sequence {tid}, type 2 (commit block)"
        )),
        "{name}: logdump shows no commit of transaction {tid}:\n{log}"
    );
    for (blk, _) in &p.tx {
        assert!(
            log.contains(&format!("FS block {blk} logged at")),
            "{name}: logdump does not list block {blk}:\n{log}"
        );
    }

    // e2fsck replays it to B's blocks, and the result is clean.
    let fsck = p.copy_a("fsck.img");
    std::fs::copy(&crashed, &fsck).unwrap();
    let (code, out) = e2fsck(&fsck, &["-fy"]);
    assert!(code <= 1, "{name}: e2fsck -fy exit {code}:\n{out}");
    assert_fsck_clean(&fsck, name);
    let got = Pair::bytes(&fsck);
    assert_eq!(
        first_difference(&got, &b_bytes, p.bs, &p.journal, false),
        None,
        "{name}: e2fsck's replay differs from B"
    );

    // ferry's replay onto the device gives B exactly, superblock included.
    let onto = p.copy_a("onto.img");
    std::fs::copy(&crashed, &onto).unwrap();
    let info = replay_onto(FileDev::open(&onto)).unwrap().unwrap();
    assert_eq!(info.transactions(), 1, "{name}");
    assert!(!needs_recovery(&onto));
    assert_eq!(
        first_difference(&Pair::bytes(&onto), &b_bytes, p.bs, &p.journal, true),
        None,
        "{name}: ferry's replay onto the device differs from B"
    );
    assert_fsck_clean(&onto, &format!("{name} after ferry's replay"));
    assert!(dumpe2fs_h(&onto).contains("Journal start:            0"));

    // ferry's in-memory replay shows B's tree, and so does the kernel's replay.
    let ours = ferry_tree(&crashed);
    let want = ferry_tree(&p.b);
    kernel::assert_same(&want, &ours, &format!("{name}: ferry's replay vs B"));
    if let (Some(k), Some(kb)) = (
        kernel_tree(&crashed, p.dir.path(), true),
        kernel_tree(&p.b, p.dir.path(), false),
    ) {
        kernel::assert_same(&kb, &k, &format!("{name}: kernel's replay vs B"));
        kernel::assert_same(
            &k,
            &ours,
            &format!("{name}: ferry's replay vs the kernel's"),
        );
    }
    eprintln!(
        "{name}: {} blocks journaled in transaction {tid}",
        p.tx.len()
    );
}

#[test]
fn replay_of_a_committed_transaction_defaults() {
    crash_before_checkpoint("defaults (1 KiB, metadata_csum)", &[], None);
}

#[test]
fn replay_of_a_committed_transaction_4k() {
    crash_before_checkpoint("4 KiB blocks", &["-b", "4096"], None);
}

#[test]
fn replay_of_a_committed_transaction_no_metadata_csum() {
    crash_before_checkpoint("^metadata_csum", &["-O", "^metadata_csum"], None);
}

#[test]
fn replay_of_a_committed_transaction_no_64bit() {
    crash_before_checkpoint("^64bit", &["-O", "^64bit", "-b", "4096"], None);
}

#[test]
fn replay_of_a_committed_transaction_ext3() {
    crash_before_checkpoint("ext3", &["-t", "ext3", "-b", "1024"], None);
}

/// Rewrites the superblock of the empty journal of `image` through `edit`.
fn edit_journal_superblock(image: &Path, edit: impl FnOnce(&mut JournalSuperblock)) {
    let (bs, journal) = geometry(image);
    let at = *journal.iter().next().unwrap() * bs as u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut b = vec![0u8; bs];
    f.read_exact_at(&mut b, at).unwrap();
    let mut jsb = JournalSuperblock::parse(&b, at, bs as u32, journal.len() as u64).unwrap();
    edit(&mut jsb);
    jsb.encode_into(&mut b);
    f.write_all_at(&b, at).unwrap();
}

/// Sets csum v2 in the empty journal of `image` (mke2fs makes none, debugfs makes v1).
fn journal_csum_v2(image: &Path) {
    edit_journal_superblock(image, |jsb| jsb.feature_incompat |= INCOMPAT_CSUM_V2);
    assert!(dumpe2fs_h(image).contains("journal_checksum_v2"));
}

fn journal_csum_v1(image: &Path) {
    debugfs_w(image, "journal_open -c\njournal_close\n");
    let h = dumpe2fs_h(image);
    assert!(
        h.contains("journal_checksum ") || h.contains("journal_checksum\n"),
        "{h}"
    );
}

#[test]
fn replay_of_a_committed_transaction_journal_csum_v2() {
    crash_before_checkpoint(
        "journal csum v2",
        &["-O", "^metadata_csum"],
        Some(&journal_csum_v2),
    );
}

#[test]
fn replay_of_a_committed_transaction_journal_csum_v1() {
    crash_before_checkpoint(
        "journal csum v1",
        &["-O", "^metadata_csum"],
        Some(&journal_csum_v1),
    );
}

/// Commits with immediate checkpoints and closes cleanly: the image is B, the log empty, no
/// needs_recovery; then the same through a qcow2 overlay.
#[test]
fn clean_close_leaves_b_and_an_empty_journal() {
    if !tools() {
        return;
    }
    let p = make_pair(&[], None);
    let img = p.copy_a("closed.img");
    let (mut w, _) = JournalWriter::open_device(FileDev::open(&img)).unwrap();
    w.commit(&p.tx, &[]).unwrap();
    assert_eq!(w.log_used(), 0);
    w.mark_clean().unwrap();
    assert!(!needs_recovery(&img));
    let h = dumpe2fs_h(&img);
    assert!(h.contains("Journal start:            0"), "{h}");
    assert!(!h.contains("needs_recovery"), "{h}");
    assert!(h.contains("journal_checksum_v3"), "{h}");
    assert_fsck_clean(&img, "clean close");
    assert_eq!(
        first_difference(
            &Pair::bytes(&img),
            &Pair::bytes(&p.b),
            p.bs,
            &p.journal,
            true
        ),
        None
    );

    // Through a qcow2 overlay over A: A untouched, the overlay converted to raw is B.
    let _same = common::Unchanged::new(&[&p.a]);
    let ov = p.dir.path().join("over.qcow2");
    let overlay = Arc::new(ferry::block::overlay::create(&p.a, &ov).unwrap());
    let (mut w, _) = JournalWriter::open_device(overlay.clone()).unwrap();
    w.commit(&p.tx, &[]).unwrap();
    w.mark_clean().unwrap();
    drop(w);
    drop(overlay);
    let raw = p.dir.path().join("over.raw");
    common::qemu_img(&["check", ov.to_str().unwrap()]);
    common::qemu_img(&[
        "convert",
        "-O",
        "raw",
        ov.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    assert_fsck_clean(&raw, "overlay");
    assert_eq!(
        first_difference(
            &Pair::bytes(&raw),
            &Pair::bytes(&p.b),
            p.bs,
            &p.journal,
            true
        ),
        None
    );
}

/// A crash after every block written during open, commit and close, with unflushed writes
/// kept, lost, or half lost: ferry's and e2fsck's replays give A or B, never a mix, and a
/// clean filesystem.
fn crash_everywhere(name: &str, mkfs_args: &[&str]) {
    if !tools() {
        return;
    }
    let p = make_pair(mkfs_args, None);
    let (a_bytes, b_bytes) = (Pair::bytes(&p.a), Pair::bytes(&p.b));
    let run = |img: &Path, budget: u64, lost: Lost| -> u64 {
        let dev = CrashDev::new(FileDev::open(img), p.bs, budget, lost);
        let r = JournalWriter::open_device(dev.clone()).and_then(|(mut w, _)| {
            w.commit(&p.tx, &[])?;
            w.mark_clean()
        });
        let written = dev.st.lock().written;
        assert_eq!(r.is_ok(), written < budget, "{name}: budget {budget}");
        written
    };
    let full = p.copy_a("full.img");
    let total = run(&full, u64::MAX, Lost::Nothing);
    assert!(total > p.tx.len() as u64 * 2);
    let (mut old, mut new) = (0, 0);
    for budget in 0..total {
        for lost in [Lost::Nothing, Lost::Unflushed, Lost::EveryOther] {
            let what = format!("{name}: crash after {budget} of {total} blocks, {lost:?} lost");
            let img = p.copy_a("crash.img");
            run(&img, budget, lost);
            let fsck = p.dir.path().join("crash-fsck.img");
            std::fs::copy(&img, &fsck).unwrap();
            // ferry's replay onto the device.
            replay_onto(FileDev::open(&img)).unwrap();
            let got = Pair::bytes(&img);
            let is_a = first_difference(&got, &a_bytes, p.bs, &p.journal, true).is_none();
            let is_b = first_difference(&got, &b_bytes, p.bs, &p.journal, true).is_none();
            assert!(is_a || is_b, "{what}: ferry's replay is neither A nor B");
            assert_fsck_clean(&img, &what);
            // e2fsck's replay agrees.
            let (code, out) = e2fsck(&fsck, &["-fy"]);
            assert!(code <= 1, "{what}: e2fsck -fy exit {code}:\n{out}");
            assert_fsck_clean(&fsck, &what);
            let want = if is_b { &b_bytes } else { &a_bytes };
            assert_eq!(
                first_difference(&Pair::bytes(&fsck), want, p.bs, &p.journal, false),
                None,
                "{what}: e2fsck's replay differs from ferry's"
            );
            if is_b {
                new += 1;
            } else {
                old += 1;
            }
        }
    }
    assert!(old > 0 && new > 0, "{name}: {old} old, {new} new");
    eprintln!("{name}: {total} crash points x 3: {old} old states, {new} new states");
}

#[test]
fn crash_at_every_write_defaults() {
    crash_everywhere("defaults", &[]);
}

#[test]
fn crash_at_every_write_ext3() {
    crash_everywhere("ext3", &["-t", "ext3", "-b", "1024"]);
}

/// The log wraps around its end: transactions alternate A→B and B→A, kept in the log and
/// checkpointed only when it fills; the last ones (crossing the log's end) replay.
#[test]
fn wrap_around_and_many_transactions() {
    if !tools() {
        return;
    }
    let p = make_pair(&[], None);
    let (a_bytes, b_bytes) = (Pair::bytes(&p.a), Pair::bytes(&p.b));
    let back = diff(&b_bytes, &a_bytes, p.bs, &p.journal);
    let img = p.copy_a("wrap.img");
    let n = 21;
    let mut txs: Vec<(&Blocks, &[u64])> = Vec::new();
    for i in 0..n {
        txs.push((if i % 2 == 0 { &p.tx } else { &back }, &[]));
    }
    let first = commit_without_checkpoint(&img, &txs);
    let log = debugfs_r(&img, "logdump -a");
    // The journal blocks the copies sit at, in log order: they must wrap.
    let at: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("logged at journal block ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        at.windows(2).any(|w| w[1] < w[0]),
        "the log did not wrap: {at:?}"
    );
    let last = first + n - 1;
    assert!(log.contains(&format!(
        "Found expected sequence {last}, type 2 (commit block)"
    )));
    assert_log_replays_to_b(&p, &img, &b_bytes, "wrapped log");
    replay_onto(FileDev::open(&img)).unwrap();
    assert_eq!(
        first_difference(&Pair::bytes(&img), &b_bytes, p.bs, &p.journal, true),
        None
    );
}

/// The log left in `img` replays to B three ways: e2fsck -fy on a copy (which then checks
/// clean and equals B outside the journal), ferry's in-memory replay, and the kernel's.
fn assert_log_replays_to_b(p: &Pair, img: &Path, b_bytes: &[u8], what: &str) {
    let fsck = p.dir.path().join("replayed-by-fsck.img");
    std::fs::copy(img, &fsck).unwrap();
    let (code, out) = e2fsck(&fsck, &["-fy"]);
    assert!(code <= 1, "{what}: e2fsck -fy exit {code}:\n{out}");
    assert_fsck_clean(&fsck, what);
    assert_eq!(
        first_difference(&Pair::bytes(&fsck), b_bytes, p.bs, &p.journal, false),
        None,
        "{what}"
    );
    kernel::assert_same(
        &ferry_tree(&p.b),
        &ferry_tree(img),
        &format!("{what}, ferry"),
    );
    if let Some(k) = kernel_tree(img, p.dir.path(), true) {
        kernel::assert_same(&ferry_tree(&p.b), &k, &format!("{what}, kernel"));
    }
}

/// Sets s_sequence of the empty journal of `image`.
fn set_journal_sequence(image: &Path, sequence: u32) {
    edit_journal_superblock(image, |jsb| jsb.sequence = sequence);
}

/// Transaction IDs are u32s that wrap by design (the writer steps them with wrapping_add, the
/// readers compare them circularly): transactions 2^32 - 2, 2^32 - 1, 0, 1, 2 left in the log
/// replay to B in e2fsck, ferry and the kernel, and the emptied journal continues after 3.
#[test]
fn transaction_ids_wrap() {
    if !tools() {
        return;
    }
    let p = make_pair(
        &[],
        Some(&|img: &Path| set_journal_sequence(img, u32::MAX - 2)),
    );
    let (a_bytes, b_bytes) = (Pair::bytes(&p.a), Pair::bytes(&p.b));
    let back = diff(&b_bytes, &a_bytes, p.bs, &p.journal);
    let img = p.copy_a("tid-wrap.img");
    let txs: Vec<(&Blocks, &[u64])> = (0..5)
        .map(|i| (if i % 2 == 0 { &p.tx } else { &back }, &[][..]))
        .collect();
    let first = commit_without_checkpoint(&img, &txs);
    assert_eq!(first, u32::MAX - 1);
    let log = debugfs_r(&img, "logdump -a");
    for tid in [u32::MAX, 0, 2] {
        assert!(
            log.contains(&format!(
                "Found expected sequence {tid}, type 2 (commit block)"
            )),
            "no commit of transaction {tid}:\n{log}"
        );
    }
    assert_log_replays_to_b(&p, &img, &b_bytes, "wrapped transaction IDs");
    let info = replay_onto(FileDev::open(&img)).unwrap().unwrap();
    assert_eq!(
        (
            info.first_transaction,
            info.end_transaction,
            info.transactions()
        ),
        (u32::MAX - 1, 3, 5)
    );
    assert_eq!(
        first_difference(&Pair::bytes(&img), &b_bytes, p.bs, &p.journal, true),
        None
    );
    assert_fsck_clean(&img, "wrapped transaction IDs after ferry's replay");
    let h = dumpe2fs_h(&img);
    let seq = h.lines().find_map(|l| l.strip_prefix("Journal sequence:"));
    assert_eq!(seq.map(str::trim), Some("0x00000004"), "{h}");
}

/// A directory block journaled in one transaction, freed by the next (with a revoke record)
/// and reused for a file's data, written in place: replay must not put the directory block
/// back over the data, nor may a later checkpoint. Without the revoke replay does, which the
/// test checks too.
#[test]
fn revoke_keeps_a_freed_block_from_replay() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for i in 0..60 {
        let p = root.join(format!("d/file-with-a-long-name-{i}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{i}\n")).unwrap();
    }
    let s0 = dir.path().join("s0.img");
    kernel::mkfs_ext4(&s0, "16M", Some(&root), &[]);
    let (bs, journal) = geometry(&s0);
    let small = dir.path().join("small");
    std::fs::write(&small, b"extra\n").unwrap();
    let host = dir.path().join("host");
    let host_data = common::pseudo_random(9, 60_000);
    std::fs::write(&host, &host_data).unwrap();
    let s1 = dir.path().join("s1.img");
    std::fs::copy(&s0, &s1).unwrap();
    debugfs_w(&s1, &format!("write {} /d/extra\n", small.display()));
    let s2 = dir.path().join("s2.img");
    std::fs::copy(&s1, &s2).unwrap();
    let mut script = String::new();
    for i in 0..60 {
        script += &format!("rm /d/file-with-a-long-name-{i}\n");
    }
    script += &format!("rm /d/extra\nrmdir /d\nwrite {} /g\n", host.display());
    debugfs_w(&s2, &script);
    assert_fsck_clean(&s2, "S2 made by debugfs");
    let g_blocks: BTreeSet<u64> = debugfs_r(&s2, "blocks /g")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (b0, b1, b2) = (Pair::bytes(&s0), Pair::bytes(&s1), Pair::bytes(&s2));
    let t1 = diff(&b0, &b1, bs, &journal);
    let reused: Vec<u64> = t1
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| g_blocks.contains(b))
        .collect();
    assert!(
        !reused.is_empty(),
        "debugfs reused none of T1's blocks for /g"
    );
    // T2: the metadata. /g's data goes in place, not through the log, once T2 (which frees
    // the blocks it reuses) has committed: the writer's contract, as the kernel's allocator
    // does not hand out blocks freed by a transaction before it commits.
    let t2: Blocks = diff(&b1, &b2, bs, &journal)
        .into_iter()
        .filter(|(b, _)| !g_blocks.contains(b))
        .collect();
    let run = |name: &str, revoked: &[u64], close: bool| -> PathBuf {
        let img = dir.path().join(name);
        std::fs::copy(&s0, &img).unwrap();
        let dev = FileDev::open(&img);
        let (mut w, _) = JournalWriter::open_device(dev.clone()).unwrap();
        w.set_checkpoint(Checkpoint::Deferred);
        w.commit(&t1, &[]).unwrap();
        w.commit(&t2, revoked).unwrap();
        for &b in &g_blocks {
            let at = b as usize * bs;
            dev.write_at(&b2[at..at + bs], at as u64).unwrap();
        }
        if close {
            w.mark_clean().unwrap();
        }
        img
    };
    let read_g = |img: &Path| -> Vec<u8> {
        let fs = Ext4::open(ferry::block::open(img).unwrap()).unwrap();
        let a = fs.lookup(fs.root_ino(), b"g").unwrap();
        let mut buf = vec![0u8; host_data.len() + 10];
        let n = fs.read(a.ino, 0, &mut buf).unwrap();
        buf.truncate(n);
        buf
    };

    let img = run("revoked.img", &reused, false);
    assert_eq!(read_g(&img), host_data, "ferry's replay overwrote /g");
    let log = debugfs_r(&img, "logdump -a");
    assert!(
        log.contains("Revoke"),
        "logdump shows no revoke block:\n{log}"
    );
    let fsck = dir.path().join("revoked-fsck.img");
    std::fs::copy(&img, &fsck).unwrap();
    let (code, out) = e2fsck(&fsck, &["-fy"]);
    assert!(code <= 1, "e2fsck -fy exit {code}:\n{out}");
    assert_fsck_clean(&fsck, "revoke");
    // e2fsck's full pass also lowers bg_itable_unused after debugfs's removals, so its replay
    // is compared with S2 after the same e2fsck pass.
    let s2_fsck = dir.path().join("s2-fsck.img");
    std::fs::copy(&s2, &s2_fsck).unwrap();
    e2fsck(&s2_fsck, &["-fy"]);
    assert_eq!(
        first_difference(
            &Pair::bytes(&fsck),
            &Pair::bytes(&s2_fsck),
            bs,
            &journal,
            false
        ),
        None,
        "e2fsck's replay is not S2"
    );
    replay_onto(FileDev::open(&img)).unwrap();
    assert_eq!(
        first_difference(&Pair::bytes(&img), &b2, bs, &journal, true),
        None
    );

    // The same with a clean close: the revoked block's stale copy is not checkpointed.
    let img = run("closed.img", &reused, true);
    assert!(!needs_recovery(&img));
    assert_fsck_clean(&img, "revoke, closed");
    assert_eq!(
        first_difference(&Pair::bytes(&img), &b2, bs, &journal, true),
        None
    );

    // Without the revoke, replay puts T1's copies back over /g's data.
    let img = run("unrevoked.img", &[], false);
    assert_ne!(read_g(&img), host_data, "the control lost its point");
}

/// fsyncs every file and directory under `root`: the kernel commits its journal without
/// writing the metadata in place, so a copy taken now needs recovery.
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
            File::open(&p).unwrap().sync_all().unwrap();
        }
    }
}

/// A log the kernel wrote (copied while mounted, after fsync) is replayed onto the device by
/// ferry as the kernel's own recovery does: the result needs no recovery, passes e2fsck, shows
/// the kernel's recovered tree, and takes new transactions.
#[test]
fn replay_onto_a_kernel_log() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/old"), b"old\n").unwrap();
    for (name, args) in [("ext4", &[][..]), ("ext3", &["-t", "ext3"][..])] {
        let image = dir.path().join(format!("{name}.img"));
        kernel::mkfs_ext4(&image, "32M", Some(&root), args);
        let crashed = dir.path().join(format!("{name}-crashed.img"));
        let Some(m) = kernel::mount_or_skip(&image, &dir.path().join("mnt"), "loop") else {
            return;
        };
        for i in 0..50 {
            std::fs::write(m.path().join(format!("d/new-{i}")), format!("{i}\n")).unwrap();
        }
        std::fs::write(m.path().join("big"), common::pseudo_random(4, 200_000)).unwrap();
        std::fs::remove_file(m.path().join("d/old")).unwrap();
        std::fs::create_dir(m.path().join("e")).unwrap();
        fsync_tree(m.path());
        std::fs::copy(&image, &crashed).unwrap();
        drop(m);
        assert!(
            needs_recovery(&crashed),
            "{name}: the copy needs no recovery"
        );
        let Some(want) = kernel_tree(&crashed, dir.path(), true) else {
            return;
        };
        let ours = dir.path().join(format!("{name}-ferry.img"));
        std::fs::copy(&crashed, &ours).unwrap();
        let (mut w, info) = JournalWriter::open_device(FileDev::open(&ours)).unwrap();
        let info = info.expect("nothing replayed");
        assert!(
            info.transactions() > 0 && info.blocks_mapped > 0,
            "{name}: {info:?}"
        );
        assert!(!needs_recovery(&ours));
        assert!(dumpe2fs_h(&ours).contains("Journal start:            0"));
        assert_fsck_clean(
            &ours,
            &format!("{name} after ferry's replay of a kernel log"),
        );
        let got = kernel_tree(&ours, dir.path(), false).unwrap();
        kernel::assert_same(&want, &got, &format!("{name}: replay onto the device"));
        // The next transaction continues after the kernel's IDs and replays with e2fsck.
        assert!(w.next_transaction() > info.end_transaction);
        let bs = geometry(&ours).0;
        let sb_block = (1024 / bs) as u64;
        let mut sb = vec![0u8; bs];
        File::open(&ours)
            .unwrap()
            .read_exact_at(&mut sb, sb_block * bs as u64)
            .unwrap();
        w.set_checkpoint(Checkpoint::Deferred);
        w.commit(&[(sb_block, sb.into())], &[]).unwrap();
        drop(w);
        assert!(needs_recovery(&ours));
        let (code, out) = e2fsck(&ours, &["-fy"]);
        assert!(code <= 1, "{name}: e2fsck -fy exit {code}:\n{out}");
        assert!(out.contains("recovering journal"), "{name}: {out}");
        assert_fsck_clean(&ours, name);
    }
}
