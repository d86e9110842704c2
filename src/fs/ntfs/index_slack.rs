//! Index slack: the bytes of a $I30 node ($INDEX_ROOT or an INDX block of
//! $INDEX_ALLOCATION) past the size its header says is in use. Removing an index entry moves
//! the entries after it down over it and lowers the used size, so stale copies of entries,
//! each with a whole $FILE_NAME (parent reference, times, sizes, flags, name), stay behind
//! until the node grows again (Linux-NTFS documentation, "Index Entry"; Carrier, "File System
//! Forensic Analysis", ch. 12, "Index attributes"). The Sleuth Kit's fls lists the plausible
//! ones as removed names of the directory, read only for forensics (`ferry timeline`).
//!
//! What is plausible is what fls 4.11 (tsk/fs/ntfs_dent.cpp, `ntfs_proc_idxentry`) accepts,
//! so that both list the same names: the scan starts at the node's first entry and, at each
//! position, wants an MFT reference within the MFT, an entry length that is a multiple of 4,
//! larger than its key length and not larger than the node's entry area, and a $FILE_NAME
//! whose parent is this directory; in the slack (or for a key length of 0) also a known
//! namespace, an allocated size not below the real size, a name of at least one unit whose
//! first byte is not 0, and creation, modification and access times between 1970 and
//! 2019-12-26 (fls's window; names written later are never listed by fls 4.11, nor here).
//! A position that fails moves on by 4 bytes; an entry that passes moves on by its length
//! (or, for a key length of 0, by the length its name implies). DOS (8.3) names are never
//! listed on their own, as fls lists them only beside the long name. A name ends at its
//! first U+0000 unit, where fls's C string ends (which also decides which names it takes for
//! one).

use super::attribute::{self, Body};
use super::filename;
use super::fixup;
use super::inode::{Inode, I30};
use super::Ntfs;
use crate::bytes::{le16, le32, le64, wide};
use crate::fs::{DeletedEntry, FileType, Result};
use std::sync::Arc;

/// Names taken from the slack of one directory, at most: a stale entry is at least 84 bytes,
/// so a real directory's history fits many times over, while an index of crafted garbage
/// could otherwise make the list as large as the index itself.
pub const MAX_SLACK_NAMES: usize = 1 << 16;
/// Bytes of one index record scanned, at most. fls takes a record to run up to the next
/// cluster that starts with "INDX" (or the end of the index); index blocks are at most
/// 64 KiB, so more is clusters of something else, which are read no further.
pub const MAX_RECORD_SPAN: usize = 256 << 10;
/// Bytes of $INDEX_ALLOCATION read at a time while looking for records.
const CHUNK: usize = 1 << 20;

/// The index entry header before its key.
const ENTRY_HEADER: usize = 16;
/// The $FILE_NAME fields before the name, as fls's structure has them with the first
/// name byte (0x43): the scan stops when one no longer fits before the end.
const FNAME_MIN: usize = filename::HEADER + 1;
/// $FILE_NAME flag: a directory (FILE_ATTR_DUP_FILE_NAME_INDEX_PRESENT).
const FNAME_DIR: u64 = 0x1000_0000;
/// 100-ns NTFS time units / 1e9: hundreds of seconds since 1601, the unit of fls's window.
const HUNDRED_SECS: u64 = 1_000_000_000;
/// 1970-01-01 in hundreds of seconds since 1601.
const WINDOW_START: u64 = (369 * 365 + 89) * 24 * 36;
/// The end of fls's window: 18256 days after 1970-01-01 (fls counts 50 years with 6 leap
/// days, so 2019-12-26), in hundreds of seconds since 1601.
const WINDOW_END: u64 = WINDOW_START + (50 * 365 + 6) * 24 * 36;

/// A name found in index slack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackName {
    /// The MFT record the entry names (48 bits).
    pub record: u64,
    /// The sequence number the entry recorded for it.
    pub sequence: u16,
    pub name: Vec<u16>,
    /// The $FILE_NAME flags say directory.
    pub dir: bool,
}

/// Where a node's entries lie in a buffer: `start` is the first entry's offset, `len` the
/// bytes of the entry area, of which the header says the first `used` are in use.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    pub start: usize,
    pub len: usize,
    pub used: usize,
}

/// Whether a $FILE_NAME time is inside fls's window (see the module documentation).
fn plausible_time(t: u64) -> bool {
    let t = t / HUNDRED_SECS;
    t != 0 && (WINDOW_START..=WINDOW_END).contains(&t)
}

/// The 48-bit record number of a reference at `at`.
fn ref48(b: &[u8], at: usize) -> u64 {
    le64(b, at) & 0xffff_ffff_ffff
}

/// Appends to `out` the removed names of directory `dir` in the node area `a` of `b`: those
/// in the slack, or all of them when `dir_removed` (fls counts every name of a removed
/// directory as removed). `last_record` is the highest record number an entry may name. Names that do
/// not fit in `b` are passed over; at most `MAX_SLACK_NAMES` in `out`.
pub fn scan(
    b: &[u8],
    a: Area,
    dir: u64,
    last_record: u64,
    dir_removed: bool,
    out: &mut Vec<SlackName>,
) {
    let (Some(end), Some(used_end)) = (a.start.checked_add(a.len), a.start.checked_add(a.used))
    else {
        return;
    };
    if a.used > a.len || end > b.len() {
        return;
    }
    // Positions stay within `b` plus an entry's length: no saturation below.
    let mut pos = a.start;
    while out.len() < MAX_SLACK_NAMES {
        let Some(e) = b
            .get(pos..)
            .filter(|_| end.saturating_sub(pos) > ENTRY_HEADER + FNAME_MIN)
        else {
            break;
        };
        let record = ref48(e, 0);
        let len = usize::from(le16(e, 8));
        let key_len = usize::from(le16(e, 10));
        let f = &e[ENTRY_HEADER..];
        let next4 = pos.saturating_add(4);
        if record > last_record || len <= key_len || len % 4 != 0 || len > a.len {
            pos = next4;
            continue;
        }
        if ref48(f, 0) != dir {
            pos = next4;
            continue;
        }
        let name_len = usize::from(f[0x40]);
        let namespace = f[0x41];
        let in_slack = key_len == 0 || pos.saturating_add(len) > used_end;
        if in_slack
            && (namespace > filename::NS_WIN32_AND_DOS
                || le64(f, 0x28) < le64(f, 0x30)
                || name_len == 0
                || f[filename::HEADER] == 0
                || !plausible_time(le64(f, 0x08))
                || !plausible_time(le64(f, 0x20))
                || !plausible_time(le64(f, 0x10)))
        {
            pos = next4;
            continue;
        }
        // At most 255 units.
        let name_bytes = name_len.saturating_mul(2);
        if namespace != filename::NS_DOS && (dir_removed || in_slack) {
            let name = f
                .get(filename::HEADER..)
                .and_then(|n| n.get(..name_bytes))
                .map(|n| {
                    n.chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .take_while(|&u| u != 0)
                        .collect()
                });
            if let Some(name) = name {
                out.push(SlackName {
                    record,
                    sequence: le16(e, 6),
                    name,
                    dir: le64(f, 0x38) & FNAME_DIR != 0,
                });
            }
        }
        pos = if key_len == 0 {
            // A removed entry of old Windows versions: key length cleared, length unknown.
            pos.saturating_add(ENTRY_HEADER + filename::HEADER)
                .saturating_add(name_bytes)
                .next_multiple_of(4)
        } else {
            pos.saturating_add(len)
        };
    }
}

/// The entry area of the $INDEX_ROOT value `b`, as fls checks it: None when the indexed
/// attribute is not $FILE_NAME or the offsets disagree.
pub fn root_area(b: &[u8]) -> Option<Area> {
    if b.len() < 0x20 || le32(b, 0) != attribute::FILE_NAME {
        return None;
    }
    let field = |at| usize::try_from(le32(b, at)).ok();
    let (first, used, alloc) = (field(0x10)?, field(0x14)?, field(0x18)?);
    if used < first || alloc < used || 0x10usize.checked_add(alloc)? > b.len() {
        return None;
    }
    Some(Area {
        start: 0x10usize.checked_add(first)?,
        len: alloc.checked_sub(first)?,
        used: used.checked_sub(first)?,
    })
}

/// The entry area of the index record `b` (from its "INDX" up to where the next record
/// starts), its fixups applied in place as fls applies them (as many strides as the header
/// counts, whatever `b`'s length): None when they or the offsets do not check out.
pub fn record_area(b: &mut [u8]) -> Option<Area> {
    if b.len() < 0x28 {
        return None;
    }
    let count = usize::from(le16(b, 6));
    let strides = count.checked_sub(1)?;
    if strides > 0 {
        let n = strides.checked_mul(fixup::STRIDE)?;
        fixup::apply(b.get_mut(..n)?).ok()?;
    }
    let field = |at| usize::try_from(le32(b, at)).ok();
    let (first, used) = (field(0x18)?, field(0x1c)?);
    let start = 0x18usize.checked_add(first).filter(|&s| s <= b.len())?;
    if 0x18usize.checked_add(used)? > b.len() || used < first {
        return None;
    }
    Some(Area {
        start,
        len: b.len().checked_sub(start)?,
        used: used.checked_sub(first)?,
    })
}

impl Ntfs {
    /// The names fls finds in the index slack of directory `dir` (see the module
    /// documentation), in the order the index holds them: $INDEX_ROOT, then the records of
    /// $INDEX_ALLOCATION as they lie. A name whose record moved on to another sequence (or
    /// is record 0) is `stale`: fls shows no metadata for it.
    pub(super) fn index_slack(&self, dir: u64) -> Result<Vec<DeletedEntry>> {
        let r = self.record(dir)?;
        let removed = !r.in_use();
        let inode = if removed {
            if r.base != 0 {
                return Ok(Vec::new());
            }
            Arc::new(
                Inode::assemble(dir, r.sequence, r.link_count, r.flags, r.attributes)
                    .map_err(|e| self.damage("removed MFT record", dir, self.record_pos(dir), e))?,
            )
        } else {
            self.inode(dir)?
        };
        // fls's last inode is the one after the MFT's records (its `$OrphanFiles`).
        let last = self.mft_records;
        let mut found = Vec::new();
        let Some(root) = inode
            .find(attribute::INDEX_ROOT, &I30)
            .and_then(|a| a.resident())
        else {
            return Ok(Vec::new());
        };
        let Some(area) = root_area(root) else {
            return Ok(Vec::new());
        };
        scan(root, area, dir, last, removed, &mut found);
        if let Some(alloc) = inode.find(attribute::INDEX_ALLOCATION, &I30) {
            if matches!(alloc.body, Body::NonResident(_)) {
                self.scan_allocation(&inode, alloc, removed, &mut found)?;
            }
        }
        Ok(found
            .into_iter()
            .map(|s| {
                let meta = self.meta_matches(s.record, s.sequence);
                DeletedEntry {
                    ino: s.record,
                    name: filename::to_utf8(&s.name),
                    kind: Some(if s.dir {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    }),
                    reallocated: meta == Some(true),
                    stale: meta.is_none(),
                }
            })
            .collect())
    }

    /// Whether record `n` still holds the file an entry with sequence `seq` named, as fls
    /// decides it (a record freed since bumped its sequence; record 0 is never matched):
    /// Some(in use) when it does, None otherwise.
    fn meta_matches(&self, n: u64, seq: u16) -> Option<bool> {
        if n == 0 {
            return None;
        }
        let r = self.parse_record(n).ok()?.ok()?;
        let want = if r.in_use() {
            r.sequence
        } else {
            r.sequence.saturating_sub(1)
        };
        (want == seq).then_some(r.in_use())
    }

    /// Scans each index record of `alloc` (records start at a cluster beginning with "INDX"
    /// and run to the next one, as fls finds them, in use or not).
    fn scan_allocation(
        &self,
        dir: &Inode,
        alloc: &attribute::Attribute,
        removed: bool,
        found: &mut Vec<super::index_slack::SlackName>,
    ) -> Result<()> {
        let total = alloc.size();
        let cs = u64::from(self.boot.cluster_size);
        let chunk = wide(CHUNK).max(cs);
        let mut starts = Vec::new();
        // At most 2 MiB (the largest cluster).
        let mut buf = vec![0u8; usize::try_from(chunk).unwrap_or(CHUNK)];
        let step = usize::try_from(cs).unwrap_or(usize::MAX);
        let mut off = 0u64;
        while off < total && starts.len() < super::dir::MAX_BLOCKS {
            let n = self.read_attr(dir.ino, alloc, off, &mut buf)?;
            if n == 0 {
                break;
            }
            for (at, c) in (0usize..).step_by(step).zip(buf[..n].chunks(step)) {
                if c.starts_with(b"INDX") {
                    // Below total: no saturation.
                    starts.push(off.saturating_add(wide(at)));
                }
            }
            off = off.saturating_add(chunk);
        }
        let last = self.mft_records;
        let ends = starts.iter().skip(1).copied().chain([total]);
        for (&start, end) in starts.iter().zip(ends) {
            // Starts increase and stay below total.
            let span = usize::try_from(end.saturating_sub(start))
                .unwrap_or(usize::MAX)
                .min(MAX_RECORD_SPAN);
            let mut rec = vec![0u8; span];
            let n = self.read_attr(dir.ino, alloc, start, &mut rec)?;
            rec.truncate(n);
            // fls gives up on the rest of the directory at a record it cannot read.
            let Some(area) = record_area(&mut rec) else {
                break;
            };
            scan(&rec, area, dir.ino, last, removed, found);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    /// An index entry for `name` in directory 5 at `at` of `b`, with `t` for every time.
    fn entry(b: &mut [u8], at: usize, record: u64, name: &str, t: u64) -> usize {
        let units: Vec<u16> = name.encode_utf16().collect();
        let key = filename::HEADER + 2 * units.len();
        let len = (ENTRY_HEADER + key).next_multiple_of(8);
        b[at..at + 8].copy_from_slice(&(record | 1 << 48).to_le_bytes());
        b[at + 8..at + 10].copy_from_slice(&(len as u16).to_le_bytes());
        b[at + 10..at + 12].copy_from_slice(&(key as u16).to_le_bytes());
        let f = at + ENTRY_HEADER;
        b[f..f + 8].copy_from_slice(&(5u64 | 5 << 48).to_le_bytes());
        for o in [0x08, 0x10, 0x18, 0x20] {
            b[f + o..f + o + 8].copy_from_slice(&t.to_le_bytes());
        }
        b[f + 0x40] = units.len() as u8;
        b[f + 0x41] = filename::NS_POSIX;
        for (i, u) in units.iter().enumerate() {
            b[f + 0x42 + 2 * i..f + 0x44 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        len
    }

    /// 2019-06-01 and 2021-01-01 as NTFS times.
    const IN_WINDOW: u64 = (1_559_347_200 + 11_644_473_600) * 10_000_000;
    const AFTER_WINDOW: u64 = (1_609_459_200 + 11_644_473_600) * 10_000_000;

    #[test]
    fn lists_slack_entries_in_the_window_only() {
        let mut b = vec![0u8; 1024];
        let a = entry(&mut b, 0, 64, "live", IN_WINDOW);
        let s1 = entry(&mut b, a, 65, "gone", IN_WINDOW);
        entry(&mut b, a + s1, 66, "late", AFTER_WINDOW);
        let mut out = Vec::new();
        let area = Area {
            start: 0,
            len: 1024,
            used: a,
        };
        scan(&b, area, 5, 1000, false, &mut out);
        let names: Vec<String> = out
            .iter()
            .map(|s| String::from_utf16_lossy(&s.name))
            .collect();
        assert_eq!(names, ["gone"]);
        assert_eq!((out[0].record, out[0].sequence), (65, 1));
        out.clear();
        scan(&b, area, 5, 1000, true, &mut out);
        assert_eq!(out.len(), 2, "a removed directory's live entry counts");
        out.clear();
        scan(&b, area, 6, 1000, false, &mut out);
        assert!(out.is_empty(), "another directory's entries");
        out.clear();
        scan(&b, area, 5, 64, false, &mut out);
        assert!(out.is_empty(), "a record past the MFT");
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        let mut seed = 1u64;
        for round in 0..200 {
            let mut b: Vec<u8> = (0..4096)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            if round % 2 == 0 {
                let mut at = 0;
                while at + 200 < b.len() {
                    at += entry(&mut b, at, 70, "x", IN_WINDOW) + (round % 3) * 4;
                }
            }
            let mut out = Vec::new();
            let used = (seed as usize) % 4096;
            let area = Area {
                start: 0,
                len: 4096,
                used,
            };
            scan(&b, area, 5, u64::MAX, false, &mut out);
            assert!(out.len() <= MAX_SLACK_NAMES);
            let _ = record_area(&mut b);
            let _ = root_area(&b);
        }
    }
}
