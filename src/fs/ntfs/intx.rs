//! Interix (SFU) special files, which ntfs-3g creates for symlink(2) and mknod(2): a regular
//! file with the SYSTEM attribute whose data starts with a magic ("IntxLNK\1" + the UTF-16
//! target, "IntxCHR\0"/"IntxBLK\0" + 64-bit major and minor), or of length 0 (a FIFO) or 1 (a
//! socket) when not also HIDDEN. Decided exactly as ntfs-3g's getattr does.

use crate::bytes::{le64, wide};

pub const MAGIC_SYMLINK: &[u8; 8] = b"IntxLNK\x01";
pub const MAGIC_CHAR: &[u8; 8] = b"IntxCHR\x00";
pub const MAGIC_BLOCK: &[u8; 8] = b"IntxBLK\x00";
/// Longest data read to decide: the magic and a PATH_MAX target of UTF-16 units.
pub const MAX_SIZE: u64 = 8 + 2 * 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    Symlink(Vec<u16>),
    Char(u64, u64),
    Block(u64, u64),
}

/// What a SYSTEM file of `size` bytes is, from its first bytes `head` (all of it when
/// `size` <= MAX_SIZE); `hidden` is its HIDDEN flag.
pub fn classify(size: u64, head: &[u8], hidden: bool) -> Option<Special> {
    if !hidden && size == 0 {
        return Some(Special::Fifo);
    }
    if !hidden && size == 1 {
        return Some(Special::Socket);
    }
    if size <= 8 || size > MAX_SIZE || wide(head.len()) != size {
        return None;
    }
    let magic = &head[..8];
    if size == 24 && magic == MAGIC_CHAR {
        return Some(Special::Char(le64(head, 8), le64(head, 16)));
    }
    if size == 24 && magic == MAGIC_BLOCK {
        return Some(Special::Block(le64(head, 8), le64(head, 16)));
    }
    if magic == MAGIC_SYMLINK {
        let units = head[8..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return Some(Special::Symlink(units));
    }
    None
}
