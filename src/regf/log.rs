//! Transaction logs (`NAME.LOG1`, `NAME.LOG2`) applied in memory to a dirty hive, as Windows
//! does when it loads one. The primary file (and the image holding it) is never written: the
//! hive's bytes are patched in the buffer [`super::Hive`] holds.
//!
//! Format and rules after Maxim Suhanov's "Windows registry file format specification"
//! (github.com/msuhanov/regf), sections "Format of transaction log files", "Dirty state of a
//! hive" and "Multiple transaction log files":
//!
//! - Both formats start with a 512-byte partial copy of the base block (signature, sequence
//!   numbers, checksum over its first 508 bytes), whose file type says the format: 1 (2 on
//!   Windows 2000) for the old format, 6 for the new one (Windows 8.1 and later).
//! - Old format: a `DIRT` dirty vector at offset 512, one bit per 512-byte page of the hive
//!   bins data, then the dirty pages themselves from the next sector on, in bit order. One
//!   log is applied: the one with the latest "last written" time (LOG1 on a tie), as the
//!   Windows 8 kernel does.
//! - New format: `HvLE` log entries from offset 512, each a multiple of 512 bytes, checked by
//!   two Marvin32 hashes; each carries a sequence number, the hive bins data size after it
//!   (the hive may grow) and dirty page references (offset, size) followed by the pages.
//!   Entries from both logs are applied, the log with the earlier entries first; the first
//!   entry must carry its log's sequence number (and, with a valid primary base block, not be
//!   older than the primary), each next one the number after; the first entry that breaks
//!   the chain, or fails a hash or size check, ends recovery from that log.
//! - A primary whose base block fails its checksum gets the base block of a valid log, and
//!   only that log (for the new format, the one with the latest entries) is applied.
//!
//! Trouble with a log never fails the hive: the log (or its remaining entries) is left out
//! and a warning names the file, the structure and its offset.

use super::base_block::{self, BaseBlock, BASE_BLOCK_LEN};
use super::Error;
use crate::bytes::{le32, le64, try_le32, wide};

/// A log's copy of the base block is one 512-byte sector (clustering factor 1, which the
/// specification says is the only value Windows 8 and later write).
pub const LOG_BASE_LEN: usize = 512;

/// Log entries, dirty vector sectors and old-format dirty pages are all 512-byte aligned.
const SECTOR: usize = 512;

/// An `HvLE` entry's header: signature, size, flags, sequence, hive bins size, page count,
/// Hash-1, Hash-2.
const ENTRY_HEADER: usize = 40;

/// Hive bins grow and shrink in 4 KiB steps; an entry whose hive bins size is not one is
/// bogus (specification, log entries note 8).
const HBIN_ALIGN: u32 = 4096;

/// How large a log may make the hive bins. A log entry carries the hive's new size and the
/// hive is held in memory, so an unchecked size from a damaged log would be an allocation of
/// up to 4 GiB. Inspection refuses hive files over 512 MiB (real SOFTWARE hives reach a few
/// hundred MiB), and a hive grown by its log may not exceed that either.
pub const MAX_HIVE_BINS: u32 = 512 << 20;

/// The seed Windows uses for a log entry's Marvin32 hashes (specification, log entries note 3:
/// the bytes `82 EF 4D 88 7A 4E 55 C5`, taken as one number whose low half seeds the first
/// state word, as the specification author's own reader, yarp, does).
const MARVIN_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

/// File types of a log's base block copy.
const TYPE_LOG_OLD: u32 = 1;
const TYPE_LOG_OLD_W2K: u32 = 2;
const TYPE_LOG_NEW: u32 = 6;

/// Base block offsets the recovery reads or sets (specification, "Base block").
const AT_PRIMARY_SEQ: usize = 0x04;
const AT_SECONDARY_SEQ: usize = 0x08;
const AT_TIMESTAMP: usize = 0x0c;
const AT_FILE_TYPE: usize = 0x1c;
const AT_HBINS_LEN: usize = 0x28;
const AT_FLAGS: usize = 0x90;
const AT_CHECKSUM: usize = 0x1fc;

/// One transaction log as read from beside the hive.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// The name warnings give it (`SYSTEM.LOG1`, or a guest path).
    pub name: String,
    pub data: Vec<u8>,
}

/// What recovery did to a hive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The primary's base block said the hive was dirty (or failed its checksum).
    pub was_dirty: bool,
    /// Per log applied: its name and the sequence numbers (new format) or dirty pages (old
    /// format) taken from it, e.g. `SYSTEM.LOG1: entries 7-9`.
    pub applied: Vec<String>,
    /// Logs and entries left out, each naming the file, structure and offset.
    pub warnings: Vec<String>,
}

/// Marvin32 of `data` (the 64-bit result: second state word high, first low).
fn marvin32(data: &[u8], seed: u64) -> u64 {
    fn block(lo: &mut u32, hi: &mut u32) {
        *hi ^= *lo;
        *lo = lo.rotate_left(20).wrapping_add(*hi);
        *hi = hi.rotate_left(9) ^ *lo;
        *lo = lo.rotate_left(27).wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    }
    let [l0, l1, l2, l3, h0, h1, h2, h3] = seed.to_le_bytes();
    let (mut lo, mut hi) = (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([h0, h1, h2, h3]),
    );
    let words = data.chunks_exact(4);
    let tail = words.remainder();
    for w in words {
        lo = lo.wrapping_add(le32(w, 0));
        block(&mut lo, &mut hi);
    }
    // The 0-3 trailing bytes, then the 0x80 end marker, in one little-endian word.
    let mut last = [0u8; 4];
    last.get_mut(..tail.len())
        .unwrap_or_default()
        .copy_from_slice(tail);
    if let Some(m) = last.get_mut(tail.len()) {
        *m = 0x80;
    }
    lo = lo.wrapping_add(u32::from_le_bytes(last));
    block(&mut lo, &mut hi);
    block(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Sets the u32 at `at`; callers pass base-block offsets of a buffer at least a base block
/// long (a hive or a log that passed its checks), so the field is always there.
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(f) = b.get_mut(at..).and_then(|f| f.get_mut(..4)) {
        f.copy_from_slice(&v.to_le_bytes());
    }
}

/// A log's base block copy, checked as the specification's old-format note 2 asks: the
/// signature, the checksum over its first 508 bytes, a log file type, and equal sequence
/// numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogBase {
    seq: u32,
    timestamp: u64,
    file_type: u32,
    hbins_len: u32,
}

fn log_base(data: &[u8]) -> Result<LogBase, Error> {
    let err = |at: usize, m: String| Err(Error::new("log base block", wide(at), m));
    let Some(b) = data.get(..LOG_BASE_LEN) else {
        return err(
            0,
            format!("log is {} bytes, shorter than its base block", data.len()),
        );
    };
    if &b[..4] != b"regf" {
        return err(0, format!("signature {:02x?}, expected \"regf\"", &b[..4]));
    }
    let stored = le32(b, AT_CHECKSUM);
    let computed = base_block::checksum(b);
    if stored != computed {
        return err(
            AT_CHECKSUM,
            format!("checksum {stored:#010x}, computed {computed:#010x}"),
        );
    }
    let primary = le32(b, AT_PRIMARY_SEQ);
    let secondary = le32(b, AT_SECONDARY_SEQ);
    if primary != secondary {
        return err(
            AT_PRIMARY_SEQ,
            format!(
                "sequence numbers {primary} and {secondary} differ (the log was being written)"
            ),
        );
    }
    let file_type = le32(b, AT_FILE_TYPE);
    if ![TYPE_LOG_OLD, TYPE_LOG_OLD_W2K, TYPE_LOG_NEW].contains(&file_type) {
        return err(
            AT_FILE_TYPE,
            format!("file type {file_type}, expected 1, 2 (old log) or 6 (new log)"),
        );
    }
    Ok(LogBase {
        seq: primary,
        timestamp: le64(b, AT_TIMESTAMP),
        file_type,
        hbins_len: le32(b, AT_HBINS_LEN),
    })
}

/// One dirty page of a log entry: where it goes in the hive bins and where its bytes are in
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    hbins_offset: u32,
    size: u32,
    log_offset: usize,
}

/// An `HvLE` entry that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    offset: usize,
    seq: u32,
    flags: u32,
    hbins_len: u32,
    pages: Vec<Page>,
}

/// The entry at `at`, or why it is not one (which ends the log: specification note 8).
/// `Ok(None)` at the end of the file or where no entry starts (zeros, old remnants).
fn entry_at(log: &[u8], at: usize) -> Result<Option<Entry>, Error> {
    // Offsets in a log held in memory: `at` plus a field offset below the entry's size.
    let err = |off: usize, m: String| {
        Err(Error::new(
            "HvLE log entry",
            wide(at.saturating_add(off)),
            m,
        ))
    };
    let Some(head) = log.get(at..at.saturating_add(ENTRY_HEADER)) else {
        return Ok(None);
    };
    if &head[..4] != b"HvLE" {
        return Ok(None);
    }
    let field = |o: usize| le32(head, o);
    let size = usize::try_from(field(4)).unwrap_or(usize::MAX);
    if size < ENTRY_HEADER || size % SECTOR != 0 {
        return err(0, format!("size {size} is not a positive multiple of 512"));
    }
    let Some(body) = at.checked_add(size).and_then(|end| log.get(at..end)) else {
        return err(
            0,
            format!(
                "entry of {size} bytes runs past the log's end ({} bytes)",
                log.len()
            ),
        );
    };
    let hash1 = le64(body, 24);
    let hash2 = le64(body, 32);
    let (header, pages_area) = body.split_at(ENTRY_HEADER);
    if marvin32(header.get(..32).unwrap_or_default(), MARVIN_SEED) != hash2 {
        return err(32, "Hash-2 does not match the entry's header".into());
    }
    if marvin32(pages_area, MARVIN_SEED) != hash1 {
        return err(24, "Hash-1 does not match the entry's pages".into());
    }
    let hbins_len = field(16);
    if hbins_len == 0 || hbins_len % HBIN_ALIGN != 0 {
        return err(
            16,
            format!("hive bins data size {hbins_len:#x} is not a positive multiple of 4096"),
        );
    }
    if hbins_len > MAX_HIVE_BINS {
        return err(
            16,
            format!("hive bins data size {hbins_len:#x} exceeds the {MAX_HIVE_BINS:#x} bytes a hive may have here"),
        );
    }
    let count = field(20);
    let refs = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(8))
        .and_then(|l| pages_area.get(..l));
    let Some(refs) = refs else {
        return err(
            20,
            format!("{count} dirty page references do not fit in the entry"),
        );
    };
    // Where the next page's bytes start, relative to the entry (at most its size).
    let mut data_at = ENTRY_HEADER.saturating_add(refs.len());
    let mut pages = Vec::with_capacity(refs.len() / 8);
    for (i, r) in refs.chunks_exact(8).enumerate() {
        let ref_at = ENTRY_HEADER.saturating_add(i.saturating_mul(8));
        let (off, len) = (le32(r, 0), le32(r, 4));
        let fits = off
            .checked_add(len)
            .is_some_and(|e| e <= hbins_len && len > 0);
        let data_end = usize::try_from(len)
            .ok()
            .and_then(|l| data_at.checked_add(l))
            .filter(|&e| e <= size);
        match (fits, data_end) {
            (true, Some(end)) => {
                pages.push(Page {
                    hbins_offset: off,
                    size: len,
                    // Inside the entry, which lies inside the log.
                    log_offset: at.saturating_add(data_at),
                });
                data_at = end;
            }
            (false, _) => {
                return err(
                    ref_at,
                    format!("dirty page at {off:#x} of {len} bytes is empty or outside the {hbins_len:#x} bytes of hive bins"),
                )
            }
            (true, None) => {
                return err(
                    ref_at,
                    format!("dirty page {i} of {len} bytes runs past the entry's end"),
                )
            }
        }
    }
    Ok(Some(Entry {
        offset: at,
        seq: field(12),
        flags: field(8),
        hbins_len,
        pages,
    }))
}

/// The entries of a new-format log in file order, up to the first that fails its checks
/// (reported) or where none starts.
fn entries(log: &LogFile, warnings: &mut Vec<String>) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = LOG_BASE_LEN;
    loop {
        match entry_at(&log.data, at) {
            Ok(Some(e)) => {
                // The entry's size was checked to fit in the log.
                at = at.saturating_add(log_entry_size(&log.data, at));
                out.push(e);
            }
            Ok(None) => break,
            Err(e) => {
                warnings.push(format!("{}: {e}; later entries not applied", log.name));
                break;
            }
        }
    }
    out
}

fn log_entry_size(log: &[u8], at: usize) -> usize {
    let size = log.get(at..).and_then(|e| try_le32(e, 4)).unwrap_or(0);
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Resizes the hive bins to `hbins_len` (zeros where they grow); `hbins_len` was checked
/// against [`MAX_HIVE_BINS`].
fn grow(hive: &mut Vec<u8>, hbins_len: u32) {
    let len = usize::try_from(hbins_len).unwrap_or(usize::MAX);
    hive.resize(BASE_BLOCK_LEN.saturating_add(len), 0);
}

fn apply_entry(hive: &mut Vec<u8>, log: &[u8], e: &Entry) {
    grow(hive, e.hbins_len);
    let bins = hive.get_mut(BASE_BLOCK_LEN..).unwrap_or_default();
    for p in &e.pages {
        // Both ranges were checked by `entry_at` against the hive bins size and the entry.
        let dst = usize::try_from(p.hbins_offset).ok();
        let len = usize::try_from(p.size).ok();
        let (Some(dst), Some(len)) = (dst, len) else {
            continue;
        };
        let src = log.get(p.log_offset..).and_then(|s| s.get(..len));
        let dst = bins.get_mut(dst..).and_then(|d| d.get_mut(..len));
        if let (Some(src), Some(dst)) = (src, dst) {
            dst.copy_from_slice(src);
        }
    }
    put_u32(hive, AT_HBINS_LEN, e.hbins_len);
    let flags = le32(hive, AT_FLAGS);
    // Only the "KTM locked" bit travels in an entry (specification, log entries note 11).
    put_u32(hive, AT_FLAGS, (flags & !1) | (e.flags & 1));
}

/// Marks the recovered hive clean at `seq` and recomputes its checksum.
fn seal(hive: &mut [u8], seq: u32) {
    put_u32(hive, AT_PRIMARY_SEQ, seq);
    put_u32(hive, AT_SECONDARY_SEQ, seq);
    put_u32(hive, AT_FILE_TYPE, 0);
    let c = base_block::checksum(hive);
    put_u32(hive, AT_CHECKSUM, c);
}

/// Applies new-format `logs` (already checked, with their base blocks) to `hive`. `floor` is
/// the primary's secondary sequence number when its base block is valid: older entries are
/// already in the primary.
fn apply_new(
    hive: &mut Vec<u8>,
    mut logs: Vec<(&LogFile, LogBase)>,
    floor: Option<u32>,
    rec: &mut Recovery,
) -> Option<u32> {
    // The log with the earlier entries first (specification, "Multiple transaction log
    // files", new format): their base blocks carry the sequence number of their first entry.
    logs.sort_by_key(|(_, b)| b.seq);
    let mut last: Option<u32> = None;
    for (log, base) in logs {
        let mut taken: Option<(u32, u32)> = None;
        for e in entries(log, &mut rec.warnings) {
            let expected = match last {
                Some(n) => e.seq == n.wrapping_add(1),
                None => e.seq == base.seq && floor.is_none_or(|f| e.seq >= f),
            };
            if !expected {
                if taken.is_none() && last.is_none() {
                    rec.warnings.push(format!(
                        "{}: HvLE log entry at {:#x}: sequence number {} is not the log's {} at or after the hive's {}; log not applied",
                        log.name,
                        e.offset,
                        e.seq,
                        base.seq,
                        floor.map_or("-".into(), |f| f.to_string()),
                    ));
                }
                break;
            }
            apply_entry(hive, &log.data, &e);
            last = Some(e.seq);
            taken = Some((taken.map_or(e.seq, |t| t.0), e.seq));
        }
        if let Some((a, b)) = taken {
            rec.applied.push(format!("{}: entries {a}-{b}", log.name));
        }
    }
    last
}

/// Applies an old-format log: the `DIRT` bitmap's dirty 512-byte pages. The whole log is
/// checked before any byte of the hive changes, and the hive bins it touches must still
/// chain (signature, offset, size) afterwards; otherwise it is left out.
fn apply_old(hive: &mut Vec<u8>, log: &LogFile, base: &LogBase) -> Result<usize, Error> {
    let err = |at: usize, m: String| Err(Error::new("dirty vector", wide(at), m));
    let d = &log.data;
    if base.hbins_len == 0 || base.hbins_len % HBIN_ALIGN != 0 || base.hbins_len > MAX_HIVE_BINS {
        return Err(Error::new(
            "log base block",
            wide(AT_HBINS_LEN),
            format!(
                "hive bins data size {:#x} is not a multiple of 4096 up to {MAX_HIVE_BINS:#x}",
                base.hbins_len
            ),
        ));
    }
    // The signature, then the bitmap: one bit per sector of the hive bins (at most 2^20
    // sectors, as the size was checked against MAX_HIVE_BINS above).
    let vector = d.get(SECTOR..).unwrap_or_default();
    if vector.get(..4) != Some(b"DIRT".as_slice()) {
        return err(SECTOR, "no \"DIRT\" signature".into());
    }
    let bins_len = usize::try_from(base.hbins_len).unwrap_or(usize::MAX);
    let bits = bins_len / SECTOR;
    let bitmap_at = SECTOR.saturating_add(4);
    let Some(bitmap) = vector.get(4..).and_then(|b| b.get(..bits.div_ceil(8))) else {
        return err(
            bitmap_at,
            format!("bitmap of {bits} bits runs past the log's end"),
        );
    };
    // The pages start at the sector after the bitmap.
    let pages_at = bitmap_at
        .saturating_add(bitmap.len())
        .next_multiple_of(SECTOR);
    let dirty: Vec<usize> = bitmap
        .iter()
        .flat_map(|byte| (0..8).map(move |b| byte >> b & 1 != 0))
        .take(bits)
        .enumerate()
        .filter_map(|(i, set)| set.then_some(i))
        .collect();
    let pages = d
        .get(pages_at..)
        .and_then(|p| p.get(..dirty.len().checked_mul(SECTOR)?));
    let Some(pages) = pages else {
        return Err(Error::new(
            "dirty pages",
            wide(pages_at),
            format!(
                "{} dirty pages need {} bytes from {pages_at}, the log has {}",
                dirty.len(),
                dirty.len().saturating_mul(SECTOR),
                d.len()
            ),
        ));
    };
    let mut out = hive.clone();
    grow(&mut out, base.hbins_len);
    let bins = out.get_mut(BASE_BLOCK_LEN..).unwrap_or_default();
    let mut sectors = bins.chunks_exact_mut(SECTOR);
    let mut next = 0;
    for (&i, page) in dirty.iter().zip(pages.chunks_exact(SECTOR)) {
        // `dirty` is ascending and below the bins' sector count (the bins were grown to it).
        if let Some(s) = sectors.nth(i.saturating_sub(next)) {
            s.copy_from_slice(page);
        }
        next = i.saturating_add(1);
    }
    check_bins(&out, base.hbins_len, &dirty)
        .map_err(|m| Error::new("dirty pages", wide(pages_at), m))?;
    put_u32(&mut out, AT_HBINS_LEN, base.hbins_len);
    *hive = out;
    Ok(dirty.len())
}

/// Walks the hive bins chain and checks each bin that holds a dirty page: its signature, its
/// offset field, and a size of at least 4 KiB in 4 KiB steps inside the hive bins
/// (specification, old format, "Dirty pages").
fn check_bins(hive: &[u8], hbins_len: u32, dirty: &[usize]) -> Result<(), String> {
    let end = hbins_len;
    let bins = hive.get(BASE_BLOCK_LEN..).unwrap_or_default();
    let mut at = 0u32;
    // Dirty sectors as hive bins offsets (below hbins_len, so they fit a u32).
    let mut d = dirty
        .iter()
        .map(|&i| u32::try_from(i.saturating_mul(SECTOR)).unwrap_or(u32::MAX))
        .peekable();
    while at < end {
        let h = usize::try_from(at)
            .ok()
            .and_then(|a| bins.get(a..))
            .unwrap_or_default();
        let size = try_le32(h, 8).unwrap_or(0);
        let next_ok = at.checked_add(size).filter(|&e| e <= end);
        let ok = h.get(..4) == Some(b"hbin".as_slice())
            && try_le32(h, 4) == Some(at)
            && size >= HBIN_ALIGN
            && size % HBIN_ALIGN == 0
            && next_ok.is_some();
        let next = match next_ok {
            Some(n) if ok => n,
            _ => at.saturating_add(HBIN_ALIGN),
        };
        let touched = d.peek().is_some_and(|&p| p < next);
        while d.peek().is_some_and(|&p| p < next) {
            d.next();
        }
        if touched && !ok {
            return Err(format!(
                "the hive bin at hive bins offset {at:#x} is not valid after the log's pages"
            ));
        }
        if !ok {
            // A bin the log did not touch: as the primary had it; its damage is the reader's
            // to report.
            return Ok(());
        }
        at = next;
    }
    Ok(())
}

/// Applies `logs` to a copy of the hive bytes `primary` when its base block says it is dirty
/// (or fails its checksum): the recovered bytes, `None` when no log applied. Never fails: see
/// the module documentation.
pub fn recover(primary: &[u8], logs: &[LogFile]) -> (Option<Vec<u8>>, Recovery) {
    let mut rec = Recovery::default();
    let base = BaseBlock::parse(primary);
    match &base {
        Ok(b) if !b.dirty() => return (None, rec),
        Err(_) if primary.len() < BASE_BLOCK_LEN => return (None, rec),
        _ => {}
    }
    rec.was_dirty = true;
    let mut valid: Vec<(&LogFile, LogBase)> = Vec::new();
    for log in logs {
        if log.data.is_empty() {
            // Windows leaves empty LOG1/LOG2 files beside hives that use one log.
            continue;
        }
        match log_base(&log.data) {
            Ok(b) => valid.push((log, b)),
            Err(e) => rec
                .warnings
                .push(format!("{}: {e}; log not applied", log.name)),
        }
    }
    let (new, old): (Vec<_>, Vec<_>) = valid
        .into_iter()
        .partition(|(_, b)| b.file_type == TYPE_LOG_NEW);
    let mut hive = primary.to_vec();
    if !new.is_empty() {
        let (chosen, floor) = match &base {
            Ok(b) => (new, Some(b.secondary_seq)),
            Err(_) => {
                // Only the log with the latest entries, whose base block replaces the
                // primary's (specification, new format note 6 and "Multiple transaction log
                // files").
                let latest = new.into_iter().max_by_key(|(l, b)| {
                    (entries(l, &mut Vec::new()).last().map(|e| e.seq), b.seq)
                });
                let chosen: Vec<_> = latest.into_iter().collect();
                hive[..LOG_BASE_LEN].copy_from_slice(&chosen[0].0.data[..LOG_BASE_LEN]);
                (chosen, None)
            }
        };
        return match apply_new(&mut hive, chosen, floor, &mut rec) {
            Some(seq) => {
                seal(&mut hive, seq);
                (Some(hive), rec)
            }
            None => (None, rec),
        };
    }
    // Old format: the log with the latest "last written" time, the first given (LOG1) on a
    // tie, as the Windows 8 kernel picks.
    let Some((log, lb)) = old.iter().rev().max_by_key(|(_, b)| b.timestamp).cloned() else {
        return (None, rec);
    };
    if base.is_err() {
        hive[..LOG_BASE_LEN].copy_from_slice(&log.data[..LOG_BASE_LEN]);
    }
    match apply_old(&mut hive, log, &lb) {
        Ok(n) => {
            rec.applied
                .push(format!("{}: {n} dirty pages of 512 bytes", log.name));
            seal(&mut hive, lb.seq);
            (Some(hive), rec)
        }
        Err(e) => {
            rec.warnings
                .push(format!("{}: {e}; log not applied", log.name));
            (None, rec)
        }
    }
}

/// The test suite's log writer (also used by the integration tests).
#[cfg(test)]
#[path = "../../tests/integration/common/regflog.rs"]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod regflog;

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::regflog::{self, Entry as E};
    use super::*;
    use crate::regf::tests::tiny;
    use crate::regf::{Data, Hive};

    /// File offset of the DWORD data of tiny()'s value (inline in its vk).
    const DWORD_AT: usize = BASE_BLOCK_LEN + 0x9c;

    /// tiny() with its value set to `v`.
    fn with_value(v: u32) -> Vec<u8> {
        let mut h = tiny();
        put_u32(&mut h, DWORD_AT, v);
        h
    }

    fn value(h: &Hive) -> u32 {
        match h.value("\\", "x").unwrap().unwrap().typed() {
            Data::Dword(n) => n,
            d => panic!("{d:?}"),
        }
    }

    /// A dirty tiny() (value 7) at secondary sequence number 1.
    fn dirty_a() -> Vec<u8> {
        let mut a = tiny();
        put_u32(&mut a, AT_PRIMARY_SEQ, 1);
        put_u32(&mut a, AT_SECONDARY_SEQ, 1);
        regflog::mark_dirty(&mut a);
        a
    }

    /// An entry turning tiny() into `b`, at `seq`.
    fn entry_to(b: &[u8], seq: u32) -> E {
        E {
            seq,
            hbins_len: regflog::hbins_len(b),
            pages: regflog::dirty_pages(&tiny(), b, 4096),
        }
    }

    fn log(name: &str, data: Vec<u8>) -> LogFile {
        LogFile {
            name: name.into(),
            data,
        }
    }

    fn open(a: Vec<u8>, logs: &[LogFile]) -> Hive {
        Hive::open_with_logs(a, logs).unwrap()
    }

    #[test]
    fn new_format_entry_applies_and_grows_the_hive() {
        let a = dirty_a();
        assert_eq!(regflog::seqs(&a), (2, 1));
        // B: the value changed and a second (empty) hive bin appended.
        let mut b = with_value(9);
        let mut bin = vec![0u8; 4096];
        bin[..4].copy_from_slice(b"hbin");
        bin[4..8].copy_from_slice(&4096u32.to_le_bytes());
        bin[8..12].copy_from_slice(&4096u32.to_le_bytes());
        bin[0x20..0x24].copy_from_slice(&(4096u32 - 0x20).to_le_bytes());
        b.extend(bin);
        put_u32(&mut b, AT_HBINS_LEN, 8192);
        let l = regflog::new_log(&a, &[entry_to(&b, 2)]);
        let h = open(a.clone(), &[log("SYSTEM.LOG1", l)]);
        assert_eq!(value(&h), 9);
        assert!(!h.dirty());
        assert_eq!(h.base.hbins_len, 8192);
        assert_eq!(h.recovery.applied, vec!["SYSTEM.LOG1: entries 2-2"]);
        assert!(h.recovery.was_dirty && h.recovery.warnings.is_empty());
        // Without logs the dirty hive reads as its primary says.
        let plain = open(a, &[]);
        assert_eq!(value(&plain), 7);
        assert!(plain.dirty());
    }

    #[test]
    fn a_bad_hash_leaves_the_primary_with_a_warning() {
        let a = dirty_a();
        let mut l = regflog::new_log(&a, &[entry_to(&with_value(9), 2)]);
        let last = l.len() - 1;
        l[last] ^= 1;
        let h = open(a.clone(), &[log("SYSTEM.LOG1", l)]);
        assert_eq!(value(&h), 7);
        assert!(h.dirty() && h.recovery.applied.is_empty());
        let w = h.recovery.warnings.join("\n");
        assert!(
            w.contains("SYSTEM.LOG1: regf HvLE log entry at 0x218: Hash-1"),
            "{w}"
        );
        // A header byte: Hash-2.
        let mut l = regflog::new_log(&a, &[entry_to(&with_value(9), 2)]);
        l[LOG_BASE_LEN + 12] ^= 1;
        let h = open(a, &[log("SYSTEM.LOG2", l)]);
        assert_eq!(value(&h), 7);
        assert!(
            h.recovery.warnings[0].contains("Hash-2"),
            "{:?}",
            h.recovery
        );
    }

    /// LOG2 holds sequence 2-3, LOG1 4-5: both are applied, LOG2 first; a later entry
    /// whose hash fails ends recovery there.
    #[test]
    fn two_logs_chain_by_sequence_numbers() {
        let a = dirty_a();
        let log2 = regflog::new_log(
            &a,
            &[entry_to(&with_value(8), 2), entry_to(&with_value(10), 3)],
        );
        let mut log1 = regflog::new_log(
            &a,
            &[entry_to(&with_value(11), 4), entry_to(&with_value(12), 5)],
        );
        let h = open(
            a.clone(),
            &[log("S.LOG1", log1.clone()), log("S.LOG2", log2.clone())],
        );
        assert_eq!(value(&h), 12);
        assert_eq!(
            h.recovery.applied,
            vec!["S.LOG2: entries 2-3", "S.LOG1: entries 4-5"]
        );
        assert_eq!(h.base.primary_seq, 5);
        // Entry 5 damaged: recovery stops after 4.
        let second = LOG_BASE_LEN + 4096 + 512;
        log1[second + 100] ^= 0xff;
        let h = open(
            a.clone(),
            &[log("S.LOG1", log1), log("S.LOG2", log2.clone())],
        );
        assert_eq!(value(&h), 11);
        assert_eq!(h.recovery.warnings.len(), 1, "{:?}", h.recovery);
        // A gap (LOG1 starting at 6): only LOG2.
        let gap = regflog::new_log(&a, &[entry_to(&with_value(13), 6)]);
        let h = open(a.clone(), &[log("S.LOG1", gap), log("S.LOG2", log2)]);
        assert_eq!(value(&h), 10);
        // Entries older than the primary (sequence 0 < secondary 1) are not applied.
        let stale = regflog::new_log(&a, &[entry_to(&with_value(13), 0)]);
        let h = open(a, &[log("S.LOG1", stale)]);
        assert_eq!(value(&h), 7);
        assert!(
            h.recovery.warnings[0].contains("not applied"),
            "{:?}",
            h.recovery
        );
    }

    #[test]
    fn clean_hive_ignores_its_logs() {
        let a = tiny();
        let l = regflog::new_log(&a, &[entry_to(&with_value(9), 1)]);
        let h = open(a, &[log("S.LOG1", l)]);
        assert_eq!(value(&h), 7);
        assert!(!h.recovery.was_dirty && h.recovery.applied.is_empty());
    }

    #[test]
    fn old_format_dirty_vector_applies() {
        let a = dirty_a();
        let b = with_value(9);
        let l = regflog::old_log(&a, &b, 2);
        let h = open(a.clone(), &[log("S.LOG1", l.clone())]);
        assert_eq!(value(&h), 9);
        assert!(!h.dirty());
        assert_eq!(
            h.recovery.applied,
            vec!["S.LOG1: 1 dirty pages of 512 bytes"]
        );
        // Truncated before its pages: the primary, with a warning naming the structure.
        let h = open(a, &[log("S.LOG1", l[..1024].to_vec())]);
        assert_eq!(value(&h), 7);
        assert!(
            h.recovery.warnings[0].contains("S.LOG1: regf dirty pages at 0x400"),
            "{:?}",
            h.recovery
        );
    }

    /// A primary whose base block fails its checksum takes the log's.
    #[test]
    fn bad_primary_base_block_is_recovered_from_the_log() {
        let mut a = dirty_a();
        let l = regflog::new_log(&a, &[entry_to(&with_value(9), 2)]);
        a[0x30] ^= 1;
        assert!(Hive::open(a.clone()).is_err());
        let h = open(a, &[log("S.LOG1", l)]);
        assert_eq!(value(&h), 9);
    }

    /// Every truncation and many garbled bytes of both kinds of log: the hive opens (as the
    /// primary says, or recovered), never a panic or a hang.
    #[test]
    fn truncated_and_garbled_logs() {
        let a = dirty_a();
        let b = with_value(9);
        let logs = [
            regflog::new_log(&a, &[entry_to(&b, 2), entry_to(&with_value(3), 3)]),
            regflog::old_log(&a, &b, 2),
        ];
        for good in &logs {
            for len in (0..good.len()).step_by(5) {
                let h = open(a.clone(), &[log("L", good[..len].to_vec())]);
                assert!([7, 9].contains(&value(&h)));
            }
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..3000 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut l = good.clone();
                let at = (seed >> 33) as usize % l.len();
                l[at] = (seed >> 20) as u8;
                if at < LOG_BASE_LEN {
                    let c = base_block::checksum(&l);
                    put_u32(&mut l, AT_CHECKSUM, c);
                }
                if let Ok(h) = Hive::open_with_logs(a.clone(), &[log("L", l)]) {
                    let _ = h.walk(&mut |_, k| k.values().map(|_| ()));
                }
            }
        }
    }

    /// Marvin32's known answers (the 64-bit results .NET's `MarvinTests` check, seed
    /// 0x004fb61a001bdbcc), including the 1-3 byte tails log entries never have.
    #[test]
    fn marvin32_known_answers() {
        let seed = 0x004f_b61a_001b_dbcc;
        let cases: &[(&[u8], u64)] = &[
            (b"", 0x30ed_35c1_00cd_3c7d),
            (&[0xaf], 0x48e7_3fc7_7d75_ddc1),
            (&[0xe7, 0x0f], 0xb5f6_e1fc_485d_bff8),
            (&[0x37, 0xf4, 0x95], 0xf0b0_7c78_9b8c_f7e8),
            (&[0x86, 0x42, 0xdc, 0x59], 0x7008_f2e8_7e9c_f556),
            (&[0x15, 0x3f, 0xb7, 0x98, 0x26], 0xe6c0_8c6d_a2af_a997),
            (
                &[0xab, 0x42, 0x7e, 0xa8, 0xd1, 0x0f, 0xc7],
                0xe118_47e4_f067_8c41,
            ),
        ];
        for (data, want) in cases {
            assert_eq!(marvin32(data, seed), *want, "{data:02x?}");
        }
    }
}
