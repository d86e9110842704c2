//! jbd2 journal writer (Documentation/filesystems/ext4/journal.rst; the kernel's
//! fs/jbd2/commit.c and checkpoint.c are the model): the metadata blocks of one filesystem
//! operation are written to the log as one transaction, then to their home locations, so that
//! a crash at any point leaves a filesystem that journal replay (ferry's `recovery`, the
//! kernel's, e2fsck's) makes consistent: either all of a transaction's blocks or none.
//!
//! One commit, in order, each step durable (`BlockDevice::flush`) before the next starts:
//! 1. needs_recovery (Incompat::RECOVER) is set in the ext4 superblock (`mark_dirty`), once;
//! 2. if the log is empty, the journal superblock gets s_start = where this transaction goes
//!    and s_sequence = its ID (the kernel's JBD2_FLUSHED path); then revoke blocks, descriptor
//!    blocks with the copies of the blocks (escaped when they begin with the jbd2 magic); flush;
//! 3. the commit block (checksummed), flush: from here the transaction replays;
//! 4. checkpoint (`Checkpoint::Immediate`, the default): the blocks are written home, flush,
//!    then the journal superblock says the log is empty (s_start = 0, s_sequence = the next
//!    ID), flush. With `Checkpoint::Deferred` transactions stay in the log and are
//!    checkpointed together when the next one would not fit, past MAX_PENDING_BYTES, or at
//!    `checkpoint`/`mark_clean`; `pending_block` then gives their latest content.
//!
//! Why a crash anywhere is safe: before step 3's flush no commit block of the transaction
//! exists, so recovery stops before it and the home blocks are untouched (old state); after it,
//! recovery replays the whole transaction over whatever part of the home writes happened (new
//! state), until the superblock says the log is empty, which it does only once every home
//! write is durable. A block freed by a transaction and then reused for file data is never
//! overwritten by replay: the freeing transaction carries a revoke record for it (the caller
//! passes it in `revoked`), which cancels every earlier copy in the log, and a revoked block
//! is dropped from the pending checkpoint. With immediate checkpoints the log is empty between
//! commits, so no earlier copy exists at all.
//!
//! The caller's side of that contract, the kernel's too (ext4 mballoc returns freed blocks
//! to the allocator in the commit callback): a block freed by a transaction is not written
//! with file data, nor allocated again, before that transaction's `commit` has returned.
//! Until then a crash leaves the filesystem as it was before the free, where the block still
//! holds what the earlier state says it holds.
//!
//! The journal owns needs_recovery: every copy of the primary superblock's block that goes
//! through `commit` gets the flag set (and its checksum refreshed), as the kernel's in-memory
//! superblock has it, so a checkpoint never writes a superblock that would hide a log still to
//! replay. `mark_clean` checkpoints and clears it: a cleanly closed filesystem has an empty log
//! and no needs_recovery.
//!
//! Limits: a transaction takes `descriptors + blocks + revoke blocks + 1` log blocks and must
//! fit in the log less one block (`max_transaction_blocks`); a larger one is refused before
//! anything is written, as one transaction cannot be split without losing its atomicity.
//! Only internal journals (an inode) are written. Like the kernel at a read-write mount, an
//! empty version 2 journal gets INCOMPAT_REVOKE, INCOMPAT_64BIT on a 64bit filesystem, and
//! csum v3 in place of any other checksum on a metadata_csum filesystem (mke2fs makes the
//! journal without checksums; the kernel adds them at mount). Otherwise the journal's checksum
//! feature is kept as it is (v1, v2, v3 or none). A version 1
//! journal cannot hold revoke records: it is always checkpointed immediately, so that none is
//! needed. Transaction IDs continue from s_sequence + 1 (the kernel skips one after load, in
//! case a partial transaction with s_sequence's ID sits in the log).
// Guard rails (issue 16 item 7): the journal superblock and the journal inode's map are
// untrusted; the log geometry is checked once in `open`, and transaction IDs are u32s that
// wrap by design (wrapping_add, as the kernel's tid_t).

use super::block::{
    crc32_be, data_csum, encode_revoke_records, encode_tag, revoke_record_len, set_commit_csum,
    set_tail_csum, Commit, Header, Tag, BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE,
    COMMIT_CRC32, COMMIT_CRC32_SIZE, FLAG_ESCAPE, FLAG_LAST_TAG, FLAG_SAME_UUID, HEADER_LEN, MAGIC,
    REVOKE_HEADER_LEN, TAIL_LEN,
};
use super::recovery::LogSource;
use super::superblock::{
    JournalSuperblock, COMPAT_CHECKSUM, INCOMPAT_64BIT, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3,
    INCOMPAT_REVOKE,
};
use super::view::ReplayView;
use super::ReplayInfo;
use crate::block::BlockDevice;
use crate::bytes::{le16, wide};
use crate::fs::ext4::inode::FL_ENCRYPT;
use crate::fs::ext4::superblock::{
    self as ext4sb, Compat, Incompat, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
};
use crate::fs::ext4::{Ext4, Run};
use crate::fs::{Error, FileType, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;

/// Runs (extents) a journal inode may be made of. mke2fs makes a journal of at most 1 GiB in
/// one or a few extents; a journal fragmented into single blocks of 4 KiB is at most 262144
/// runs. Bounds the map's memory on hostile input.
pub const MAX_JOURNAL_RUNS: usize = 1 << 20;
/// Bytes of committed but not yet checkpointed blocks kept in memory with
/// `Checkpoint::Deferred`: past this the writer checkpoints.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Bytes written to the device in one call when log or home blocks are contiguous.
const MAX_WRITE: usize = 1 << 20;
/// The ext4 superblock magic, checked before the writer changes the superblock.
const EXT4_MAGIC: u16 = 0xef53;
/// The primary superblock's byte offset, as an index into a block.
const SB_AT: usize = 1024;
const _: () = assert!(wide(SB_AT) == SUPERBLOCK_OFFSET);
/// The journal UUID after the first tag of a descriptor block.
const UUID_LEN: usize = 16;

/// Where each block of the journal lives on the filesystem's device: runs of (first journal
/// block, first filesystem block, length), covering journal blocks `0..len` without a gap.
#[derive(Clone, Debug)]
pub struct JournalMap {
    runs: Vec<(u64, u64, u64)>,
    /// Journal blocks mapped.
    len: u64,
    block_size: u32,
    /// The runs' physical ranges (start, end), sorted, to refuse writes into the journal.
    physical: Vec<(u64, u64)>,
}

impl JournalMap {
    /// The map of the internal journal of `fs` (opened on the device the writer writes): its
    /// inode's extents or block map over the journal's s_maxlen blocks. Refuses a filesystem
    /// without a journal, an external journal, and a journal with a block that is not mapped.
    pub fn from_fs(fs: &Ext4) -> Result<Self> {
        let sb = fs.superblock();
        if !sb.has_compat(Compat::HAS_JOURNAL) {
            return Err(Error::Unsupported(
                "the filesystem has no journal (ext2): there is nothing to write it through".into(),
            ));
        }
        if sb.journal_inum == 0 {
            return Err(Error::Unsupported(
                "the journal is on another device (external journal); ferry writes only an \
                 internal journal"
                    .into(),
            ));
        }
        let inode = fs.inode(u64::from(sb.journal_inum))?;
        let ino = inode.ino;
        let bad = |blk: u64, d: String| Error::corrupt("journal inode", ino, blk, d);
        if inode.links == 0 || inode.kind != FileType::RegularFile || inode.flags & FL_ENCRYPT != 0
        {
            return Err(bad(0, "not a live regular file".into()));
        }
        let bs = fs.block_size();
        let total_len = (inode.size / fs.block_nz()).min(u64::from(u32::MAX));
        let mut map = JournalMap {
            runs: Vec::new(),
            len: 0,
            block_size: bs,
            physical: Vec::new(),
        };
        // The superblock (journal block 0) says how many blocks the log uses.
        map.extend(fs, &inode, 1.min(total_len))?;
        let Some(at) = map.offset(0) else {
            return Err(bad(0, "the journal inode holds no blocks".into()));
        };
        let mut b = vec![0u8; fs.block_size_usize()];
        fs.dev.read_at(&mut b, at)?;
        let jsb = JournalSuperblock::parse(&b, at, bs, total_len)?;
        map.extend(fs, &inode, u64::from(jsb.maxlen))?;
        map.index();
        Ok(map)
    }

    /// Maps journal blocks up to `want` through the inode's extents or block map.
    fn extend(
        &mut self,
        fs: &Ext4,
        inode: &crate::fs::ext4::inode::Inode,
        want: u64,
    ) -> Result<()> {
        let ino = inode.ino;
        let mut lblk = self.len;
        loop {
            let left = want.saturating_sub(lblk);
            if left == 0 {
                break;
            }
            match fs.map(inode, lblk)? {
                // Both mappers give runs of at least one block; an empty one would not advance.
                Run::Data { pblk, len } if len > 0 => {
                    let len = len.min(left);
                    fs.block_offset(pblk, len, "journal block", ino)?;
                    if self.runs.len() >= MAX_JOURNAL_RUNS {
                        return Err(Error::corrupt(
                            "journal inode",
                            ino,
                            lblk,
                            format!("more than {MAX_JOURNAL_RUNS} extents"),
                        ));
                    }
                    self.runs.push((lblk, pblk, len));
                    // len <= want - lblk: at most `want`.
                    lblk = lblk.saturating_add(len);
                }
                Run::Data { .. } | Run::Zero(_) | Run::Hole(_) => {
                    return Err(Error::corrupt(
                        "journal inode",
                        ino,
                        lblk,
                        format!("journal block {lblk} is not mapped"),
                    ))
                }
            }
        }
        self.len = lblk;
        Ok(())
    }

    /// A journal that is one contiguous run of `len` blocks from filesystem block `start`
    /// (tests, fuzzing, and journals known to be contiguous).
    pub fn contiguous(start: u64, len: u64, block_size: u32) -> Self {
        let mut map = JournalMap {
            runs: vec![(0, start, len)],
            len,
            block_size,
            physical: Vec::new(),
        };
        map.index();
        map
    }

    /// Builds `physical`: the runs' ranges sorted and merged where they overlap or touch (a
    /// damaged journal inode may map several logical blocks to one physical block), so that
    /// the range starting last at or before a block is the only one that can hold it.
    fn index(&mut self) {
        let mut ranges: Vec<(u64, u64)> = self
            .runs
            .iter()
            .map(|&(_, p, n)| (p, p.saturating_add(n)))
            .collect();
        ranges.sort_unstable();
        self.physical.clear();
        for (start, end) in ranges {
            match self.physical.last_mut() {
                Some((_, e)) if start <= *e => *e = end.max(*e),
                _ => self.physical.push((start, end)),
            }
        }
    }

    /// Journal blocks mapped.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The filesystem block holding journal block `jblk`.
    pub fn physical(&self, jblk: u64) -> Option<u64> {
        let i = self
            .runs
            .partition_point(|&(l, _, _)| l <= jblk)
            .checked_sub(1)?;
        let &(l, p, n) = self.runs.get(i)?;
        p.checked_add(jblk.checked_sub(l).filter(|&d| d < n)?)
    }

    fn offset(&self, jblk: u64) -> Option<u64> {
        self.physical(jblk)?.checked_mul(u64::from(self.block_size))
    }

    /// Whether filesystem block `pblk` belongs to the journal.
    pub fn contains_physical(&self, pblk: u64) -> bool {
        let i = self.physical.partition_point(|&(s, _)| s <= pblk);
        i.checked_sub(1)
            .and_then(|i| self.physical.get(i))
            .is_some_and(|&(_, end)| pblk < end)
    }
}

impl LogSource for JournalMap {
    fn locate(&self, jblk: u64) -> Result<u64> {
        self.offset(jblk).ok_or_else(|| {
            Error::corrupt(
                "journal",
                0,
                jblk,
                format!("journal block {jblk} is not mapped"),
            )
        })
    }
}

/// Replays, in memory, the journal that `map` locates on `dev` (what ferry's reader does at
/// open), whatever the ext4 superblock says. For checking a log against ferry's recovery.
pub fn replay_map(
    dev: Arc<dyn BlockDevice>,
    map: &JournalMap,
) -> Result<Option<(ReplayView, ReplayInfo)>> {
    super::recover(dev, map, map.block_size, map.len, 0)
}

/// When committed blocks are written to their home locations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Checkpoint {
    /// Right after each commit; the log is empty between commits.
    #[default]
    Immediate,
    /// When the log or MAX_PENDING_BYTES is full, or at `checkpoint`/`mark_clean`.
    Deferred,
}

/// Writes transactions into an ext4 filesystem's internal jbd2 journal.
pub struct JournalWriter {
    dev: Arc<dyn BlockDevice>,
    map: JournalMap,
    jsb: JournalSuperblock,
    /// Journal block 0 as read, rewritten with `jsb`'s changing fields.
    raw_jsb: Vec<u8>,
    /// Where journal block 0 is on the device.
    jsb_at: u64,
    /// The block size, at least 1024 bytes (an ext4 superblock's).
    bs: usize,
    /// Filesystem blocks (s_blocks_count): copies of blocks past it are refused. Their bytes
    /// fit in the device (checked in `open`).
    fs_blocks: u64,
    /// The circular log is journal blocks `[first, first + cap)`, with `first + cap <= 2^32`.
    first: u64,
    cap: NonZeroU64,
    /// Log blocks one transaction may take: `cap - 1` (at least 1).
    room: u64,
    /// Tags one descriptor block holds, and records one revoke block holds.
    tags_per_descriptor: NonZeroUsize,
    records_per_revoke: NonZeroUsize,
    /// Next log block to write.
    head: u64,
    /// Log blocks holding transactions not yet checkpointed (from s_start up to `head`), at
    /// most `room`.
    used: u64,
    next_tid: u32,
    /// Committed blocks not yet written home, each of `bs` bytes.
    pending: BTreeMap<u64, Arc<[u8]>>,
    policy: Checkpoint,
    /// needs_recovery is set in the ext4 superblock.
    dirty: bool,
    /// A write failed: the state on disk is unknown, and nothing more is written (jbd2's
    /// journal abort).
    aborted: bool,
}

impl JournalWriter {
    /// Opens the journal of the filesystem whose superblock is `sb`, on `dev`, located by
    /// `map` (`JournalMap::from_fs`). The log must be empty: a journal holding transactions is
    /// replayed first (`replay_onto`).
    pub fn open(dev: Arc<dyn BlockDevice>, sb: &Superblock, map: JournalMap) -> Result<Self> {
        let bs = sb.block_size();
        if map.block_size != bs {
            return Err(Error::Unsupported(format!(
                "journal map of {}-byte blocks for a filesystem of {bs}-byte blocks",
                map.block_size
            )));
        }
        if sb
            .blocks_count
            .checked_mul(u64::from(bs))
            .is_none_or(|n| n > dev.len())
        {
            return Err(Error::Unsupported(format!(
                "the device ({} bytes) is smaller than the filesystem ({} blocks of {bs} bytes)",
                dev.len(),
                sb.blocks_count
            )));
        }
        let bad = |blk: u64, d: String| Error::corrupt("journal superblock", 0, blk, d);
        let at = map
            .offset(0)
            .ok_or_else(|| bad(0, "journal block 0 is not mapped".into()))?;
        let len = usize::try_from(bs).map_err(|_| bad(0, format!("block size {bs}")))?;
        let mut raw_jsb = vec![0u8; len];
        dev.read_at(&mut raw_jsb, at)?;
        let jsb = JournalSuperblock::parse(&raw_jsb, at, bs, map.len())?;
        if jsb.start != 0 {
            return Err(Error::Unsupported(format!(
                "the journal holds transactions from block {} on: replay it first \
                 (replay_onto) before writing",
                jsb.start
            )));
        }
        let (first, last) = (u64::from(jsb.first), u64::from(jsb.last()));
        // A descriptor and a commit block at the least.
        let Some((cap, room)) = last
            .checked_sub(first)
            .and_then(NonZeroU64::new)
            .and_then(|cap| Some((cap, cap.get().checked_sub(1).filter(|&r| r > 0)?)))
        else {
            return Err(bad(
                0,
                format!("log blocks {first}..{last} leave no room for a transaction"),
            ));
        };
        if last > map.len() {
            return Err(bad(
                0,
                format!("log ends at block {last}, the journal has {}", map.len()),
            ));
        }
        // Like the kernel at mount (ext4_fill_super, set_journal_csum_feature_set): an empty
        // version 2 journal gets the features this writer uses, and csum v3 (only) on a
        // metadata_csum filesystem.
        let (mut compat, mut features) = (jsb.feature_compat, jsb.feature_incompat);
        if jsb.version == 2 {
            features |= INCOMPAT_REVOKE;
            if sb.has_incompat(ext4sb::Incompat::IS_64BIT) {
                features |= INCOMPAT_64BIT;
            }
            if sb.metadata_csum {
                compat &= !COMPAT_CHECKSUM;
                features = (features & !INCOMPAT_CSUM_V2) | INCOMPAT_CSUM_V3;
            }
        }
        let mut shown = jsb.clone();
        shown.feature_compat = compat;
        shown.feature_incompat = features;
        let Some((tags_per_descriptor, records_per_revoke)) = block_capacity(len, &shown) else {
            return Err(bad(
                0,
                format!("blocks of {bs} bytes hold no descriptor tag or revoke record"),
            ));
        };
        let mut w = JournalWriter {
            dev,
            map,
            raw_jsb,
            jsb_at: at,
            bs: len,
            fs_blocks: sb.blocks_count,
            first,
            cap,
            room,
            tags_per_descriptor,
            records_per_revoke,
            head: first,
            used: 0,
            // Transaction IDs are u32s that wrap by design (the kernel's tid_t, compared by
            // tid_gt); one is skipped after load.
            next_tid: jsb.sequence.wrapping_add(1),
            pending: BTreeMap::new(),
            policy: Checkpoint::Immediate,
            dirty: sb.has_incompat(Incompat::RECOVER),
            aborted: false,
            jsb: shown,
        };
        if (compat, features) != (jsb.feature_compat, jsb.feature_incompat) {
            w.write_jsb()?;
            w.flush()?;
        }
        Ok(w)
    }

    /// Replays a filesystem that needs recovery onto itself, then opens its journal: what a
    /// read-write mount does. Returns what was replayed, if anything.
    pub fn open_device(dev: Arc<dyn BlockDevice>) -> Result<(Self, Option<ReplayInfo>)> {
        let info = replay_onto(dev.clone())?;
        let fs = Ext4::load(dev.clone())?;
        let map = JournalMap::from_fs(&fs)?;
        let w = Self::open(dev, fs.superblock(), map)?;
        Ok((w, info))
    }

    pub fn set_checkpoint(&mut self, policy: Checkpoint) {
        self.policy = if self.jsb.has_incompat(INCOMPAT_REVOKE) {
            policy
        } else {
            Checkpoint::Immediate
        };
    }

    /// The ID the next transaction gets.
    pub fn next_transaction(&self) -> u32 {
        self.next_tid
    }

    /// Log blocks holding transactions not yet checkpointed (0: the log is empty).
    pub fn log_used(&self) -> u64 {
        self.used
    }

    /// Blocks of the circular log.
    pub fn log_capacity(&self) -> u64 {
        self.cap.get()
    }

    /// The journal superblock as the writer keeps it.
    pub fn journal_superblock(&self) -> &JournalSuperblock {
        &self.jsb
    }

    /// Log blocks a transaction of `blocks` copies and `revoked` records takes (saturating:
    /// a count past u64 is refused as too large all the same).
    pub fn transaction_log_blocks(&self, blocks: u64, revoked: u64) -> u64 {
        let revoke_blocks = if self.jsb.has_incompat(INCOMPAT_REVOKE) {
            revoked.div_ceil(wide(self.records_per_revoke.get()))
        } else {
            0
        };
        blocks
            .div_ceil(wide(self.tags_per_descriptor.get()))
            .saturating_add(blocks)
            .saturating_add(revoke_blocks)
            .saturating_add(1)
    }

    /// The most blocks one transaction (without revokes) may copy: it must fit in the log less
    /// one block.
    pub fn max_transaction_blocks(&self) -> u64 {
        most_copies(self.room, self.tags_per_descriptor)
    }

    /// The content of `blk` committed but not yet written home (`Checkpoint::Deferred`);
    /// readers must prefer it to the device.
    pub fn pending_block(&self, blk: u64) -> Option<Arc<[u8]>> {
        self.pending.get(&blk).cloned()
    }

    fn check_live(&self) -> Result<()> {
        if self.aborted {
            return Err(Error::Unsupported(
                "the journal was aborted after a failed write; reopen the filesystem (its \
                 journal replays) to write again"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs `f`; a failure aborts the journal.
    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_live()?;
        let r = f(self);
        if r.is_err() {
            self.aborted = true;
        }
        r
    }

    fn flush(&self) -> Result<()> {
        self.dev.flush()?;
        Ok(())
    }

    fn write_jsb(&mut self) -> Result<()> {
        self.jsb.encode_into(&mut self.raw_jsb);
        self.dev.write_at(&self.raw_jsb, self.jsb_at)?;
        Ok(())
    }

    /// The log position `n` blocks after `pos`, around the end of the log.
    fn advance(&self, pos: u64, n: u64) -> u64 {
        // pos is a log position (pos - first < cap) and first + cap <= 2^32: no step saturates.
        let off = pos.saturating_sub(self.first).saturating_add(n % self.cap);
        self.first.saturating_add(off % self.cap)
    }

    /// Writes `data` (whole blocks) to consecutive log blocks from log position `pos`, in as
    /// few device writes as the journal's layout allows; returns the log position after them.
    fn write_log(&self, pos: u64, data: &[u8]) -> Result<u64> {
        let bs = wide(self.bs);
        let mut rest = data;
        let mut pos = pos;
        while !rest.is_empty() {
            let at = self.map.locate(pos)?;
            // The blocks that follow both in the log (no wrap) and on the device join this
            // write: `len` bytes, ending with log block `end` at device byte `end_at`.
            let (mut len, mut end, mut end_at) = (self.bs, pos, at);
            loop {
                let next = self.advance(end, 1);
                let Some(longer) = len
                    .checked_add(self.bs)
                    .filter(|&l| l <= rest.len() && l <= MAX_WRITE)
                else {
                    break;
                };
                if end.checked_add(1) != Some(next) {
                    break;
                }
                let Some(next_at) = self
                    .map
                    .offset(next)
                    .filter(|&a| end_at.checked_add(bs) == Some(a))
                else {
                    break;
                };
                (len, end, end_at) = (longer, next, next_at);
            }
            let Some((write, tail)) = rest.split_at_checked(len) else {
                return Err(Error::Unsupported(format!(
                    "a log write of {} bytes is not whole {}-byte blocks",
                    data.len(),
                    self.bs
                )));
            };
            self.dev.write_at(write, at)?;
            rest = tail;
            pos = self.advance(end, 1);
        }
        Ok(pos)
    }

    /// Sets needs_recovery in the ext4 superblock (durably) before anything goes to the log.
    /// `commit` calls it; idempotent.
    pub fn mark_dirty(&mut self) -> Result<()> {
        if self.dirty {
            return self.check_live();
        }
        self.guard(|w| {
            w.update_ext4_superblock(true)?;
            w.dirty = true;
            Ok(())
        })
    }

    /// Checkpoints everything, then clears needs_recovery: the filesystem is clean, its log
    /// empty. A later `commit` sets the flag again.
    pub fn mark_clean(&mut self) -> Result<()> {
        self.checkpoint()?;
        self.guard(|w| {
            w.update_ext4_superblock(false)?;
            w.dirty = false;
            Ok(())
        })
    }

    fn update_ext4_superblock(&mut self, recover: bool) -> Result<()> {
        let mut sb = vec![0u8; SUPERBLOCK_SIZE];
        self.dev.read_at(&mut sb, SUPERBLOCK_OFFSET)?;
        set_recover(&mut sb, recover)?;
        self.dev.write_at(&sb, SUPERBLOCK_OFFSET)?;
        self.flush()
    }

    /// Commits one transaction: `blocks` (filesystem block, its new content of one block) are
    /// logged and, after the commit block is durable, checkpointed as the policy says;
    /// `revoked` blocks (freed metadata) get revoke records so that no earlier copy in the log
    /// is replayed over them. A block both copied and revoked is copied (as a re-journaled
    /// block cancels its revoke in the kernel). The same block twice: the last content wins.
    pub fn commit(&mut self, blocks: &[(u64, Arc<[u8]>)], revoked: &[u64]) -> Result<()> {
        self.check_live()?;
        let copies = self.prepare(blocks)?;
        let mut revokes = BTreeSet::new();
        if self.jsb.has_incompat(INCOMPAT_REVOKE) {
            for &r in revoked {
                self.check_block(r, "revoked block")?;
                if !copies.contains_key(&r) {
                    revokes.insert(r);
                }
            }
        }
        if copies.is_empty() && revokes.is_empty() {
            return Ok(());
        }
        let need = self.transaction_log_blocks(wide(copies.len()), wide(revokes.len()));
        if need > self.room {
            return Err(Error::Unsupported(format!(
                "a transaction of {} blocks and {} revokes takes {need} log blocks; the \
                 journal's log holds at most {} per transaction",
                copies.len(),
                revokes.len(),
                self.room
            )));
        }
        self.mark_dirty()?;
        // Blocks in memory, each of bs bytes: the products cannot saturate.
        let pending_bytes = self
            .pending
            .len()
            .saturating_add(copies.len())
            .saturating_mul(self.bs);
        if self
            .room
            .checked_sub(self.used)
            .is_none_or(|free| need > free)
            || pending_bytes > MAX_PENDING_BYTES
        {
            self.checkpoint()?;
        }
        let revokes: Vec<u64> = revokes.into_iter().collect();
        self.guard(|w| w.write_transaction(&copies, &revokes, need))?;
        for r in &revokes {
            self.pending.remove(r);
        }
        self.pending.extend(copies);
        if self.policy == Checkpoint::Immediate {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn check_block(&self, blk: u64, what: &str) -> Result<()> {
        if blk >= self.fs_blocks {
            return Err(Error::Unsupported(format!(
                "{what} {blk} is past the filesystem's {} blocks",
                self.fs_blocks
            )));
        }
        if blk > u64::from(u32::MAX) && !self.jsb.has_incompat(INCOMPAT_64BIT) {
            return Err(Error::Unsupported(format!(
                "{what} {blk} needs 64-bit journal block numbers, which this journal (version \
                 {}) does not have",
                self.jsb.version
            )));
        }
        if self.map.contains_physical(blk) {
            return Err(Error::Unsupported(format!(
                "{what} {blk} is a block of the journal itself"
            )));
        }
        Ok(())
    }

    /// Validates the copies, keeps the last content of each block, and sets needs_recovery in
    /// a copy of the primary superblock.
    fn prepare(&self, blocks: &[(u64, Arc<[u8]>)]) -> Result<BTreeMap<u64, Arc<[u8]>>> {
        // The primary superblock is byte 1024 of block 0, or all of block 1 with 1 KiB blocks
        // (ext4 block sizes are powers of two from 1024).
        let (sb_block, sb_at) = if self.bs > SB_AT { (0, SB_AT) } else { (1, 0) };
        let mut out = BTreeMap::new();
        for (blk, data) in blocks {
            self.check_block(*blk, "journaled block")?;
            if data.len() != self.bs {
                return Err(Error::Unsupported(format!(
                    "journaled block {blk} has {} bytes, the block size is {}",
                    data.len(),
                    self.bs
                )));
            }
            let data = if *blk == sb_block {
                let mut v = data.to_vec();
                let sb = v
                    .get_mut(sb_at..)
                    .and_then(|r| r.get_mut(..SUPERBLOCK_SIZE))
                    .ok_or_else(|| {
                        Error::Unsupported(format!("block {blk} is too short for the superblock"))
                    })?;
                set_recover(sb, true)?;
                Arc::from(v)
            } else {
                data.clone()
            };
            out.insert(*blk, data);
        }
        Ok(out)
    }

    /// Steps 2 and 3 of a commit (see the module documentation): the log blocks, then the
    /// commit block.
    fn write_transaction(
        &mut self,
        copies: &BTreeMap<u64, Arc<[u8]>>,
        revokes: &[u64],
        need: u64,
    ) -> Result<()> {
        let tid = self.next_tid;
        let seed = self.jsb.csum_seed();
        let bs = self.bs;
        let start = self.head;
        if self.used == 0 {
            // A log position is below s_maxlen, a u32.
            self.jsb.start = u32::try_from(start)
                .map_err(|_| Error::Unsupported(format!("log position {start} past 32 bits")))?;
            self.jsb.sequence = tid;
            self.write_jsb()?;
        }
        let mut pos = start;
        // Revoke records first, as the kernel writes them.
        for chunk in revokes.chunks(self.records_per_revoke.get()) {
            let mut b = vec![0u8; bs];
            Header::new(BLOCKTYPE_REVOKE, tid).encode_into(&mut b);
            encode_revoke_records(&mut b, chunk, &self.jsb);
            set_tail_csum(&mut b, &self.jsb, seed);
            pos = self.write_log(pos, &b)?;
        }
        let mut crc32_sum = !0u32;
        let list: Vec<(&u64, &Arc<[u8]>)> = copies.iter().collect();
        for group in list.chunks(self.tags_per_descriptor.get()) {
            // The descriptor block, then the copies (each of bs bytes: `prepare` checked).
            let mut buf = vec![0u8; bs];
            for (_, content) in group {
                buf.extend_from_slice(content);
            }
            let (desc, data) = buf.split_at_mut(bs);
            Header::new(BLOCKTYPE_DESCRIPTOR, tid).encode_into(desc);
            let mut tags: Vec<Tag> = group
                .iter()
                .zip(data.chunks_exact_mut(bs))
                .enumerate()
                .map(|(i, ((&blk, _), copy))| {
                    let mut flags = if i > 0 { FLAG_SAME_UUID } else { 0 };
                    if let Some(head) = copy.get_mut(..4).filter(|h| **h == MAGIC.to_be_bytes()) {
                        head.fill(0);
                        flags |= FLAG_ESCAPE;
                    }
                    Tag {
                        blocknr: blk,
                        flags,
                        checksum: data_csum(copy, tid, &self.jsb),
                    }
                })
                .collect();
            if let Some(last) = tags.last_mut() {
                last.flags |= FLAG_LAST_TAG;
            }
            self.encode_tags(desc, &tags)?;
            set_tail_csum(desc, &self.jsb, seed);
            if self.jsb.csum_v1() {
                for b in buf.chunks(bs) {
                    crc32_sum = crc32_be(crc32_sum, b);
                }
            }
            pos = self.write_log(pos, &buf)?;
        }
        // The commit block reaches the disk only after everything it vouches for.
        self.flush()?;
        let mut b = vec![0u8; bs];
        Header::new(BLOCKTYPE_COMMIT, tid).encode_into(&mut b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut commit = Commit {
            chksum_type: 0,
            chksum_size: 0,
            chksum: 0,
            sec: now.as_secs(),
            nsec: now.subsec_nanos(),
        };
        if self.jsb.csum_v1() {
            commit.chksum_type = COMMIT_CRC32;
            commit.chksum_size = COMMIT_CRC32_SIZE;
            commit.chksum = crc32_sum;
        }
        commit.encode_into(&mut b);
        if self.jsb.csum_v2or3() {
            set_commit_csum(&mut b, seed);
        }
        self.head = self.write_log(pos, &b)?;
        self.flush()?;
        // `commit` made room: used + need <= room.
        self.used = self.used.saturating_add(need);
        // Transaction IDs wrap by design (see `open`).
        self.next_tid = tid.wrapping_add(1);
        Ok(())
    }

    /// Writes `tags` after the header of descriptor block `desc`, the first followed by the
    /// journal UUID (`tags_per_descriptor` of them fit before the checksum tail).
    fn encode_tags(&self, desc: &mut [u8], tags: &[Tag]) -> Result<()> {
        let tb = self.jsb.tag_bytes();
        let full =
            || Error::Unsupported(format!("{} tags overflow a descriptor block", tags.len()));
        let mut rest = desc.get_mut(HEADER_LEN..).ok_or_else(full)?;
        for (i, tag) in tags.iter().enumerate() {
            let (t, after) = std::mem::take(&mut rest)
                .split_at_mut_checked(tb)
                .ok_or_else(full)?;
            encode_tag(t, 0, tag, &self.jsb);
            rest = after;
            if i == 0 {
                let (uuid, after) = std::mem::take(&mut rest)
                    .split_at_mut_checked(UUID_LEN)
                    .ok_or_else(full)?;
                uuid.copy_from_slice(&self.jsb.uuid);
                rest = after;
            }
        }
        Ok(())
    }

    /// Writes every committed block home, then marks the log empty (s_start = 0, s_sequence =
    /// the next transaction's ID). Nothing to do when the log is empty.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.check_live()?;
        if self.used == 0 {
            return Ok(());
        }
        self.guard(|w| {
            // Runs of consecutive blocks, each one device write of at most MAX_WRITE bytes:
            // (first block, the block after the run, its bytes).
            let mut run: Option<(u64, u64, Vec<u8>)> = None;
            for (&blk, data) in &w.pending {
                match &mut run {
                    Some((_, next, buf))
                        if *next == blk && buf.len().saturating_add(data.len()) <= MAX_WRITE =>
                    {
                        buf.extend_from_slice(data);
                        // blk < fs_blocks (`check_block`).
                        *next = blk.saturating_add(1);
                    }
                    _ => {
                        if let Some((first, _, buf)) = run.take() {
                            w.write_home(first, &buf)?;
                        }
                        run = Some((blk, blk.saturating_add(1), data.to_vec()));
                    }
                }
            }
            if let Some((first, _, buf)) = run {
                w.write_home(first, &buf)?;
            }
            w.flush()?;
            w.jsb.start = 0;
            w.jsb.sequence = w.next_tid;
            w.write_jsb()?;
            w.flush()?;
            w.used = 0;
            w.pending.clear();
            Ok(())
        })
    }

    /// Writes `data` to the filesystem from block `blk` on (below fs_blocks, whose bytes fit
    /// the device: `open` checked).
    fn write_home(&self, blk: u64, data: &[u8]) -> Result<()> {
        let at = blk
            .checked_mul(wide(self.bs))
            .ok_or_else(|| Error::Unsupported(format!("block {blk} lies past 2^64 bytes")))?;
        self.dev.write_at(data, at)?;
        Ok(())
    }
}

/// Tags one descriptor block of `bs` bytes holds, and records one revoke block holds, in
/// `jsb`'s layout: the first tag is followed by the journal UUID, and the checksum tail
/// (v2/v3) ends both kinds of block. None when a block holds not even one.
fn block_capacity(bs: usize, jsb: &JournalSuperblock) -> Option<(NonZeroUsize, NonZeroUsize)> {
    let tail = if jsb.csum_v2or3() { TAIL_LEN } else { 0 };
    let tb = jsb.tag_bytes();
    let after_first = bs
        .checked_sub(HEADER_LEN)?
        .checked_sub(tail)?
        .checked_sub(tb.checked_add(UUID_LEN)?)?;
    let tags = after_first.checked_div(tb)?.checked_add(1)?;
    let records = bs
        .checked_sub(REVOKE_HEADER_LEN)?
        .checked_sub(tail)?
        .checked_div(revoke_record_len(jsb))?;
    Some((NonZeroUsize::new(tags)?, NonZeroUsize::new(records)?))
}

/// The most copies a transaction of at most `room` log blocks holds, `per` tags to a
/// descriptor block: the largest n with n + ceil(n / per) + 1 <= room. Beyond the commit
/// block, k full groups of a descriptor and its `per` copies, then one more descriptor with
/// what is left but one.
fn most_copies(room: u64, per: NonZeroUsize) -> u64 {
    let per = wide(per.get());
    let group = NonZeroU64::MIN.saturating_add(per);
    let left = room.saturating_sub(1);
    // k * per <= left: no saturation.
    (left / group)
        .saturating_mul(per)
        .saturating_add((left % group).saturating_sub(1))
}

/// Sets or clears needs_recovery in the raw ext4 superblock `sb` (1024 bytes), with its
/// checksum.
fn set_recover(sb: &mut [u8], on: bool) -> Result<()> {
    if le16(sb, 0x38) != EXT4_MAGIC {
        return Err(Error::corrupt(
            "superblock",
            0,
            0,
            "no ext4 magic where the journal writer updates needs_recovery",
        ));
    }
    ext4sb::set_incompat_raw(sb, Incompat::RECOVER, on);
    Ok(())
}

/// Recovers a filesystem that needs it onto `dev` itself, as the kernel does at a read-write
/// mount: the blocks ferry's recovery replays are written home, then the log is marked empty
/// (s_sequence one past the last transaction seen, as jbd2 does) and needs_recovery is
/// cleared, each step flushed. A crash in between leaves a journal that replays again to the
/// same result. None when there was nothing to replay (a stale needs_recovery flag over an
/// empty log is cleared). Refuses an external journal and a log with pending fast commits,
/// which the kernel would replay and ferry cannot.
pub fn replay_onto(dev: Arc<dyn BlockDevice>) -> Result<Option<ReplayInfo>> {
    let fs = Ext4::load(dev.clone())?;
    let sb = fs.superblock().clone();
    if !sb.has_incompat(Incompat::RECOVER) {
        return Ok(None);
    }
    if sb.has_compat(Compat::HAS_JOURNAL) && sb.journal_inum == 0 {
        return Err(Error::Unsupported(
            "needs_recovery is set and the journal is on another device; mount it with the \
             kernel (and its journal device) once before writing with ferry"
                .into(),
        ));
    }
    let map = if sb.has_compat(Compat::HAS_JOURNAL) {
        Some(JournalMap::from_fs(&fs)?)
    } else {
        None
    };
    let replayed = match &map {
        Some(m) => super::recover(
            dev.clone(),
            m,
            sb.block_size(),
            m.len(),
            u64::from(sb.journal_inum),
        )?,
        None => None,
    };
    let bs = sb.block_size();
    let (Some((view, info)), Some(map)) = (replayed, map) else {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
        set_recover(&mut raw, false)?;
        dev.write_at(&raw, SUPERBLOCK_OFFSET)?;
        dev.flush()?;
        return Ok(None);
    };
    if info.fast_commit_pending {
        return Err(Error::Unsupported(
            "the journal holds fast-commit records, which ferry cannot replay; mount the \
             filesystem with the kernel once before writing with ferry"
                .into(),
        ));
    }
    let blocks: Vec<u64> = view.blocks().collect();
    if let Some(b) = blocks.iter().find(|&&b| map.contains_physical(b)) {
        return Err(Error::corrupt(
            "journal",
            u64::from(sb.journal_inum),
            *b,
            "a transaction copies a block of the journal itself",
        ));
    }
    let len = usize::try_from(bs)
        .map_err(|_| Error::corrupt("superblock", 0, 0, format!("block size {bs}")))?;
    let mut buf = vec![0u8; len];
    for blk in blocks {
        // Recovery refuses copies of blocks past the device.
        let at = blk.checked_mul(u64::from(bs)).ok_or_else(|| {
            Error::corrupt(
                "journal",
                u64::from(sb.journal_inum),
                blk,
                "block past 2^64 bytes",
            )
        })?;
        view.read_at(&mut buf, at)?;
        dev.write_at(&buf, at)?;
    }
    dev.flush()?;
    let at = map.locate(0)?;
    let mut raw = vec![0u8; len];
    dev.read_at(&mut raw, at)?;
    let mut jsb = JournalSuperblock::parse(&raw, at, sb.block_size(), map.len())?;
    jsb.start = 0;
    // One past the end, skipping one as jbd2 does; IDs wrap by design.
    jsb.sequence = info.end_transaction.wrapping_add(1);
    jsb.encode_into(&mut raw);
    dev.write_at(&raw, at)?;
    dev.flush()?;
    // The superblock as replayed (it may have been one of the blocks written home).
    let mut raw = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
    set_recover(&mut raw, false)?;
    dev.write_at(&raw, SUPERBLOCK_OFFSET)?;
    dev.flush()?;
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::super::superblock::{
        BLOCKTYPE_SUPERBLOCK_V2, COMPAT_CHECKSUM, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3,
        INCOMPAT_FAST_COMMIT,
    };
    use super::*;
    use crate::block::{check_range, Describe, Extent, ExtentKind, LayerInfo};
    use parking_lot::Mutex;

    const BS: usize = 1024;
    const BS32: u32 = 1024;
    const BS64: u64 = wide(BS);
    const FS_BLOCKS: u64 = 4096;
    const JOURNAL_AT: u64 = 2048;
    const JOURNAL_LEN: u64 = 1536;

    /// The byte index of block `blk` in a disk in memory.
    fn idx(blk: u64) -> usize {
        usize::try_from(blk).unwrap().checked_mul(BS).unwrap()
    }

    /// A writable disk in memory.
    struct Disk(Mutex<Vec<u8>>);

    impl BlockDevice for Disk {
        fn len(&self) -> u64 {
            wide(self.0.lock().len())
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> crate::block::Result<()> {
            check_range(off, wide(buf.len()), self.len())?;
            let o = usize::try_from(off).unwrap();
            buf.copy_from_slice(&self.0.lock()[o..][..buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> crate::block::Result<()> {
            check_range(off, wide(buf.len()), self.len())?;
            let o = usize::try_from(off).unwrap();
            self.0.lock()[o..][..buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn extents(&self, off: u64, len: u64) -> crate::block::Result<Vec<Extent>> {
            Ok(vec![Extent::new(off, len, ExtentKind::Data)])
        }
    }

    impl Describe for Disk {
        fn info(&self) -> crate::block::Result<LayerInfo> {
            Ok(LayerInfo::default())
        }
    }

    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..][..4].copy_from_slice(&v.to_le_bytes());
    }

    /// An ext4 superblock (1 KiB blocks, one group, a journal, maybe metadata_csum) and a version 2
    /// journal with `compat`/`incompat` features contiguous at JOURNAL_AT.
    fn setup(compat: u32, incompat: u32) -> (Arc<Disk>, Superblock, JournalMap) {
        setup_with(compat, incompat, false)
    }

    fn setup_with(
        compat: u32,
        incompat: u32,
        metadata_csum: bool,
    ) -> (Arc<Disk>, Superblock, JournalMap) {
        let mut disk = vec![0u8; idx(FS_BLOCKS)];
        let sb = &mut disk[1024..2048];
        put(sb, 0x0, 1024);
        put(sb, 0x4, u32::try_from(FS_BLOCKS).unwrap());
        put(sb, 0x14, 1);
        put(sb, 0x20, 8192);
        put(sb, 0x28, 1024);
        put(sb, 0x4c, 1);
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
        put(sb, 0x5c, Compat::HAS_JOURNAL.bits());
        if metadata_csum {
            put(sb, 0x64, ext4sb::RoCompat::METADATA_CSUM.bits());
            sb[0x175] = 1;
        }
        put(sb, 0xe0, 8);
        ext4sb::refresh_checksum_raw(sb);
        let sb = Superblock::parse(sb).unwrap();
        let j = &mut disk[idx(JOURNAL_AT)..][..BS];
        let be = |b: &mut [u8], at: usize, v: u32| b[at..][..4].copy_from_slice(&v.to_be_bytes());
        be(j, 0, MAGIC);
        be(j, 4, BLOCKTYPE_SUPERBLOCK_V2);
        be(j, 0xc, BS32);
        be(j, 0x10, u32::try_from(JOURNAL_LEN).unwrap());
        be(j, 0x14, 1);
        be(j, 0x18, 41);
        be(j, 0x24, compat);
        j[0x30..0x40].copy_from_slice(&[0x5a; 16]);
        // Parsed without features, then encoded with them (and their checksum).
        let mut jsb = JournalSuperblock::parse(j, 0, BS32, JOURNAL_LEN).unwrap();
        jsb.feature_incompat = incompat;
        if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0 {
            j[0x50] = 4;
        }
        jsb.encode_into(j);
        let map = JournalMap::contiguous(JOURNAL_AT, JOURNAL_LEN, BS32);
        (Arc::new(Disk(Mutex::new(disk))), sb, map)
    }

    fn block(fill: u8, blk: u64) -> Arc<[u8]> {
        let mut v = vec![fill; BS];
        v[8..16].copy_from_slice(&blk.to_le_bytes());
        v.into()
    }

    fn home(d: &Disk, blk: u64) -> Vec<u8> {
        d.0.lock()[idx(blk)..][..BS].to_vec()
    }

    fn replayed(d: &Arc<Disk>, map: &JournalMap) -> Option<(ReplayView, ReplayInfo)> {
        replay_map(d.clone(), map).unwrap()
    }

    fn read(v: &ReplayView, blk: u64) -> Vec<u8> {
        let mut b = vec![0u8; BS];
        v.read_at(&mut b, blk.checked_mul(BS64).unwrap()).unwrap();
        b
    }

    const VARIANTS: &[(u32, u32)] = &[
        (0, 0),
        (0, INCOMPAT_64BIT),
        (0, INCOMPAT_CSUM_V2),
        (0, INCOMPAT_CSUM_V2 | INCOMPAT_64BIT),
        (0, INCOMPAT_CSUM_V3),
        (0, INCOMPAT_CSUM_V3 | INCOMPAT_64BIT),
        (COMPAT_CHECKSUM, 0),
        (0, INCOMPAT_CSUM_V3 | INCOMPAT_FAST_COMMIT),
    ];

    #[test]
    fn deferred_transactions_replay_as_committed() {
        for &(compat, incompat) in VARIANTS {
            let (d, sb, map) = setup(compat, incompat);
            let mut w = JournalWriter::open(d.clone(), &sb, map.clone()).unwrap();
            w.set_checkpoint(Checkpoint::Deferred);
            assert_eq!(w.next_transaction(), 42);
            // 150 blocks: three descriptor blocks; one copy starts with the jbd2 magic.
            let mut t1: Vec<(u64, Arc<[u8]>)> = (100..250).map(|b| (b, block(1, b))).collect();
            let mut magic = vec![7u8; BS];
            magic[..4].copy_from_slice(&MAGIC.to_be_bytes());
            t1[5].1 = magic.clone().into();
            w.commit(&t1, &[]).unwrap();
            // Second transaction: rewrites 101, revokes 102 and 103.
            w.commit(&[(101, block(2, 101))], &[102, 103]).unwrap();
            // An uncommitted third transaction's home blocks are untouched.
            assert!(
                home(&d, 100).iter().all(|&b| b == 0),
                "{compat:#x}/{incompat:#x}"
            );
            let (v, info) = replayed(&d, &map).expect("a log to replay");
            assert_eq!(info.transactions(), 2, "{compat:#x}/{incompat:#x}");
            assert_eq!(info.first_transaction, 42);
            assert_eq!(read(&v, 105), magic);
            assert_eq!(read(&v, 100), &*block(1, 100));
            assert_eq!(read(&v, 101), &*block(2, 101));
            assert!(v.copy_of(102).is_none() && v.copy_of(103).is_none());
            assert_eq!(read(&v, 249), &*block(1, 249));
            assert_eq!(w.pending_block(101).as_deref(), Some(&*block(2, 101)));
            assert!(w.pending_block(102).is_none());
            // The clean close: home blocks written, log empty, needs_recovery clear.
            w.mark_clean().unwrap();
            assert!(replayed(&d, &map).is_none());
            assert_eq!(home(&d, 105), magic);
            assert_eq!(home(&d, 101), &*block(2, 101));
            assert!(home(&d, 102).iter().all(|&b| b == 0));
            let sb = Superblock::parse(&home(&d, 1)).unwrap();
            assert!(!sb.has_incompat(Incompat::RECOVER));
        }
    }

    #[test]
    fn immediate_checkpoints_leave_an_empty_log_and_a_dirty_flag() {
        // A journal without checksums on a metadata_csum filesystem gets csum v3.
        let (d, sb, map) = setup_with(0, INCOMPAT_CSUM_V2, true);
        let mut w = JournalWriter::open(d.clone(), &sb, map.clone()).unwrap();
        let j = w.journal_superblock();
        assert_eq!(
            (j.feature_compat, j.feature_incompat),
            (0, INCOMPAT_CSUM_V3 | INCOMPAT_REVOKE)
        );
        w.commit(&[(300, block(3, 300))], &[]).unwrap();
        assert_eq!(w.log_used(), 0);
        assert_eq!(home(&d, 300), &*block(3, 300));
        assert!(replayed(&d, &map).is_none());
        let raw = home(&d, 1);
        let sb2 = Superblock::parse(&raw).unwrap();
        assert!(sb2.has_incompat(Incompat::RECOVER));
        assert!(crate::fs::ext4::csum::superblock_ok(&raw));
        // The journal superblock says the next transaction.
        let j =
            JournalSuperblock::parse(&home(&d, JOURNAL_AT), JOURNAL_AT * BS64, BS32, JOURNAL_LEN)
                .unwrap();
        assert_eq!((j.start, j.sequence), (0, 43));
        // A copy of the superblock's block gets needs_recovery set, checksum refreshed.
        let mut sbcopy = raw.clone();
        set_recover(&mut sbcopy, false).unwrap();
        sbcopy[0x10] ^= 1;
        w.set_checkpoint(Checkpoint::Deferred);
        w.commit(&[(1, sbcopy.clone().into())], &[]).unwrap();
        let (v, _) = replayed(&d, &map).unwrap();
        let got = read(&v, 1);
        assert!(Superblock::parse(&got)
            .unwrap()
            .has_incompat(Incompat::RECOVER));
        assert!(crate::fs::ext4::csum::superblock_ok(&got));
        assert_eq!(got[0x10], sbcopy[0x10]);
    }

    #[test]
    fn the_log_wraps_and_full_logs_checkpoint() {
        let (d, sb, map) = setup(0, INCOMPAT_CSUM_V3 | INCOMPAT_64BIT);
        let mut w = JournalWriter::open(d.clone(), &sb, map.clone()).unwrap();
        w.set_checkpoint(Checkpoint::Deferred);
        let cap = w.log_capacity();
        // Transactions of 100 blocks (102 log blocks each): the log fills, is checkpointed
        // and wraps; each round's last transactions must replay.
        for round in 0..25u8 {
            let t: Vec<(u64, Arc<[u8]>)> = (0..100)
                .map(|i| {
                    let b = 400 + (u64::from(round) * 37 + i) % 1500;
                    (b, block(round + 1, b))
                })
                .collect();
            w.commit(&t, &[]).unwrap();
            assert!(w.log_used() < cap);
            let (v, _) = replayed(&d, &map).unwrap();
            for (b, data) in &t {
                assert_eq!(&read(&v, *b), &**data, "round {round}, block {b}");
            }
        }
        // A transaction as large as allowed, and one block more.
        let max = w.max_transaction_blocks();
        let t: Vec<(u64, Arc<[u8]>)> = (0..max).map(|i| (10 + i, block(9, 10 + i))).collect();
        w.commit(&t, &[]).unwrap();
        let (v, _) = replayed(&d, &map).unwrap();
        assert_eq!(read(&v, 10 + max - 1), &*block(9, 10 + max - 1));
        let before = d.0.lock().clone();
        let t: Vec<(u64, Arc<[u8]>)> = (0..=max).map(|i| (10 + i, block(8, 10 + i))).collect();
        let e = w.commit(&t, &[]).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        assert!(
            *d.0.lock() == before,
            "a refused transaction wrote something"
        );
    }

    #[test]
    fn most_copies_is_the_largest_transaction_that_fits() {
        for per in 1..12usize {
            for room in 0..200u64 {
                let fits = |n: u64| n + n.div_ceil(wide(per)) < room;
                let n = most_copies(room, NonZeroUsize::new(per).unwrap());
                assert!(
                    (n == 0 || fits(n)) && !fits(n + 1),
                    "room {room}, {per} tags per descriptor: {n}"
                );
            }
        }
    }

    /// A damaged journal inode may map two journal blocks to one filesystem block. Every block
    /// of every run is still the journal's: the index looked only at the run starting last at
    /// or before a block, which an earlier, longer run can cover, and let the writer journal
    /// (and checkpoint over) a block of its own log.
    #[test]
    fn overlapping_journal_runs_are_all_the_journal() {
        let mut map = JournalMap::contiguous(JOURNAL_AT, JOURNAL_LEN, BS32);
        map.runs.push((JOURNAL_LEN, JOURNAL_AT + 10, 5));
        map.len += 5;
        map.index();
        assert!((JOURNAL_AT..JOURNAL_AT + JOURNAL_LEN).all(|b| map.contains_physical(b)));
        assert!(!map.contains_physical(JOURNAL_AT - 1));
        assert!(!map.contains_physical(JOURNAL_AT + JOURNAL_LEN));
        let (d, sb, _) = setup(0, 0);
        let mut w = JournalWriter::open(d, &sb, map).unwrap();
        let e = w.commit(&[(JOURNAL_AT + 100, block(1, 0))], &[]);
        assert!(e.unwrap_err().to_string().contains("journal itself"));
    }

    /// A superblock claiming more blocks than the device holds is refused at open. Past 2^64
    /// bytes the home write of a block wrapped around to the device's start: block 2^54 + 5
    /// of 1 KiB landed on block 5.
    #[test]
    fn a_filesystem_larger_than_its_device_is_refused() {
        let (d, mut sb, map) = setup(0, INCOMPAT_64BIT);
        let before = home(&d, 5);
        for (blocks, big) in [(FS_BLOCKS + 1, 10), (1 << 60, (1 << 54) + 5)] {
            sb.blocks_count = blocks;
            let r = JournalWriter::open(d.clone(), &sb, map.clone())
                .and_then(|mut w| w.commit(&[(big, block(7, big))], &[]));
            let e = r.unwrap_err().to_string();
            assert!(e.contains("smaller than the filesystem"), "{e}");
        }
        assert_eq!(home(&d, 5), before);
    }

    #[test]
    fn bad_requests_are_refused() {
        let (d, sb, map) = setup(0, 0);
        let mut w = JournalWriter::open(d.clone(), &sb, map).unwrap();
        let e = |r: Result<()>| r.unwrap_err().to_string();
        assert!(e(w.commit(&[(FS_BLOCKS, block(1, 0))], &[])).contains("past"));
        assert!(e(w.commit(&[(JOURNAL_AT + 3, block(1, 0))], &[])).contains("journal itself"));
        assert!(e(w.commit(&[(5, vec![0u8; 10].into())], &[])).contains("bytes"));
        assert!(e(w.commit(&[], &[FS_BLOCKS + 1])).contains("past"));
        // A journal with transactions in it must be replayed first.
        let (d, sb, map) = setup(0, 0);
        let mut w = JournalWriter::open(d.clone(), &sb, map.clone()).unwrap();
        w.set_checkpoint(Checkpoint::Deferred);
        w.commit(&[(5, block(1, 5))], &[]).unwrap();
        let e = JournalWriter::open(d.clone(), &sb, map.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("replay"), "{e}");
    }

    /// The fuzz target's loop on stable: mutated journal superblocks (bytes of the header,
    /// geometry and features flipped, the checksum refreshed) under commit sequences. Nothing
    /// panics, and a log the writer accepted replays to what it committed.
    #[test]
    fn mutated_journal_superblocks() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut opened = 0;
        for _ in 0..1500 {
            let (d, sb, map) = setup(0, INCOMPAT_CSUM_V3);
            {
                let mut disk = d.0.lock();
                let j = &mut disk[idx(JOURNAL_AT)..][..BS];
                for _ in 0..1 + next() % 4 {
                    let at = usize::try_from(next() % 0x60).unwrap();
                    j[at] ^= 1 << (next() % 8);
                }
                let mut plain = j.to_vec();
                plain[0x28..0x2c].fill(0);
                if let Ok(mut s) = JournalSuperblock::parse(&plain, 0, BS32, JOURNAL_LEN) {
                    s.feature_incompat = u32::from_be_bytes([j[0x28], j[0x29], j[0x2a], j[0x2b]]);
                    s.encode_into(j);
                }
            }
            let Ok(mut w) = JournalWriter::open(d.clone(), &sb, map.clone()) else {
                continue;
            };
            opened += 1;
            w.set_checkpoint(Checkpoint::Deferred);
            for round in 0..6u64 {
                let n = next() % 300;
                let t: Vec<(u64, Arc<[u8]>)> = (0..n)
                    .map(|i| {
                        let b = 10 + (round * 131 + i * 3) % 2000;
                        (b, block(round.to_le_bytes()[0], b))
                    })
                    .collect();
                let revoked = [10 + next() % 2000];
                if w.commit(&t, &revoked).is_ok() && w.log_used() > 0 {
                    let (v, _) = replayed(&d, &map).expect("the writer's log does not replay");
                    for (b, data) in &t {
                        assert_eq!(&read(&v, *b), &**data);
                    }
                }
                if next() % 5 == 0 {
                    let _ = w.mark_clean();
                }
            }
        }
        assert!(opened > 100, "only {opened} mutants opened");
    }
}
