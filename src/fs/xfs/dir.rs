//! Directories in their five formats (xfs_dir2.c): short-form in the inode (`dir_sf`); or
//! blocks of `blocksize << dirblklog` bytes in the data fork, where the data blocks fill the
//! first 32 GiB of the fork and the hash index starts at 32 GiB: in the single block itself
//! (block form), in one LEAF1 block (leaf form), or in LEAFN blocks under a da-btree (node
//! form; btree form is the same with the fork itself in btree format).
//!
//! readdir walks the data blocks in order; an entry's cookie is its byte position in the data
//! space, so a listing resumes exactly where it stopped whatever happens in between. Lookups
//! of one name hash it and follow the index.

use super::inode::{Inode, FMT_LOCAL};
use super::{da_btree, dir_data, dir_leaf, dir_sf, Xfs};
use crate::bytes::wide;
use crate::fs::{Error, FileType, Result};

/// Where the hash index starts in the data fork (XFS_DIR2_LEAF_OFFSET): 32 GiB.
const LEAF_OFFSET: u64 = 1 << 35;
/// readdir positions of "." and ".." in a short-form directory, below any stored offset.
const SF_DOT: u64 = 1;
const SF_DOTDOT: u64 = 2;
/// Leaf blocks one lookup follows along a run of equal hashes before giving up.
const MAX_HASH_RUN: usize = 1 << 16;
/// Removed entries `dir_deleted` returns for one directory: a directory's data space is at
/// most 32 GiB, so a bound on the list (not on the walk) keeps a forged directory from
/// filling memory with stale names; a million is far beyond any real directory's churn.
const MAX_STALE_PER_DIR: usize = 1 << 20;

/// One directory entry as the walk hands it out.
#[derive(Clone, Copy, Debug)]
pub struct Rec<'a> {
    pub ino: u64,
    pub name: &'a [u8],
    /// None: no file type in the entry (v4 without ftype).
    pub kind: Option<FileType>,
}

/// The file type of an entry's ftype byte (xfs_dir2_ftype; 0 is unknown).
pub fn ftype_kind(t: u8) -> Option<FileType> {
    Some(match t {
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

impl Xfs {
    fn dir_fsbs(&self) -> u64 {
        1 << self.sb.dirblklog
    }

    /// Data space logical block where the hash index starts.
    fn leaf_lblk(&self) -> u64 {
        LEAF_OFFSET >> self.sb.blocklog
    }

    /// A data (or single) directory block by its logical block, checked.
    fn dir_data_block(&self, d: &Inode, lblk: u64) -> Result<std::sync::Arc<[u8]>> {
        let v5 = self.sb.is_v5();
        let ino = d.ino;
        self.fork_block(
            d,
            false,
            lblk,
            self.dir_fsbs(),
            "xfs directory block",
            |b, daddr| {
                if dir_data::kind(b, v5).is_none() {
                    return Err(format!("magic {:#x}", crate::bytes::be32(b, 0)));
                }
                if v5 {
                    self.v5_header(b, daddr, ino, dir_data::V5_HEADER)?;
                }
                Ok(())
            },
        )
    }

    /// Calls `f(entry, next_cookie)` for each entry at or after cookie `start`; `f` returns
    /// false to stop.
    pub(super) fn dir_walk(
        &self,
        d: &Inode,
        start: u64,
        f: &mut dyn FnMut(Rec<'_>, u64) -> Result<bool>,
    ) -> Result<()> {
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(d.ino));
        }
        let ftype = self.sb.has_ftype();
        if d.format == FMT_LOCAL {
            let (parent, mut entries) = dir_sf::parse(&d.data_fork, d.size, ftype)
                .map_err(|e| self.damage("xfs short-form directory", d.ino, 0, e))?;
            let dir = Some(FileType::Directory);
            if start < SF_DOT {
                let rec = Rec {
                    ino: d.ino,
                    name: b".",
                    kind: dir,
                };
                if !f(rec, SF_DOT)? {
                    return Ok(());
                }
            }
            if start < SF_DOTDOT {
                let rec = Rec {
                    ino: parent,
                    name: b"..",
                    kind: dir,
                };
                if !f(rec, SF_DOTDOT)? {
                    return Ok(());
                }
            }
            entries.sort_by_key(|e| e.offset);
            self.prefetch_inodes(
                entries
                    .iter()
                    .filter(|e| u64::from(e.offset).saturating_add(SF_DOTDOT) > start)
                    .map(|e| e.ino),
            );
            for e in entries {
                // A cookie is the position after the entry: stored offsets are distinct and
                // above the header, so positions strictly increase.
                let pos = u64::from(e.offset) + SF_DOTDOT;
                if pos <= start {
                    continue;
                }
                let rec = Rec {
                    ino: e.ino,
                    name: e.name,
                    kind: ftype_kind(e.ftype),
                };
                if !f(rec, pos)? {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let v5 = self.sb.is_v5();
        self.dir_data_blocks(d, start, &mut |base, lblk, b| {
            let b = b?;
            let recs = dir_data::records(&b, v5, ftype)
                .map_err(|m| self.damage("xfs directory block", d.ino, lblk, m))?;
            // The entries still to list are about to be stat'ed: queue their inode reads.
            self.prefetch_inodes(recs.iter().filter_map(|(off, _, e)| {
                let e = e.as_ref()?;
                (base.saturating_add(wide(*off)) >= start).then_some(e.ino)
            }));
            for (off, len, e) in recs {
                let Some(e) = e else { continue };
                // base is below the 32 GiB data space, off below the block size.
                let pos = base.saturating_add(wide(off));
                if pos < start {
                    continue;
                }
                let rec = Rec {
                    ino: e.ino,
                    name: e.name,
                    kind: ftype_kind(e.ftype),
                };
                if !f(rec, pos.saturating_add(wide(len)))? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Calls `f(base, lblk, block)` for each data block of the block-based directory `d`
    /// that ends after data space position `start`, in order: `base` is the block's position
    /// in the data space, `lblk` its first logical block, `block` the checked block or why it
    /// could not be read. `f` returns false to stop.
    fn dir_data_blocks(
        &self,
        d: &Inode,
        start: u64,
        f: &mut dyn FnMut(u64, u64, Result<std::sync::Arc<[u8]>>) -> Result<bool>,
    ) -> Result<()> {
        let list = self.extents(d, false)?;
        let dir_fsbs = self.dir_fsbs();
        let dir_bytes = u64::from(self.sb.dir_block_size());
        let leaf = self.leaf_lblk();
        let mut next_db = 0u64;
        for e in list.iter() {
            if e.off >= leaf {
                break;
            }
            // Extents end below 2^55 (bmap::decode); blocks below the leaf offset are within
            // the 32 GiB data space, so the products below do not saturate.
            let end = e.off.saturating_add(e.len).min(leaf);
            let mut db = (e.off >> self.sb.dirblklog).max(next_db);
            loop {
                let lblk = db.saturating_mul(dir_fsbs);
                if lblk >= end {
                    break;
                }
                next_db = db.saturating_add(1);
                let base = db.saturating_mul(dir_bytes);
                if base.saturating_add(dir_bytes) > start {
                    let b = self.dir_data_block(d, lblk);
                    if !f(base, lblk, b)? {
                        return Ok(());
                    }
                }
                db = next_db;
            }
        }
        Ok(())
    }

    /// The removed entries still readable in the free space of directory `d`'s data blocks
    /// (forensics, issue 18; see `dir_data::stale_entries`), in data space order, at most
    /// `MAX_STALE_PER_DIR`. A short-form directory has none: removing an entry moves the
    /// later ones over it. A data block that cannot be read or parsed is skipped: its live
    /// entries are readdir's business, which reports the damage.
    pub(super) fn dir_deleted(&self, d: &Inode) -> Result<Vec<dir_data::Stale>> {
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(d.ino));
        }
        let mut out = Vec::new();
        if d.format == FMT_LOCAL {
            return Ok(out);
        }
        let (v5, ftype) = (self.sb.is_v5(), self.sb.has_ftype());
        let valid = |ino: u64| self.sb.valid_ino(ino);
        self.dir_data_blocks(d, 0, &mut |_, _, b| {
            let Ok(b) = b else { return Ok(true) };
            let Ok(recs) = dir_data::records(&b, v5, ftype) else {
                return Ok(true);
            };
            for (off, len, r) in recs {
                if r.is_none() {
                    out.extend(dir_data::stale_entries(&b, off, len, ftype, &valid));
                }
            }
            Ok(out.len() < MAX_STALE_PER_DIR)
        })?;
        out.truncate(MAX_STALE_PER_DIR);
        Ok(out)
    }

    /// The inode number of `name` in directory `d`.
    pub(super) fn dir_lookup(&self, d: &Inode, name: &[u8]) -> Result<Option<u64>> {
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(d.ino));
        }
        let ftype = self.sb.has_ftype();
        if d.format == FMT_LOCAL {
            let (parent, entries) = dir_sf::parse(&d.data_fork, d.size, ftype)
                .map_err(|e| self.damage("xfs short-form directory", d.ino, 0, e))?;
            return Ok(match name {
                b"." => Some(d.ino),
                b".." => Some(parent),
                _ => entries.iter().find(|e| e.name == name).map(|e| e.ino),
            });
        }
        let hash = da_btree::hashname(name);
        let list = self.extents(d, false)?;
        let last = list.last().map_or(0, |e| e.off.saturating_add(e.len));
        let v5 = self.sb.is_v5();
        let dir_fsbs = self.dir_fsbs();
        let leaf = self.leaf_lblk();
        if last == dir_fsbs {
            // Block form: the index is in the block's tail.
            let b = self.dir_data_block(d, 0)?;
            let pairs = dir_data::block_leaf(&b, v5)
                .map(dir_leaf::pairs)
                .map_err(|m| self.damage("xfs directory block", d.ino, 0, m))?;
            let (addrs, _) = dir_leaf::matches(&pairs, hash);
            return self.dir_check_addrs(d, &addrs, name);
        }
        let what = "xfs directory leaf";
        let (mut lblk, mut b) =
            self.da_find_leaf(d, false, leaf, Some(hash), what, dir_leaf::MAGICS)?;
        for _ in 0..MAX_HASH_RUN {
            let pairs = dir_leaf::entries(&b, v5).map_err(|m| self.damage(what, d.ino, lblk, m))?;
            let (addrs, more) = dir_leaf::matches(&pairs, hash);
            if let Some(ino) = self.dir_check_addrs(d, &addrs, name)? {
                return Ok(Some(ino));
            }
            let next = u64::from(da_btree::forw(&b));
            if !more || next == 0 {
                return Ok(None);
            }
            lblk = next;
            b = self.da_block(d, false, lblk, dir_fsbs, what, dir_leaf::MAGICS)?;
        }
        Err(self.damage(what, d.ino, lblk, "endless chain of equal hashes".into()))
    }

    /// The entry among the data space addresses `addrs` that is named `name`.
    fn dir_check_addrs(&self, d: &Inode, addrs: &[u32], name: &[u8]) -> Result<Option<u64>> {
        let dir_bytes = u64::from(self.sb.dir_block_size());
        let ftype = self.sb.has_ftype();
        for &a in addrs {
            // Addresses count 8-byte units; the directory block size is not zero.
            let pos = u64::from(a) << 3;
            let db = pos.checked_div(dir_bytes).unwrap_or(0);
            // Below the directory block size (<= 64 KiB): fits usize.
            let off =
                usize::try_from(pos.checked_rem(dir_bytes).unwrap_or(0)).unwrap_or(usize::MAX);
            let lblk = db.saturating_mul(self.dir_fsbs());
            if lblk >= self.leaf_lblk() {
                return Err(self.damage(
                    "xfs directory leaf",
                    d.ino,
                    lblk,
                    format!("address {a:#x} beyond the data space"),
                ));
            }
            let b = self.dir_data_block(d, lblk)?;
            let e = dir_data::entry_at(&b, off, ftype)
                .map_err(|m| self.damage("xfs directory block", d.ino, lblk, m))?;
            if e.name == name {
                return Ok(Some(e.ino));
            }
        }
        Ok(None)
    }
}
