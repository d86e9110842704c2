//! LZNT1, the compression of NTFS compressed attributes ([MS-XCA] 2.5): a compression unit
//! (16 clusters) is a sequence of chunks, each a 16-bit header (bit 15: compressed, low 12
//! bits: bytes that follow minus one) and up to 4096 bytes of output: literals and
//! back-references whose split of length and displacement bits depends on the position in
//! the chunk. A chunk that produces fewer than 4096 bytes is followed by zeros, as is
//! everything after the terminating zero header (ntfs-3g's ntfs_decompress does the same).

use super::lz77::copy_match;

/// Output bytes of one chunk.
pub const CHUNK: usize = 4096;

/// Decompresses `src` into all of `dst` (a compression unit, a multiple of 4096 bytes).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut rest = src;
    let mut outs = dst.chunks_mut(CHUNK);
    for out in outs.by_ref() {
        let sp = src.len().saturating_sub(rest.len());
        let h = match rest.split_first_chunk::<2>() {
            Some((h, tail)) if *h != [0, 0] => {
                rest = tail;
                u16::from_le_bytes(*h)
            }
            _ => {
                out.fill(0);
                break;
            }
        };
        // 1..=4096.
        let len = usize::from(h & 0x0fff).saturating_add(1);
        let (data, next) = rest
            .split_at_checked(len)
            .ok_or_else(|| format!("chunk at byte {sp}: {len} bytes past the end"))?;
        let n = if h & 0x8000 == 0 {
            let n = data.len().min(out.len());
            out[..n].copy_from_slice(&data[..n]);
            n
        } else {
            chunk(data, out).map_err(|e| format!("chunk at byte {sp}: {e}"))?
        };
        out[n..].fill(0);
        rest = next;
    }
    for out in outs {
        out.fill(0);
    }
    Ok(())
}

/// One compressed chunk into `out` (at most 4096 bytes); returns the bytes produced.
fn chunk(data: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut src = data;
    // Bytes produced: at most out.len(), so the increments below cannot saturate.
    let mut dp = 0usize;
    while let Some((&flags, rest)) = src.split_first() {
        src = rest;
        for bit in 0..8 {
            if flags & (1 << bit) == 0 {
                let Some((&b, rest)) = src.split_first() else {
                    return Ok(dp);
                };
                *out.get_mut(dp).ok_or("literal past the chunk")? = b;
                dp = dp.saturating_add(1);
                src = rest;
            } else {
                if src.is_empty() {
                    return Ok(dp);
                }
                let (t, rest) = src
                    .split_first_chunk::<2>()
                    .ok_or("back-reference cut short")?;
                let t = u16::from_le_bytes(*t);
                src = rest;
                let p = dp
                    .checked_sub(1)
                    .ok_or("back-reference at the start of a chunk")?;
                // The displacement takes as many bits as needed to reach back to the start
                // of the chunk (at least 4), the length the rest: p < 4096 has at most 12.
                let shift =
                    16u32.saturating_sub(usize::BITS.saturating_sub(p.leading_zeros()).max(4));
                // Both from 16-bit fields: no saturation.
                let len = usize::from(t & !(u16::MAX << shift)).saturating_add(3);
                let disp = usize::from(t >> shift).saturating_add(1);
                let from = dp
                    .checked_sub(disp)
                    .ok_or_else(|| format!("back-reference {disp} bytes before byte {dp}"))?;
                let end = dp
                    .checked_add(len)
                    .filter(|&e| e <= out.len())
                    .ok_or_else(|| {
                        format!("back-reference of {len} bytes at {dp} past the chunk")
                    })?;
                copy_match(out, from, dp, len);
                dp = end;
            }
        }
    }
    Ok(dp)
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_reference() {
        // "abc" then a reference of length 9 at displacement 3: "abcabcabcabc".
        // At position 3 the displacement takes 4 bits: token = (disp-1) << 12 | (len-3).
        let token: u16 = (2 << 12) | 6;
        let mut c = vec![0b0000_1000u8, b'a', b'b', b'c'];
        c.extend_from_slice(&token.to_le_bytes());
        let mut src = Vec::new();
        // OK: a short chunk.
        src.extend_from_slice(&(0xb000u16 | (c.len() as u16 - 1)).to_le_bytes());
        src.extend_from_slice(&c);
        src.extend_from_slice(&[0, 0]);
        let mut out = vec![0xffu8; 8192];
        decompress(&src, &mut out).unwrap();
        assert_eq!(&out[..12], b"abcabcabcabc");
        assert!(out[12..].iter().all(|&b| b == 0));
        // A reference before the start is damage, not a panic.
        let bad = [0x03, 0xb0, 0x01, 0x00, 0x10];
        assert!(decompress(&bad, &mut out).is_err());
    }
}
