//! A writer of registry transaction logs, by Maxim Suhanov's "Windows registry file format
//! specification" (github.com/msuhanov/regf, "Format of transaction log files"): no Linux tool
//! writes them. Self-contained (no crate imports) so that ferry's unit tests include it too.
//!
//! A test makes hive A (old) and hive B (new) with hivex, diffs their hive bins into dirty
//! pages, marks A dirty and writes a log that turns A into B.

/// The base block and the log's copy of it.
pub(crate) const BASE: usize = 4096;
pub(crate) const LOG_BASE: usize = 512;
const SEED: u64 = 0x82EF_4D88_7A4E_55C5;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Marvin32, 64-bit result (second state word high).
pub(crate) fn marvin32(data: &[u8]) -> u64 {
    let (mut lo, mut hi) = (SEED as u32, (SEED >> 32) as u32);
    let mix = |v: u32, lo: &mut u32, hi: &mut u32| {
        *lo = lo.wrapping_add(v);
        *hi ^= *lo;
        *lo = lo.rotate_left(20).wrapping_add(*hi);
        *hi = hi.rotate_left(9) ^ *lo;
        *lo = lo.rotate_left(27).wrapping_add(*hi);
        *hi = hi.rotate_left(19);
    };
    assert_eq!(data.len() % 4, 0, "log entries hash whole words");
    for w in data.chunks_exact(4) {
        mix(u32::from_le_bytes(w.try_into().unwrap()), &mut lo, &mut hi);
    }
    mix(0x80, &mut lo, &mut hi);
    mix(0, &mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The base block checksum: XOR of the first 127 dwords, 0 and -1 remapped.
pub(crate) fn checksum(b: &[u8]) -> u32 {
    let x = (0..508).step_by(4).fold(0, |a, at| a ^ u32_at(b, at));
    match x {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    }
}

fn reseal(b: &mut [u8]) {
    let c = checksum(b);
    put(b, 0x1fc, c);
}

/// The hive's primary and secondary sequence numbers.
pub(crate) fn seqs(hive: &[u8]) -> (u32, u32) {
    (u32_at(hive, 4), u32_at(hive, 8))
}

/// Marks `hive` dirty as an interrupted write leaves it: the primary sequence number one
/// past the secondary.
pub(crate) fn mark_dirty(hive: &mut [u8]) {
    let s = u32_at(hive, 8);
    put(hive, 4, s.wrapping_add(1));
    reseal(hive);
}

/// The hive bins data size its base block records.
pub(crate) fn hbins_len(hive: &[u8]) -> u32 {
    u32_at(hive, 0x28)
}

/// Pages of `page` bytes of `new`'s hive bins that differ from `old`'s (or lie past its
/// end): (offset in the hive bins, bytes).
pub(crate) fn dirty_pages(old: &[u8], new: &[u8], page: usize) -> Vec<(u32, Vec<u8>)> {
    let end = BASE + hbins_len(new) as usize;
    (BASE..end)
        .step_by(page)
        .filter(|&at| old.get(at..at + page) != Some(&new[at..at + page]))
        .map(|at| ((at - BASE) as u32, new[at..at + page].to_vec()))
        .collect()
}

/// One `HvLE` entry to write.
#[derive(Clone)]
pub(crate) struct Entry {
    pub seq: u32,
    pub hbins_len: u32,
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// The 512-byte base block copy a log starts with: `hive`'s, with the file type, both
/// sequence numbers set to `seq` and the checksum redone.
pub(crate) fn log_base(hive: &[u8], file_type: u32, seq: u32) -> Vec<u8> {
    let mut b = hive[..LOG_BASE].to_vec();
    put(&mut b, 4, seq);
    put(&mut b, 8, seq);
    put(&mut b, 0x1c, file_type);
    reseal(&mut b);
    b
}

/// One `HvLE` entry: header, page references, pages, padded to 512 bytes, both hashes.
pub(crate) fn entry(e: &Entry) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    b[..4].copy_from_slice(b"HvLE");
    put(&mut b, 12, e.seq);
    put(&mut b, 16, e.hbins_len);
    put(&mut b, 20, e.pages.len() as u32);
    for (off, data) in &e.pages {
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    }
    for (_, data) in &e.pages {
        b.extend_from_slice(data);
    }
    b.resize(b.len().div_ceil(512) * 512, 0);
    let size = b.len() as u32;
    put(&mut b, 4, size);
    let h1 = marvin32(&b[40..]);
    b[24..32].copy_from_slice(&h1.to_le_bytes());
    let h2 = marvin32(&b[..32]);
    b[32..40].copy_from_slice(&h2.to_le_bytes());
    b
}

/// A new-format log (file type 6): `hive`'s base block copy at the first entry's sequence
/// number, then the entries.
pub(crate) fn new_log(hive: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut log = log_base(hive, 6, entries.first().map_or(0, |e| e.seq));
    for e in entries {
        log.extend(entry(e));
    }
    log
}

/// An old-format log (file type 1) that turns `old` into `new`: `new`'s base block copy at
/// `seq`, the `DIRT` bitmap of its 512-byte pages that differ, then those pages.
pub(crate) fn old_log(old: &[u8], new: &[u8], seq: u32) -> Vec<u8> {
    let mut log = log_base(new, 1, seq);
    let bits = hbins_len(new) as usize / 512;
    let mut bitmap = vec![0u8; bits.div_ceil(8)];
    let pages = dirty_pages(old, new, 512);
    for (off, _) in &pages {
        let i = *off as usize / 512;
        bitmap[i / 8] |= 1 << (i % 8);
    }
    log.extend_from_slice(b"DIRT");
    log.extend(bitmap);
    log.resize(log.len().div_ceil(512) * 512, 0);
    for (_, p) in pages {
        log.extend(p);
    }
    log
}
