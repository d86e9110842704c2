//! Directory data blocks (xfs_da_format.h `xfs_dir2_data_hdr`, `xfs_dir3_data_hdr`,
//! `xfs_dir2_data_entry`, `xfs_dir2_block_tail`): a header ("XD2D"/"XDD3"; "XD2B"/"XDB3" for a
//! single-block directory), then 8-byte aligned records: entries (inode number, name length,
//! name, file type with ftype, a tag that is the record's own offset) and free spaces (0xffff,
//! length, ..., tag). A single-block directory ends with its leaf (hash, address) pairs and a
//! tail (count, stale).

use crate::bytes::{be16, be32, be64};

pub const BLOCK_MAGIC_V4: u32 = 0x5844_3242;
pub const BLOCK_MAGIC_V5: u32 = 0x5844_4233;
pub const DATA_MAGIC_V4: u32 = 0x5844_3244;
pub const DATA_MAGIC_V5: u32 = 0x5844_4433;
/// Offsets of CRC, self address, UUID and owner in `xfs_dir3_blk_hdr`.
pub const V5_HEADER: [usize; 4] = [4, 8, 24, 40];
const HDR_V4: usize = 16;
const HDR_V5: usize = 64;
const FREE_TAG: u16 = 0xffff;

#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Offset of the record in its block.
    pub off: usize,
    /// Bytes the record takes.
    pub len: usize,
    pub ino: u64,
    pub name: &'a [u8],
    /// The file type byte (0 without ftype).
    pub ftype: u8,
}

/// Whether the magic is right for the filesystem version; Some(true) for a block-form block.
pub fn kind(b: &[u8], v5: bool) -> Option<bool> {
    match (be32(b, 0), v5) {
        (BLOCK_MAGIC_V4, false) | (BLOCK_MAGIC_V5, true) => Some(true),
        (DATA_MAGIC_V4, false) | (DATA_MAGIC_V5, true) => Some(false),
        _ => None,
    }
}

/// Where the records of a block end: before the leaf and tail in a single-block directory.
fn records_end(b: &[u8], v5: bool, block_form: bool) -> Result<usize, String> {
    if !block_form {
        return Ok(b.len());
    }
    let Some(tail) = b.len().checked_sub(8) else {
        return Err(format!("block of {} bytes has no tail", b.len()));
    };
    let count = be32(b, tail);
    let hdr = if v5 { HDR_V5 } else { HDR_V4 };
    usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(8))
        .and_then(|l| tail.checked_sub(l))
        .filter(|&e| e >= hdr)
        .ok_or_else(|| format!("block tail counts {count} leaf entries"))
}

/// The (hash, address) pairs of a single-block directory.
pub fn block_leaf(b: &[u8], v5: bool) -> Result<&[u8], String> {
    let end = records_end(b, v5, true)?;
    // records_end found end <= the tail's offset.
    Ok(b.get(end..b.len().saturating_sub(8)).unwrap_or_default())
}

/// xfs_dir2_data_entsize: inode number, name length, name, file type, tag, 8-byte aligned.
#[allow(clippy::arithmetic_side_effects)] // at most 8 + 1 + 255 + 1 + 2, rounded up
fn entry_size(namelen: u8, ftype: bool) -> usize {
    (8 + 1 + usize::from(namelen) + usize::from(ftype) + 2).next_multiple_of(8)
}

/// The entry at `off`, as a leaf address points to it.
pub fn entry_at(b: &[u8], off: usize, ftype: bool) -> Result<Entry<'_>, String> {
    let Some(rec) = b
        .get(off..)
        .filter(|r| r.len() >= 12 && be16(r, 0) != FREE_TAG)
    else {
        return Err(format!("no entry at offset {off}"));
    };
    let namelen = rec[8];
    let len = entry_size(namelen, ftype);
    let split = rec
        .get(..len)
        .filter(|_| namelen != 0)
        .and_then(|r| Some((r, r.get(9..)?.split_at_checked(usize::from(namelen))?)));
    let Some((rec, (name, after))) = split else {
        return Err(format!("entry at {off} with a name of {namelen} bytes"));
    };
    // len >= 16 (entry_size); the tag is the record's last two bytes.
    let tag = be16(rec, len.saturating_sub(2));
    if usize::from(tag) != off {
        return Err(format!("entry at {off} has the tag {tag}"));
    }
    Ok(Entry {
        off,
        len,
        ino: be64(rec, 0),
        name,
        ftype: if ftype {
            after.first().copied().unwrap_or(0)
        } else {
            0
        },
    })
}

/// Every record of a data or single-block block, in order: entries as `Some`, free space as
/// None with its offset and length.
pub fn records(
    b: &[u8],
    v5: bool,
    ftype: bool,
) -> Result<Vec<(usize, usize, Option<Entry<'_>>)>, String> {
    let block_form = kind(b, v5).ok_or_else(|| format!("magic {:#x}", be32(b, 0)))?;
    let end = records_end(b, v5, block_form)?;
    let mut p = if v5 { HDR_V5 } else { HDR_V4 };
    let mut out = Vec::new();
    // records_end returned end <= b.len().
    let records = b.get(..end).unwrap_or_default();
    while p < end {
        let rest = records.get(p..).unwrap_or_default();
        if be16(rest, 0) == FREE_TAG {
            let len = usize::from(be16(rest, 2));
            if len < 8 || len % 8 != 0 || len > rest.len() {
                return Err(format!("free space of {len} bytes at {p}"));
            }
            out.push((p, len, None));
            // p + len <= end (checked above).
            p = p.saturating_add(len);
            continue;
        }
        let e = entry_at(records, p, ftype)?;
        out.push((p, e.len, Some(e)));
        // entry_at checked that the entry ends inside the records.
        p = p.saturating_add(e.len);
    }
    Ok(out)
}

/// A removed entry read back from a free space of a data block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub ino: u64,
    pub name: Vec<u8>,
    /// The file type byte (0 without ftype).
    pub ftype: u8,
}

/// The removed entries still readable in the free space at `off` (`len` bytes) of block `b`.
///
/// Removing an entry (xfs_dir2_data_make_free) turns its bytes into free space without
/// clearing them: when the free space before it absorbs it, nothing of it is written; when
/// it starts a free space, the free tag and length overwrite the high half of its inode
/// number; the free space's last two bytes become a tag that names the free space's start.
/// So a removed entry's tag names itself or the start of a free space it was merged into,
/// which new entries (always taken from a free space's front, xfs_dir2_data_use_free) may
/// since have moved past it: a tag at or before the entry. A record is believed where it
/// stands 8-byte aligned, its name (no '/' or NUL, not "." or "..") and file type are
/// plausible, it fits the free space, its tag is such an offset, and its inode number is one
/// `valid` accepts (taken from the low half where a free tag overwrote the high one): XFS
/// never clears the number, and random bytes almost never make a valid one.
pub fn stale_entries(
    b: &[u8],
    off: usize,
    len: usize,
    ftype: bool,
    valid: &dyn Fn(u64) -> bool,
) -> Vec<Stale> {
    let mut out = Vec::new();
    let Some(end) = off.checked_add(len).filter(|&e| e <= b.len()) else {
        return out;
    };
    let mut q = off;
    while q.saturating_add(16) <= end {
        match stale_at(b, q, end, ftype, valid) {
            Some((s, size)) => {
                out.push(s);
                // q + size <= end (stale_at).
                q = q.saturating_add(size);
            }
            None => q = q.saturating_add(8),
        }
    }
    out
}

/// The removed entry at `q` inside a free space of `b` that ends at `end`, and its size.
fn stale_at(
    b: &[u8],
    q: usize,
    end: usize,
    ftype: bool,
    valid: &dyn Fn(u64) -> bool,
) -> Option<(Stale, usize)> {
    let namelen = *b.get(q..end)?.get(8)?;
    let size = entry_size(namelen, ftype);
    if namelen == 0 {
        return None;
    }
    let rec = b.get(q..end)?.get(..size)?;
    let (name, after) = rec.get(9..)?.split_at_checked(usize::from(namelen))?;
    if name.iter().any(|&c| c == 0 || c == b'/') || name == b"." || name == b".." {
        return None;
    }
    let t = if ftype { *after.first()? } else { 0 };
    if ftype && !(1..=7).contains(&t) {
        return None;
    }
    // size >= 16 (entry_size); the tag is the record's last two bytes.
    let tag = usize::from(be16(rec, size.saturating_sub(2)));
    if tag > q || tag % 8 != 0 || tag < HDR_V4 {
        return None;
    }
    let ino = if be16(rec, 0) == FREE_TAG {
        u64::from(be32(rec, 4))
    } else {
        be64(rec, 0)
    };
    if !valid(ino) {
        return None;
    }
    Some((
        Stale {
            ino,
            name: name.to_vec(),
            ftype: t,
        },
        size,
    ))
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    /// A v5 data block: header, then `entries` as (inode, name) records, then free space.
    fn block(entries: &[(u64, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(&DATA_MAGIC_V5.to_be_bytes());
        let mut p = HDR_V5;
        for &(ino, name) in entries {
            let size = entry_size(u8::try_from(name.len()).unwrap(), true);
            b[p..p + 8].copy_from_slice(&ino.to_be_bytes());
            b[p + 8] = u8::try_from(name.len()).unwrap();
            b[p + 9..p + 9 + name.len()].copy_from_slice(name);
            b[p + 9 + name.len()] = 1;
            b[p + size - 2..p + size].copy_from_slice(&u16::try_from(p).unwrap().to_be_bytes());
            p += size;
        }
        b
    }

    /// Marks `off..off + len` free as xfs_dir2_data_make_free leaves it.
    fn make_free(b: &mut [u8], off: usize, len: usize) {
        b[off..off + 2].copy_from_slice(&FREE_TAG.to_be_bytes());
        b[off + 2..off + 4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        b[off + len - 2..off + len].copy_from_slice(&u16::try_from(off).unwrap().to_be_bytes());
    }

    #[test]
    fn removed_entries_come_back_with_their_inode_numbers() {
        let ino = 0x1_0000_0083u64;
        let mut b = block(&[(ino, b"first"), (ino + 1, b"second"), (ino + 2, b"third")]);
        let s = entry_size(5, true) + entry_size(6, true);
        // "first" starts the free space (its high half overwritten); "second" was absorbed.
        make_free(&mut b, HDR_V5, s);
        let all = |_: u64| true;
        let got = stale_entries(&b, HDR_V5, s, true, &all);
        let names: Vec<_> = got.iter().map(|e| (e.ino, e.name.as_slice())).collect();
        assert_eq!(names, [(0x83, &b"first"[..]), (ino + 1, &b"second"[..])]);
        // A record whose inode number is not valid (once its high half is gone) is not one.
        let only_second = |n: u64| n == ino + 1;
        let got = stale_entries(&b, HDR_V5, s, true, &only_second);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, b"second");
    }

    #[test]
    fn garbage_in_free_space_is_not_an_entry_and_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut b = vec![0u8; 4096];
        // A small filesystem's inode numbers, as Superblock::valid_ino accepts them.
        let small = |n: u64| n != 0 && n < 1 << 20;
        let mut found = 0;
        for _ in 0..2000 {
            for x in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state.to_le_bytes()[0];
            }
            let off = usize::from(b[0]) * 8;
            let len = usize::from(crate::bytes::be16(&b, 2)) * 8;
            // Any window, even one past the end, is answered without a panic.
            let _ = stale_entries(&b, off, len, true, &|_| true);
            found += stale_entries(&b, HDR_V5, 4096 - HDR_V5, true, &small).len();
        }
        assert_eq!(found, 0, "random bytes taken for removed entries");
        // Zeroed free space (a new block) holds nothing.
        let zero = vec![0u8; 4096];
        assert!(stale_entries(&zero, HDR_V5, 4096 - HDR_V5, true, &|_| true).is_empty());
    }
}
