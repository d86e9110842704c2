//! A device with some ranges discarded: they read as zeros and `extents` reports them as
//! `Zero`, so a copy leaves them out (holes in a raw file, unallocated qcow2 clusters), as it
//! would after the guest ran `fstrim` on a thin disk. The ranges come from the layers above
//! (the free space of the guest's filesystems); this layer only applies them.

use super::{check_range, push_extent, BlockDevice, Describe, Extent, ExtentKind, LayerInfo};
use super::{Error, Result};
use crate::bytes::wide;
use std::ops::Range;
use std::sync::Arc;

pub struct Trimmed {
    inner: Arc<dyn BlockDevice>,
    /// Sorted, apart, inside the device.
    ranges: Vec<Range<u64>>,
}

impl Trimmed {
    /// `inner` with `ranges` discarded. The ranges are sorted and merged here; one that is
    /// empty or reaches past the device's end is refused (a mapping bug above, not data).
    pub fn new(inner: Arc<dyn BlockDevice>, mut ranges: Vec<Range<u64>>) -> Result<Self> {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.start >= r.end || r.end > inner.len() {
                return Err(Error::OutOfRange {
                    offset: r.start,
                    len: r.end.saturating_sub(r.start),
                    size: inner.len(),
                });
            }
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        Ok(Trimmed {
            inner,
            ranges: merged,
        })
    }

    /// Bytes discarded.
    pub fn trimmed_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| r.end.saturating_sub(r.start))
            .fold(0, u64::saturating_add)
    }

    /// Calls `f(offset, length, discarded)` for the pieces of `[off, off+len)`, in order.
    fn pieces(
        &self,
        off: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, bool) -> Result<()>,
    ) -> Result<()> {
        // Callers checked [off, off+len) against the device; ranges are sorted and disjoint,
        // so pos only grows and every piece is stop - pos >= 0.
        let end = off.saturating_add(len);
        let mut pos = off;
        let mut ranges = self.ranges[self.ranges.partition_point(|r| r.end <= pos)..].iter();
        let mut next = ranges.next();
        while pos < end {
            match next {
                Some(r) if r.start <= pos => {
                    let stop = r.end.min(end);
                    f(pos, stop.saturating_sub(pos), true)?;
                    pos = stop;
                    next = ranges.next();
                }
                Some(r) => {
                    let stop = r.start.min(end);
                    f(pos, stop.saturating_sub(pos), false)?;
                    pos = stop;
                }
                None => {
                    f(pos, end.saturating_sub(pos), false)?;
                    pos = end;
                }
            }
        }
        Ok(())
    }
}

impl BlockDevice for Trimmed {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len())?;
        self.pieces(off, wide(buf.len()), |at, n, gone| {
            // Pieces lie inside buf, whose length is a usize.
            let start = usize::try_from(at.saturating_sub(off)).unwrap_or(usize::MAX);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let b = buf
                .get_mut(start..)
                .and_then(|b| b.get_mut(..n))
                .unwrap_or_default();
            if gone {
                b.fill(0);
                Ok(())
            } else {
                self.inner.read_at(b, at)
            }
        })
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        let mut out = Vec::new();
        self.pieces(off, len, |at, n, gone| {
            if gone {
                push_extent(&mut out, Extent::new(at, n, ExtentKind::Zero));
            } else {
                for e in self.inner.extents(at, n)? {
                    push_extent(&mut out, e);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl Describe for Trimmed {
    fn info(&self) -> Result<LayerInfo> {
        let mut i = self.inner.info()?;
        i.specific.push((
            "trimmed_bytes".into(),
            serde_json::json!(self.trimmed_bytes()),
        ));
        Ok(i)
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;
    use crate::block::mem::MemDevice;

    fn dev() -> Arc<dyn BlockDevice> {
        Arc::new(MemDevice((0..64u8).map(|i| i + 1).collect()))
    }

    #[test]
    fn discarded_ranges_read_as_zeros_and_map_as_zero() {
        let t = Trimmed::new(dev(), vec![40..48, 8..16, 12..20]).unwrap();
        assert_eq!(t.trimmed_bytes(), 20);
        let mut b = vec![0xaau8; 64];
        t.read_at(&mut b, 0).unwrap();
        for (i, &x) in b.iter().enumerate() {
            let gone = (8..20).contains(&i) || (40..48).contains(&i);
            assert_eq!(x, if gone { 0 } else { i as u8 + 1 }, "byte {i}");
        }
        let mut b = vec![0xaau8; 10];
        t.read_at(&mut b, 15).unwrap();
        assert_eq!(b, [0, 0, 0, 0, 0, 21, 22, 23, 24, 25]);
        let e = t.extents(4, 50).unwrap();
        let kinds: Vec<_> = e.iter().map(|e| (e.offset, e.length, e.kind)).collect();
        assert_eq!(
            kinds,
            [
                (4, 4, ExtentKind::Data),
                (8, 12, ExtentKind::Zero),
                (20, 20, ExtentKind::Data),
                (40, 8, ExtentKind::Zero),
                (48, 6, ExtentKind::Data),
            ]
        );
    }

    #[test]
    fn ranges_outside_the_device_are_refused() {
        assert!(Trimmed::new(dev(), vec![0..8, 60..65]).is_err());
        assert!(Trimmed::new(dev(), vec![0..8, 10..10]).is_err());
        assert!(Trimmed::new(dev(), vec![]).is_ok());
    }
}
