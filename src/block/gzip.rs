//! Random access into a gzip file (RFC 1952) without decompressing it to disk: how a disk
//! stored `ovf:compression="gzip"` inside an OVA is read in place.
//!
//! One sequential pass at open inflates the whole stream (checking every member's CRC-32 and
//! length) and keeps access points: at a deflate block boundary, the input byte, the bits of
//! the byte before it that belong to the next block, and the 32 KiB of output before it,
//! which is all a raw inflate needs to resume there (the technique of zlib's
//! examples/zran.c). A read starts at the last point at or before it and inflates forward.
//! The output is handed out in aligned chunks that are cached, and the inflate state after
//! the last chunk is kept, so sequential reads (a conversion) inflate each byte once.
#![allow(unsafe_code)]
// FFI into zlib; every call is on a stream `Inflate` owns and sets up.

use super::error::{Error, Result};
use super::file::ImageFile;
use libz_sys as z;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::os::raw::{c_int, c_uint};
use std::sync::Arc;

/// Deflate's window: the most output a block can refer back to.
const WINDOW: usize = 32 << 10;
/// Access points kept at most. Past this, every other point is dropped and the spacing
/// doubles, so the index never holds more than MAX_POINTS windows (32 MiB) however large the
/// stream, at the cost of longer inflates before a random read.
const MAX_POINTS: usize = 1024;
/// Output between access points at first.
const FIRST_SPAN: u64 = 4 << 20;
/// Compressed bytes read per step.
const IN_CHUNK: usize = 256 << 10;
/// The unit of output handed out and cached.
const CHUNK: u64 = 1 << 20;
/// CHUNK as a buffer length.
const CHUNK_LEN: usize = 1 << 20;
const _: () = assert!(CHUNK == 1 << 20 && CHUNK_LEN == 1 << 20);
/// Chunks kept decoded (the copy's workers read a few chunks apart; inspection rereads
/// metadata).
const CACHED: usize = 32;
/// gzip's window bits for zlib: 15, plus 16 for the gzip wrapper.
const GZIP_BITS: c_int = 31;
/// Raw deflate, as resumed from an access point.
const RAW_BITS: c_int = -15;
/// The gzip member's magic (RFC 1952 §2.3.1: ID1, ID2).
const MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The member trailer: CRC-32 and ISIZE.
const TRAILER: u64 = 8;

/// One inflate stream.
struct Inflate {
    /// Boxed: zlib's state points back at its `z_stream` and refuses one that moved.
    strm: Box<z::z_stream>,
}

// SAFETY: the stream's state is only touched through `&mut self`; zlib keeps no thread-local
// or global state for it.
unsafe impl Send for Inflate {}

impl Inflate {
    fn new(bits: c_int) -> Option<Inflate> {
        let mut strm = crate::block::zstream::blank();
        let size = c_int::try_from(std::mem::size_of::<z::z_stream>()).ok()?;
        // SAFETY: a valid boxed z_stream with allocator functions; zlibVersion() is a static
        // string and `size` that of the struct zlib was built against.
        let rc = unsafe { z::inflateInit2_(&mut *strm, bits, z::zlibVersion(), size) };
        (rc == z::Z_OK).then_some(Inflate { strm })
    }

    /// Starts over for a new member (`bits` as for `new`).
    fn reset(&mut self, bits: c_int) -> bool {
        // SAFETY: the stream was initialised by `new`.
        unsafe { z::inflateReset2(&mut *self.strm, bits) == z::Z_OK }
    }

    /// Resumes at an access point: the `bits` low bits of `value` come before the next input
    /// byte, and `dict` is the output before the point.
    fn resume(&mut self, bits: u8, value: u8, dict: &[u8]) -> bool {
        let Ok(len) = c_uint::try_from(dict.len()) else {
            return false;
        };
        // SAFETY: the stream was initialised by `new` (raw mode); `dict` is valid for `len`
        // bytes during the call and zlib copies it.
        unsafe {
            (bits == 0
                || z::inflatePrime(
                    &mut *self.strm,
                    c_int::from(bits),
                    c_int::from(
                        value
                            .checked_shr(8u32.saturating_sub(u32::from(bits)))
                            .unwrap_or(0),
                    ),
                ) == z::Z_OK)
                && z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), len) == z::Z_OK
        }
    }

    /// Inflates from `input` into `output`: (bytes consumed, bytes produced, zlib's code).
    fn step(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> (usize, usize, c_int) {
        let avail_in = c_uint::try_from(input.len()).unwrap_or(c_uint::MAX);
        let avail_out = c_uint::try_from(output.len()).unwrap_or(c_uint::MAX);
        let s = &mut *self.strm;
        // zlib takes `*mut` for next_in but never writes through it.
        s.next_in = input.as_ptr().cast_mut();
        s.avail_in = avail_in;
        s.next_out = output.as_mut_ptr();
        s.avail_out = avail_out;
        // SAFETY: next_in/next_out point into `input`/`output`, valid for the counts given,
        // for the duration of the call; the pointers are cleared before returning.
        let rc = unsafe { z::inflate(s, flush) };
        // zlib only lowers the counts it was given.
        let used = usize::try_from(avail_in.saturating_sub(s.avail_in)).unwrap_or(0);
        let made = usize::try_from(avail_out.saturating_sub(s.avail_out)).unwrap_or(0);
        s.next_in = std::ptr::null_mut();
        s.next_out = std::ptr::null_mut();
        s.avail_in = 0;
        s.avail_out = 0;
        (used, made, rc)
    }

    /// zlib's `data_type` after a Z_BLOCK step: bit 7 at a block boundary, bit 6 when the
    /// last block was read, the low 3 bits the unused bits of the last input byte.
    fn data_type(&self) -> c_int {
        self.strm.data_type
    }
}

impl Drop for Inflate {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`; ended once.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}

/// A buffer length as a byte count (lossless: usize is at most 64 bits wide).
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A byte count that callers have bounded by a buffer's length, as a length.
fn narrow(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Where inflating can start again.
struct Point {
    /// Output offset.
    out: u64,
    /// Input offset of the first whole byte after the point.
    inp: u64,
    /// Bits of the byte before `inp` that belong after the point (0-7).
    bits: u8,
    /// The output before the point (up to WINDOW bytes).
    window: Box<[u8]>,
}

/// An inflate in progress, positioned at output `out` (a chunk boundary).
struct Cursor {
    inf: Inflate,
    /// Raw deflate (resumed at a point) or gzip (at a member's start).
    raw: bool,
    /// Next input offset to read.
    inp: u64,
    inbuf: Vec<u8>,
    /// The unconsumed input: `inbuf[at..end]`.
    at: usize,
    end: usize,
    out: u64,
}

/// What the indexing pass found: the access points and the output's length.
struct Index {
    points: Vec<Point>,
    len: u64,
}

/// Which stored stream an index is for: the host file (device, inode, mtime in ns), the
/// window of it, and the window's last 8 bytes (the last member's CRC-32 and length), which
/// tell apart two files that had the same inode number and mtime in one run.
type Key = ((u64, u64), i128, u64, u64, [u8; 8]);

/// Indexes built by this process. One conversion opens the same stored disk several times
/// (the overlay's creation, inspection through the overlay, the copy), and each pass over a
/// large stream costs seconds; the points do not change while the file does not.
static INDEXES: Mutex<Vec<(Key, Arc<Index>)>> = Mutex::new(Vec::new());
/// Indexes kept in `INDEXES` (the newest; a package holds a few disks).
const KEPT_INDEXES: usize = 16;

impl Cursor {
    /// The input offset of the first byte inflate has not taken.
    fn consumed(&self) -> u64 {
        self.inp
            .saturating_sub(wide(self.end.saturating_sub(self.at)))
    }
}

/// The output of a gzip stream, read at any offset.
pub(crate) struct Gzip {
    src: ImageFile,
    index: Arc<Index>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Gzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gzip")
            .field("src", &self.src.path())
            .field("points", &self.index.points.len())
            .field("len", &self.index.len)
            .finish()
    }
}

struct State {
    cursor: Option<Cursor>,
    cache: LruCache<u64, Arc<Vec<u8>>>,
}

impl Gzip {
    /// Indexes the gzip stream `src` holds (one pass over all of it).
    pub(crate) fn open(src: ImageFile) -> Result<Gzip> {
        let mut tail = [0u8; 8];
        if let Some(at) = src.len().checked_sub(TRAILER) {
            src.read_exact_at(&mut tail, at, "gzip trailer")?;
        }
        let key: Key = (src.id(), src.mtime_ns(), src.base(), src.len(), tail);
        let known = INDEXES
            .lock()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, i)| i.clone());
        let index = match known {
            Some(i) => i,
            None => {
                let (points, len) = index(&src)?;
                let i = Arc::new(Index { points, len });
                let mut all = INDEXES.lock();
                if all.len() >= KEPT_INDEXES {
                    all.remove(0);
                }
                all.push((key, i.clone()));
                i
            }
        };
        let cached = NonZeroUsize::new(CACHED).unwrap_or(NonZeroUsize::MIN);
        Ok(Gzip {
            src,
            index,
            state: Mutex::new(State {
                cursor: None,
                cache: LruCache::new(cached),
            }),
        })
    }

    /// Bytes of output.
    pub(crate) fn len(&self) -> u64 {
        self.index.len
    }

    /// The compressed file.
    pub(crate) fn source(&self) -> &ImageFile {
        &self.src
    }

    /// Fills `buf` with the output at `offset` (the caller checks the range).
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let pos = offset.saturating_add(wide(done));
            let k = pos / CHUNK;
            let chunk = self.chunk(k)?;
            let from = narrow(pos % CHUNK);
            let take = chunk.len().saturating_sub(from).min(rest.len());
            let (Some(dst), Some(src)) = (
                rest.get_mut(..take),
                chunk.get(from..from.saturating_add(take)),
            ) else {
                return Err(self.bad(self.src.len(), format!("no output at byte {pos}")));
            };
            if take == 0 {
                return Err(self.bad(self.src.len(), format!("no output at byte {pos}")));
            }
            dst.copy_from_slice(src);
            done = done.saturating_add(take);
        }
        Ok(())
    }

    fn bad(&self, at: u64, detail: String) -> Error {
        Error::corrupt(self.src.path(), "gzip stream", at, detail)
    }

    /// Output chunk `k`, from the cache or inflated.
    fn chunk(&self, k: u64) -> Result<Arc<Vec<u8>>> {
        let mut st = self.state.lock();
        if let Some(c) = st.cache.get(&k) {
            return Ok(c.clone());
        }
        let start = k.saturating_mul(CHUNK);
        // Continue the cursor when it is at or shortly before the chunk; else start again from
        // the last access point at or before it.
        let span = self
            .index
            .points
            .windows(2)
            .map(|w| w[1].out.saturating_sub(w[0].out))
            .max();
        let keep = st.cursor.as_ref().is_some_and(|c| {
            c.out <= start
                && start.saturating_sub(c.out) <= span.unwrap_or(FIRST_SPAN).max(FIRST_SPAN)
        });
        if !keep {
            st.cursor = Some(self.cursor_before(start)?);
        }
        let Some(mut cur) = st.cursor.take() else {
            return Err(self.bad(0, "no access point".into()));
        };
        let mut out = vec![0u8; CHUNK_LEN];
        // Skip to the chunk, then fill it; whole chunks passed on the way are cached too.
        loop {
            let first = cur.out / CHUNK;
            let base = first.saturating_mul(CHUNK);
            let n = narrow(self.len().saturating_sub(base).min(CHUNK));
            let lead = narrow(cur.out % CHUNK);
            let Some(part) = out.get_mut(lead..n) else {
                return Err(self.bad(self.src.len(), format!("no output at byte {}", cur.out)));
            };
            self.inflate(&mut cur, part)?;
            if lead == 0 {
                let c = Arc::new(out[..n].to_vec());
                st.cache.put(first, c.clone());
                if first == k {
                    st.cursor = Some(cur);
                    return Ok(c);
                }
            }
            if cur.out >= self.len() {
                return Err(self.bad(self.src.len(), format!("no output at byte {start}")));
            }
        }
    }

    /// A cursor at the last access point at or before output `pos`.
    fn cursor_before(&self, pos: u64) -> Result<Cursor> {
        let points = &self.index.points;
        let i = points.partition_point(|p| p.out <= pos);
        let Some(p) = i.checked_sub(1).and_then(|i| points.get(i)) else {
            return Err(self.bad(0, "no access point".into()));
        };
        let mut inf = Inflate::new(RAW_BITS).ok_or_else(|| self.bad(p.inp, "zlib".into()))?;
        let mut before = [0u8; 1];
        if p.bits > 0 {
            self.src
                .read_exact_at(&mut before, p.inp.saturating_sub(1), "gzip access point")?;
        }
        if !inf.resume(p.bits, before[0], &p.window) {
            return Err(self.bad(p.inp, "cannot resume inflating here".into()));
        }
        Ok(Cursor {
            inf,
            raw: true,
            inp: p.inp,
            inbuf: vec![0u8; IN_CHUNK],
            at: 0,
            end: 0,
            out: p.out,
        })
    }

    /// Inflates exactly `out.len()` bytes at the cursor into `out`, across member ends.
    fn inflate(&self, c: &mut Cursor, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            if c.at == c.end {
                let n = narrow(self.src.len().saturating_sub(c.inp).min(wide(IN_CHUNK)));
                if n == 0 {
                    return Err(self.bad(c.inp, "ends inside a member".into()));
                }
                self.src
                    .read_exact_at(&mut c.inbuf[..n], c.inp, "gzip stream")?;
                c.inp = c.inp.saturating_add(wide(n));
                (c.at, c.end) = (0, n);
            }
            let (used, made, rc) =
                c.inf
                    .step(&c.inbuf[c.at..c.end], &mut out[done..], z::Z_NO_FLUSH);
            // zlib takes at most what it was given and fills at most the room left.
            c.at = c.at.saturating_add(used).min(c.end);
            done = done.saturating_add(made).min(out.len());
            c.out = c.out.saturating_add(wide(made));
            match rc {
                z::Z_OK | z::Z_BUF_ERROR if used > 0 || made > 0 => {}
                z::Z_STREAM_END => {
                    // A raw resume stops at the member's deflate end: its trailer follows.
                    let consumed = c.consumed();
                    let next = if c.raw {
                        consumed.saturating_add(TRAILER)
                    } else {
                        consumed
                    };
                    c.inp = next;
                    (c.at, c.end) = (0, 0);
                    c.raw = false;
                    if done < out.len() && !c.inf.reset(GZIP_BITS) {
                        return Err(self.bad(next, "zlib".into()));
                    }
                }
                rc => {
                    return Err(self.bad(c.consumed(), format!("inflate failed (zlib code {rc})")));
                }
            }
        }
        Ok(())
    }
}

/// The access points of the stream in `src` and its output length, from one pass that checks
/// every member. Bytes after the last member that do not start another are ignored, as gzip
/// does ("trailing garbage ignored"); a stream that ends inside a member is an error.
fn index(src: &ImageFile) -> Result<(Vec<Point>, u64)> {
    let bad = |at: u64, d: String| Error::corrupt(src.path(), "gzip stream", at, d);
    let mut head = [0u8; 2];
    if src.len() < 2 {
        return Err(bad(0, "too short for a gzip header".into()));
    }
    src.read_exact_at(&mut head, 0, "gzip header")?;
    if head != MAGIC {
        return Err(bad(0, format!("magic {head:02x?}, not 1f 8b")));
    }
    let mut inf = Inflate::new(GZIP_BITS).ok_or_else(|| bad(0, "zlib".into()))?;
    let mut inbuf = vec![0u8; IN_CHUNK];
    let mut ring = vec![0u8; WINDOW];
    let (mut at, mut end) = (0usize, 0usize);
    let mut read = 0u64; // input read into inbuf so far
    let mut out = 0u64;
    let mut wpos = 0usize;
    let mut points: Vec<Point> = Vec::new();
    let mut span = FIRST_SPAN;
    let mut last: Option<u64> = None;
    loop {
        if at == end {
            let n = narrow(src.len().saturating_sub(read).min(wide(IN_CHUNK)));
            if n == 0 {
                return Err(bad(read, "ends inside a member".into()));
            }
            src.read_exact_at(&mut inbuf[..n], read, "gzip stream")?;
            read = read.saturating_add(wide(n));
            (at, end) = (0, n);
        }
        let (used, made, rc) = inf.step(&inbuf[at..end], &mut ring[wpos..], z::Z_BLOCK);
        // zlib takes at most what it was given and fills at most the ring's room.
        at = at.saturating_add(used).min(end);
        out = out.saturating_add(wide(made));
        wpos = wpos.saturating_add(made) % WINDOW;
        let consumed = read.saturating_sub(wide(end.saturating_sub(at)));
        match rc {
            z::Z_OK | z::Z_BUF_ERROR if used > 0 || made > 0 => {}
            z::Z_STREAM_END => {
                // Another member follows only if its magic does.
                let mut next = [0u8; 2];
                if consumed.saturating_add(2) > src.len() {
                    break;
                }
                src.read_exact_at(&mut next, consumed, "gzip header")?;
                if next != MAGIC {
                    break;
                }
                if !inf.reset(GZIP_BITS) {
                    return Err(bad(consumed, "zlib".into()));
                }
                continue;
            }
            rc => {
                return Err(bad(
                    consumed,
                    format!("inflate failed (zlib code {rc}): damaged or not deflate data"),
                ))
            }
        }
        let dt = inf.data_type();
        let boundary = dt & 128 != 0 && dt & 64 == 0;
        if boundary && last.is_none_or(|l| out.saturating_sub(l) >= span) {
            let have = narrow(out.min(wide(WINDOW)));
            let mut window = Vec::with_capacity(have);
            // The last `have` bytes of output, oldest first, from the ring (wpos < WINDOW,
            // have <= WINDOW).
            let start = wpos.saturating_add(WINDOW).saturating_sub(have) % WINDOW;
            match ring.get(start..start.saturating_add(have)) {
                Some(whole) => window.extend_from_slice(whole),
                None => {
                    window.extend_from_slice(&ring[start..]);
                    window.extend_from_slice(&ring[..wpos]);
                }
            }
            points.push(Point {
                out,
                inp: consumed,
                bits: u8::try_from(dt & 7).unwrap_or(0),
                window: window.into_boxed_slice(),
            });
            last = Some(out);
            if points.len() > MAX_POINTS {
                // Keep the first and every other one after it.
                let mut keep = false;
                points.retain(|_| {
                    keep = !keep;
                    keep
                });
                span = span.saturating_mul(2);
            }
        }
    }
    if points.first().is_none_or(|p| p.out != 0) {
        return Err(bad(0, "no deflate block at the start".into()));
    }
    Ok((points, out))
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Text-like data with long-distance repeats, so blocks refer back across chunks.
    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let words: Vec<Vec<u8>> = (0..500).map(|i| format!("word{i} ").into_bytes()).collect();
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&words[(x % 500) as usize]);
            if x % 97 == 0 {
                v.extend(std::iter::repeat_n((x >> 8) as u8, (x % 3000) as usize));
            }
        }
        v.truncate(n);
        v
    }

    fn open(bytes: &[u8]) -> Result<Gzip> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        std::fs::write(&p, bytes).unwrap();
        Gzip::open(ImageFile::open(&p).unwrap())
    }

    #[test]
    fn random_and_sequential_reads_match_the_data() {
        let data = sample(23 << 20);
        let mut two = gz(&data[..9 << 20], 6);
        two.extend(gz(&data[9 << 20..], 1)); // a second member, as `cat a.gz b.gz`
        let g = open(&two).unwrap();
        assert_eq!(g.len(), data.len() as u64);
        assert!(g.index.points.len() > 3, "{} points", g.index.points.len());
        let mut x = 12345u64;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 20) % data.len() as u64;
            let len = ((x >> 8) % 300_000) as usize;
            let len = len.min(data.len() - off as usize);
            let mut b = vec![0u8; len];
            g.read_at(&mut b, off).unwrap();
            assert!(
                b == data[off as usize..off as usize + len],
                "at {off} +{len}"
            );
        }
        let mut all = vec![0u8; data.len()];
        for (i, c) in all.chunks_mut(3 << 20).enumerate() {
            g.read_at(c, (i as u64) * (3 << 20)).unwrap();
        }
        assert!(all == data);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let data = sample(3 << 20);
        let good = gz(&data, 6);
        assert!(open(&good[..good.len() / 2]).is_err(), "truncated");
        assert!(open(&good[..good.len() - 4]).is_err(), "no length");
        assert!(open(b"").is_err() && open(b"\x1f").is_err());
        let mut flipped = good.clone();
        let n = flipped.len();
        flipped[n - 6] ^= 0x40; // the CRC
        assert!(open(&flipped).is_err(), "bad CRC");
        let mut x = 7u64;
        for _ in 0..200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut m = good.clone();
            let at = (x >> 33) as usize % m.len();
            m[at] ^= (x >> 8) as u8 | 1;
            if let Ok(g) = open(&m) {
                let mut b = vec![0u8; 4096];
                let _ = g.read_at(&mut b, (x >> 12) % g.len().max(1));
            }
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0u8; 512]);
        assert_eq!(open(&trailing).unwrap().len(), data.len() as u64);
    }
}
