//! Short-form directories (xfs_da_format.h `xfs_dir2_sf_hdr`, `xfs_dir2_sf_entry`), kept in
//! the inode's data fork: a header (entry count, count of 8-byte inode numbers, parent), then
//! entries of name length, the offset the entry would have in a block directory (which
//! readdir cookies use), the name, a file type byte with ftype, and the inode number in 4
//! bytes, or 8 when any needs them. "." and ".." are not stored.

use crate::bytes::{be32, be64};

/// Inode numbers are at most 56 bits wide (XFS_MAXINUMBER).
const MAX_INUMBER: u64 = (1 << 56) - 1;

#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub offset: u16,
    pub name: &'a [u8],
    pub ino: u64,
    pub ftype: u8,
}

fn inumber(b: &[u8], at: usize, wide: bool) -> u64 {
    if wide {
        be64(b, at) & MAX_INUMBER
    } else {
        u64::from(be32(b, at))
    }
}

/// The parent and the entries of a short-form directory of `size` bytes.
pub fn parse(fork: &[u8], size: u64, ftype: bool) -> Result<(u64, Vec<Entry<'_>>), String> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > fork.len() || size < 6 {
        return Err(format!("{size} bytes in a fork of {}", fork.len()));
    }
    // 6 <= size <= fork length (checked above).
    let b = fork.get(..size).unwrap_or_default();
    let count = usize::from(b[0]);
    let wide = b[1] != 0;
    let isz = if wide { 8 } else { 4 };
    let Some(mut rest) = b.get(2..).and_then(|r| r.get(isz..)) else {
        return Err("header cut short".into());
    };
    let parent = inumber(b, 2, wide);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // The entry's offset in the fork, for messages.
        let p = size.saturating_sub(rest.len());
        let Some((&[namelen, o0, o1], after)) = rest.split_first_chunk::<3>() else {
            return Err(format!("entry {i} at {p} past the end"));
        };
        let offset = u16::from_be_bytes([o0, o1]);
        // Name, file type byte with ftype, inode number.
        let split = after
            .split_at_checked(usize::from(namelen))
            .and_then(|(name, r)| {
                let (t, r) = r.split_at_checked(usize::from(ftype))?;
                let (ino, next) = r.split_at_checked(isz)?;
                Some((
                    name,
                    t.first().copied().unwrap_or(0),
                    inumber(ino, 0, wide),
                    next,
                ))
            })
            .filter(|_| namelen != 0);
        let Some((name, ftype, ino, next)) = split else {
            return Err(format!("entry {i} at {p} with a name of {namelen} bytes"));
        };
        out.push(Entry {
            offset,
            name,
            ino,
            ftype,
        });
        rest = next;
    }
    Ok((parent, out))
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    #[test]
    fn parses_and_bounds() {
        // parent 128, one entry "ab" at offset 0x60, ftype 1, inode 131
        let b = [1, 0, 0, 0, 0, 128, 2, 0, 0x60, b'a', b'b', 1, 0, 0, 0, 131];
        let (parent, e) = super::parse(&b, b.len() as u64, true).unwrap();
        assert_eq!(parent, 128);
        assert_eq!(
            (e[0].offset, e[0].name, e[0].ino, e[0].ftype),
            (0x60, &b"ab"[..], 131, 1)
        );
        assert!(super::parse(&b, b.len() as u64 - 1, true).is_err());
        assert!(super::parse(&b, 100, true).is_err());
    }
}
