//! XPRESS Huffman ([MS-XCA] 2.1-2.2), the compression of WOF ("CompactOS") files with the
//! XPRESS4K/8K/16K algorithms: each block of up to 64 KiB of output starts with 256 bytes
//! holding 512 four-bit code lengths (256 literals, 256 match headers); a canonical Huffman
//! code decodes a bit stream read in 16-bit little-endian words, with long match lengths in
//! bytes taken from the input between the words.

use super::lz77::copy_match;

/// Longest code ([MS-XCA] 2.2.2).
const MAX_CODE_LEN: u32 = 15;
/// Output bytes one Huffman table serves.
const BLOCK: usize = 65536;

/// The input: 16-bit words feeding a 32-bit window of bits, and bytes between them.
struct Input<'a> {
    rest: &'a [u8],
    /// The next bits, most significant first.
    bits: u32,
    /// Bits of the window past its top 16 that are already filled: 0..=16.
    extra: u32,
}

impl Input<'_> {
    /// A 16-bit word; zeros past the end (the last words of a stream may be read ahead).
    fn word(&mut self) -> u32 {
        match self.rest.split_first_chunk::<2>() {
            Some((w, rest)) => {
                self.rest = rest;
                u32::from(u16::from_le_bytes(*w))
            }
            None => {
                self.rest = &[];
                0
            }
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        let (&v, rest) = self.rest.split_first().ok_or("length byte past the end")?;
        self.rest = rest;
        Ok(v)
    }

    /// Fills the window with the next two words (at the start of a block).
    fn fill(&mut self) {
        self.bits = (self.word() << 16) | self.word();
        self.extra = 16;
    }

    /// Drops the top `n` (at most 16) bits of the window, refilling it from the next word.
    fn consume(&mut self, n: u32) {
        self.bits <<= n;
        match self.extra.checked_sub(n) {
            Some(e) => self.extra = e,
            None => {
                // n > extra: the next word goes below the `n - extra` bits still missing.
                let missing = n.saturating_sub(self.extra);
                self.bits |= self.word() << missing;
                self.extra = 16u32.saturating_sub(missing);
            }
        }
    }
}

/// Decompresses `src` into all of `dst` (its size is the chunk's uncompressed size).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut inp = Input {
        rest: src,
        bits: 0,
        extra: 0,
    };
    let mut out = 0usize;
    while out < dst.len() {
        let (table, rest) = inp.rest.split_at_checked(256).ok_or_else(|| {
            let at = src.len().saturating_sub(inp.rest.len());
            format!("Huffman table at byte {at} past the end")
        })?;
        let mut lens = [0u8; 512];
        for (pair, &b) in lens.chunks_exact_mut(2).zip(table) {
            pair[0] = b & 0x0f;
            pair[1] = b >> 4;
        }
        let decode = build(&lens)?;
        inp.rest = rest;
        inp.fill();
        // out < dst.len(): no saturation.
        let end = out.saturating_add(BLOCK).min(dst.len());
        while out < end {
            let top = usize::try_from(inp.bits >> (32 - MAX_CODE_LEN)).unwrap_or(usize::MAX);
            let sym = decode.get(top).copied().unwrap_or(u16::MAX);
            if sym == u16::MAX {
                return Err(format!("bits {:#x} match no code", inp.bits >> 17));
            }
            inp.consume(u32::from(lens[usize::from(sym)]));
            if let Ok(literal) = u8::try_from(sym) {
                dst[out] = literal;
                // Below end: no saturation.
                out = out.saturating_add(1);
                continue;
            }
            // A match header, 256..512: its low byte.
            let sym = u32::from(sym & 0xff);
            let mut mlen = sym & 15;
            let obits = sym >> 4;
            if mlen == 15 {
                let b = inp.byte()?;
                mlen = if b == 255 {
                    let mut long = u32::from(u16::from_le_bytes([inp.byte()?, inp.byte()?]));
                    if long == 0 {
                        long = u32::from_le_bytes([
                            inp.byte()?,
                            inp.byte()?,
                            inp.byte()?,
                            inp.byte()?,
                        ]);
                    }
                    if long < 15 {
                        return Err(format!("match length {long} in its long form"));
                    }
                    long
                } else {
                    // At most 254 + 15: no saturation.
                    u32::from(b).saturating_add(15)
                };
            }
            // At most 2^32 + 2 on a 64-bit usize: no saturation.
            let mlen = usize::try_from(mlen)
                .unwrap_or(usize::MAX)
                .saturating_add(3);
            // The offset's top bit is implied; the window's top `obits` (< 16) bits follow.
            let offset = if obits == 0 {
                1
            } else {
                (inp.bits.rotate_left(obits) & !(u32::MAX << obits)) | (1 << obits)
            };
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            inp.consume(obits);
            let from = out
                .checked_sub(offset)
                .ok_or_else(|| format!("match {offset} bytes back at output byte {out}"))?;
            let n = mlen.min(dst.len().saturating_sub(out));
            copy_match(dst, from, out, n);
            // At most dst.len(): no saturation.
            out = out.saturating_add(n);
        }
    }
    Ok(())
}

/// The decoding table: the symbol of each 15-bit prefix (u16::MAX where no code matches).
fn build(lens: &[u8; 512]) -> Result<Vec<u16>, String> {
    const SPACE: usize = 1 << MAX_CODE_LEN;
    let mut table = vec![u16::MAX; SPACE];
    // Codes of the current length so far: code × span stays within SPACE (checked below), so
    // the count stays below 2^16.
    let mut code = 0usize;
    let mut any = false;
    for len in 1..=MAX_CODE_LEN {
        let span = SPACE >> len;
        for (sym, &l) in (0u16..).zip(lens) {
            if u32::from(l) != len {
                continue;
            }
            any = true;
            code.checked_mul(span)
                .and_then(|start| table.get_mut(start..start.checked_add(span)?))
                .ok_or("code lengths oversubscribe the code space")?
                .fill(sym);
            code = code.saturating_add(1);
        }
        code <<= 1;
    }
    if !any {
        return Err("a Huffman table with no codes".into());
    }
    Ok(table)
}
