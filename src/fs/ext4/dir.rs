//! Linear directory blocks (Documentation/filesystems/ext4/directory.rst): a chain of records
//! `inode u32, rec_len u16, name_len u8, file_type u8, name`, each `rec_len` bytes long and none
//! crossing the block. Inode 0 marks an unused record. Hash-tree (htree) directories keep their
//! index inside records that look like unused entries (the ".." record of block 0 spans the
//! dx_root; interior blocks are one empty record), so reading them linearly sees every name.

use crate::bytes::{le16, le32};
use crate::fs::{Error, FileType, Result};

/// The smallest record: 8-byte header plus a name padded to 4 bytes (EXT4_DIR_REC_LEN(1)).
const MIN_REC_LEN: usize = 12;
const HEADER_LEN: usize = 8;
pub const MAX_NAME_LEN: usize = 255;

/// One record of a directory block.
#[derive(Debug)]
pub struct RawEntry<'a> {
    /// Byte offset of the record in its block.
    pub offset: usize,
    pub rec_len: usize,
    pub ino: u32,
    pub name: &'a [u8],
    /// From the file_type byte (with the filetype feature), when it names a valid type.
    pub kind: Option<FileType>,
    /// The rest of the record after the name (encrypted casefolded directories keep the
    /// name's hash there).
    pub tail: &'a [u8],
}

/// rec_len as stored: with 64 KiB blocks a whole-block record does not fit 16 bits, so it is
/// written as 0 or 65535 and the low two bits carry bits 16-17 (ext4_rec_len_from_disk).
pub(crate) fn rec_len_from_disk(raw: u16, block_size: usize) -> usize {
    if block_size < 65536 {
        return usize::from(raw);
    }
    if raw == 0 || raw == u16::MAX {
        return block_size;
    }
    usize::from(raw & 0xfffc) | (usize::from(raw & 3) << 16)
}

fn kind_from_byte(b: u8) -> Option<FileType> {
    Some(match b {
        1 => FileType::RegularFile,
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::NamedPipe,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => return None,
    })
}

/// Walks the records of one directory block, calling `f` for each used one; `f` returns false
/// to stop. A malformed record is an error for the whole block (as in ext4_check_dir_entry).
pub fn for_each_entry(
    block: &[u8],
    filetype: bool,
    ino: u64,
    blk: u64,
    mut f: impl FnMut(RawEntry<'_>) -> Result<bool>,
) -> Result<()> {
    let bs = block.len();
    let mut off = 0;
    while off < bs {
        // The record's device byte, for a real block (an inline region's `blk` is 0).
        let pos = u64::try_from(bs)
            .ok()
            .zip(u64::try_from(off).ok())
            .filter(|_| blk != 0)
            .and_then(|(b, o)| blk.checked_mul(b)?.checked_add(o));
        let bad = |d: String| {
            let e = Error::corrupt("directory entry", ino, blk, format!("offset {off}: {d}"));
            match pos {
                Some(p) => e.at(p),
                None => e,
            }
        };
        // off < bs (the loop's condition); records never run past the block.
        let left = bs.saturating_sub(off);
        if left < MIN_REC_LEN {
            return Err(bad(format!("{left} bytes left, less than a record")));
        }
        let rec = &block[off..];
        let entry_ino = le32(rec, 0);
        let rec_len = rec_len_from_disk(le16(rec, 4), bs);
        let name_len = usize::from(rec[6]);
        if rec_len < MIN_REC_LEN || rec_len % 4 != 0 || rec_len > left {
            return Err(bad(format!("rec_len {rec_len}")));
        }
        if HEADER_LEN + name_len > rec_len {
            return Err(bad(format!(
                "name_len {name_len} does not fit rec_len {rec_len}"
            )));
        }
        if entry_ino != 0 {
            let go_on = f(RawEntry {
                offset: off,
                rec_len,
                ino: entry_ino,
                name: &rec[HEADER_LEN..HEADER_LEN + name_len],
                tail: &rec[HEADER_LEN + name_len..rec_len],
                kind: if filetype {
                    kind_from_byte(rec[7])
                } else {
                    None
                },
            })?;
            if !go_on {
                return Ok(());
            }
        }
        off = off.saturating_add(rec_len);
    }
    Ok(())
}

/// A removed record still readable in a directory block: what `fls` lists as "(deleted)".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedRecord {
    /// Byte offset of the record in its block.
    pub offset: usize,
    /// The inode the name pointed to; 0 when the kernel cleared it (the first record of a
    /// block is removed that way, its rec_len cannot merge into a predecessor).
    pub ino: u32,
    pub name: Vec<u8>,
    pub kind: Option<FileType>,
}

/// EXT4_DIR_REC_LEN: the bytes a record with a name of `name_len` really uses.
fn real_len(name_len: usize) -> usize {
    HEADER_LEN.saturating_add(name_len).next_multiple_of(4)
}

/// Whether a name could have been written by the kernel: not empty, no NUL or '/', not a dot
/// entry (those are never removed, so a "." in slack is stale bytes of something else).
fn plausible_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&0) && !name.contains(&b'/') && name != b"." && name != b".."
}

/// The removed records of one linear (or htree leaf) directory block. Removing a record merges
/// it into its predecessor's rec_len (ext4_generic_delete_entry), so the bytes past each live
/// record's real length, up to its rec_len, may still hold older records; a removed first
/// record keeps its place with inode 0. Candidates in that slack are taken the way The Sleuth
/// Kit's ext2fs_dent_parse_block finds them (every 4 bytes; a hit skips its real length),
/// with stricter checks so that stale bytes do not become names: inode in 1..=`max_ino`, a
/// rec_len that is a multiple of 4 covering the name and staying in the block, the record
/// itself inside the slack, a valid file type byte (with the filetype feature) and a
/// plausible name. The live chain is followed as `for_each_entry` does; where it breaks the
/// rest of the block is not searched (there is no slack to tell from live records).
pub fn deleted_records(block: &[u8], filetype: bool, max_ino: u32) -> Vec<DeletedRecord> {
    let bs = block.len();
    let mut out = Vec::new();
    let mut off = 0;
    // off <= bs: each record stays inside the block.
    while bs.saturating_sub(off) >= MIN_REC_LEN {
        let rec = &block[off..];
        let rec_len = rec_len_from_disk(le16(rec, 4), bs);
        let name_len = usize::from(rec[6]);
        if rec_len < MIN_REC_LEN || rec_len % 4 != 0 || rec_len > bs.saturating_sub(off) {
            break;
        }
        let used = real_len(name_len);
        if used > rec_len {
            break;
        }
        let name = &rec[HEADER_LEN..HEADER_LEN + name_len];
        if le32(rec, 0) == 0 && plausible_name(name) {
            if let Some(kind) = type_byte(rec[7], filetype) {
                out.push(DeletedRecord {
                    offset: off,
                    ino: 0,
                    name: name.to_vec(),
                    kind,
                });
            }
        }
        scan_slack(
            block,
            off.saturating_add(used),
            off.saturating_add(rec_len),
            filetype,
            max_ino,
            &mut out,
        );
        off = off.saturating_add(rec_len);
    }
    out
}

/// The file type a record's type byte names: Some(None) without the filetype feature (the
/// byte means nothing), None for a byte no kernel writes (0 "unknown" included, with it).
fn type_byte(b: u8, filetype: bool) -> Option<Option<FileType>> {
    if !filetype {
        return Some(None);
    }
    kind_from_byte(b).map(Some)
}

/// Searches `block[start..end]`, the slack of one live record, for removed records.
fn scan_slack(
    block: &[u8],
    start: usize,
    end: usize,
    filetype: bool,
    max_ino: u32,
    out: &mut Vec<DeletedRecord>,
) {
    let bs = block.len();
    let mut pos = start;
    while end.saturating_sub(pos) >= MIN_REC_LEN {
        let rec = &block[pos..end];
        let ino = le32(rec, 0);
        let rec_len = rec_len_from_disk(le16(rec, 4), bs);
        let name_len = usize::from(rec[6]);
        let used = real_len(name_len);
        let fits = name_len > 0
            && used <= rec.len()
            && rec_len >= used
            && rec_len % 4 == 0
            && rec_len <= bs.saturating_sub(pos);
        let kind = type_byte(rec[7], filetype);
        match kind {
            Some(kind)
                if fits
                    && ino != 0
                    && ino <= max_ino
                    && plausible_name(&rec[HEADER_LEN..HEADER_LEN + name_len]) =>
            {
                out.push(DeletedRecord {
                    offset: pos,
                    ino,
                    name: rec[HEADER_LEN..HEADER_LEN + name_len].to_vec(),
                    kind,
                });
                pos = pos.saturating_add(used);
            }
            _ => pos = pos.saturating_add(4),
        }
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // built and mutated fixtures
mod tests {
    use super::*;

    fn rec(ino: u32, rec_len: u16, name: &[u8], ft: u8) -> Vec<u8> {
        let mut v = ino.to_le_bytes().to_vec();
        v.extend_from_slice(&rec_len.to_le_bytes());
        v.push(name.len() as u8);
        v.push(ft);
        v.extend_from_slice(name);
        v.resize(usize::from(rec_len), 0);
        v
    }

    fn names(block: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for_each_entry(block, true, 2, 9, |e| {
            out.push(e.name.to_vec());
            Ok(true)
        })?;
        Ok(out)
    }

    #[test]
    fn walks_and_skips_unused() {
        let mut b = rec(2, 12, b".", 2);
        b.extend(rec(0, 12, b"", 0));
        b.extend(rec(12, 1024 - 24, b"a b\xff", 1));
        assert_eq!(names(&b).unwrap(), vec![b".".to_vec(), b"a b\xff".to_vec()]);
    }

    #[test]
    fn rejects_bad_rec_len() {
        for bad in [0u16, 8, 14, 2000] {
            let mut b = rec(2, 12, b".", 2);
            let mut last = rec(12, 1012, b"x", 1);
            last[4..6].copy_from_slice(&bad.to_le_bytes());
            b.extend(last);
            b.truncate(1024);
            assert!(names(&b).is_err(), "rec_len {bad}");
        }
    }

    #[test]
    fn big_block_rec_len() {
        assert_eq!(rec_len_from_disk(0, 65536), 65536);
        assert_eq!(rec_len_from_disk(u16::MAX, 65536), 65536);
        assert_eq!(rec_len_from_disk(12, 65536), 12);
        assert_eq!(rec_len_from_disk(12, 4096), 12);
    }

    /// A block as ext2fs_unlink leaves it: "b" merged into "a", "c" merged into "a" too.
    fn with_deleted() -> Vec<u8> {
        let mut b = rec(2, 12, b".", 2);
        b.extend(rec(2, 12, b"..", 2));
        let mut a = rec(12, 1000, b"a", 1);
        let del = [rec(13, 12, b"bb", 1), rec(14, 988 - 12, b"ccc", 7)].concat();
        a[12..12 + del.len()].copy_from_slice(&del[..]);
        b.extend(a);
        b
    }

    #[test]
    fn finds_records_in_slack() {
        let b = with_deleted();
        assert_eq!(
            names(&b).unwrap(),
            vec![b".".to_vec(), b"..".to_vec(), b"a".to_vec()]
        );
        let d = deleted_records(&b, true, 100);
        let got: Vec<_> = d
            .iter()
            .map(|r| (r.offset, r.ino, r.name.clone(), r.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (36, 13, b"bb".to_vec(), Some(FileType::RegularFile)),
                (48, 14, b"ccc".to_vec(), Some(FileType::Symlink)),
            ]
        );
        // Inode numbers past the filesystem's are stale bytes, not names.
        assert_eq!(deleted_records(&b, true, 13).len(), 1);
    }

    #[test]
    fn removed_first_record_keeps_its_name() {
        let mut b = rec(0, 24, b"gone", 1);
        b.extend(rec(20, 1000, b"live", 1));
        let d = deleted_records(&b, true, 100);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].ino, &d[0].name[..]), (0, &b"gone"[..]));
    }

    #[test]
    fn truncated_and_garbled_blocks_do_not_panic() {
        let good = with_deleted();
        for cut in 0..good.len() {
            for r in deleted_records(&good[..cut], true, 100) {
                assert!(r.offset + 8 + r.name.len() <= cut);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let mut b = good.clone();
            // Garble the slack of "a" (and, every tenth round, any byte).
            let span = if round % 10 == 0 {
                0..b.len()
            } else {
                36..b.len()
            };
            for _ in 0..1 + round % 40 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = span.start + (seed as usize) % (span.end - span.start);
                b[at] = (seed >> 32) as u8;
            }
            for r in deleted_records(&b, round % 3 != 0, 1000) {
                assert!(plausible_name(&r.name), "round {round}: {:?}", r.name);
                assert!(r.ino <= 1000);
                assert!(r.offset + 8 + r.name.len() <= b.len());
            }
        }
    }
}
