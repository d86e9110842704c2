//! MFT records ("FILE" records): the header (sequence number, hard link count, flags, the base
//! record of an extension record) and the attribute records that follow it, after the update
//! sequence array is checked and undone (Linux-NTFS documentation, "FILE Record").

use super::attribute::{self, Attribute};
use super::fixup;
use super::flaw::Flaw;
use crate::bytes::{le16, le32, le64};

/// The record is in use (free records keep stale contents).
pub const FLAG_IN_USE: u16 = 0x0001;
/// The record holds a directory (it has a $I30 index).
pub const FLAG_DIRECTORY: u16 = 0x0002;
/// Attributes one record may hold (a 64 KiB record of minimal attributes has fewer): beyond
/// it the record is damaged.
pub const MAX_ATTRIBUTES: usize = 4096;

/// An MFT record reference's record number: the low 48 bits (the high 16 are the sequence
/// number).
pub fn ref_number(r: u64) -> u64 {
    r & 0x0000_ffff_ffff_ffff
}

pub fn ref_sequence(r: u64) -> u16 {
    let [.., hi, top] = r.to_le_bytes();
    u16::from_le_bytes([hi, top])
}

#[derive(Clone, Debug)]
pub struct Record {
    pub sequence: u16,
    pub link_count: u16,
    pub flags: u16,
    /// The base record this one extends (0 for a base record).
    pub base: u64,
    pub attributes: Vec<Attribute>,
}

impl Record {
    /// Parses record `buf` (record-sized, straight from the disk); fixups are applied here.
    pub fn parse(buf: &mut [u8], clusters: u64) -> Result<Self, Flaw> {
        match buf.get(0..4) {
            Some(b"FILE") => {}
            Some(b"BAAD") => return Err(Flaw::at(0, "marked BAAD by chkdsk")),
            Some(m) if m == [0, 0, 0, 0] => return Err(Flaw::at(0, "never written (zeros)")),
            m => return Err(Flaw::at(0, "magic").expected("FILE", format!("{m:02x?}"))),
        }
        fixup::apply(buf).map_err(|e| e.within(0, "update sequence"))?;
        let flags = le16(buf, 0x16);
        let used = usize::try_from(le32(buf, 0x18)).unwrap_or(usize::MAX);
        let first = usize::from(le16(buf, 0x14));
        let Some(body) = buf.get(..used).filter(|_| first >= 0x30 && first < used) else {
            return Err(Flaw::at(
                0x14,
                format!(
                    "attributes from byte {first} to {used} in a record of {} bytes",
                    buf.len()
                ),
            ));
        };
        let mut attributes = Vec::new();
        let mut pos = first;
        loop {
            let Some(rest) = body.get(pos..).filter(|r| r.len() >= 4) else {
                return Err(Flaw::at(
                    pos,
                    format!("attribute at byte {pos} runs past the used {used} bytes"),
                ));
            };
            let kind = le32(rest, 0);
            if kind == attribute::END {
                break;
            }
            let len = usize::try_from(le32(rest, 4)).unwrap_or(usize::MAX);
            let Some(a) = rest.get(..len).filter(|_| len >= 0x18 && len % 8 == 0) else {
                return Err(Flaw::at(
                    // Inside the record: no saturation.
                    pos.saturating_add(4),
                    format!("attribute {kind:#x} at byte {pos}: length {len} (record uses {used})"),
                ));
            };
            if attributes.len() >= MAX_ATTRIBUTES {
                return Err(Flaw::at(
                    pos,
                    format!("more than {MAX_ATTRIBUTES} attributes"),
                ));
            }
            let a = Attribute::parse(a, clusters)
                .map_err(|e| Flaw::at(pos, format!("attribute {kind:#x} at byte {pos}: {e}")))?;
            attributes.push(a);
            // Inside the record: no saturation.
            pos = pos.saturating_add(len);
        }
        Ok(Record {
            sequence: le16(buf, 0x10),
            link_count: le16(buf, 0x12),
            flags,
            base: le64(buf, 0x20),
            attributes,
        })
    }

    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }
}
