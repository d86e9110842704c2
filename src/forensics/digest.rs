//! Digests of whole virtual disks and of guest files.
//!
//! A disk is hashed as `qemu-img convert -O raw IMG - | sha256sum` would see it: every byte of
//! the virtual size in order. Ranges the chain knows to be zeros (holes, zero clusters) are fed
//! from a static zero buffer without reading; data is read in large chunks by a worker thread
//! that stays ahead of the hashing thread, so I/O and hashing overlap.

use crate::block::{self, BlockDevice, ExtentKind};
use crate::bytes::{upto, wide};
use crate::fs::{Error, FileType, Filesystem};
use parking_lot::Mutex;
use sha2::digest::DynDigest;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The digests ferry computes (those sha256sum, sha1sum and md5sum check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha1,
    Md5,
}

impl Algo {
    pub fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            Algo::Sha256 => Box::new(sha2::Sha256::default()),
            Algo::Sha1 => Box::new(sha1::Sha1::default()),
            Algo::Md5 => Box::new(md5::Md5::default()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha1 => "sha1",
            Algo::Md5 => "md5",
        }
    }
}

impl FromStr for Algo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" => Ok(Algo::Sha256),
            "sha1" => Ok(Algo::Sha1),
            "md5" => Ok(Algo::Md5),
            _ => Err(format!("unknown digest '{s}' (sha256, sha1 or md5)")),
        }
    }
}

/// Lower-case hex, as the *sum tools print it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Zeros fed for holes: large enough that a terabyte of holes is a million updates. Allocated
/// per digest, not a `static`: an immutable static is stored in the executable (a zeroed one
/// too, in .rodata), and every command's first start after boot would read its 1 MiB from disk.
const ZERO_CHUNK: usize = 1 << 20;

/// Bytes read per request: large reads amortise per-call costs in every format.
const READ_CHUNK: usize = 4 << 20;

/// Chunks the reader may be ahead of the hasher (memory: this many times `READ_CHUNK`).
const READ_AHEAD: usize = 4;

/// Extents asked for at once: `extents` answers in windows (a fragmented disk has millions).
const EXTENT_WINDOW: u64 = 1 << 30;

/// What the reader hands the hasher, in disk order.
enum Piece {
    Zeros(u64),
    Data(Vec<u8>),
}

/// The digest of the whole virtual disk `dev`, hex.
pub fn hash_device(dev: &dyn BlockDevice, algo: Algo) -> block::Result<String> {
    let mut h = algo.hasher();
    let (tx, rx) = mpsc::sync_channel::<block::Result<Piece>>(READ_AHEAD);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    let zeros = vec![0u8; ZERO_CHUNK];
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Err(e) = produce(dev, &tx, &back_rx) {
                let _ = tx.send(Err(e));
            }
        });
        for piece in rx {
            match piece? {
                Piece::Zeros(mut n) => {
                    while n > 0 {
                        let k = upto(n, ZERO_CHUNK);
                        h.update(&zeros[..k]);
                        n = n.saturating_sub(wide(k)); // k ≤ n
                    }
                }
                Piece::Data(buf) => {
                    h.update(&buf);
                    // The reader may have finished; then the buffer is simply dropped.
                    let _ = back_tx.send(buf);
                }
            }
        }
        Ok(hex(&h.finalize_reset()))
    })
}

/// The reader: walks the extents in windows and sends zeros and data in order. Stops quietly
/// when the hasher has gone (it failed or returned).
fn produce(
    dev: &dyn BlockDevice,
    tx: &mpsc::SyncSender<block::Result<Piece>>,
    recycled: &mpsc::Receiver<Vec<u8>>,
) -> block::Result<()> {
    let size = dev.len();
    let mut off = 0u64;
    while off < size {
        // off < size: the window ends within the device and neither step saturates.
        let win = EXTENT_WINDOW.min(size.saturating_sub(off));
        let win_end = off.saturating_add(win);
        let extents = dev.extents(off, win)?;
        let mut pos = off;
        for e in extents {
            // Trust only the part of the answer inside the window, in order, without gaps.
            if e.offset != pos || e.end() > win_end {
                return Err(block::Error::corrupt(
                    "virtual disk",
                    "extent map",
                    e.offset,
                    format!("expected an extent at {pos} inside the window ending at {win_end}"),
                ));
            }
            match e.kind {
                ExtentKind::Zero | ExtentKind::Hole => {
                    if tx.send(Ok(Piece::Zeros(e.length))).is_err() {
                        return Ok(());
                    }
                }
                ExtentKind::Data => {
                    let mut at = e.offset;
                    while at < e.end() {
                        let n = upto(e.end().saturating_sub(at), READ_CHUNK);
                        let mut buf = recycled.try_recv().unwrap_or_default();
                        buf.resize(n, 0);
                        dev.read_at(&mut buf, at)?;
                        if tx.send(Ok(Piece::Data(buf))).is_err() {
                            return Ok(());
                        }
                        at = at.saturating_add(wide(n)); // at most e.end()
                    }
                }
            }
            pos = e.end();
        }
        if pos != win_end {
            return Err(block::Error::corrupt(
                "virtual disk",
                "extent map",
                pos,
                format!("extents stop short of the window end {win_end}"),
            ));
        }
        off = win_end;
    }
    Ok(())
}

/// Bytes read per call when hashing a file.
const FILE_CHUNK: usize = 1 << 20;

/// The digest of file `ino` of `fs`, hex: `size` bytes are expected; a file that reads
/// shorter is an error rather than a wrong digest.
pub fn hash_file(
    fs: &dyn Filesystem,
    ino: u64,
    size: u64,
    algo: Algo,
) -> crate::fs::Result<String> {
    let mut h = algo.hasher();
    let mut buf = vec![0u8; FILE_CHUNK];
    let mut off = 0u64;
    while off < size {
        let want = upto(size.saturating_sub(off), FILE_CHUNK); // off < size
        let n = fs.read(ino, off, &mut buf[..want])?;
        if n == 0 {
            return Err(Error::corrupt(
                "file data",
                ino,
                0,
                format!("ends at byte {off} of {size}"),
            ));
        }
        h.update(&buf[..n]);
        off = off.saturating_add(wide(n)); // n ≤ want ≤ size - off
    }
    Ok(hex(&h.finalize_reset()))
}

/// A path as a line of `sha256sum` output: GNU coreutils prefixes the line with `\` and
/// escapes `\` and newline (and, since 9.0, carriage return) when a name holds them.
pub fn sum_line(digest: &str, path: &[u8]) -> Vec<u8> {
    let special = path.iter().any(|&b| b == b'\\' || b == b'\n' || b == b'\r');
    // A capacity hint (escapes may still grow it).
    let mut out = Vec::with_capacity(digest.len().saturating_add(path.len()).saturating_add(4));
    if special {
        out.push(b'\\');
    }
    out.extend_from_slice(digest.as_bytes());
    out.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if special => out.extend_from_slice(b"\\\\"),
            b'\n' if special => out.extend_from_slice(b"\\n"),
            b'\r' if special => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

/// Writes a `sha256sum`-format manifest (in `algo`) of every regular file of `fs` to `out`,
/// paths relative to the guest's `/` (so `sha256sum -c` run at the root of a mount of the
/// guest, or at `/` inside it, checks them), in walk order. Files are hashed by `threads`
/// workers. Returns what could not be read.
pub fn write_manifest(
    fs: &dyn Filesystem,
    algo: Algo,
    threads: usize,
    out: &mut dyn std::io::Write,
) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut errors = super::walk::walk(fs, &mut |v| {
        if v.attr.kind == FileType::RegularFile {
            files.push((v.path[1..].to_vec(), v.attr.ino, v.attr.size));
        }
    });
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<crate::fs::Result<String>>>> =
        files.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, MAX_THREADS) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, ino, size)) = files.get(i) else {
                    break;
                };
                *results[i].lock() = Some(hash_file(fs, *ino, *size, algo));
            });
        }
    });
    for ((path, _, _), r) in files.iter().zip(results) {
        match r.into_inner() {
            Some(Ok(d)) => out.write_all(&sum_line(&d, path))?,
            Some(Err(e)) => errors.push(format!("/{}: {e}", String::from_utf8_lossy(path))),
            None => errors.push(format!("/{}: not hashed", String::from_utf8_lossy(path))),
        }
    }
    Ok(errors)
}

/// Hashing threads a manifest may start (each holds a 1 MiB buffer).
pub const MAX_THREADS: usize = 64;

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;
    use crate::block::mem::MemDevice;

    #[test]
    fn algo_names() {
        assert_eq!("SHA1".parse::<Algo>(), Ok(Algo::Sha1));
        assert!("crc".parse::<Algo>().is_err());
    }

    #[test]
    fn sum_line_escapes_like_coreutils() {
        assert_eq!(sum_line("ab", b"a b"), b"ab  a b\n");
        assert_eq!(sum_line("ab", b"a\\b\nc"), b"\\ab  a\\\\b\\nc\n");
    }

    #[test]
    fn device_digest_matches_a_plain_digest() {
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let dev = MemDevice(data.clone());
        for algo in [Algo::Sha256, Algo::Sha1, Algo::Md5] {
            let mut h = algo.hasher();
            h.update(&data);
            assert_eq!(hash_device(&dev, algo).unwrap(), hex(&h.finalize_reset()));
        }
    }
}
