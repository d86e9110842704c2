//! Linear directory blocks (Documentation/filesystems/ext4/directory.rst): a chain of records
//! `inode u32, rec_len u16, name_len u8, file_type u8, name`, each `rec_len` bytes long and none
//! crossing the block. Inode 0 marks an unused record. Hash-tree (htree) directories keep their
//! index inside records that look like unused entries (the ".." record of block 0 spans the
//! dx_root; interior blocks are one empty record), so reading them linearly sees every name.

use super::{le16, le32};
use crate::fs::{FileType, FsError, Result};

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
        let bad =
            |d: String| FsError::corrupt("directory entry", ino, blk, format!("offset {off}: {d}"));
        if bs - off < MIN_REC_LEN {
            return Err(bad(format!("{} bytes left, less than a record", bs - off)));
        }
        let rec = &block[off..];
        let entry_ino = le32(rec, 0);
        let rec_len = rec_len_from_disk(le16(rec, 4), bs);
        let name_len = usize::from(rec[6]);
        if rec_len < MIN_REC_LEN || rec_len % 4 != 0 || rec_len > bs - off {
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
        off += rec_len;
    }
    Ok(())
}

#[cfg(test)]
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
}
