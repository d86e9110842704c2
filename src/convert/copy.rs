//! The extent-driven parallel copy to a raw file or a new qcow2 image. A raw output is created
//! sparse (set_len) and a qcow2 one empty, and only data is written; blocks of data that are all
//! zeros are detected and skipped too (like `qemu-img convert -S 4k`), so the result has holes
//! (unallocated clusters) wherever the source reads as zeros. Compression of qcow2 clusters runs
//! in the reading workers, on every core; one thread writes.

use super::{progress, Error, Result};
use crate::block::qcow2::writer::{CreateOptions, Qcow2Writer};
use crate::block::vmdk::writer::{self as vmdkw, VmdkWriter};
use crate::block::{self, BlockDevice, ExtentKind};
use serde::Serialize;
use std::collections::BTreeMap;
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

/// The qcow2 target's settings (`-o` of `ferry convert -O qcow2`).
#[derive(Clone, Debug, Default)]
pub struct Qcow2Options {
    /// Cluster size (0: 64 KiB).
    pub cluster_size: u64,
    /// qcow2 v2 (`compat=0.10`).
    pub compat_v2: bool,
    /// Compress every data cluster with this type (None: store plain).
    pub compression: Option<crate::block::qcow2::header::Compression>,
}

/// Where the copy writes.
enum Target<'a> {
    Raw(&'a std::fs::File),
    Qcow2 { w: &'a Qcow2Writer, compress: bool },
    Vmdk(&'a VmdkWriter),
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

/// Writes the whole of `src` to `dst` as a sparse raw file. On failure the output is removed, so
/// no half-written file is left looking complete.
pub fn to_raw(src: &Arc<dyn BlockDevice>, dst: &Path, opts: &Options) -> Result<Stats> {
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
    let r = out
        .set_len(src.len())
        .map_err(out_err("cannot set the size"))
        .and_then(|()| copy(src, dst, Target::Raw(&out), opts))
        .and_then(|stats| {
            if opts.sync {
                out.sync_all().map_err(out_err("cannot flush"))?;
            }
            Ok(stats)
        });
    if r.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    r
}

/// Writes the whole of `src` to `dst` as a new qcow2 image (no backing file). On failure the
/// output is removed.
pub fn to_qcow2(
    src: &Arc<dyn BlockDevice>,
    dst: &Path,
    q: &Qcow2Options,
    opts: &Options,
) -> Result<Stats> {
    check_not_source(src, dst)?;
    let co = CreateOptions {
        size: src.len(),
        cluster_size: if q.cluster_size == 0 {
            64 << 10
        } else {
            q.cluster_size
        },
        compat_v2: q.compat_v2,
        compression: q
            .compression
            .unwrap_or(crate::block::qcow2::header::Compression::Zlib),
        backing: None,
    };
    let r = (|| {
        let w = Qcow2Writer::create(dst, &co)?;
        let target = Target::Qcow2 {
            w: &w,
            compress: q.compression.is_some(),
        };
        let stats = copy(src, dst, target, opts)?;
        // Always synced: a qcow2 whose metadata is lost is worse than a raw file with old blocks.
        w.finish()?;
        Ok(stats)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    r
}

/// The VMDK target's settings (`-o` of `ferry convert -O vmdk`).
#[derive(Clone, Debug)]
pub struct VmdkOptions {
    pub subformat: vmdkw::Subformat,
    /// One of `vmdk::writer::ADAPTER_TYPES`.
    pub adapter_type: String,
    pub hw_version: u32,
}

impl Default for VmdkOptions {
    fn default() -> Self {
        VmdkOptions {
            subformat: vmdkw::Subformat::MonolithicSparse,
            adapter_type: "ide".into(),
            hw_version: 4,
        }
    }
}

/// Writes the whole of `src` to `dst` as a new VMDK. A monolithicFlat image is the descriptor
/// `dst` and its raw extent `DST-flat.vmdk`. On failure the output files are removed.
pub fn to_vmdk(
    src: &Arc<dyn BlockDevice>,
    dst: &Path,
    v: &VmdkOptions,
    opts: &Options,
) -> Result<Stats> {
    check_not_source(src, dst)?;
    let mut co = vmdkw::CreateOptions::new(src.len(), v.subformat);
    co.adapter_type = v.adapter_type.clone();
    co.hw_version = v.hw_version;
    if v.subformat == vmdkw::Subformat::MonolithicFlat {
        let flat = vmdkw::flat_extent_path(dst);
        check_not_source(src, &flat)?;
        let r = to_raw(src, &flat, opts).and_then(|stats| {
            // The extent holds whole sectors.
            let f = OpenOptions::new()
                .write(true)
                .open(&flat)
                .and_then(|f| f.set_len(src.len().next_multiple_of(512)).map(|()| f))
                .and_then(|f| if opts.sync { f.sync_all() } else { Ok(()) });
            f.map_err(|source| Error::Output {
                path: flat.clone(),
                what: "cannot set the size",
                source,
            })?;
            vmdkw::write_flat_descriptor(dst, &co)?;
            Ok(stats)
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&flat);
            let _ = std::fs::remove_file(dst);
        }
        return r;
    }
    let r = (|| {
        let w = VmdkWriter::create(dst, &co)?;
        let stats = copy(src, dst, Target::Vmdk(&w), opts)?;
        w.finish()?;
        Ok(stats)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    r
}

fn copy(src: &Arc<dyn BlockDevice>, dst: &Path, target: Target, opts: &Options) -> Result<Stats> {
    let start = Instant::now();
    let size = src.len();
    // qcow2 work is done in whole clusters: compressed clusters cannot be written in parts, and
    // a part of a cluster costs a read-modify-write.
    let align = match &target {
        Target::Raw(_) => 1,
        Target::Qcow2 { w, .. } => w.header().cluster_size(),
        Target::Vmdk(w) => w.grain_bytes(),
    };
    let zero_block = (align as usize).max(ZERO_BLOCK);
    let target = &target;
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
    let (job_tx, job_rx) = sync_channel::<(u64, u64, u64)>(threads * 2);
    let job_rx = Arc::new(parking_lot::Mutex::new(job_rx));
    let (done_tx, done_rx) = sync_channel::<Chunk>(threads * 2);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let free_rx = Arc::new(parking_lot::Mutex::new(free_rx));
    for _ in 0..threads * 4 {
        let _ = free_tx.send(vec![0u8; CHUNK as usize]);
    }
    let (read, written, bar, failed) = (&read, &written, &bar, &failed);

    let result: Result<()> = std::thread::scope(|s| {
        let write_chunk = move |c: Chunk| -> Result<()> {
            for (i, &(a, b)) in c.runs.iter().enumerate() {
                let at = c.off + a as u64;
                let r = match target {
                    Target::Raw(out) => {
                        out.write_all_at(&c.buf[a..b], at)
                            .map_err(|source| Error::Output {
                                path: dst.to_path_buf(),
                                what: "write failed",
                                source,
                            })
                    }
                    Target::Qcow2 { w, .. } => match c.packed.get(i) {
                        Some(Some(z)) => w.write_compressed(at / align, z),
                        _ => w.write_at(&c.buf[a..b], at),
                    }
                    .map_err(Error::from),
                    Target::Vmdk(w) => match c.packed.get(i) {
                        Some(Some(z)) => w.write_grains(at / align, z),
                        _ => w.write_grains(at / align, &c.buf[a..b]),
                    }
                    .map_err(Error::from),
                };
                r?;
                written.fetch_add((b - a) as u64, Ordering::Relaxed);
            }
            bar.inc(c.len);
            let _ = free_tx.send(c.buf);
            Ok(())
        };
        let writer = s.spawn(move || -> Result<()> {
            // Chunks are written in source order (VMDK grains must come in order; the others
            // get sequential allocation), held here until their predecessors arrive. Workers
            // take a buffer before a job, so the oldest job in flight always has one.
            let mut pending = BTreeMap::new();
            let mut next_seq = 0u64;
            for c in done_rx {
                pending.insert(c.seq, c);
                while let Some(c) = pending.remove(&next_seq) {
                    next_seq += 1;
                    if let Err(e) = write_chunk(c) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (done_tx, job_rx, free_rx) = (done_tx.clone(), job_rx.clone(), free_rx.clone());
                s.spawn(move || -> Result<()> {
                    loop {
                        let Ok(mut buf) = free_rx.lock().recv() else {
                            return Ok(());
                        };
                        let Ok((seq, off, len)) = job_rx.lock().recv() else {
                            return Ok(());
                        };
                        if let Err(e) = src.read_at(&mut buf[..len as usize], off) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e.into());
                        }
                        read.fetch_add(len, Ordering::Relaxed);
                        let mut runs = nonzero_runs(&buf[..len as usize], zero_block);
                        let mut packed = Vec::new();
                        let compress: Option<&Compressor> = match target {
                            Target::Qcow2 { w, compress: true } => {
                                Some(&|d: &[u8]| w.compress_cluster(d))
                            }
                            Target::Vmdk(w) if w.compressed() => {
                                Some(&|d: &[u8]| Some(w.compress_grain(d)))
                            }
                            _ => None,
                        };
                        if let Some(compress) = compress {
                            // One run per cluster, each compressed (None: stored plain).
                            let cs = align as usize;
                            runs = runs
                                .iter()
                                .flat_map(|&(a, b)| {
                                    (a..b).step_by(cs).map(move |x| (x, (x + cs).min(b)))
                                })
                                .collect();
                            let mut whole = vec![0u8; cs];
                            for &(a, b) in &runs {
                                let data = if b - a == cs {
                                    &buf[a..b]
                                } else {
                                    // The image's last cluster: compressed padded with zeros.
                                    whole[..b - a].copy_from_slice(&buf[a..b]);
                                    whole[b - a..].fill(0);
                                    &whole[..]
                                };
                                packed.push(compress(data));
                            }
                        }
                        if done_tx
                            .send(Chunk {
                                seq,
                                off,
                                len,
                                buf,
                                runs,
                                packed,
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
        let mut last_end = 0u64;
        let mut seq = 0u64;
        let produced = block::for_each_extent(src.as_ref(), 0, size, |e| -> Result<()> {
            if e.kind != ExtentKind::Data {
                bar.inc(e.length);
                return Ok(());
            }
            // Split at CHUNK-aligned boundaries so chunks line up with clusters; widened to
            // whole target clusters, each cluster in one job only.
            let mut off = (e.offset / align * align).max(last_end);
            let e_end = e.end().div_ceil(align).saturating_mul(align).min(size);
            while off < e_end {
                let next = ((off / CHUNK) + 1) * CHUNK;
                let n = next.min(e_end) - off;
                last_end = off + n;
                let job = (seq, off, n);
                seq += 1;
                if failed.load(Ordering::Relaxed) || job_tx.send(job).is_err() {
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
    let bytes_read = read.load(Ordering::Relaxed);
    Ok(Stats {
        virtual_size: size,
        bytes_read,
        bytes_written: written.load(Ordering::Relaxed),
        bytes_skipped: size.saturating_sub(bytes_read),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Compresses one target cluster or grain (None: store it plain).
type Compressor<'a> = dyn Fn(&[u8]) -> Option<Vec<u8>> + 'a;

/// A chunk read from the source, with the byte ranges of `buf` that are not all zeros.
struct Chunk {
    /// Position in the order of jobs.
    seq: u64,
    off: u64,
    len: u64,
    buf: Vec<u8>,
    runs: Vec<(usize, usize)>,
    /// For a compressed qcow2 target: each run's compressed cluster (None: store it plain).
    packed: Vec<Option<Vec<u8>>>,
}

/// The runs of `b` made of `block`-byte blocks that are not all zeros (the rest is not written).
fn nonzero_runs(b: &[u8], block: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let blk = |at: usize| &b[at..(at + block).min(b.len())];
    let mut i = 0usize;
    while i < b.len() {
        if is_zero(blk(i)) {
            i += block;
            continue;
        }
        let start = i;
        while i < b.len() && !is_zero(blk(i)) {
            i += block;
        }
        runs.push((start, i.min(b.len())));
    }
    runs
}
