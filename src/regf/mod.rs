//! Windows registry hives (regf): the base block, hive bins and their cells, key (nk),
//! value (vk), subkey list (lf/lh/li/ri) and big data (db) records, and the transaction logs
//! that bring a dirty hive up to date (applied in memory, see [`log`]). Read-only.
//!
//! Layout after libyal's "Windows NT Registry File (REGF) format" and hivex's
//! `lib/hivex-internal.h`. A hive is untrusted: every cell offset and size is checked
//! against the hive bins, subkey lists nest at most [`MAX_LIST_DEPTH`] deep, a tree walk
//! stops at [`MAX_DEPTH`] levels and refuses a key met twice (a loop), and each error names
//! the structure and its offset in the file.

pub mod base_block;
pub mod key;
pub mod log;
pub mod subkey_list;
pub mod value;

pub use base_block::BaseBlock;
pub use key::Key;
pub use log::{LogFile, Recovery};
pub use value::{Data, Value};

use crate::bytes::try_le32;
use base_block::{BASE_BLOCK_LEN, BASE_BLOCK_OFFSET};
use std::collections::HashSet;
use std::fmt;

/// Windows limits key nesting to 512 levels; deeper is damage (or a loop).
pub const MAX_DEPTH: usize = 512;

/// An ri list points at lf/lh/li lists, never at another ri: one level of indirection, a
/// second tolerated for odd writers.
pub const MAX_LIST_DEPTH: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The structure being read (`base block`, `nk`, `vk`, `lf`, `cell`…).
    pub structure: &'static str,
    /// Byte offset in the hive file.
    pub offset: u64,
    pub msg: String,
}

impl Error {
    pub fn new(structure: &'static str, offset: u64, msg: impl Into<String>) -> Self {
        Error {
            structure,
            offset,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "regf {} at {:#x}: {}",
            self.structure, self.offset, self.msg
        )
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// An open hive, held in memory.
pub struct Hive {
    data: Vec<u8>,
    pub base: BaseBlock,
    /// End of the hive bins in the file (the base block's length, clamped to the file).
    end: usize,
    /// What the transaction logs changed, when the hive was opened with them.
    pub recovery: Recovery,
}

/// UTF-16LE to a string (unpaired surrogates replaced), up to the first NUL.
pub fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Latin-1 (what "compressed" names hold) to a string.
pub(crate) fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

impl Hive {
    /// Opens a hive from its bytes: checks the base block (signature, checksum) and that the
    /// root cell is a key.
    pub fn open(data: Vec<u8>) -> Result<Hive> {
        let base = BaseBlock::parse(&data)?;
        let end = usize::try_from(base.hbins_len)
            .map_or(usize::MAX, |l| BASE_BLOCK_LEN.saturating_add(l))
            .min(data.len());
        let first = data.get(BASE_BLOCK_LEN..).and_then(|d| d.get(..4));
        if first != Some(b"hbin".as_slice()) {
            return Err(Error::new(
                "hbin",
                BASE_BLOCK_OFFSET,
                "no hive bin after the base block",
            ));
        }
        let hive = Hive {
            data,
            base,
            end,
            recovery: Recovery::default(),
        };
        hive.root()?;
        Ok(hive)
    }

    /// Opens a hive after applying its transaction logs (`NAME.LOG1`, `NAME.LOG2`, in that
    /// order) in memory, as Windows does on load when the base block says the hive is dirty
    /// or fails its checksum. A log that is missing, damaged or does not apply is left out
    /// with a warning in [`Hive::recovery`]; the hive is then as its primary file says.
    /// Logs whose entries pass their hashes but leave a hive that does not open are left
    /// out the same way.
    pub fn open_with_logs(data: Vec<u8>, logs: &[LogFile]) -> Result<Hive> {
        let (recovered, mut recovery) = log::recover(&data, logs);
        if let Some(r) = recovered {
            match Hive::open(r) {
                Ok(mut hive) => {
                    hive.recovery = recovery;
                    return Ok(hive);
                }
                Err(e) => {
                    recovery.warnings.push(format!(
                        "the hive with its logs applied does not open ({e}); logs not applied"
                    ));
                    recovery.applied.clear();
                }
            }
        }
        let mut hive = Hive::open(data)?;
        hive.recovery = recovery;
        Ok(hive)
    }

    /// Whether the sequence numbers differ: the hive was not written back cleanly and no
    /// transaction log brought it up to date (see [`Hive::open_with_logs`]).
    pub fn dirty(&self) -> bool {
        self.base.dirty()
    }

    /// The file offset of the cell at hive-bins offset `off`.
    fn file_offset(off: u32) -> u64 {
        // Cannot overflow: 4096 plus at most 2^32 - 1.
        BASE_BLOCK_OFFSET.saturating_add(u64::from(off))
    }

    /// The file offset of the record after the 4-byte size of the cell at `off`.
    fn record_offset(off: u32) -> u64 {
        Self::file_offset(off).saturating_add(4)
    }

    /// The data of the allocated cell at `off` (relative to the hive bins), checked to lie
    /// inside them.
    pub(crate) fn cell(&self, off: u32, what: &'static str) -> Result<&[u8]> {
        let at = Self::file_offset(off);
        let err = |m: String| Err(Error::new(what, at, m));
        let Some(start) = usize::try_from(at).ok().filter(|&s| s < self.end) else {
            return err(format!("cell offset {off:#x} outside the hive bins"));
        };
        let bins = self.data.get(..self.end).unwrap_or_default();
        let Some(raw) = try_le32(bins, start) else {
            return err("cell header past the end of the hive bins".into());
        };
        // The size is signed: negative for an allocated cell.
        let size = i32::from_le_bytes(raw.to_le_bytes());
        if size >= 0 {
            return err(format!("cell is free (size {size})"));
        }
        let len = usize::try_from(size.unsigned_abs()).unwrap_or(usize::MAX);
        if len < 4 {
            return err(format!("cell size {len} smaller than its header"));
        }
        match start
            .checked_add(len)
            .and_then(|e| bins.get(start..e))
            .and_then(|c| c.get(4..))
        {
            Some(record) => Ok(record),
            None => err(format!("cell of {len} bytes runs past the hive bins")),
        }
    }

    pub fn root(&self) -> Result<Key<'_>> {
        Key::parse(self, self.base.root_cell)
    }

    /// The key at `path` (`\`-separated, leading `\` optional), matched without regard to
    /// letter case as Windows does. `Ok(None)` when a component is missing.
    pub fn key(&self, path: &str) -> Result<Option<Key<'_>>> {
        let mut k = self.root()?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match k.subkey(part)? {
                Some(s) => k = s,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// The value `name` of the key at `path`, if both exist.
    pub fn value(&self, path: &str, name: &str) -> Result<Option<Value>> {
        match self.key(path)? {
            Some(k) => k.value(name),
            None => Ok(None),
        }
    }

    /// Visits every key depth-first (parents first) with its path from the root (`\` for the
    /// root itself). Stops with an error on a loop or past [`MAX_DEPTH`].
    pub fn walk(&self, f: &mut dyn FnMut(&str, &Key) -> Result<()>) -> Result<()> {
        let mut seen = HashSet::new();
        let root = self.root()?;
        seen.insert(root.offset);
        f("\\", &root)?;
        self.walk_in(&root, "", 1, &mut seen, f)
    }

    fn walk_in(
        &self,
        key: &Key,
        path: &str,
        depth: usize,
        seen: &mut HashSet<u32>,
        f: &mut dyn FnMut(&str, &Key) -> Result<()>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                "nk",
                Self::file_offset(key.offset),
                format!("keys nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        for sub in key.subkeys()? {
            if !seen.insert(sub.offset) {
                return Err(Error::new(
                    "nk",
                    Self::file_offset(sub.offset),
                    "key listed twice in the tree (a loop)",
                ));
            }
            let p = format!("{path}\\{}", sub.name);
            f(&p, &sub)?;
            self.walk_in(&sub, &p, depth.saturating_add(1), seen, f)?;
        }
        Ok(())
    }
}

/// Case-insensitive name comparison the way the registry does it (uppercased).
pub fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
        || a.chars()
            .flat_map(char::to_uppercase)
            .eq(b.chars().flat_map(char::to_uppercase))
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
pub(crate) mod tests {
    use super::*;

    /// A hive of one root key named `ROOT` with one DWORD value, built by the format.
    pub(crate) fn tiny() -> Vec<u8> {
        let mut h = vec![0u8; BASE_BLOCK_LEN + 4096];
        h[..4].copy_from_slice(b"regf");
        h[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        h[0x18..0x1c].copy_from_slice(&5u32.to_le_bytes());
        h[0x24..0x28].copy_from_slice(&0x20u32.to_le_bytes());
        h[0x28..0x2c].copy_from_slice(&4096u32.to_le_bytes());
        let b = &mut h[BASE_BLOCK_LEN..];
        b[..4].copy_from_slice(b"hbin");
        b[8..12].copy_from_slice(&4096u32.to_le_bytes());
        // nk at 0x20: cell of 0x58 bytes.
        let nk = 0x20;
        b[nk..nk + 4].copy_from_slice(&(-0x58i32).to_le_bytes());
        let r = &mut b[nk + 4..];
        r[..2].copy_from_slice(b"nk");
        r[2..4].copy_from_slice(&0x20u16.to_le_bytes());
        r[0x1c..0x20].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        r[0x24..0x28].copy_from_slice(&1u32.to_le_bytes());
        r[0x28..0x2c].copy_from_slice(&0x80u32.to_le_bytes());
        r[0x48..0x4a].copy_from_slice(&4u16.to_le_bytes());
        r[0x4c..0x50].copy_from_slice(b"ROOT");
        // value list at 0x80, vk at 0x90.
        b[0x80..0x84].copy_from_slice(&(-8i32).to_le_bytes());
        b[0x84..0x88].copy_from_slice(&0x90u32.to_le_bytes());
        b[0x90..0x94].copy_from_slice(&(-0x20i32).to_le_bytes());
        let v = &mut b[0x94..];
        v[..2].copy_from_slice(b"vk");
        v[2..4].copy_from_slice(&1u16.to_le_bytes());
        v[4..8].copy_from_slice(&(0x8000_0004u32).to_le_bytes());
        v[8..12].copy_from_slice(&7u32.to_le_bytes());
        v[12..16].copy_from_slice(&4u32.to_le_bytes());
        v[16..18].copy_from_slice(&1u16.to_le_bytes());
        v[0x14] = b'X';
        let c = base_block::checksum(&h);
        h[0x1fc..0x200].copy_from_slice(&c.to_le_bytes());
        h
    }

    #[test]
    fn tiny_hive_reads() {
        let h = Hive::open(tiny()).unwrap();
        assert!(!h.dirty());
        let r = h.root().unwrap();
        assert_eq!(r.name, "ROOT");
        let v = h.value("\\", "x").unwrap().unwrap();
        assert_eq!(v.typed(), Data::Dword(7));
    }

    /// Every truncation and many single-byte corruptions: an error or a result, never a
    /// panic, and a bounded walk.
    #[test]
    fn truncated_and_garbled_hives() {
        let good = tiny();
        for len in (0..good.len()).step_by(7) {
            let _ = Hive::open(good[..len].to_vec());
        }
        let mut seed = 0x1234_5678u64;
        for _ in 0..4000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut h = good.clone();
            let at = BASE_BLOCK_LEN + (seed >> 33) as usize % 0x100;
            h[at] = (seed >> 20) as u8;
            // Keep the checksum right so that the damage reaches the cells.
            let c = base_block::checksum(&h);
            h[0x1fc..0x200].copy_from_slice(&c.to_le_bytes());
            if let Ok(hive) = Hive::open(h) {
                let _ = hive.walk(&mut |_, k| k.values().map(|_| ()));
            }
        }
        let mut bad = good.clone();
        bad[0x30] ^= 1;
        let e = Hive::open(bad).err().unwrap();
        assert_eq!(e.structure, "base block");
    }

    /// A key that lists itself as its subkey is a loop, reported rather than followed.
    #[test]
    fn subkey_loop_is_an_error() {
        let mut h = tiny();
        let b = BASE_BLOCK_LEN;
        // lf list at 0x200 pointing back at the root nk.
        h[b + 0x200..b + 0x204].copy_from_slice(&(-0x10i32).to_le_bytes());
        h[b + 0x204..b + 0x206].copy_from_slice(b"lf");
        h[b + 0x206..b + 0x208].copy_from_slice(&1u16.to_le_bytes());
        h[b + 0x208..b + 0x20c].copy_from_slice(&0x20u32.to_le_bytes());
        let nk = b + 0x24;
        h[nk + 0x14..nk + 0x18].copy_from_slice(&1u32.to_le_bytes());
        h[nk + 0x1c..nk + 0x20].copy_from_slice(&0x200u32.to_le_bytes());
        let c = base_block::checksum(&h);
        h[0x1fc..0x200].copy_from_slice(&c.to_le_bytes());
        let hive = Hive::open(h).unwrap();
        let e = hive.walk(&mut |_, _| Ok(())).unwrap_err();
        assert!(e.msg.contains("loop"), "{e}");
    }
}
