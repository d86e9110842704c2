//! ext2/3 block maps (Documentation/filesystems/ext4/blockmap.rst): `i_block` holds 12 direct
//! block numbers, then one indirect, one double-indirect and one triple-indirect block number.
//! Indirect blocks are arrays of `block_size / 4` little-endian u32; 0 is a hole.
// Guard rails (issue 16 item 7): i_block and indirect blocks are untrusted. Logical positions
// are bounded by the triple-indirect range (per^3 + per^2 + per + 12 with per <= 2^14, far
// below 2^64): the saturating steps below never saturate.

use super::inode::Inode;
use super::{Ext4, Run};
use crate::bytes::{le32, wide};
use crate::fs::Result;

/// Direct pointers in i_block, as an index and as a logical block count.
const DIRECT_SLOTS: usize = 12;
const DIRECT: u64 = wide(DIRECT_SLOTS);

/// Pointer `i` of an array of little-endian u32 (i_block or an indirect block); 0 past it.
fn ptr_at(b: &[u8], i: usize) -> u32 {
    le32(b, i.saturating_mul(4))
}

/// Stores pointer `i` of an array of little-endian u32 (callers index inside the array).
fn put_ptr(b: &mut [u8], i: usize, v: u32) {
    if let Some(w) = b.chunks_exact_mut(4).nth(i) {
        w.copy_from_slice(&v.to_le_bytes());
    }
}

/// The run starting at index `i` of the pointer array `ptr(0..n)`: consecutive zeros (a hole) or
/// consecutive block numbers (contiguous data).
fn scan(ptr: impl Fn(usize) -> u32, n: usize, i: usize) -> Run {
    let first = ptr(i);
    // The pointers after i that continue the run (i < n <= 2^14: no saturation).
    let after = i.saturating_add(1)..n;
    if first == 0 {
        let more = after.take_while(|&j| ptr(j) == 0).count();
        return Run::Hole(wide(more).saturating_add(1));
    }
    let more = after
        .zip(u64::from(first).saturating_add(1)..)
        .take_while(|&(j, want)| u64::from(ptr(j)) == want)
        .count();
    Run::Data {
        pblk: u64::from(first),
        len: wide(more).saturating_add(1),
    }
}

/// Maps logical block `lblk` of a block-mapped inode. Depth is fixed by the logical block
/// number (at most three indirect levels), so the walk cannot loop.
pub fn map(fs: &Ext4, inode: &Inode, lblk: u64) -> Result<Run> {
    if lblk < DIRECT {
        // lblk < 12.
        let i = usize::try_from(lblk).unwrap_or(0);
        return Ok(scan(|i| inode.i_block_u32(i), DIRECT_SLOTS, i));
    }
    let per = u64::from(fs.block_size() / 4);
    let mut rem = lblk.saturating_sub(DIRECT);
    let mut span = per;
    let mut levels = 1usize;
    while rem >= span {
        rem = rem.saturating_sub(span);
        levels = levels.saturating_add(1);
        if levels > 3 {
            // Past what a triple-indirect block can address: nothing is mapped there.
            return Ok(Run::Hole(u64::MAX.saturating_sub(lblk)));
        }
        span = span.saturating_mul(per);
    }
    // i_block slots 12, 13, 14 for 1, 2, 3 levels.
    let mut ptr = inode.i_block_u32(levels.saturating_add(11));
    for level in 1..=levels {
        if ptr == 0 {
            // rem < span.
            return Ok(Run::Hole(span.saturating_sub(rem)));
        }
        let blk = fs.meta_block(u64::from(ptr), "indirect block", inode.ino)?;
        // per is nonzero (block sizes are at least 1024 bytes) and divides span.
        let child_span = span.checked_div(per).unwrap_or(0);
        // rem < span, so the index is < per = block_size / 4 (a pointer past the block reads 0).
        let idx = rem.checked_div(child_span).unwrap_or(0);
        let idx = usize::try_from(idx).unwrap_or(usize::MAX);
        rem = rem.checked_rem(child_span).unwrap_or(0);
        span = child_span;
        if level == levels {
            let n = usize::try_from(per).unwrap_or(usize::MAX);
            return Ok(scan(|i| ptr_at(&blk, i), n, idx));
        }
        ptr = ptr_at(&blk, idx);
    }
    // Unreachable: the loop returns at its last level.
    Ok(Run::Hole(1))
}

/// Pointers of the path to logical block `lblk`: the i_block slot, then the index in each
/// indirect block down to the data pointer. None past the triple-indirect range.
fn path(per: u64, lblk: u64) -> Option<(usize, Vec<usize>)> {
    if lblk < DIRECT {
        // lblk < 12.
        return Some((usize::try_from(lblk).ok()?, Vec::new()));
    }
    let mut rem = lblk.saturating_sub(DIRECT);
    let mut span = per;
    let mut levels = 1usize;
    while rem >= span {
        rem = rem.saturating_sub(span);
        levels = levels.saturating_add(1);
        if levels > 3 {
            return None;
        }
        span = span.saturating_mul(per);
    }
    let mut idx = Vec::with_capacity(levels);
    for _ in 0..levels {
        // per (nonzero) divides span.
        span = span.checked_div(per)?;
        // rem < span * per, so the index is < per.
        idx.push(usize::try_from(rem.checked_div(span)?).ok()?);
        rem = rem.checked_rem(span)?;
    }
    Some((levels.saturating_add(11), idx))
}

/// Blocks freed while cutting a block map, merged into runs before they go to the bitmaps.
#[derive(Default)]
pub(crate) struct Freed(Vec<u64>);

impl Freed {
    pub(crate) fn push(&mut self, blk: u64) {
        self.0.push(blk);
    }

    /// (first block, count) runs, in block order.
    pub(crate) fn runs(mut self) -> Vec<(u64, u64)> {
        self.0.sort_unstable();
        self.0.dedup();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for b in self.0 {
            match out.last_mut() {
                Some((s, n)) if s.checked_add(*n) == Some(b) => *n = n.saturating_add(1),
                _ => out.push((b, 1)),
            }
        }
        out
    }
}

impl Ext4 {
    /// Maps logical block `lblk` of block-mapped `b` to `pblk`, allocating the indirect blocks
    /// on the way (zeroed, next to the data); i_blocks counts them.
    pub(crate) fn bmap_set(
        &self,
        b: &mut super::inode::InodeBuf,
        lblk: u64,
        pblk: u64,
    ) -> Result<()> {
        let per = u64::from(self.block_size() / 4);
        let ptr32 = |v: u64| u32::try_from(v).map_err(|_| crate::fs::Error::TooBig);
        let (slot, idx) = path(per, lblk).ok_or(crate::fs::Error::TooBig)?;
        let pblk = ptr32(pblk)?;
        if idx.is_empty() {
            put_ptr(b.i_block_mut(), slot, pblk);
            return Ok(());
        }
        let bs = self.block_size_usize();
        let mut ptr = ptr_at(b.i_block(), slot);
        if ptr == 0 {
            ptr = ptr32(self.alloc_indirect(b, u64::from(pblk))?)?;
            put_ptr(b.i_block_mut(), slot, ptr);
        }
        for (level, &i) in idx.iter().enumerate() {
            let mut node = self
                .meta_block(u64::from(ptr), "indirect block", b.ino)?
                .to_vec();
            if node.len() != bs {
                return Err(crate::fs::Error::corrupt(
                    "indirect block",
                    b.ino,
                    u64::from(ptr),
                    "size",
                ));
            }
            let last = level.saturating_add(1) == idx.len();
            let mut child = ptr_at(&node, i);
            if last {
                child = pblk;
            } else if child == 0 {
                child = ptr32(self.alloc_indirect(b, u64::from(pblk))?)?;
            } else {
                ptr = child;
                continue;
            }
            put_ptr(&mut node, i, child);
            self.put_meta(u64::from(ptr), node)?;
            ptr = child;
        }
        Ok(())
    }

    /// A zeroed indirect block for `b`, near `near`.
    fn alloc_indirect(&self, b: &mut super::inode::InodeBuf, near: u64) -> Result<u64> {
        let (blk, _) = self.alloc_blocks(near, 1)?;
        self.put_meta(blk, vec![0u8; self.block_size_usize()])?;
        // i_blocks stays far below 2^64 (48 bits on disk).
        b.set_blocks512(
            b.blocks512()
                .saturating_add(u64::from(self.block_size() / 512)),
        );
        Ok(blk)
    }

    /// Unmaps every block of block-mapped `b` from logical block `from` on, freeing the data
    /// blocks (`meta`: they are directory blocks) and the indirect blocks left with nothing to
    /// map; i_blocks follows.
    pub(crate) fn bmap_truncate(
        &self,
        b: &mut super::inode::InodeBuf,
        from: u64,
        meta: bool,
    ) -> Result<()> {
        let per = u64::from(self.block_size() / 4);
        let mut data = Freed::default();
        let mut ind = Freed::default();
        for slot in 0..DIRECT_SLOTS {
            let p = ptr_at(b.i_block(), slot);
            if wide(slot) >= from && p != 0 {
                data.push(u64::from(p));
                put_ptr(b.i_block_mut(), slot, 0);
            }
        }
        let mut base = DIRECT;
        let mut span = per;
        for (level, slot) in [(1usize, 12usize), (2, 13), (3, 14)] {
            let p = ptr_at(b.i_block(), slot);
            if p != 0 && base.saturating_add(span) > from {
                let emptied = self.cut_indirect(
                    b.ino,
                    u64::from(p),
                    level,
                    base,
                    span,
                    from,
                    &mut data,
                    &mut ind,
                )?;
                if emptied {
                    put_ptr(b.i_block_mut(), slot, 0);
                }
            }
            base = base.saturating_add(span);
            span = span.saturating_mul(per);
        }
        let bs512 = u64::from(self.block_size() / 512);
        let mut n = 0u64;
        for (s, len) in data.runs() {
            self.free_blocks(s, len, meta)?;
            n = n.saturating_add(len);
        }
        for (s, len) in ind.runs() {
            self.free_blocks(s, len, true)?;
            n = n.saturating_add(len);
        }
        b.set_blocks512(b.blocks512().saturating_sub(n.saturating_mul(bs512)));
        Ok(())
    }

    /// Cuts the subtree of indirect block `blk` (`level` 1..=3, mapping `span` blocks from
    /// logical `base`) at `from`; true when the block itself was freed.
    #[allow(clippy::too_many_arguments)]
    fn cut_indirect(
        &self,
        ino: u64,
        blk: u64,
        level: usize,
        base: u64,
        span: u64,
        from: u64,
        data: &mut Freed,
        ind: &mut Freed,
    ) -> Result<bool> {
        let per = u64::from(self.block_size() / 4);
        // per is nonzero (block sizes are at least 1024 bytes).
        let child_span = span.checked_div(per).unwrap_or(0);
        let mut node = self.meta_block(blk, "indirect block", ino)?.to_vec();
        let mut changed = false;
        let n = usize::try_from(per).unwrap_or(0);
        for (i, k) in (0..n).zip(0u64..) {
            let cb = base.saturating_add(k.saturating_mul(child_span));
            if cb.saturating_add(child_span) <= from {
                continue;
            }
            let p = ptr_at(&node, i);
            if p == 0 {
                continue;
            }
            let gone = if level == 1 {
                data.push(u64::from(p));
                true
            } else {
                self.cut_indirect(
                    ino,
                    u64::from(p),
                    // level > 1 here.
                    level.saturating_sub(1),
                    cb,
                    child_span,
                    from,
                    data,
                    ind,
                )?
            };
            if gone {
                put_ptr(&mut node, i, 0);
                changed = true;
            }
        }
        if from <= base {
            ind.push(blk);
            return Ok(true);
        }
        if changed {
            self.put_meta(blk, node)?;
        }
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path(256, 5), Some((5, vec![])));
        assert_eq!(path(256, 12), Some((12, vec![0])));
        assert_eq!(path(256, 12 + 255), Some((12, vec![255])));
        assert_eq!(path(256, 12 + 256), Some((13, vec![0, 0])));
        assert_eq!(path(256, 12 + 256 + 257), Some((13, vec![1, 1])));
        assert_eq!(path(256, 12 + 256 + 65536), Some((14, vec![0, 0, 0])));
        assert_eq!(path(256, 12 + 256 + 65536 + (1 << 24)), None);
        let mut f = Freed::default();
        for b in [5, 3, 4, 9, 10, 4] {
            f.push(b);
        }
        assert_eq!(f.runs(), vec![(3, 3), (9, 2)]);
    }
}
