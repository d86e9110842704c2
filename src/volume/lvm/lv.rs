//! A linear or striped logical volume as a device: each segment maps a range of the LV onto one
//! PV range (linear) or onto N PV ranges in `stripe_size` chunks, round-robin (dm-stripe).

use crate::block::{check_range, push_extent, BlockDevice, Describe, Extent, LayerInfo, Result};
use std::path::PathBuf;
use std::sync::Arc;

/// One stripe of a segment: its PV device and the byte offset of its first extent there.
#[derive(Clone)]
pub struct Stripe {
    pub dev: Arc<dyn BlockDevice>,
    pub start: u64,
}

/// A segment in bytes: `[start, start+len)` of the LV. With one stripe `stripe_size` is `len`.
#[derive(Clone)]
pub struct Seg {
    pub start: u64,
    pub len: u64,
    pub stripe_size: u64,
    pub stripes: Vec<Stripe>,
}

pub struct LvDevice {
    vg: String,
    lv: String,
    size: u64,
    segs: Vec<Seg>,
}

impl LvDevice {
    /// Checks that the segments tile `0..size` and that every stripe's area lies inside its
    /// device, so reads never compute an offset outside a PV.
    pub fn new(vg: &str, lv: &str, segs: Vec<Seg>) -> std::result::Result<Self, String> {
        let mut next = 0u64;
        for (i, s) in segs.iter().enumerate() {
            if s.start != next || s.len == 0 {
                return Err(format!("segment {i} does not continue the previous one"));
            }
            let n = s.stripes.len() as u64;
            if n == 0 || s.stripe_size == 0 {
                return Err(format!("segment {i} has no stripes or a zero stripe size"));
            }
            if s.len % n != 0 || (s.len / n) % s.stripe_size != 0 {
                return Err(format!(
                    "segment {i}: {} bytes do not divide into {n} stripes of {}-byte chunks",
                    s.len, s.stripe_size
                ));
            }
            let area = s.len / n;
            for st in &s.stripes {
                if st.start.checked_add(area).is_none_or(|e| e > st.dev.len()) {
                    return Err(format!(
                        "segment {i}: stripe area at {:#x} (+{area} bytes) lies past its PV's \
                         device ({} bytes)",
                        st.start,
                        st.dev.len()
                    ));
                }
            }
            next = s.start.checked_add(s.len).ok_or("LV size overflows")?;
        }
        Ok(LvDevice {
            vg: vg.into(),
            lv: lv.into(),
            size: next,
            segs,
        })
    }

    /// Calls `f(lv_offset, device, device_offset, n)` for each contiguous piece of
    /// `[off, off+len)`, in order.
    fn pieces(
        &self,
        off: u64,
        len: u64,
        mut f: impl FnMut(u64, &Arc<dyn BlockDevice>, u64, u64) -> Result<()>,
    ) -> Result<()> {
        check_range(off, len, self.size)?;
        let mut pos = off;
        let end = off + len;
        // First segment that ends after `pos`.
        let mut si = self.segs.partition_point(|s| s.start + s.len <= pos);
        while pos < end {
            let s = &self.segs[si];
            let o = pos - s.start;
            let n = s.stripes.len() as u64;
            let (idx, dev_off, avail) = if n == 1 {
                (0, s.stripes[0].start + o, s.len - o)
            } else {
                let chunk = o / s.stripe_size;
                let within = o % s.stripe_size;
                let idx = (chunk % n) as usize;
                let row = chunk / n;
                (
                    idx,
                    s.stripes[idx].start + row * s.stripe_size + within,
                    s.stripe_size - within,
                )
            };
            let take = avail.min(end - pos);
            f(pos, &s.stripes[idx].dev, dev_off, take)?;
            pos += take;
            if pos == s.start + s.len {
                si += 1;
            }
        }
        Ok(())
    }
}

impl BlockDevice for LvDevice {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.pieces(off, buf.len() as u64, |lv_off, dev, dev_off, n| {
            let b = (lv_off - off) as usize;
            dev.read_at(&mut buf[b..b + n as usize], dev_off)
        })
    }

    /// Writes land on the PV ranges the segments map, piece by piece as reads do (dm-linear and
    /// dm-stripe); a write past the LV's end is refused before any piece is written.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.pieces(off, buf.len() as u64, |lv_off, dev, dev_off, n| {
            let b = (lv_off - off) as usize;
            dev.write_at(&buf[b..b + n as usize], dev_off)
        })
    }

    /// Flushes every distinct device under the LV once (the PVs of one disk share it).
    fn flush(&self) -> Result<()> {
        let mut done: Vec<*const ()> = Vec::new();
        for st in self.segs.iter().flat_map(|s| &s.stripes) {
            let key = Arc::as_ptr(&st.dev).cast::<()>();
            if !done.contains(&key) {
                done.push(key);
                st.dev.flush()?;
            }
        }
        Ok(())
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        self.pieces(off, len, |lv_off, dev, dev_off, n| {
            for mut e in dev.extents(dev_off, n)? {
                // A well-behaved device answers inside [dev_off, dev_off+n); saturate anyway.
                e.offset = e.offset.saturating_sub(dev_off).saturating_add(lv_off);
                push_extent(&mut out, e);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl Describe for LvDevice {
    fn info(&self) -> Result<LayerInfo> {
        let types: Vec<&str> = self
            .segs
            .iter()
            .map(|s| {
                if s.stripes.len() > 1 {
                    "striped"
                } else {
                    "linear"
                }
            })
            .collect();
        Ok(LayerInfo {
            filename: PathBuf::from(format!("/dev/{}/{}", self.vg, self.lv)),
            format: "lvm-lv".into(),
            virtual_size: self.size,
            specific: vec![
                ("vg".into(), serde_json::json!(self.vg)),
                ("lv".into(), serde_json::json!(self.lv)),
                ("segments".into(), serde_json::json!(types)),
            ],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Error, ExtentKind};
    use parking_lot::Mutex;

    /// A writable disk in memory.
    struct Disk(Mutex<Vec<u8>>);

    impl BlockDevice for Disk {
        fn len(&self) -> u64 {
            self.0.lock().len() as u64
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
            check_range(off, buf.len() as u64, self.len())?;
            let o = off as usize;
            buf.copy_from_slice(&self.0.lock()[o..o + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
            check_range(off, buf.len() as u64, self.len())?;
            let o = off as usize;
            self.0.lock()[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
            Ok(vec![Extent::new(off, len, ExtentKind::Data)])
        }
    }

    impl Describe for Disk {
        fn info(&self) -> Result<LayerInfo> {
            Ok(LayerInfo::default())
        }
    }

    /// A linear segment on disk A, then a 2-way striped one over A and B (4 KiB chunks).
    fn lv() -> (LvDevice, Arc<Disk>, Arc<Disk>) {
        let a = Arc::new(Disk(Mutex::new(vec![0; 1 << 20])));
        let b = Arc::new(Disk(Mutex::new(vec![0; 1 << 20])));
        let (da, db): (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) = (a.clone(), b.clone());
        let segs = vec![
            Seg {
                start: 0,
                len: 65536,
                stripe_size: 65536,
                stripes: vec![Stripe {
                    dev: da.clone(),
                    start: 4096,
                }],
            },
            Seg {
                start: 65536,
                len: 65536,
                stripe_size: 4096,
                stripes: vec![
                    Stripe {
                        dev: da,
                        start: 131072,
                    },
                    Stripe {
                        dev: db,
                        start: 8192,
                    },
                ],
            },
        ];
        (LvDevice::new("vg", "lv", segs).unwrap(), a, b)
    }

    #[test]
    fn writes_land_where_reads_come_from() {
        let (lv, a, b) = lv();
        // Across the segment boundary and three stripe chunks.
        let data: Vec<u8> = (0..12288u32).map(|i| (i % 251) as u8).collect();
        let off = 65536 - 2048;
        lv.write_at(&data, off).unwrap();
        let mut back = vec![0u8; data.len()];
        lv.read_at(&mut back, off).unwrap();
        assert_eq!(back, data);
        // The linear tail on A, then chunk 0 on A, chunk 1 on B, chunk 2 on A again.
        let (a, b) = (a.0.lock(), b.0.lock());
        assert_eq!(&a[4096 + 63488..4096 + 65536], &data[..2048]);
        assert_eq!(&a[131072..131072 + 4096], &data[2048..6144]);
        assert_eq!(&b[8192..8192 + 4096], &data[6144..10240]);
        assert_eq!(&a[131072 + 4096..131072 + 6144], &data[10240..]);
    }

    #[test]
    fn a_write_past_the_end_writes_nothing() {
        let (lv, a, b) = lv();
        let r = lv.write_at(&[7u8; 8192], 131072 - 4096);
        assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
        assert!(a.0.lock().iter().chain(b.0.lock().iter()).all(|&x| x == 0));
    }
}
