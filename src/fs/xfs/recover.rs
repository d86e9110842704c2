//! XFS log recovery in memory (the model is the kernel's xfs_log_recover.c,
//! xfs_buf_item_recover.c, xfs_inode_item_recover.c and libxfs/xfs_log_format.h; xfsprogs'
//! logprint reads the same structures). Nothing is written to the source: every sector that
//! recovery would rewrite is kept in a `replay_view::Sectors` overlay.
//!
//! The log between the tail and the head (`log::Scan`) is a sequence of records: a header
//! block (plus extra header blocks in v2 records over 32 KiB), then data whose 512-byte
//! blocks had their first word replaced by the cycle number (saved in the header's
//! h_cycle_data). The data is a stream of operations (xlog_op_header: transaction id, length,
//! flags), whose regions make up the items of transactions; a region that did not fit into a
//! record continues in the next (CONTINUE / WAS_CONT). A transaction counts once its COMMIT
//! operation is read.
//!
//! As the kernel does, a first pass collects buffer cancellations (XFS_BLF_CANCEL: a freed
//! metadata buffer must not be replayed over what was written there later) and a second
//! applies the committed transactions in order, each item by type:
//! - buffers: the logged 128-byte chunks (blf_data_map) over the buffer; skipped when
//!   cancelled or, on v5, when the buffer on disk carries an LSN at least as new
//!   (xlog_recover_get_buf_lsn); inode buffers only get their di_next_unlinked fields;
//!   quota buffers are skipped (ferry reads no quotas);
//! - inodes: the logged core (in the logging host's byte order) converted to the on-disk
//!   inode, the data and attribute forks copied into the literal area (a bmbt root converted
//!   from the in-memory block form to the on-disk bmdr form), the CRC recomputed; skipped
//!   when the on-disk v3 inode's LSN (v2: di_flushiter) is newer;
//! - inode creation (icreate): fresh free inodes written over the chunk;
//! - intents and their done items (extent free, rmap, refcount, bmap, attr, mapping
//!   exchange): parsed and paired. The kernel finishes unfinished intents after replay
//!   (xlog_recover_process_intents). Free space, rmap and refcount changes do not alter what
//!   a read-only view shows (the blocks an extent-free intent frees are counted by statfs).
//!   A file mapping update (BUI) does: its one extent is parsed and checked as the kernel
//!   checks it (a bad one ends the replay there, naming the item and its LSN), and the
//!   unfinished ones are handed over in log order (`ReplayInfo::unfinished_bmaps`) for
//!   `intents` to finish over the replayed view, as an in-memory overlay of the forks they
//!   touch. Attribute intents (ATTRI: logged xattr set/remove/replace, parent pointers)
//!   and mapping exchanges (XMI) are not applied: they are warned about, the ATTRI with
//!   its operation, inode and name, and listed in `ReplayInfo::unfinished_intents` (which
//!   names every unfinished intent). Quota items are skipped.
//!
//! After the last transaction every replayed v5 buffer gets the LSN of the transaction that
//! last replayed it and a fresh CRC, as the kernel's write verifiers do when recovery writes
//! the buffers back.
//!
//! A record that fails its checks (v5 record CRC, header fields, a record running past the
//! head: a torn write) or a transaction that cannot be applied (unknown item type, items
//! that do not fit their buffers) ends the replay: the transactions before it are the
//! result, as when the kernel trims a torn head. Transactions are applied atomically.

use super::log::{
    header_blocks, LogArea, BB, HEADER_CYCLE_SIZE, HEADER_MAGIC, MAX_RECORD_BYTES, VERSION_2,
};
use super::replay_view::Sectors;
use super::superblock::{bit_names, Incompat, LogIncompat, Superblock};
use super::{crc, Xfs};
use crate::bytes::{be16, be32, be64, wide};
use crate::fs::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Bytes of regions held for transactions not yet committed (a checkpoint is bounded by the
/// CIL space limit, at most 32 MiB of log per checkpoint twice over).
pub const MAX_PENDING_BYTES: usize = 256 << 20;
/// Transactions open at once; the kernel has a handful in flight.
const MAX_OPEN_TRANSACTIONS: usize = 4096;
/// Largest buffer replayed: 64 KiB (XFS_MAX_BLOCKSIZE, a directory block).
pub const MAX_BUF_BBS: u64 = (64 << 10) / BB;
/// XLOG_MAX_REGIONS_IN_ITEM.
const MAX_REGIONS_IN_ITEM: usize = (64 << 10) / 128 / 2 + 1;
/// XFS_BLF_DATAMAP_SIZE: words of the dirty bitmap.
const MAX_MAP_WORDS: usize = (64 << 10) / 128 / 32 + 1;
const BLF_CHUNK: usize = 128;

/// Operation headers (xlog_op_header).
const OP_HEADER_SIZE: usize = 12;
const CLIENT_TRANSACTION: u8 = 0x69;
const CLIENT_LOG: u8 = 0xaa;
const START_TRANS: u8 = 0x01;
const COMMIT_TRANS: u8 = 0x02;
const CONTINUE_TRANS: u8 = 0x04;
const WAS_CONT_TRANS: u8 = 0x08;
const END_TRANS: u8 = 0x10;
const UNMOUNT_TRANS: u8 = 0x20;
/// xfs_trans_header: th_magic "TRAN", in host order.
const TRANS_HEADER_MAGIC: u32 = 0x5452_414e;
const TRANS_HEADER_SIZE: usize = 16;

/// Record header fields (xlog_rec_header).
const H_CYCLE_DATA: usize = 44;
#[allow(clippy::as_conversions)] // u32 to u64: From is not const
const CYCLE_WORDS: u64 = (HEADER_CYCLE_SIZE as u64) / BB;
/// The header bytes the record CRC covers: up to h_pad0 on 64-bit hosts, up to h_size on
/// i386 (both are tried, as the kernel does).
const REC_SIZES: [usize; 2] = [328, 324];
/// Bytes of an extra header block the CRC covers (XLOG_REC_EXT_SIZE).
#[allow(clippy::as_conversions)] // 64 words: From is not const
const REC_EXT_SIZE: usize = 4 + 4 * CYCLE_WORDS as usize;
/// A log block (basic block) as a slice length.
const BB_LEN: usize = 512;
/// XLOG_BIG_RECORD_BSIZE: the largest v1 record.
const V1_RECORD_BYTES: u32 = 32 << 10;

/// Log item types (XFS_LI_*).
const LI_BUF: u16 = 0x123c;
const LI_INODE: u16 = 0x123b;
const LI_ICREATE: u16 = 0x123f;
const LI_DQUOT: u16 = 0x123d;
const LI_QUOTAOFF: u16 = 0x123e;
/// Intents, each followed by its done item (type + 1), with what they change.
const INTENTS: &[(u16, &str, bool)] = &[
    (0x1236, "extent free (EFI)", false),
    (0x1240, "rmap update (RUI)", false),
    (0x1242, "refcount update (CUI)", false),
    (0x1244, "file mapping update (BUI)", true),
    (0x1246, "attribute set/remove (ATTRI)", true),
    (0x1248, "mapping exchange (XMI)", true),
    (0x124a, "realtime extent free", false),
    (0x124c, "realtime rmap update", false),
    (0x124e, "realtime refcount update", false),
];

/// Buffer log format flags (xfs_buf_log_format blf_flags).
const BLF_INODE_BUF: u16 = 1 << 0;
const BLF_CANCEL: u16 = 1 << 1;
const BLF_DQUOT_BUFS: u16 = (1 << 2) | (1 << 3) | (1 << 4);

/// Inode log format fields (XFS_ILOG_*).
const ILOG_DDATA: u32 = 0x002;
const ILOG_DEXT: u32 = 0x004;
const ILOG_DBROOT: u32 = 0x008;
const ILOG_DEV: u32 = 0x010;
const ILOG_ADATA: u32 = 0x040;
const ILOG_AEXT: u32 = 0x080;
const ILOG_ABROOT: u32 = 0x100;
const ILOG_DFORK: u32 = ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT;
const ILOG_AFORK: u32 = ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT;
/// sizeof(xfs_inode_log_format) on 64-bit hosts and its packed 32-bit variant.
const ILF_SIZE_64: usize = 56;
const ILF_SIZE_32: usize = 52;

/// The on-disk inode (xfs_dinode) and its logged form (xfs_log_dinode, same layout).
const DINODE_MAGIC: u16 = 0x494e;
const DI_NEXT_UNLINKED: usize = 96;
const DI_CRC: usize = 100;
const DI_LSN: usize = 112;
const V3_CORE: usize = 176;
const V2_CORE: usize = 100;
/// Bytes of the logged core without the v3 fields (offsetof di_next_unlinked).
const LOG_DINODE_V2: usize = 96;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
const DI_MAX_FLUSH: u16 = 0xffff;
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
/// Long-format btree block header (xfs_btree_block): v5 and v4 sizes.
const BMBT_CRC_BLOCK_LEN: usize = 72;
const BMBT_BLOCK_LEN: usize = 24;

/// v5 metadata magics with where their LSN, UUID and CRC sit (xlog_recover_get_buf_lsn and
/// the write verifiers).
const SB_MAGIC: u32 = 0x5846_5342;
const AGF_MAGIC: u32 = 0x5841_4746;
const AGI_MAGIC: u32 = 0x5841_4749;
const AGFL_MAGIC: u32 = 0x5841_464c;
const SHORT_BTREES: [u32; 6] = [
    0x4142_3342, // AB3B
    0x4142_3343, // AB3C
    0x4941_4233, // IAB3
    0x4649_4233, // FIB3
    0x524d_4233, // RMB3
    0x5233_4643, // R3FC
];
const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
const DIR3_BLOCKS: [u32; 3] = [0x5844_4233, 0x5844_4433, 0x5844_4633];
const SYMLINK_MAGIC: u32 = 0x5853_4c4d;
const ATTR3_RMT_MAGIC: u32 = 0x5841_524d;
const DA3_MAGICS: [u16; 4] = [0x3ebe, 0x3bee, 0x3df1, 0x3dff];

/// What replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayInfo {
    /// The replayed part of the log, in log blocks.
    pub tail: u64,
    pub head: u64,
    pub records: u64,
    pub transactions: u64,
    pub buffers: u64,
    pub buffers_cancelled: u64,
    /// Items skipped because the metadata on disk is newer than the transaction.
    pub newer_on_disk: u64,
    pub inodes: u64,
    pub icreates: u64,
    pub intents: u64,
    /// Quota items and buffers, not replayed.
    pub quota_items: u64,
    /// Intents without their done item, which the kernel would finish after replay.
    pub unfinished_intents: Vec<String>,
    /// Blocks the unfinished extent-free intents free when the kernel finishes them.
    pub unfinished_free_blocks: u64,
    /// The unfinished file mapping updates (BUIs) in log order, which the filesystem
    /// finishes over the replayed view as the kernel does (`intents`).
    pub unfinished_bmaps: Vec<UnfinishedBmap>,
    /// How many of them were finished; the others are named in warnings.
    pub finished_bmaps: u64,
    /// Why replay ended before the head, if it did.
    pub stopped: Option<String>,
    /// Sectors that now read from memory.
    pub sectors: usize,
}

/// Host byte order of logged structures (format headers and inode cores).
#[derive(Clone, Copy)]
struct Endian {
    little: bool,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = be16(b, at);
        if self.little {
            v.swap_bytes()
        } else {
            v
        }
    }
    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = be32(b, at);
        if self.little {
            v.swap_bytes()
        } else {
            v
        }
    }
    fn u64(self, b: &[u8], at: usize) -> u64 {
        let v = be64(b, at);
        if self.little {
            v.swap_bytes()
        } else {
            v
        }
    }
}

/// Writes `v` at `at` of `b`. Callers write inside structures they bounded; a write that
/// would not fit is dropped rather than panicking.
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..).and_then(|d| d.get_mut(..v.len())) {
        d.copy_from_slice(v);
    }
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    put(b, at, &v.to_be_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    put(b, at, &v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    put(b, at, &v.to_be_bytes());
}
/// A count of log blocks or bytes bounded by the log as an index (saturates on 32-bit
/// hosts, where a slice that long cannot exist, so a `get` with it fails).
fn idx(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One record: its LSN and operations, the data with its cycle words restored.
struct Record {
    lsn: u64,
    at: u64,
    ops: u32,
    data: Vec<u8>,
}

enum Step {
    Record(Record),
    Head,
    /// The log ends early here: why.
    Stop(String),
}

/// Reads the records from the tail to the head.
struct Walker<'a> {
    fs: &'a Xfs,
    area: LogArea,
    pos: u64,
    left: u64,
}

impl Walker<'_> {
    fn next(&mut self) -> Result<Step> {
        if self.left == 0 {
            return Ok(Step::Head);
        }
        let dev = self.fs.dev.as_ref();
        let at = self.pos;
        let n = self.area.bbs;
        let first = self.area.read(dev, at, 1)?;
        let stop = |why: String| Ok(Step::Stop(format!("log block {at}: {why}")));
        if be32(&first, 0) != HEADER_MAGIC {
            return stop("no record header".into());
        }
        let version = be32(&first, 8);
        if version == 0 || version & !3 != 0 {
            return stop(format!("record version {version:#x}"));
        }
        let len = be32(&first, 12);
        let size = be32(&first, 320);
        let bufsize = if version & VERSION_2 != 0 {
            if size > MAX_RECORD_BYTES {
                return stop(format!("record size {size} (h_size, offset 320)"));
            }
            size.max(V1_RECORD_BYTES)
        } else {
            V1_RECORD_BYTES
        };
        if len == 0 || len > bufsize {
            return stop(format!(
                "record length {len} (h_len, offset 12) of {bufsize}"
            ));
        }
        let hblks = header_blocks(&first);
        let bblks = u64::from(len).div_ceil(BB);
        let blocks = hblks.saturating_add(bblks);
        if blocks > self.left {
            return stop(format!(
                "record of {blocks} blocks runs past the head (torn write)"
            ));
        }
        let lsn = be64(&first, 16);
        if lsn & 0xffff_ffff != at {
            return stop(format!("record header says block {}", lsn & 0xffff_ffff));
        }
        let headers = if hblks > 1 {
            self.area.read(dev, at, hblks)?
        } else {
            first
        };
        // at < n, and n >= 2 (a log of two blocks at least).
        let wrap = |b: u64| b.checked_rem(n).unwrap_or(0);
        let mut data = self.area.read(dev, wrap(at.saturating_add(hblks)), bblks)?;
        // len <= bufsize <= 256 KiB, and data holds bblks whole blocks.
        let len = idx(u64::from(len));
        let stored = u32::from_le_bytes([headers[32], headers[33], headers[34], headers[35]]);
        if stored != 0 || self.fs.sb.is_v5() {
            let ok = REC_SIZES
                .iter()
                .any(|&hl| record_crc(&headers, hl, hblks, &data[..len]) == stored);
            if !ok {
                if self.fs.sb.is_v5() {
                    return stop("record CRC32c mismatch (h_crc, offset 32)".into());
                }
                ::log::warn!("xfs: log record at block {at}: CRC mismatch (v4: not fatal)");
            }
        }
        for (i, blk) in (0..bblks).zip(data.chunks_exact_mut(BB_LEN)) {
            // Word k of header block j (the first block's after H_CYCLE_DATA, an extra
            // block's after its own cycle): j < hblks and k < 64, so inside `headers`.
            let (j, k) = (i / CYCLE_WORDS, idx(i % CYCLE_WORDS));
            let word = if j == 0 {
                H_CYCLE_DATA.saturating_add(k.saturating_mul(4))
            } else {
                if j >= hblks {
                    return stop(format!("block {i} of the record has no cycle word"));
                }
                idx(j)
                    .saturating_mul(BB_LEN)
                    .saturating_add(4)
                    .saturating_add(k.saturating_mul(4))
            };
            let Some(w) = headers.get(word..).and_then(|h| h.get(..4)) else {
                return stop(format!("block {i} of the record has no cycle word"));
            };
            put(blk, 0, w);
        }
        data.truncate(len);
        // blocks <= left (checked above).
        self.pos = wrap(at.saturating_add(blocks));
        self.left = self.left.saturating_sub(blocks);
        Ok(Step::Record(Record {
            lsn,
            at,
            ops: be32(&headers, 40),
            data,
        }))
    }
}

/// xlog_cksum: CRC32c of the header (h_crc as zero), the extra headers' cycle data and the
/// record data as written (cycle words stamped).
fn record_crc(headers: &[u8], hlen: usize, hblks: u64, data: &[u8]) -> u32 {
    let mut h = headers[..hlen].to_vec();
    h[32..36].fill(0);
    let mut c = crc32c::crc32c(&h);
    // Only the extra headers the data needs count, not all that h_size provides.
    let used = wide(data.len()).div_ceil(u64::from(HEADER_CYCLE_SIZE));
    let extra = idx(hblks.min(used).saturating_sub(1));
    for blk in headers.chunks_exact(BB_LEN).skip(1).take(extra) {
        c = crc32c::crc32c_append(c, blk.get(..REC_EXT_SIZE).unwrap_or(blk));
    }
    crc32c::crc32c_append(c, data)
}

/// A transaction being read back.
struct Trans {
    lsn: u64,
    header: Vec<u8>,
    items: Vec<RawItem>,
    bytes: usize,
}

/// The regions of one item; the first is its format structure, whose second u16 says how
/// many regions there are.
struct RawItem {
    total: usize,
    regions: Vec<Vec<u8>>,
}

enum OpResult {
    Nothing,
    Commit(Trans),
}

/// Groups operations into transactions (xlog_recover_process_ophdr and friends).
#[derive(Default)]
struct Assembler {
    open: HashMap<u32, Trans>,
    pending: usize,
}

impl Assembler {
    /// Err(Stop) ends the replay here; Err(Refuse) makes it impossible.
    fn op(
        &mut self,
        lsn: u64,
        tid: u32,
        client: u8,
        flags: u8,
        region: &[u8],
    ) -> std::result::Result<OpResult, Fail> {
        if client != CLIENT_TRANSACTION && client != CLIENT_LOG {
            return Err(Fail::Stop(format!("operation client id {client:#x}")));
        }
        if client == CLIENT_LOG {
            return Ok(OpResult::Nothing);
        }
        let Some(trans) = self.open.get_mut(&tid) else {
            if flags & START_TRANS != 0 {
                if self.open.len() >= MAX_OPEN_TRANSACTIONS {
                    return Err(Fail::Stop("too many open transactions".into()));
                }
                self.open.insert(
                    tid,
                    Trans {
                        lsn,
                        header: Vec::new(),
                        items: Vec::new(),
                        bytes: 0,
                    },
                );
            }
            // Operations of transactions that started before the tail are not replayed.
            return Ok(OpResult::Nothing);
        };
        let mut f = flags & !END_TRANS;
        if f & WAS_CONT_TRANS != 0 {
            f &= !CONTINUE_TRANS;
        }
        match f {
            0 | CONTINUE_TRANS | WAS_CONT_TRANS => {
                self.pending = self.pending.saturating_add(region.len());
                trans.bytes = trans.bytes.saturating_add(region.len());
                if self.pending > MAX_PENDING_BYTES {
                    return Err(Fail::Refuse(format!(
                        "transactions hold more than {MAX_PENDING_BYTES} bytes"
                    )));
                }
                if f == WAS_CONT_TRANS {
                    add_cont(trans, region)
                } else {
                    add(trans, region)
                }
                .map_err(Fail::Stop)?;
                Ok(OpResult::Nothing)
            }
            COMMIT_TRANS | UNMOUNT_TRANS => match self.open.remove(&tid) {
                Some(t) => {
                    // t.bytes were added to pending.
                    self.pending = self.pending.saturating_sub(t.bytes);
                    Ok(if f == COMMIT_TRANS {
                        OpResult::Commit(t)
                    } else {
                        OpResult::Nothing
                    })
                }
                None => Ok(OpResult::Nothing),
            },
            _ => Err(Fail::Stop(format!("operation flags {flags:#x}"))),
        }
    }
}

fn header_done(t: &Trans) -> bool {
    t.header.len() >= TRANS_HEADER_SIZE
}

/// xlog_recover_add_to_trans: a new region (the transaction header first).
fn add(t: &mut Trans, region: &[u8]) -> std::result::Result<(), String> {
    if region.is_empty() {
        return Ok(());
    }
    if !header_done(t) {
        if t.header.is_empty() {
            let m = be32(region, 0);
            if m != TRANS_HEADER_MAGIC && m.swap_bytes() != TRANS_HEADER_MAGIC {
                return Err(format!("transaction header magic {m:#x}"));
            }
        }
        if t.header.len().saturating_add(region.len()) > TRANS_HEADER_SIZE {
            return Err(format!("transaction header of {} bytes", region.len()));
        }
        t.header.extend_from_slice(region);
        return Ok(());
    }
    let need_new = t
        .items
        .last()
        .is_none_or(|i| i.total != 0 && i.regions.len() >= i.total);
    if need_new {
        t.items.push(RawItem {
            total: 0,
            regions: Vec::new(),
        });
    }
    let Some(item) = t.items.last_mut() else {
        return Err("no item to add to".into());
    };
    if item.total == 0 {
        if region.len() < 4 {
            return Err(format!("item format of {} bytes", region.len()));
        }
        // ilf_size and its kin: the second u16 of every format structure, host order.
        let le = u16::from_le_bytes([region[2], region[3]]);
        let be = u16::from_be_bytes([region[2], region[3]]);
        let total = if item_type(region).is_some_and(|(_, e)| e.little) {
            le
        } else {
            be
        };
        let total = usize::from(total);
        if total == 0 || total > MAX_REGIONS_IN_ITEM {
            return Err(format!("item of {total} regions"));
        }
        item.total = total;
    }
    if item.regions.len() >= item.total {
        return Err("more regions than the item declares".into());
    }
    item.regions.push(region.to_vec());
    Ok(())
}

/// xlog_recover_add_to_cont_trans: the rest of a region split across records.
fn add_cont(t: &mut Trans, region: &[u8]) -> std::result::Result<(), String> {
    if !header_done(t) {
        if t.header.len().saturating_add(region.len()) > TRANS_HEADER_SIZE {
            return Err("transaction header continued past its size".into());
        }
        t.header.extend_from_slice(region);
        return Ok(());
    }
    match t.items.last_mut().and_then(|i| i.regions.last_mut()) {
        Some(r) => {
            r.extend_from_slice(region);
            Ok(())
        }
        None => Err("continuation without a region".into()),
    }
}

/// The item type and the host byte order it was logged in.
fn item_type(r: &[u8]) -> Option<(u16, Endian)> {
    let known = |t: u16| matches!(t, 0x1236 | 0x1237 | 0x123b..=0x124f);
    let le = u16::from_le_bytes([*r.first()?, *r.get(1)?]);
    if known(le) {
        return Some((le, Endian { little: true }));
    }
    let be = le.swap_bytes();
    known(be).then_some((be, Endian { little: false }))
}

enum Fail {
    /// The log ends here.
    Stop(String),
    /// Replay is impossible (a limit): the tree is shown as on disk.
    Refuse(String),
}

struct BufItem {
    blkno: u64,
    len: u64,
    flags: u16,
    map: Vec<u32>,
    regions: Vec<Vec<u8>>,
}

struct InodeItem {
    ino: u64,
    fields: u32,
    rdev: u32,
    blkno: u64,
    len: u64,
    boffset: usize,
    e: Endian,
    /// Regions after the format: core, then data fork, then attribute fork as logged.
    regions: Vec<Vec<u8>>,
}

struct Icreate {
    agno: u32,
    agbno: u32,
    length: u32,
    gen: u32,
}

enum Item {
    Buf(BufItem),
    Inode(InodeItem),
    Icreate(Icreate),
    /// An intent (done: its done item) of INTENTS[kind] with its id.
    Intent {
        kind: usize,
        id: u64,
        done: bool,
        /// For an extent-free intent: the blocks it frees.
        frees: u64,
        /// For a file mapping update intent: the update.
        bmap: Option<MapUpdate>,
        /// For an attribute intent: what it does, for the warning.
        about: Option<String>,
    },
    Quota,
}

/// The log item type of an extent-free intent (XFS_LI_EFI).
const LI_EFI: u16 = 0x1236;
/// File mapping update and attribute intents (XFS_LI_BUI, XFS_LI_ATTRI).
const LI_BUI: u16 = 0x1244;
const LI_ATTRI: u16 = 0x1246;

/// xfs_bui_log_format: type, size, nextents, id, then xfs_map_extent records of 32 bytes
/// (owner, startblock, startoff, len, flags). The kernel logs exactly one extent per BUI
/// (XFS_BUI_MAX_FAST_EXTENTS) and refuses any other size.
const BUI_HEADER: usize = 16;
const MAP_EXTENT: usize = 32;
/// me_flags (XFS_BMAP_*): the type in the low byte, then the attribute fork, unwritten and
/// realtime bits.
const BMAP_TYPE_MASK: u32 = 0xff;
const BMAP_MAP: u32 = 1;
const BMAP_UNMAP: u32 = 2;
const BMAP_ATTR_FORK: u32 = 1 << 31;
const BMAP_UNWRITTEN: u32 = 1 << 30;
const BMAP_REALTIME: u32 = 1 << 29;
const BMAP_FLAGS: u32 = BMAP_TYPE_MASK | BMAP_ATTR_FORK | BMAP_UNWRITTEN | BMAP_REALTIME;
/// XFS_MAX_FILEOFF: the largest file offset in blocks (54 bits of a bmbt record).
const MAX_FILEOFF: u64 = (1 << 54) - 1;
/// XFS_MAX_BMBT_EXTLEN: the longest extent a bmbt record holds.
pub const MAX_BMBT_EXTLEN: u64 = (1 << 21) - 1;

/// xfs_attri_log_format: type, size, inode generation, id, inode, op flags, name length
/// (or old and new name lengths for a parent pointer replace), value length, filter; then
/// the name, new name, value and new value regions the lengths call for.
const ATTRI_FORMAT: usize = 40;
/// XFS_ATTRI_OP_FLAGS_*: set, remove, replace, then the parent pointer forms.
const ATTRI_OPS: &[(u32, &str)] = &[
    (1, "set"),
    (2, "remove"),
    (3, "replace"),
    (4, "parent pointer set"),
    (5, "parent pointer remove"),
    (6, "parent pointer replace"),
];
const ATTRI_OP_MASK: u32 = 0xff;
/// XATTR_SIZE_MAX and MAXNAMELEN - 1.
const ATTR_VALUE_MAX: u32 = 64 << 10;
const ATTR_NAME_MAX: u32 = 255;

/// One file mapping update of a BUI (xfs_map_extent): `len` blocks of inode `ino`'s data
/// or attribute fork from logical block `off` mapped to filesystem block `start`
/// (AG-encoded), or unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUpdate {
    pub ino: u64,
    pub attr: bool,
    pub unmap: bool,
    pub unwritten: bool,
    pub off: u64,
    pub start: u64,
    pub len: u64,
}

/// A BUI without its BUD, as the kernel finishes it after replay: the intent's id, the LSN
/// of the transaction that logged it, and the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnfinishedBmap {
    pub id: u64,
    pub lsn: u64,
    pub update: MapUpdate,
}

/// What an ATTRI item asks (for the warning that names it): the operation, the inode and
/// the attribute name.
fn describe_attri(f: &[u8], regions: &[Vec<u8>], e: Endian) -> std::result::Result<String, String> {
    if f.len() != ATTRI_FORMAT {
        return Err(format!(
            "attribute intent (ATTRI) format of {} bytes",
            f.len()
        ));
    }
    let ino = e.u64(f, 16);
    let op = e.u32(f, 24) & ATTRI_OP_MASK;
    let Some(&(_, what)) = ATTRI_OPS.iter().find(|o| o.0 == op) else {
        return Err(format!("attribute intent (ATTRI) operation {op}"));
    };
    let name_len = e.u32(f, 28);
    let value_len = e.u32(f, 32);
    // The parent pointer replace splits the name length into the old and new names'.
    let (old, new) = if op == 6 {
        (u32::from(e.u16(f, 28)), u32::from(e.u16(f, 30)))
    } else {
        (name_len, 0)
    };
    let names = [old, new];
    if old == 0 || names.iter().any(|&n| n > ATTR_NAME_MAX) || value_len > ATTR_VALUE_MAX {
        return Err(format!(
            "attribute intent (ATTRI) with names of {old} and {new} bytes, a value of              {value_len}"
        ));
    }
    let name = regions
        .first()
        .ok_or("attribute intent (ATTRI) without its name")?;
    let Some(name) = name.get(..idx(u64::from(old))) else {
        return Err(format!(
            "attribute intent (ATTRI) name region of {} bytes for a {old}-byte name",
            name.len()
        ));
    };
    Ok(format!(
        "{what} of {:?} on inode {ino}",
        String::from_utf8_lossy(name)
    ))
}

/// The blocks an EFI item frees (xfs_efi_log_format: type, size, nextents, id, then the
/// extents, 16 bytes each, or 12 in the old 32-bit layout, told apart by the item's length).
fn efi_blocks(f: &[u8], e: Endian) -> u64 {
    if f.len() < 16 {
        return 0;
    }
    let n = idx(u64::from(e.u32(f, 4)));
    let body = f.get(16..).unwrap_or_default();
    let step = match n {
        0 => return 0,
        _ if n.checked_mul(16) == Some(body.len()) => 16,
        _ if n.checked_mul(12) == Some(body.len()) => 12,
        _ => return 0,
    };
    // u32 lengths of fewer than 2^32 extents: no overflow.
    body.chunks_exact(step)
        .map(|x| u64::from(e.u32(x, 8)))
        .fold(0, u64::saturating_add)
}

impl Xfs {
    fn fs_bbs(&self) -> u64 {
        self.sb.daddr(self.sb.dblocks)
    }

    fn check_buf_range(&self, what: &str, blkno: u64, len: u64) -> std::result::Result<(), String> {
        if len == 0 || len > MAX_BUF_BBS || blkno.checked_add(len).is_none_or(|e| e > self.fs_bbs())
        {
            return Err(format!(
                "{what} at sector {blkno} (+{len}) is outside the filesystem"
            ));
        }
        Ok(())
    }

    /// Parses a committed transaction's items in the kernel's replay order
    /// (xlog_recover_reorder_trans): buffers and inode creations, then inodes and the other
    /// items, then inode buffers, then cancellations last (so that items of a buffer freed
    /// in the same transaction still see it cancelled).
    fn parse_trans(&self, t: Trans) -> std::result::Result<Vec<Item>, String> {
        let (mut bufs, mut ibufs, mut cancels, mut rest) = (vec![], vec![], vec![], vec![]);
        for (n, raw) in t.items.into_iter().enumerate() {
            if raw.regions.len() != raw.total {
                return Err(format!(
                    "item {n} has {} of its {} regions",
                    raw.regions.len(),
                    raw.total
                ));
            }
            let mut regions = raw.regions.into_iter();
            let f = regions.next().unwrap_or_default();
            let Some((ty, e)) = item_type(&f) else {
                return Err(format!(
                    "item {n}: unknown log item type {:#06x}",
                    be16(&f, 0)
                ));
            };
            match ty {
                LI_BUF => {
                    let b = self.parse_buf(&f, e, regions.collect())?;
                    if b.flags & BLF_CANCEL != 0 {
                        cancels.push(Item::Buf(b));
                    } else if b.flags & BLF_INODE_BUF != 0 {
                        ibufs.push(Item::Buf(b));
                    } else {
                        bufs.push(Item::Buf(b));
                    }
                }
                LI_ICREATE => bufs.push(Item::Icreate(self.parse_icreate(&f)?)),
                LI_INODE => rest.push(Item::Inode(self.parse_inode(&f, e, regions.collect())?)),
                LI_DQUOT | LI_QUOTAOFF => rest.push(Item::Quota),
                _ => {
                    if f.len() < 16 {
                        return Err(format!("item {n}: intent of {} bytes", f.len()));
                    }
                    let id = e.u64(&f, 8);
                    let (kind, done) = match INTENTS.iter().position(|i| i.0 == ty) {
                        Some(k) => (k, false),
                        None => match INTENTS.iter().position(|i| i.0.checked_add(1) == Some(ty)) {
                            Some(k) => (k, true),
                            None => return Err(format!("item {n}: log item type {ty:#06x}")),
                        },
                    };
                    let frees = if ty == LI_EFI { efi_blocks(&f, e) } else { 0 };
                    let bmap = if ty == LI_BUI {
                        let u = self.parse_bui(&f, e).map_err(|why| {
                            format!("item {n}: BUI {id:#x} (LSN {:#x}): {why}", t.lsn)
                        })?;
                        Some(u)
                    } else {
                        None
                    };
                    let about = if ty == LI_ATTRI {
                        let regions: Vec<_> = regions.collect();
                        let a = describe_attri(&f, &regions, e).map_err(|why| {
                            format!("item {n}: ATTRI {id:#x} (LSN {:#x}): {why}", t.lsn)
                        })?;
                        Some(a)
                    } else {
                        None
                    };
                    rest.push(Item::Intent {
                        kind,
                        id,
                        done,
                        frees,
                        bmap,
                        about,
                    });
                }
            }
        }
        bufs.extend(rest);
        bufs.extend(ibufs);
        bufs.extend(cancels);
        Ok(bufs)
    }

    fn parse_bui(&self, f: &[u8], e: Endian) -> std::result::Result<MapUpdate, String> {
        parse_bui(&self.sb, f, e)
    }

    fn parse_buf(
        &self,
        f: &[u8],
        e: Endian,
        regions: Vec<Vec<u8>>,
    ) -> std::result::Result<BufItem, String> {
        if f.len() < 20 {
            return Err(format!("buffer log format of {} bytes", f.len()));
        }
        let flags = e.u16(f, 4);
        let len = u64::from(e.u16(f, 6));
        let blkno = e.u64(f, 8);
        let words = e.u32(f, 16);
        let map_bytes = Some(idx(u64::from(words)))
            .filter(|&w| w <= MAX_MAP_WORDS)
            .and_then(|w| f.get(20..)?.get(..w.checked_mul(4)?));
        let Some(map_bytes) = map_bytes else {
            return Err(format!(
                "buffer log format with a {words}-word map in {} bytes",
                f.len()
            ));
        };
        self.check_buf_range("buffer", blkno, len)?;
        let map = map_bytes.chunks_exact(4).map(|w| e.u32(w, 0)).collect();
        Ok(BufItem {
            blkno,
            len,
            flags,
            map,
            regions,
        })
    }

    fn parse_inode(
        &self,
        f: &[u8],
        e: Endian,
        regions: Vec<Vec<u8>>,
    ) -> std::result::Result<InodeItem, String> {
        let (ino, rdev, blkno, len, boffset) = match f.len() {
            ILF_SIZE_64 => (
                e.u64(f, 16),
                e.u32(f, 24),
                e.u64(f, 40),
                e.u32(f, 48),
                e.u32(f, 52),
            ),
            ILF_SIZE_32 => (
                e.u64(f, 12),
                e.u32(f, 20),
                e.u64(f, 36),
                e.u32(f, 44),
                e.u32(f, 48),
            ),
            n => return Err(format!("inode log format of {n} bytes")),
        };
        let len = u64::from(len);
        self.check_buf_range("inode buffer", blkno, len)?;
        let isz = u64::from(self.sb.inodesize);
        // len <= MAX_BUF_BBS (check_buf_range).
        if u64::from(boffset).saturating_add(isz) > len.saturating_mul(BB) {
            return Err(format!(
                "inode {ino} at offset {boffset} of a {len}-sector buffer"
            ));
        }
        if regions.is_empty() {
            return Err(format!("inode {ino} logged without its core"));
        }
        Ok(InodeItem {
            ino,
            fields: e.u32(f, 4),
            rdev,
            blkno,
            len,
            // Checked against the buffer size above.
            boffset: idx(u64::from(boffset)),
            e,
            regions,
        })
    }

    fn parse_icreate(&self, f: &[u8]) -> std::result::Result<Icreate, String> {
        if f.len() < 28 {
            return Err(format!("icreate item of {} bytes", f.len()));
        }
        let (agno, agbno, count, isize, length, gen) = (
            be32(f, 4),
            be32(f, 8),
            be32(f, 12),
            be32(f, 16),
            be32(f, 20),
            be32(f, 24),
        );
        let sb = &self.sb;
        let ok = agno < sb.agcount
            && agbno != 0
            && length != 0
            && u64::from(agbno).saturating_add(u64::from(length)) <= u64::from(sb.agblocks)
            && isize == u32::from(sb.inodesize)
            && count != 0
            && count >> sb.inopblog == length
            && u64::from(length) << sb.blocklog <= MAX_BUF_BBS * BB * 8;
        if !ok {
            return Err(format!(
                "icreate of {count} inodes in AG {agno} block {agbno} (+{length}), size {isize}"
            ));
        }
        Ok(Icreate {
            agno,
            agbno,
            length,
            gen,
        })
    }
}

/// A BUI's one extent, checked as the kernel's xfs_bui_validate_map does before it finishes
/// the intent (a bad one fails the kernel's mount; here it ends the replay).
fn parse_bui(sb: &Superblock, f: &[u8], e: Endian) -> std::result::Result<MapUpdate, String> {
    if f.len() != BUI_HEADER + MAP_EXTENT {
        return Err(format!("format of {} bytes, not one extent", f.len()));
    }
    let n = e.u32(f, 4);
    if n != 1 {
        return Err(format!("{n} extents (bui_nextents, offset 4)"));
    }
    let m = BUI_HEADER;
    let (ino, start, off) = (e.u64(f, m), e.u64(f, m + 8), e.u64(f, m + 16));
    let (len, flags) = (u64::from(e.u32(f, m + 24)), e.u32(f, m + 28));
    let bad = |what: String| Err(format!("{what} (xfs_map_extent at offset {m})"));
    if flags & !BMAP_FLAGS != 0 {
        return bad(format!("flags {flags:#x}"));
    }
    let unmap = match flags & BMAP_TYPE_MASK {
        BMAP_MAP => false,
        BMAP_UNMAP => true,
        t => return bad(format!("type {t}")),
    };
    if flags & BMAP_REALTIME != 0 {
        return bad("a realtime extent (not read by ferry)".into());
    }
    if !sb.valid_ino(ino) {
        return bad(format!("owner inode {ino}"));
    }
    // xfs_verify_fileext: the last block at most XFS_MAX_FILEOFF.
    if len == 0
        || len > MAX_BMBT_EXTLEN
        || off
            .checked_add(len)
            .is_none_or(|e| e.saturating_sub(1) > MAX_FILEOFF)
    {
        return bad(format!("file blocks {off} (+{len})"));
    }
    // agblklog <= 32 (Superblock::check_geometry). A forged start's AG number can be
    // anything: the end is checked (a start near 2^64 plus the length overflowed, a panic
    // in debug builds, before the AG number check refused it).
    let (agno, agbno) = (
        start >> sb.agblklog,
        start & (1u64 << sb.agblklog).saturating_sub(1),
    );
    let linear_end = agno
        .checked_mul(u64::from(sb.agblocks))
        .and_then(|l| l.checked_add(agbno))
        .and_then(|l| l.checked_add(len));
    if agno >= u64::from(sb.agcount)
        || agbno.saturating_add(len) > u64::from(sb.agblocks)
        || linear_end.is_none_or(|e| e > sb.dblocks)
    {
        return bad(format!("filesystem block {start:#x} (+{len})"));
    }
    Ok(MapUpdate {
        ino,
        attr: flags & BMAP_ATTR_FORK != 0,
        unmap,
        unwritten: flags & BMAP_UNWRITTEN != 0,
        off,
        start,
        len,
    })
}

/// An intent logged without its done item so far.
struct OpenIntent {
    lsn: u64,
    /// Order among the intents (the log's, for those of one transaction).
    seq: usize,
    frees: u64,
    bmap: Option<MapUpdate>,
    about: Option<String>,
}

/// Buffer cancellations: (sector, length) with how many cancel records are still ahead.
type Cancels = HashMap<(u64, u64), u32>;

/// The sectors a transaction changes, laid over those of the transactions before it, so
/// that a transaction that fails half way leaves nothing behind.
struct Tx<'a> {
    fs: &'a Xfs,
    base: &'a Sectors,
    pending: Sectors,
}

impl Tx<'_> {
    fn read(&self, daddr: u64, count: u64) -> Result<Vec<u8>> {
        let mut b = self.base.read(self.fs.dev.as_ref(), daddr, count)?;
        // base.read checked that the sectors lie inside the device.
        self.pending.patch(&mut b, daddr.saturating_mul(BB));
        Ok(b)
    }

    fn write(&mut self, daddr: u64, data: &[u8]) -> std::result::Result<(), Fail> {
        if self.pending.write(daddr, data) {
            Ok(())
        } else {
            Err(Fail::Refuse(
                "the replayed sectors pass the memory limit".into(),
            ))
        }
    }
}

/// Chunks of a buffer logged by its regions: (byte offset, bytes, region), in the order of
/// xlog_recover_do_reg_buffer (a dirty run longer than its region continues in the next).
fn logged_chunks(
    map: &[u32],
    regions: &[Vec<u8>],
    buf_len: usize,
) -> std::result::Result<Vec<(usize, usize, usize)>, String> {
    // At most MAX_MAP_WORDS words (parse_buf): bit and byte positions stay small.
    let bits = map.len().saturating_mul(32);
    let set = |b: usize| map.get(b / 32).is_some_and(|w| w & (1 << (b % 32)) != 0);
    let mut out = Vec::new();
    let mut bit = 0;
    let mut i = 0;
    loop {
        while bit < bits && !set(bit) {
            bit = bit.saturating_add(1);
        }
        if bit >= bits {
            break;
        }
        let mut run = 0;
        while bit.saturating_add(run) < bits && set(bit.saturating_add(run)) {
            run = run.saturating_add(1);
        }
        let Some(r) = regions.get(i) else {
            return Err(format!(
                "dirty map names more than the {} logged regions",
                regions.len()
            ));
        };
        let run = run.min(r.len() / BLF_CHUNK);
        if run == 0 {
            return Err(format!("region {i} of {} bytes", r.len()));
        }
        let (off, len) = (bit.saturating_mul(BLF_CHUNK), run.saturating_mul(BLF_CHUNK));
        if off.saturating_add(len) > buf_len {
            return Err(format!(
                "chunk at byte {off} (+{len}) of a {buf_len}-byte buffer"
            ));
        }
        out.push((off, len, i));
        i = i.saturating_add(1);
        bit = bit.saturating_add(run);
    }
    Ok(out)
}

/// Outcome of the two passes.
pub struct Replayed {
    pub sectors: Sectors,
    pub info: ReplayInfo,
}

/// Replays the log from block `tail` to `head`. Err: replay is impossible (device errors,
/// limits); the caller shows the tree as on disk.
pub(super) fn replay(fs: &Xfs, head: u64, tail: u64) -> Result<Replayed> {
    // As the kernel: a log whose items need features this reader does not know is not
    // replayed (xfs_validate_sb_read, "unknown incompatible log features").
    let unknown = fs.sb.log_incompat.difference(LogIncompat::KNOWN);
    if !unknown.is_empty() {
        return Err(Error::Unsupported(format!(
            "XFS log replay: incompatible log features this reader does not know: {}",
            bit_names(unknown.bits())
        )));
    }
    let area = fs.log_area()?;
    let mut info = ReplayInfo {
        tail,
        head,
        ..Default::default()
    };
    // Pass 1: cancellations, and where the log ends.
    let mut cancels = Cancels::new();
    let mut end = None;
    let mut committed = 0u64;
    walk(fs, area, head, tail, &mut |t| match fs.parse_trans(t) {
        Ok(items) => {
            for it in &items {
                if let Item::Buf(b) = it {
                    if b.flags & BLF_CANCEL != 0 {
                        let c = cancels.entry((b.blkno, b.len)).or_default();
                        *c = c.saturating_add(1);
                    }
                }
            }
            committed = committed.saturating_add(1);
            Ok(true)
        }
        Err(why) => {
            end = Some(format!("transaction {committed}: {why}"));
            Ok(false)
        }
    })
    .map(|(records, stop)| {
        info.records = records;
        if end.is_none() {
            end = stop;
        }
    })?;
    // Pass 2: apply.
    let mut sectors = Sectors::default();
    let mut touched: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut intents: HashMap<(usize, u64), OpenIntent> = HashMap::new();
    let mut done: HashSet<(usize, u64)> = HashSet::new();
    let mut applied = 0u64;
    let mut failed = None;
    walk(fs, area, head, tail, &mut |t| {
        if applied >= committed {
            return Ok(false);
        }
        let lsn = t.lsn;
        let items = fs.parse_trans(t).map_err(Fail::Stop)?;
        let mut tx = Tx {
            fs,
            base: &sectors,
            pending: Sectors::default(),
        };
        let mut stats = ReplayInfo::default();
        let mut bufs = Vec::new();
        let mut cancels_after = cancels.clone();
        for it in &items {
            let r = match it {
                Item::Buf(b) => {
                    fs.apply_buf(&mut tx, b, lsn, &mut cancels_after, &mut stats, &mut bufs)
                }
                Item::Inode(i) => fs.apply_inode(&mut tx, i, lsn, &cancels_after, &mut stats),
                Item::Icreate(c) => fs.apply_icreate(&mut tx, c, &cancels_after, &mut stats),
                Item::Intent { .. } | Item::Quota => Ok(()),
            };
            if let Err(e) = r {
                return match e {
                    Fail::Stop(why) => {
                        failed = Some(format!("transaction {applied} (LSN {lsn:#x}): {why}"));
                        Ok(false)
                    }
                    Fail::Refuse(why) => Err(Fail::Refuse(why)),
                };
            }
        }
        let Tx { pending, .. } = tx;
        for (daddr, data) in pending.iter() {
            if !sectors.write(daddr, data) {
                return Err(Fail::Refuse(
                    "the replayed sectors pass the memory limit (or the last address)".into(),
                ));
            }
        }
        cancels = cancels_after;
        for b in bufs {
            touched.insert(b, lsn);
        }
        for it in &items {
            match it {
                Item::Intent {
                    kind,
                    id,
                    done: false,
                    frees,
                    bmap,
                    about,
                } => {
                    let open = OpenIntent {
                        lsn,
                        seq: intents.len(),
                        frees: *frees,
                        bmap: *bmap,
                        about: about.clone(),
                    };
                    intents.insert((*kind, *id), open);
                    stats.intents = stats.intents.saturating_add(1);
                }
                Item::Intent {
                    kind,
                    id,
                    done: true,
                    ..
                } => {
                    done.insert((*kind, *id));
                }
                Item::Quota => stats.quota_items = stats.quota_items.saturating_add(1),
                _ => {}
            }
        }
        info.buffers = info.buffers.saturating_add(stats.buffers);
        info.buffers_cancelled = info
            .buffers_cancelled
            .saturating_add(stats.buffers_cancelled);
        info.newer_on_disk = info.newer_on_disk.saturating_add(stats.newer_on_disk);
        info.inodes = info.inodes.saturating_add(stats.inodes);
        info.icreates = info.icreates.saturating_add(stats.icreates);
        info.intents = info.intents.saturating_add(stats.intents);
        info.quota_items = info.quota_items.saturating_add(stats.quota_items);
        applied = applied.saturating_add(1);
        Ok(true)
    })?;
    info.transactions = applied;
    info.stopped = failed.or(end);
    if fs.sb.is_v5() {
        for (&(blkno, len), &lsn) in &touched {
            let mut b = sectors.read(fs.dev.as_ref(), blkno, len)?;
            if fs.stamp_buffer(&mut b, lsn) && !sectors.write(blkno, &b) {
                return Err(Error::Unsupported(
                    "XFS log replay needs more memory than allowed".into(),
                ));
            }
        }
    }
    // In log order, as the kernel finds them in its AIL.
    let mut open: Vec<_> = intents
        .into_iter()
        .filter(|(k, _)| !done.contains(k))
        .collect();
    open.sort_by_key(|(_, o)| (o.lsn, o.seq));
    info.unfinished_free_blocks = open.iter().map(|(_, o)| o.frees).sum();
    for ((kind, id), o) in &open {
        let name = format!("{} {id:#x} (LSN {:#x})", INTENTS[*kind].1, o.lsn);
        if let Some(update) = o.bmap {
            // Finished over the replayed view when the filesystem is loaded (`intents`).
            info.unfinished_bmaps.push(UnfinishedBmap {
                id: *id,
                lsn: o.lsn,
                update,
            });
        } else if INTENTS[*kind].2 {
            let about = o
                .about
                .as_deref()
                .map(|a| format!(": {a}"))
                .unwrap_or_default();
            ::log::warn!(
                "xfs: unfinished {name}{about} in the log: the kernel would complete it after \
                 replay, ferry does not (that change is missing from the view)"
            );
        }
        info.unfinished_intents.push(name);
    }
    info.sectors = sectors.len();
    Ok(Replayed { sectors, info })
}

/// Walks the records from `tail` to `head`, handing each committed transaction to `f`
/// (false: stop). Returns the records read and why the log ended early, if it did.
fn walk(
    fs: &Xfs,
    area: LogArea,
    head: u64,
    tail: u64,
    f: &mut dyn FnMut(Trans) -> std::result::Result<bool, Fail>,
) -> Result<(u64, Option<String>)> {
    let mut w = Walker {
        fs,
        area,
        pos: tail,
        left: area.distance(tail, head),
    };
    let mut asm = Assembler::default();
    let mut records = 0u64;
    let refuse = |why: String| Error::Unsupported(format!("XFS log replay: {why}"));
    loop {
        let rec = match w.next()? {
            Step::Record(r) => r,
            Step::Head => return Ok((records, None)),
            Step::Stop(why) => return Ok((records, Some(why))),
        };
        records = records.saturating_add(1);
        let d = &rec.data;
        let (mut pos, mut ops) = (0usize, rec.ops);
        while pos < d.len() && ops > 0 {
            let stop = |why: String| format!("record at log block {}, byte {pos}: {why}", rec.at);
            // pos < d.len() (the loop's condition).
            let split = d
                .get(pos..)
                .and_then(|o| o.split_at_checked(OP_HEADER_SIZE));
            let Some((head, rest)) = split else {
                return Ok((records, Some(stop("truncated operation header".into()))));
            };
            let tid = be32(head, 0);
            let len = be32(head, 4);
            let (client, flags) = (head[8], head[9]);
            let Some(body) = rest.get(..idx(u64::from(len))) else {
                return Ok((records, Some(stop(format!("operation of {len} bytes")))));
            };
            match asm.op(rec.lsn, tid, client, flags, body) {
                Ok(OpResult::Nothing) => {}
                Ok(OpResult::Commit(t)) => match f(t) {
                    Ok(true) => {}
                    Ok(false) => return Ok((records, None)),
                    Err(Fail::Stop(why)) => return Ok((records, Some(stop(why)))),
                    Err(Fail::Refuse(why)) => return Err(refuse(why)),
                },
                Err(Fail::Stop(why)) => return Ok((records, Some(stop(why)))),
                Err(Fail::Refuse(why)) => return Err(refuse(why)),
            }
            // Inside the record (the body was taken from it); ops > 0.
            pos = pos
                .saturating_add(OP_HEADER_SIZE)
                .saturating_add(body.len());
            ops = ops.saturating_sub(1);
        }
    }
}

impl Xfs {
    /// xlog_recover_get_buf_lsn: the LSN a v5 buffer carries, None when it has none (or
    /// belongs to another filesystem), so that it is replayed regardless.
    fn buf_lsn(&self, b: &[u8]) -> Option<u64> {
        let m = be32(b, 0);
        let (lsn, uuid) = if SHORT_BTREES.contains(&m) {
            (24, 32)
        } else if DIR3_BLOCKS.contains(&m) {
            (16, 24)
        } else {
            match m {
                BMAP_CRC_MAGIC => (32, 40),
                AGF_MAGIC => (208, 64),
                AGFL_MAGIC => (24, 8),
                AGI_MAGIC => (320, 296),
                SYMLINK_MAGIC => (48, 16),
                SB_MAGIC => {
                    let u =
                        if Incompat::from_bits_retain(be32(b, 216)).contains(Incompat::META_UUID) {
                            248
                        } else {
                            32
                        };
                    (240, u)
                }
                _ if DA3_MAGICS.contains(&be16(b, 8)) => (24, 32),
                // Remote attribute values are written synchronously, never logged with an
                // LSN; quota and unknown buffers carry none either.
                _ => return None,
            }
        };
        (b.get(uuid..)?.get(..16)? == self.sb.meta_uuid).then(|| be64(b, lsn))
    }

    /// What a v5 write verifier does to a buffer recovery writes: its LSN set to the
    /// transaction's, its CRC recomputed. False when nothing was recognised.
    fn stamp_buffer(&self, b: &mut [u8], lsn: u64) -> bool {
        let m = be32(b, 0);
        let (lsn_off, crc_off): (usize, usize) = if SHORT_BTREES.contains(&m) {
            (24, 52)
        } else if DIR3_BLOCKS.contains(&m) {
            (16, 4)
        } else {
            match m {
                BMAP_CRC_MAGIC => (32, 64),
                AGF_MAGIC => (208, 216),
                AGFL_MAGIC => (24, 32),
                AGI_MAGIC => (320, 312),
                SB_MAGIC => (240, 224),
                SYMLINK_MAGIC | ATTR3_RMT_MAGIC => {
                    // One header per filesystem block.
                    // At most 64 KiB (Superblock::check_geometry).
                    let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
                    let mut any = false;
                    for blk in b.chunks_mut(bs) {
                        if blk.len() == bs && be32(blk, 0) == m {
                            put64(blk, 48, lsn);
                            let c = crc::compute(blk, 12);
                            blk[12..16].copy_from_slice(&c.to_le_bytes());
                            any = true;
                        }
                    }
                    return any;
                }
                _ if DA3_MAGICS.contains(&be16(b, 8)) => (24, 12),
                _ => return false,
            }
        };
        if b.len() < crc_off.max(lsn_off).saturating_add(8) {
            return false;
        }
        put64(b, lsn_off, lsn);
        let c = crc::compute(b, crc_off);
        put(b, crc_off, &c.to_le_bytes());
        true
    }

    fn apply_buf(
        &self,
        tx: &mut Tx,
        b: &BufItem,
        lsn: u64,
        cancels: &mut Cancels,
        stats: &mut ReplayInfo,
        touched: &mut Vec<(u64, u64)>,
    ) -> std::result::Result<(), Fail> {
        let key = (b.blkno, b.len);
        if b.flags & BLF_CANCEL != 0 {
            if let Some(c) = cancels.get_mut(&key) {
                // Counts in the map are at least 1.
                *c = c.saturating_sub(1);
                if *c == 0 {
                    cancels.remove(&key);
                }
            }
            return Ok(());
        }
        if cancels.contains_key(&key) {
            stats.buffers_cancelled = stats.buffers_cancelled.saturating_add(1);
            return Ok(());
        }
        if b.flags & BLF_DQUOT_BUFS != 0 {
            stats.quota_items = stats.quota_items.saturating_add(1);
            return Ok(());
        }
        let io = |e: Error| Fail::Refuse(format!("reading sector {}: {e}", b.blkno));
        let mut buf = tx.read(b.blkno, b.len).map_err(io)?;
        if self.sb.is_v5() {
            if let Some(disk) = self.buf_lsn(&buf) {
                if disk != 0 && disk != u64::MAX && disk >= lsn {
                    stats.newer_on_disk = stats.newer_on_disk.saturating_add(1);
                    return Ok(());
                }
            }
        }
        let chunks = logged_chunks(&b.map, &b.regions, buf.len())
            .map_err(|e| Fail::Stop(format!("buffer at sector {}: {e}", b.blkno)))?;
        if b.flags & BLF_INODE_BUF != 0 {
            // xlog_recover_do_inode_buffer: only the unlinked list pointers are replayed.
            let isz = usize::from(self.sb.inodesize);
            // Positions inside the buffer (at most MAX_BUF_BBS sectors): no overflow.
            for (slot, dip) in buf.chunks_exact_mut(isz).enumerate() {
                let at = slot.saturating_mul(isz).saturating_add(DI_NEXT_UNLINKED);
                let Some(&(off, _, r)) = chunks
                    .iter()
                    .find(|&&(o, l, _)| o <= at && at.saturating_add(4) <= o.saturating_add(l))
                else {
                    continue;
                };
                // logged_chunks checked that region r holds the chunk.
                let src = b
                    .regions
                    .get(r)
                    .and_then(|g| g.get(at.saturating_sub(off)..));
                let Some(src) = src.and_then(|g| g.get(..4)) else {
                    return Err(Fail::Stop(format!(
                        "inode buffer at sector {}: region {r} cut short",
                        b.blkno
                    )));
                };
                if src == [0, 0, 0, 0] {
                    return Err(Fail::Stop(format!(
                        "inode buffer at sector {}: null unlinked pointer at byte {at}",
                        b.blkno
                    )));
                }
                put(dip, DI_NEXT_UNLINKED, src);
                if be16(dip, 0) == DINODE_MAGIC && dip[4] == 3 {
                    let c = crc::compute(dip, DI_CRC);
                    put(dip, DI_CRC, &c.to_le_bytes());
                }
            }
        } else {
            for &(off, len, r) in &chunks {
                // logged_chunks checked both ends.
                let src = b.regions.get(r).and_then(|g| g.get(..len));
                let Some(src) = src else {
                    return Err(Fail::Stop(format!(
                        "buffer at sector {}: region {r} cut short",
                        b.blkno
                    )));
                };
                put(&mut buf, off, src);
            }
            touched.push((b.blkno, b.len));
        }
        tx.write(b.blkno, &buf)?;
        stats.buffers = stats.buffers.saturating_add(1);
        Ok(())
    }

    fn apply_icreate(
        &self,
        tx: &mut Tx,
        c: &Icreate,
        cancels: &Cancels,
        stats: &mut ReplayInfo,
    ) -> std::result::Result<(), Fail> {
        let sb = &self.sb;
        // parse_icreate checked the chunk against the AG: no overflow.
        let linear = u64::from(c.agno)
            .saturating_mul(u64::from(sb.agblocks))
            .saturating_add(u64::from(c.agbno));
        let daddr = sb.daddr(linear);
        let bbs = sb.daddr(u64::from(c.length));
        // The chunk may have been freed (and its blocks reused) later in the log.
        if cancels
            .keys()
            .any(|&(b, l)| b < daddr.saturating_add(bbs) && daddr < b.saturating_add(l))
        {
            stats.buffers_cancelled = stats.buffers_cancelled.saturating_add(1);
            return Ok(());
        }
        let isz = usize::from(sb.inodesize);
        // At most 64 KiB (Superblock::check_geometry).
        let bs = usize::try_from(sb.blocksize).unwrap_or(usize::MAX);
        let v3 = sb.is_v5();
        // agblklog + inopblog < 64 (Superblock::check_geometry).
        let ag_shift = u32::from(sb.agblklog).saturating_add(u32::from(sb.inopblog));
        let ag_base = u64::from(c.agno).checked_shl(ag_shift).unwrap_or(0);
        for blk in 0..u64::from(c.length) {
            let mut b = vec![0u8; bs];
            let slots = b.chunks_exact_mut(isz).take(usize::from(sb.inopblock));
            for (slot, dip) in slots.enumerate() {
                put16(dip, 0, DINODE_MAGIC);
                dip[4] = if v3 { 3 } else { 2 };
                put32(dip, 92, c.gen);
                put32(dip, DI_NEXT_UNLINKED, u32::MAX);
                if v3 {
                    let agino =
                        (u64::from(c.agbno).saturating_add(blk) << sb.inopblog) | wide(slot);
                    put64(dip, 152, ag_base | agino);
                    put(dip, 160, &sb.meta_uuid);
                    let crc = crc::compute(dip, DI_CRC);
                    put(dip, DI_CRC, &crc.to_le_bytes());
                }
            }
            tx.write(daddr.saturating_add(sb.daddr(blk)), &b)?;
        }
        stats.icreates = stats.icreates.saturating_add(1);
        Ok(())
    }

    /// xlog_recover_inode_commit_pass2.
    fn apply_inode(
        &self,
        tx: &mut Tx,
        it: &InodeItem,
        lsn: u64,
        cancels: &Cancels,
        stats: &mut ReplayInfo,
    ) -> std::result::Result<(), Fail> {
        if cancels.contains_key(&(it.blkno, it.len)) {
            stats.buffers_cancelled = stats.buffers_cancelled.saturating_add(1);
            return Ok(());
        }
        let ino = it.ino;
        let bad = |why: String| Fail::Stop(format!("inode {ino} (sector {}): {why}", it.blkno));
        let io = |e: Error| Fail::Refuse(format!("reading sector {}: {e}", it.blkno));
        let mut buf = tx.read(it.blkno, it.len).map_err(io)?;
        let isz = usize::from(self.sb.inodesize);
        // parse_inode checked that the inode lies inside the buffer.
        let dip = buf.get_mut(it.boffset..).and_then(|d| d.get_mut(..isz));
        let dip = dip.ok_or_else(|| bad(format!("byte {} past its buffer", it.boffset)))?;
        if be16(dip, 0) != DINODE_MAGIC {
            return Err(bad(format!(
                "no inode at byte {} of its buffer",
                it.boffset
            )));
        }
        let e = it.e;
        let l = &it.regions[0];
        if l.len() < LOG_DINODE_V2 || e.u16(l, 0) != DINODE_MAGIC {
            return Err(bad(format!("logged core of {} bytes, bad magic", l.len())));
        }
        let v5 = self.sb.is_v5();
        if dip[4] >= 3 {
            let disk = be64(dip, DI_LSN);
            if disk != 0 && disk != u64::MAX && disk > lsn {
                stats.newer_on_disk = stats.newer_on_disk.saturating_add(1);
                return Ok(());
            }
        }
        if !v5 {
            let (logged, disk) = (e.u16(l, 30), be16(dip, 30));
            if logged < disk && !(disk == DI_MAX_FLUSH && logged < DI_MAX_FLUSH >> 1) {
                stats.newer_on_disk = stats.newer_on_disk.saturating_add(1);
                return Ok(());
            }
        }
        let version = l[4];
        let core_len = if v5 { V3_CORE } else { LOG_DINODE_V2 };
        if (v5 && version != 3) || (!v5 && version > 2) || l.len() < core_len {
            return Err(bad(format!(
                "logged core version {version}, {} bytes",
                l.len()
            )));
        }
        let mode = e.u16(l, 2);
        let format = l[5];
        let fmt_ok = match mode & S_IFMT {
            S_IFREG => matches!(format, FMT_EXTENTS | FMT_BTREE),
            S_IFDIR => matches!(format, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE),
            _ => true,
        };
        let flags2 = if version == 3 { e.u64(l, 120) } else { 0 };
        let nrext64 = flags2 & DIFLAG2_NREXT64 != 0;
        let (nextents, anextents) = if nrext64 {
            (e.u64(l, 24), u64::from(e.u32(l, 76)))
        } else {
            (u64::from(e.u32(l, 76)), u64::from(e.u16(l, 80)))
        };
        let disk_core = if version == 3 { V3_CORE } else { V2_CORE };
        // The inode size is above the core (Superblock::check_geometry).
        let literal = isz.saturating_sub(disk_core);
        // di_forkoff counts 8-byte units.
        let forkoff = usize::from(l[82]) << 3;
        if !fmt_ok || nextents.saturating_add(anextents) > e.u64(l, 64) || forkoff >= literal {
            return Err(bad(format!(
                "logged core: mode {mode:o}, format {format}, {nextents}+{anextents} extents, \
                 fork offset {forkoff}"
            )));
        }
        // xfs_log_dinode_to_disk.
        put16(dip, 0, DINODE_MAGIC);
        put16(dip, 2, mode);
        dip[4] = version;
        dip[5] = format;
        put16(dip, 6, e.u16(l, 6));
        for at in [8, 12, 16] {
            put32(dip, at, e.u32(l, at));
        }
        put16(dip, 20, e.u16(l, 20));
        put16(dip, 22, e.u16(l, 22));
        let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
        let mut times = vec![32, 40, 48];
        if version == 3 {
            times.push(144);
        }
        for at in times {
            if bigtime {
                put64(dip, at, e.u64(l, at));
            } else {
                put32(dip, at, e.u32(l, at));
                let nsec = at.saturating_add(4);
                put32(dip, nsec, e.u32(l, nsec));
            }
        }
        put64(dip, 56, e.u64(l, 56));
        put64(dip, 64, e.u64(l, 64));
        put32(dip, 72, e.u32(l, 72));
        dip[82] = l[82];
        dip[83] = l[83];
        put32(dip, 84, e.u32(l, 84));
        put16(dip, 88, e.u16(l, 88));
        put16(dip, 90, e.u16(l, 90));
        put32(dip, 92, e.u32(l, 92));
        if version == 3 {
            put64(dip, 104, e.u64(l, 104));
            put64(dip, 120, flags2);
            put32(dip, 128, e.u32(l, 128));
            put64(dip, DI_LSN, lsn);
            dip[132..144].fill(0);
            put64(dip, 152, e.u64(l, 152));
            put(dip, 160, l.get(160..176).unwrap_or_default());
            dip[24..32].fill(0);
        } else {
            // The flush counter restarts, as the kernel resets it on replay.
            dip[24..32].fill(0);
        }
        if nrext64 {
            put64(dip, 24, e.u64(l, 24));
            put32(dip, 76, e.u32(l, 76));
            put16(dip, 80, e.u16(l, 80));
        } else {
            put32(dip, 76, e.u32(l, 76));
            put16(dip, 80, e.u16(l, 80));
        }
        let fields = it.fields;
        if fields & ILOG_DEV != 0 {
            put32(dip, disk_core, it.rdev);
        }
        let (dsize, asize) = if forkoff == 0 {
            (literal, 0)
        } else {
            // forkoff < literal (checked above).
            (forkoff, literal.saturating_sub(forkoff))
        };
        let mut next = 1;
        if it.regions.len() > 1 && fields & ILOG_DFORK != 0 {
            let src = &it.regions[next];
            next = 2;
            let dst = dip.get_mut(disk_core..).and_then(|d| d.get_mut(..dsize));
            let dst = dst.ok_or_else(|| bad(format!("data fork of {dsize} bytes")))?;
            match fields & ILOG_DFORK {
                ILOG_DDATA | ILOG_DEXT => {
                    if src.len() > dsize {
                        return Err(bad(format!("data fork of {} bytes in {dsize}", src.len())));
                    }
                    dst[..src.len()].copy_from_slice(src);
                }
                ILOG_DBROOT => {
                    bmbt_to_bmdr(src, dst, v5).map_err(|w| bad(format!("data fork root: {w}")))?
                }
                f => return Err(bad(format!("data fork fields {f:#x}"))),
            }
        }
        if fields & ILOG_AFORK != 0 && it.regions.len() > next {
            let src = &it.regions[next];
            if forkoff == 0 {
                return Err(bad("attribute fork logged, but the inode has none".into()));
            }
            // The core and the fork offset lie inside the inode (checked above).
            let start = disk_core.saturating_add(forkoff);
            let dst = dip.get_mut(start..).and_then(|d| d.get_mut(..asize));
            let dst = dst.ok_or_else(|| bad(format!("attribute fork of {asize} bytes")))?;
            match fields & ILOG_AFORK {
                ILOG_ADATA | ILOG_AEXT => {
                    if src.len() > asize {
                        return Err(bad(format!(
                            "attribute fork of {} bytes in {asize}",
                            src.len()
                        )));
                    }
                    dst[..src.len()].copy_from_slice(src);
                }
                ILOG_ABROOT => bmbt_to_bmdr(src, dst, v5)
                    .map_err(|w| bad(format!("attribute fork root: {w}")))?,
                f => return Err(bad(format!("attribute fork fields {f:#x}"))),
            }
        }
        if version == 3 {
            let c = crc::compute(dip, DI_CRC);
            put(dip, DI_CRC, &c.to_le_bytes());
        }
        tx.write(it.blkno, &buf)?;
        stats.inodes = stats.inodes.saturating_add(1);
        Ok(())
    }
}

/// xfs_bmbt_to_bmdr: a bmbt root as held in memory (a long-format btree block: header,
/// keys, then pointers after room for as many keys as the block could hold) into the fork's
/// on-disk root (level, numrecs, keys, pointers after room for as many keys as the fork
/// holds).
fn bmbt_to_bmdr(src: &[u8], dst: &mut [u8], v5: bool) -> std::result::Result<(), String> {
    let hdr = if v5 {
        BMBT_CRC_BLOCK_LEN
    } else {
        BMBT_BLOCK_LEN
    };
    let (Some(sbody), Some((dhead, dbody))) = (src.get(hdr..), dst.split_at_mut_checked(4)) else {
        return Err(format!("{} bytes", src.len()));
    };
    let numrecs = usize::from(be16(src, 6));
    let rmax = sbody.len() / 16;
    let dmax = dbody.len() / 16;
    if numrecs > rmax || numrecs > dmax {
        return Err(format!("{numrecs} records"));
    }
    // Level and numrecs, then the keys, then the pointers after room for max keys; every
    // part lies inside its side (numrecs <= both maxima).
    put(dhead, 0, src.get(4..8).unwrap_or_default());
    let n = numrecs.saturating_mul(8);
    let part = |at: usize| sbody.get(at..).and_then(|p| p.get(..n)).unwrap_or_default();
    put(dbody, 0, part(0));
    put(dbody, dmax.saturating_mul(8), part(rmax.saturating_mul(8)));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_dirty_map_and_regions() {
        // Chunks 0-1 and 4 dirty; the first run was logged as two regions.
        let map = [0b10011u32];
        let regions = vec![vec![1u8; 128], vec![2u8; 128], vec![3u8; 128]];
        let c = logged_chunks(&map, &regions, 1024).unwrap();
        assert_eq!(c, vec![(0, 128, 0), (128, 128, 1), (512, 128, 2)]);
        assert!(logged_chunks(&map, &regions[..2], 1024).is_err());
        assert!(logged_chunks(&map, &regions, 600).is_err());
        assert!(logged_chunks(&map, &[vec![0u8; 3]], 1024).is_err());
    }

    #[test]
    fn bmbt_root_moves_its_pointers() {
        let mut src = vec![0u8; 72 + 16 * 4];
        src[4..6].copy_from_slice(&1u16.to_be_bytes());
        src[6..8].copy_from_slice(&2u16.to_be_bytes());
        src[72..88].copy_from_slice(&[7; 16]);
        src[72 + 32..72 + 48].copy_from_slice(&[9; 16]);
        let mut dst = vec![0u8; 4 + 16 * 3];
        bmbt_to_bmdr(&src, &mut dst, true).unwrap();
        assert_eq!(&dst[..4], &[0, 1, 0, 2]);
        assert_eq!(&dst[4..20], &[7; 16]);
        assert_eq!(&dst[28..44], &[9; 16]);
        let mut tiny = vec![0u8; 4 + 16];
        assert!(bmbt_to_bmdr(&src, &mut tiny, true).is_err());
    }

    /// A BUI of one extent in the byte order of `little`.
    fn bui(little: bool, ino: u64, start: u64, off: u64, len: u32, flags: u32) -> Vec<u8> {
        let mut f = Vec::new();
        let mut put = |v: &[u8]| {
            if little {
                f.extend(v.iter().rev());
            } else {
                f.extend(v);
            }
        };
        put(&LI_BUI.to_be_bytes());
        put(&1u16.to_be_bytes());
        put(&1u32.to_be_bytes());
        put(&0x77u64.to_be_bytes());
        put(&ino.to_be_bytes());
        put(&start.to_be_bytes());
        put(&off.to_be_bytes());
        put(&len.to_be_bytes());
        put(&flags.to_be_bytes());
        f
    }

    #[test]
    fn bmap_and_attr_intents_parse_and_refuse_garbage() {
        // 4 AGs of 1024 4 KiB blocks, 8 inodes a block.
        let sb = Superblock::parse(&crate::fs::xfs::superblock::tests::sector(true, 0, 0)).unwrap();
        for little in [true, false] {
            let e = Endian { little };
            let f = bui(little, 128, (1 << 10) | 5, 7, 3, BMAP_MAP | BMAP_UNWRITTEN);
            assert_eq!(item_type(&f).map(|t| t.0), Some(LI_BUI));
            let u = parse_bui(&sb, &f, e).unwrap();
            let want = MapUpdate {
                ino: 128,
                attr: false,
                unmap: false,
                unwritten: true,
                off: 7,
                start: (1 << 10) | 5,
                len: 3,
            };
            assert_eq!(u, want);
            let u = parse_bui(
                &sb,
                &bui(little, 128, 5, 7, 3, BMAP_UNMAP | BMAP_ATTR_FORK),
                e,
            );
            assert!(u.is_ok_and(|u| u.unmap && u.attr));
            // Truncated, garbled or out-of-range: an error naming the field, never a panic.
            for n in 0..f.len() {
                assert!(parse_bui(&sb, &f[..n], e).is_err());
                assert!(describe_attri(&f[..n], &[], e).is_err());
            }
            let bad = [
                bui(little, 128, 5, 7, 3, 3),
                bui(little, 128, 5, 7, 3, BMAP_MAP | 1 << 20),
                bui(little, 128, 5, 7, 3, BMAP_MAP | BMAP_REALTIME),
                bui(little, 3, 5, 7, 3, BMAP_MAP),
                bui(little, 1 << 40, 5, 7, 3, BMAP_MAP),
                bui(little, 128, 5, 7, 0, BMAP_MAP),
                bui(little, 128, 5, MAX_FILEOFF - 1, 3, BMAP_MAP),
                bui(little, 128, 5, 7, 1 << 22, BMAP_MAP),
                bui(little, 128, 1022, 7, 3, BMAP_MAP),
                bui(little, 128, 4 << 10, 7, 3, BMAP_MAP),
                bui(little, 128, u64::MAX, u64::MAX, u32::MAX, u32::MAX),
            ];
            for b in &bad {
                let err = parse_bui(&sb, b, e).unwrap_err();
                assert!(err.contains("xfs_map_extent"), "{err}");
            }
            let mut two = bui(little, 128, 5, 7, 3, BMAP_MAP);
            two[4..8].copy_from_slice(&if little { [2, 0, 0, 0] } else { [0, 0, 0, 2] });
            assert!(parse_bui(&sb, &two, e).is_err());
            let mut long = f.clone();
            long.extend([0; 32]);
            assert!(parse_bui(&sb, &long, e).is_err());

            // An ATTRI setting user.x (name length 6, value length 2).
            let mut a = vec![0u8; ATTRI_FORMAT];
            let w32 = |a: &mut Vec<u8>, at: usize, v: u32| {
                let b = if little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                a[at..at + 4].copy_from_slice(&b);
            };
            w32(&mut a, 24, 1);
            w32(&mut a, 28, 6);
            w32(&mut a, 32, 2);
            let name = [b"user.x".to_vec()];
            let d = describe_attri(&a, &name, e).unwrap();
            assert!(d.starts_with("set of \"user.x\""), "{d}");
            assert!(describe_attri(&a, &[], e).is_err());
            assert!(describe_attri(&a, &[b"us".to_vec()], e).is_err());
            for (at, v) in [(24, 9), (28, 0), (28, 300), (32, 1 << 20)] {
                let mut g = a.clone();
                w32(&mut g, at, v);
                assert!(describe_attri(&g, &name, e).is_err());
            }
            // Every byte garbled in turn, whole or cut: no panic either way.
            for i in 0..a.len() {
                let mut g = a.clone();
                g[i] ^= 0xa5;
                let _ = describe_attri(&g, &name, e);
                let mut h = f.clone();
                h[i % f.len()] ^= 0xa5;
                let _ = parse_bui(&sb, &h, e);
            }
        }
    }

    #[test]
    fn transactions_assemble_across_continuations() {
        let mut a = Assembler::default();
        let hdr = {
            let mut h = TRANS_HEADER_MAGIC.to_le_bytes().to_vec();
            h.extend([0u8; 12]);
            h
        };
        let mut fmt = LI_BUF.to_le_bytes().to_vec();
        fmt.extend(2u16.to_le_bytes());
        assert!(matches!(
            a.op(5, 7, CLIENT_TRANSACTION, START_TRANS, &[]),
            Ok(OpResult::Nothing)
        ));
        assert!(a.op(5, 7, CLIENT_TRANSACTION, 0, &hdr).is_ok());
        assert!(a.op(5, 7, CLIENT_TRANSACTION, 0, &fmt).is_ok());
        assert!(a
            .op(5, 7, CLIENT_TRANSACTION, CONTINUE_TRANS, &[1; 100])
            .is_ok());
        assert!(a
            .op(
                6,
                7,
                CLIENT_TRANSACTION,
                WAS_CONT_TRANS | END_TRANS,
                &[2; 28]
            )
            .is_ok());
        // Another transaction's operations without a start are ignored.
        assert!(matches!(
            a.op(6, 9, CLIENT_TRANSACTION, 0, &[1]),
            Ok(OpResult::Nothing)
        ));
        let Ok(OpResult::Commit(t)) = a.op(6, 7, CLIENT_TRANSACTION, COMMIT_TRANS, &[]) else {
            panic!("no commit");
        };
        assert_eq!(t.lsn, 5);
        assert_eq!(t.items.len(), 1);
        assert_eq!(t.items[0].regions[1].len(), 128);
        assert_eq!(a.pending, 0);
        assert!(a.op(6, 7, 0x11, 0, &[]).is_err());
    }
}
