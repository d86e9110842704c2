//! Growing hash-tree directories (Documentation/filesystems/ext4/directory.rst, "Hash Tree
//! Directories"), the way Linux's fs/ext4/namei.c does, so that e2fsck and the kernel accept
//! the result:
//!
//! - A name goes into the leaf the index assigns to its hash. A full leaf is split by hash
//!   (do_split): its names are sorted by hash, the upper part (about half the bytes) moves to
//!   a new block at the end of the directory, and (first moved hash, new block) goes into the
//!   parent index block after the leaf's entry, with the low "continued" bit set when the
//!   hash just below the split is the same (a lookup then goes on into the next leaf).
//! - A full index block is split first (ext4_dx_add_entry): a full dx_node whose parent has
//!   room gives its upper half of entries to a new dx_node; a full root (the whole path
//!   full) moves its entries into a new dx_node and points at it alone, adding one level,
//!   up to 2 index levels (3 with largedir). Beyond that the caller drops the index.
//! - A linear directory whose single block is full becomes indexed (make_indexed_dir): block
//!   0 becomes the dx_root ("." and ".." then dx_root_info with s_def_hash_version) and its
//!   names are split by hash into two new leaves. Bigger linear directories stay linear, as
//!   in the kernel.
//!
//! After each change to an index block the path is looked up again from the root (the
//! kernel's `restart`), which keeps the code to one case per step.

use super::inode::{self, InodeBuf};
use super::superblock::{Compat, Incompat, FLAGS_UNSIGNED_HASH};
use super::{dir, dir_write, htree, Ext4, Run};
use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};
use htree::{ENTRY_LEN, NODE_HEADER, ROOT_DOTS, ROOT_INFO_LEN};

/// Where the count/limit pair of a dx_root sits: after "." and ".." and the dx_root_info.
const ROOT_ENTRIES: usize = ROOT_DOTS + ROOT_INFO_LEN;
/// Offsets in dx_root_info (struct dx_root_info).
const INFO_HASH_VERSION: usize = ROOT_DOTS + 4;
const INFO_LENGTH: usize = ROOT_DOTS + 5;
const INFO_LEVELS: usize = ROOT_DOTS + 6;
const INFO_FLAGS: usize = ROOT_DOTS + 7;
const _: () = assert!(ROOT_INFO_LEN == 8);
/// The low bit of a dx_entry hash: this leaf continues the hash range of the one before.
const HASH_CONTINUED: u32 = 1;
/// Index changes one insert can need: a split per level, a new level, then the leaf split
/// (2 × MAX_LEVELS_LARGEDIR + 2).
const MAX_RESTARTS: usize = 8;
const _: () = assert!(htree::MAX_LEVELS_LARGEDIR == 3);

/// One index block (dx_root or dx_node) on the path from the root to a leaf.
struct Level {
    lblk: u64,
    pblk: u64,
    block: Vec<u8>,
    /// Offset of the count/limit pair (the entries start there).
    off: usize,
    /// The entry the path follows.
    at: usize,
}

impl Level {
    /// The entries (the first one's hash field holds limit and count).
    fn entries(&self) -> &[u8] {
        self.block.get(self.off..).unwrap_or_default()
    }

    fn limit(&self) -> usize {
        usize::from(le16(self.entries(), 0))
    }

    fn count(&self) -> usize {
        usize::from(le16(self.entries(), 2))
    }

    /// Sets the count (at most the limit, which came from a u16).
    fn set_count(&mut self, n: usize) -> Result<()> {
        let n = u16::try_from(n).map_err(|_| self.bad(format!("count {n}")))?;
        let lblk = self.lblk;
        self.block
            .get_mut(self.off..)
            .and_then(|e| e.get_mut(2..4))
            .ok_or_else(|| Error::corrupt("directory index", 0, lblk, "no count"))?
            .copy_from_slice(&n.to_le_bytes());
        Ok(())
    }

    fn full(&self) -> bool {
        self.count() >= self.limit()
    }

    fn entry(&self, i: usize) -> &[u8] {
        self.entries()
            .chunks_exact(ENTRY_LEN)
            .nth(i)
            .unwrap_or_default()
    }

    /// The hash stored in entry `i` (with its continued bit); entry 0 has none (0).
    fn hash(&self, i: usize) -> u32 {
        if i == 0 {
            0
        } else {
            le32(self.entry(i), 0)
        }
    }

    /// The block entry `i` points to (0, which no index entry names, past the entries).
    fn child(&self, i: usize) -> u64 {
        u64::from(le32(self.entry(i), 4) & htree::BLOCK_MASK)
    }

    fn bad(&self, d: String) -> Error {
        Error::corrupt("directory index", 0, self.pblk, d)
    }

    /// Inserts (hash, block) after the entry the path follows (dx_insert_block). The block
    /// is not full (the callers split it first).
    fn insert_after_at(&mut self, hash: u32, blk: u64) -> Result<()> {
        let count = self.count();
        let blk = u32::try_from(blk)
            .ok()
            .filter(|&b| b & !htree::BLOCK_MASK == 0)
            .ok_or_else(|| self.bad(format!("block {blk} past 28 bits")))?;
        // Entries at+1..count move up one: at < count < limit, so all stay in the block.
        let at = self
            .at
            .checked_add(1)
            .and_then(|a| a.checked_mul(ENTRY_LEN));
        let end = count.checked_mul(ENTRY_LEN);
        let moved = at.zip(end).and_then(|(at, end)| {
            let span = end.checked_add(ENTRY_LEN)?;
            let region = self.block.get_mut(self.off..)?.get_mut(at..span)?;
            Some(region)
        });
        let Some(region) = moved else {
            return Err(self.bad(format!("entry {} of {count}", self.at)));
        };
        region.copy_within(..region.len().saturating_sub(ENTRY_LEN), ENTRY_LEN);
        region[..4].copy_from_slice(&hash.to_le_bytes());
        region[4..8].copy_from_slice(&blk.to_le_bytes());
        // count < limit <= u16::MAX.
        self.set_count(count.saturating_add(1))
    }
}

/// The index path to the leaf for one name: its levels (root first), the leaf, the name's
/// hash and the hash version (signedness applied) the directory uses.
struct Path {
    levels: Vec<Level>,
    leaf: u64,
    hash: u32,
    version: u8,
}

/// A live record of a leaf block being split: where it is and its name's hash.
#[derive(Clone, Copy)]
struct Rec {
    hash: u32,
    off: usize,
    name_len: usize,
}

/// A block of zeros opening with the fake record of a dx_node (inode 0, rec_len the block).
fn new_node(bs: usize) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    if let Some(f) = b.get_mut(4..6) {
        f.copy_from_slice(&dir_write::rec_len_to_disk(bs, bs).to_le_bytes());
    }
    b
}

/// Copies entries `from..to` of `level` to the start of dx_node block `node`, and zeroes
/// them in `level` (all but entry 0, which holds its limit and count). Returns how many moved.
fn move_entries(level: &mut Level, from: usize, to: usize, node: &mut [u8]) -> Result<usize> {
    let bad = || level_error(level.pblk, from, to);
    let n = to.checked_sub(from).ok_or_else(bad)?;
    let start = from.checked_mul(ENTRY_LEN).ok_or_else(bad)?;
    let end = to.checked_mul(ENTRY_LEN).ok_or_else(bad)?;
    let pblk = level.pblk;
    let src = level
        .block
        .get_mut(level.off..)
        .and_then(|e| e.get_mut(start..end))
        .ok_or_else(|| level_error(pblk, from, to))?;
    node.get_mut(NODE_HEADER..)
        .and_then(|d| d.get_mut(..src.len()))
        .ok_or_else(|| level_error(pblk, from, to))?
        .copy_from_slice(src);
    let keep = if from == 0 {
        ENTRY_LEN.min(src.len())
    } else {
        0
    };
    src.get_mut(keep..).unwrap_or_default().fill(0);
    Ok(n)
}

fn level_error(pblk: u64, from: usize, to: usize) -> Error {
    Error::corrupt(
        "directory index",
        0,
        pblk,
        format!("entries {from}..{to} past the block"),
    )
}

/// Sets limit and count of dx_node block `node` (both at most a limit, from a u16).
fn put_limit_count(node: &mut [u8], limit: usize, count: usize) -> Result<()> {
    let f = node
        .get_mut(NODE_HEADER..)
        .ok_or_else(|| Error::corrupt("directory index", 0, 0, "node too small"))?;
    put_limit_count_at(f, limit, count)
}

/// Sets the limit and count at the start of `entries`.
fn put_limit_count_at(entries: &mut [u8], limit: usize, count: usize) -> Result<()> {
    let field = |n: usize| {
        u16::try_from(n).map_err(|_| Error::corrupt("directory index", 0, 0, format!("{n}")))
    };
    let (limit, count) = (field(limit)?, field(count)?);
    let f = entries
        .get_mut(..4)
        .ok_or_else(|| Error::corrupt("directory index", 0, 0, "no room for limit and count"))?;
    f[0..2].copy_from_slice(&limit.to_le_bytes());
    f[2..4].copy_from_slice(&count.to_le_bytes());
    Ok(())
}

impl Ext4 {
    /// Entries a dx_root and a dx_node hold (dx_root_limit, dx_node_limit): the block less
    /// the headers and, with metadata_csum, the dx_tail.
    fn dx_limits(&self) -> (usize, usize) {
        let bs = self.block_size_usize();
        let tail = if self.sb.metadata_csum {
            htree::TAIL_LEN
        } else {
            0
        };
        // The block size is at least 1 KiB: no underflow.
        (
            bs.saturating_sub(ROOT_ENTRIES).saturating_sub(tail) / ENTRY_LEN,
            bs.saturating_sub(NODE_HEADER).saturating_sub(tail) / ENTRY_LEN,
        )
    }

    /// Index levels a directory may have: 2, 3 with largedir (ext4_dir_htree_level).
    fn dx_max_levels(&self) -> usize {
        usize::from(if self.sb.has_incompat(Incompat::LARGEDIR) {
            htree::MAX_LEVELS_LARGEDIR
        } else {
            htree::MAX_LEVELS
        })
    }

    /// The hash version names are hashed with for a dx_root saying `version`: the unsigned
    /// variant when the superblock says so. None for hashes ferry does not compute here.
    fn dx_version(&self, version: u8) -> Option<u8> {
        match version {
            htree::LEGACY | htree::HALF_MD4 | htree::TEA
                if self.sb.flags & FLAGS_UNSIGNED_HASH != 0 =>
            {
                // The versions are 0..=2.
                Some(version.saturating_add(3))
            }
            htree::LEGACY | htree::HALF_MD4 | htree::TEA => Some(version),
            _ => None,
        }
    }

    /// The major hash of `name`.
    fn dx_hash(&self, version: u8, name: &[u8]) -> Option<u32> {
        htree::hash(version, name, &self.sb.hash_seed).map(|(h, _)| h)
    }

    /// Interior block `lblk` of `d` (dx_tail verified) and where it is.
    fn dx_block(&self, d: &InodeBuf, lblk: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let i = d.parse(&self.sb)?;
        let pblk = match self.map(&i, lblk)? {
            Run::Data { pblk, .. } => pblk,
            _ => return Ok(None),
        };
        Ok(self
            .dir_index_block(&i, lblk)
            .ok()
            .map(|b| (pblk, b.to_vec())))
    }

    /// Walks the index of `d` down to the leaf for `name` (dx_probe). None when the index
    /// cannot be used to write: damaged, an unknown hash or flag, limits that are not the
    /// ones this filesystem's block size and checksums give.
    fn dx_path(&self, d: &InodeBuf, name: &[u8]) -> Result<Option<Path>> {
        let nblocks = self.dir_blocks(d);
        let Some((pblk, root)) = self.dx_block(d, 0)? else {
            return Ok(None);
        };
        let info = |at: usize| root.get(at).copied().unwrap_or(u8::MAX);
        if htree::count_offset(&root) != Some(ROOT_ENTRIES) || info(INFO_FLAGS) & 1 != 0 {
            return Ok(None);
        }
        let levels = usize::from(info(INFO_LEVELS));
        if levels >= self.dx_max_levels() {
            return Ok(None);
        }
        let Some(version) = self.dx_version(info(INFO_HASH_VERSION)) else {
            return Ok(None);
        };
        let Some(hash) = self.dx_hash(version, name) else {
            return Ok(None);
        };
        let (root_limit, node_limit) = self.dx_limits();
        let mut path = Vec::with_capacity(levels.saturating_add(1));
        let mut cur = Level {
            lblk: 0,
            pblk,
            block: root,
            off: ROOT_ENTRIES,
            at: 0,
        };
        loop {
            let limit = if path.is_empty() {
                root_limit
            } else {
                node_limit
            };
            let count = cur.count();
            if cur.limit() != limit || count == 0 || count > limit {
                return Ok(None);
            }
            // The last entry whose lower bound is at or below the hash (entry 0 has none):
            // 1 <= count <= limit.
            cur.at = (1..count)
                .collect::<Vec<_>>()
                .partition_point(|&i| cur.hash(i) <= hash);
            let child = cur.child(cur.at);
            if child == 0 || child >= nblocks {
                return Ok(None);
            }
            path.push(cur);
            if path.len() > levels {
                return Ok(Some(Path {
                    levels: path,
                    leaf: child,
                    hash,
                    version,
                }));
            }
            let Some((pblk, block)) = self.dx_block(d, child)? else {
                return Ok(None);
            };
            if htree::count_offset(&block) != Some(NODE_HEADER) || le32(&block, 0) != 0 {
                return Ok(None);
            }
            cur = Level {
                lblk: child,
                pblk,
                block,
                off: NODE_HEADER,
                at: 0,
            };
        }
    }

    /// The leaf the index of `d` assigns to `name`, or None when the index cannot be used.
    pub(super) fn dx_leaf(&self, d: &InodeBuf, name: &[u8]) -> Result<Option<u64>> {
        if !self.sb.has_compat(Compat::DIR_INDEX) {
            return Ok(None);
        }
        Ok(self.dx_path(d, name)?.map(|p| p.leaf))
    }

    /// Seals and queues an index block.
    fn dx_put(&self, d: &InodeBuf, l: Level) -> Result<()> {
        let mut block = l.block;
        self.seal_dir_block(d, l.lblk, &mut block);
        self.put_meta(l.pblk, block)
    }

    /// Seals and queues a leaf (or any directory block) `lblk` at `pblk`.
    fn dx_put_block(&self, d: &InodeBuf, lblk: u64, pblk: u64, mut block: Vec<u8>) -> Result<()> {
        self.seal_dir_block(d, lblk, &mut block);
        self.put_meta(pblk, block)
    }

    /// Adds `name` through the index of `d`. False when the index cannot take it (damaged,
    /// or full at the deepest level allowed): the caller drops the index.
    pub(super) fn dx_add(&self, d: &mut InodeBuf, name: &[u8], ino: u32, ft: u8) -> Result<bool> {
        if !self.sb.has_compat(Compat::DIR_INDEX) {
            return Ok(false);
        }
        let limit = self.dir_limit();
        for _ in 0..MAX_RESTARTS {
            let Some(mut path) = self.dx_path(d, name)? else {
                return Ok(false);
            };
            let Some((lpblk, mut leaf)) = self.dir_block_rw(d, path.leaf)? else {
                return Ok(false);
            };
            if Self::insert_in_block(&mut leaf, limit, name, ino, ft, d.ino, lpblk)? {
                self.dx_put_block(d, path.leaf, lpblk, leaf)?;
                return Ok(true);
            }
            // Entries go into new blocks numbered in 28 bits (dx_get_block).
            if self.dir_blocks(d) >= u64::from(htree::BLOCK_MASK) {
                return Ok(false);
            }
            // dx_path gives at least the root.
            let Some(bottom) = path.levels.len().checked_sub(1) else {
                return Ok(false);
            };
            if path.levels.last().is_some_and(Level::full) {
                // Split the highest full index block whose parent has room; with the whole
                // path full, add a level under the root.
                let full = path.levels.iter().rev().take_while(|l| l.full()).count();
                match bottom.checked_sub(full) {
                    None => {
                        if path.levels.len() >= self.dx_max_levels() {
                            return Ok(false);
                        }
                        let root = path.levels.swap_remove(0);
                        self.dx_add_level(d, root)?;
                    }
                    Some(parent) => {
                        // The highest full one is the parent's child, parent + 1 <= bottom.
                        let node = path.levels.swap_remove(parent.saturating_add(1));
                        let parent = path.levels.swap_remove(parent);
                        self.dx_split_node(d, node, parent)?;
                    }
                }
                continue;
            }
            let parent = path.levels.swap_remove(bottom);
            if self.dx_split_leaf(d, &path, parent, lpblk, &leaf, name, ino, ft)? {
                return Ok(true);
            }
        }
        Err(Error::corrupt(
            "directory index",
            d.ino,
            0,
            format!("no room for a name after {MAX_RESTARTS} index changes"),
        ))
    }

    /// A new block at the end of directory `d`: (logical, physical). The caller fills it.
    pub(super) fn dir_append_block(&self, d: &mut InodeBuf) -> Result<(u64, u64)> {
        let nblocks = self.dir_blocks(d);
        let mut fm = self.load_map(d)?;
        let (pblk, _) = self.fm_alloc(&mut fm, d, nblocks, 1)?;
        self.fm_store(fm, d)?;
        // fm_alloc kept nblocks + 1 within 2^32 blocks: the size fits.
        d.set_size(
            nblocks
                .saturating_add(1)
                .saturating_mul(u64::from(self.block_size())),
        );
        Ok((nblocks, pblk))
    }

    /// The live records of leaf `block` with their hashes, sorted by hash (dx_make_map,
    /// dx_sort_map), from offset `from` on.
    fn dx_records(
        &self,
        d: &InodeBuf,
        pblk: u64,
        block: &[u8],
        from: usize,
        version: u8,
    ) -> Result<Vec<Rec>> {
        let limit = self.dir_limit();
        let mut out = Vec::new();
        let mut off = from;
        while off < limit {
            let (ino, rec_len, name_len) = dir_write::record(block, off, limit)
                .map_err(|e| Error::corrupt("directory entry", d.ino, pblk, e))?;
            if ino != 0 {
                let name = dir_write::name_at(block, off, name_len);
                let hash = self.dx_hash(version, name).ok_or_else(|| {
                    Error::corrupt("directory index", d.ino, pblk, "unknown hash version")
                })?;
                out.push(Rec {
                    hash,
                    off,
                    name_len,
                });
            }
            // off + rec_len <= limit (record).
            off = off.saturating_add(rec_len);
        }
        out.sort_by_key(|r| r.hash);
        Ok(out)
    }

    /// Where to split records sorted by hash: the upper part holds about half of their
    /// bytes (do_split), and each part at least one record. `recs` has two or more.
    fn split_point(recs: &[Rec]) -> usize {
        // Records of one block: every sum stays below the block size.
        let size = |r: &Rec| dir_write::rec_len_for(r.name_len);
        let total = recs.iter().map(size).fold(0usize, usize::saturating_add);
        let mut moved = 0usize;
        let mut count = 0usize;
        for r in recs.iter().rev() {
            if moved.saturating_add(size(r) / 2) > total / 2 {
                break;
            }
            moved = moved.saturating_add(size(r));
            count = count.saturating_add(1);
        }
        match recs.len().checked_sub(count) {
            Some(rest) if count != 0 && rest != 0 => rest,
            _ => recs.len() / 2,
        }
    }

    /// Records sorted by hash (two or more) split at `split_point`: the upper part's first
    /// hash, the continued bit (the hash below the split is the same), and the two parts.
    fn split_recs(recs: &[Rec]) -> Result<(u32, u32, &[Rec], &[Rec])> {
        let split = Self::split_point(recs);
        let below = split.checked_sub(1).and_then(|b| recs.get(b));
        let (Some(below), Some(at)) = (below, recs.get(split)) else {
            return Err(Error::corrupt(
                "directory block",
                0,
                0,
                format!("{} names do not split", recs.len()),
            ));
        };
        let continued = if below.hash == at.hash {
            HASH_CONTINUED
        } else {
            0
        };
        let (lower, upper) = recs.split_at(split);
        Ok((at.hash, continued, lower, upper))
    }

    /// A leaf block holding records `recs` copied from `src`, packed, the last one spanning
    /// to the checksum tail (or the block's end).
    fn pack_leaf(&self, src: &[u8], recs: &[Rec]) -> Result<Vec<u8>> {
        let limit = self.dir_limit();
        let mut b = vec![0u8; src.len()];
        let mut off = 0usize;
        for (k, r) in recs.iter().enumerate() {
            // Records that came from one block of `limit` bytes fit one packed (a record
            // past it is an error from put_record).
            let len = if k.saturating_add(1) == recs.len() {
                limit.saturating_sub(off)
            } else {
                dir_write::rec_len_for(r.name_len)
            };
            let name = dir_write::name_at(src, r.off, r.name_len);
            let head = src.get(r.off..).unwrap_or_default();
            let ft = head.get(7).copied().unwrap_or(0);
            dir_write::put_record(&mut b, off, le32(head, 0), len, name, ft)?;
            off = off.saturating_add(len);
        }
        Ok(b)
    }

    /// Splits the full leaf of `path` (at `pblk`, contents `block`) by hash into itself and
    /// a new block, inserts the new block into `parent` (the last index level, with room),
    /// and puts `name` into the half its hash belongs to. False if that half has no room
    /// after all (the caller looks the path up again).
    #[allow(clippy::too_many_arguments)]
    fn dx_split_leaf(
        &self,
        d: &mut InodeBuf,
        path: &Path,
        mut parent: Level,
        pblk: u64,
        block: &[u8],
        name: &[u8],
        ino: u32,
        ft: u8,
    ) -> Result<bool> {
        let recs = self.dx_records(d, pblk, block, 0, path.version)?;
        if recs.len() < 2 {
            return Err(Error::corrupt(
                "directory block",
                d.ino,
                pblk,
                format!("full with {} names", recs.len()),
            ));
        }
        let (hash2, continued, lower, upper) = Self::split_recs(&recs)?;
        let (new_lblk, new_pblk) = self.dir_append_block(d)?;
        let mut lower = self.pack_leaf(block, lower)?;
        let mut upper = self.pack_leaf(block, upper)?;
        parent.insert_after_at(hash2 | continued, new_lblk)?;
        self.dx_put(d, parent)?;
        let limit = self.dir_limit();
        let target = if path.hash >= hash2 {
            &mut upper
        } else {
            &mut lower
        };
        let done = Self::insert_in_block(target, limit, name, ino, ft, d.ino, pblk)?;
        self.dx_put_block(d, path.leaf, pblk, lower)?;
        self.dx_put_block(d, new_lblk, new_pblk, upper)?;
        Ok(done)
    }

    /// Splits full dx_node `node` in two, the upper half of its entries going to a new
    /// dx_node that `parent` (which has room) then points to.
    fn dx_split_node(&self, d: &mut InodeBuf, mut node: Level, mut parent: Level) -> Result<()> {
        let count = node.count();
        let keep = count / 2;
        let hash2 = node.hash(keep);
        let (new_lblk, new_pblk) = self.dir_append_block(d)?;
        let (_, node_limit) = self.dx_limits();
        let mut b = new_node(self.block_size_usize());
        // Entries keep..count of the node (count <= the node's limit: dx_path) start the
        // new node; the first one's hash makes room for limit and count (its bound is hash2).
        let moved = move_entries(&mut node, keep, count, &mut b)?;
        put_limit_count(&mut b, node_limit, moved)?;
        node.set_count(keep)?;
        parent.insert_after_at(hash2, new_lblk)?;
        self.dx_put(d, node)?;
        self.dx_put(d, parent)?;
        self.dx_put(
            d,
            Level {
                lblk: new_lblk,
                pblk: new_pblk,
                block: b,
                off: NODE_HEADER,
                at: 0,
            },
        )
    }

    /// Adds a level: the entries of the full root move to a new dx_node, which becomes the
    /// root's only entry (indirect_levels + 1).
    fn dx_add_level(&self, d: &mut InodeBuf, mut root: Level) -> Result<()> {
        let count = root.count();
        let (new_lblk, new_pblk) = self.dir_append_block(d)?;
        let (_, node_limit) = self.dx_limits();
        let mut b = new_node(self.block_size_usize());
        // All the root's entries move (entry 0 keeps its block; its hash field, limit and
        // count in the root, becomes the node's limit and count).
        let moved = move_entries(&mut root, 0, count, &mut b)?;
        put_limit_count(&mut b, node_limit, moved)?;
        root.set_count(1)?;
        // Below BLOCK_MASK, checked by dx_add.
        let child = u32::try_from(new_lblk).map_err(|_| root.bad(format!("block {new_lblk}")))?;
        let no_entry = root.bad("no first entry".into());
        root.block
            .get_mut(ROOT_ENTRIES..)
            .and_then(|e| e.get_mut(4..8))
            .ok_or(no_entry)?
            .copy_from_slice(&child.to_le_bytes());
        // Below dx_max_levels (at most 3), checked by dx_add.
        if let Some(levels) = root.block.get_mut(INFO_LEVELS) {
            *levels = levels.saturating_add(1);
        }
        self.dx_put(d, root)?;
        self.dx_put(
            d,
            Level {
                lblk: new_lblk,
                pblk: new_pblk,
                block: b,
                off: NODE_HEADER,
                at: 0,
            },
        )
    }

    /// Indexes linear directory `d`, whose only block (`block`, at `pblk`) is full
    /// (make_indexed_dir): block 0 becomes the dx_root and its names go to two new leaves
    /// split by hash. False, and nothing changed, when ferry cannot: no dir_index, an
    /// s_def_hash_version it does not compute, or a block 0 not laid out as "." then "..".
    pub(super) fn make_indexed(&self, d: &mut InodeBuf, pblk: u64, block: &[u8]) -> Result<bool> {
        if !self.sb.has_compat(Compat::DIR_INDEX)
            || d.flags() & (inode::FL_INDEX | inode::FL_CASEFOLD | inode::FL_ENCRYPT) != 0
            || self.dir_blocks(d) != 1
        {
            return Ok(false);
        }
        let root_version = self.sb.def_hash_version;
        let Some(version) = self.dx_version(root_version) else {
            return Ok(false);
        };
        let bs = block.len();
        let limit = self.dir_limit();
        let dots = |off: usize, name: &[u8]| {
            dir_write::record(block, off, limit)
                .is_ok_and(|(ino, _, n)| ino != 0 && dir_write::name_at(block, off, n) == name)
        };
        if !dots(0, b".") || dir::rec_len_from_disk(le16(block, 4), bs) != 12 || !dots(12, b"..") {
            return Ok(false);
        }
        // ".." checked by record: 12 + its length is inside the block.
        let first = 12usize.saturating_add(dir_write::rec_len_at(block, 12));
        let recs = self.dx_records(d, pblk, block, first, version)?;
        if recs.len() < 2 {
            return Ok(false);
        }
        let (hash2, continued, lower, upper) = Self::split_recs(&recs)?;
        let (l1, p1) = self.dir_append_block(d)?;
        let (l2, p2) = self.dir_append_block(d)?;
        let lower = self.pack_leaf(block, lower)?;
        let upper = self.pack_leaf(block, upper)?;
        let mut root = vec![0u8; bs];
        dir_write::put_record(&mut root, 0, le32(block, 0), 12, b".", block[7])?;
        // The block is at least 1 KiB.
        let rest = bs.saturating_sub(12);
        dir_write::put_record(&mut root, 12, le32(block, 12), rest, b"..", block[19])?;
        root[INFO_HASH_VERSION] = root_version;
        root[INFO_LENGTH] = 8;
        let (root_limit, _) = self.dx_limits();
        // The first directory blocks, 1 and 2.
        let (b1, b2) = (u32::try_from(l1), u32::try_from(l2));
        let (Ok(b1), Ok(b2)) = (b1, b2) else {
            return Err(Error::corrupt(
                "directory",
                d.ino,
                pblk,
                "new leaves past 2^32",
            ));
        };
        let e = &mut root[ROOT_ENTRIES..ROOT_ENTRIES + 16];
        put_limit_count_at(e, root_limit, 2)?;
        e[4..8].copy_from_slice(&b1.to_le_bytes());
        e[8..12].copy_from_slice(&(hash2 | continued).to_le_bytes());
        e[12..16].copy_from_slice(&b2.to_le_bytes());
        d.set_flags(d.flags() | inode::FL_INDEX);
        self.dx_put_block(d, 0, pblk, root)?;
        self.dx_put_block(d, l1, p1, lower)?;
        self.dx_put_block(d, l2, p2, upper)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(hashes: &[u32], name_len: usize) -> Vec<Rec> {
        hashes
            .iter()
            .map(|&hash| Rec {
                hash,
                off: 0,
                name_len,
            })
            .collect()
    }

    #[test]
    #[allow(clippy::arithmetic_side_effects)] // fixtures
    fn split_point_halves_the_bytes_and_keeps_both_parts() {
        // Equal records: half move.
        assert_eq!(Ext4::split_point(&recs(&[2, 4, 6, 8, 10, 12], 8)), 3);
        // Two records: one each.
        assert_eq!(Ext4::split_point(&recs(&[2, 4], 255)), 1);
        // One big record at the top moves alone.
        let mut r = recs(&[2, 4, 6, 8, 10, 12, 14, 16], 4);
        r[7].name_len = 200;
        assert_eq!(Ext4::split_point(&r), 7);
        // Equal hashes still split by count; the caller marks the range continued.
        let same = recs(&[6, 6, 6, 6], 16);
        let at = Ext4::split_point(&same);
        assert!(at > 0 && at < same.len());
        assert_eq!(same[at - 1].hash, same[at].hash);
    }

    #[test]
    #[allow(clippy::arithmetic_side_effects)] // fixtures
    fn insert_after_at_shifts_the_later_entries() {
        let mut block = new_node(1024);
        let off = NODE_HEADER;
        block[off..off + 2].copy_from_slice(&126u16.to_le_bytes());
        block[off + 2..off + 4].copy_from_slice(&3u16.to_le_bytes());
        for (i, (h, b)) in [(0u32, 1u32), (100, 2), (200, 3)].iter().enumerate() {
            if i > 0 {
                block[off + i * 8..off + i * 8 + 4].copy_from_slice(&h.to_le_bytes());
            }
            block[off + i * 8 + 4..off + i * 8 + 8].copy_from_slice(&b.to_le_bytes());
        }
        let mut l = Level {
            lblk: 5,
            pblk: 50,
            block,
            off,
            at: 1,
        };
        l.insert_after_at(151, 9).unwrap();
        assert_eq!(l.count(), 4);
        let got: Vec<(u32, u64)> = (0..4).map(|i| (l.hash(i), l.child(i))).collect();
        assert_eq!(got, [(0, 1), (100, 2), (151, 9), (200, 3)]);
    }

    #[test]
    fn a_count_past_the_block_is_an_error() {
        let mut block = new_node(1024);
        // 127 entries fill the 1016 bytes after the header: no room for one more.
        block[NODE_HEADER..NODE_HEADER + 2].copy_from_slice(&127u16.to_le_bytes());
        block[NODE_HEADER + 2..NODE_HEADER + 4].copy_from_slice(&127u16.to_le_bytes());
        let mut l = Level {
            lblk: 5,
            pblk: 50,
            block,
            off: NODE_HEADER,
            at: 3,
        };
        assert!(l.insert_after_at(7, 9).is_err());
        assert!(l.insert_after_at(7, 1 << 28).is_err());
        let mut node = new_node(1024);
        assert!(move_entries(&mut l, 100, 200, &mut node).is_err());
        assert_eq!(move_entries(&mut l, 120, 127, &mut node).unwrap(), 7);
    }
}
