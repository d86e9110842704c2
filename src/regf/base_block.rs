//! The base block: the first 4096 bytes of a hive ("regf", sequence numbers, root cell,
//! checksum). Layout after libyal's "Windows NT Registry File (REGF) format" §2.1.

use super::{Error, Result};
use crate::bytes::{le32, wide};

/// The base block is one 4 KiB page; hive bins start right after it.
pub const BASE_BLOCK_LEN: usize = 4096;

/// Where the hive bins start in the file.
pub const BASE_BLOCK_OFFSET: u64 = wide(BASE_BLOCK_LEN);

/// The checksum covers the first 508 bytes (127 little-endian u32s), stored at 0x1fc.
const CHECKSUM_AT: usize = 0x1fc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlock {
    /// Primary and secondary sequence numbers: they differ when a write was interrupted
    /// (the hive is dirty and its transaction logs hold newer data).
    pub primary_seq: u32,
    pub secondary_seq: u32,
    pub major: u32,
    pub minor: u32,
    /// Offset of the root key's cell, relative to the start of the hive bins.
    pub root_cell: u32,
    /// Length of the hive bins data, as the base block records it.
    pub hbins_len: u32,
}

/// XOR of the first 127 dwords, with 0 and 0xffffffff remapped as Windows does.
pub fn checksum(b: &[u8]) -> u32 {
    let x = (0..CHECKSUM_AT)
        .step_by(4)
        .fold(0u32, |acc, at| acc ^ le32(b, at));
    match x {
        0xffff_ffff => 0xffff_fffe,
        0 => 1,
        x => x,
    }
}

impl BaseBlock {
    pub fn parse(data: &[u8]) -> Result<BaseBlock> {
        if data.len() < BASE_BLOCK_LEN {
            return Err(Error::new(
                "base block",
                0,
                format!("hive is {} bytes, shorter than its base block", data.len()),
            ));
        }
        if &data[..4] != b"regf" {
            return Err(Error::new(
                "base block",
                0,
                format!("signature {:02x?}, expected \"regf\"", &data[..4]),
            ));
        }
        let stored = le32(data, CHECKSUM_AT);
        let computed = checksum(data);
        if stored != computed {
            return Err(Error::new(
                "base block",
                wide(CHECKSUM_AT),
                format!("checksum {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        let b = BaseBlock {
            primary_seq: le32(data, 0x04),
            secondary_seq: le32(data, 0x08),
            major: le32(data, 0x14),
            minor: le32(data, 0x18),
            root_cell: le32(data, 0x24),
            hbins_len: le32(data, 0x28),
        };
        if b.major != 1 {
            return Err(Error::new(
                "base block",
                0x14,
                format!("major version {}, expected 1", b.major),
            ));
        }
        Ok(b)
    }

    pub fn dirty(&self) -> bool {
        self.primary_seq != self.secondary_seq
    }
}
