//! FLAT / VMFS / VMFSRDM extents ("Virtual Disk Format 5.0", section "Extent Descriptions"): a
//! plain file holding the extent's bytes from a sector offset. Whatever lies past the end of the
//! file reads as zeros, as qemu does for short raw files; host holes are reported as zeros.

use crate::block::error::Result;
use crate::block::file::ImageFile;
use crate::block::{push_extent, Extent, ExtentKind};

pub(crate) struct FlatExtent {
    pub file: ImageFile,
    /// Byte offset of the extent's first byte in `file`.
    pub offset: u64,
}

impl FlatExtent {
    /// Reads extent-relative `rel` into `buf`, zero-filling past the end of the file.
    pub(crate) fn read(&self, buf: &mut [u8], rel: u64) -> Result<()> {
        let host = self.offset.saturating_add(rel);
        if host >= self.file.len() {
            buf.fill(0);
            return Ok(());
        }
        self.file
            .read_zero_padded(buf, host, "vmdk flat extent data")
    }

    /// Pushes the extents of extent-relative `[rel, rel+len)`, which starts at guest `pos`:
    /// data ranges of the host file are data, holes and anything past its end are zeros.
    pub(crate) fn extents(&self, out: &mut Vec<Extent>, pos: u64, rel: u64, len: u64) {
        let host = self.offset.saturating_add(rel);
        let host_end = host.saturating_add(len);
        // data_ranges yields ranges inside [host, host + len), in order.
        let guest = |h: u64| pos.saturating_add(h.saturating_sub(host));
        let zero = |a: u64, b: u64| {
            let mut e = Extent::new(guest(a), b.saturating_sub(a), ExtentKind::Zero);
            e.host_offset = Some(a);
            e
        };
        let mut at = host;
        for (d, dlen) in self.file.data_ranges(host, len) {
            if d > at {
                push_extent(out, zero(at, d));
            }
            let mut e = Extent::new(guest(d), dlen, ExtentKind::Data);
            e.host_offset = Some(d);
            push_extent(out, e);
            at = d.saturating_add(dlen);
        }
        if at < host_end {
            push_extent(out, zero(at, host_end));
        }
    }
}
