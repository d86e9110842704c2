//! The write side's state and its one door to the disk. `Ext4::open_rw` refuses what ferry
//! cannot write safely, naming the feature. Every mutation runs as one operation (`mutate`):
//! under the filesystem's write lock, its metadata blocks collect in `pending` (which reads
//! see first, so the read code serves the writers too) and its freed metadata blocks in
//! `freed`; at its end `write_metadata` gets the whole set at once — the place a journal
//! commits it — after the operation's file data went to the device (ordered mode). An
//! operation that fails leaves nothing behind: its pending blocks and superblock counts are
//! dropped. Damage found while writing turns the filesystem read-only (errors=remount-ro).

use super::group::GroupDesc;
use super::inode::{InodeBuf, TimeField};
use super::journal::writer::JournalWriter;
use super::superblock::{
    Compat, Incompat, RoCompat, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
};
use super::{csum, low32, Ext4};
use crate::block::{BlockDevice, Describe};
use crate::bytes::{le16, le32, wide};
use crate::fs::{Error, Result, Timestamp};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// s_state bits (EXT4_VALID_FS: cleanly unmounted; EXT4_ERROR_FS: errors detected).
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
/// Superblock fields the writer reads or keeps up to date.
const S_FREE_BLOCKS_LO: usize = 0xc;
const S_FREE_INODES: usize = 0x10;
const S_WTIME: usize = 0x30;
const S_STATE: usize = 0x3a;
const S_LAST_ORPHAN: usize = 0xe8;
const S_JOURNAL_DEV: usize = 0xe4;
const S_FREE_BLOCKS_HI: usize = 0x158;
const S_WANT_EXTRA_ISIZE: usize = 0x15e;
const S_ERROR_COUNT: usize = 0x194;
const S_WTIME_HI: usize = 0x274;

/// RO_COMPAT features a writer must keep up to date and ferry does not (yet), or that forbid
/// writing: quota (usage in quota inodes), bigalloc (cluster allocation), snapshots, the
/// never-used btree_dir, the `readonly` flag, shared (deduplicated) blocks, and orphans
/// pending (a recovery step).
const RO_COMPAT_REFUSED: &[(RoCompat, &str)] = &[
    (RoCompat::BTREE_DIR, "btree_dir"),
    (RoCompat::HAS_SNAPSHOT, "has_snapshot"),
    (RoCompat::QUOTA, "quota"),
    (RoCompat::BIGALLOC, "bigalloc"),
    (RoCompat::READONLY, "readonly"),
    (RoCompat::SHARED_BLOCKS, "shared_blocks"),
    (
        RoCompat::ORPHAN_PRESENT,
        "orphan_present (orphans to clean up: run e2fsck)",
    ),
];
/// RO_COMPAT features the writer handles (or that only mark objects it makes read-only):
/// project (new inodes get project 0), verity (verity inodes are read-only).
const RO_COMPAT_WRITABLE: RoCompat = RoCompat::SPARSE_SUPER
    .union(RoCompat::LARGE_FILE)
    .union(RoCompat::HUGE_FILE)
    .union(RoCompat::GDT_CSUM)
    .union(RoCompat::DIR_NLINK)
    .union(RoCompat::EXTRA_ISIZE)
    .union(RoCompat::METADATA_CSUM)
    .union(RoCompat::PROJECT)
    .union(RoCompat::VERITY);

/// Group descriptor flags (bg_flags).
pub(super) const BG_INODE_UNINIT: u16 = 0x1;
pub(super) const BG_BLOCK_UNINIT: u16 = 0x2;

/// The writer's state, present when the filesystem was opened with `open_rw`.
pub(crate) struct RwState {
    /// Serialises mutations; reads go on meanwhile.
    lock: Mutex<()>,
    /// Metadata blocks the running operation changed, final contents with their checksums.
    pub(super) pending: Mutex<BTreeMap<u64, Arc<[u8]>>>,
    /// Metadata blocks the running operation freed (a journal must revoke them).
    freed: Mutex<BTreeSet<u64>>,
    /// The primary superblock as it will be written (1024 bytes).
    sb_raw: Mutex<Vec<u8>>,
    sb_dirty: AtomicBool,
    /// Set when damage was found while writing: every later mutation is refused.
    failed: AtomicBool,
    /// xorshift state for i_generation.
    rng: Mutex<u64>,
    /// Where the next directory goes (spreading directories over the groups).
    pub(super) dir_rotor: AtomicU32,
    /// The filesystem's jbd2 journal, when it has one (ext3/4): every operation's metadata
    /// is committed there before it goes home. None for ext2.
    journal: Option<Mutex<JournalWriter>>,
    /// Open handles per inode (FUSE open/create to release): an inode whose last name goes
    /// while it is open becomes an orphan instead of being freed.
    pub(super) open: Mutex<HashMap<u64, u32>>,
    /// The running transaction (with a journal): operations that ended since the last commit.
    running: Mutex<Running>,
}

/// How long an operation waits, at most, in the running transaction before it is committed:
/// the kernel's default commit interval (ext4 `commit=5`).
const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The metadata of operations that ended but are not committed yet, as jbd2 keeps its running
/// transaction: many operations share one commit, so the blocks they all touch (bitmaps,
/// group descriptors, the superblock, a directory's block) are logged once, not once per
/// file. Reads see these blocks before the device's.
#[derive(Default)]
struct Running {
    blocks: BTreeMap<u64, Arc<[u8]>>,
    /// Metadata blocks freed (revoke records at the commit).
    revoked: BTreeSet<u64>,
    /// Every block range freed, start -> end (disjoint): not to be handed out for file data
    /// before the commit, or a crash would leave the old owner, still on disk, reading the
    /// new data (the kernel keeps such blocks until its transaction commits, too).
    freed: BTreeMap<u64, u64>,
    /// When the oldest uncommitted operation ended.
    since: Option<std::time::Instant>,
}

/// The device the journal writes through: writes pass, flushes do not. The order of writes
/// is what keeps the filesystem consistent when the daemon is killed (a completed write
/// survives a killed process); durability against a host crash comes from the real flush
/// at fsync and unmount (`Ext4::sync_device`), not from the four barriers of every commit,
/// which would make each file creation wait for the host disk four times.
struct NoBarrier(Arc<dyn BlockDevice>);

impl BlockDevice for NoBarrier {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> crate::block::Result<()> {
        self.0.read_at(buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> crate::block::Result<()> {
        self.0.write_at(buf, off)
    }

    fn flush(&self) -> crate::block::Result<()> {
        Ok(())
    }

    fn extents(&self, off: u64, len: u64) -> crate::block::Result<Vec<crate::block::Extent>> {
        self.0.extents(off, len)
    }
}

impl Describe for NoBarrier {
    fn info(&self) -> crate::block::Result<crate::block::LayerInfo> {
        self.0.info()
    }
}

/// A view of one raw group descriptor being edited.
pub(crate) struct GdRaw<'a>(&'a mut [u8]);

impl GdRaw<'_> {
    fn wide(&self) -> bool {
        self.0.len() >= 64
    }

    fn get16x(&self, lo: usize, hi: usize) -> u32 {
        u32::from(le16(self.0, lo))
            | if self.wide() {
                u32::from(le16(self.0, hi)) << 16
            } else {
                0
            }
    }

    fn put16x(&mut self, lo: usize, hi: usize, v: u32) {
        // The low and high 16 bits; the offsets are the fields', inside a 32- (lo) or 64-byte
        // (hi, wide only) descriptor.
        let [a, b, c, d] = v.to_le_bytes();
        self.put(lo, [a, b]);
        if self.wide() {
            self.put(hi, [c, d]);
        }
    }

    fn put(&mut self, at: usize, v: [u8; 2]) {
        if let Some(f) = self.0.get_mut(at..).and_then(|f| f.get_mut(..2)) {
            f.copy_from_slice(&v);
        }
    }

    pub(crate) fn flags(&self) -> u16 {
        le16(self.0, 0x12)
    }

    pub(crate) fn set_flags(&mut self, f: u16) {
        self.0[0x12..0x14].copy_from_slice(&f.to_le_bytes());
    }

    pub(crate) fn free_blocks(&self) -> u32 {
        self.get16x(0xc, 0x2c)
    }

    pub(crate) fn set_free_blocks(&mut self, v: u32) {
        self.put16x(0xc, 0x2c, v);
    }

    pub(crate) fn free_inodes(&self) -> u32 {
        self.get16x(0xe, 0x2e)
    }

    pub(crate) fn set_free_inodes(&mut self, v: u32) {
        self.put16x(0xe, 0x2e, v);
    }

    pub(crate) fn used_dirs(&self) -> u32 {
        self.get16x(0x10, 0x30)
    }

    pub(crate) fn set_used_dirs(&mut self, v: u32) {
        self.put16x(0x10, 0x30, v);
    }

    pub(crate) fn itable_unused(&self) -> u32 {
        self.get16x(0x1c, 0x32)
    }

    pub(crate) fn set_itable_unused(&mut self, v: u32) {
        self.put16x(0x1c, 0x32, v);
    }

    pub(crate) fn set_block_bitmap_csum(&mut self, c: u32) {
        self.put16x(0x18, 0x38, c);
    }

    pub(crate) fn set_inode_bitmap_csum(&mut self, c: u32) {
        self.put16x(0x1a, 0x3a, c);
    }
}

/// The current time, as a timestamp.
pub(crate) fn now() -> Timestamp {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        },
        Err(_) => Timestamp::default(),
    }
}

impl Ext4 {
    /// Opens the filesystem for reading and writing. Refused, with the reason named, when
    /// ferry cannot write it safely: a feature it does not maintain (bigalloc, quota, MMP, an
    /// external journal...), errors recorded by the kernel or e2fsck, not cleanly unmounted,
    /// or a journal that needs recovery. Objects ferry cannot change (inline data, encrypted
    /// or casefolded directories, verity files, values in EA inodes) answer `ReadOnly`.
    pub fn open_rw(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        let noload = super::OpenOptions {
            replay_journal: false,
        };
        let read_sb = || -> Result<Vec<u8>> {
            let mut raw = vec![0u8; SUPERBLOCK_SIZE];
            dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
            Ok(raw)
        };
        // Everything but a pending recovery is checked before anything is written.
        let before = Self::open_with(dev.clone(), noload)?;
        check_writable(&before.sb, &read_sb()?, true)?;
        let journaled = before.sb.has_compat(Compat::HAS_JOURNAL);
        drop(before);
        // As a read-write mount does: replay what the log holds onto the device, then
        // journal every operation from here on.
        let journal = if journaled {
            let (w, replayed) = JournalWriter::open_device(Arc::new(NoBarrier(dev.clone())))?;
            if let Some(r) = replayed {
                log::info!("ext4: replayed the journal onto the device ({r:?})");
            }
            Some(Mutex::new(w))
        } else {
            None
        };
        let mut fs = Self::open_with(dev.clone(), noload)?;
        let raw = read_sb()?;
        check_writable(&fs.sb, &raw, false)?;
        let fs_bytes = u64::from(fs.block_size()).checked_mul(fs.sb.blocks_count);
        if fs_bytes.is_none_or(|n| n > dev.len()) {
            return Err(Error::Unsupported(format!(
                "the device ({} bytes) is smaller than the filesystem ({} blocks): truncated image",
                dev.len(),
                fs.sb.blocks_count
            )));
        }
        // The free counts as the kernel would write them: the sums over the groups (the
        // superblock's copy may be stale; e2fsck and the kernel recompute it).
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        for g in 0..fs.sb.group_count {
            let gd = fs.group_desc(g)?;
            // At most 2^32 groups of u32 counts: no overflow.
            free_blocks = free_blocks.saturating_add(u64::from(gd.free_clusters));
            free_inodes = free_inodes.saturating_add(u64::from(gd.free_inodes));
        }
        if free_blocks > fs.sb.blocks_count || free_inodes > u64::from(fs.sb.inodes_count) {
            return Err(Error::corrupt(
                "group descriptors",
                0,
                0,
                format!("{free_blocks} free blocks, {free_inodes} free inodes: more than exist"),
            ));
        }
        let t = now();
        let secs = u64::from_ne_bytes(t.secs.to_ne_bytes());
        let seed = u64::from(t.nsecs) ^ secs.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        let st = RwState {
            lock: Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            freed: Mutex::new(BTreeSet::new()),
            sb_raw: Mutex::new(raw),
            sb_dirty: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            rng: Mutex::new(seed | 1),
            dir_rotor: AtomicU32::new(0),
            journal,
            open: Mutex::new(HashMap::new()),
            running: Mutex::new(Running::default()),
        };
        fs.rw = Some(st);
        fs.sb_set_free(free_blocks, free_inodes);
        if !journaled {
            fs.set_valid(false)?;
        }
        // As a mount does after its journal replay: inodes left on the orphan list by a
        // writer that stopped (ferry's or the kernel's) are freed or truncated.
        fs.orphans_cleanup()?;
        // statfs' overhead part is computed once; the free counts come from the writer.
        crate::fs::Filesystem::statfs(&fs)?;
        Ok(fs)
    }

    /// Without a journal nothing repairs a crash, so, as ext2 and ext4 do for such a mount,
    /// s_state loses EXT4_VALID_FS while the filesystem is open for writing (a killed writer
    /// leaves it marked for e2fsck) and gets it back when it is closed.
    fn set_valid(&self, valid: bool) -> Result<()> {
        let rw = self.rw()?;
        {
            let mut sb = rw.sb_raw.lock();
            let state = le16(&sb, S_STATE);
            let state = if valid {
                state | STATE_VALID
            } else {
                state & !STATE_VALID
            };
            sb[S_STATE..S_STATE + 2].copy_from_slice(&state.to_le_bytes());
        }
        rw.sb_dirty.store(true, Ordering::Relaxed);
        self.mutate(|| Ok(()))?;
        self.dev.flush()?;
        Ok(())
    }

    /// Whether the filesystem was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.rw.is_some()
    }

    fn rw(&self) -> Result<&RwState> {
        let rw = self.rw.as_ref().ok_or(Error::ReadOnly)?;
        if rw.failed.load(Ordering::Relaxed) {
            return Err(Error::ReadOnly);
        }
        Ok(rw)
    }

    /// Runs one filesystem operation: `f` changes metadata through `put_meta`/`put_inode` and
    /// the allocators; on success its blocks are committed together, on failure dropped.
    pub(crate) fn mutate<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let rw = self.rw()?;
        let _g = rw.lock.lock();
        if rw.failed.load(Ordering::Relaxed) {
            return Err(Error::ReadOnly);
        }
        let sb_before = rw.sb_raw.lock().clone();
        let out = f().and_then(|v| self.commit().map(|()| v));
        if let Err(e) = &out {
            rw.pending.lock().clear();
            rw.freed.lock().clear();
            *rw.sb_raw.lock() = sb_before;
            rw.sb_dirty.store(false, Ordering::Relaxed);
            if matches!(e, Error::Corrupt(_) | Error::Io(_)) {
                rw.failed.store(true, Ordering::Relaxed);
                log::error!("ext4: {e}; the filesystem is read-only from now on");
            }
        }
        out
    }

    /// Queues metadata block `blk` with its new contents (checksums already set) for the
    /// running operation; reads see it at once.
    pub(crate) fn put_meta(&self, blk: u64, data: Vec<u8>) -> Result<()> {
        let rw = self.rw()?;
        self.block_offset(blk, 1, "metadata block", 0)?;
        rw.freed.lock().remove(&blk);
        rw.pending.lock().insert(blk, data.into());
        Ok(())
    }

    /// Notes that metadata block `blk` was freed by the running operation.
    pub(crate) fn forget_meta(&self, blk: u64) -> Result<()> {
        let rw = self.rw()?;
        rw.pending.lock().remove(&blk);
        rw.freed.lock().insert(blk);
        Ok(())
    }

    /// A block changed by the running operation or the running transaction.
    pub(super) fn pending_block(&self, blk: u64) -> Option<Arc<[u8]>> {
        let rw = self.rw.as_ref()?;
        if let Some(b) = rw.pending.lock().get(&blk) {
            return Some(b.clone());
        }
        rw.running.lock().blocks.get(&blk).cloned()
    }

    /// Whether block `blk` was freed as metadata by the running operation (it may not be
    /// handed out again before the operation ends).
    pub(super) fn freed_by_this_operation(&self, blk: u64) -> bool {
        self.rw
            .as_ref()
            .is_some_and(|rw| rw.freed.lock().contains(&blk))
    }

    /// Notes that blocks `start..end` were freed by the running operation.
    pub(super) fn note_freed(&self, start: u64, end: u64) {
        if let Some(rw) = self.rw.as_ref().filter(|rw| rw.journal.is_some()) {
            rw.running.lock().freed.insert(start, end);
        }
    }

    /// Blocks `start..end` are about to hold new contents: if the running transaction freed
    /// any of them, it is committed first, so that no crash can show them to their old owner.
    pub(super) fn before_reuse(&self, start: u64, end: u64) -> Result<()> {
        let Some(rw) = self.rw.as_ref() else {
            return Ok(());
        };
        let clash = rw
            .running
            .lock()
            .freed
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > start);
        if clash {
            self.commit_running()?;
        }
        Ok(())
    }

    /// Commits the running transaction to the journal (which writes it home at once), so that
    /// the log is empty and the operations so far are durable once the device is flushed.
    pub(crate) fn commit_running(&self) -> Result<()> {
        let rw = self.rw()?;
        let Some(j) = rw.journal.as_ref() else {
            return Ok(());
        };
        // The blocks stay in the running transaction, where readers find them, until the
        // cache holds them: a reader in between would otherwise get (and cache) the old ones.
        let (blocks, revoked) = {
            let run = rw.running.lock();
            let blocks: Vec<(u64, Arc<[u8]>)> =
                run.blocks.iter().map(|(b, d)| (*b, d.clone())).collect();
            let revoked: Vec<u64> = run.revoked.iter().copied().collect();
            (blocks, revoked)
        };
        if !blocks.is_empty() || !revoked.is_empty() {
            let committed = j.lock().commit(&blocks, &revoked);
            if let Err(e) = committed {
                rw.failed.store(true, Ordering::Relaxed);
                log::error!(
                    "ext4: committing to the journal: {e}; the filesystem is read-only from now on"
                );
                return Err(e);
            }
            let mut cache = self.cache.lock();
            for (blk, data) in blocks {
                cache.put(blk, data);
            }
        }
        *rw.running.lock() = Running::default();
        Ok(())
    }

    /// Writes file data (never metadata) at block `blk`: straight to the device, before the
    /// operation's metadata, as ordered mode does.
    pub(crate) fn write_data(&self, blk: u64, data: &[u8]) -> Result<()> {
        let bs = u64::from(self.block_size());
        let n = wide(data.len()).div_ceil(bs);
        let off = self.block_offset(blk, n, "file data", 0)?;
        self.dev.write_at(data, off)?;
        Ok(())
    }

    fn commit(&self) -> Result<()> {
        let rw = self.rw()?;
        if rw.sb_dirty.swap(false, Ordering::Relaxed) {
            let (blk, data) = self.superblock_block()?;
            rw.pending.lock().insert(blk, data.into());
        }
        let blocks: Vec<(u64, Arc<[u8]>)> = rw
            .pending
            .lock()
            .iter()
            .map(|(b, d)| (*b, d.clone()))
            .collect();
        let revoked: Vec<u64> = rw.freed.lock().iter().copied().collect();
        let r = match rw.journal.as_ref() {
            Some(j) => self.join_running(j, blocks, revoked),
            None => self.write_metadata(&blocks, &revoked),
        };
        rw.pending.lock().clear();
        rw.freed.lock().clear();
        r
    }

    /// Adds an operation's blocks to the running transaction, and commits that when it has
    /// waited long enough or fills a quarter of the log (jbd2's limit, so that a commit
    /// always finds room).
    fn join_running(
        &self,
        j: &Mutex<JournalWriter>,
        blocks: Vec<(u64, Arc<[u8]>)>,
        revoked: Vec<u64>,
    ) -> Result<()> {
        let rw = self.rw()?;
        let full = {
            let mut run = rw.running.lock();
            let mut cache = self.cache.lock();
            let mut verified = self.verified.lock();
            for blk in revoked {
                run.blocks.remove(&blk);
                run.revoked.insert(blk);
                cache.pop(&blk);
                verified.pop(&blk);
            }
            for (blk, data) in blocks {
                run.revoked.remove(&blk);
                verified.pop(&blk);
                run.blocks.insert(blk, data);
            }
            let since = *run.since.get_or_insert_with(std::time::Instant::now);
            let j = j.lock();
            let log = j.transaction_log_blocks(wide(run.blocks.len()), wide(run.revoked.len()));
            log > j.log_capacity() / 4 || since.elapsed() >= COMMIT_INTERVAL
        };
        if full {
            self.commit_running()?;
        }
        Ok(())
    }

    /// THE door for metadata: writes the metadata blocks of one operation (`blocks`, in block
    /// order, checksums set) and drops the freed ones (`revoked`) from the caches. A journal
    /// commits `blocks` as one transaction and revokes `revoked` here; without one they are
    /// written in place. File data of the operation is on the device already.
    pub fn write_metadata(&self, blocks: &[(u64, Arc<[u8]>)], revoked: &[u64]) -> Result<()> {
        let bs = u64::from(self.block_size());
        match self.rw.as_ref().and_then(|rw| rw.journal.as_ref()) {
            // One transaction: logged, committed, then written home (checkpointed) at once,
            // so the log is empty between operations and a freed block may be reused by the
            // next one.
            Some(j) => j.lock().commit(blocks, revoked)?,
            None => {
                for (blk, data) in blocks {
                    let off = blk.checked_mul(bs).ok_or_else(|| {
                        Error::corrupt("metadata block", 0, *blk, "block number overflows")
                    })?;
                    self.dev.write_at(data, off)?;
                }
            }
        }
        let mut cache = self.cache.lock();
        let mut verified = self.verified.lock();
        for (blk, data) in blocks {
            cache.put(*blk, data.clone());
            verified.pop(blk);
        }
        for blk in revoked {
            cache.pop(blk);
            verified.pop(blk);
        }
        Ok(())
    }

    /// Makes everything written durable on the device.
    /// With a journal, its log is empty after every operation: the filesystem is marked
    /// clean (no needs_recovery), as after an unmount, until the next operation.
    pub(crate) fn sync_device(&self) -> Result<()> {
        let rw = self.rw()?;
        if let Some(j) = &rw.journal {
            let _g = rw.lock.lock();
            self.commit_running()?;
            j.lock().mark_clean()?;
        }
        self.dev.flush()?;
        Ok(())
    }

    /// The block holding the primary superblock with its new contents (checksum set): block
    /// 1 with 1 KiB blocks, else block 0 around the boot sector.
    fn superblock_block(&self) -> Result<(u64, Vec<u8>)> {
        let rw = self.rw()?;
        let mut sb = rw.sb_raw.lock().clone();
        let t = now();
        // The low 32 bits and the high byte, as ext4_update_tstamp stores them.
        let [a, b, c, d, hi, ..] = t.secs.to_le_bytes();
        sb[S_WTIME..S_WTIME + 4].copy_from_slice(&[a, b, c, d]);
        sb[S_WTIME_HI] = hi;
        if self.sb.metadata_csum {
            csum::superblock_set(&mut sb);
        }
        *rw.sb_raw.lock() = sb.clone();
        let bs = u64::from(self.block_size());
        if bs == 1024 {
            return Ok((1, sb));
        }
        let mut block = vec![0u8; self.block_size_usize()];
        self.dev.read_at(&mut block, 0)?;
        // Bytes 1024..2048 of a block of at least 2 KiB.
        block
            .get_mut(SB_AT..)
            .and_then(|b| b.get_mut(..SUPERBLOCK_SIZE))
            .ok_or_else(|| Error::corrupt("superblock", 0, 0, "block 0 is too small"))?
            .copy_from_slice(&sb);
        Ok((0, block))
    }

    /// s_last_orphan as it will be written: the head of the orphan list.
    pub(super) fn sb_last_orphan(&self) -> Result<u32> {
        Ok(le32(&self.rw()?.sb_raw.lock(), S_LAST_ORPHAN))
    }

    /// Sets s_last_orphan for the running operation.
    pub(super) fn set_sb_last_orphan(&self, ino: u32) -> Result<()> {
        let rw = self.rw()?;
        rw.sb_raw.lock()[S_LAST_ORPHAN..S_LAST_ORPHAN + 4].copy_from_slice(&ino.to_le_bytes());
        rw.sb_dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The free block and inode counts the superblock will carry.
    pub(crate) fn sb_free(&self) -> Option<(u64, u64)> {
        let rw = self.rw.as_ref()?;
        let sb = rw.sb_raw.lock();
        let hi = if self.sb.has_incompat(Incompat::IS_64BIT) {
            u64::from(le32(&sb, S_FREE_BLOCKS_HI)) << 32
        } else {
            0
        };
        Some((
            u64::from(le32(&sb, S_FREE_BLOCKS_LO)) | hi,
            u64::from(le32(&sb, S_FREE_INODES)),
        ))
    }

    fn sb_set_free(&self, blocks: u64, inodes: u64) {
        let Some(rw) = self.rw.as_ref() else { return };
        let mut sb = rw.sb_raw.lock();
        // Low and high halves; counts are below the totals, which fit their fields.
        let [a, b, c, d, e, f, g, h] = blocks.to_le_bytes();
        sb[S_FREE_BLOCKS_LO..S_FREE_BLOCKS_LO + 4].copy_from_slice(&[a, b, c, d]);
        if self.sb.has_incompat(Incompat::IS_64BIT) {
            sb[S_FREE_BLOCKS_HI..S_FREE_BLOCKS_HI + 4].copy_from_slice(&[e, f, g, h]);
        }
        let inodes = u32::try_from(inodes).unwrap_or(u32::MAX);
        sb[S_FREE_INODES..S_FREE_INODES + 4].copy_from_slice(&inodes.to_le_bytes());
        rw.sb_dirty.store(true, Ordering::Relaxed);
    }

    /// Adds `blocks` and `inodes` (either may be negative) to the superblock's free counts.
    pub(crate) fn sb_add_free(&self, blocks: i64, inodes: i64) {
        if let Some((b, i)) = self.sb_free() {
            self.sb_set_free(
                b.saturating_add_signed(blocks),
                i.saturating_add_signed(inodes),
            );
        }
    }

    /// Edits the descriptor of `group` with `f`, then sets its checksum and queues its block.
    pub(crate) fn gd_edit<T>(&self, group: u32, f: impl FnOnce(&mut GdRaw<'_>) -> T) -> Result<T> {
        let (blk, range) = self.desc_location(group)?;
        let mut block = self.meta_block(blk, "group descriptors", 0)?.to_vec();
        let desc = block.get_mut(range).ok_or_else(short_gd(blk))?;
        let r = f(&mut GdRaw(desc));
        if let Some(kind) = self.sb.group_csum() {
            csum::group_desc_set(desc, group, kind, &self.sb.uuid);
        }
        self.put_meta(blk, block)?;
        Ok(r)
    }

    /// Reads descriptor fields of `group` the parser does not keep (flags, itable_unused...).
    pub(crate) fn gd_peek<T>(&self, group: u32, f: impl FnOnce(&GdRaw<'_>) -> T) -> Result<T> {
        let (blk, range) = self.desc_location(group)?;
        let mut block = self.meta_block(blk, "group descriptors", 0)?.to_vec();
        let desc = block.get_mut(range).ok_or_else(short_gd(blk))?;
        Ok(f(&GdRaw(desc)))
    }

    pub(crate) fn group_desc_pub(&self, group: u32) -> Result<GroupDesc> {
        self.group_desc(group)
    }

    /// The raw slot of inode `ino` for editing, after the reader validated it (checksum,
    /// fields), so that ferry never builds on a damaged inode.
    pub(crate) fn inode_buf(&self, ino: u64) -> Result<InodeBuf> {
        self.inode(ino)?;
        self.inode_slot(ino)
    }

    /// The raw slot of inode `ino` as it is, unvalidated (for a slot about to be
    /// initialised).
    pub(crate) fn inode_slot(&self, ino: u64) -> Result<InodeBuf> {
        let (blk, range) = self.inode_location(ino)?;
        let block = self.meta_block(blk, "inode table", ino)?;
        let raw = block.get(range).ok_or_else(short_itable(ino, blk))?;
        Ok(InodeBuf {
            ino,
            raw: raw.to_vec(),
        })
    }

    /// THE place inodes are written: sets the slot's checksum and queues its table block.
    pub(crate) fn put_inode(&self, b: &mut InodeBuf) -> Result<()> {
        let (blk, range) = self.inode_location(b.ino)?;
        if self.sb.metadata_csum {
            // ino <= s_inodes_count, a u32.
            let seed = csum::inode_seed(self.sb.csum_seed, low32(b.ino), b.generation());
            csum::inode_set(seed, &mut b.raw);
        }
        let mut block = self.meta_block(blk, "inode table", b.ino)?.to_vec();
        // The buffer is the slot inode_slot read, of the slot's size.
        block
            .get_mut(range)
            .filter(|slot| slot.len() == b.raw.len())
            .ok_or_else(short_itable(b.ino, blk))?
            .copy_from_slice(&b.raw);
        self.put_meta(blk, block)
    }

    /// A fresh i_generation.
    pub(crate) fn next_generation(&self) -> u32 {
        let Some(rw) = self.rw.as_ref() else { return 0 };
        let mut s = rw.rng.lock();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        // The high 32 bits of the state.
        let [.., a, b, c, d] = s.to_le_bytes();
        u32::from_le_bytes([a, b, c, d])
    }

    /// i_extra_isize for new inodes: s_want_extra_isize, or the kernel's default.
    pub(crate) fn want_extra_isize(&self) -> u16 {
        let Some(rw) = self.rw.as_ref() else {
            return super::inode::EXTRA_ISIZE;
        };
        let w = le16(&rw.sb_raw.lock(), S_WANT_EXTRA_ISIZE);
        if w >= super::inode::EXTRA_ISIZE && w % 4 == 0 {
            w
        } else {
            super::inode::EXTRA_ISIZE
        }
    }

    /// Sets ctime (and, when `mtime`, mtime) of an inode being edited to now.
    pub(crate) fn touch(b: &mut InodeBuf, mtime: bool) {
        let t = now();
        b.set_time(TimeField::Ctime, t);
        if mtime {
            b.set_time(TimeField::Mtime, t);
        }
    }
}

impl Drop for Ext4 {
    /// Closing a writable filesystem leaves it clean, as an unmount does: with a journal, no
    /// needs_recovery (the log is empty between operations). Best effort: a failure here
    /// leaves needs_recovery set, which the next open replays harmlessly.
    fn drop(&mut self) {
        let Some(rw) = self.rw.as_ref() else {
            return;
        };
        if rw.failed.load(Ordering::Relaxed) {
            return;
        }
        // Files still open at the end (a lazy unmount) are closed now.
        if let Err(e) = self.orphans_cleanup().and_then(|()| self.commit_running()) {
            log::warn!("ext4: freeing unlinked open files: {e}");
        }
        if let Some(j) = &rw.journal {
            if let Err(e) = j.lock().mark_clean() {
                log::warn!("ext4: closing the journal: {e}");
            }
        } else if let Err(e) = self.set_valid(true) {
            log::warn!("ext4: marking the filesystem clean: {e}");
        }
    }
}

/// The byte offset of the primary superblock, as an index into a block.
const SB_AT: usize = 1024;
const _: () = assert!(wide(SB_AT) == SUPERBLOCK_OFFSET);

/// The error for a descriptor block shorter than its descriptors.
fn short_gd(blk: u64) -> impl FnOnce() -> Error {
    move || Error::corrupt("group descriptors", 0, blk, "short descriptor block")
}

/// The error for an inode table block shorter than its slots.
fn short_itable(ino: u64, blk: u64) -> impl FnOnce() -> Error {
    move || Error::corrupt("inode table", ino, blk, "short inode table block")
}

/// Refuses, naming the reason, a filesystem ferry must not write (see `Ext4::open_rw`).
/// `recovery_pending_ok`: a journal that needs recovery is not (yet) a reason, because the
/// journal writer replays it first.
fn check_writable(sb: &Superblock, raw: &[u8], recovery_pending_ok: bool) -> Result<()> {
    let refuse = |why: String| Err(Error::Unsupported(format!("cannot write: {why}")));
    if sb.has_incompat(Incompat::RECOVER) && !recovery_pending_ok {
        return refuse(
            "the journal needs recovery (the filesystem was not cleanly unmounted); replay it \
             first (mount and unmount it, or e2fsck)"
                .into(),
        );
    }
    if sb.has_incompat(Incompat::MMP) {
        return refuse("multi-mount protection (mmp) is on".into());
    }
    if sb.has_compat(Compat::HAS_JOURNAL) && (sb.journal_inum == 0 || le32(raw, S_JOURNAL_DEV) != 0)
    {
        return refuse("the journal is on another device (external journal)".into());
    }
    let names: Vec<&str> = RO_COMPAT_REFUSED
        .iter()
        .filter(|(bit, _)| sb.has_ro_compat(*bit))
        .map(|(_, n)| *n)
        .collect();
    if !names.is_empty() {
        return refuse(format!("feature {} is on", names.join(", ")));
    }
    let unknown = sb.feature_ro_compat.difference(RO_COMPAT_WRITABLE);
    if !unknown.is_empty() {
        return refuse(format!(
            "unknown read-only-compatible features {:#x}",
            unknown.bits()
        ));
    }
    if sb.has_ro_compat(RoCompat::METADATA_CSUM) && !sb.metadata_csum {
        return refuse("metadata_csum with an unknown checksum type".into());
    }
    if sb.metadata_csum && !csum::superblock_ok(raw) {
        return refuse("the superblock checksum is wrong".into());
    }
    let state = le16(raw, S_STATE);
    if state & STATE_ERROR != 0 || le32(raw, S_ERROR_COUNT) != 0 {
        return refuse("errors are recorded in the superblock (run e2fsck)".into());
    }
    if state & STATE_VALID == 0 {
        return refuse("not cleanly unmounted (run e2fsck)".into());
    }
    if sb.rev_level == 0 {
        return refuse("revision 0 filesystem".into());
    }
    Ok(())
}

impl Ext4 {
    /// The next group for a new directory (round robin over the groups).
    pub(crate) fn rw_dir_rotor(&self) -> u32 {
        self.rw
            .as_ref()
            .map_or(0, |rw| rw.dir_rotor.fetch_add(1, Ordering::Relaxed))
    }
}
