//! Finishing the file mapping updates (BUIs) a dirty log left without their done items, as
//! the kernel does at mount after replay (xlog_recover_process_intents →
//! xfs_bmap_recover_work → xfs_bmap_finish_one: xfs_bmapi_remap maps an extent into a hole
//! and adds its length to di_nblocks; __xfs_bunmapi with XFS_BMAPI_REMAP unmaps a range
//! without freeing its blocks, which a refcount or extent-free intent of its own does, and
//! takes the unmapped length off di_nblocks). Reflink remapping, copy-on-write completion
//! and extent swaps log such updates; until they are finished a file reads with a hole, or
//! with blocks it no longer owns.
//!
//! Why an overlay instead of rewriting the replayed sectors: the kernel writes the result
//! into the inode's fork and its bmbt, allocating, splitting and joining bmbt blocks. Doing
//! the same in the replay view would take an allocator and bmbt insertion for a reader that
//! never writes. Instead, at open, the extent list of each fork an unfinished BUI touches is
//! read as replayed, the updates are applied to it in log order, and the result is kept in
//! memory: `Xfs::extents` returns it instead of the on-disk list, and `Xfs::inode` reports
//! the adjusted di_nblocks and extent counts. What a reader sees (contents, sizes,
//! st_blocks) is then what the kernel shows after its recovery. Two things are modelled
//! only where they are certain: a fork in extents format that outgrows the inode is
//! converted to a btree (one bmbt block more in di_nblocks), a one-level btree that fits the
//! inode again goes back to extents (one less); a bmbt leaf split inside a deeper btree,
//! which the kernel may need for the new record, is not (st_blocks would then be one block
//! short; a 4 KiB leaf holds 254 records, so that is rare).

use super::bmap::Extent;
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::recover::{UnfinishedBmap, MAX_BMBT_EXTLEN};
use super::Xfs;
use crate::bytes::wide;
use std::collections::HashMap;
use std::sync::Arc;

/// bmbt record size: how many records a fork in the inode holds.
const REC: u64 = 16;

/// The forks and counts the finished updates changed.
#[derive(Default)]
pub(super) struct Finished {
    /// Extent lists by (inode, attribute fork).
    pub(super) lists: HashMap<(u64, bool), Arc<Vec<Extent>>>,
    /// di_nblocks, data and attribute fork extent counts by inode.
    pub(super) counts: HashMap<u64, Counts>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Counts {
    pub(super) nblocks: u64,
    pub(super) nextents: u64,
    pub(super) anextents: u64,
}

/// One inode while its updates are applied.
struct Work {
    ip: Inode,
    nblocks: u64,
    /// Current extent lists of the forks read so far, with the fork's format.
    forks: [Option<(Vec<Extent>, u8)>; 2],
}

impl Finished {
    /// Overrides what an inode's core says with the finished updates' counts.
    pub(super) fn adjust(&self, ip: &mut Inode) {
        if let Some(c) = self.counts.get(&ip.ino) {
            ip.nblocks = c.nblocks;
            ip.nextents = c.nextents;
            ip.anextents = c.anextents;
        }
    }
}

impl Xfs {
    /// Applies the unfinished BUIs over the replayed filesystem in log order. Returns how
    /// many were finished; one that cannot be (an inode that does not read, a map over
    /// blocks already mapped, a fork without extents) is skipped with a warning naming it,
    /// where the kernel would fail the mount.
    pub(super) fn finish_bmaps(&mut self, bmaps: &[UnfinishedBmap]) -> u64 {
        let mut work: HashMap<u64, Work> = HashMap::new();
        let mut finished = 0u64;
        for b in bmaps {
            match self.finish_one(&mut work, b) {
                Ok(()) => finished = finished.saturating_add(1),
                Err(why) => ::log::warn!(
                    "xfs: unfinished file mapping update (BUI) {:#x} (LSN {:#x}) of inode {}: \
                     {why}; not finished (the kernel would refuse to mount), the view lacks it",
                    b.id,
                    b.lsn,
                    b.update.ino
                ),
            }
        }
        let mut out = Finished::default();
        for (ino, w) in work {
            let mut counts = Counts {
                nblocks: w.nblocks,
                nextents: w.ip.nextents,
                anextents: w.ip.anextents,
            };
            for (attr, fork) in w.forks.into_iter().enumerate() {
                if let Some((list, _)) = fork {
                    if attr == 1 {
                        counts.anextents = wide(list.len());
                    } else {
                        counts.nextents = wide(list.len());
                    }
                    out.lists.insert((ino, attr == 1), Arc::new(list));
                }
            }
            out.counts.insert(ino, counts);
        }
        // Lists read on the way are the unfinished ones.
        self.extent_cache.lock().clear();
        self.finished = out;
        finished
    }

    fn finish_one(
        &self,
        work: &mut HashMap<u64, Work>,
        b: &UnfinishedBmap,
    ) -> std::result::Result<(), String> {
        let u = b.update;
        let w = match work.entry(u.ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let ip = self.inode(u.ino).map_err(|e| e.to_string())?;
                let nblocks = ip.nblocks;
                v.insert(Work {
                    ip,
                    nblocks,
                    forks: [None, None],
                })
            }
        };
        let slot = usize::from(u.attr);
        if w.forks[slot].is_none() {
            let fork = if u.attr { "attribute" } else { "data" };
            let format = w.ip.fork_format(u.attr);
            if w.ip.fork(u.attr).is_none() || !matches!(format, FMT_EXTENTS | FMT_BTREE) {
                return Err(format!("the {fork} fork has no extents (format {format})"));
            }
            let list = self.extents(&w.ip, u.attr).map_err(|e| e.to_string())?;
            w.forks[slot] = Some((list.to_vec(), format));
        }
        // The fork's room in the inode, in records (XFS_IFORK_MAXEXT).
        let room = w.ip.fork(u.attr).map_or(0, |f| wide(f.len()) / REC);
        let Some((list, format)) = w.forks[slot].as_mut() else {
            return Err("fork not loaded".into());
        };
        let (added, removed) = if u.unmap {
            (0, unmap(list, u.off, u.len))
        } else {
            let e = Extent {
                off: u.off,
                start: u.start,
                len: u.len,
                unwritten: u.unwritten,
            };
            map(list, e)?;
            (u.len, 0)
        };
        let n = wide(list.len());
        let overflow = || format!("di_nblocks {} plus {added} blocks", w.nblocks);
        let mut nblocks = w.nblocks.checked_add(added).ok_or_else(overflow)?;
        if *format == FMT_EXTENTS && n > room {
            // xfs_bmap_extents_to_btree: a root in the inode over one new leaf.
            *format = FMT_BTREE;
            nblocks = nblocks.checked_add(1).ok_or_else(overflow)?;
        } else if u.unmap && *format == FMT_BTREE && n <= room {
            // The end of __xfs_bunmapi: xfs_bmap_btree_to_extents frees the only leaf (a
            // tree whose records fit the inode has one level).
            *format = FMT_EXTENTS;
            nblocks = nblocks.saturating_sub(1);
        }
        w.nblocks = nblocks.checked_sub(removed).ok_or_else(|| {
            format!(
                "unmapping {removed} blocks from an inode of {} (di_nblocks)",
                w.nblocks
            )
        })?;
        Ok(())
    }
}

/// xfs_bmapi_remap: `e` into a hole of `list` (sorted), merged with a neighbour it
/// continues as xfs_bmap_add_extent_hole_real does.
///
/// Offsets are below 2^54 and lengths below 2^21 (bmap records, BUI items): the sums
/// saturate only on forged values, where they make a join or an overlap test conservative.
fn map(list: &mut Vec<Extent>, e: Extent) -> std::result::Result<(), String> {
    let end = |x: &Extent| x.off.saturating_add(x.len);
    let i = list.partition_point(|x| end(x) <= e.off);
    if list.get(i).is_some_and(|x| x.off < end(&e)) {
        return Err(format!(
            "mapping file blocks {} (+{}) over blocks already mapped",
            e.off, e.len
        ));
    }
    let joins = |a: &Extent, b: &Extent| {
        end(a) == b.off
            && a.start.saturating_add(a.len) == b.start
            && a.unwritten == b.unwritten
            && a.len.saturating_add(b.len) <= MAX_BMBT_EXTLEN
    };
    let left = i.checked_sub(1).filter(|&l| joins(&list[l], &e));
    let right = list.get(i).is_some_and(|r| joins(&e, r));
    match (left, right) {
        (Some(l), true)
            if list[l]
                .len
                .saturating_add(e.len)
                .saturating_add(list[i].len)
                <= MAX_BMBT_EXTLEN =>
        {
            // Below MAX_BMBT_EXTLEN (the guard): no saturation.
            list[l].len = list[l]
                .len
                .saturating_add(e.len)
                .saturating_add(list[i].len);
            list.remove(i);
        }
        (Some(l), _) => list[l].len = list[l].len.saturating_add(e.len),
        (None, true) => {
            let r = &mut list[i];
            r.off = e.off;
            r.start = e.start;
            r.len = r.len.saturating_add(e.len);
        }
        (None, false) => list.insert(i, e),
    }
    Ok(())
}

/// __xfs_bunmapi over [off, off + len): whatever is mapped there leaves `list`, extents
/// across an edge are cut. Returns the blocks unmapped.
///
/// The differences are taken in the order the comparisons establish; sums saturate only on
/// forged values (see `map`).
fn unmap(list: &mut Vec<Extent>, off: u64, len: u64) -> u64 {
    let end = off.saturating_add(len);
    let mut out = Vec::with_capacity(list.len().saturating_add(1));
    let mut removed = 0u64;
    for x in list.drain(..) {
        let xend = x.off.saturating_add(x.len);
        if xend <= off || x.off >= end {
            out.push(x);
            continue;
        }
        if x.off < off {
            out.push(Extent {
                len: off.saturating_sub(x.off),
                ..x
            });
        }
        if xend > end {
            out.push(Extent {
                off: end,
                start: x.start.saturating_add(end.saturating_sub(x.off)),
                len: xend.saturating_sub(end),
                unwritten: x.unwritten,
            });
        }
        removed = removed.saturating_add(xend.min(end).saturating_sub(x.off.max(off)));
    }
    *list = out;
    removed
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    fn ext(off: u64, start: u64, len: u64) -> Extent {
        Extent {
            off,
            start,
            len,
            unwritten: false,
        }
    }

    #[test]
    fn map_fills_holes_and_merges() {
        let mut l = vec![ext(0, 100, 2), ext(10, 200, 2)];
        map(&mut l, ext(2, 102, 3)).unwrap();
        assert_eq!(l, vec![ext(0, 100, 5), ext(10, 200, 2)]);
        map(&mut l, ext(8, 198, 2)).unwrap();
        assert_eq!(l, vec![ext(0, 100, 5), ext(8, 198, 4)]);
        map(&mut l, ext(5, 105, 3)).unwrap();
        assert_eq!(l, vec![ext(0, 100, 8), ext(8, 198, 4)]);
        unmap(&mut l, 5, 3);
        map(&mut l, ext(5, 195, 3)).unwrap();
        assert_eq!(l, vec![ext(0, 100, 5), ext(5, 195, 7)]);
        assert!(map(&mut l, ext(11, 500, 5)).is_err());
        assert!(map(&mut l, ext(4, 500, 1)).is_err());
        let unwritten = Extent {
            unwritten: true,
            ..ext(12, 202, 1)
        };
        map(&mut l, unwritten).unwrap();
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn unmap_cuts_and_counts() {
        let mut l = vec![ext(0, 100, 10), ext(20, 300, 5)];
        assert_eq!(unmap(&mut l, 3, 4), 4);
        assert_eq!(l, vec![ext(0, 100, 3), ext(7, 107, 3), ext(20, 300, 5)]);
        assert_eq!(unmap(&mut l, 8, 14), 4);
        assert_eq!(l, vec![ext(0, 100, 3), ext(7, 107, 1), ext(22, 302, 3)]);
        assert_eq!(unmap(&mut l, 40, 4), 0);
        assert_eq!(unmap(&mut l, 0, 100), 7);
        assert!(l.is_empty());
    }
}
