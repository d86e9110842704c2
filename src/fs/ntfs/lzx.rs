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

use super::lz77::copy_match;

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

/// Extra bits of each offset slot: 0 for slots 0-3, then one more every two slots.
const FOOTER_BITS: [u32; OFFSET_SLOTS] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The first formatted offset of each slot: each slot's base follows the last one's range.
const SLOT_BASE: [u32; OFFSET_SLOTS] = [
    0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
    2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576,
];

/// 16-bit words, most significant bit first, zeros past the end (a stream's last code may be
/// read ahead); `pos` counts the bytes taken so that an uncompressed block knows its start.
struct Bits<'a> {
    src: &'a [u8],
    pos: usize,
    /// Unread bits, left-aligned.
    buf: u64,
    n: u32,
}

// Bit counts: `n` < 48 and `k` <= 32, so no sum, difference or shift leaves 0..=64; `pos`
// grows by a word for each 16 bits decoded from a chunk held in memory.
#[allow(clippy::arithmetic_side_effects)]
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
            let w = match self.src.get(self.pos..).and_then(|r| r.first_chunk::<2>()) {
                Some(&s) => u64::from(u16::from_le_bytes(s)),
                None => 0,
            };
            self.pos += 2;
            self.buf |= w << (48 - self.n);
            self.n += 16;
        }
    }

    fn peek(&mut self, k: u32) -> u32 {
        self.ensure(k);
        // The top k ≤ 32 bits of the buffer: its top 32 shifted down.
        let top = u32::try_from(self.buf >> 32).unwrap_or(0);
        top >> (32 - k)
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

    /// `k` ≤ 8 bits.
    fn byte(&mut self, k: u32) -> u8 {
        let [.., v] = self.read(k.min(8)).to_be_bytes();
        v
    }

    /// Bits taken so far (words read ahead into the buffer not counted).
    fn consumed(&self) -> usize {
        self.pos * 8 - usize::try_from(self.n).unwrap_or(0)
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
    /// The code with these lengths (0 = unused symbol; at most 16, and at most 2048
    /// symbols). An over-full code is an error; an incomplete one is allowed (an unused
    /// length code is all zeros), and its missing codewords fail when met.
    fn new(lens: &[u8], what: &str) -> Result<Code, String> {
        let bits = lens.iter().copied().max().unwrap_or(0);
        if u32::from(bits) > MAX_CODE_LEN {
            return Err(format!("{what} code length over 16"));
        }
        let mut table = vec![INVALID; 1 << bits];
        let mut next = 0usize;
        for len in 1..=bits {
            let span = table.len() >> len;
            for (sym, _) in (0u16..).zip(lens).filter(|&(_, &l)| l == len) {
                let start = next;
                // At most table.len() + span before the check below fails: no saturation.
                next = next.saturating_add(span);
                table
                    .get_mut(start..next)
                    .ok_or_else(|| format!("{what} code lengths are over-subscribed"))?
                    .fill((sym << 5) | u16::from(len));
            }
        }
        Ok(Code {
            table,
            bits: u32::from(bits),
        })
    }

    fn decode(&self, b: &mut Bits, what: &str) -> Result<u16, String> {
        if self.bits == 0 {
            return Err(format!("a {what} symbol where the {what} code is empty"));
        }
        let at = usize::try_from(b.peek(self.bits)).unwrap_or(usize::MAX);
        let e = self.table.get(at).copied().unwrap_or(INVALID);
        if e == INVALID {
            return Err(format!("bits that are no {what} codeword"));
        }
        b.skip(u32::from(e & 31));
        Ok(e >> 5)
    }
}

/// Reads code lengths for `lens` as deltas from their values before (a pre-code of 20
/// symbols: 0-16 a delta, 17 and 18 runs of zeros, 19 a run of one delta).
fn read_lens(b: &mut Bits, lens: &mut [u8]) -> Result<(), String> {
    let mut pre = [0u8; PRE_SYMS];
    for p in &mut pre {
        *p = b.byte(4);
    }
    let pre = Code::new(&pre, "pre-tree")?;
    // (old - s) mod 17, for old and s in 0..=16: no saturation.
    let delta = |old: u8, s: u16| -> u8 {
        let s = u8::try_from(s).unwrap_or(0);
        old.checked_sub(s)
            .unwrap_or_else(|| 17u8.saturating_sub(s).saturating_add(old))
    };
    let mut rest = lens;
    while let Some(&old) = rest.first() {
        let s = pre.decode(b, "pre-tree")?;
        // Runs of at most 20 + 31: no saturation.
        let (run, value) = match s {
            0..=16 => (1, delta(old, s)),
            17 => (usize::from(b.byte(4)).saturating_add(4), 0),
            18 => (usize::from(b.byte(5)).saturating_add(20), 0),
            _ => {
                let run = usize::from(b.byte(1)).saturating_add(4);
                let s = pre.decode(b, "pre-tree")?;
                if s > 16 {
                    return Err(format!("pre-tree symbol {s} inside a run"));
                }
                (run, delta(old, s))
            }
        };
        let n = run.min(rest.len());
        let (done, next) = std::mem::take(&mut rest).split_at_mut(n);
        done.fill(value);
        rest = next;
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
            usize::try_from(b.read(16)).unwrap_or(usize::MAX)
        };
        let end = out.saturating_add(size).min(dst.len());
        match kind {
            VERBATIM | ALIGNED => {
                let aligned = if kind == ALIGNED {
                    let mut l = [0u8; ALIGNED_SYMS];
                    for x in &mut l {
                        *x = b.byte(3);
                    }
                    Some(Code::new(&l, "aligned offset")?)
                } else {
                    None
                };
                read_lens(&mut b, &mut main_lens[..NUM_CHARS])?;
                read_lens(&mut b, &mut main_lens[NUM_CHARS..])?;
                read_lens(&mut b, &mut len_lens)?;
                let main = Code::new(&main_lens, "main")?;
                let lengths = Code::new(&len_lens, "length")?;
                // Lengths, offsets and positions below are bounded by the chunk (32 KiB) or
                // by the code's symbols (< 2^11): no saturation.
                while out < end {
                    let sym = main.decode(&mut b, "main")?;
                    let Some(m) = sym.checked_sub(256) else {
                        let [.., literal] = sym.to_be_bytes();
                        dst[out] = literal;
                        out = out.saturating_add(1);
                        continue;
                    };
                    let header = usize::from(m & 7);
                    let slot = usize::from(m >> 3);
                    let mut len = header.saturating_add(MIN_MATCH);
                    if header == 7 {
                        len = len.saturating_add(usize::from(lengths.decode(&mut b, "length")?));
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
                            let fb = FOOTER_BITS[slot];
                            let extra = match &aligned {
                                // The low three bits have the aligned code.
                                Some(a) if fb >= 3 => {
                                    let high = b.read(fb.saturating_sub(3)) << 3;
                                    high | u32::from(a.decode(&mut b, "aligned offset")?)
                                }
                                _ => b.read(fb),
                            };
                            // Formatted offsets count the three repeat slots: offset 1 is 3.
                            let o = SLOT_BASE[slot].saturating_add(extra).saturating_sub(2);
                            let o = usize::try_from(o).unwrap_or(usize::MAX);
                            recent = [o, recent[0], recent[1]];
                            o
                        }
                    };
                    let Some(from) = out.checked_sub(off).filter(|_| off != 0) else {
                        return Err(format!(
                            "a match {off} bytes back at byte {out} of the chunk"
                        ));
                    };
                    if len > dst.len().saturating_sub(out) {
                        return Err(format!(
                            "a match of {len} bytes at byte {out} runs past the chunk's {} bytes",
                            dst.len()
                        ));
                    }
                    copy_match(dst, from, out, len);
                    out = out.saturating_add(len);
                }
            }
            UNCOMPRESSED => {
                let at = b.align();
                let (r, rest) = src
                    .get(at..)
                    .and_then(|r| r.split_first_chunk::<12>())
                    .ok_or_else(|| {
                        format!("uncompressed block header at byte {at} past the end")
                    })?;
                for (v, x) in recent.iter_mut().zip(r.chunks_exact(4)) {
                    *v = usize::try_from(crate::bytes::le32(x, 0)).unwrap_or(usize::MAX);
                }
                // Positions inside `src`, sizes inside `dst`: no saturation.
                let data = at.saturating_add(12);
                let n = end.saturating_sub(out);
                let bytes = rest.get(..n).ok_or_else(|| {
                    format!("uncompressed block of {n} bytes at {data} past the end")
                })?;
                dst[out..end].copy_from_slice(bytes);
                out = end;
                // The stream resumes on a 16-bit boundary; a chunk may end without the pad
                // byte after an odd-sized last block.
                b.pos = data.saturating_add(n).saturating_add(n & 1).min(src.len());
            }
            k => return Err(format!("block type {k}")),
        }
    }
    // Zeros stand in for words past the end, and zeros decode: a cut stream would otherwise
    // end in made-up bytes. (Bits of a chunk in memory: no saturation.)
    if b.consumed() > src.len().saturating_mul(8) {
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
    let Some(limit) = d.len().checked_sub(10) else {
        return;
    };
    let mut i = 0usize;
    while let Some(k) = d
        .get(i..limit)
        .and_then(|r| r.iter().position(|&b| b == 0xe8))
    {
        // Positions below `limit`, and `d` is a chunk of at most 32 KiB: no saturation.
        let at = i.saturating_add(k);
        i = at.saturating_add(5);
        let Some(op) = d.get_mut(at..).and_then(|r| r.get_mut(1..5)) else {
            return;
        };
        let abs = i64::from(i32::from_le_bytes([op[0], op[1], op[2], op[3]]));
        let pos = i64::try_from(at).unwrap_or(i64::MAX);
        // Translated only when -pos <= abs < E8_SIZE.
        let rel = if abs >= 0 {
            (abs < E8_SIZE).then(|| abs.saturating_sub(pos))
        } else {
            (abs.saturating_add(pos) >= 0).then(|| abs.saturating_add(E8_SIZE))
        };
        if let Some(rel) = rel.and_then(|r| i32::try_from(r).ok()) {
            op.copy_from_slice(&rel.to_le_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn slots_cover_a_32k_window() {
        assert_eq!(SLOT_BASE[4], 4);
        assert_eq!(SLOT_BASE[8], 16);
        assert_eq!(SLOT_BASE[29], 24576);
        assert_eq!(SLOT_BASE[29] + (1 << FOOTER_BITS[29]) - 2, 32766);
        for s in 1..OFFSET_SLOTS {
            assert_eq!(SLOT_BASE[s], SLOT_BASE[s - 1] + (1 << FOOTER_BITS[s - 1]));
            assert_eq!(FOOTER_BITS[s], if s < 4 { 0 } else { s as u32 / 2 - 1 });
        }
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
