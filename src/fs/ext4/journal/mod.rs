//! jbd2 journal replay in memory (Documentation/filesystems/ext4/journal.rst; the kernel's
//! fs/jbd2/recovery.c is the model). An image taken from a running guest has needs_recovery
//! set: the latest metadata (and, with data=journal, data) may sit only in the journal. Ext4
//! then reads through a `ReplayView` in which every block the kernel's recovery would write
//! reads as its copy in the log. Nothing is written to the source. Writing through the
//! journal (transactions, checkpoints, recovery onto a writable device) is `writer`.
//!
//! Decisions, each mirroring what the kernel does when it mounts the same image:
//! - Only an internal journal (s_journal_inum) is replayed. An external journal device is not
//!   part of the image: the tree is shown without replay, with a warning (as `noload` would).
//! - A journal the kernel refuses to load or recover (bad superblock, bad checksums it treats
//!   as corruption, unreadable log blocks) fails the open with an error naming the journal
//!   block; `OpenOptions { replay_journal: false }` reads the tree as it is on disk. A log that
//!   merely ends early (missing commit, failed commit checksum, stale blocks) replays the
//!   transactions before that point, as the kernel does.
//! - Fast commits (JBD2 FAST_COMMIT) are ext4-level logical records replayed by ext4, not
//!   block copies: ferry replays the regular transactions and, when the fast-commit area holds
//!   records for the next transaction, says so in a warning and in `ReplayInfo`.
//! - After recovery a read-write mount also processes the orphan list (s_last_orphan and the
//!   orphan file): unlinked inodes are freed and inodes with links are truncated to i_size.
//!   ferry does not: unlinked orphans are in no directory, so the tree is the same; a file
//!   caught in a truncate shows the same bytes (reads stop at i_size) but may report more
//!   st_blocks, and keeps its mtime/ctime where the kernel stamps the mount time. The kernel
//!   skips this cleanup too when the device is read-only.

pub mod block;
pub mod recovery;
pub mod superblock;
pub mod view;
pub mod writer;

use super::inode::{Inode, FL_ENCRYPT};
use super::superblock::{Compat, Incompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use super::{Ext4, Run};
use crate::block::BlockDevice;
use crate::bytes::{le16, le32};
use crate::fs::{Error, FileType, Result};
use recovery::{LogSource, Recovery};
use std::cell::Cell;
use std::sync::Arc;
use superblock::{JournalSuperblock, INCOMPAT_FAST_COMMIT};
use view::ReplayView;

/// ext4 superblock fields that locate the journal (super.rst).
const S_JOURNAL_UUID: usize = 0xd0;
const S_JOURNAL_INUM: usize = 0xe0;
const S_JOURNAL_DEV: usize = 0xe4;
/// The first tag of a fast-commit area that belongs to the next transaction
/// (EXT4_FC_TAG_HEAD, followed by le32 features and le32 transaction ID).
const FC_TAG_HEAD: u16 = 9;

/// What journal replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayInfo {
    /// The transactions replayed are `first_transaction..end_transaction` (IDs wrap at 2^32).
    pub first_transaction: u32,
    pub end_transaction: u32,
    /// Tagged block copies applied (a block copied by several transactions counts each time).
    pub blocks_replayed: u64,
    /// Distinct filesystem blocks that now read from the log.
    pub blocks_mapped: usize,
    pub revoke_records: u64,
    /// Block copies skipped because a revoke record cancels them.
    pub revoke_hits: u64,
    /// The fast-commit area holds updates after the last transaction, which ferry does not
    /// apply.
    pub fast_commit_pending: bool,
}

impl ReplayInfo {
    pub fn transactions(&self) -> u32 {
        self.end_transaction.wrapping_sub(self.first_transaction)
    }
}

/// Adds what the user can do to an error that stops replay.
fn with_hint(e: Error) -> Error {
    const HINT: &str = "; the kernel would not mount this without `noload` either: open with \
                        journal replay disabled to read the tree as it is on disk";
    match e {
        Error::Corrupt(mut c) => {
            c.detail.push_str(HINT);
            Error::Corrupt(c)
        }
        Error::Unsupported(s) => Error::Unsupported(s + HINT),
        e => e,
    }
}

/// Journal blocks of an inode journal, found through its extent tree or block map; the last
/// run found is kept, as the log is read in order.
struct InodeLog<'a> {
    fs: &'a Ext4,
    inode: &'a Inode,
    /// (first logical block, first physical block, length) of the last data run.
    run: Cell<Option<(u64, u64, u64)>>,
}

impl LogSource for InodeLog<'_> {
    fn locate(&self, jblk: u64) -> Result<u64> {
        let ino = self.inode.ino;
        let pblk = match self.run.get() {
            // Inside the cached run, whose blocks the mapping gave (no overflow).
            Some((l, p, n)) if jblk.checked_sub(l).is_some_and(|d| d < n) => {
                p.saturating_add(jblk.saturating_sub(l))
            }
            _ => match self.fs.map(self.inode, jblk)? {
                Run::Data { pblk, len } => {
                    self.run.set(Some((jblk, pblk, len)));
                    pblk
                }
                Run::Zero(_) | Run::Hole(_) => {
                    return Err(Error::corrupt(
                        "journal inode",
                        ino,
                        0,
                        format!("journal block {jblk} is not mapped"),
                    ))
                }
            },
        };
        self.fs.block_offset(pblk, 1, "journal block", ino)
    }
}

/// A journal that fills a device from its first byte, for fuzzing and tests.
struct WholeDevice(u64);

impl LogSource for WholeDevice {
    fn locate(&self, jblk: u64) -> Result<u64> {
        // jblk < total_len <= 2^32 and a u32 block size: no saturation (and a position past the
        // device fails the read).
        Ok(jblk.saturating_mul(self.0))
    }
}

/// Replays the internal journal of `fs` if its superblock says it needs recovery. None when
/// there is nothing to replay (or it cannot be, for an external journal).
pub(crate) fn replay(fs: &Ext4) -> Result<Option<(Arc<dyn BlockDevice>, ReplayInfo)>> {
    let sb = fs.superblock();
    if !sb.has_incompat(Incompat::RECOVER) {
        return Ok(None);
    }
    if !sb.has_compat(Compat::HAS_JOURNAL) {
        log::warn!("ext4: needs_recovery is set but there is no journal; nothing to replay");
        return Ok(None);
    }
    let mut raw = vec![0u8; SUPERBLOCK_SIZE];
    fs.dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
    let inum = le32(&raw, S_JOURNAL_INUM);
    let jdev = le32(&raw, S_JOURNAL_DEV);
    if inum == 0 {
        let uuid = &raw[S_JOURNAL_UUID..S_JOURNAL_UUID + 16];
        log::warn!(
            "ext4: needs_recovery is set but the journal is on another device (device \
             {jdev:#x}, UUID {}); ferry cannot replay it and shows the tree as it is on disk, \
             as `mount -o noload` would",
            uuid.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        return Ok(None);
    }
    if jdev != 0 {
        return Err(Error::corrupt(
            "superblock",
            0,
            0,
            format!("both a journal inode ({inum}) and a journal device ({jdev:#x})"),
        ));
    }
    let inode = fs.inode(u64::from(inum)).map_err(with_hint)?;
    let bad_inode = |d: &str| with_hint(Error::corrupt("journal inode", inode.ino, 0, d));
    if inode.links == 0 {
        return Err(bad_inode("deleted (no links)"));
    }
    if inode.kind != FileType::RegularFile || inode.flags & FL_ENCRYPT != 0 {
        return Err(bad_inode("not a regular file"));
    }
    let bs = fs.block_size();
    // The block size is nonzero (the superblock's check).
    let total_len = inode
        .size
        .checked_div(u64::from(bs))
        .unwrap_or(0)
        .min(u64::from(u32::MAX));
    let src = InodeLog {
        fs,
        inode: &inode,
        run: Cell::new(None),
    };
    let view = recover(fs.dev.clone(), &src, bs, total_len, inode.ino).map_err(with_hint)?;
    Ok(view.map(|(v, i)| {
        let v: Arc<dyn BlockDevice> = Arc::new(v);
        (v, i)
    }))
}

/// Replays a journal that fills `dev` from byte 0 (blocks of `block_size` bytes) into a view
/// of `dev` itself. For fuzzing the recovery code without a filesystem around it.
pub fn replay_device(
    dev: Arc<dyn BlockDevice>,
    block_size: u32,
) -> Result<Option<(ReplayView, ReplayInfo)>> {
    // A zero block size (only a fuzzer's) gives an empty journal, which fails to parse.
    let total_len = dev
        .len()
        .checked_div(u64::from(block_size))
        .unwrap_or(0)
        .min(u64::from(u32::MAX));
    recover(
        dev,
        &WholeDevice(u64::from(block_size)),
        block_size,
        total_len,
        0,
    )
}

fn recover(
    dev: Arc<dyn BlockDevice>,
    src: &dyn LogSource,
    bs: u32,
    total_len: u64,
    ino: u64,
) -> Result<Option<(ReplayView, ReplayInfo)>> {
    let len = usize::try_from(bs)
        .map_err(|_| Error::corrupt("journal superblock", ino, 0, format!("block size {bs}")))?;
    let mut b = vec![0u8; len];
    let at = src.locate(0)?;
    dev.read_at(&mut b, at)?;
    let jsb = JournalSuperblock::parse(&b, at, bs, total_len)?;
    if jsb.start == 0 {
        log::info!("ext4: needs_recovery is set but the journal is clean; nothing to replay");
        return Ok(None);
    }
    let total_len = total_len.min(u64::from(jsb.maxlen));
    let mut r = Recovery::new(dev.as_ref(), src, &jsb, ino, total_len)?;
    let out = r.run()?;
    let map = std::mem::take(&mut r.map);
    let mut info = ReplayInfo {
        first_transaction: out.start_transaction,
        end_transaction: out.end_transaction,
        blocks_replayed: out.replays,
        blocks_mapped: map.len(),
        revoke_records: out.revokes,
        revoke_hits: out.revoke_hits,
        fast_commit_pending: false,
    };
    if jsb.has_incompat(INCOMPAT_FAST_COMMIT) {
        info.fast_commit_pending =
            fast_commit_pending(dev.as_ref(), src, &jsb, total_len, info.end_transaction);
        if info.fast_commit_pending {
            log::warn!(
                "ext4: the journal's fast-commit area holds updates made after transaction \
                 {}; ferry does not replay fast commits, so the tree is shown as of the last \
                 full commit",
                info.end_transaction.wrapping_sub(1)
            );
        }
    }
    log::info!(
        "ext4: replayed {} journal transactions ({}..{}): {} blocks, {} revoked",
        info.transactions(),
        info.first_transaction,
        info.end_transaction,
        info.blocks_mapped,
        info.revoke_hits
    );
    Ok(Some((ReplayView::new(dev, bs, map), info)))
}

/// Whether the first fast-commit block starts with a head tag for transaction `tid`, the one
/// after the last replayed (what ext4_fc_replay_scan looks for before replaying anything).
fn fast_commit_pending(
    dev: &dyn BlockDevice,
    src: &dyn LogSource,
    jsb: &JournalSuperblock,
    total_len: u64,
    tid: u32,
) -> bool {
    let first = u64::from(jsb.last()) + 1;
    if first >= total_len {
        return false;
    }
    let Ok(len) = usize::try_from(jsb.block_size) else {
        return false;
    };
    let mut b = vec![0u8; len];
    let read = src
        .locate(first)
        .and_then(|at| dev.read_at(&mut b, at).map_err(Error::from));
    if read.is_err() {
        return false;
    }
    le16(&b, 0) == FC_TAG_HEAD && le16(&b, 2) >= 8 && le32(&b, 8) == tid
}

#[cfg(test)]
mod tests {
    use super::block::{
        BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, FLAG_ESCAPE, FLAG_LAST_TAG,
        FLAG_SAME_UUID, MAGIC,
    };
    use super::*;
    use crate::block::mem::MemDevice;
    use crate::bytes::wide;

    const BS: usize = 1024;
    const BS32: u32 = 1024;
    const BS64: u64 = wide(BS);
    /// Journal blocks.
    const LEN: u32 = 1024;

    /// Stores big-endian `v` at byte `at` of `b`.
    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..][..4].copy_from_slice(&v.to_be_bytes());
    }

    /// The low byte of `x`: what the log copies of block `x` are filled with.
    fn low(x: u32) -> u8 {
        x.to_le_bytes()[0]
    }

    /// A journal of 1 KiB blocks without checksums (v2 superblock, 32-bit tags) on a 2 MiB
    /// device: the log is blocks 1..1024, the filesystem blocks 1024.. are the device's rest.
    struct Log {
        disk: Vec<u8>,
        /// The next log block written.
        at: u32,
    }

    impl Log {
        fn new(sequence: u32, start: u32) -> Self {
            let mut disk = vec![0u8; 2 * BS * 1024];
            put(&mut disk, 0, MAGIC);
            put(&mut disk, 4, superblock::BLOCKTYPE_SUPERBLOCK_V2);
            put(&mut disk, 0xc, BS32);
            put(&mut disk, 0x10, LEN);
            put(&mut disk, 0x14, 1);
            put(&mut disk, 0x18, sequence);
            put(&mut disk, 0x1c, start);
            put(&mut disk, 0x28, superblock::INCOMPAT_REVOKE);
            Log { disk, at: start }
        }

        /// The next log block (after the log's last comes its first, block 1).
        fn next(&mut self) -> &mut [u8] {
            let at = usize::try_from(self.at).unwrap();
            self.at = self.at.checked_add(1).filter(|&a| a < LEN).unwrap_or(1);
            self.disk.chunks_exact_mut(BS).nth(at).unwrap()
        }

        fn block(&mut self, kind: u32, seq: u32) -> &mut [u8] {
            let b = self.next();
            b.fill(0);
            put(b, 0, MAGIC);
            put(b, 4, kind);
            put(b, 8, seq);
            b
        }

        /// A descriptor for `blocks` followed by their copies (each filled with its tag's
        /// block number as a byte; `escape` zeroes the first word and flags it).
        fn write(&mut self, seq: u32, blocks: &[u32], escape: bool) {
            let d = self.block(BLOCKTYPE_DESCRIPTOR, seq);
            let mut tags = &mut d[12..];
            for (i, &b) in blocks.iter().enumerate() {
                let mut flags = if i > 0 { FLAG_SAME_UUID } else { 0 };
                if blocks.len().checked_sub(1) == Some(i) {
                    flags |= FLAG_LAST_TAG;
                }
                if escape {
                    flags |= FLAG_ESCAPE;
                }
                // An 8-byte tag, the first followed by the 16-byte UUID.
                let (t, rest) = std::mem::take(&mut tags).split_at_mut(if i == 0 { 24 } else { 8 });
                t[..4].copy_from_slice(&b.to_be_bytes());
                t[6..8].copy_from_slice(&flags.to_be_bytes());
                tags = rest;
            }
            for &b in blocks {
                let copy = self.next();
                copy.fill(low(b));
                if escape {
                    copy[..4].fill(0);
                }
            }
        }

        fn revoke(&mut self, seq: u32, blocks: &[u32]) {
            let r = self.block(BLOCKTYPE_REVOKE, seq);
            let (head, records) = r.split_at_mut(16);
            let mut count = 16u32;
            for (rec, b) in records.chunks_exact_mut(4).zip(blocks) {
                rec.copy_from_slice(&b.to_be_bytes());
                count = count.checked_add(4).unwrap();
            }
            put(head, 12, count);
        }

        fn commit(&mut self, seq: u32) {
            self.block(BLOCKTYPE_COMMIT, seq);
        }

        fn replay(self) -> Result<Option<(ReplayView, ReplayInfo)>> {
            replay_device(Arc::new(MemDevice(self.disk)), BS32)
        }
    }

    fn first_byte(v: &ReplayView, blk: u64) -> Option<u8> {
        v.copy_of(blk)?;
        let mut b = [0u8; 8];
        v.read_at(&mut b, blk.checked_mul(BS64).unwrap()).unwrap();
        Some(b[7])
    }

    #[test]
    fn revokes_apply_to_their_own_and_earlier_transactions() {
        let mut log = Log::new(10, 1);
        log.write(10, &[1100, 1101, 1102], false);
        log.commit(10);
        // Revokes 1100 (written in 10) and 1103 (written later in this same transaction).
        log.revoke(11, &[1100, 1103]);
        log.write(11, &[1103, 1104], false);
        log.commit(11);
        // Written again after the revoke: this copy stands.
        log.write(12, &[1103], false);
        log.commit(12);
        // Not committed: ignored.
        log.write(13, &[1105], false);
        let (v, info) = log.replay().unwrap().unwrap();
        assert_eq!((info.first_transaction, info.end_transaction), (10, 13));
        assert_eq!((info.blocks_replayed, info.revoke_hits), (4, 2));
        let got: Vec<_> = (1100..1106).map(|b| first_byte(&v, b)).collect();
        let b = |x: u32| Some(low(x));
        assert_eq!(got, [None, b(1101), b(1102), b(1103), b(1104), None]);
    }

    #[test]
    fn escaped_copies_and_wrapped_ids_and_log() {
        // Starts 3 blocks before the log's end with the last transaction IDs before 2^32.
        let mut log = Log::new(u32::MAX - 1, LEN - 3);
        log.write(u32::MAX - 1, &[1200, 1201], true);
        log.commit(u32::MAX - 1);
        log.write(u32::MAX, &[1202], false);
        log.commit(u32::MAX);
        log.write(0, &[1203], false);
        log.commit(0);
        let (v, info) = log.replay().unwrap().unwrap();
        assert_eq!(info.transactions(), 3);
        let mut b = [0u8; 6];
        v.read_at(&mut b, 1201 * BS64).unwrap();
        assert_eq!(b, [0xc0, 0x3b, 0x39, 0x98, low(1201), low(1201)]);
        assert_eq!(first_byte(&v, 1203), Some(low(1203)));
    }

    #[test]
    fn a_log_that_cycles_ends() {
        // Every log block a revoke block of the first transaction: the kernel would walk
        // around this log forever.
        let mut log = Log::new(3, 1);
        for _ in 1..LEN {
            log.revoke(3, &[1100]);
        }
        let (_, info) = log.replay().unwrap().unwrap();
        assert_eq!(info.transactions(), 0);
        // A descriptor in the log's last block: its copies continue at the log's start.
        let mut log = Log::new(3, LEN - 1);
        let tags: Vec<u32> = (1100..1160).collect();
        log.write(3, &tags, false);
        log.commit(3);
        let (v, info) = log.replay().unwrap().unwrap();
        assert_eq!(info.blocks_mapped, 60);
        assert_eq!(first_byte(&v, 1159), Some(low(1159)));
        // Copies of blocks past the device: refused, as the kernel's write would fail.
        let mut log = Log::new(3, 1);
        log.write(3, &[5000], false);
        log.commit(3);
        let e = log.replay().err().unwrap().to_string();
        assert!(e.contains("past the device"), "{e}");
    }
}
