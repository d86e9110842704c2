//! XPRESS Huffman ([MS-XCA] 2.1-2.2), the compression of WOF ("CompactOS") files with the
//! XPRESS4K/8K/16K algorithms: each block of up to 64 KiB of output starts with 256 bytes
//! holding 512 four-bit code lengths (256 literals, 256 match headers); a canonical Huffman
//! code decodes a bit stream read in 16-bit little-endian words, with long match lengths in
//! bytes taken from the input between the words.

/// Longest code ([MS-XCA] 2.2.2).
const MAX_CODE_LEN: u32 = 15;
/// Output bytes one Huffman table serves.
const BLOCK: usize = 65536;

struct Input<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    /// A 16-bit word; zeros past the end (the last words of a stream may be read ahead).
    fn word(&mut self) -> u32 {
        let v = match self.b.get(self.pos..self.pos + 2) {
            Some(s) => u32::from(u16::from_le_bytes([s[0], s[1]])),
            None => 0,
        };
        self.pos += 2;
        v
    }

    fn byte(&mut self) -> Result<u32, String> {
        let v = *self.b.get(self.pos).ok_or("length byte past the end")?;
        self.pos += 1;
        Ok(u32::from(v))
    }
}

/// Decompresses `src` into all of `dst` (its size is the chunk's uncompressed size).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut inp = Input { b: src, pos: 0 };
    let mut out = 0usize;
    while out < dst.len() {
        let table = src
            .get(inp.pos..inp.pos + 256)
            .ok_or_else(|| format!("Huffman table at byte {} past the end", inp.pos))?;
        let mut lens = [0u8; 512];
        for (i, &b) in table.iter().enumerate() {
            lens[2 * i] = b & 0x0f;
            lens[2 * i + 1] = b >> 4;
        }
        let decode = build(&lens)?;
        inp.pos += 256;
        let mut bits: u32 = (inp.word() << 16) | inp.word();
        let mut extra: i32 = 16;
        let end = (out + BLOCK).min(dst.len());
        while out < end {
            let sym = decode[(bits >> (32 - MAX_CODE_LEN)) as usize];
            if sym == u16::MAX {
                return Err(format!("bits {:#x} match no code", bits >> 17));
            }
            let len = u32::from(lens[usize::from(sym)]);
            bits <<= len;
            extra -= len as i32;
            if extra < 0 {
                bits |= inp.word() << (-extra) as u32;
                extra += 16;
            }
            if sym < 256 {
                // OK: a literal symbol is a byte value.
                dst[out] = sym as u8;
                out += 1;
                continue;
            }
            let sym = u32::from(sym) - 256;
            let mut mlen = sym & 15;
            let obits = sym >> 4;
            if mlen == 15 {
                mlen = inp.byte()?;
                if mlen == 255 {
                    let lo = inp.byte()?;
                    let hi = inp.byte()?;
                    mlen = lo | (hi << 8);
                    if mlen == 0 {
                        let mut v = 0u32;
                        for k in 0..4 {
                            v |= inp.byte()? << (8 * k);
                        }
                        mlen = v;
                    }
                    if mlen < 15 {
                        return Err(format!("match length {mlen} in its long form"));
                    }
                    mlen -= 15;
                }
                mlen += 15;
            }
            let mlen = mlen as usize + 3;
            let offset = if obits == 0 {
                1
            } else {
                ((bits >> (32 - obits)) | (1 << obits)) as usize
            };
            if obits > 0 {
                bits <<= obits;
                extra -= obits as i32;
                if extra < 0 {
                    bits |= inp.word() << (-extra) as u32;
                    extra += 16;
                }
            }
            if offset > out {
                return Err(format!("match {offset} bytes back at output byte {out}"));
            }
            let n = mlen.min(dst.len() - out);
            for k in 0..n {
                dst[out + k] = dst[out + k - offset];
            }
            out += n;
        }
    }
    Ok(())
}

/// The decoding table: the symbol of each 15-bit prefix (u16::MAX where no code matches).
fn build(lens: &[u8; 512]) -> Result<Vec<u16>, String> {
    let mut table = vec![u16::MAX; 1 << MAX_CODE_LEN];
    let mut code: u32 = 0;
    let mut any = false;
    for len in 1..=MAX_CODE_LEN {
        for (sym, &l) in lens.iter().enumerate() {
            if u32::from(l) != len {
                continue;
            }
            any = true;
            let span = 1u32 << (MAX_CODE_LEN - len);
            let start = code * span;
            if start + span > 1 << MAX_CODE_LEN {
                return Err("code lengths oversubscribe the code space".into());
            }
            // OK: sym < 512.
            table[start as usize..(start + span) as usize].fill(sym as u16);
            code += 1;
        }
        code <<= 1;
    }
    if !any {
        return Err("a Huffman table with no codes".into());
    }
    Ok(table)
}
