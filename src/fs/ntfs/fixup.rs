//! Update sequence arrays ("fixups"): multi-sector structures (MFT records, index blocks) end
//! every 512-byte stride with a copy of the update sequence number, and the array keeps the
//! real last two bytes of each stride. A torn write leaves a stride whose tail differs, which
//! is how damage is detected (Linux-NTFS documentation, "Fixup").

use super::flaw::Flaw;
use crate::bytes::le16;

/// The stride the array protects, whatever the sector size (NTFS_BLOCK_SIZE in ntfs-3g).
pub const STRIDE: usize = 512;

/// Checks and undoes the fixups of `buf` in place, from its header's `usa_offset` (byte 4) and
/// `usa_count` (byte 6). Err says which stride or field is wrong, and where.
pub fn apply(buf: &mut [u8]) -> Result<(), Flaw> {
    let ofs = usize::from(le16(buf, 4));
    let count = usize::from(le16(buf, 6));
    let strides = buf.len() / STRIDE;
    if buf.len() % STRIDE != 0 || strides == 0 {
        return Err(format!("{} bytes is not a multiple of {STRIDE}", buf.len()).into());
    }
    // Strides of a buffer in memory: no saturation.
    let want = strides.saturating_add(1);
    if count != want {
        return Err(Flaw::at(6, "update sequence array entries").expected(want, count));
    }
    let bad_array = || {
        Flaw::at(
            4,
            format!("update sequence array at byte {ofs} ({count} entries)"),
        )
    };
    // A u16 count of 2-byte entries: no saturation.
    let array = ofs
        .checked_add(count.saturating_mul(2))
        .filter(|&e| e <= STRIDE - 2 && ofs >= 8 && ofs % 2 == 0)
        .and_then(|e| buf.get(ofs..e))
        .ok_or_else(bad_array)?;
    // The array lies in the first stride, before the tail it restores: a copy frees `buf`.
    let mut copy = [0u8; STRIDE];
    let usa = copy.get_mut(..array.len()).ok_or_else(bad_array)?;
    usa.copy_from_slice(array);
    let (usn, saved) = usa.split_first_chunk::<2>().ok_or_else(bad_array)?;
    let usn = *usn;
    for (i, (stride, fix)) in buf
        .chunks_exact_mut(STRIDE)
        .zip(saved.chunks_exact(2))
        .enumerate()
    {
        let tail = &mut stride[STRIDE - 2..];
        if *tail != usn {
            // Inside `buf`: no saturation.
            let at = i.saturating_mul(STRIDE).saturating_add(STRIDE - 2);
            return Err(Flaw::at(
                at,
                format!("stride {i} does not end with the update sequence number"),
            )
            .expected(
                format!("{:02x}{:02x}", usn[0], usn[1]),
                format!("{:02x}{:02x}", tail[0], tail[1]),
            ));
        }
        tail.copy_from_slice(fix);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_and_detects_torn_strides() {
        let mut b = vec![0u8; 1024];
        b[4] = 0x30;
        b[6] = 3;
        b[0x30] = 0x07;
        b[0x32] = 0xaa;
        b[0x33] = 0xbb;
        b[0x34] = 0xcc;
        b[0x35] = 0xdd;
        b[510] = 0x07;
        b[1022] = 0x07;
        let mut ok = b.clone();
        apply(&mut ok).unwrap();
        assert_eq!(&ok[510..512], &[0xaa, 0xbb]);
        assert_eq!(&ok[1022..1024], &[0xcc, 0xdd]);
        b[1022] = 0x08;
        let e = apply(&mut b).unwrap_err();
        assert!(e.detail.contains("stride 1"), "{e}");
        assert_eq!(e.at, Some(1022));
        assert_eq!(e.mismatch, Some(("0700".into(), "0800".into())));
    }
}
