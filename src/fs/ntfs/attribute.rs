//! Attribute records inside an MFT record: a common header (type, length, name, flags), then
//! either a resident value or the non-resident header (VCN range, sizes, compression unit)
//! and its runlist (Linux-NTFS documentation, "Attribute - header").

use super::runlist::{self, Run};
use crate::bytes::{le16, le32, le64, wide};

pub const STANDARD_INFORMATION: u32 = 0x10;
pub const ATTRIBUTE_LIST: u32 = 0x20;
pub const FILE_NAME: u32 = 0x30;
pub const VOLUME_NAME: u32 = 0x60;
pub const VOLUME_INFORMATION: u32 = 0x70;
pub const DATA: u32 = 0x80;
pub const INDEX_ROOT: u32 = 0x90;
pub const INDEX_ALLOCATION: u32 = 0xa0;
pub const BITMAP: u32 = 0xb0;
pub const REPARSE_POINT: u32 = 0xc0;
pub const EA: u32 = 0xe0;
/// Marks the end of a record's attributes.
pub const END: u32 = 0xffff_ffff;

/// Low byte of the flags: the compression method (LZNT1 when 1).
pub const FLAG_COMPRESSED: u16 = 0x00ff;
pub const FLAG_ENCRYPTED: u16 = 0x4000;
pub const FLAG_SPARSE: u16 = 0x8000;

/// A non-resident attribute's header, its runs already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonResident {
    pub lowest_vcn: u64,
    pub highest_vcn: u64,
    /// log2 of the clusters in a compression unit (0: not compressed).
    pub compression_unit: u8,
    pub allocated_size: u64,
    pub data_size: u64,
    pub initialized_size: u64,
    /// Clusters actually allocated (compressed or sparse attributes), else `allocated_size`.
    pub compressed_size: u64,
    pub runs: Vec<Run>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Resident(Vec<u8>),
    NonResident(NonResident),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub kind: u32,
    /// UTF-16 name ("$I30" for directory indexes, the stream name for named $DATA).
    pub name: Vec<u16>,
    pub flags: u16,
    pub body: Body,
}

impl Attribute {
    /// Parses the attribute record `b` (exactly its length). `clusters` bounds the runs.
    pub fn parse(b: &[u8], clusters: u64) -> Result<Self, String> {
        if b.len() < 0x18 {
            return Err(format!("attribute record of {} bytes", b.len()));
        }
        let kind = le32(b, 0);
        let non_resident = b[8];
        let name_len = usize::from(b[9]);
        let name_off = usize::from(le16(b, 10));
        let flags = le16(b, 12);
        let name_bytes = b
            .get(name_off..)
            // At most 255 UTF-16 units: no saturation.
            .and_then(|r| r.get(..name_len.saturating_mul(2)))
            .ok_or_else(|| format!("name at byte {name_off} ({name_len} units) past the record"))?;
        let name: Vec<u16> = name_bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let body = match non_resident {
            0 => {
                let len = usize::try_from(le32(b, 0x10)).unwrap_or(usize::MAX);
                let off = usize::from(le16(b, 0x14));
                let v = off
                    .checked_add(len)
                    .and_then(|end| b.get(off..end))
                    .ok_or_else(|| {
                        format!("resident value at byte {off} ({len} bytes) past the record")
                    })?;
                Body::Resident(v.to_vec())
            }
            1 => {
                if b.len() < 0x40 {
                    return Err(format!("non-resident header of {} bytes", b.len()));
                }
                let lowest_vcn = le64(b, 0x10);
                let highest_vcn = le64(b, 0x18);
                let mp = usize::from(le16(b, 0x20));
                let compression_unit = b[0x22];
                let allocated_size = le64(b, 0x28);
                let data_size = le64(b, 0x30);
                let initialized_size = le64(b, 0x38);
                let compressed_size = if b.len() >= 0x48 && mp >= 0x48 {
                    le64(b, 0x40)
                } else {
                    allocated_size
                };
                if data_size > allocated_size && lowest_vcn == 0 {
                    return Err(format!(
                        "data size {data_size} larger than the allocated {allocated_size}"
                    ));
                }
                let pairs = b
                    .get(mp..)
                    .filter(|_| mp >= 0x40)
                    .ok_or_else(|| format!("mapping pairs at byte {mp}"))?;
                let mut runs = Vec::new();
                runlist::decode(pairs, lowest_vcn, clusters, &mut runs)?;
                Body::NonResident(NonResident {
                    lowest_vcn,
                    highest_vcn,
                    compression_unit,
                    allocated_size,
                    data_size,
                    // A larger initialized size is damage; clamp it so reads stay in bounds.
                    initialized_size: initialized_size.min(data_size),
                    compressed_size,
                    runs,
                })
            }
            x => return Err(format!("non-resident flag {x}")),
        };
        Ok(Attribute {
            kind,
            name,
            flags,
            body,
        })
    }

    /// The length the attribute's value has (data size, or resident value length).
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Resident(v) => wide(v.len()),
            Body::NonResident(n) => n.data_size,
        }
    }

    pub fn resident(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Resident(v) => Some(v),
            Body::NonResident(_) => None,
        }
    }
}
