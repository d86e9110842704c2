//! Which inodes of a guest's tree an overlay may have changed: what lets `ferry diff OVERLAY`
//! scale with the edit rather than with the disk.
//!
//! The overlay's own clusters (extents decided at depth 0 of its chain) are the only bytes
//! in which it differs from its backing. They are mapped through the volume layout to byte
//! ranges of each filesystem of the tree (by discovering the volumes over `Locator` disks, as
//! `unused` does, the other way round), and each filesystem says which of its inodes those
//! ranges may have changed (`Filesystem::touched`) and checks that every other changed block
//! is accounted for (`Filesystem::owned`). Anything that cannot be shown sound this way (a
//! layout that differs, a filesystem that cannot tell, a block no touched inode owns) is an
//! `Err` naming why: the caller then compares the whole trees.

use super::unused::Locator;
use super::{tree::Tree, Guest, View};
use crate::block::{BlockDevice, ExtentKind};
use crate::bytes::wide;
use crate::fs::ranges::{intersect, normalize, subtract, total};
use crate::volume::{self, Volume};
use std::collections::HashSet;
use std::sync::Arc;

/// How many bytes of an overlay are worth comparing with its backing rather than walking
/// both trees: a floor, and per inode in use about what one stat of each side costs in
/// reading from the page cache. An overlay written whole (`qemu-img convert -B` writes every
/// cluster of its source) is cheaper to walk.
const COMPARE_FLOOR: u64 = 64 << 20;
const COMPARE_PER_INODE: u64 = 32 << 10;

/// Bytes of both disks compared per read, and the unit of a difference.
const COMPARE_CHUNK: usize = 1 << 20;
const SECTOR: usize = 512;

/// One side of the comparison: the disk, the guest on it, the tree shown.
pub struct Side<'a> {
    pub disk: &'a Arc<dyn BlockDevice>,
    pub guest: &'a Guest,
    pub view: &'a View,
}

/// The tree inodes (of both views: their numbering is the same, as their shapes are) that
/// may differ between `old` and `new`, where `new`'s disk is an overlay whose backing is
/// `old`'s disk. Every path whose metadata, content or directory entries differ has one of
/// them as its inode or on its way from the root.
pub fn changed_inodes(old: &Side, new: &Side) -> Result<HashSet<u64>, String> {
    let len = new.disk.len();
    if old.disk.len() != len {
        return Err(format!(
            "the overlay is {len} bytes, its backing {}",
            old.disk.len()
        ));
    }
    if old.view.shape != new.view.shape {
        return Err("the two trees are composed differently".into());
    }
    let extents = new
        .disk
        .extents(0, len)
        .map_err(|e| format!("mapping the overlay: {e}"))?;
    // What the overlay holds: its data, and its zero clusters where the backing has data
    // (a zero cluster over a hole of the backing changes nothing).
    let mut held = Vec::new();
    for e in extents.iter().filter(|e| e.depth == 0) {
        if e.kind == ExtentKind::Data {
            held.push(e.offset..e.end());
            continue;
        }
        let under = old
            .disk
            .extents(e.offset, e.length)
            .map_err(|e| format!("mapping the backing: {e}"))?;
        held.extend(
            under
                .iter()
                .filter(|b| b.kind == ExtentKind::Data)
                .map(|b| b.offset..b.end()),
        );
    }
    let held = normalize(held);
    let bytes = total(&held);
    let used: u64 = new
        .view
        .shape
        .iter()
        .filter_map(|(device, _, _)| new.guest.filesystem(device))
        .filter_map(|fs| fs.statfs().ok())
        .map(|s| s.files.saturating_sub(s.ffree))
        .sum();
    let budget = COMPARE_FLOOR.saturating_add(used.saturating_mul(COMPARE_PER_INODE));
    if bytes > budget {
        return Err(format!(
            "the overlay holds {bytes} bytes: walking {used} inodes is cheaper than comparing them"
        ));
    }
    let written = differing(old.disk.as_ref(), new.disk.as_ref(), &held)?;
    let mut changed = HashSet::new();
    if written.is_empty() {
        return Ok(changed);
    }
    let located = |d: &Arc<dyn BlockDevice>| {
        let disk: Arc<dyn BlockDevice> = Arc::new(Locator::new(d.clone(), 0));
        volume::discover(&[disk]).map_err(|e| format!("finding the volumes: {e}"))
    };
    let (old_vols, new_vols) = (located(old.disk)?, located(new.disk)?);
    for (i, (device, mountpoint, _)) in new.view.shape.iter().enumerate() {
        let pieces = pieces_of(&new_vols, device)?;
        if pieces != pieces_of(&old_vols, device)? {
            return Err(format!("{device}: laid out differently on the two disks"));
        }
        // The written bytes of this volume, as volume offsets.
        let mut ranges = Vec::new();
        for &(at, disk_at, n) in &pieces {
            // Volume pieces lie on the disk; each intersection lies inside its piece, so the
            // moves from disk to volume offsets neither underflow nor pass the volume's end.
            let piece = disk_at..disk_at.saturating_add(n);
            let to_volume = |p: u64| p.saturating_sub(disk_at).saturating_add(at);
            for r in intersect(&written, std::slice::from_ref(&piece)) {
                ranges.push(to_volume(r.start)..to_volume(r.end));
            }
        }
        let ranges = normalize(ranges);
        if ranges.is_empty() {
            continue;
        }
        let fs_of = |s: &Side| {
            s.guest
                .filesystem(device)
                .ok_or_else(|| format!("{device}: not opened"))
        };
        let (a, b) = (fs_of(old)?, fs_of(new)?);
        let (ia, ib) = (a.info(), b.info());
        if (ia.kind, ia.uuid, ia.block_size, ia.size_bytes)
            != (ib.kind, ib.uuid, ib.block_size, ib.size_bytes)
        {
            return Err(format!(
                "{device}: the filesystem differs in kind, UUID or size"
            ));
        }
        let why = |e: crate::fs::Error| format!("{device} ({mountpoint}): {e}");
        let (ta, tb) = (
            a.touched(&ranges).map_err(why)?,
            b.touched(&ranges).map_err(why)?,
        );
        // Each side names the inodes whose records lie in the changed bytes as it lays them
        // out; they differ where the inode table itself grew or moved (NTFS's $MFT extended
        // for new files), and every record that changed lies in changed bytes on one side.
        let mut inodes = ta.inodes.clone();
        inodes.extend(&tb.inodes);
        inodes.sort_unstable();
        inodes.dedup();
        let mut residue = intersect(&ta.residue, &tb.residue);
        if !residue.is_empty() {
            residue = subtract(&residue, &a.owned(&inodes).map_err(why)?);
            residue = subtract(&residue, &b.owned(&inodes).map_err(why)?);
        }
        if let Some(r) = residue.first() {
            let bytes = total(&residue);
            return Err(format!(
                "{device}: {bytes} changed bytes (the first at volume offset {}) belong to no \
                 changed inode",
                r.start
            ));
        }
        for local in inodes {
            let ino = Tree::tree_ino(i, local)
                .ok_or_else(|| format!("{device}: inode {local} out of the tree's range"))?;
            changed.insert(ino);
        }
    }
    Ok(changed)
}

/// The sectors of `ranges` whose bytes differ between `a` and `b`. An overlay's clusters
/// (64 KiB for qemu's default) hold unchanged blocks beside changed ones, and `qemu-img
/// convert -B` or a copy-on-write of a partial write store them whole; the unchanged ones
/// would make the filesystems account for blocks of files nobody touched. Reading both
/// versions of what the overlay holds keeps the cost with the size of the overlay.
fn differing(
    a: &dyn BlockDevice,
    b: &dyn BlockDevice,
    ranges: &[std::ops::Range<u64>],
) -> Result<Vec<std::ops::Range<u64>>, String> {
    let (mut x, mut y) = (vec![0u8; COMPARE_CHUNK], vec![0u8; COMPARE_CHUNK]);
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            let n = usize::try_from(r.end.saturating_sub(off))
                .unwrap_or(usize::MAX)
                .min(COMPARE_CHUNK);
            let read = |d: &dyn BlockDevice, buf: &mut [u8]| {
                d.read_at(buf, off)
                    .map_err(|e| format!("reading disk offset {off}: {e}"))
            };
            read(a, &mut x[..n])?;
            read(b, &mut y[..n])?;
            // Sector positions inside the range just read.
            let mut at = off;
            for (s, t) in x[..n].chunks(SECTOR).zip(y[..n].chunks(SECTOR)) {
                let end = at.saturating_add(wide(s.len()));
                if s != t {
                    match out.last_mut() {
                        Some(last) if last.end == at => last.end = end,
                        _ => out.push(at..end),
                    }
                }
                at = end;
            }
            off = off.saturating_add(wide(n));
        }
    }
    Ok(out)
}

/// Where volume `device` lies on disk 0: (volume offset, disk offset, length) pieces.
fn pieces_of(vols: &[Volume], device: &str) -> Result<Vec<(u64, u64, u64)>, String> {
    let v = vols
        .iter()
        .find(|v| v.name == device)
        .ok_or_else(|| format!("{device}: no such volume on the disk"))?;
    let dev = v
        .dev
        .as_ref()
        .ok_or_else(|| format!("{device}: cannot be mapped"))?;
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    let extents = dev
        .extents(0, dev.len())
        .map_err(|e| format!("{device}: {e}"))?;
    for e in extents {
        let at = e
            .host_offset
            .filter(|_| e.depth == 0)
            .ok_or_else(|| format!("{device}: a range with no disk offset"))?;
        match out.last_mut() {
            Some((o, d, n))
                if o.checked_add(*n) == Some(e.offset) && d.checked_add(*n) == Some(at) =>
            {
                *n = n.saturating_add(e.length)
            }
            _ => out.push((e.offset, at, e.length)),
        }
    }
    Ok(out)
}
