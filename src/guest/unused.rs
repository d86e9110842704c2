//! The space on the guest's disks that holds nothing the guest will read: free blocks of its
//! filesystems (by their own allocation maps) and the slots of its swap areas. A conversion
//! leaves it out of the copy, as virt-v2v does by running `fstrim` in its appliance, so that
//! a disk whose files were written and deleted many times copies no faster than its live data
//! and comes out no larger.
//!
//! Filesystems report their free space as byte ranges of their own volume; this module maps
//! them to disk offsets through the same partition and LVM layers that read them. It does so
//! by discovering the volumes over [`Locator`] disks, whose extents name the disk and offset
//! they come from: asking a logical volume for the extents of a range then answers where on
//! which disk its pieces are.

use crate::block::{BlockDevice, Describe, Extent, ExtentKind, LayerInfo};
use crate::bytes::wide;
use crate::fs::{self, Error};
use crate::volume::{self, Volume, VolumeKind};
use serde::Serialize;
use std::ops::Range;
use std::sync::Arc;

/// Linux's swap header: one page, its signature in the page's last ten bytes. Only the 4 KiB
/// pages of x86 and most arm64 kernels are recognised; other page sizes keep their swap.
const SWAP_PAGE_LEN: usize = 4096;
const SWAP_PAGE: u64 = wide(SWAP_PAGE_LEN);
const SWAP_SIGNATURE: &[u8; 10] = b"SWAPSPACE2";

/// What was found unused on one volume, or why nothing was.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeUnused {
    pub device: String,
    pub fstype: String,
    /// Bytes left out of the copy; None when the volume is copied whole.
    pub bytes: Option<u64>,
    /// Why the volume is copied whole, when it is.
    pub reason: Option<String>,
}

/// The unused space of every disk, as disk byte ranges (sorted, apart).
#[derive(Debug, Default)]
pub struct Unused {
    pub disks: Vec<Vec<Range<u64>>>,
    pub volumes: Vec<VolumeUnused>,
}

/// A disk that reads as the one it wraps and whose extents say where they are: disk number
/// in `depth`, byte offset in `host_offset`. Partitions and LVs pass both through unchanged.
pub(crate) struct Locator {
    inner: Arc<dyn BlockDevice>,
    disk: u32,
}

impl Locator {
    /// `inner`, as disk number `disk`.
    pub(crate) fn new(inner: Arc<dyn BlockDevice>, disk: u32) -> Locator {
        Locator { inner, disk }
    }
}

impl BlockDevice for Locator {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> crate::block::Result<()> {
        self.inner.read_at(buf, off)
    }

    fn extents(&self, off: u64, len: u64) -> crate::block::Result<Vec<Extent>> {
        crate::block::check_range(off, len, self.len())?;
        let mut e = Extent::new(off, len, ExtentKind::Data);
        e.depth = self.disk;
        e.host_offset = Some(off);
        Ok(vec![e])
    }
}

impl Describe for Locator {
    fn info(&self) -> crate::block::Result<LayerInfo> {
        self.inner.info()
    }
}

/// Finds the unused space of `disks` (the guest as it will be copied: after its fixes).
/// Damage or doubt on one volume keeps that volume whole and says why; it never stops the
/// others. A disk whose partitions overlap is kept whole: which one owns a block is unknown.
pub fn unused(disks: &[Arc<dyn BlockDevice>]) -> volume::Result<Unused> {
    let located: Vec<Arc<dyn BlockDevice>> = disks
        .iter()
        .enumerate()
        .map(|(i, d)| -> Arc<dyn BlockDevice> {
            Arc::new(Locator {
                inner: d.clone(),
                // A guest has far fewer disks than u32::MAX.
                disk: u32::try_from(i).unwrap_or(u32::MAX),
            })
        })
        .collect();
    let volumes = volume::discover(&located)?;
    let mut out = Unused {
        disks: vec![Vec::new(); disks.len()],
        volumes: Vec::new(),
    };
    let tangled = overlapping_disks(&volumes);
    for v in &volumes {
        let Some(c) = v.content.as_ref() else {
            continue;
        };
        let swap = c.fstype == "swap";
        if !swap && !matches!(c.usage, volume::content::Usage::Filesystem) {
            continue;
        }
        let mut report = VolumeUnused {
            device: v.name.clone(),
            fstype: c.fstype.clone(),
            bytes: None,
            reason: None,
        };
        let found = match &v.dev {
            None => Err(v.error.clone().unwrap_or_else(|| "cannot be read".into())),
            Some(dev) if swap => swap_slots(dev.as_ref()),
            Some(dev) => fs::open(dev.clone())
                .and_then(|f| f.unused())
                .map_err(|e| match e {
                    Error::Unsupported(why) => why,
                    e => e.to_string(),
                }),
        };
        let ranges = match found {
            Ok(r) => r,
            Err(why) => {
                report.reason = Some(why);
                out.volumes.push(report);
                continue;
            }
        };
        let mut pieces: Vec<(usize, Range<u64>)> = Vec::new();
        let placed = ranges.iter().try_for_each(|r| {
            let dev = v.dev.as_ref().ok_or("no device")?;
            let len = r.end.checked_sub(r.start).ok_or("an inverted range")?;
            for e in dev.extents(r.start, len).map_err(|_| "unmapped")? {
                let at = e.host_offset.ok_or("a range with no disk offset")?;
                let disk = usize::try_from(e.depth).unwrap_or(usize::MAX);
                if disk >= disks.len() || tangled.contains(&disk) {
                    return Err("on a disk whose partitions overlap");
                }
                let end = at.checked_add(e.length).ok_or("a range past 2^64")?;
                pieces.push((disk, at..end));
            }
            Ok(())
        });
        if let Err(why) = placed {
            report.reason = Some(why.to_string());
            out.volumes.push(report);
            continue;
        }
        report.bytes = Some(
            pieces
                .iter()
                .map(|(_, r)| r.end.saturating_sub(r.start))
                .fold(0, u64::saturating_add),
        );
        for (d, r) in pieces {
            out.disks[d].push(r);
        }
        out.volumes.push(report);
    }
    for d in &mut out.disks {
        d.sort_by_key(|r| r.start);
    }
    Ok(out)
}

/// The disks (by number) on which two partitions share bytes. Extended partitions hold their
/// logical ones by design and are left out of the comparison.
fn overlapping_disks(volumes: &[Volume]) -> Vec<usize> {
    let disk_names: Vec<&str> = volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Disk)
        .map(|v| v.name.as_str())
        .collect();
    let mut out = Vec::new();
    for (i, name) in disk_names.iter().enumerate() {
        let mut parts: Vec<(u64, u64)> = volumes
            .iter()
            .filter(|v| v.kind == VolumeKind::Partition && v.parent.as_deref() == Some(name))
            .map(|v| (v.offset, v.offset.saturating_add(v.size)))
            .collect();
        parts.sort_unstable();
        if parts.windows(2).any(|w| w[1].0 < w[0].1) {
            out.push(i);
        }
    }
    out
}

/// A Linux swap area's slots: everything after its header page. Its contents are pages of
/// processes long gone; a swap holding a hibernated system has another signature and is kept.
fn swap_slots(dev: &dyn BlockDevice) -> Result<Vec<Range<u64>>, String> {
    let mut page = [0u8; SWAP_PAGE_LEN];
    if dev.len() < SWAP_PAGE {
        return Err("swap: shorter than its header page".into());
    }
    dev.read_at(&mut page, 0).map_err(|e| e.to_string())?;
    if !page.ends_with(SWAP_SIGNATURE) {
        return Err(
            "swap: no SWAPSPACE2 signature in a 4 KiB header (hibernated, or another page size)"
                .into(),
        );
    }
    let end = dev.len().saturating_sub(dev.len() % SWAP_PAGE);
    Ok(if end > SWAP_PAGE {
        std::iter::once(SWAP_PAGE..end).collect()
    } else {
        Vec::new()
    })
}
