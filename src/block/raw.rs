//! Raw images: the file is the disk. Holes in the host file are reported as zero extents
//! (SEEK_DATA/SEEK_HOLE), as qemu does, so copies skip them.

use super::error::Result;
use super::file::ImageFile;
use super::{check_range, push_extent, BlockDevice, Describe, Extent, ExtentKind, LayerInfo};
use crate::bytes::wide;

pub(super) struct Raw {
    file: ImageFile,
}

impl Raw {
    pub(super) fn new(file: ImageFile) -> Self {
        Raw { file }
    }
}

impl BlockDevice for Raw {
    fn len(&self) -> u64 {
        self.file.len()
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len())?;
        self.file.read_exact_at(buf, off, "raw data")
    }

    fn prefetch(&self, off: u64, len: u64) {
        self.file.will_need(off, len);
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        // Inside the file (checked above); the data ranges are ascending and inside the range.
        let end = off.saturating_add(len);
        let mut out = Vec::new();
        let mut pos = off;
        for (d, dlen) in self.file.data_ranges(off, len) {
            if d > pos {
                let mut z = Extent::new(pos, d.saturating_sub(pos), ExtentKind::Zero);
                z.host_offset = Some(pos);
                push_extent(&mut out, z);
            }
            let mut e = Extent::new(d, dlen, ExtentKind::Data);
            e.host_offset = Some(d);
            push_extent(&mut out, e);
            pos = d.saturating_add(dlen);
        }
        if pos < end {
            let mut z = Extent::new(pos, end.saturating_sub(pos), ExtentKind::Zero);
            z.host_offset = Some(pos);
            push_extent(&mut out, z);
        }
        Ok(out)
    }
}

impl Describe for Raw {
    fn allocated(&self) -> Result<Option<u64>> {
        Ok(Some(
            self.file
                .data_ranges(0, self.file.len())
                .iter()
                .map(|r| r.1)
                .sum(),
        ))
    }

    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo {
            filename: self.file.path().to_path_buf(),
            format: "raw".into(),
            virtual_size: self.len(),
            disk_size: self.file.disk_usage(),
            files: vec![self.file.path().to_path_buf()],
            ..Default::default()
        })
    }
}
