//! The extent-driven parallel copy to a raw file. The output is created sparse (set_len) and only
//! data is written; blocks of data that are all zeros are detected and skipped too (like
//! `qemu-img convert -S 4k`), so the result has holes wherever the source reads as zeros.

use super::{progress, Error, Result};
use crate::block::{self, BlockDevice, ExtentKind};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

/// Unit of work handed to a worker: large enough for sequential I/O, small enough to balance.
const CHUNK: u64 = 2 << 20;
/// Granularity of zero detection inside data (qemu-img convert's default -S).
const ZERO_BLOCK: usize = 4096;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    pub progress: bool,
    /// fsync the output before returning. Off by default, as with cp and qemu-img convert:
    /// the kernel writes back in its own time; ask for it when the copy must survive a crash.
    pub sync: bool,
}

/// What a copy did, for `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub virtual_size: u64,
    /// Bytes read from the source (data extents only).
    pub bytes_read: u64,
    /// Bytes written to the output.
    pub bytes_written: u64,
    /// Bytes never read: holes and known zeros.
    pub bytes_skipped: u64,
    pub seconds: f64,
}

fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe { b.align_to::<u128>() }; // SAFETY: any bit pattern is a u128
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

/// Refuses an output path that is one of the files the source reads from.
fn check_not_source(src: &Arc<dyn BlockDevice>, dst: &Path) -> Result<()> {
    let Ok(dm) = std::fs::metadata(dst) else {
        return Ok(());
    };
    for layer in block::chain(src) {
        for f in layer.info()?.files {
            if let Ok(m) = std::fs::metadata(&f) {
                if (m.dev(), m.ino()) == (dm.dev(), dm.ino()) {
                    return Err(Error::OutputIsSource {
                        path: dst.to_path_buf(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Writes the whole of `src` to `dst` as a sparse raw file.
pub fn to_raw(src: &Arc<dyn BlockDevice>, dst: &Path, opts: &Options) -> Result<Stats> {
    let start = Instant::now();
    check_not_source(src, dst)?;
    let out_err = |what| {
        move |source| Error::Output {
            path: dst.to_path_buf(),
            what,
            source,
        }
    };
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(out_err("cannot create"))?;
    let size = src.len();
    out.set_len(size).map_err(out_err("cannot set the size"))?;

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let bar = progress::bar(size, opts.progress);
    let (tx, rx) = sync_channel::<(u64, u64)>(threads * 4);
    let rx = parking_lot::Mutex::new(rx);

    let result: Result<()> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = vec![0u8; CHUNK as usize];
                    loop {
                        let job = rx.lock().recv();
                        let Ok((off, len)) = job else { return Ok(()) };
                        let b = &mut buf[..len as usize];
                        src.read_at(b, off)?;
                        read.fetch_add(len, Ordering::Relaxed);
                        written.fetch_add(write_nonzero(&out, b, off, dst)?, Ordering::Relaxed);
                        bar.inc(len);
                    }
                })
            })
            .collect();
        let produced = block::for_each_extent(src.as_ref(), 0, size, |e| -> Result<()> {
            if e.kind != ExtentKind::Data {
                bar.inc(e.length);
                return Ok(());
            }
            // Split at CHUNK-aligned boundaries so chunks line up with clusters.
            let mut off = e.offset;
            while off < e.end() {
                let next = ((off / CHUNK) + 1) * CHUNK;
                let n = next.min(e.end()) - off;
                if tx.send((off, n)).is_err() {
                    return Ok(()); // every worker stopped: its error is reported below
                }
                off += n;
            }
            Ok(())
        });
        drop(tx);
        let mut first_err = produced.err();
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    bar.finish_and_clear();
    result?;
    if opts.sync {
        out.sync_all().map_err(out_err("cannot flush"))?;
    }
    let bytes_read = read.load(Ordering::Relaxed);
    Ok(Stats {
        virtual_size: size,
        bytes_read,
        bytes_written: written.load(Ordering::Relaxed),
        bytes_skipped: size - bytes_read,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes the non-zero ZERO_BLOCK runs of `b` (guest offset `off`) and returns the bytes written.
fn write_nonzero(out: &File, b: &[u8], off: u64, dst: &Path) -> Result<u64> {
    let mut written = 0u64;
    let mut i = 0usize;
    while i < b.len() {
        // Skip zero blocks, then gather the following run of non-zero blocks.
        let blk = |at: usize| &b[at..(at + ZERO_BLOCK).min(b.len())];
        if is_zero(blk(i)) {
            i += ZERO_BLOCK;
            continue;
        }
        let run_start = i;
        while i < b.len() && !is_zero(blk(i)) {
            i += ZERO_BLOCK;
        }
        let run = &b[run_start..i.min(b.len())];
        out.write_all_at(run, off + run_start as u64)
            .map_err(|source| Error::Output {
                path: dst.to_path_buf(),
                what: "write failed",
                source,
            })?;
        written += run.len() as u64;
    }
    Ok(written)
}
