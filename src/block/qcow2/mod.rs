//! qcow2 v2/v3 reader (qemu docs/interop/qcow2.txt). Lookups go through a bounded LRU of L2
//! tables under a short lock; all file I/O and decompression happen outside it, so many threads
//! read in parallel.

pub(super) mod cluster;
mod deflate;
pub(super) mod header;
pub(super) mod refcount;
pub(super) mod table;
pub(super) mod writer;

use crate::block::error::{Error, Result};
use crate::block::file::ImageFile;
use crate::block::{
    check_range, open_backing, parallel, push_backing_extents, push_extent, read_backing,
    BlockDevice, Describe, Extent, ExtentKind, LayerInfo, OpenCtx,
};
use crate::bytes::wide;
use header::{Compatible, Compression, Header, Incompatible};
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::json;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use table::{low_bits, Geometry, Mapping};

/// The first read of a qcow2 file: the fixed header (104 bytes in v3) and, at the smallest
/// clusters (512 B .. 4 KiB), the whole first cluster; the page the format probe read already.
const HEADER_PROBE: usize = 4096;

/// Bytes of L2 tables kept cached (at least 16 tables): 512 tables of 64 KiB clusters map 256 GiB.
const L2_CACHE_BYTES: u64 = 32 << 20;
/// Bytes of decompressed clusters kept for reads smaller than a cluster (at least 4 clusters).
const ZCACHE_BYTES: u64 = 4 << 20;

pub(super) struct Qcow2 {
    file: ImageFile,
    header: Header,
    geo: Geometry,
    l1: Vec<u64>,
    l2_cache: Mutex<LruCache<u64, Arc<[u64]>>>,
    zcache: Mutex<LruCache<u64, Arc<[u8]>>>,
    backing: Option<Arc<dyn BlockDevice>>,
    backing_path: Option<PathBuf>,
    warnings: Vec<String>,
    /// Whether the image looks preallocated with metadata only, decided at the first
    /// `extents` (see `metadata_preallocated`).
    metadata_prealloc: std::sync::OnceLock<bool>,
}

fn cache_slots(bytes: u64, item: u64, min: usize) -> NonZeroUsize {
    let n = bytes
        .checked_div(item)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(min)
        .max(min);
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Refuses an L1 table in which two entries name the same L2 table. The active L1 never shares
/// tables (only snapshots do, across L1s), and a shared table would let a small file describe
/// an enormous mapping: `extents()` work must stay proportional to the file's metadata.
fn check_l2_tables_unique(
    l1: &[u64],
    geo: &Geometry,
    path: &std::path::Path,
    l1_off: u64,
) -> Result<()> {
    // The byte position of L1 entry i, for messages.
    let entry_pos = |i: u64| l1_off.saturating_add(i.saturating_mul(8));
    let mut tables: Vec<(u64, u64)> = Vec::new();
    for (i, e) in (0u64..).zip(l1) {
        let off = geo.l2_offset(*e, path, entry_pos(i))?;
        if off != 0 {
            tables.push((off, i));
        }
    }
    tables.sort_unstable();
    if let Some(w) = tables.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::corrupt(
            path,
            "qcow2 L1 table",
            entry_pos(w[1].1),
            format!(
                "L1 entries {} and {} both point at the L2 table at {:#x}",
                w[0].1, w[1].1, w[0].0
            ),
        ));
    }
    Ok(())
}

impl Qcow2 {
    pub(super) fn open(file: ImageFile, ctx: &mut OpenCtx) -> Result<Self> {
        let path = file.path().to_path_buf();
        // The header, its extensions and the backing name all live in the first cluster:
        // the fixed header names its size, then that cluster is read, and parse() bounds
        // everything by it. (Reading qemu's largest cluster, 2 MiB, every time cost a 64 KiB-
        // cluster image 2.4 ms at a cold open.)
        let file_len = usize::try_from(file.len()).map_or(usize::MAX, |l| l);
        let mut head = vec![0u8; file_len.min(HEADER_PROBE)];
        file.read_exact_at(&mut head, 0, "qcow2 header")?;
        if let Some(cluster) = header::announced_cluster_size(&head) {
            if cluster > head.len() && file_len > head.len() {
                head = vec![0u8; file_len.min(cluster)];
                file.read_exact_at(&mut head, 0, "qcow2 header")?;
            }
        }
        let h = Header::parse(&head, &path, file.len())?;
        drop(head);
        let cs = h.cluster_size();

        let geo = Geometry {
            cluster_bits: h.cluster_bits,
            extended: h.extended_l2(),
            file_len: file.len(),
        };
        let mut warnings = Vec::new();
        if h.incompatible_features.contains(Incompatible::DIRTY) {
            warnings.push("dirty bit set: the image was not closed cleanly; refcounts may be stale (reading is safe)".into());
        }
        if h.incompatible_features.contains(Incompatible::CORRUPT) {
            warnings.push("qemu marked this image corrupt; reading it anyway, read-only".into());
        }
        for w in &warnings {
            log::warn!("{}: {w}", path.display());
        }

        // Bounded to 32 MiB by Header::parse.
        let l1_bytes = usize::try_from(h.l1_size)
            .ok()
            .and_then(|n| n.checked_mul(8))
            .ok_or_else(|| {
                Error::corrupt(
                    &path,
                    "qcow2 L1 table",
                    h.l1_table_offset,
                    format!("{} entries do not fit in memory", h.l1_size),
                )
            })?;
        let mut raw = vec![0u8; l1_bytes];
        file.read_exact_at(&mut raw, h.l1_table_offset, "qcow2 L1 table")?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();

        check_l2_tables_unique(&l1, &geo, &path, h.l1_table_offset)?;

        let (backing, backing_path) = match &h.backing_file {
            Some(name) => {
                let (dev, p) = open_backing(&path, name, h.backing_format.as_deref(), ctx)?;
                (Some(dev), Some(p))
            }
            None => (None, None),
        };
        Ok(Qcow2 {
            l2_cache: Mutex::new(LruCache::new(cache_slots(L2_CACHE_BYTES, cs, 16))),
            zcache: Mutex::new(LruCache::new(cache_slots(ZCACHE_BYTES, cs, 4))),
            file,
            header: h,
            geo,
            l1,
            backing,
            backing_path,
            warnings,
            metadata_prealloc: std::sync::OnceLock::new(),
        })
    }

    /// The L2 table at host offset `off`, from the cache or the file.
    fn l2_table(&self, off: u64) -> Result<Arc<[u64]>> {
        if let Some(t) = self.l2_cache.lock().get(&off) {
            return Ok(t.clone());
        }
        let mut raw = vec![0u8; self.geo.cluster_len()];
        self.file.read_exact_at(&mut raw, off, "qcow2 L2 table")?;
        let t: Arc<[u64]> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        self.l2_cache.lock().put(off, t.clone());
        Ok(t)
    }

    /// Classifies the guest range starting at `pos` (at most `max` bytes) and returns the mapping
    /// of its first byte and how far that mapping continues (same kind; contiguous host offsets
    /// for data), never crossing an L2 table. Data and compressed hosts are for `pos` itself.
    fn map_run(&self, pos: u64, max: u64) -> Result<(Mapping, u64)> {
        let cb = self.geo.cluster_bits;
        let ub = self.geo.unit_bits();
        let unit = 1u64 << ub;
        let per_table = self.geo.l2_entries();
        let vcl = pos >> cb;
        // Header::parse bounded cluster_bits (9..=21) and the virtual size (its L1 table fits
        // in 32 MiB): these never fail for a guest offset inside the image.
        let past = |detail: String| {
            Error::corrupt(
                self.file.path(),
                "qcow2 L1 table",
                self.header.l1_table_offset,
                format!("guest offset {pos:#x} {detail}"),
            )
        };
        let l1i = vcl
            .checked_div(per_table)
            .ok_or_else(|| past("has no L1 entry".into()))?;
        let table_end = l1i
            .checked_add(1)
            .and_then(|n| n.checked_mul(per_table << cb))
            .ok_or_else(|| past("lies past the largest mappable offset".into()))?;
        let limit = pos.saturating_add(max).min(table_end);
        let l1_entry = usize::try_from(l1i)
            .ok()
            .and_then(|i| self.l1.get(i))
            .copied()
            .ok_or_else(|| {
                past(format!(
                    "needs L1 entry {l1i}, past its {} entries",
                    self.l1.len()
                ))
            })?;
        let l1_pos = self
            .header
            .l1_table_offset
            .saturating_add(l1i.saturating_mul(8));
        let l2_off = self.geo.l2_offset(l1_entry, self.file.path(), l1_pos)?;
        // From here on, limit > pos: pos lies in the table that ends at table_end.
        if l2_off == 0 {
            return Ok((Mapping::Unallocated, limit.saturating_sub(pos)));
        }
        let t = self.l2_table(l2_off)?;
        let (words, entry_size): (usize, u64) = if self.geo.extended { (2, 16) } else { (1, 8) };
        let unit_map = |at: u64| -> Result<Mapping> {
            // Entry of `at`'s cluster in its table, and `at`'s subcluster in that cluster.
            let idx = (at >> cb).checked_rem(per_table).unwrap_or(0);
            let sc = u32::try_from((at >> ub) & low_bits(cb.saturating_sub(ub))).unwrap_or(0);
            let entry_pos = l2_off.saturating_add(idx.saturating_mul(entry_size));
            let entry = usize::try_from(idx)
                .ok()
                .and_then(|i| i.checked_mul(words))
                .and_then(|i| t.get(i..)?.get(..words));
            let Some(entry) = entry else {
                return Err(Error::corrupt(
                    self.file.path(),
                    "qcow2 L2 table",
                    entry_pos,
                    format!("entry {idx} lies past the table"),
                ));
            };
            let (word, bitmap) = match entry {
                [word, bitmap] => (*word, *bitmap),
                _ => (entry.first().copied().unwrap_or(0), 0),
            };
            self.geo
                .classify(word, bitmap, sc, self.file.path(), entry_pos)
        };
        let in_unit = pos & low_bits(ub);
        let first = match unit_map(pos)? {
            // classify checked host < file length, and in_unit < unit: no overflow.
            Mapping::Data { host } => Mapping::Data {
                host: host.saturating_add(in_unit),
            },
            Mapping::Compressed { host, size } => {
                let cluster_end = (pos | low_bits(cb)).saturating_add(1).min(limit);
                return Ok((
                    Mapping::Compressed { host, size },
                    cluster_end.saturating_sub(pos),
                ));
            }
            m => m,
        };
        // The end of pos's unit, then unit by unit while the mapping continues.
        let mut end = (pos | low_bits(ub)).saturating_add(1).min(limit);
        while end < limit {
            let next = unit_map(end)?;
            if !first.continues_with(next, end.saturating_sub(pos)) {
                break;
            }
            end = end.saturating_add(unit).min(limit);
        }
        Ok((first, end.saturating_sub(pos)))
    }

    /// Inflates the compressed cluster at `host` into `out` (one whole cluster).
    fn inflate(&self, host: u64, size: u64, out: &mut [u8]) -> Result<()> {
        // classify bounds size by the cluster size (at most 2^(cluster_bits - 8) sectors).
        let len = usize::try_from(size).map_err(|_| {
            Error::corrupt(
                self.file.path(),
                "qcow2 compressed cluster",
                host,
                format!("{size} bytes do not fit in memory"),
            )
        })?;
        let mut input = vec![0u8; len];
        self.file
            .read_zero_padded(&mut input, host, "qcow2 compressed cluster")?;
        cluster::decompress(self.header.compression, &input, out)
            .map_err(|d| Error::corrupt(self.file.path(), "qcow2 compressed cluster", host, d))
    }

    /// Copies `dst.len()` bytes from `in_cluster` within the compressed cluster at `host`,
    /// through the cache of inflated clusters.
    fn read_compressed_part(
        &self,
        host: u64,
        size: u64,
        in_cluster: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let cached = self.zcache.lock().get(&host).cloned();
        let data = match cached {
            Some(d) => d,
            None => {
                let mut buf = vec![0u8; self.geo.cluster_len()];
                self.inflate(host, size, &mut buf)?;
                let d: Arc<[u8]> = buf.into();
                self.zcache.lock().put(host, d.clone());
                d
            }
        };
        let Some(src) = data.get(in_cluster..).and_then(|d| d.get(..dst.len())) else {
            return Err(Error::corrupt(
                self.file.path(),
                "qcow2 compressed cluster",
                host,
                format!("{} bytes at {in_cluster} lie past the cluster", dst.len()),
            ));
        };
        dst.copy_from_slice(src);
        Ok(())
    }

    /// Bytes of guest data this image itself holds (data and compressed units, within the size).
    fn allocated_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        let mut pos = 0u64;
        let size = self.header.size;
        while pos < size {
            // pos < size; runs stay inside [pos, size), so the sums stay within size.
            let (m, run) = self.map_run(pos, size.saturating_sub(pos))?;
            if matches!(m, Mapping::Data { .. } | Mapping::Compressed { .. }) {
                total = total.saturating_add(run);
            }
            pos = pos.saturating_add(run);
        }
        Ok(total)
    }
}

impl BlockDevice for Qcow2 {
    fn len(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len())?;
        let cb = self.geo.cluster_bits;
        // Whole compressed clusters are collected and inflated together, on idle cores too.
        let mut whole: Vec<(u64, u64, &mut [u8])> = Vec::new();
        let mut rest = buf;
        let mut pos = off;
        while !rest.is_empty() {
            let (m, run) = self.map_run(pos, wide(rest.len()))?;
            // run <= rest.len(), the most map_run was asked for.
            let taken = std::mem::take(&mut rest);
            let Some((dst, tail)) = usize::try_from(run)
                .ok()
                .and_then(|n| taken.split_at_mut_checked(n))
            else {
                return Err(Error::OutOfRange {
                    offset: pos,
                    len: run,
                    size: self.len(),
                });
            };
            rest = tail;
            match m {
                Mapping::Data { host } => {
                    self.file
                        .read_zero_padded(dst, host, "qcow2 data cluster")?
                }
                Mapping::Zero => dst.fill(0),
                Mapping::Unallocated => read_backing(self.backing.as_ref(), dst, pos)?,
                Mapping::Compressed { host, size } => {
                    let in_cluster = usize::try_from(pos & low_bits(cb)).unwrap_or(usize::MAX);
                    if in_cluster == 0 && dst.len() == self.geo.cluster_len() {
                        whole.push((host, size, dst));
                    } else {
                        self.read_compressed_part(host, size, in_cluster, dst)?;
                    }
                }
            }
            pos = pos.saturating_add(run);
        }
        parallel::for_each(whole, |(host, size, dst)| self.inflate(host, size, dst))
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        // check_range: off + len fits. Runs stay inside [pos, end).
        let end = off.saturating_add(len);
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let (m, run) = self.map_run(pos, end.saturating_sub(pos))?;
            match m {
                Mapping::Data { host } if !self.metadata_preallocated() => {
                    let mut e = Extent::new(pos, run, ExtentKind::Data);
                    e.host_offset = Some(host);
                    push_extent(&mut out, e);
                }
                Mapping::Data { host } => {
                    // Clusters that are holes in the host file read as zeros (qemu reports
                    // them so, and copies skip them). data_ranges yields ranges inside
                    // [host, host + run), in order.
                    let mut at = host;
                    let host_end = host.saturating_add(run);
                    let guest = |h: u64| pos.saturating_add(h.saturating_sub(host));
                    let zero = |a: u64, b: u64| {
                        let mut e = Extent::new(guest(a), b.saturating_sub(a), ExtentKind::Zero);
                        e.host_offset = Some(a);
                        e
                    };
                    for (d, dlen) in self.file.data_ranges(host, run) {
                        if d > at {
                            push_extent(&mut out, zero(at, d));
                        }
                        let mut e = Extent::new(guest(d), dlen, ExtentKind::Data);
                        e.host_offset = Some(d);
                        push_extent(&mut out, e);
                        at = d.saturating_add(dlen);
                    }
                    if at < host_end {
                        push_extent(&mut out, zero(at, host_end));
                    }
                }
                m => push_mapping(&mut out, self.backing.as_ref(), pos, run, m)?,
            }
            pos = pos.saturating_add(run);
        }
        Ok(out)
    }

    fn backing(&self) -> Option<&Arc<dyn BlockDevice>> {
        self.backing.as_ref()
    }
}

impl Qcow2 {
    /// Whether the host file beneath data clusters is asked for holes, as qemu decides it
    /// (qcow2_detect_metadata_preallocation): only when the image looks preallocated with
    /// metadata only, its clusters in use (refcount not zero) at least 10/9 of those the host
    /// has allocated to the file. Otherwise a data cluster is data whatever lies beneath
    /// (a `preallocation=falloc` image, a copy-on-write of zeros): asking the host there also
    /// made the answer depend on the page cache, as ext4 reports an unwritten extent as data
    /// once its pages are cached. Unreadable refcounts count as not preallocated.
    fn metadata_preallocated(&self) -> bool {
        *self.metadata_prealloc.get_or_init(|| {
            self.detect_metadata_preallocation().unwrap_or_else(|e| {
                log::debug!("metadata preallocation not detected: {e}");
                false
            })
        })
    }

    fn detect_metadata_preallocation(&self) -> Result<bool> {
        let h = &self.header;
        let cs = h.cluster_size();
        let Some(allocated) = self.file.allocated_bytes() else {
            return Ok(false);
        };
        let real = allocated.checked_div(cs).unwrap_or(0);
        let threshold = real
            .saturating_mul(10)
            .checked_div(9)
            .unwrap_or(0)
            .max(real.saturating_add(2));
        let clusters = self.file.len().div_ceil(cs.max(1));
        let epb = refcount::entries_per_block(cs, h.refcount_order).max(1);
        // A table beyond qemu's limit, or beyond the file, is not read (nor allocated).
        let Some(rt_len) = u64::from(h.refcount_table_clusters)
            .checked_mul(cs)
            .filter(|&b| b <= header::MAX_REFTABLE_BYTES && b <= self.file.len())
            .and_then(|b| usize::try_from(b).ok())
        else {
            return Ok(false);
        };
        let mut reftable = vec![0u8; rt_len];
        self.file.read_exact_at(
            &mut reftable,
            h.refcount_table_offset,
            "qcow2 refcount table",
        )?;
        // cs ≤ 2 MiB (Header::parse).
        let mut block = vec![0u8; usize::try_from(cs).unwrap_or(0)];
        let mut in_use = 0u64;
        // Each reftable entry names the refcount block of the next `epb` clusters.
        for (b, entry) in reftable.chunks_exact(8).enumerate() {
            let Some(first) = wide(b).checked_mul(epb).filter(|&f| f < clusters) else {
                break;
            };
            if in_use >= threshold {
                break;
            }
            let rb = crate::bytes::be64(entry, 0) & table::OFFSET_MASK;
            if rb == 0 {
                continue;
            }
            self.file
                .read_exact_at(&mut block, rb, "qcow2 refcount block")?;
            let n = epb.min(clusters.saturating_sub(first));
            let used = (0..n)
                .filter(|&idx| refcount::get(&block, idx, h.refcount_order) != 0)
                .take(usize::try_from(threshold.saturating_sub(in_use)).unwrap_or(usize::MAX))
                .count();
            in_use = in_use.saturating_add(wide(used));
        }
        Ok(in_use >= threshold)
    }
}

impl Describe for Qcow2 {
    fn info(&self) -> Result<LayerInfo> {
        let h = &self.header;
        let mut specific = vec![
            (
                "compat".to_string(),
                json!(if h.version >= 3 { "1.1" } else { "0.10" }),
            ),
            (
                "compression_type".into(),
                json!(match h.compression {
                    Compression::Zlib => "zlib",
                    Compression::Zstd => "zstd",
                }),
            ),
            (
                "lazy_refcounts".into(),
                json!(h.compatible_features.contains(Compatible::LAZY_REFCOUNTS)),
            ),
            ("refcount_bits".into(), json!(1u32 << h.refcount_order)),
            (
                "corrupt".into(),
                json!(h.incompatible_features.contains(Incompatible::CORRUPT)),
            ),
            (
                "dirty".into(),
                json!(h.incompatible_features.contains(Incompatible::DIRTY)),
            ),
            ("extended_l2".into(), json!(h.extended_l2())),
        ];
        if h.nb_snapshots > 0 {
            specific.push(("internal_snapshots".into(), json!(h.nb_snapshots)));
        }
        if h.has_bitmaps {
            specific.push(("bitmaps".into(), json!(true)));
        }
        Ok(LayerInfo {
            dirty: h.incompatible_features.contains(Incompatible::DIRTY),
            qemu_specific: Some(qemu_specific(h)),
            filename: self.file.path().to_path_buf(),
            format: "qcow2".into(),
            subformat: Some(format!("v{}", h.version)),
            virtual_size: h.size,
            disk_size: self.file.disk_usage(),
            cluster_size: Some(h.cluster_size()),
            backing_filename: h.backing_file.clone(),
            full_backing_filename: self.backing_path.clone(),
            backing_format: h.backing_format.clone(),
            files: vec![self.file.path().to_path_buf()],
            specific,
            warnings: self.warnings.clone(),
            allocated: None,
        })
    }

    fn allocated(&self) -> Result<Option<u64>> {
        self.allocated_bytes().map(Some)
    }
}

/// The extent a mapped run of `run` bytes at `pos` stands for (Data without host-hole
/// detection; unallocated runs resolve through the backing chain). Shared by the reader and
/// the writer.
pub(crate) fn push_mapping(
    out: &mut Vec<Extent>,
    backing: Option<&Arc<dyn BlockDevice>>,
    pos: u64,
    run: u64,
    m: Mapping,
) -> Result<()> {
    match m {
        Mapping::Data { host } => {
            let mut e = Extent::new(pos, run, ExtentKind::Data);
            e.host_offset = Some(host);
            push_extent(out, e);
        }
        Mapping::Zero => push_extent(out, Extent::new(pos, run, ExtentKind::Zero)),
        Mapping::Unallocated => push_backing_extents(out, backing, pos, run)?,
        Mapping::Compressed { host, .. } => {
            let mut e = Extent::new(pos, run, ExtentKind::Data);
            e.compressed = true;
            e.host_offset = Some(host);
            push_extent(out, e);
        }
    }
    Ok(())
}

/// qemu-img's "format-specific" for a qcow2 image (qapi ImageInfoSpecificQCow2): v2 images
/// carry only compat, compression type and refcount width, as in qemu. ferry adds
/// "internal-snapshots" (a count) and "has-bitmaps", which qemu lists in its own shapes.
pub(crate) fn qemu_specific(h: &header::Header) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    let v3 = h.version >= 3;
    d.insert("compat".into(), json!(if v3 { "1.1" } else { "0.10" }));
    d.insert(
        "compression-type".into(),
        json!(match h.compression {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }),
    );
    if v3 {
        d.insert(
            "lazy-refcounts".into(),
            json!(h.compatible_features.contains(Compatible::LAZY_REFCOUNTS)),
        );
    }
    d.insert("refcount-bits".into(), json!(1u32 << h.refcount_order));
    if v3 {
        d.insert(
            "corrupt".into(),
            json!(h.incompatible_features.contains(Incompatible::CORRUPT)),
        );
        d.insert("extended-l2".into(), json!(h.extended_l2()));
    }
    if h.nb_snapshots > 0 {
        d.insert("internal-snapshots".into(), json!(h.nb_snapshots));
    }
    if h.has_bitmaps {
        d.insert("has-bitmaps".into(), json!(true));
    }
    json!({"type": "qcow2", "data": d})
}
