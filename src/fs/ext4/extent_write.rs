//! Writing extent trees (Documentation/filesystems/ext4/ifork.rst). An operation reads the
//! file's extents into a sorted list (`extents_of`), edits the list (insert a run, mark an
//! unwritten run written, cut at a size), and `store_extents` lays the list out again: merged
//! with its neighbours where contiguous, in the inode's root when it holds four or fewer,
//! else in full leaves under as many index levels as needed (the depth grows and shrinks with
//! the count). Node blocks of the old tree are reused in order, new ones allocated near the
//! data, surplus ones freed. The result is the tree the kernel's splits would give up to
//! where each node's entries end, which e2fsck and the kernel accept alike.

use super::extent::{self, ENTRY_LEN, HEADER_LEN, MAGIC, MAX_DEPTH, MAX_INIT_LEN};
use super::inode::{Inode, InodeBuf};
use super::{csum, Ext4, Run};
use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};
use std::collections::HashSet;

/// Entries in the root (i_block holds a header and four entries).
const ROOT_ENTRIES: usize = 4;
/// Longest written extent, and longest unwritten one (EXT_INIT_MAX_LEN, EXT_UNWRITTEN_MAX_LEN).
const MAX_LEN_WRITTEN: u64 = MAX_INIT_LEN as u64;
const MAX_LEN_UNWRITTEN: u64 = MAX_INIT_LEN as u64 - 1;
/// Logical blocks are 32 bits.
const LOGICAL_END: u64 = 1 << 32;

/// One extent: `len` blocks from logical `lblk` at physical `pblk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ext {
    pub lblk: u64,
    pub len: u64,
    pub pblk: u64,
    pub unwritten: bool,
}

impl Ext {
    pub(crate) fn end(&self) -> u64 {
        self.lblk + self.len
    }
}

/// Where `lblk` falls in a sorted extent list: data, unwritten or a hole up to the next one.
pub(crate) fn lookup(exts: &[Ext], lblk: u64) -> Run {
    let i = exts.partition_point(|e| e.end() <= lblk);
    match exts.get(i) {
        Some(e) if e.lblk <= lblk => {
            let len = e.end() - lblk;
            if e.unwritten {
                Run::Zero(len)
            } else {
                Run::Data {
                    pblk: e.pblk + (lblk - e.lblk),
                    len,
                }
            }
        }
        Some(e) => Run::Hole(e.lblk - lblk),
        None => Run::Hole(LOGICAL_END.saturating_sub(lblk).max(1)),
    }
}

/// The physical block right after the data mapped just before `lblk` (a goal that keeps
/// the file contiguous), or None.
pub(crate) fn goal(exts: &[Ext], lblk: u64) -> Option<u64> {
    let i = exts.partition_point(|e| e.lblk < lblk);
    let e = exts.get(i.checked_sub(1)?)?;
    Some(e.pblk + (lblk.min(e.end()) - e.lblk))
}

/// Inserts a run into a hole of the list.
pub(crate) fn insert(exts: &mut Vec<Ext>, e: Ext) {
    let i = exts.partition_point(|x| x.lblk < e.lblk);
    exts.insert(i, e);
}

/// Marks `lblk..lblk+len` (inside one unwritten extent) written, splitting it.
pub(crate) fn mark_written(exts: &mut Vec<Ext>, lblk: u64, len: u64) {
    let i = exts.partition_point(|e| e.end() <= lblk);
    let Some(&e) = exts.get(i) else { return };
    if !e.unwritten || e.lblk > lblk {
        return;
    }
    let end = (lblk + len).min(e.end());
    let mut parts = Vec::with_capacity(3);
    if e.lblk < lblk {
        parts.push(Ext {
            len: lblk - e.lblk,
            ..e
        });
    }
    parts.push(Ext {
        lblk,
        len: end - lblk,
        pblk: e.pblk + (lblk - e.lblk),
        unwritten: false,
    });
    if end < e.end() {
        parts.push(Ext {
            lblk: end,
            len: e.end() - end,
            pblk: e.pblk + (end - e.lblk),
            unwritten: true,
        });
    }
    exts.splice(i..=i, parts);
}

/// Cuts the list at logical block `from`; returns the physical runs that were cut off.
pub(crate) fn truncate(exts: &mut Vec<Ext>, from: u64) -> Vec<(u64, u64)> {
    let mut freed = Vec::new();
    exts.retain_mut(|e| {
        if e.lblk >= from {
            freed.push((e.pblk, e.len));
            false
        } else {
            if e.end() > from {
                let keep = from - e.lblk;
                freed.push((e.pblk + keep, e.len - keep));
                e.len = keep;
            }
            true
        }
    });
    freed
}

/// Merges contiguous neighbours and splits runs longer than an extent can be.
fn normalize(exts: &[Ext]) -> Vec<Ext> {
    let mut out: Vec<Ext> = Vec::with_capacity(exts.len());
    for &e in exts {
        let max = |unwritten| {
            if unwritten {
                MAX_LEN_UNWRITTEN
            } else {
                MAX_LEN_WRITTEN
            }
        };
        if let Some(p) = out.last_mut() {
            if p.end() == e.lblk
                && p.pblk + p.len == e.pblk
                && p.unwritten == e.unwritten
                && p.len + e.len <= max(e.unwritten)
            {
                p.len += e.len;
                continue;
            }
        }
        let mut e = e;
        while e.len > max(e.unwritten) {
            let m = max(e.unwritten);
            out.push(Ext { len: m, ..e });
            e.lblk += m;
            e.pblk += m;
            e.len -= m;
        }
        out.push(e);
    }
    out
}

fn put_header(node: &mut [u8], entries: usize, max: usize, depth: u16) {
    node[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    // OK: entries <= max <= (64 KiB - 12) / 12.
    node[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    node[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    node[6..8].copy_from_slice(&depth.to_le_bytes());
    node[8..12].fill(0);
}

fn put_leaf_entry(slot: &mut [u8], e: &Ext) {
    // OK: lblk < 2^32, len <= 32768, pblk < 2^48 (checked when read or allocated).
    slot[0..4].copy_from_slice(&(e.lblk as u32).to_le_bytes());
    let raw = e.len as u16 + if e.unwritten { MAX_INIT_LEN as u16 } else { 0 };
    slot[4..6].copy_from_slice(&raw.to_le_bytes());
    slot[6..8].copy_from_slice(&((e.pblk >> 32) as u16).to_le_bytes());
    slot[8..12].copy_from_slice(&(e.pblk as u32).to_le_bytes());
}

fn put_index_entry(slot: &mut [u8], lblk: u64, child: u64) {
    // OK: as above.
    slot[0..4].copy_from_slice(&(lblk as u32).to_le_bytes());
    slot[4..8].copy_from_slice(&(child as u32).to_le_bytes());
    slot[8..10].copy_from_slice(&((child >> 32) as u16).to_le_bytes());
    slot[10..12].fill(0);
}

impl Ext4 {
    /// Every extent of extent-mapped `inode` in logical order, and the blocks of its tree's
    /// nodes. Anything out of order, overlapping, out of the filesystem or revisited is damage.
    pub(crate) fn extents_of(&self, inode: &Inode) -> Result<(Vec<Ext>, Vec<u64>)> {
        let ino = inode.ino;
        let mut exts = Vec::new();
        let mut nodes = Vec::new();
        let mut seen = HashSet::new();
        let seed = self.inode_seed(inode);
        // (node contents, its block (0: root), expected depth, logical range start)
        let mut stack: Vec<(std::sync::Arc<[u8]>, u64, Option<u16>)> =
            vec![(inode.i_block.to_vec().into(), 0, None)];
        let mut prev_end = 0u64;
        while let Some((node, blk, want_depth)) = stack.pop() {
            let h = extent::header(&node, ino, blk)?;
            let bad = |d: String| Error::corrupt("extent tree", ino, blk, d);
            match want_depth {
                None if h.depth > MAX_DEPTH => return Err(bad(format!("depth {}", h.depth))),
                Some(d) if d != h.depth => {
                    return Err(bad(format!("node depth {}, expected {d}", h.depth)))
                }
                _ => {}
            }
            let entry =
                |i: usize| &node[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
            if h.depth == 0 {
                for i in 0..h.entries {
                    let e = entry(i);
                    let raw = u32::from(le16(e, 4));
                    let (len, unwritten) = if raw > MAX_INIT_LEN {
                        (raw - MAX_INIT_LEN, true)
                    } else {
                        (raw, false)
                    };
                    let x = Ext {
                        lblk: u64::from(le32(e, 0)),
                        len: u64::from(len),
                        pblk: u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32),
                        unwritten,
                    };
                    if x.len == 0 || x.lblk < prev_end || x.end() > LOGICAL_END {
                        return Err(bad(format!(
                            "extent {i} (logical {}, length {}) overlaps or is empty",
                            x.lblk, x.len
                        )));
                    }
                    self.block_offset(x.pblk, x.len, "extent", ino)?;
                    prev_end = x.end();
                    exts.push(x);
                }
                continue;
            }
            // Children are pushed in reverse so that they pop in logical order.
            for i in (0..h.entries).rev() {
                let e = entry(i);
                let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                if !seen.insert(child) {
                    return Err(bad(format!("node block {child} referenced twice")));
                }
                let b = self.checked_block(child, "extent tree node", ino, |b| {
                    let max = usize::from(le16(b, 4));
                    if csum::extent_block_ok(seed, b, max) {
                        Ok(())
                    } else {
                        Err(format!("extent tail after {max} entries"))
                    }
                })?;
                nodes.push(child);
                stack.push((b, child, Some(h.depth - 1)));
            }
        }
        Ok((exts, nodes))
    }

    /// Lays `exts` out as the extent tree of `b` (see the module comment), reusing the node
    /// blocks `old_nodes` first; i_blocks follows the change in node blocks.
    pub(crate) fn store_extents(
        &self,
        b: &mut InodeBuf,
        exts: &[Ext],
        old_nodes: Vec<u64>,
    ) -> Result<()> {
        let ino = b.ino;
        let exts = normalize(exts);
        if exts.last().is_some_and(|e| e.end() > LOGICAL_END) {
            return Err(Error::TooBig);
        }
        let bs = self.block_size() as usize;
        let cap = (bs - HEADER_LEN) / ENTRY_LEN;
        let seed = csum::inode_seed(self.sb.csum_seed, ino as u32, b.generation());
        let mut pool = old_nodes.into_iter();
        let mut new_nodes = 0i64;
        let goal = exts.first().map_or(self.inode_goal(ino), |e| e.pblk);
        let mut take_block = |fs: &Ext4| -> Result<u64> {
            match pool.next() {
                Some(blk) => Ok(blk),
                None => {
                    new_nodes += 1;
                    Ok(fs.alloc_blocks(goal, 1)?.0)
                }
            }
        };
        // The current level: (first logical block, encoded entry) of each node to write.
        let mut level: Vec<(u64, [u8; ENTRY_LEN])> = exts
            .iter()
            .map(|e| {
                let mut s = [0u8; ENTRY_LEN];
                put_leaf_entry(&mut s, e);
                (e.lblk, s)
            })
            .collect();
        let mut depth: u16 = 0;
        while level.len() > ROOT_ENTRIES {
            if depth >= MAX_DEPTH {
                return Err(Error::TooBig);
            }
            let mut up = Vec::with_capacity(level.len().div_ceil(cap));
            for chunk in level.chunks(cap) {
                let blk = take_block(self)?;
                let mut node = vec![0u8; bs];
                put_header(&mut node, chunk.len(), cap, depth);
                for (i, (_, s)) in chunk.iter().enumerate() {
                    node[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN]
                        .copy_from_slice(s);
                }
                if self.sb.metadata_csum {
                    csum::extent_block_set(seed, &mut node, cap);
                }
                self.put_meta(blk, node)?;
                let mut s = [0u8; ENTRY_LEN];
                put_index_entry(&mut s, chunk[0].0, blk);
                up.push((chunk[0].0, s));
            }
            level = up;
            depth += 1;
        }
        let root = b.i_block_mut();
        root.fill(0);
        put_header(root, level.len(), ROOT_ENTRIES, depth);
        for (i, (_, s)) in level.iter().enumerate() {
            root[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN].copy_from_slice(s);
        }
        let mut freed = 0i64;
        for blk in pool {
            self.free_blocks(blk, 1, true)?;
            freed += 1;
        }
        let per = (bs / 512) as i64;
        let blocks = b.blocks512() as i64 + (new_nodes - freed) * per;
        b.set_blocks512(blocks.max(0) as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(lblk: u64, len: u64, pblk: u64) -> Ext {
        Ext {
            lblk,
            len,
            pblk,
            unwritten: false,
        }
    }

    #[test]
    fn list_edits() {
        let mut v = vec![e(0, 10, 100), e(20, 5, 300)];
        assert_eq!(lookup(&v, 3), Run::Data { pblk: 103, len: 7 });
        assert_eq!(lookup(&v, 10), Run::Hole(10));
        assert_eq!(goal(&v, 12), Some(110));
        insert(&mut v, e(10, 10, 110));
        assert_eq!(normalize(&v), vec![e(0, 20, 100), e(20, 5, 300)]);
        let freed = truncate(&mut v, 8);
        assert_eq!(v, vec![e(0, 8, 100)]);
        assert_eq!(freed, vec![(108, 2), (110, 10), (300, 5)]);
        let mut u = vec![Ext {
            unwritten: true,
            ..e(0, 10, 50)
        }];
        mark_written(&mut u, 4, 2);
        assert_eq!(u.len(), 3);
        assert_eq!(u[1], e(4, 2, 54));
        assert!(u[0].unwritten && u[2].unwritten && u[2].pblk == 56);
        let long = normalize(&[e(0, 70000, 1000)]);
        assert_eq!(long.len(), 3);
        assert_eq!(long[2], e(65536, 70000 - 65536, 1000 + 65536));
    }
}
