//! Writing directories (Documentation/filesystems/ext4/directory.rst). Linear blocks: a new
//! name takes the slack after a record or an unused record, else a new block is appended;
//! a removed record's length is merged into the previous record (or, first in its block,
//! its inode set to 0), as the kernel does. With metadata_csum each leaf block ends in the
//! checksum tail entry and each index block in its dx_tail, recomputed on every write.
//!
//! Indexed (htree) directories: a name goes into the leaf the index chooses for its hash; a
//! full leaf is split by hash and a full index block split or the index deepened, as the
//! kernel does (see dx_write.rs). A linear directory whose only block fills up is indexed
//! then (make_indexed_dir) when the filesystem has dir_index; linear directories already
//! bigger than a block stay linear, as in the kernel. Only when the index cannot be used
//! (damaged, a hash ferry does not compute) or is full at its deepest level allowed is it
//! dropped: index blocks become empty records and EXT4_INDEX_FL is cleared, which the
//! kernel and e2fsck read as any linear directory (e2fsck -D would index it again).
//! Removal takes a record out of its leaf and leaves the index as it is (leaves are never
//! merged, as in the kernel); the index finds the record's leaf.

use super::inode::{self, Inode, InodeBuf};
use super::superblock::Incompat;
use super::{csum, dir, htree, low32, Ext4};
use crate::bytes::{le16, le32};
use crate::fs::{Error, FileType, Result};

pub(super) const HEADER_LEN: usize = 8;
/// Largest name (u8 name_len).
pub(super) const MAX_NAME_LEN: usize = 255;

/// Bytes a record with a name of `n` bytes needs (EXT4_DIR_REC_LEN).
pub(crate) fn rec_len_for(n: usize) -> usize {
    // Names are at most 255 bytes: no overflow.
    HEADER_LEN
        .saturating_add(n)
        .checked_next_multiple_of(4)
        .unwrap_or(usize::MAX)
}

/// rec_len as stored (ext4_rec_len_to_disk): 64 KiB blocks write a whole-block record as
/// 65535 and keep bits 16-17 in the low bits.
pub(super) fn rec_len_to_disk(len: usize, bs: usize) -> u16 {
    // Below 64 KiB the length itself (len <= bs); else bits 0-15 with bits 16-17 in the
    // low two (zero in a length, a multiple of 4), a whole 64 KiB block as 65535.
    if len == 65536 && bs >= 65536 {
        return u16::MAX;
    }
    let [lo, hi, top, ..] = len.to_le_bytes();
    if bs < 65536 {
        return u16::from_le_bytes([lo, hi]);
    }
    u16::from_le_bytes([(lo & 0xfc) | (top & 3), hi])
}

/// The file_type byte of a directory entry (EXT4_FT_*).
pub(crate) fn type_byte(k: FileType) -> u8 {
    match k {
        FileType::RegularFile => 1,
        FileType::Directory => 2,
        FileType::CharDevice => 3,
        FileType::BlockDevice => 4,
        FileType::NamedPipe => 5,
        FileType::Socket => 6,
        FileType::Symlink => 7,
    }
}

/// The `len` bytes at `off` of a directory block being edited. Offsets come from records
/// already checked against the block: an error here is a slip, kept from becoming a panic.
pub(super) fn span_mut(block: &mut [u8], off: usize, len: usize) -> Result<&mut [u8]> {
    let n = block.len();
    block
        .get_mut(off..)
        .and_then(|b| b.get_mut(..len))
        .ok_or_else(|| {
            Error::corrupt(
                "directory block",
                0,
                0,
                format!("{len} bytes at {off}: past the block's {n}"),
            )
        })
}

/// rec_len of the record at `off` (checked by `record` before).
pub(super) fn rec_len_at(block: &[u8], off: usize) -> usize {
    block
        .get(off..)
        .map_or(0, |r| dir::rec_len_from_disk(le16(r, 4), block.len()))
}

/// The name of the record at `off` (of `name_len` bytes, checked by `record`).
pub(super) fn name_at(block: &[u8], off: usize, name_len: usize) -> &[u8] {
    block
        .get(off..)
        .and_then(|r| r.get(HEADER_LEN..))
        .and_then(|r| r.get(..name_len))
        .unwrap_or_default()
}

pub(super) fn put_record(
    block: &mut [u8],
    off: usize,
    ino: u32,
    rec_len: usize,
    name: &[u8],
    ft: u8,
) -> Result<()> {
    let disk_len = rec_len_to_disk(rec_len, block.len());
    let name_len =
        u8::try_from(name.len()).map_err(|_| Error::NameTooLong { max: MAX_NAME_LEN })?;
    let rec = span_mut(block, off, rec_len)?;
    let Some((head, rest)) = rec.split_at_mut_checked(HEADER_LEN) else {
        return Err(Error::corrupt(
            "directory entry",
            0,
            0,
            format!("rec_len {rec_len}"),
        ));
    };
    let Some((stored, pad)) = rest.split_at_mut_checked(name.len()) else {
        return Err(Error::corrupt(
            "directory entry",
            0,
            0,
            format!("rec_len {rec_len} for a name of {name_len} bytes"),
        ));
    };
    head[0..4].copy_from_slice(&ino.to_le_bytes());
    head[4..6].copy_from_slice(&disk_len.to_le_bytes());
    head[6] = name_len;
    head[7] = ft;
    stored.copy_from_slice(name);
    pad.fill(0);
    Ok(())
}

/// One record's header, bounds-checked against `limit` (and the block).
pub(super) fn record(
    block: &[u8],
    off: usize,
    limit: usize,
) -> std::result::Result<(u32, usize, usize), String> {
    let left = limit.min(block.len()).saturating_sub(off);
    let head = block
        .get(off..)
        .and_then(|r| r.get(..12))
        .filter(|_| left >= 12);
    let Some(head) = head else {
        return Err(format!(
            "offset {off}: {left} bytes left, less than a record"
        ));
    };
    let rec_len = dir::rec_len_from_disk(le16(head, 4), block.len());
    let name_len = usize::from(head[6]);
    // name_len <= 255: no overflow.
    if rec_len < 12
        || rec_len % 4 != 0
        || rec_len > left
        || HEADER_LEN.saturating_add(name_len) > rec_len
    {
        return Err(format!(
            "offset {off}: rec_len {rec_len}, name_len {name_len}"
        ));
    }
    Ok((le32(head, 0), rec_len, name_len))
}

/// An inode number as a directory entry holds it (numbers are at most s_inodes_count).
pub(super) fn ino32(ino: u64) -> Result<u32> {
    u32::try_from(ino).map_err(|_| Error::Invalid(format!("inode number {ino} past 32 bits")))
}

impl Ext4 {
    /// Refuses changes to a directory ferry cannot write (EROFS on that object): inline data,
    /// encrypted or casefolded names; EPERM for immutable or append-only ones.
    pub(crate) fn dir_writable(&self, d: &Inode) -> Result<()> {
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(d.ino));
        }
        if d.flags & (inode::FL_INLINE_DATA | inode::FL_ENCRYPT | inode::FL_CASEFOLD) != 0 {
            return Err(Error::ReadOnly);
        }
        if d.flags & (inode::FL_IMMUTABLE | inode::FL_APPEND) != 0 {
            return Err(Error::NotPermitted);
        }
        if d.links == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Bytes of a directory block that hold records (the checksum tail excluded).
    pub(super) fn dir_limit(&self) -> usize {
        let bs = self.block_size_usize();
        if self.sb.metadata_csum {
            // The block size is at least 1 KiB.
            bs.saturating_sub(csum::DIRENT_TAIL_LEN)
        } else {
            bs
        }
    }

    fn has_filetype(&self) -> bool {
        self.sb.has_incompat(Incompat::FILETYPE)
    }

    /// The first block of a new directory: "." and "..", then the checksum tail.
    pub(crate) fn new_dir_block(&self, d: &InodeBuf, parent: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; self.block_size_usize()];
        let ft = if self.has_filetype() { 2 } else { 0 };
        put_record(&mut b, 0, ino32(d.ino)?, 12, b".", ft)?;
        // dir_limit is at least 1 KiB - 12.
        let rest = self.dir_limit().saturating_sub(12);
        put_record(&mut b, 12, ino32(parent)?, rest, b"..", ft)?;
        self.seal_dir_block(d, 1, &mut b);
        Ok(b)
    }

    /// Sets the checksum of a directory block of `d` being written: the dx_tail of an index
    /// block of an indexed directory, else the leaf tail.
    pub(super) fn seal_dir_block(&self, d: &InodeBuf, lblk: u64, block: &mut [u8]) {
        if !self.sb.metadata_csum {
            return;
        }
        // Inode numbers are at most s_inodes_count, a u32.
        let seed = csum::inode_seed(self.sb.csum_seed, low32(d.ino), d.generation());
        if d.flags() & inode::FL_INDEX != 0 && htree::is_interior(block, lblk) {
            if let Some(off) = htree::count_offset(block) {
                csum::dx_node_set(seed, block, off);
                return;
            }
        }
        csum::dir_leaf_set(seed, block);
    }

    /// Block `lblk` of directory `d`: its physical block and contents (checksum verified).
    pub(super) fn dir_block_rw(&self, d: &InodeBuf, lblk: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let i = d.parse(&self.sb)?;
        let pblk = match self.map(&i, lblk)? {
            super::Run::Data { pblk, .. } => pblk,
            _ => return Ok(None),
        };
        let b = self.dir_block(&i, lblk, pblk)?;
        Ok(Some((pblk, b.to_vec())))
    }

    pub(super) fn dir_blocks(&self, d: &InodeBuf) -> u64 {
        d.size().div_ceil(u64::from(self.block_size()))
    }

    /// Where record `name` is in `block`: (offset, previous record's offset).
    fn find_in_block(
        block: &[u8],
        name: &[u8],
        ino_dir: u64,
        pblk: u64,
    ) -> Result<Option<(usize, Option<usize>)>> {
        let limit_full = block.len();
        let mut off = 0;
        let mut prev = None;
        while off < limit_full {
            let (ino, rec_len, name_len) = record(block, off, limit_full)
                .map_err(|e| Error::corrupt("directory entry", ino_dir, pblk, e))?;
            if ino != 0 && name_at(block, off, name_len) == name {
                return Ok(Some((off, prev)));
            }
            prev = Some(off);
            // off + rec_len <= the block's length (record).
            off = off.saturating_add(rec_len);
        }
        Ok(None)
    }

    /// Where record `name` is: (logical block, physical block, block, offset, previous
    /// record's offset in the block). An indexed directory's leaf for the name is tried
    /// first; every block is scanned when the name is not there (a hash range continued in
    /// the next leaf, a damaged index).
    #[allow(clippy::type_complexity)]
    fn dir_locate(
        &self,
        d: &InodeBuf,
        name: &[u8],
    ) -> Result<Option<(u64, u64, Vec<u8>, usize, Option<usize>)>> {
        if d.flags() & inode::FL_INDEX != 0 && name != b"." && name != b".." {
            if let Some(lblk) = self.dx_leaf(d, name)? {
                if let Some((pblk, block)) = self.dir_block_rw(d, lblk)? {
                    if let Some((off, prev)) = Self::find_in_block(&block, name, d.ino, pblk)? {
                        return Ok(Some((lblk, pblk, block, off, prev)));
                    }
                }
            }
        }
        for lblk in 0..self.dir_blocks(d) {
            let Some((pblk, block)) = self.dir_block_rw(d, lblk)? else {
                continue;
            };
            if let Some((off, prev)) = Self::find_in_block(&block, name, d.ino, pblk)? {
                return Ok(Some((lblk, pblk, block, off, prev)));
            }
        }
        Ok(None)
    }

    /// Removes entry `name` from directory `d`; returns its inode number.
    pub(crate) fn dir_remove(&self, d: &InodeBuf, name: &[u8]) -> Result<u64> {
        let Some((lblk, pblk, mut block, off, prev)) = self.dir_locate(d, name)? else {
            return Err(Error::NotFound);
        };
        let ino = le32(span_mut(&mut block, off, HEADER_LEN)?, 0);
        let bs = block.len();
        // Both records were checked by find_in_block: their lengths sum to at most bs.
        let rec_len = rec_len_at(&block, off);
        match prev {
            Some(p) => {
                let merged = rec_len_at(&block, p).saturating_add(rec_len);
                span_mut(&mut block, p, HEADER_LEN)?[4..6]
                    .copy_from_slice(&rec_len_to_disk(merged, bs).to_le_bytes());
                span_mut(&mut block, off, rec_len.min(HEADER_LEN))?.fill(0);
            }
            None => span_mut(&mut block, off, 4)?.fill(0),
        }
        self.seal_dir_block(d, lblk, &mut block);
        self.put_meta(pblk, block)?;
        Ok(u64::from(ino))
    }

    /// Points existing entry `name` of `d` at inode `ino` of type `kind` (rename over a name,
    /// or ".." of a moved directory).
    pub(crate) fn dir_set(
        &self,
        d: &InodeBuf,
        name: &[u8],
        ino: u64,
        kind: FileType,
    ) -> Result<()> {
        let Some((lblk, pblk, mut block, off, _)) = self.dir_locate(d, name)? else {
            return Err(Error::NotFound);
        };
        let ino = ino32(ino)?;
        let filetype = self.has_filetype();
        let rec = span_mut(&mut block, off, HEADER_LEN)?;
        rec[0..4].copy_from_slice(&ino.to_le_bytes());
        if filetype {
            rec[7] = type_byte(kind);
        }
        self.seal_dir_block(d, lblk, &mut block);
        self.put_meta(pblk, block)
    }

    /// Whether directory `d` holds nothing but "." and "..".
    pub(crate) fn dir_is_empty(&self, d: &InodeBuf) -> Result<bool> {
        let i = d.parse(&self.sb)?;
        let mut empty = true;
        self.walk_dir(&i, 0, None, &mut |e, _, _| {
            if e.name != b"." && e.name != b".." {
                empty = false;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(empty)
    }

    /// Tries to put a record in block `block` (records up to `limit`); true if it went in.
    pub(super) fn insert_in_block(
        block: &mut [u8],
        limit: usize,
        name: &[u8],
        ino: u32,
        ft: u8,
        ino_dir: u64,
        pblk: u64,
    ) -> Result<bool> {
        let need = rec_len_for(name.len());
        let mut off = 0;
        while off < limit {
            let (cur, rec_len, name_len) = record(block, off, limit)
                .map_err(|e| Error::corrupt("directory entry", ino_dir, pblk, e))?;
            let used = if cur == 0 { 0 } else { rec_len_for(name_len) };
            // used <= rec_len: the record holds its name, and both are multiples of 4.
            if let Some(free) = rec_len.checked_sub(used).filter(|&f| f >= need) {
                if cur == 0 {
                    put_record(block, off, ino, rec_len, name, ft)?;
                } else {
                    let bs = block.len();
                    span_mut(block, off, HEADER_LEN)?[4..6]
                        .copy_from_slice(&rec_len_to_disk(used, bs).to_le_bytes());
                    // off + rec_len <= limit (record).
                    put_record(block, off.saturating_add(used), ino, free, name, ft)?;
                }
                return Ok(true);
            }
            // off + rec_len <= limit (record).
            off = off.saturating_add(rec_len);
        }
        Ok(false)
    }

    /// Adds entry `name` → `ino` (of type `kind`) to directory `d`, which the caller has
    /// checked to be writable and not to hold `name`. `d` may grow (size, blocks) or lose its
    /// index; the caller writes it.
    pub(crate) fn dir_add(
        &self,
        d: &mut InodeBuf,
        name: &[u8],
        ino: u64,
        kind: FileType,
    ) -> Result<()> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { max: MAX_NAME_LEN });
        }
        let ino32 = ino32(ino)?;
        let ft = if self.has_filetype() {
            type_byte(kind)
        } else {
            0
        };
        let limit = self.dir_limit();
        let mut dropped_index = false;
        if d.flags() & inode::FL_INDEX != 0 {
            if self.dx_add(d, name, ino32, ft)? {
                return Ok(());
            }
            self.dx_to_linear(d)?;
            dropped_index = true;
        }
        let nblocks = self.dir_blocks(d);
        for lblk in 0..nblocks {
            let Some((pblk, mut block)) = self.dir_block_rw(d, lblk)? else {
                continue;
            };
            if Self::insert_in_block(&mut block, limit, name, ino32, ft, d.ino, pblk)? {
                self.seal_dir_block(d, lblk, &mut block);
                return self.put_meta(pblk, block);
            }
            // A directory outgrowing its first block gets an index (ext4_add_entry); one
            // whose index was just dropped, or already bigger and linear, stays linear.
            if nblocks == 1
                && !dropped_index
                && self.make_indexed(d, pblk, &block)?
                && self.dx_add(d, name, ino32, ft)?
            {
                return Ok(());
            }
        }
        if d.flags() & inode::FL_INDEX != 0 {
            // Indexed just now but the index could not take the name (not expected).
            self.dx_to_linear(d)?;
        }
        let (lblk, pblk) = self.dir_append_block(d)?;
        let mut block = vec![0u8; self.block_size_usize()];
        put_record(&mut block, 0, ino32, limit, name, ft)?;
        self.seal_dir_block(d, lblk, &mut block);
        self.put_meta(pblk, block)
    }

    /// Drops the hash index of `d`: block 0 keeps "." and ".." (".." spanning the rest),
    /// index nodes become one empty record, and EXT4_INDEX_FL is cleared.
    fn dx_to_linear(&self, d: &mut InodeBuf) -> Result<()> {
        let limit = self.dir_limit();
        let ft = if self.has_filetype() { 2 } else { 0 };
        let nblocks = self.dir_blocks(d);
        let mut blocks = Vec::new();
        for lblk in 0..nblocks {
            let i = d.parse(&self.sb)?;
            let pblk = match self.map(&i, lblk)? {
                super::Run::Data { pblk, .. } => pblk,
                _ => continue,
            };
            let raw = self.meta_block(pblk, "directory block", d.ino)?;
            if lblk == 0 {
                let dot = le32(&raw, 0);
                let dotdot = le32(&raw, 12);
                if &raw[8..9] != b"." || &raw[20..22] != b".." {
                    return Err(Error::corrupt(
                        "directory index",
                        d.ino,
                        pblk,
                        "no . and ..",
                    ));
                }
                let mut b = vec![0u8; raw.len()];
                put_record(&mut b, 0, dot, 12, b".", ft)?;
                // limit is at least 1 KiB - 12.
                put_record(&mut b, 12, dotdot, limit.saturating_sub(12), b"..", ft)?;
                blocks.push((lblk, pblk, b));
            } else if htree::is_interior(&raw, lblk) {
                let mut b = vec![0u8; raw.len()];
                put_record(&mut b, 0, 0, limit, b"", 0)?;
                blocks.push((lblk, pblk, b));
            }
        }
        d.set_flags(d.flags() & !inode::FL_INDEX);
        for (lblk, pblk, mut b) in blocks {
            self.seal_dir_block(d, lblk, &mut b);
            self.put_meta(pblk, b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_len_round_trips() {
        for bs in [1024usize, 4096, 65536] {
            for len in [12usize, 16, 260, 1000, 1024, 4096, 65532, 65536] {
                if len <= bs {
                    let disk = rec_len_to_disk(len, bs);
                    assert_eq!(dir::rec_len_from_disk(disk, bs), len, "{len} in {bs}");
                }
            }
        }
        assert_eq!(rec_len_to_disk(65536, 65536), u16::MAX);
    }

    #[test]
    fn records_are_written_and_checked_without_panics() {
        let mut b = vec![0u8; 1024];
        put_record(&mut b, 0, 2, 12, b".", 2).unwrap();
        put_record(&mut b, 12, 2, 1012, b"..", 2).unwrap();
        assert_eq!(record(&b, 12, 1024), Ok((2, 1012, 2)));
        assert_eq!(name_at(&b, 12, 2), b"..");
        // A record that does not hold its name, or runs past the block: errors.
        assert!(put_record(&mut b, 0, 5, 12, b"long-name", 1).is_err());
        assert!(put_record(&mut b, 1020, 5, 12, b"x", 1).is_err());
        assert!(put_record(&mut b, 0, 5, 300, &[b'n'; 256], 1).is_err());
        // Checking at or past the end, or with a limit past the block, is an error.
        assert!(record(&b, 1020, 1024).is_err());
        assert!(record(&b, 2000, 1024).is_err());
        assert!(record(&b[..16], 12, 1024).is_err());
        assert_eq!(name_at(&b, 5000, 3), b"");
    }
}
