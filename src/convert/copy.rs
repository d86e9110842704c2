//! The extent-driven parallel copy to a raw file. The output is created sparse (set_len) and only
//! data is written; blocks of data that are all zeros are detected and skipped too (like
//! `qemu-img convert -S 4k`), so the result has holes wherever the source reads as zeros.

use super::{progress, Error, Result};
use crate::block::{self, BlockDevice, ExtentKind};
use serde::Serialize;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    // Readers (decompression, zero detection) run in parallel; one writer owns the output, as
    // buffered writes to one file serialize on its inode lock and contend in the kernel.
    // Every thread owns its ends of the channels, so when one stops (on an error) the others
    // see a closed channel instead of waiting forever.
    let failed = AtomicBool::new(false);
    let (job_tx, job_rx) = sync_channel::<(u64, u64)>(threads * 2);
    let job_rx = Arc::new(parking_lot::Mutex::new(job_rx));
    let (done_tx, done_rx) = sync_channel::<Chunk>(threads * 2);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let free_rx = Arc::new(parking_lot::Mutex::new(free_rx));
    for _ in 0..threads * 4 {
        let _ = free_tx.send(vec![0u8; CHUNK as usize]);
    }
    let (out, read, written, bar, failed) = (&out, &read, &written, &bar, &failed);

    let result: Result<()> = std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<()> {
            for c in done_rx {
                for &(a, b) in &c.runs {
                    if let Err(source) = out.write_all_at(&c.buf[a..b], c.off + a as u64) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(Error::Output {
                            path: dst.to_path_buf(),
                            what: "write failed",
                            source,
                        });
                    }
                    written.fetch_add((b - a) as u64, Ordering::Relaxed);
                }
                bar.inc(c.len);
                let _ = free_tx.send(c.buf);
            }
            Ok(())
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (done_tx, job_rx, free_rx) = (done_tx.clone(), job_rx.clone(), free_rx.clone());
                s.spawn(move || -> Result<()> {
                    loop {
                        let Ok((off, len)) = job_rx.lock().recv() else {
                            return Ok(());
                        };
                        let Ok(mut buf) = free_rx.lock().recv() else {
                            return Ok(());
                        };
                        if let Err(e) = src.read_at(&mut buf[..len as usize], off) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e.into());
                        }
                        read.fetch_add(len, Ordering::Relaxed);
                        let runs = nonzero_runs(&buf[..len as usize]);
                        if done_tx
                            .send(Chunk {
                                off,
                                len,
                                buf,
                                runs,
                            })
                            .is_err()
                        {
                            return Ok(()); // the writer stopped: its error is reported below
                        }
                    }
                })
            })
            .collect();
        drop((done_tx, job_rx, free_rx));
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
                if failed.load(Ordering::Relaxed) || job_tx.send((off, n)).is_err() {
                    return Ok(()); // a worker or the writer failed: its error is reported below
                }
                off += n;
            }
            Ok(())
        });
        drop(job_tx);
        let mut first_err = produced.err();
        for h in workers.into_iter().chain(std::iter::once(writer)) {
            match h.join() {
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

/// A chunk read from the source, with the byte ranges of `buf` that are not all zeros.
struct Chunk {
    off: u64,
    len: u64,
    buf: Vec<u8>,
    runs: Vec<(usize, usize)>,
}

/// The runs of `b` made of ZERO_BLOCK blocks that are not all zeros (the rest is not written).
fn nonzero_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let blk = |at: usize| &b[at..(at + ZERO_BLOCK).min(b.len())];
    let mut i = 0usize;
    while i < b.len() {
        if is_zero(blk(i)) {
            i += ZERO_BLOCK;
            continue;
        }
        let start = i;
        while i < b.len() && !is_zero(blk(i)) {
            i += ZERO_BLOCK;
        }
        runs.push((start, i.min(b.len())));
    }
    runs
}
