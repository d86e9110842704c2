//! ext2/3 block maps (Documentation/filesystems/ext4/blockmap.rst): `i_block` holds 12 direct
//! block numbers, then one indirect, one double-indirect and one triple-indirect block number.
//! Indirect blocks are arrays of `block_size / 4` little-endian u32; 0 is a hole.

use super::inode::Inode;
use super::{Ext4, Run};
use crate::bytes::le32;
use crate::fs::Result;

const DIRECT: u64 = 12;

/// The run starting at index `i` of the pointer array `ptr(0..n)`: consecutive zeros (a hole) or
/// consecutive block numbers (contiguous data).
fn scan(ptr: impl Fn(usize) -> u32, n: usize, i: usize) -> Run {
    let first = ptr(i);
    let mut k = 1;
    if first == 0 {
        while i + k < n && ptr(i + k) == 0 {
            k += 1;
        }
        return Run::Hole(k as u64);
    }
    while i + k < n && u64::from(ptr(i + k)) == u64::from(first) + k as u64 {
        k += 1;
    }
    Run::Data {
        pblk: u64::from(first),
        len: k as u64,
    }
}

/// Maps logical block `lblk` of a block-mapped inode. Depth is fixed by the logical block
/// number (at most three indirect levels), so the walk cannot loop.
pub fn map(fs: &Ext4, inode: &Inode, lblk: u64) -> Result<Run> {
    if lblk < DIRECT {
        // OK: lblk < 12.
        return Ok(scan(
            |i| inode.i_block_u32(i),
            DIRECT as usize,
            lblk as usize,
        ));
    }
    let per = u64::from(fs.block_size() / 4);
    let mut rem = lblk - DIRECT;
    let mut span = per;
    let mut levels = 1;
    while rem >= span {
        rem -= span;
        levels += 1;
        if levels > 3 {
            // Past what a triple-indirect block can address: nothing is mapped there.
            return Ok(Run::Hole(u64::MAX - lblk));
        }
        span *= per;
    }
    let mut ptr = inode.i_block_u32(11 + levels);
    for level in 0..levels {
        if ptr == 0 {
            return Ok(Run::Hole(span - rem));
        }
        let blk = fs.meta_block(u64::from(ptr), "indirect block", inode.ino)?;
        let child_span = span / per;
        // OK: rem < span, so the index is < per = block_size / 4.
        let idx = (rem / child_span) as usize;
        rem %= child_span;
        span = child_span;
        if level + 1 == levels {
            return Ok(scan(|i| le32(&blk, i * 4), per as usize, idx));
        }
        ptr = le32(&blk, idx * 4);
    }
    // Unreachable: the loop returns at its last level.
    Ok(Run::Hole(1))
}

/// Pointers of the path to logical block `lblk`: the i_block slot, then the index in each
/// indirect block down to the data pointer. None past the triple-indirect range.
fn path(per: u64, lblk: u64) -> Option<(usize, Vec<usize>)> {
    if lblk < DIRECT {
        // OK: lblk < 12.
        return Some((lblk as usize, Vec::new()));
    }
    let mut rem = lblk - DIRECT;
    let mut span = per;
    let mut levels = 1;
    while rem >= span {
        rem -= span;
        levels += 1;
        if levels > 3 {
            return None;
        }
        span *= per;
    }
    let mut idx = Vec::with_capacity(levels);
    for _ in 0..levels {
        span /= per;
        // OK: rem < span * per, so the index is < per.
        idx.push((rem / span) as usize);
        rem %= span;
    }
    Some((11 + levels, idx))
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
                Some((s, n)) if *s + *n == b => *n += 1,
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
            b.i_block_mut()[slot * 4..slot * 4 + 4].copy_from_slice(&pblk.to_le_bytes());
            return Ok(());
        }
        let bs = self.block_size() as usize;
        let mut ptr = le32(b.i_block(), slot * 4);
        if ptr == 0 {
            ptr = ptr32(self.alloc_indirect(b, u64::from(pblk))?)?;
            b.i_block_mut()[slot * 4..slot * 4 + 4].copy_from_slice(&ptr.to_le_bytes());
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
            let last = level + 1 == idx.len();
            let mut child = le32(&node, i * 4);
            if last {
                child = pblk;
            } else if child == 0 {
                child = ptr32(self.alloc_indirect(b, u64::from(pblk))?)?;
            } else {
                ptr = child;
                continue;
            }
            node[i * 4..i * 4 + 4].copy_from_slice(&child.to_le_bytes());
            self.put_meta(u64::from(ptr), node)?;
            ptr = child;
        }
        Ok(())
    }

    /// A zeroed indirect block for `b`, near `near`.
    fn alloc_indirect(&self, b: &mut super::inode::InodeBuf, near: u64) -> Result<u64> {
        let (blk, _) = self.alloc_blocks(near, 1)?;
        self.put_meta(blk, vec![0u8; self.block_size() as usize])?;
        b.set_blocks512(b.blocks512() + u64::from(self.block_size() / 512));
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
        for slot in 0..DIRECT as usize {
            let p = le32(b.i_block(), slot * 4);
            if slot as u64 >= from && p != 0 {
                data.push(u64::from(p));
                b.i_block_mut()[slot * 4..slot * 4 + 4].fill(0);
            }
        }
        let mut base = DIRECT;
        let mut span = per;
        for level in 1..=3usize {
            let slot = 11 + level;
            let p = le32(b.i_block(), slot * 4);
            if p != 0 && base + span > from {
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
                    b.i_block_mut()[slot * 4..slot * 4 + 4].fill(0);
                }
            }
            base += span;
            span = span.saturating_mul(per);
        }
        let bs512 = u64::from(self.block_size() / 512);
        let mut n = 0;
        for (s, len) in data.runs() {
            self.free_blocks(s, len, meta)?;
            n += len;
        }
        for (s, len) in ind.runs() {
            self.free_blocks(s, len, true)?;
            n += len;
        }
        b.set_blocks512(b.blocks512().saturating_sub(n * bs512));
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
        let child_span = span / per;
        let mut node = self.meta_block(blk, "indirect block", ino)?.to_vec();
        let mut changed = false;
        for i in 0..per as usize {
            let cb = base + i as u64 * child_span;
            if cb + child_span <= from {
                continue;
            }
            let p = le32(&node, i * 4);
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
                    level - 1,
                    cb,
                    child_span,
                    from,
                    data,
                    ind,
                )?
            };
            if gone {
                node[i * 4..i * 4 + 4].fill(0);
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
