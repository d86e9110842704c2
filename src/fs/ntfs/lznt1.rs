//! LZNT1, the compression of NTFS compressed attributes ([MS-XCA] 2.5): a compression unit
//! (16 clusters) is a sequence of chunks, each a 16-bit header (bit 15: compressed, low 12
//! bits: bytes that follow minus one) and up to 4096 bytes of output: literals and
//! back-references whose split of length and displacement bits depends on the position in
//! the chunk. A chunk that produces fewer than 4096 bytes is followed by zeros, as is
//! everything after the terminating zero header (ntfs-3g's ntfs_decompress does the same).

/// Output bytes of one chunk.
pub const CHUNK: usize = 4096;

/// Decompresses `src` into all of `dst` (a compression unit, a multiple of 4096 bytes).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    while dp < dst.len() {
        let Some(h) = src.get(sp..sp + 2) else {
            break;
        };
        let h = u16::from_le_bytes([h[0], h[1]]);
        if h == 0 {
            break;
        }
        let len = usize::from(h & 0x0fff) + 1;
        let data = src
            .get(sp + 2..sp + 2 + len)
            .ok_or_else(|| format!("chunk at byte {sp}: {len} bytes past the end"))?;
        let end = (dp + CHUNK).min(dst.len());
        let out = &mut dst[dp..end];
        if h & 0x8000 == 0 {
            let n = data.len().min(out.len());
            out[..n].copy_from_slice(&data[..n]);
            out[n..].fill(0);
        } else {
            let n = chunk(data, out).map_err(|e| format!("chunk at byte {sp}: {e}"))?;
            out[n..].fill(0);
        }
        sp += 2 + len;
        dp = end;
    }
    dst[dp..].fill(0);
    Ok(())
}

/// One compressed chunk into `out` (at most 4096 bytes); returns the bytes produced.
fn chunk(data: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    while sp < data.len() {
        let flags = data[sp];
        sp += 1;
        for bit in 0..8 {
            if sp >= data.len() {
                return Ok(dp);
            }
            if flags & (1 << bit) == 0 {
                if dp >= out.len() {
                    return Err("literal past the chunk".into());
                }
                out[dp] = data[sp];
                dp += 1;
                sp += 1;
            } else {
                let t = data.get(sp..sp + 2).ok_or("back-reference cut short")?;
                let t = u16::from_le_bytes([t[0], t[1]]);
                sp += 2;
                if dp == 0 {
                    return Err("back-reference at the start of a chunk".into());
                }
                // The displacement takes as many bits as needed to reach back to the start
                // of the chunk (at least 4), the length the rest.
                let mut shift = 12u32;
                let mut p = dp - 1;
                while p >= 0x10 {
                    p >>= 1;
                    shift -= 1;
                }
                let len = usize::from(t & ((1u16 << shift) - 1)) + 3;
                let disp = usize::from(t >> shift) + 1;
                if disp > dp {
                    return Err(format!("back-reference {disp} bytes before byte {dp}"));
                }
                if dp + len > out.len() {
                    return Err(format!(
                        "back-reference of {len} bytes at {dp} past the chunk"
                    ));
                }
                for i in 0..len {
                    out[dp + i] = out[dp + i - disp];
                }
                dp += len;
            }
        }
    }
    Ok(dp)
}

#[cfg(test)]
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
