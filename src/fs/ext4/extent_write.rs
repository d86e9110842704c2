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
use super::{csum, low32, Ext4, Run};
use crate::bytes::{le16, le32};
use crate::fs::{Error, Result};
use std::collections::HashSet;

/// Entries in the root (i_block holds a header and four entries).
const ROOT_ENTRIES: usize = 4;
/// Longest written extent, and longest unwritten one (EXT_INIT_MAX_LEN, EXT_UNWRITTEN_MAX_LEN).
const MAX_LEN_WRITTEN: u64 = 32768;
const MAX_LEN_UNWRITTEN: u64 = 32767;
const _: () = assert!(MAX_INIT_LEN == 32768);
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
    /// The logical block after the extent. Extents are below 2^32 + 2^16 (logical blocks
    /// and lengths as read or allocated), so this does not overflow.
    pub(crate) fn end(&self) -> u64 {
        self.lblk.saturating_add(self.len)
    }

    /// The physical block of logical `lblk` (at or after the start: callers found it inside).
    fn pblk_at(&self, lblk: u64) -> u64 {
        self.pblk.saturating_add(lblk.saturating_sub(self.lblk))
    }
}

/// Where `lblk` falls in a sorted extent list: data, unwritten or a hole up to the next one.
pub(crate) fn lookup(exts: &[Ext], lblk: u64) -> Run {
    let i = exts.partition_point(|e| e.end() <= lblk);
    match exts.get(i) {
        // e.end() > lblk (partition_point).
        Some(e) if e.lblk <= lblk => {
            let len = e.end().saturating_sub(lblk);
            if e.unwritten {
                Run::Zero(len)
            } else {
                Run::Data {
                    pblk: e.pblk_at(lblk),
                    len,
                }
            }
        }
        Some(e) => Run::Hole(e.lblk.saturating_sub(lblk)),
        None => Run::Hole(LOGICAL_END.saturating_sub(lblk).max(1)),
    }
}

/// The physical block right after the data mapped just before `lblk` (a goal that keeps
/// the file contiguous), or None.
pub(crate) fn goal(exts: &[Ext], lblk: u64) -> Option<u64> {
    let i = exts.partition_point(|e| e.lblk < lblk);
    let e = exts.get(i.checked_sub(1)?)?;
    // e.lblk < lblk.
    Some(e.pblk_at(lblk.min(e.end())))
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
    // e.lblk <= lblk < e.end() (above), so lblk <= end <= e.end().
    let end = lblk.saturating_add(len).min(e.end());
    let mut parts = Vec::with_capacity(3);
    if e.lblk < lblk {
        parts.push(Ext {
            len: lblk.saturating_sub(e.lblk),
            ..e
        });
    }
    parts.push(Ext {
        lblk,
        len: end.saturating_sub(lblk),
        pblk: e.pblk_at(lblk),
        unwritten: false,
    });
    if end < e.end() {
        parts.push(Ext {
            lblk: end,
            len: e.end().saturating_sub(end),
            pblk: e.pblk_at(end),
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
            // e.lblk < from < e.end().
            if e.end() > from {
                let keep = from.saturating_sub(e.lblk);
                freed.push((e.pblk_at(from), e.len.saturating_sub(keep)));
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
        // Logical blocks below 2^32, physical ones below 2^48, lengths below 2^32: the sums
        // do not overflow.
        if let Some(p) = out.last_mut() {
            let len = p.len.saturating_add(e.len);
            if p.end() == e.lblk
                && p.pblk.saturating_add(p.len) == e.pblk
                && p.unwritten == e.unwritten
                && len <= max(e.unwritten)
            {
                p.len = len;
                continue;
            }
        }
        let mut e = e;
        let m = max(e.unwritten);
        while let Some(rest) = e.len.checked_sub(m).filter(|&r| r > 0) {
            out.push(Ext { len: m, ..e });
            e.lblk = e.lblk.saturating_add(m);
            e.pblk = e.pblk.saturating_add(m);
            e.len = rest;
        }
        out.push(e);
    }
    out
}

fn put_header(node: &mut [u8], entries: usize, max: usize, depth: u16) -> Result<()> {
    // entries <= max <= (64 KiB - 12) / 12.
    let count = |n: usize| {
        u16::try_from(n).map_err(|_| Error::corrupt("extent tree", 0, 0, format!("{n} entries")))
    };
    node[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    node[2..4].copy_from_slice(&count(entries)?.to_le_bytes());
    node[4..6].copy_from_slice(&count(max)?.to_le_bytes());
    node[6..8].copy_from_slice(&depth.to_le_bytes());
    node[8..12].fill(0);
    Ok(())
}

/// The 32-bit logical block of an entry (lists end at 2^32, checked by `store_extents`).
fn lblk32(lblk: u64) -> Result<u32> {
    u32::try_from(lblk).map_err(|_| Error::TooBig)
}

/// A physical block as the entries store it: the low 32 and the next 16 bits (block numbers
/// are below 2^48, checked when read or allocated).
fn split48(pblk: u64) -> ([u8; 4], [u8; 2]) {
    let [a, b, c, d, e, f, ..] = pblk.to_le_bytes();
    ([a, b, c, d], [e, f])
}

fn put_leaf_entry(slot: &mut [u8], e: &Ext) -> Result<()> {
    // At most 32768 written blocks, 32767 unwritten (normalize): the raw length fits 16 bits.
    let raw = e
        .len
        .checked_add(if e.unwritten { MAX_LEN_WRITTEN } else { 0 })
        .and_then(|r| u16::try_from(r).ok())
        .ok_or_else(|| Error::corrupt("extent", 0, e.pblk, format!("length {}", e.len)))?;
    let (lo, hi) = split48(e.pblk);
    slot[0..4].copy_from_slice(&lblk32(e.lblk)?.to_le_bytes());
    slot[4..6].copy_from_slice(&raw.to_le_bytes());
    slot[6..8].copy_from_slice(&hi);
    slot[8..12].copy_from_slice(&lo);
    Ok(())
}

fn put_index_entry(slot: &mut [u8], lblk: u64, child: u64) -> Result<()> {
    let (lo, hi) = split48(child);
    slot[0..4].copy_from_slice(&lblk32(lblk)?.to_le_bytes());
    slot[4..8].copy_from_slice(&lo);
    slot[8..10].copy_from_slice(&hi);
    slot[10..12].fill(0);
    Ok(())
}

/// Copies encoded entries into a node after its header (the callers size the node).
fn put_entries(node: &mut [u8], entries: &[(u64, [u8; ENTRY_LEN])]) -> Result<()> {
    let slots = node.get_mut(HEADER_LEN..).unwrap_or_default();
    if slots.len() / ENTRY_LEN < entries.len() {
        return Err(Error::corrupt(
            "extent tree",
            0,
            0,
            format!(
                "{} entries past a node of {} bytes",
                entries.len(),
                slots.len()
            ),
        ));
    }
    for (slot, (_, s)) in slots.chunks_exact_mut(ENTRY_LEN).zip(entries) {
        slot.copy_from_slice(s);
    }
    Ok(())
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
            // header() checked that the entries fit the node.
            let entries = node
                .get(HEADER_LEN..)
                .unwrap_or_default()
                .chunks_exact(ENTRY_LEN)
                .take(h.entries);
            if h.depth == 0 {
                for (i, e) in entries.enumerate() {
                    let raw = u32::from(le16(e, 4));
                    let (len, unwritten) = match raw.checked_sub(MAX_INIT_LEN) {
                        Some(len) if len > 0 => (len, true),
                        _ => (raw, false),
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
            let child_depth = h.depth.saturating_sub(1);
            for e in entries.rev() {
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
                stack.push((b, child, Some(child_depth)));
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
        let bs = self.block_size_usize();
        // The block size is at least 1 KiB.
        let cap = bs.saturating_sub(HEADER_LEN) / ENTRY_LEN;
        // Inode numbers are at most s_inodes_count, a u32.
        let seed = csum::inode_seed(self.sb.csum_seed, low32(ino), b.generation());
        let mut pool = old_nodes.into_iter();
        let mut new_nodes = 0u64;
        let goal = exts.first().map_or(self.inode_goal(ino), |e| e.pblk);
        let mut take_block = |fs: &Ext4| -> Result<u64> {
            match pool.next() {
                Some(blk) => Ok(blk),
                None => {
                    let blk = fs.alloc_blocks(goal, 1)?.0;
                    new_nodes = new_nodes.saturating_add(1);
                    Ok(blk)
                }
            }
        };
        // The current level: (first logical block, encoded entry) of each node to write.
        let mut level: Vec<(u64, [u8; ENTRY_LEN])> = exts
            .iter()
            .map(|e| {
                let mut s = [0u8; ENTRY_LEN];
                put_leaf_entry(&mut s, e)?;
                Ok((e.lblk, s))
            })
            .collect::<Result<_>>()?;
        let mut depth: u16 = 0;
        while level.len() > ROOT_ENTRIES {
            if depth >= MAX_DEPTH {
                return Err(Error::TooBig);
            }
            let mut up = Vec::with_capacity(level.len().div_ceil(cap));
            for chunk in level.chunks(cap) {
                let Some(&(first, _)) = chunk.first() else {
                    continue;
                };
                let blk = take_block(self)?;
                let mut node = vec![0u8; bs];
                put_header(&mut node, chunk.len(), cap, depth)?;
                put_entries(&mut node, chunk)?;
                if self.sb.metadata_csum {
                    csum::extent_block_set(seed, &mut node, cap);
                }
                self.put_meta(blk, node)?;
                let mut s = [0u8; ENTRY_LEN];
                put_index_entry(&mut s, first, blk)?;
                up.push((first, s));
            }
            level = up;
            // Below MAX_DEPTH (checked above).
            depth = depth.saturating_add(1);
        }
        let root = b.i_block_mut();
        root.fill(0);
        put_header(root, level.len(), ROOT_ENTRIES, depth)?;
        put_entries(root, &level)?;
        let mut freed = 0u64;
        for blk in pool {
            self.free_blocks(blk, 1, true)?;
            freed = freed.saturating_add(1);
        }
        // Node counts are small and i_blocks is below 2^48: no overflow.
        let per = u64::from(self.block_size() / 512);
        let blocks = b
            .blocks512()
            .saturating_add(new_nodes.saturating_mul(per))
            .saturating_sub(freed.saturating_mul(per));
        b.set_blocks512(blocks);
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

    #[test]
    fn entries_encode_their_limits_or_refuse() {
        let mut s = [0u8; ENTRY_LEN];
        let u = Ext {
            unwritten: true,
            ..e((1 << 32) - 1, 32767, (1 << 48) - 1)
        };
        put_leaf_entry(&mut s, &u).unwrap();
        assert_eq!(le32(&s, 0), u32::MAX);
        assert_eq!(le16(&s, 4), u16::MAX);
        assert_eq!((le16(&s, 6), le32(&s, 8)), (u16::MAX, u32::MAX));
        // Too long for an unwritten extent, or a logical block past 32 bits: errors.
        assert!(put_leaf_entry(&mut s, &Ext { len: 32768, ..u }).is_err());
        assert!(matches!(
            put_leaf_entry(&mut s, &e(1 << 32, 1, 5)),
            Err(Error::TooBig)
        ));
        // Unwritten runs split at 32767 blocks, written ones at 32768.
        let split = normalize(&[Ext {
            unwritten: true,
            ..e(0, 32768, 10)
        }]);
        assert_eq!(split.iter().map(|x| x.len).collect::<Vec<_>>(), [32767, 1]);
        let mut node = vec![0u8; HEADER_LEN + 2 * ENTRY_LEN];
        assert!(put_entries(&mut node, &[(0, [1; ENTRY_LEN]); 3]).is_err());
        put_entries(&mut node, &[(0, [1; ENTRY_LEN]); 2]).unwrap();
        assert!(node[HEADER_LEN..].iter().all(|&b| b == 1));
    }
}
