//! A whole PV (label, mda_header, metadata ring, data) from arbitrary bytes through
//! `lvm::assemble`, then reads of every LV. The checksums are fixed up first, so the fuzzer
//! reaches the fields behind them instead of stopping at a CRC mismatch.
#![no_main]

use ferry::block::BlockDevice;
use ferry::volume::lvm::{self, label};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use ferry::block::mem::MemDevice as Mem;

fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the label, mda_header and text checksums of a PV with its label in sector 1.
fn fix_checksums(d: &mut [u8]) {
    if d.len() < 1024 || &d[512..520] != label::LABEL_ID {
        return;
    }
    let c = label::crc(label::INITIAL_CRC, &d[532..1024]);
    put32(d, 528, c);
    let Ok(l) = label::PvLabel::parse(&d[512..1024], 1, "fuzz") else {
        return;
    };
    for m in l.metadata_areas {
        let Ok(at) = usize::try_from(m.offset) else {
            continue;
        };
        if at.checked_add(512).is_none_or(|e| e > d.len()) {
            continue;
        }
        let hdr_crc = |d: &mut [u8]| {
            let c = label::crc(label::INITIAL_CRC, &d[at + 4..at + 512]);
            put32(d, at, c);
        };
        hdr_crc(d);
        let dev = Mem(d.to_vec());
        let Ok(h) = label::MdaHeader::read(&dev, m, "fuzz") else {
            continue;
        };
        let Some(r) = h.committed() else { continue };
        if let Err(ferry::volume::Error::Corrupt {
            what: "lvm metadata text",
            ..
        }) = h.read_text(&dev, r, "fuzz")
        {
            // Recompute the text checksum the same way the reader does: read with wrap.
            let size = r.size as usize;
            let first = (r.size.min(h.size - r.offset)) as usize;
            let mut text = vec![0u8; size];
            let s = (h.start + r.offset) as usize;
            text[..first].copy_from_slice(&d[s..s + first]);
            let w = (h.start + label::MDA_HEADER_SIZE) as usize;
            text[first..].copy_from_slice(&d[w..w + size - first]);
            put32(d, at + 56, label::crc(label::INITIAL_CRC, &text));
            hdr_crc(d);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = data.to_vec();
    fix_checksums(&mut d);
    let dev: Arc<dyn BlockDevice> = Arc::new(Mem(d));
    if let Ok((_, vgs)) = lvm::assemble(&[("fuzz".to_string(), dev)]) {
        for vg in vgs {
            for lv in vg.lvs {
                if let Some(dev) = lv.dev {
                    let mut b = vec![0u8; 4096.min(dev.len() as usize)];
                    let _ = dev.read_at(&mut b, 0);
                    let last = dev.len() - b.len() as u64;
                    let _ = dev.read_at(&mut b, last);
                    let _ = dev.extents(0, dev.len().min(1 << 24));
                }
            }
        }
    }
});
