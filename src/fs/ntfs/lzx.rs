//! LZX as WOF stores it (`compact /exe:lzx`): every 32 KiB chunk is a stream of its own in the
//! WIM variant of LZX (Microsoft's LZX format description, with the differences wimlib
//! documents for WIM and WOF): a 32 KiB window, so 30 offset slots and a main alphabet of
//! 256 + 30 × 8 symbols; no header before the first block; a block size of one bit (32768)
//! or 1 + 16 bits; the repeat offsets and the code lengths start afresh with each chunk; and
//! E8 call translation always on, with a translation size of 12,000,000.
//!
//! The bit stream is read in 16-bit little-endian words, most significant bit first. Each
//! block is verbatim, aligned-offset (the low three bits of long offsets have a code of their
//! own) or uncompressed (bytes after a 16-bit alignment).

/// Literals, then 8 length headers for each offset slot.
const NUM_CHARS: usize = 256;
/// Offset slots of a 32 KiB window (the last one, 29, starts at 24576 with 13 extra bits).
const OFFSET_SLOTS: usize = 30;
const MAIN_SYMS: usize = NUM_CHARS + 8 * OFFSET_SLOTS;
/// The length code: lengths beyond the 7 a main symbol's header holds.
const LEN_SYMS: usize = 249;
/// The pre-code that transmits code lengths, 4 bits per length.
const PRE_SYMS: usize = 20;
/// The aligned-offset code, 3 bits per length.
const ALIGNED_SYMS: usize = 8;
/// Longest codeword of the main and length codes.
const MAX_CODE_LEN: u32 = 16;
const MIN_MATCH: usize = 2;
/// Block size when the "default size" bit is set.
const DEFAULT_BLOCK: usize = 32768;
/// The "file size" E8 translation works against in WIM/WOF (there is no header to give one).
const E8_SIZE: i64 = 12_000_000;

const VERBATIM: u32 = 1;
const ALIGNED: u32 = 2;
const UNCOMPRESSED: u32 = 3;

/// Extra bits of offset slot `s`: 0 for slots 0-3, then one more every two slots.
const fn footer_bits(s: usize) -> u32 {
    if s < 4 {
        0
    } else {
        (s / 2 - 1) as u32
    }
}

/// The first formatted offset of each slot.
const fn slot_bases() -> [u32; OFFSET_SLOTS] {
    let mut b = [0u32; OFFSET_SLOTS];
    let mut s = 1;
    while s < OFFSET_SLOTS {
        b[s] = b[s - 1] + (1 << footer_bits(s - 1));
        s += 1;
    }
    b
}
const SLOT_BASE: [u32; OFFSET_SLOTS] = slot_bases();

/// 16-bit words, most significant bit first, zeros past the end (a stream's last code may be
/// read ahead); `pos` counts the bytes taken so that an uncompressed block knows its start.
struct Bits<'a> {
    src: &'a [u8],
    pos: usize,
    /// Unread bits, left-aligned.
    buf: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(src: &'a [u8]) -> Self {
        Bits {
            src,
            pos: 0,
            buf: 0,
            n: 0,
        }
    }

    /// At least `k` (≤ 32) bits in the buffer.
    fn ensure(&mut self, k: u32) {
        while self.n < k {
            let w = match self.src.get(self.pos..self.pos + 2) {
                Some(s) => u64::from(u16::from_le_bytes([s[0], s[1]])),
                None => 0,
            };
            self.pos += 2;
            self.buf |= w << (48 - self.n);
            self.n += 16;
        }
    }

    fn peek(&mut self, k: u32) -> u32 {
        self.ensure(k);
        // OK: k ≤ 32, so the shifted value fits.
        (self.buf >> (64 - k)) as u32
    }

    fn skip(&mut self, k: u32) {
        self.buf <<= k;
        self.n -= k;
    }

    fn read(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        let v = self.peek(k);
        self.skip(k);
        v
    }

    /// Bits taken so far (words read ahead into the buffer not counted).
    fn consumed(&self) -> usize {
        self.pos * 8 - self.n as usize
    }

    /// Moves to the next 16-bit boundary, skipping a whole word when already on one (an
    /// uncompressed block's header is followed by 1 to 16 bits of padding), and returns the
    /// byte position there; the buffer is then empty.
    fn align(&mut self) -> usize {
        let aligned = (self.consumed() / 16 + 1) * 16;
        self.buf = 0;
        self.n = 0;
        self.pos = aligned / 8;
        self.pos
    }
}

/// A canonical Huffman code as one table indexed by the next `bits` bits of input: each
/// entry is symbol << 5 | length, or `INVALID` where no codeword starts with those bits.
struct Code {
    table: Vec<u16>,
    bits: u32,
}

const INVALID: u16 = u16::MAX;

impl Code {
    /// The code with these lengths (0 = unused symbol). An over-full code is an error; an
    /// incomplete one is allowed (an unused length code is all zeros), and its missing
    /// codewords fail when met.
    fn new(lens: &[u8], what: &str) -> Result<Code, String> {
        let bits = lens.iter().map(|&l| u32::from(l)).max().unwrap_or(0);
        let mut table = vec![INVALID; 1 << bits];
        let mut next = 0u32;
        for len in 1..=bits {
            for (sym, _) in lens
                .iter()
                .enumerate()
                .filter(|(_, &l)| u32::from(l) == len)
            {
                let span = 1u32 << (bits - len);
                let start = next;
                next += span;
                if next > 1 << bits {
                    return Err(format!("{what} code lengths are over-subscribed"));
                }
                // OK: sym < 512 and len ≤ 16 fit in 16 bits together.
                let entry = ((sym as u16) << 5) | len as u16;
                table[start as usize..next as usize].fill(entry);
            }
        }
        Ok(Code { table, bits })
    }

    fn decode(&self, b: &mut Bits, what: &str) -> Result<usize, String> {
        if self.bits == 0 {
            return Err(format!("a {what} symbol where the {what} code is empty"));
        }
        let e = self.table[b.peek(self.bits) as usize];
        if e == INVALID {
            return Err(format!("bits that are no {what} codeword"));
        }
        b.skip(u32::from(e & 31));
        Ok(usize::from(e >> 5))
    }
}

/// Reads code lengths for `lens` as deltas from their values before (a pre-code of 20
/// symbols: 0-16 a delta, 17 and 18 runs of zeros, 19 a run of one delta).
fn read_lens(b: &mut Bits, lens: &mut [u8]) -> Result<(), String> {
    let mut pre = [0u8; PRE_SYMS];
    for p in &mut pre {
        // OK: 4 bits.
        *p = b.read(4) as u8;
    }
    let pre = Code::new(&pre, "pre-tree")?;
    let delta = |old: u8, s: usize| -> u8 {
        // OK: s ≤ 16 and old ≤ 16, so the value is in 0..17.
        ((usize::from(old) + 17 - s) % 17) as u8
    };
    let mut i = 0;
    while i < lens.len() {
        let s = pre.decode(b, "pre-tree")?;
        let (run, value) = match s {
            0..=16 => (1, delta(lens[i], s)),
            17 => (4 + b.read(4) as usize, 0),
            18 => (20 + b.read(5) as usize, 0),
            _ => {
                let run = 4 + b.read(1) as usize;
                let s = pre.decode(b, "pre-tree")?;
                if s > 16 {
                    return Err(format!("pre-tree symbol {s} inside a run"));
                }
                (run, delta(lens[i], s))
            }
        };
        let end = (i + run).min(lens.len());
        lens[i..end].fill(value);
        i = end;
    }
    Ok(())
}

/// Decompresses one chunk `src` into all of `dst` (the chunk's uncompressed size, at most
/// 32 KiB).
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut b = Bits::new(src);
    let mut main_lens = [0u8; MAIN_SYMS];
    let mut len_lens = [0u8; LEN_SYMS];
    let mut recent = [1usize; 3];
    let mut out = 0usize;
    while out < dst.len() {
        let kind = b.read(3);
        let size = if b.read(1) == 1 {
            DEFAULT_BLOCK
        } else {
            b.read(16) as usize
        };
        let end = out.saturating_add(size).min(dst.len());
        match kind {
            VERBATIM | ALIGNED => {
                let aligned = if kind == ALIGNED {
                    let mut l = [0u8; ALIGNED_SYMS];
                    for x in &mut l {
                        // OK: 3 bits.
                        *x = b.read(3) as u8;
                    }
                    Some(Code::new(&l, "aligned offset")?)
                } else {
                    None
                };
                read_lens(&mut b, &mut main_lens[..NUM_CHARS])?;
                read_lens(&mut b, &mut main_lens[NUM_CHARS..])?;
                read_lens(&mut b, &mut len_lens)?;
                if main_lens.iter().any(|&l| u32::from(l) > MAX_CODE_LEN) {
                    return Err("main code length over 16".into());
                }
                let main = Code::new(&main_lens, "main")?;
                let lengths = Code::new(&len_lens, "length")?;
                while out < end {
                    let sym = main.decode(&mut b, "main")?;
                    if sym < NUM_CHARS {
                        // OK: sym < 256.
                        dst[out] = sym as u8;
                        out += 1;
                        continue;
                    }
                    let header = (sym - NUM_CHARS) & 7;
                    let slot = (sym - NUM_CHARS) >> 3;
                    let mut len = header + MIN_MATCH;
                    if header == 7 {
                        len += lengths.decode(&mut b, "length")?;
                    }
                    let off = match slot {
                        0 => recent[0],
                        1 => {
                            recent.swap(0, 1);
                            recent[0]
                        }
                        2 => {
                            recent.swap(0, 2);
                            recent[0]
                        }
                        _ => {
                            let fb = footer_bits(slot);
                            let extra = match &aligned {
                                Some(a) if fb >= 3 => {
                                    let high = b.read(fb - 3) << 3;
                                    // OK: an aligned symbol is < 8.
                                    high + a.decode(&mut b, "aligned offset")? as u32
                                }
                                _ => b.read(fb),
                            };
                            // Formatted offsets count the three repeat slots: offset 1 is 3.
                            let o = (SLOT_BASE[slot] + extra - 2) as usize;
                            recent = [o, recent[0], recent[1]];
                            o
                        }
                    };
                    if off == 0 || off > out {
                        return Err(format!(
                            "a match {off} bytes back at byte {out} of the chunk"
                        ));
                    }
                    if len > dst.len() - out {
                        return Err(format!(
                            "a match of {len} bytes at byte {out} runs past the chunk's {} bytes",
                            dst.len()
                        ));
                    }
                    // Byte by byte: a match may overlap what it writes (a run).
                    for k in out..out + len {
                        dst[k] = dst[k - off];
                    }
                    out += len;
                }
            }
            UNCOMPRESSED => {
                let at = b.align();
                let r = src.get(at..at + 12).ok_or_else(|| {
                    format!("uncompressed block header at byte {at} past the end")
                })?;
                for (k, v) in recent.iter_mut().enumerate() {
                    let x =
                        u32::from_le_bytes([r[4 * k], r[4 * k + 1], r[4 * k + 2], r[4 * k + 3]]);
                    *v = x as usize;
                }
                let data = at + 12;
                let n = end - out;
                let bytes = src.get(data..data + n).ok_or_else(|| {
                    format!("uncompressed block of {n} bytes at {data} past the end")
                })?;
                dst[out..end].copy_from_slice(bytes);
                out = end;
                // The stream resumes on a 16-bit boundary; a chunk may end without the pad
                // byte after an odd-sized last block.
                b.pos = (data + n + (n & 1)).min(src.len());
            }
            k => return Err(format!("block type {k}")),
        }
    }
    // Zeros stand in for words past the end, and zeros decode: a cut stream would otherwise
    // end in made-up bytes.
    if b.consumed() > src.len() * 8 {
        return Err(format!(
            "the chunk's {} bytes end before its {} bytes of output",
            src.len(),
            dst.len()
        ));
    }
    undo_e8(dst);
    Ok(())
}

/// Undoes the compressor's E8 preprocessing: the 32-bit operand after each 0xE8 byte (an x86
/// CALL) was turned from relative into absolute; the last 10 bytes are never translated.
fn undo_e8(d: &mut [u8]) {
    if d.len() <= 10 {
        return;
    }
    let mut i = 0;
    while i < d.len() - 10 {
        if d[i] != 0xe8 {
            i += 1;
            continue;
        }
        let abs = i64::from(i32::from_le_bytes([d[i + 1], d[i + 2], d[i + 3], d[i + 4]]));
        // OK: i < 32 KiB.
        let pos = i as i64;
        if abs >= -pos && abs < E8_SIZE {
            let rel = if abs >= 0 { abs - pos } else { abs + E8_SIZE };
            // OK: the value is within i32's range by the bounds above.
            d[i + 1..i + 5].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        i += 5;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_a_32k_window() {
        assert_eq!(SLOT_BASE[4], 4);
        assert_eq!(SLOT_BASE[8], 16);
        assert_eq!(SLOT_BASE[29], 24576);
        assert_eq!(SLOT_BASE[29] + (1 << footer_bits(29)) - 2, 32766);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut dst = vec![0u8; 32768];
        for round in 0..2000 {
            let n = round % 300;
            let src: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decompress(&src, &mut dst[..1 + round * 16 % 32768]);
        }
    }

    /// An uncompressed block: type 3, the default-size bit clear, a 16-bit size, padding to
    /// the word, the repeat offsets, then the bytes.
    #[test]
    fn uncompressed_block() {
        let data = b"hello, uncompressed LZX block!!";
        // 3 + 1 + 16 bits: 011 0 then the size; then pad to 32 bits.
        let bits: u32 = (3 << 29) | ((data.len() as u32) << 12);
        let mut src = Vec::new();
        src.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
        src.extend_from_slice(&(bits as u16).to_le_bytes());
        for r in [1u32, 1, 1] {
            src.extend_from_slice(&r.to_le_bytes());
        }
        src.extend_from_slice(data);
        let mut dst = vec![0u8; data.len()];
        decompress(&src, &mut dst).unwrap();
        assert_eq!(&dst, data);
    }
}
