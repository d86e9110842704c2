//! Value records (vk), their data (inline, in one cell, or as big data "db" segments) and the
//! value types.

use super::key::NONE;
use super::{latin1, utf16, Error, Hive, Result};
use crate::bytes::{le16, le32, try_le32};

/// The name is stored in Latin-1 rather than UTF-16LE.
const VALUE_COMP_NAME: u16 = 0x0001;

/// High bit of the data size: the data (≤ 4 bytes) sits in the offset field itself.
const DATA_INLINE: u32 = 0x8000_0000;

/// Past this size (hive version 1.4 and later) data is split into db segments of at most
/// this many bytes each.
const BIG_DATA_SEGMENT: usize = 16344;

/// Fixed part of a vk record before its name.
const VK_HEADER: usize = 0x14;

pub const REG_NONE: u32 = 0;
pub const REG_SZ: u32 = 1;
pub const REG_EXPAND_SZ: u32 = 2;
pub const REG_BINARY: u32 = 3;
pub const REG_DWORD: u32 = 4;
pub const REG_DWORD_BIG_ENDIAN: u32 = 5;
pub const REG_LINK: u32 = 6;
pub const REG_MULTI_SZ: u32 = 7;
pub const REG_QWORD: u32 = 11;

/// A value: its name (`""` for the key's default value), type and raw data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub name: String,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A value's data read by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    String(String),
    MultiString(Vec<String>),
    Dword(u32),
    Qword(u64),
    Binary(Vec<u8>),
}

impl Value {
    /// The data as its type says; a DWORD/QWORD of the wrong length is `Binary`.
    pub fn typed(&self) -> Data {
        let d = &self.data;
        match self.kind {
            REG_SZ | REG_EXPAND_SZ | REG_LINK => Data::String(utf16(d)),
            REG_MULTI_SZ => Data::MultiString(multi_sz(d)),
            REG_DWORD if d.len() == 4 => Data::Dword(u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            REG_DWORD_BIG_ENDIAN if d.len() == 4 => {
                Data::Dword(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
            }
            REG_QWORD if d.len() == 8 => {
                Data::Qword(u64::from_le_bytes(d[..8].try_into().unwrap_or_default()))
            }
            _ => Data::Binary(d.clone()),
        }
    }

    /// The value as text: strings as they are, numbers in decimal.
    pub fn string(&self) -> Option<String> {
        match self.typed() {
            Data::String(s) => Some(s),
            Data::MultiString(v) => Some(v.join("\n")),
            Data::Dword(n) => Some(n.to_string()),
            Data::Qword(n) => Some(n.to_string()),
            Data::Binary(_) => None,
        }
    }

    /// A DWORD or QWORD value as a number (a QWORD that fits).
    pub fn number(&self) -> Option<u64> {
        match self.typed() {
            Data::Dword(n) => Some(n.into()),
            Data::Qword(n) => Some(n),
            _ => None,
        }
    }
}

/// REG_MULTI_SZ: UTF-16LE strings each ended by NUL, the list ended by an empty one.
fn multi_sz(d: &[u8]) -> Vec<String> {
    let units: Vec<u16> = d
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    units
        .split(|&u| u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

pub(crate) fn parse(hive: &Hive, off: u32) -> Result<Value> {
    let c = hive.cell(off, "vk")?;
    let at = Hive::record_offset(off);
    let err = |m: String| Error::new("vk", at, m);
    if c.get(..2) != Some(b"vk".as_slice()) {
        return Err(err("signature is not \"vk\"".into()));
    }
    if c.len() < VK_HEADER {
        return Err(err("record shorter than its header".into()));
    }
    let r32 = |o| le32(c, o);
    let name_len = usize::from(le16(c, 2));
    let flags = le16(c, 0x10);
    let raw = c
        .get(VK_HEADER..)
        .and_then(|r| r.get(..name_len))
        .ok_or_else(|| err("name runs past the cell".into()))?;
    let name = if flags & VALUE_COMP_NAME != 0 {
        latin1(raw)
    } else {
        utf16(raw)
    };
    let size_field = r32(0x4);
    let data_off = r32(0x8);
    let kind = r32(0xc);
    let len = usize::try_from(size_field & !DATA_INLINE).unwrap_or(usize::MAX);
    let data = if size_field & DATA_INLINE != 0 && len <= 4 {
        // Inline data sits in the data offset field (checked inside the header above).
        c.get(0x8..)
            .and_then(|d| d.get(..len))
            .unwrap_or_default()
            .to_vec()
    } else if len == 0 {
        Vec::new()
    } else if data_off == NONE {
        return Err(err(format!("{len} bytes of data but no data cell")));
    } else {
        read_data(hive, data_off, len, &name)?
    };
    Ok(Value { name, kind, data })
}

/// `len` bytes of data from the cell at `off`: one cell, or a db record's segments.
fn read_data(hive: &Hive, off: u32, len: usize, name: &str) -> Result<Vec<u8>> {
    let c = hive.cell(off, "value data")?;
    let at = Hive::record_offset(off);
    if len > BIG_DATA_SEGMENT && c.get(..2) == Some(b"db".as_slice()) && hive.base.minor >= 4 {
        let n = usize::from(le16(c, 2));
        let list = try_le32(c, 4).unwrap_or(NONE);
        let segs = hive.cell(list, "db segment list")?;
        if n.checked_mul(4).is_none_or(|l| l > segs.len()) {
            return Err(Error::new(
                "db",
                at,
                format!("{n} segments do not fit their list's cell"),
            ));
        }
        let mut out = Vec::new();
        for seg in segs.chunks_exact(4).take(n) {
            let Some(want) = len.checked_sub(out.len()).filter(|&w| w > 0) else {
                break;
            };
            let s = hive.cell(le32(seg, 0), "db segment")?;
            out.extend_from_slice(s.get(..want.min(BIG_DATA_SEGMENT)).unwrap_or(s));
        }
        if out.len() < len {
            return Err(Error::new(
                "db",
                at,
                format!(
                    "value {name:?}: {n} segments hold {} of {len} bytes",
                    out.len()
                ),
            ));
        }
        return Ok(out);
    }
    match c.get(..len) {
        Some(d) => Ok(d.to_vec()),
        None => Err(Error::new(
            "value data",
            at,
            format!(
                "value {name:?}: {len} bytes do not fit a cell of {}",
                c.len()
            ),
        )),
    }
}
