//! jbd2 journal replay in memory (Documentation/filesystems/ext4/journal.rst; the kernel's
//! fs/jbd2/recovery.c is the model). An image taken from a running guest has needs_recovery
//! set: the latest metadata (and, with data=journal, data) may sit only in the journal. Ext4
//! then reads through a `ReplayView` in which every block the kernel's recovery would write
//! reads as its copy in the log. Nothing is written to the source.
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

use super::inode::{Inode, FL_ENCRYPT};
use super::superblock::{COMPAT_HAS_JOURNAL, INCOMPAT_RECOVER, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use super::{le16, le32, Ext4, Run};
use crate::block::BlockDevice;
use crate::fs::{FileType, FsError, Result};
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
fn with_hint(e: FsError) -> FsError {
    const HINT: &str = "; the kernel would not mount this without `noload` either: open with \
                        journal replay disabled to read the tree as it is on disk";
    match e {
        FsError::Corrupt {
            what,
            ino,
            block,
            detail,
        } => FsError::Corrupt {
            what,
            ino,
            block,
            detail: detail + HINT,
        },
        FsError::Unsupported(s) => FsError::Unsupported(s + HINT),
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
            Some((l, p, n)) if jblk >= l && jblk - l < n => p + (jblk - l),
            _ => match self.fs.map(self.inode, jblk)? {
                Run::Data { pblk, len } => {
                    self.run.set(Some((jblk, pblk, len)));
                    pblk
                }
                Run::Zero(_) | Run::Hole(_) => {
                    return Err(FsError::corrupt(
                        "journal inode",
                        ino,
                        jblk,
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
        Ok(jblk * self.0)
    }
}

/// Replays the internal journal of `fs` if its superblock says it needs recovery. None when
/// there is nothing to replay (or it cannot be, for an external journal).
pub(crate) fn replay(fs: &Ext4) -> Result<Option<(Arc<dyn BlockDevice>, ReplayInfo)>> {
    let sb = fs.superblock();
    if !sb.has_incompat(INCOMPAT_RECOVER) {
        return Ok(None);
    }
    if sb.feature_compat & COMPAT_HAS_JOURNAL == 0 {
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
        return Err(FsError::corrupt(
            "superblock",
            0,
            0,
            format!("both a journal inode ({inum}) and a journal device ({jdev:#x})"),
        ));
    }
    let inode = fs.inode(u64::from(inum)).map_err(with_hint)?;
    let bad_inode = |d: &str| with_hint(FsError::corrupt("journal inode", inode.ino, 0, d));
    if inode.links == 0 {
        return Err(bad_inode("deleted (no links)"));
    }
    if inode.kind != FileType::RegularFile || inode.flags & FL_ENCRYPT != 0 {
        return Err(bad_inode("not a regular file"));
    }
    let bs = fs.block_size();
    let total_len = (inode.size / u64::from(bs)).min(u64::from(u32::MAX));
    let src = InodeLog {
        fs,
        inode: &inode,
        run: Cell::new(None),
    };
    let view = recover(fs.dev.clone(), &src, bs, total_len, inode.ino).map_err(with_hint)?;
    Ok(view.map(|(v, i)| (Arc::new(v) as Arc<dyn BlockDevice>, i)))
}

/// Replays a journal that fills `dev` from byte 0 (blocks of `block_size` bytes) into a view
/// of `dev` itself. For fuzzing the recovery code without a filesystem around it.
pub fn replay_device(
    dev: Arc<dyn BlockDevice>,
    block_size: u32,
) -> Result<Option<(ReplayView, ReplayInfo)>> {
    let total_len = (dev.len() / u64::from(block_size)).min(u64::from(u32::MAX));
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
    let mut b = vec![0u8; bs as usize];
    dev.read_at(&mut b, src.locate(0)?)?;
    let jsb = JournalSuperblock::parse(&b, bs, total_len)?;
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
    let mut b = vec![0u8; jsb.block_size as usize];
    let read = src
        .locate(first)
        .and_then(|at| dev.read_at(&mut b, at).map_err(FsError::from));
    if read.is_err() {
        return false;
    }
    le16(&b, 0) == FC_TAG_HEAD && le16(&b, 2) >= 8 && le32(&b, 8) == tid
}
