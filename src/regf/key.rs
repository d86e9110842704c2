//! Key nodes (nk): name, flags, counts and the offsets of the subkey and value lists.

use super::subkey_list;
use super::value::{self, Value};
use super::{latin1, utf16, Error, Hive, Result};
use crate::bytes::{le16, le32};

/// The name is stored in Latin-1 rather than UTF-16LE.
const KEY_COMP_NAME: u16 = 0x0020;

/// Fixed part of an nk record before its name.
const NK_HEADER: usize = 0x4c;

/// The offset field of an absent list.
pub(crate) const NONE: u32 = 0xffff_ffff;

/// One key of a hive.
#[derive(Clone)]
pub struct Key<'h> {
    hive: &'h Hive,
    /// Cell offset (relative to the hive bins).
    pub offset: u32,
    pub name: String,
    pub flags: u16,
    subkey_count: u32,
    subkey_list: u32,
    value_count: u32,
    value_list: u32,
}

impl<'h> Key<'h> {
    pub(crate) fn parse(hive: &'h Hive, offset: u32) -> Result<Key<'h>> {
        let c = hive.cell(offset, "nk")?;
        let at = Hive::record_offset(offset);
        let err = |m: &str| Error::new("nk", at, m.to_string());
        if c.get(..2) != Some(b"nk".as_slice()) {
            return Err(err("signature is not \"nk\""));
        }
        if c.len() < NK_HEADER {
            return Err(err("record shorter than its header"));
        }
        let r32 = |o| le32(c, o);
        let flags = le16(c, 2);
        let name_len = usize::from(le16(c, 0x48));
        let raw = c
            .get(NK_HEADER..)
            .and_then(|r| r.get(..name_len))
            .ok_or_else(|| err("name runs past the cell"))?;
        let name = if flags & KEY_COMP_NAME != 0 {
            latin1(raw)
        } else {
            utf16(raw)
        };
        Ok(Key {
            hive,
            offset,
            name,
            flags,
            subkey_count: r32(0x14),
            subkey_list: r32(0x1c),
            value_count: r32(0x24),
            value_list: r32(0x28),
        })
    }

    /// The stable (non-volatile) subkeys, in the order the list holds them.
    pub fn subkeys(&self) -> Result<Vec<Key<'h>>> {
        if self.subkey_count == 0 || self.subkey_list == NONE {
            return Ok(Vec::new());
        }
        let offs = subkey_list::read(self.hive, self.subkey_list, 0)?;
        if u32::try_from(offs.len()) != Ok(self.subkey_count) {
            return Err(Error::new(
                "nk",
                Hive::file_offset(self.offset),
                format!(
                    "key {:?} says {} subkeys, its list holds {}",
                    self.name,
                    self.subkey_count,
                    offs.len()
                ),
            ));
        }
        offs.into_iter().map(|o| Key::parse(self.hive, o)).collect()
    }

    /// The subkey named `name` (any letter case).
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h>>> {
        Ok(self
            .subkeys()?
            .into_iter()
            .find(|k| super::name_eq(&k.name, name)))
    }

    /// The key's values, in list order.
    pub fn values(&self) -> Result<Vec<Value>> {
        if self.value_count == 0 || self.value_list == NONE {
            return Ok(Vec::new());
        }
        let c = self.hive.cell(self.value_list, "value list")?;
        let n = self.value_count;
        let offsets = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(4))
            .and_then(|l| c.get(..l));
        let Some(offsets) = offsets else {
            return Err(Error::new(
                "value list",
                Hive::file_offset(self.value_list),
                format!("{n} values do not fit a cell of {} bytes", c.len()),
            ));
        };
        offsets
            .chunks_exact(4)
            .map(|o| value::parse(self.hive, le32(o, 0)))
            .collect()
    }

    /// The value `name` (any letter case; `""` is the default value).
    pub fn value(&self, name: &str) -> Result<Option<Value>> {
        Ok(self
            .values()?
            .into_iter()
            .find(|v| super::name_eq(&v.name, name)))
    }
}
