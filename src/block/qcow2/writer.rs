//! A read-write qcow2 image (qemu docs/interop/qcow2.txt): creating v3 (or v2, compat=0.10)
//! images, cluster allocation with refcounts, L2 allocation, copy-on-write of partial clusters
//! from the backing file, zero clusters and compressed clusters. Used by `block::overlay` and as
//! the qcow2 target of `convert`.
//!
//! Crash safety is qemu's without lazy refcounts: metadata is written through (no dirty cache)
//! and each step is a separate `pwrite` in this order: refcounts of new clusters, then the new
//! clusters' contents, then the L2 entries that point at them, then the L1 entry of a new L2
//! table; references are dropped before refcounts are decreased. Whatever the process is killed
//! between, every reference points at a cluster whose refcount is already counted, so
//! `qemu-img check` finds at most leaked clusters. ferry never needs the dirty bit: an image
//! created with lazy refcounts only records the feature for qemu. A dirty image (qemu stopped
//! while using lazy refcounts) is refused for writing; qemu would rebuild its refcounts on open,
//! ferry leaves that to `qemu-img check -r all`.
//! Clusters are only ever allocated at the end of the file (freed ones are not reused), so a data
//! cluster never changes meaning while a reader holds its offset. Against power loss the order
//! holds only up to the last `flush()` (as qemu with cache=writeback between guest flushes).
// Unsafe code: an aligned view of a buffer for zero detection; each block says why it is sound.
#![allow(unsafe_code)]
// Guard rails (issue 16 item 7): every conversion and every overflow this writer could hit is
// spelled out (`u64::from`, `try_from`, `checked_*` returning an error that names the quantity).

use super::cluster;
use super::header::{
    self, Compatible, Compression, Header, Incompatible, RawCompressionType, RawExtension,
    RawHeader, RawHeaderV3, MAGIC, MAX_REFTABLE_BYTES,
};
use super::refcount;
use super::table::{Geometry, Mapping, OFFSET_MASK, ZERO_FLAG};
use crate::block::error::{fit, Error, Result};
use crate::block::lock::{self, Access, Lock};
use crate::block::{
    check_range, open_backing, read_backing, BlockDevice, Describe, Extent, LayerInfo, OpenCtx,
};
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::json;
use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zerocopy::byteorder::{BigEndian, U32, U64};
use zerocopy::IntoBytes;

/// L1/L2 "refcount is exactly one" flag: the cluster may be written in place.
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// The unit of compressed cluster descriptors and of the file's end after packing.
const SECTOR: u64 = 512;
const ZERO: u64 = 1;
/// Bytes of L2 tables and of refcount blocks kept cached (each at least 16 clusters).
const CACHE_BYTES: u64 = 16 << 20;
/// Used clusters past the end of the file skipped over when allocating, before giving up on the
/// image as corrupt (a hostile refcount table could otherwise make every allocation scan for long).
const MAX_SKIP_CLUSTERS: u64 = 1 << 16;

/// What to create. `Default` is qemu-img's: v3, 64 KiB clusters, 16-bit refcounts, zlib.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    /// qcow2 version 2 (`compat=0.10`): no zero clusters, no compression type.
    pub compat_v2: bool,
    /// The compression type recorded in the header (only zstd needs a v3 feature bit).
    pub compression: Compression,
    /// Backing file name as written into the image, and its format (`backing_fmt`).
    pub backing: Option<(String, String)>,
    /// `preallocation=metadata`: every L2 table and every data cluster allocated up front, each
    /// table followed by its clusters in guest order, as qemu lays them out; the file is
    /// extended (sparse) over them, so they read as zeros until written.
    pub preallocate_metadata: bool,
    /// `lazy_refcounts=on` (v3 compatible feature bit 0). Only recorded: ferry itself keeps
    /// refcounts up to date, which that feature allows; qemu then uses it when it writes.
    pub lazy_refcounts: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 0,
            cluster_size: 64 << 10,
            compat_v2: false,
            compression: Compression::Zlib,
            backing: None,
            preallocate_metadata: false,
            lazy_refcounts: false,
        }
    }
}

/// Mutable metadata, under one lock. Tables are written through to the file as they change.
struct State {
    l1: Vec<u64>,
    l2: LruCache<u64, Vec<u64>>,
    reftable: Vec<u64>,
    reftable_offset: u64,
    refblocks: LruCache<u64, Vec<u8>>,
    /// Where the next cluster is allocated: the end of the file, rounded up to a cluster.
    next_free: u64,
    /// Byte position for the next compressed cluster inside a partly used host cluster (0: none).
    zpos: u64,
    /// While the refcount table is being replaced, entries go to memory only.
    growing: bool,
    file_len: u64,
}

pub struct Qcow2Writer {
    file: File,
    /// qemu's writer locks on `file` (`block::lock`), held while it is open.
    _lock: Option<Lock>,
    path: PathBuf,
    header: Header,
    geo: Geometry,
    /// The cluster size, as a divisor and as a buffer length.
    cluster: NonZeroU64,
    cluster_len: usize,
    /// Entries per L2 table, as a divisor and as a table length.
    per_l2: NonZeroU64,
    per_l2_len: usize,
    /// Entries per refcount block.
    epb: NonZeroU64,
    backing: Option<Arc<dyn BlockDevice>>,
    backing_path: Option<PathBuf>,
    state: Mutex<State>,
}

fn io_err<'a>(
    path: &'a Path,
    what: &'static str,
    offset: u64,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        what,
        offset,
        source,
    }
}

/// `n`, a byte count or table index of the image at `path`, as a buffer length or index.
fn to_usize(n: u64, path: &Path, what: &str) -> Result<usize> {
    fit(usize::try_from(n).ok(), path, what)
}

/// A buffer length or index as a byte count or table index of the image at `path`.
fn to_u64(n: usize, path: &Path, what: &str) -> Result<u64> {
    fit(u64::try_from(n).ok(), path, what)
}

/// The byte position of 8-byte entry `i` of the table at `table` (L1, L2, refcount table).
fn entry_pos(table: u64, i: u64, path: &Path, what: &str) -> Result<u64> {
    fit(
        i.checked_mul(8).and_then(|d| d.checked_add(table)),
        path,
        what,
    )
}

fn be64s(raw: &[u8]) -> Vec<u64> {
    raw.chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn is_zero(b: &[u8]) -> bool {
    // SAFETY: any bit pattern is a valid u128.
    let (pre, mid, post) = unsafe { b.align_to::<u128>() };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

/// The header cluster of a new image: fixed header, backing format extension, end marker and
/// the backing file name (qcow2.txt, "Header" and "Header extensions").
fn header_bytes(
    o: &CreateOptions,
    path: &Path,
    cluster_bits: u32,
    l1_size: u32,
) -> Result<Vec<u8>> {
    let cs = 1usize << cluster_bits;
    let mut h = vec![0u8; cs];
    let mut raw = RawHeader {
        magic: MAGIC.into(),
        version: (if o.compat_v2 { 2u32 } else { 3 }).into(),
        cluster_bits: cluster_bits.into(),
        size: o.size.into(),
        l1_size: l1_size.into(),
        // Layout: header, refcount table, first refcount block, L1 table.
        l1_table_offset: (3u64 << cluster_bits).into(),
        refcount_table_offset: (1u64 << cluster_bits).into(),
        refcount_table_clusters: 1u32.into(),
        ..RawHeader::default()
    };
    let pos = if o.compat_v2 {
        header::V2_LEN
    } else {
        let zstd = o.compression == Compression::Zstd;
        let v3 = RawHeaderV3 {
            incompatible_features: (if zstd {
                Incompatible::COMPRESSION
            } else {
                Incompatible::empty()
            })
            .bits()
            .into(),
            compatible_features: (if o.lazy_refcounts {
                Compatible::LAZY_REFCOUNTS
            } else {
                Compatible::empty()
            })
            .bits()
            .into(),
            autoclear_features: 0u64.into(),
            refcount_order: 4u32.into(),
            header_length: fit(
                u32::try_from(header::V3_COMPRESSION_LEN).ok(),
                path,
                "qcow2 header length",
            )?
            .into(),
        };
        let ct = RawCompressionType {
            compression_type: u8::from(zstd),
            padding: [0; 7],
        };
        h[header::V2_LEN..header::V3_LEN].copy_from_slice(v3.as_bytes());
        h[header::V3_LEN..header::V3_COMPRESSION_LEN].copy_from_slice(ct.as_bytes());
        header::V3_COMPRESSION_LEN
    };
    if let Some((name, fmt)) = &o.backing {
        // The format extension (its data padded to 8 bytes), the end of extensions (type 0,
        // length 0: the buffer is zeroed), then the name, all inside the header cluster.
        let ext_len = size_of::<RawExtension>();
        let fmt_at = pos.checked_add(ext_len);
        let name_at = fmt_at
            .and_then(|a| a.checked_add(fmt.len().checked_next_multiple_of(8)?))
            .and_then(|a| a.checked_add(ext_len));
        let name_end = name_at
            .and_then(|a| a.checked_add(name.len()))
            .filter(|&e| e <= cs);
        let name_len = u32::try_from(name.len())
            .ok()
            .filter(|&n| n <= header::MAX_BACKING_NAME);
        let (Some(fmt_at), Some(name_at), Some(name_end), Some(name_len), Ok(fmt_len)) = (
            fmt_at,
            name_at,
            name_end,
            name_len,
            u32::try_from(fmt.len()),
        ) else {
            return Err(Error::unsupported(
                name.as_str(),
                "backing file name too long for the header cluster",
            ));
        };
        let ext = RawExtension {
            ty: header::EXT_BACKING_FORMAT.into(),
            len: fmt_len.into(),
        };
        h[pos..fmt_at].copy_from_slice(ext.as_bytes());
        h[fmt_at..][..fmt.len()].copy_from_slice(fmt.as_bytes());
        h[name_at..name_end].copy_from_slice(name.as_bytes());
        raw.backing_file_offset = to_u64(name_at, path, "qcow2 backing file name offset")?.into();
        raw.backing_file_size = name_len.into();
    }
    h[..header::V2_LEN].copy_from_slice(raw.as_bytes());
    Ok(h)
}

impl Qcow2Writer {
    /// Creates a new empty image at `path` (replacing any file there) and opens it read-write.
    /// Layout: header, refcount table, first refcount block, L1 table.
    pub fn create(path: &Path, o: &CreateOptions) -> Result<Self> {
        // qemu counts qcow2 sizes in 512-byte sectors and drops a partial last one: round up,
        // as `qemu-img create` and `convert` do, so the tail of an odd-sized source survives.
        let o = &CreateOptions {
            size: o.size.checked_next_multiple_of(512).ok_or_else(|| {
                Error::unsupported(path, format!("virtual size {} is too large", o.size))
            })?,
            ..o.clone()
        };
        let cs = o.cluster_size;
        if !cs.is_power_of_two()
            || !(header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&cs.trailing_zeros())
        {
            return Err(Error::unsupported(
                path,
                format!("cluster size {cs} must be a power of two from 512 to 2 MiB"),
            ));
        }
        let cb = cs.trailing_zeros();
        // Guest bytes one L2 table maps: cs / 8 entries of one cluster (at most 2^39).
        let per_l2 = fit(cs.checked_mul(cs / 8), path, "qcow2 bytes per L2 table")?;
        let l1_size = o.size.div_ceil(per_l2);
        let too_large = || {
            Error::unsupported(
                path,
                format!(
                    "virtual size {} is too large for {cs}-byte clusters",
                    o.size
                ),
            )
        };
        let l1_bytes = l1_size
            .checked_mul(8)
            .filter(|&b| b <= header::MAX_L1_BYTES)
            .ok_or_else(too_large)?;
        let l1_entries = u32::try_from(l1_size).map_err(|_| too_large())?;
        let head = header_bytes(o, path, cb, l1_entries)?;
        // Truncated only once locked: an image another process uses is left as it is.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let lock = lock::acquire(&file, path, Access::Write)?;
        crate::block::file::truncate_to_empty(&file).map_err(io_err(path, "qcow2 image", 0))?;
        let l1_clusters = l1_bytes.max(1).div_ceil(cs);
        // Header, refcount table, first refcount block (cs is at most 2 MiB: no overflow).
        let meta_at = |clusters: u64| fit(clusters.checked_mul(cs), path, "qcow2 metadata offset");
        let (refblock_at, l1_at) = (meta_at(2)?, meta_at(3)?);
        let cs_len = to_usize(cs, path, "qcow2 cluster size")?;
        let mut meta = vec![0u8; to_usize(l1_at, path, "qcow2 metadata size")?];
        let (head_cluster, rest) = meta.split_at_mut(cs_len);
        head_cluster.copy_from_slice(&head);
        let (table, rb) = rest.split_at_mut(cs_len);
        // Refcount table entry 0 -> block at cluster 2, which counts clusters 0..3.
        table[..8].copy_from_slice(&refblock_at.to_be_bytes());
        for c in 0..3 {
            refcount::set(rb, c, 4, 1);
        }
        file.write_all_at(&meta, 0)
            .map_err(io_err(path, "qcow2 metadata", 0))?;
        let l1_end = meta_at(fit(l1_clusters.checked_add(3), path, "qcow2 L1 end")?)?;
        file.set_len(l1_end)
            .map_err(io_err(path, "qcow2 L1 table", l1_at))?;
        if o.lazy_refcounts && o.compat_v2 {
            return Err(Error::unsupported(
                path,
                "lazy refcounts need compat=1.1 (qcow2 v3)",
            ));
        }
        let w = Self::open_file(file, lock, path, &mut OpenCtx::default(), Some(l1_at))?;
        {
            let mut st = w.state.lock();
            let at = w.alloc(&mut st, l1_clusters)?;
            debug_assert_eq!(at, l1_at);
            if o.preallocate_metadata {
                w.preallocate(&mut st)?;
            }
        }
        Ok(w)
    }

    /// Allocates every L2 table and data cluster of a new image (`preallocation=metadata`):
    /// each table, then its clusters, refcounts first, the table, then its L1 entry.
    fn preallocate(&self, st: &mut State) -> Result<()> {
        let cs = self.cs();
        let per = self.per_l2.get();
        let clusters = self.len().div_ceil(cs);
        for l1i in 0..clusters.div_ceil(per) {
            let t = self.alloc(st, 1)?;
            // The clusters from this table's first on (l1i * per < clusters), at most a table's.
            let left = l1i.checked_mul(per).and_then(|d| clusters.checked_sub(d));
            let n = self.fit(left, "qcow2 clusters to preallocate")?.min(per);
            let host = self.alloc(st, n)?;
            let mut table = vec![0u64; self.per_l2_len];
            for (e, i) in table.iter_mut().zip(0..n) {
                *e = self.nth_cluster(host, i)? | COPIED;
            }
            let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.pwrite(st, &raw, t, "qcow2 L2 table")?;
            st.l2.put(t, table);
            self.set_l1(st, l1i, t)?;
        }
        let end = st.next_free;
        self.file
            .set_len(end)
            .map_err(io_err(&self.path, "qcow2 preallocated clusters", end))?;
        st.file_len = end;
        Ok(())
    }

    /// Opens an existing image read-write (its backing chain read-only).
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let lock = lock::acquire(&file, path, Access::Write)?;
        Self::open_file(file, lock, path, &mut OpenCtx::default(), None)
    }

    fn open_file(
        file: File,
        lock: Option<Lock>,
        path: &Path,
        ctx: &mut OpenCtx,
        next_free: Option<u64>,
    ) -> Result<Self> {
        let meta = file.metadata().map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = meta.len();
        let head_len = file_len.min(1 << header::MAX_CLUSTER_BITS);
        let mut head = vec![0u8; to_usize(head_len, path, "qcow2 header length")?];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(path, "qcow2 header", 0))?;
        let h = Header::parse(&head, path, file_len)?;
        let refuse = |why: &str| {
            Err(Error::unsupported(
                path,
                format!("cannot write to this qcow2 image: {why}"),
            ))
        };
        if h.extended_l2() {
            return refuse("extended L2 entries (subclusters) are not supported for writing");
        }
        if h.nb_snapshots > 0 {
            return refuse("it has internal snapshots");
        }
        if h.incompatible_features.contains(Incompatible::DIRTY) {
            return refuse("the dirty bit is set; repair it first with `qemu-img check -r all`");
        }
        if h.incompatible_features.contains(Incompatible::CORRUPT) {
            return refuse("qemu marked it corrupt; repair it first with `qemu-img check -r all`");
        }
        let cs = h.cluster_size();
        // Autoclear features (bitmaps...) must be cleared by a writer that does not know them.
        if h.version >= 3 && !h.autoclear_features.is_empty() {
            file.write_all_at(U64::<BigEndian>::ZERO.as_bytes(), header::AUTOCLEAR_AT)
                .map_err(io_err(path, "qcow2 header", header::AUTOCLEAR_AT))?;
        }
        let geo = Geometry {
            cluster_bits: h.cluster_bits,
            extended: false,
            file_len,
        };
        let not_zero = |n: u64, what: &str| {
            NonZeroU64::new(n).ok_or_else(|| Error::corrupt(path, "qcow2 header", 20, what))
        };
        let cluster = not_zero(cs, "a cluster size of zero")?;
        let per_l2 = not_zero(geo.l2_entries(), "no entries per L2 table")?;
        let epb = not_zero(
            refcount::entries_per_block(cs, h.refcount_order),
            "no entries per refcount block",
        )?;
        let l1_bytes = fit(
            u64::from(h.l1_size).checked_mul(8),
            path,
            "qcow2 L1 table size",
        )?;
        let mut raw = vec![0u8; to_usize(l1_bytes, path, "qcow2 L1 table size")?];
        file.read_exact_at(&mut raw, h.l1_table_offset)
            .map_err(io_err(path, "qcow2 L1 table", h.l1_table_offset))?;
        let l1 = be64s(&raw);
        for (e, i) in l1.iter().zip(0u64..) {
            let pos = entry_pos(h.l1_table_offset, i, path, "qcow2 L1 entry")?;
            if geo.l2_offset(*e, path, pos)? != 0 && e & COPIED == 0 {
                return refuse("an L2 table is shared (refcount above one)");
            }
        }
        let Some(rt_bytes) = u64::from(h.refcount_table_clusters)
            .checked_mul(cs)
            .filter(|b| (1..=MAX_REFTABLE_BYTES).contains(b))
        else {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                56,
                format!("refcount table of {} clusters", h.refcount_table_clusters),
            ));
        };
        if h.refcount_table_offset % cluster != 0 {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                48,
                "refcount table offset is not cluster-aligned",
            ));
        }
        let mut raw = vec![0u8; to_usize(rt_bytes, path, "qcow2 refcount table size")?];
        file.read_exact_at(&mut raw, h.refcount_table_offset)
            .map_err(io_err(
                path,
                "qcow2 refcount table",
                h.refcount_table_offset,
            ))?;
        let reftable = be64s(&raw);
        for (e, i) in reftable.iter().zip(0u64..) {
            if e & !OFFSET_MASK != 0 || *e % cluster != 0 || (*e != 0 && *e < cs) {
                return Err(Error::corrupt(
                    path,
                    "qcow2 refcount table",
                    entry_pos(
                        h.refcount_table_offset,
                        i,
                        path,
                        "qcow2 refcount table entry",
                    )?,
                    format!(
                        "refcount block offset {e:#x} is unaligned, in the header cluster or \
                         has reserved bits"
                    ),
                ));
            }
        }
        let (backing, backing_path) = match &h.backing_file {
            Some(name) => {
                let (dev, p) = open_backing(path, name, h.backing_format.as_deref(), ctx)?;
                (Some(dev), Some(p))
            }
            None => (None, None),
        };
        let cached = (CACHE_BYTES / cluster).max(16);
        let slots = usize::try_from(cached)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN);
        let next_free = match next_free {
            Some(n) => n,
            None => fit(
                file_len.checked_next_multiple_of(cs),
                path,
                "qcow2 file end",
            )?,
        };
        Ok(Qcow2Writer {
            state: Mutex::new(State {
                l1,
                l2: LruCache::new(slots),
                reftable,
                reftable_offset: h.refcount_table_offset,
                refblocks: LruCache::new(slots),
                next_free,
                zpos: 0,
                growing: false,
                file_len,
            }),
            file,
            _lock: lock,
            path: path.to_path_buf(),
            header: h,
            geo,
            cluster,
            cluster_len: to_usize(cs, path, "qcow2 cluster size")?,
            per_l2,
            per_l2_len: to_usize(per_l2.get(), path, "qcow2 L2 table entries")?,
            epb,
            backing,
            backing_path,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn cs(&self) -> u64 {
        self.cluster.get()
    }

    /// `v`, or an error naming `what`, a quantity of this image that overflowed.
    fn fit<T>(&self, v: Option<T>, what: &str) -> Result<T> {
        fit(v, &self.path, what)
    }

    /// `a + b` for offsets and counts of this image.
    fn add(&self, a: u64, b: u64, what: &str) -> Result<u64> {
        self.fit(a.checked_add(b), what)
    }

    /// `a - b` where `b <= a` (a position and one before it).
    fn sub(&self, a: u64, b: u64, what: &str) -> Result<u64> {
        self.fit(a.checked_sub(b), what)
    }

    /// `n`, a byte count or table index of this image, as a buffer length or index.
    fn usize(&self, n: u64, what: &str) -> Result<usize> {
        to_usize(n, &self.path, what)
    }

    /// A buffer length or index as a byte count or table index of this image.
    fn u64(&self, n: usize, what: &str) -> Result<u64> {
        to_u64(n, &self.path, what)
    }

    /// The bytes from `from` to `to` (offsets of the image, `origin <= from <= to`) as a range
    /// of a buffer that holds the image from `origin` on.
    fn within(&self, origin: u64, from: u64, to: u64) -> Result<Range<usize>> {
        let at = |x: u64| {
            self.usize(
                self.sub(x, origin, "qcow2 buffer position")?,
                "qcow2 buffer position",
            )
        };
        Ok(at(from)?..at(to)?)
    }

    /// The `n` entries of a table from index `first` on, as a range of the table.
    fn entries(&self, first: u64, n: u64) -> Result<Range<usize>> {
        let end = self.add(first, n, "qcow2 table index")?;
        Ok(self.usize(first, "qcow2 table index")?..self.usize(end, "qcow2 table index")?)
    }

    /// The host offset `i` clusters after `host`.
    fn nth_cluster(&self, host: u64, i: u64) -> Result<u64> {
        let at = i.checked_mul(self.cs()).and_then(|d| d.checked_add(host));
        self.fit(at, "qcow2 host cluster offset")
    }

    /// The guest offset of guest cluster `vcl`.
    fn guest_at(&self, vcl: u64) -> Result<u64> {
        self.fit(vcl.checked_mul(self.cs()), "qcow2 guest offset")
    }

    /// The guest offset where the L2 table that maps guest cluster `vcl` ends.
    fn table_end(&self, vcl: u64) -> Result<u64> {
        let per = self.per_l2;
        let next = (vcl / per)
            .checked_add(1)
            .and_then(|t| t.checked_mul(per.get()));
        self.guest_at(self.fit(next, "qcow2 L2 table end")?)
    }

    fn pwrite(&self, st: &mut State, buf: &[u8], off: u64, what: &'static str) -> Result<()> {
        let len = self.u64(buf.len(), "qcow2 write length")?;
        let end = self.add(off, len, "qcow2 write end")?;
        self.file
            .write_all_at(buf, off)
            .map_err(io_err(&self.path, what, off))?;
        st.file_len = st.file_len.max(end);
        Ok(())
    }

    /// Reads `buf` at `off`, zeros past the end of the file (qemu's tail clusters may be short).
    fn pread(&self, buf: &mut [u8], off: u64, what: &'static str) -> Result<()> {
        let mut at = off;
        let mut rest = buf;
        while !rest.is_empty() {
            match self.file.read_at(rest, at) {
                Ok(0) => break,
                Ok(n) => {
                    at = self.add(at, self.u64(n, "qcow2 read length")?, "qcow2 read end")?;
                    rest = &mut std::mem::take(&mut rest)[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, what, at)(e)),
            }
        }
        rest.fill(0);
        Ok(())
    }

    // ---- refcounts ----

    /// The refcount block at `off`, from the cache or the file.
    fn refblock<'a>(&self, st: &'a mut State, off: u64) -> Result<&'a mut Vec<u8>> {
        if !st.refblocks.contains(&off) {
            let mut b = vec![0u8; self.cluster_len];
            self.pread(&mut b, off, "qcow2 refcount block")?;
            st.refblocks.put(off, b);
        }
        st.refblocks
            .get_mut(&off)
            .ok_or_else(|| Error::corrupt(&self.path, "qcow2 refcount block", off, "cache miss"))
    }

    fn refcount(&self, st: &mut State, cluster: u64) -> Result<u64> {
        let bi = cluster / self.epb;
        let Some(&rb) = usize::try_from(bi).ok().and_then(|i| st.reftable.get(i)) else {
            return Ok(0);
        };
        if rb == 0 {
            return Ok(0);
        }
        let idx = cluster % self.epb;
        let order = self.header.refcount_order;
        Ok(refcount::get(self.refblock(st, rb)?, idx, order))
    }

    /// The host offset of refcount block `bi`, allocating it (and growing the table) if needed.
    fn ensure_refblock(&self, st: &mut State, bi: u64) -> Result<u64> {
        let i = self.usize(bi, "qcow2 refcount table index")?;
        if i >= st.reftable.len() {
            self.grow_reftable(st, bi)?;
        }
        let rb = st.reftable[i];
        if rb != 0 {
            return Ok(rb);
        }
        let cs = self.cs();
        let b = st.next_free;
        st.next_free = self.add(b, cs, "qcow2 refcount block offset")?;
        let mut blk = vec![0u8; self.cluster_len];
        let own = b / self.cluster;
        if own / self.epb == bi {
            refcount::set(&mut blk, own % self.epb, self.header.refcount_order, 1);
        } else {
            // Counted in another block first, so the table never references an uncounted block.
            self.add_refcounts(st, own, 1, 1)?;
        }
        self.pwrite(st, &blk, b, "qcow2 refcount block")?;
        st.refblocks.put(b, blk);
        st.reftable[i] = b;
        if !st.growing {
            let at = entry_pos(
                st.reftable_offset,
                bi,
                &self.path,
                "qcow2 refcount table entry",
            )?;
            self.pwrite(st, &b.to_be_bytes(), at, "qcow2 refcount table")?;
        }
        Ok(b)
    }

    /// Replaces the refcount table by a larger one at the end of the file that has room for
    /// entry `need`: the new table and any new blocks are written, then the header points at
    /// it, then the old table's clusters are freed.
    fn grow_reftable(&self, st: &mut State, need: u64) -> Result<()> {
        if st.growing {
            return Err(Error::corrupt(
                &self.path,
                "qcow2 refcount table",
                st.reftable_offset,
                "refcount table growth did not converge",
            ));
        }
        let cs = self.cs();
        let size = |v: Option<u64>| self.fit(v, "qcow2 refcount table size");
        let table_clusters = |entries: u64| size(entries.checked_mul(8).map(|b| b.div_ceil(cs)));
        let old_len = self.u64(st.reftable.len(), "qcow2 refcount table size")?;
        let old_off = st.reftable_offset;
        let old_clusters = table_clusters(old_len)?;
        // Enough for `need`, for everything up to the new table's end, and some slack.
        let mut entries = size(need.checked_add(1))?.max(size(old_len.checked_mul(2))?);
        let mut clusters = table_clusters(entries)?;
        loop {
            let end_cluster = (st.next_free / self.cluster)
                .checked_add(clusters)
                .and_then(|c| c.checked_add(8));
            let covering = size(end_cluster)?.div_ceil(self.epb.get());
            let covering = size(covering.checked_add(2))?;
            if entries >= covering {
                break;
            }
            entries = covering;
            clusters = table_clusters(entries)?;
        }
        let Some(bytes) = clusters
            .checked_mul(cs)
            .filter(|&b| b <= MAX_REFTABLE_BYTES)
        else {
            return Err(Error::unsupported(
                &self.path,
                "the refcount table would exceed 8 MiB (image too large for its cluster size)",
            ));
        };
        let len = self.usize(bytes, "qcow2 refcount table size")?;
        let clusters32 = self.fit(
            u32::try_from(clusters).ok(),
            "qcow2 refcount table clusters",
        )?;
        let start = st.next_free;
        st.next_free = self.add(start, bytes, "qcow2 refcount table end")?;
        st.growing = true;
        st.reftable.resize(len / 8, 0);
        let r = self.add_refcounts(st, start / self.cluster, clusters, 1);
        st.growing = false;
        r?;
        let mut raw = Vec::with_capacity(len);
        for e in &st.reftable {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize(len, 0);
        self.pwrite(st, &raw, start, "qcow2 refcount table")?;
        // refcount_table_offset and refcount_table_clusters, adjacent in RawHeader.
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(U64::<BigEndian>::new(start).as_bytes());
        hdr[8..].copy_from_slice(U32::<BigEndian>::new(clusters32).as_bytes());
        self.pwrite(st, &hdr, header::REFCOUNT_TABLE_AT, "qcow2 header")?;
        st.reftable_offset = start;
        self.add_refcounts(st, old_off / self.cluster, old_clusters, -1)
    }

    /// Adds `delta` to the refcounts of clusters `[first, first+n)`, one write per block.
    fn add_refcounts(&self, st: &mut State, first: u64, n: u64, delta: i64) -> Result<()> {
        let epb = self.epb;
        let order = self.header.refcount_order;
        let end = self.add(first, n, "qcow2 cluster number")?;
        let mut c = first;
        while c < end {
            let bi = c / epb;
            let block_end = bi.checked_add(1).and_then(|b| b.checked_mul(epb.get()));
            let stop = end.min(self.fit(block_end, "qcow2 cluster number")?);
            let rb = self.ensure_refblock(st, bi)?;
            let blk = self.refblock(st, rb)?;
            let (mut lo, mut hi) = (usize::MAX, 0);
            for cl in c..stop {
                let idx = cl % epb;
                let v = refcount::get(blk, idx, order);
                let nv = v
                    .checked_add_signed(delta)
                    .filter(|&x| x <= refcount::max_value(order));
                let Some(nv) = nv else {
                    return Err(Error::corrupt(
                        &self.path,
                        "qcow2 refcount block",
                        rb,
                        format!("refcount of cluster {cl} would leave its range ({v} {delta:+})"),
                    ));
                };
                refcount::set(blk, idx, order, nv);
                let (a, b) = refcount::byte_span(idx, order);
                lo = lo.min(a);
                hi = hi.max(b);
            }
            let span = blk[lo..hi].to_vec();
            let at = self.add(
                rb,
                self.u64(lo, "qcow2 refcount offset")?,
                "qcow2 refcount offset",
            )?;
            self.pwrite(st, &span, at, "qcow2 refcount block")?;
            c = stop;
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters at the end of the file with refcount 1 (written before
    /// anything may reference them). Returns the first one's host offset.
    fn alloc(&self, st: &mut State, n: u64) -> Result<u64> {
        let cs = self.cs();
        let at = |v: Option<u64>| self.fit(v, "qcow2 cluster allocation");
        let max_skip = at(MAX_SKIP_CLUSTERS.checked_mul(cs))?;
        // Clusters past the end that are already counted (a file someone truncated) are skipped.
        let mut start = st.next_free;
        let mut c = start / self.cluster;
        while c < at((start / self.cluster).checked_add(n))? {
            if self.refcount(st, c)? != 0 {
                start = at(c.checked_add(1).and_then(|x| x.checked_mul(cs)))?;
                if at(start.checked_sub(st.next_free))? > max_skip {
                    return Err(Error::corrupt(
                        &self.path,
                        "qcow2 refcount table",
                        st.reftable_offset,
                        format!(
                            "clusters past the end of the file ({:#x}) are counted as used",
                            st.next_free
                        ),
                    ));
                }
            }
            c = at(c.checked_add(1))?;
        }
        st.next_free = at(n.checked_mul(cs).and_then(|b| b.checked_add(start)))?;
        self.add_refcounts(st, start / self.cluster, n, 1)?;
        Ok(start)
    }

    // ---- mapping ----

    fn l2_table<'a>(&self, st: &'a mut State, off: u64) -> Result<&'a mut Vec<u64>> {
        if !st.l2.contains(&off) {
            let mut raw = vec![0u8; self.cluster_len];
            self.pread(&mut raw, off, "qcow2 L2 table")?;
            st.l2.put(off, be64s(&raw));
        }
        st.l2
            .get_mut(&off)
            .ok_or_else(|| Error::corrupt(&self.path, "qcow2 L2 table", off, "cache miss"))
    }

    /// The byte position of L1 entry `l1i`.
    fn l1_pos(&self, l1i: u64) -> Result<u64> {
        entry_pos(
            self.header.l1_table_offset,
            l1i,
            &self.path,
            "qcow2 L1 entry",
        )
    }

    /// L1 entry `l1i`, or an error naming it when it lies past the table.
    fn l1_slot<'a>(&self, st: &'a mut State, l1i: u64) -> Result<&'a mut u64> {
        let len = st.l1.len();
        usize::try_from(l1i)
            .ok()
            .and_then(|i| st.l1.get_mut(i))
            .ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    "qcow2 L1 table",
                    self.header.l1_table_offset,
                    format!("entry {l1i} is past the table's {len} entries"),
                )
            })
    }

    fn l2_offset(&self, st: &mut State, l1i: u64) -> Result<u64> {
        let e = *self.l1_slot(st, l1i)?;
        self.geo.l2_offset(e, &self.path, self.l1_pos(l1i)?)
    }

    /// Points L1 entry `l1i` at the L2 table at `t`, in memory and in the file.
    fn set_l1(&self, st: &mut State, l1i: u64, t: u64) -> Result<()> {
        *self.l1_slot(st, l1i)? = t | COPIED;
        let at = self.l1_pos(l1i)?;
        self.pwrite(st, &(t | COPIED).to_be_bytes(), at, "qcow2 L1 table")
    }

    /// The L2 entry of guest cluster `vcl` (0 when its table is not allocated).
    fn entry(&self, st: &mut State, vcl: u64) -> Result<(u64, u64)> {
        let per = self.per_l2;
        let l2 = self.l2_offset(st, vcl / per)?;
        if l2 == 0 {
            return Ok((0, 0));
        }
        let idx = vcl % per;
        let pos = entry_pos(l2, idx, &self.path, "qcow2 L2 entry")?;
        Ok((
            self.l2_table(st, l2)?[self.usize(idx, "qcow2 L2 index")?],
            pos,
        ))
    }

    fn classify(&self, st: &State, word: u64, pos: u64) -> Result<Mapping> {
        let geo = Geometry {
            file_len: st.file_len.max(st.next_free),
            ..self.geo
        };
        geo.classify(word, 0, 0, &self.path, pos)
    }

    /// Mapping of `pos` and how far it continues (same kind, contiguous hosts), within one cluster
    /// for compressed data and within one L2 table otherwise.
    fn map_run(&self, pos: u64, max: u64) -> Result<(Mapping, u64)> {
        let mut st = self.state.lock();
        let cs = self.cs();
        let vcl = pos / self.cluster;
        // Saturating, then clamped to the table's end at once.
        let limit = pos.saturating_add(max).min(self.table_end(vcl)?);
        let cluster_end = self.guest_at(self.fit(vcl.checked_add(1), "qcow2 guest cluster")?)?;
        let run = |end: u64| self.sub(end, pos, "qcow2 mapping run");
        let (w, at) = self.entry(&mut st, vcl)?;
        let first = match self.classify(&st, w, at)? {
            Mapping::Data { host } => Mapping::Data {
                host: self.add(host, pos % self.cluster, "qcow2 host offset")?,
            },
            m @ Mapping::Compressed { .. } => {
                return Ok((m, run(cluster_end.min(limit))?));
            }
            m => m,
        };
        let mut end = cluster_end.min(limit);
        while end < limit {
            let (w, at) = self.entry(&mut st, end / self.cluster)?;
            let next = self.classify(&st, w, at)?;
            if !first.continues_with(next, run(end)?) {
                break;
            }
            end = self.add(end, cs, "qcow2 guest offset")?.min(limit);
        }
        Ok((first, run(end)?))
    }

    fn inflate(&self, host: u64, size: u64, out: &mut [u8]) -> Result<()> {
        let mut input = vec![0u8; self.usize(size, "qcow2 compressed cluster size")?];
        self.pread(&mut input, host, "qcow2 compressed cluster")?;
        cluster::decompress(self.header.compression, &input, out)
            .map_err(|d| Error::corrupt(&self.path, "qcow2 compressed cluster", host, d))
    }

    /// What guest cluster `vcl` reads as now, whole (for copy-on-write).
    fn old_cluster(&self, m: Mapping, vcl: u64, out: &mut [u8]) -> Result<()> {
        match m {
            Mapping::Data { host } => self.pread(out, host, "qcow2 data cluster"),
            Mapping::Zero => {
                out.fill(0);
                Ok(())
            }
            Mapping::Unallocated => {
                let start = self.guest_at(vcl)?;
                // The image's last cluster may be partial: what lies past its end reads as zeros.
                let left = self.sub(self.len(), start, "qcow2 guest cluster")?;
                let n = usize::try_from(left).map_or(out.len(), |l| l.min(out.len()));
                read_backing(self.backing.as_ref(), &mut out[..n], start)?;
                out[n..].fill(0);
                Ok(())
            }
            Mapping::Compressed { host, size } => self.inflate(host, size, out),
        }
    }

    /// True when `m` for the cluster at `start` reads as zeros without looking at data.
    fn reads_zero(&self, m: Mapping, start: u64) -> bool {
        match m {
            Mapping::Zero => true,
            Mapping::Unallocated => self.backing.as_ref().is_none_or(|b| start >= b.len()),
            _ => false,
        }
    }

    // ---- writing ----

    /// Writes `buf` at guest offset `off` for clusters of one L2 table.
    fn write_table(&self, st: &mut State, buf: &[u8], off: u64) -> Result<()> {
        let cs = self.cs();
        let per = self.per_l2;
        let end = self.add(off, self.u64(buf.len(), "qcow2 write")?, "qcow2 write end")?;
        let first_vcl = off / self.cluster;
        let l1i = first_vcl / per;
        let l2 = self.l2_offset(st, l1i)?;
        // Only the entries this write touches are copied out (a whole table is 64 KiB with
        // qemu's default clusters, and most writes touch one entry).
        let base = first_vcl % per;
        let last_vcl = self.sub(end, 1, "qcow2 write end")? / self.cluster;
        let count = self.add(
            self.sub(last_vcl, first_vcl, "qcow2 clusters written")?,
            1,
            "qcow2 clusters written",
        )?;
        let span = self.entries(base, count)?;
        let orig: Vec<u64> = if l2 == 0 {
            vec![0u64; span.len()]
        } else {
            self.l2_table(st, l2)?[span.clone()].to_vec()
        };
        let mut table = orig.clone();
        let v3 = self.header.version >= 3;
        // Host clusters to decrement: (first cluster, count).
        let mut frees: Vec<(u64, u64)> = Vec::new();
        // A run of guest clusters that get new host clusters: (first vcl, contents).
        let mut run: Option<(u64, Vec<u8>)> = None;
        // Entry `idx` of `table` (and `k` of the clusters written) is guest cluster `vcl`.
        for (idx, k) in (0..table.len()).zip(0u64..) {
            let vcl = self.add(first_vcl, k, "qcow2 guest cluster")?;
            let cstart = self.guest_at(vcl)?;
            let cnext = self.add(cstart, cs, "qcow2 guest offset")?;
            let cend = cnext.min(self.len());
            let ws = off.max(cstart);
            let we = end.min(cnext);
            let piece = &buf[self.within(off, ws, we)?];
            let word = table[idx];
            let pos = entry_pos(
                l2,
                self.add(base, k, "qcow2 L2 index")?,
                &self.path,
                "qcow2 L2 entry",
            )?;
            let m = self.classify(st, word, pos)?;
            let full = ws == cstart && we >= cend;
            let zero = is_zero(piece);
            let prealloc = if word & COMPRESSED == 0 {
                word & OFFSET_MASK
            } else {
                0
            };
            let mut fresh: Option<Cow<[u8]>> = None;
            match m {
                _ if zero && self.reads_zero(m, cstart) => {}
                Mapping::Data { host } if word & COPIED != 0 => {
                    if zero && full && v3 {
                        table[idx] = host | COPIED | ZERO;
                    } else {
                        let into = self.sub(ws, cstart, "qcow2 cluster position")?;
                        let at = self.add(host, into, "qcow2 data offset")?;
                        self.pwrite(st, piece, at, "qcow2 data cluster")?;
                    }
                }
                _ if zero && full && v3 => {
                    table[idx] = ZERO;
                    self.note_free(m, word, &mut frees)?;
                }
                Mapping::Zero if prealloc != 0 && word & COPIED != 0 => {
                    // A preallocated zero cluster: its host cluster is ours to fill.
                    let mut c = vec![0u8; self.cluster_len];
                    c[self.within(cstart, ws, we)?].copy_from_slice(piece);
                    self.pwrite(st, &c, prealloc, "qcow2 data cluster")?;
                    table[idx] = prealloc | COPIED;
                }
                _ if piece.len() == self.cluster_len => {
                    // A whole cluster: its bytes go to the run as they are, no copy-on-write.
                    fresh = Some(Cow::Borrowed(piece));
                    self.note_free(m, word, &mut frees)?;
                }
                _ => {
                    let mut c = vec![0u8; self.cluster_len];
                    if !full {
                        self.old_cluster(m, vcl, &mut c)?;
                    }
                    c[self.within(cstart, ws, we)?].copy_from_slice(piece);
                    fresh = Some(Cow::Owned(c));
                    self.note_free(m, word, &mut frees)?;
                }
            }
            match (fresh, &mut run) {
                (Some(c), Some((_, data))) => data.extend_from_slice(&c),
                (Some(c), None) => {
                    // Room for every cluster up to the end of this write.
                    let room = self
                        .sub(end, cstart, "qcow2 write")?
                        .checked_next_multiple_of(cs);
                    let room = self.fit(room, "qcow2 write")?;
                    let mut data = Vec::with_capacity(self.usize(room, "qcow2 write")?);
                    data.extend_from_slice(&c);
                    run = Some((vcl, data));
                }
                (None, _) => self.flush_run(st, run.take(), &mut table, base)?,
            }
        }
        self.flush_run(st, run.take(), &mut table, base)?;
        if table != orig {
            if l2 == 0 {
                let mut full = vec![0u64; self.per_l2_len];
                full[span].copy_from_slice(&table);
                self.new_l2_table(st, l1i, full)?;
            } else {
                let lo = table
                    .iter()
                    .zip(&orig)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let same_at_end = table
                    .iter()
                    .rev()
                    .zip(orig.iter().rev())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let hi = table.len().checked_sub(same_at_end);
                let hi = self.fit(hi, "qcow2 L2 entries changed")?;
                let raw: Vec<u8> = table[lo..hi].iter().flat_map(|e| e.to_be_bytes()).collect();
                let at = self.add(base, self.u64(lo, "qcow2 L2 index")?, "qcow2 L2 index")?;
                let pos = entry_pos(l2, at, &self.path, "qcow2 L2 entry")?;
                self.pwrite(st, &raw, pos, "qcow2 L2 table")?;
                self.l2_table(st, l2)?[span][lo..hi].copy_from_slice(&table[lo..hi]);
            }
        }
        for (c, n) in frees {
            self.add_refcounts(st, c, n, -1)?;
        }
        Ok(())
    }

    /// Records the host clusters a replaced entry held, to be released once unreferenced.
    fn note_free(&self, m: Mapping, word: u64, frees: &mut Vec<(u64, u64)>) -> Result<()> {
        match m {
            Mapping::Compressed { host, size } => {
                // `size` is at least 1 (whole sectors less the offset inside the first).
                let last_byte = self.sub(
                    self.add(host, size, "qcow2 compressed cluster end")?,
                    1,
                    "qcow2 compressed cluster end",
                )?;
                let first = host / self.cluster;
                let last = last_byte / self.cluster;
                let n = self.sub(last, first, "qcow2 compressed cluster span")?;
                frees.push((first, self.add(n, 1, "qcow2 compressed cluster span")?));
            }
            Mapping::Data { host } => frees.push((host / self.cluster, 1)),
            Mapping::Zero if word & OFFSET_MASK != 0 => {
                frees.push(((word & OFFSET_MASK) / self.cluster, 1));
            }
            _ => {}
        }
        Ok(())
    }

    /// Allocates host clusters for a run of fresh guest clusters, writes them, and points the
    /// (in-memory) table entries at them; `table` holds the entries from index `base` on.
    fn flush_run(
        &self,
        st: &mut State,
        run: Option<(u64, Vec<u8>)>,
        table: &mut [u64],
        base: u64,
    ) -> Result<()> {
        let Some((first, data)) = run else {
            return Ok(());
        };
        let n = self.u64(data.len(), "qcow2 data run")? / self.cluster;
        let host = self.alloc(st, n)?;
        self.pwrite(st, &data, host, "qcow2 data cluster")?;
        let at = self.sub(first % self.per_l2, base, "qcow2 L2 index")?;
        let at = self.usize(at, "qcow2 L2 index")?;
        for (e, i) in table[at..].iter_mut().zip(0..n) {
            *e = self.nth_cluster(host, i)? | COPIED;
        }
        Ok(())
    }

    /// Stores one whole guest cluster compressed (`data` is its compressed form, as
    /// `compress_cluster` makes it). The cluster must not be allocated yet (a fresh image).
    /// Compressed clusters are packed back to back at byte granularity, as qemu's
    /// `qcow2_alloc_bytes` packs them: one that does not fit in the rest of the current host
    /// cluster continues into the next one when that is the next cluster allocated (every host
    /// cluster it touches is counted once more); only when something else was allocated there
    /// meanwhile (an L2 table, a cluster stored plain) does it start a fresh cluster.
    pub fn write_compressed(&self, vcl: u64, data: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        self.write_compressed_locked(&mut st, vcl, data)
    }

    /// `convert -n -c`: stores guest cluster `vcl` compressed (`z`) when the image holds no
    /// data for it (unallocated or a zero-flag entry without a host cluster), else writes its
    /// plain bytes (`plain`, the whole cluster) in place. qemu fails with EIO on such a cluster
    /// ("compression can't overwrite anything", qcow2-cluster.c); writing it plain keeps the
    /// copy whole at the cost of that cluster's compression. Returns whether it was compressed.
    pub fn write_compressed_or_in_place(&self, vcl: u64, z: &[u8], plain: &[u8]) -> Result<bool> {
        {
            let mut st = self.state.lock();
            let (word, _) = self.entry(&mut st, vcl)?;
            if word & !ZERO_FLAG == 0 {
                self.write_compressed_locked(&mut st, vcl, z)?;
                return Ok(true);
            }
        }
        self.write_at(plain, self.guest_at(vcl)?)?;
        Ok(false)
    }

    fn write_compressed_locked(&self, st: &mut State, vcl: u64, data: &[u8]) -> Result<()> {
        let cs = self.cs();
        let cb = self.geo.cluster_bits;
        let size = self.u64(data.len(), "qcow2 compressed cluster size")?;
        let inside = vcl.checked_mul(cs).is_some_and(|at| at < self.len());
        if !inside || data.is_empty() || size > cs {
            return Err(Error::OutOfRange {
                offset: vcl << cb,
                len: size,
                size: self.len(),
            });
        }
        // The L2 table first, as qemu's qcow2_alloc_compressed_cluster_offset takes it before
        // the bytes: a table allocated after them would land between two compressed clusters
        // and break the packing (18,944 bytes more on 64 MiB of text).
        let l1i = vcl / self.per_l2;
        if self.l2_offset(st, l1i)? == 0 {
            self.new_l2_table(st, l1i, vec![0u64; self.per_l2_len])?;
        }
        let max = refcount::max_value(self.header.refcount_order);
        let z = st.zpos;
        if z != 0 && self.refcount(st, z / self.cluster)? >= max {
            st.zpos = 0;
        }
        let host = if st.zpos == 0 {
            self.alloc(st, 1)?
        } else {
            let h = st.zpos;
            // The start of the host cluster after the one `h` is in.
            let next_cluster = (h / self.cluster).checked_add(1);
            let boundary = self.nth_cluster(0, self.fit(next_cluster, "qcow2 host cluster")?)?;
            if self.sub(boundary, h, "qcow2 compressed cluster room")? >= size {
                self.add_refcounts(st, h / self.cluster, 1, 1)?;
                h
            } else {
                // `size < cs`, so one more cluster always holds the rest.
                let next = self.alloc(st, 1)?;
                if next == boundary {
                    self.add_refcounts(st, h / self.cluster, 1, 1)?;
                    h
                } else {
                    next
                }
            }
        };
        self.pwrite(st, data, host, "qcow2 compressed cluster")?;
        let data_end = self.add(host, size, "qcow2 compressed cluster end")?;
        st.zpos = if data_end % self.cluster == 0 {
            0
        } else {
            data_end
        };
        // qcow2.txt: x = 62 - (cluster_bits - 8) bits of host offset, then the count of
        // 512-byte sectors after the first that the data touches.
        let shift = cb.checked_sub(8).and_then(|b| 62u32.checked_sub(b));
        let shift = self.fit(shift, "qcow2 compressed descriptor")?;
        let last_byte = self.sub(data_end, 1, "qcow2 compressed cluster end")?;
        let sectors = self.sub(
            last_byte / SECTOR,
            host / SECTOR,
            "qcow2 compressed sectors",
        )?;
        let word = COMPRESSED | (sectors << shift) | host;
        self.set_fresh(st, vcl, 1, |_| Ok(word))
    }

    /// Allocates `n` contiguous host clusters (their refcounts written first) for data the caller
    /// writes there itself (`write_data_at`, outside the lock, so several threads can write at
    /// once) and then maps with `map_fresh`. Returns the first one's host offset.
    pub fn reserve(&self, n: u64) -> Result<u64> {
        let mut st = self.state.lock();
        self.alloc(&mut st, n)
    }

    /// Writes data into clusters `reserve` returned (no metadata changes).
    pub fn write_data_at(&self, buf: &[u8], host: u64) -> Result<()> {
        self.file
            .write_all_at(buf, host)
            .map_err(io_err(&self.path, "qcow2 data cluster", host))
    }

    /// Points the guest clusters holding `len` bytes from cluster `vcl` on at the host clusters
    /// from `host` on, which `reserve` allocated and whose data is written. The guest clusters
    /// must be unallocated (a fresh image, as `convert` fills it).
    pub fn map_fresh(&self, vcl: u64, host: u64, len: u64) -> Result<()> {
        let n = len.div_ceil(self.cs());
        let end = self.add(host, len, "qcow2 data end")?;
        let mut st = self.state.lock();
        st.file_len = st.file_len.max(end);
        self.set_fresh(&mut st, vcl, n, |i| Ok(self.nth_cluster(host, i)? | COPIED))
    }

    /// Sets the L2 entries of unallocated guest clusters `vcl..vcl+n` to `word(i)`, allocating L2
    /// tables as needed: one write per table touched, then the L1 entry of a new table.
    fn set_fresh(
        &self,
        st: &mut State,
        vcl: u64,
        n: u64,
        word: impl Fn(u64) -> Result<u64>,
    ) -> Result<()> {
        let cb = self.geo.cluster_bits;
        let per = self.per_l2;
        let last = vcl
            .checked_add(n)
            .and_then(|e| e.checked_sub(1))
            .and_then(|l| l.checked_mul(self.cs()));
        if n == 0 || last.is_none_or(|l| l >= self.len()) {
            return Err(Error::OutOfRange {
                offset: vcl << cb,
                len: n << cb,
                size: self.len(),
            });
        }
        let mut i = 0;
        while i < n {
            // `vcl + n` did not overflow (checked above), so neither do these.
            let v = self.add(vcl, i, "qcow2 guest cluster")?;
            let l1i = v / per;
            let first = v % per;
            let m = self.sub(per.get(), first, "qcow2 L2 index")?.min(self.sub(
                n,
                i,
                "qcow2 clusters mapped",
            )?);
            let span = self.entries(first, m)?;
            let l2 = self.l2_offset(st, l1i)?;
            if l2 == 0 {
                let mut table = vec![0u64; self.per_l2_len];
                for (e, k) in table[span].iter_mut().zip(i..) {
                    *e = word(k)?;
                }
                self.new_l2_table(st, l1i, table)?;
            } else {
                let table = self.l2_table(st, l2)?;
                // A zero-flag entry without a host cluster holds nothing to free or leak.
                if let Some((_, c)) = table[span.clone()]
                    .iter()
                    .zip(v..)
                    .find(|&(&e, _)| e & !ZERO_FLAG != 0)
                {
                    return Err(Error::unsupported(
                        &self.path,
                        format!("new data for cluster {c}, which is already allocated"),
                    ));
                }
                for (e, k) in table[span.clone()].iter_mut().zip(i..) {
                    *e = word(k)?;
                }
                let raw: Vec<u8> = table[span].iter().flat_map(|e| e.to_be_bytes()).collect();
                let at = entry_pos(l2, first, &self.path, "qcow2 L2 entry")?;
                self.pwrite(st, &raw, at, "qcow2 L2 table")?;
            }
            i = self.add(i, m, "qcow2 clusters mapped")?;
        }
        Ok(())
    }

    /// Allocates L2 table `l1i` holding `table`, writes it and points the L1 entry at it.
    fn new_l2_table(&self, st: &mut State, l1i: u64, table: Vec<u64>) -> Result<()> {
        let t = self.alloc(st, 1)?;
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.pwrite(st, &raw, t, "qcow2 L2 table")?;
        st.l2.put(t, table);
        self.set_l1(st, l1i, t)
    }

    /// Compresses one whole cluster as this image's compression type stores it (raw deflate
    /// with qemu's 4 KiB window, or a zstd frame). None when it would not shrink: store it plain.
    pub fn compress_cluster(&self, data: &[u8]) -> Option<Vec<u8>> {
        compress(self.header.compression, data)
    }

    /// Bytes of host file in use (its length).
    pub fn file_len(&self) -> u64 {
        self.state.lock().file_len
    }

    /// Ends writing: extends the file to a whole number of clusters, or, when it ends inside the
    /// host cluster compressed clusters are being packed into (nothing allocated after it), to a
    /// whole sector as qemu leaves it (`qemu-img check` counts a compressed cluster ending
    /// mid-sector as past the end of the file). Syncing is the caller's choice (`flush`).
    pub fn finish(&self) -> Result<()> {
        let mut st = self.state.lock();
        let cs = self.cs();
        let packing = st.zpos != 0 && st.zpos.checked_next_multiple_of(cs) == Some(st.next_free);
        let end = if packing {
            st.file_len.checked_next_multiple_of(SECTOR)
        } else {
            st.file_len.checked_next_multiple_of(cs)
        };
        let end = self.fit(end, "qcow2 file end")?;
        if end > st.file_len {
            self.file
                .set_len(end)
                .map_err(io_err(&self.path, "qcow2 file end", end))?;
            st.file_len = end;
        }
        Ok(())
    }
}

thread_local! {
    // A zstd context is ~1 MiB at level 3: one per thread, reused for every cluster.
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A zstd compressor that writes frames as qemu's `qcow2_zstd_compress` does: zstd's default
/// level (3; level 1 made images about 6% larger) and no content-size field (qemu streams the
/// cluster without pledging its size; the field costs 1-8 bytes per cluster, ~9 KB on 64 MiB).
fn zstd_compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(0)?;
    c.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false))?;
    Ok(c)
}

/// Compresses `data` for a compressed cluster; None when the result is not smaller.
pub(crate) fn compress(kind: Compression, data: &[u8]) -> Option<Vec<u8>> {
    let limit = data.len().checked_sub(1)?;
    let out = match kind {
        Compression::Zlib => super::deflate::compress(data, limit)?,
        Compression::Zstd => ZSTD.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(zstd_compressor().ok()?);
            }
            cell.as_mut()?.compress(data).ok()
        })?,
    };
    (out.len() <= limit).then_some(out)
}

impl BlockDevice for Qcow2Writer {
    fn len(&self) -> u64 {
        self.header.size
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, self.u64(buf.len(), "qcow2 read")?, self.len())?;
        let mut pos = off;
        let mut rest = buf;
        while !rest.is_empty() {
            let (m, run) = self.map_run(pos, self.u64(rest.len(), "qcow2 read")?)?;
            let (dst, tail) =
                std::mem::take(&mut rest).split_at_mut(self.usize(run, "qcow2 read")?);
            rest = tail;
            match m {
                Mapping::Data { host } => self.pread(dst, host, "qcow2 data cluster")?,
                Mapping::Zero => dst.fill(0),
                Mapping::Unallocated => read_backing(self.backing.as_ref(), dst, pos)?,
                Mapping::Compressed { host, size } => {
                    let mut c = vec![0u8; self.cluster_len];
                    self.inflate(host, size, &mut c)?;
                    let at = self.usize(pos % self.cluster, "qcow2 cluster position")?;
                    dst.copy_from_slice(&c[at..][..dst.len()]);
                }
            }
            pos = self.add(pos, run, "qcow2 read")?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let len = self.u64(buf.len(), "qcow2 write")?;
        check_range(off, len, self.len())?;
        let mut st = self.state.lock();
        let mut pos = off;
        let end = self.add(off, len, "qcow2 write end")?;
        while pos < end {
            let stop = self.table_end(pos / self.cluster)?.min(end);
            self.write_table(&mut st, &buf[self.within(off, pos, stop)?], pos)?;
            pos = stop;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(io_err(&self.path, "flush", 0))
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len())?;
        let end = self.add(off, len, "qcow2 extents end")?;
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let (m, run) = self.map_run(pos, self.sub(end, pos, "qcow2 extents")?)?;
            super::push_mapping(&mut out, self.backing.as_ref(), pos, run, m)?;
            pos = self.add(pos, run, "qcow2 extents")?;
        }
        Ok(out)
    }

    fn backing(&self) -> Option<&Arc<dyn BlockDevice>> {
        self.backing.as_ref()
    }
}

impl Describe for Qcow2Writer {
    fn info(&self) -> Result<LayerInfo> {
        let h = &self.header;
        Ok(LayerInfo {
            filename: self.path.clone(),
            format: "qcow2".into(),
            subformat: Some(format!("v{}", h.version)),
            virtual_size: h.size,
            disk_size: (self.file.metadata().ok())
                .and_then(|m| m.blocks().checked_mul(512))
                .unwrap_or(0),
            cluster_size: Some(h.cluster_size()),
            backing_filename: h.backing_file.clone(),
            full_backing_filename: self.backing_path.clone(),
            backing_format: h.backing_format.clone(),
            files: vec![self.path.clone()],
            specific: vec![(
                "compat".to_string(),
                json!(if h.version >= 3 { "1.1" } else { "0.10" }),
            )],
            qemu_specific: Some(super::qemu_specific(h)),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header cluster laid out field by field at qcow2.txt's byte positions, independently
    /// of the typed structures, to pin the bytes `header_bytes` writes.
    fn by_hand(o: &CreateOptions, cb: u32, l1_size: u32, backing_at: u64) -> Vec<u8> {
        let mut h = vec![0u8; 1 << cb];
        let mut put = |at: usize, v: &[u8]| h[at..][..v.len()].copy_from_slice(v);
        put(0, b"QFI\xfb");
        put(4, &(if o.compat_v2 { 2u32 } else { 3 }).to_be_bytes());
        put(20, &cb.to_be_bytes());
        put(24, &o.size.to_be_bytes());
        put(36, &l1_size.to_be_bytes());
        put(40, &(3u64 << cb).to_be_bytes());
        put(48, &(1u64 << cb).to_be_bytes());
        put(56, &1u32.to_be_bytes());
        let zstd = o.compression == Compression::Zstd;
        let mut pos = 72;
        if !o.compat_v2 {
            put(72, &(u64::from(zstd) << 3).to_be_bytes());
            put(80, &u64::from(o.lazy_refcounts).to_be_bytes());
            put(96, &4u32.to_be_bytes());
            put(100, &112u32.to_be_bytes());
            put(104, &[u8::from(zstd)]);
            pos = 112;
        }
        if let Some((name, fmt)) = &o.backing {
            let fmt_len = u32::try_from(fmt.len()).unwrap();
            let ext = [
                &0xe279_2acau32.to_be_bytes()[..],
                &fmt_len.to_be_bytes(),
                fmt.as_bytes(),
            ];
            put(pos, &ext.concat());
            put(usize::try_from(backing_at).unwrap(), name.as_bytes());
            put(8, &backing_at.to_be_bytes());
            put(16, &u32::try_from(name.len()).unwrap().to_be_bytes());
        }
        h
    }

    #[test]
    fn header_bytes_layout_and_parse_back() {
        let p = Path::new("t.qcow2");
        for (v2, zstd, backing) in [
            (false, false, false),
            (false, true, true),
            (true, false, true),
        ] {
            let o = CreateOptions {
                size: 5 << 20,
                cluster_size: 4096,
                compat_v2: v2,
                compression: if zstd {
                    Compression::Zstd
                } else {
                    Compression::Zlib
                },
                backing: backing.then(|| ("base.qcow2".to_string(), "qcow2".to_string())),
                lazy_refcounts: !v2,
                ..CreateOptions::default()
            };
            let got = header_bytes(&o, p, 12, 3).unwrap();
            // Extensions start after the header; the name after the padded extension and the
            // end marker.
            let at = if v2 { 72 } else { 112 } + 8 + 8 + 8;
            assert_eq!(got, by_hand(&o, 12, 3, at));
            let h = Header::parse(&got, p, 4096).unwrap();
            assert_eq!(
                (h.version, h.size, h.l1_size),
                (if v2 { 2 } else { 3 }, 5 << 20, 3)
            );
            assert_eq!(h.compression == Compression::Zstd, zstd);
            assert_eq!(h.backing_file.is_some(), backing);
            assert_eq!(h.backing_format.as_deref(), backing.then_some("qcow2"));
            assert_eq!(h.compatible_features.bits(), u64::from(!v2));
        }
    }

    /// The header of a new 1 MiB image of 4 KiB clusters (one L1 entry).
    fn small_header() -> Vec<u8> {
        let o = CreateOptions {
            size: 1 << 20,
            cluster_size: 4096,
            ..CreateOptions::default()
        };
        header_bytes(&o, Path::new("t.qcow2"), 12, 1).unwrap()
    }

    #[test]
    fn the_first_read_is_sized_by_the_announced_cluster() {
        let mut h = small_header();
        assert_eq!(super::header::announced_cluster_size(&h), Some(4096));
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        assert_eq!(super::header::announced_cluster_size(&h), Some(65536));
        for bits in [8u32, 22, u32::MAX] {
            h[20..24].copy_from_slice(&bits.to_be_bytes());
            assert_eq!(super::header::announced_cluster_size(&h), None, "{bits}");
        }
        assert_eq!(super::header::announced_cluster_size(&h[..71]), None);
    }

    #[test]
    fn unknown_incompatible_bits_are_named() {
        let p = Path::new("t.qcow2");
        let mut h = small_header();
        let bits = (1u64 << 5) | (1 << 40) | Incompatible::DIRTY.bits();
        h[72..80].copy_from_slice(&bits.to_be_bytes());
        let e = Header::parse(&h, p, 4096).unwrap_err().to_string();
        assert!(e.ends_with("not supported: bit 5, bit 40"), "{e}");
    }

    #[test]
    fn short_headers_are_truncated_not_panics() {
        let p = Path::new("t.qcow2");
        let full = small_header();
        for (len, what) in [
            (0, "qcow2 header"),
            (71, "qcow2 header"),
            (103, "qcow2 v3 header"),
        ] {
            match Header::parse(&full[..len], p, u64::try_from(len).unwrap()) {
                Err(Error::Truncated { what: w, .. }) => assert_eq!(w, what, "at {len}"),
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        // header_length 112 but only 110 bytes there.
        assert!(matches!(
            Header::parse(&full[..110], p, 110),
            Err(Error::Truncated { len: 112, .. })
        ));
    }

    #[test]
    fn zstd_clusters_carry_no_content_size_as_qemu_writes_them() {
        let text: Vec<u8> = (0..65536usize)
            .map(|i| b"the quick brown fox "[i % 20])
            .collect();
        for _ in 0..2 {
            // The second round reuses the thread's compressor.
            let z = compress(Compression::Zstd, &text).expect("text compresses");
            assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
            // Frame header descriptor (RFC 8878 3.1.1.1.1): FCS flag (bits 7-6) and
            // Single_Segment (bit 5) both zero means no Frame_Content_Size field.
            assert_eq!(z[4] & 0xe0, 0, "descriptor {:#04x}", z[4]);
            let mut back = vec![0u8; text.len()];
            super::super::cluster::decompress(Compression::Zstd, &z, &mut back).unwrap();
            assert_eq!(back, text);
        }
    }
}
