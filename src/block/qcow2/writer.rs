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
#![allow(unsafe_code)] // an aligned view of a buffer for zero detection; each block says why it is sound.

use super::cluster;
use super::header::{
    self, Compatible, Compression, Header, Incompatible, RawCompressionType, RawExtension,
    RawHeader, RawHeaderV3, MAGIC,
};
use super::refcount;
use super::table::{Geometry, Mapping, OFFSET_MASK, ZERO_FLAG};
use crate::block::error::{Error, Result};
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
use std::num::NonZeroUsize;
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
/// Size of the refcount table qemu refuses (8 MiB), and so do we when growing ours.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;

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
fn header_bytes(o: &CreateOptions, cluster_bits: u32, l1_size: u32) -> Result<Vec<u8>> {
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
    let mut pos = if o.compat_v2 {
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
            header_length: (header::V3_COMPRESSION_LEN as u32).into(),
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
        let ext_len = size_of::<RawExtension>();
        let need = pos + ext_len + fmt.len().div_ceil(8) * 8 + ext_len + name.len();
        if name.len() > header::MAX_BACKING_NAME as usize || need > cs {
            return Err(Error::unsupported(
                name.as_str(),
                "backing file name too long for the header cluster",
            ));
        }
        let ext = RawExtension {
            ty: header::EXT_BACKING_FORMAT.into(),
            len: (fmt.len() as u32).into(),
        };
        h[pos..pos + ext_len].copy_from_slice(ext.as_bytes());
        h[pos + ext_len..pos + ext_len + fmt.len()].copy_from_slice(fmt.as_bytes());
        pos += ext_len + fmt.len().div_ceil(8) * 8;
        pos += ext_len; // end of extensions: type 0, length 0 (the buffer is zeroed)
        h[pos..pos + name.len()].copy_from_slice(name.as_bytes());
        raw.backing_file_offset = (pos as u64).into();
        raw.backing_file_size = (name.len() as u32).into();
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
        let per_l2 = cs * (cs / 8);
        let l1_size = o.size.div_ceil(per_l2);
        if l1_size * 8 > header::MAX_L1_BYTES {
            return Err(Error::unsupported(
                path,
                format!(
                    "virtual size {} is too large for {cs}-byte clusters",
                    o.size
                ),
            ));
        }
        let head = header_bytes(o, cb, l1_size as u32)?;
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
        let l1_bytes = (l1_size * 8).max(1);
        let l1_clusters = l1_bytes.div_ceil(cs);
        let mut meta = vec![0u8; (3 * cs) as usize];
        meta[..cs as usize].copy_from_slice(&head);
        // Refcount table entry 0 -> block at cluster 2, which counts clusters 0..3.
        meta[cs as usize..cs as usize + 8].copy_from_slice(&(2 * cs).to_be_bytes());
        let rb = &mut meta[2 * cs as usize..];
        for c in 0..3 {
            refcount::set(rb, c, 4, 1);
        }
        file.write_all_at(&meta, 0)
            .map_err(io_err(path, "qcow2 metadata", 0))?;
        file.set_len((3 + l1_clusters) * cs)
            .map_err(io_err(path, "qcow2 L1 table", 3 * cs))?;
        if o.lazy_refcounts && o.compat_v2 {
            return Err(Error::unsupported(
                path,
                "lazy refcounts need compat=1.1 (qcow2 v3)",
            ));
        }
        let w = Self::open_file(file, lock, path, &mut OpenCtx::default(), Some(3 * cs))?;
        {
            let mut st = w.state.lock();
            let at = w.alloc(&mut st, l1_clusters)?;
            debug_assert_eq!(at, 3 * cs);
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
        let per = self.geo.l2_entries();
        let clusters = self.len().div_ceil(cs);
        for l1i in 0..clusters.div_ceil(per) {
            let t = self.alloc(st, 1)?;
            let n = (clusters - l1i * per).min(per);
            let host = self.alloc(st, n)?;
            let mut table = vec![0u64; per as usize];
            for (i, e) in table[..n as usize].iter_mut().enumerate() {
                *e = (host + i as u64 * cs) | COPIED;
            }
            let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.pwrite(st, &raw, t, "qcow2 L2 table")?;
            st.l2.put(t, table);
            st.l1[l1i as usize] = t | COPIED;
            let at = self.header.l1_table_offset + l1i * 8;
            self.pwrite(st, &(t | COPIED).to_be_bytes(), at, "qcow2 L1 table")?;
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
        let head_len = file_len.min(1 << header::MAX_CLUSTER_BITS) as usize;
        let mut head = vec![0u8; head_len];
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
        let l1_bytes = u64::from(h.l1_size) * 8;
        let mut raw = vec![0u8; l1_bytes as usize];
        file.read_exact_at(&mut raw, h.l1_table_offset)
            .map_err(io_err(path, "qcow2 L1 table", h.l1_table_offset))?;
        let l1 = be64s(&raw);
        for (i, e) in l1.iter().enumerate() {
            let pos = h.l1_table_offset + i as u64 * 8;
            if geo.l2_offset(*e, path, pos)? != 0 && e & COPIED == 0 {
                return refuse("an L2 table is shared (refcount above one)");
            }
        }
        let rt_bytes = u64::from(h.refcount_table_clusters) * cs;
        if rt_bytes > MAX_REFTABLE_BYTES || rt_bytes == 0 {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                56,
                format!("refcount table of {} clusters", h.refcount_table_clusters),
            ));
        }
        if h.refcount_table_offset % cs != 0 {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                48,
                "refcount table offset is not cluster-aligned",
            ));
        }
        let mut raw = vec![0u8; rt_bytes as usize];
        file.read_exact_at(&mut raw, h.refcount_table_offset)
            .map_err(io_err(
                path,
                "qcow2 refcount table",
                h.refcount_table_offset,
            ))?;
        let reftable = be64s(&raw);
        for (i, e) in reftable.iter().enumerate() {
            if e & !OFFSET_MASK != 0 || e % cs != 0 || (*e != 0 && *e < cs) {
                return Err(Error::corrupt(
                    path,
                    "qcow2 refcount table",
                    h.refcount_table_offset + i as u64 * 8,
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
        let slots =
            NonZeroUsize::new((CACHE_BYTES / cs).max(16) as usize).unwrap_or(NonZeroUsize::MIN);
        let next_free = next_free.unwrap_or(file_len.div_ceil(cs) * cs);
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
            backing,
            backing_path,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn cs(&self) -> u64 {
        self.geo.cluster_size()
    }

    fn pwrite(&self, st: &mut State, buf: &[u8], off: u64, what: &'static str) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .map_err(io_err(&self.path, what, off))?;
        st.file_len = st.file_len.max(off + buf.len() as u64);
        Ok(())
    }

    /// Reads `buf` at `off`, zeros past the end of the file (qemu's tail clusters may be short).
    fn pread(&self, buf: &mut [u8], off: u64, what: &'static str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, what, off + done as u64)(e)),
            }
        }
        buf[done..].fill(0);
        Ok(())
    }

    // ---- refcounts ----

    fn epb(&self) -> u64 {
        refcount::entries_per_block(self.cs(), self.header.refcount_order)
    }

    /// The refcount block at `off`, from the cache or the file.
    fn refblock<'a>(&self, st: &'a mut State, off: u64) -> Result<&'a mut Vec<u8>> {
        if !st.refblocks.contains(&off) {
            let mut b = vec![0u8; self.cs() as usize];
            self.pread(&mut b, off, "qcow2 refcount block")?;
            st.refblocks.put(off, b);
        }
        st.refblocks
            .get_mut(&off)
            .ok_or_else(|| Error::corrupt(&self.path, "qcow2 refcount block", off, "cache miss"))
    }

    fn refcount(&self, st: &mut State, cluster: u64) -> Result<u64> {
        let bi = cluster / self.epb();
        let Some(&rb) = st.reftable.get(bi as usize) else {
            return Ok(0);
        };
        if rb == 0 {
            return Ok(0);
        }
        let idx = cluster % self.epb();
        let order = self.header.refcount_order;
        Ok(refcount::get(self.refblock(st, rb)?, idx, order))
    }

    /// The host offset of refcount block `bi`, allocating it (and growing the table) if needed.
    fn ensure_refblock(&self, st: &mut State, bi: u64) -> Result<u64> {
        if bi as usize >= st.reftable.len() {
            self.grow_reftable(st, bi)?;
        }
        let rb = st.reftable[bi as usize];
        if rb != 0 {
            return Ok(rb);
        }
        let cs = self.cs();
        let b = st.next_free;
        st.next_free += cs;
        let mut blk = vec![0u8; cs as usize];
        let own = b / cs;
        if own / self.epb() == bi {
            refcount::set(&mut blk, own % self.epb(), self.header.refcount_order, 1);
        } else {
            // Counted in another block first, so the table never references an uncounted block.
            self.add_refcounts(st, own, 1, 1)?;
        }
        self.pwrite(st, &blk, b, "qcow2 refcount block")?;
        st.refblocks.put(b, blk);
        st.reftable[bi as usize] = b;
        if !st.growing {
            let at = st.reftable_offset + bi * 8;
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
        let old_len = st.reftable.len() as u64;
        let old_off = st.reftable_offset;
        let old_clusters = (old_len * 8).div_ceil(cs);
        // Enough for `need`, for everything up to the new table's end, and some slack.
        let mut entries = (need + 1).max(old_len * 2);
        let mut clusters = (entries * 8).div_ceil(cs);
        loop {
            let end_cluster = st.next_free / cs + clusters + 8;
            let covering = end_cluster.div_ceil(self.epb()) + 2;
            if entries >= covering {
                break;
            }
            entries = covering;
            clusters = (entries * 8).div_ceil(cs);
        }
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(
                &self.path,
                "the refcount table would exceed 8 MiB (image too large for its cluster size)",
            ));
        }
        entries = clusters * cs / 8;
        let start = st.next_free;
        st.next_free += clusters * cs;
        st.growing = true;
        st.reftable.resize(entries as usize, 0);
        let r = self.add_refcounts(st, start / cs, clusters, 1);
        st.growing = false;
        r?;
        let mut raw = Vec::with_capacity((clusters * cs) as usize);
        for e in &st.reftable {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize((clusters * cs) as usize, 0);
        self.pwrite(st, &raw, start, "qcow2 refcount table")?;
        // refcount_table_offset and refcount_table_clusters, adjacent in RawHeader.
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(U64::<BigEndian>::new(start).as_bytes());
        hdr[8..].copy_from_slice(U32::<BigEndian>::new(clusters as u32).as_bytes());
        self.pwrite(st, &hdr, header::REFCOUNT_TABLE_AT, "qcow2 header")?;
        st.reftable_offset = start;
        self.add_refcounts(st, old_off / cs, old_clusters, -1)
    }

    /// Adds `delta` to the refcounts of clusters `[first, first+n)`, one write per block.
    fn add_refcounts(&self, st: &mut State, first: u64, n: u64, delta: i64) -> Result<()> {
        let epb = self.epb();
        let order = self.header.refcount_order;
        let mut c = first;
        while c < first + n {
            let bi = c / epb;
            let stop = (first + n).min((bi + 1) * epb);
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
            self.pwrite(st, &span, rb + lo as u64, "qcow2 refcount block")?;
            c = stop;
        }
        Ok(())
    }

    /// Allocates `n` contiguous clusters at the end of the file with refcount 1 (written before
    /// anything may reference them). Returns the first one's host offset.
    fn alloc(&self, st: &mut State, n: u64) -> Result<u64> {
        let cs = self.cs();
        // Clusters past the end that are already counted (a file someone truncated) are skipped.
        let mut start = st.next_free;
        let mut c = start / cs;
        while c < start / cs + n {
            if self.refcount(st, c)? != 0 {
                start = (c + 1) * cs;
                if start - st.next_free > MAX_SKIP_CLUSTERS * cs {
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
            c += 1;
        }
        st.next_free = start + n * cs;
        self.add_refcounts(st, start / cs, n, 1)?;
        Ok(start)
    }

    // ---- mapping ----

    fn l2_table<'a>(&self, st: &'a mut State, off: u64) -> Result<&'a mut Vec<u64>> {
        if !st.l2.contains(&off) {
            let mut raw = vec![0u8; self.cs() as usize];
            self.pread(&mut raw, off, "qcow2 L2 table")?;
            st.l2.put(off, be64s(&raw));
        }
        st.l2
            .get_mut(&off)
            .ok_or_else(|| Error::corrupt(&self.path, "qcow2 L2 table", off, "cache miss"))
    }

    fn l2_offset(&self, st: &State, l1i: u64) -> Result<u64> {
        let e = *st.l1.get(l1i as usize).ok_or_else(|| {
            Error::corrupt(
                &self.path,
                "qcow2 L1 table",
                self.header.l1_table_offset,
                format!("entry {l1i} is past the table's {} entries", st.l1.len()),
            )
        })?;
        self.geo
            .l2_offset(e, &self.path, self.header.l1_table_offset + l1i * 8)
    }

    /// The L2 entry of guest cluster `vcl` (0 when its table is not allocated).
    fn entry(&self, st: &mut State, vcl: u64) -> Result<(u64, u64)> {
        let per = self.geo.l2_entries();
        let l2 = self.l2_offset(st, vcl / per)?;
        if l2 == 0 {
            return Ok((0, 0));
        }
        let idx = vcl % per;
        Ok((self.l2_table(st, l2)?[idx as usize], l2 + idx * 8))
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
        let cb = self.geo.cluster_bits;
        let cs = self.cs();
        let per = self.geo.l2_entries();
        let vcl = pos >> cb;
        let table_end = ((vcl / per + 1) * per) << cb;
        let limit = pos.saturating_add(max).min(table_end);
        let (w, at) = self.entry(&mut st, vcl)?;
        let first = match self.classify(&st, w, at)? {
            Mapping::Data { host } => Mapping::Data {
                host: host + (pos & (cs - 1)),
            },
            m @ Mapping::Compressed { .. } => {
                return Ok((m, (((vcl + 1) << cb).min(limit)) - pos));
            }
            m => m,
        };
        let mut end = ((vcl + 1) << cb).min(limit);
        while end < limit {
            let (w, at) = self.entry(&mut st, end >> cb)?;
            let next = self.classify(&st, w, at)?;
            if !first.continues_with(next, end - pos) {
                break;
            }
            end = (end + cs).min(limit);
        }
        Ok((first, end - pos))
    }

    fn inflate(&self, host: u64, size: u64, out: &mut [u8]) -> Result<()> {
        let mut input = vec![0u8; size as usize];
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
                let start = vcl << self.geo.cluster_bits;
                let n = (self.len() - start).min(out.len() as u64) as usize;
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
        let cb = self.geo.cluster_bits;
        let cs = self.cs();
        let per = self.geo.l2_entries();
        let end = off + buf.len() as u64;
        let l1i = (off >> cb) / per;
        let l2 = self.l2_offset(st, l1i)?;
        // Only the entries this write touches are copied out (a whole table is 64 KiB with
        // qemu's default clusters, and most writes touch one entry).
        let base = (off >> cb) % per;
        let count = ((end - 1) >> cb) - (off >> cb) + 1;
        let orig: Vec<u64> = if l2 == 0 {
            vec![0u64; count as usize]
        } else {
            self.l2_table(st, l2)?[base as usize..(base + count) as usize].to_vec()
        };
        let mut table = orig.clone();
        let v3 = self.header.version >= 3;
        let mut frees: Vec<(u64, u64)> = Vec::new(); // (first cluster, count) to decrement
                                                     // A run of guest clusters that get new host clusters: (first vcl, contents).
        let mut run: Option<(u64, Vec<u8>)> = None;
        let mut vcl = off >> cb;
        while (vcl << cb) < end {
            let cstart = vcl << cb;
            let cend = (cstart + cs).min(self.len());
            let ws = off.max(cstart);
            let we = end.min(cstart + cs);
            let piece = &buf[(ws - off) as usize..(we - off) as usize];
            let idx = ((vcl % per) - base) as usize;
            let word = table[idx];
            let m = self.classify(st, word, l2 + (base + idx as u64) * 8)?;
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
                        self.pwrite(st, piece, host + (ws - cstart), "qcow2 data cluster")?;
                    }
                }
                _ if zero && full && v3 => {
                    table[idx] = ZERO;
                    self.note_free(m, word, &mut frees);
                }
                Mapping::Zero if prealloc != 0 && word & COPIED != 0 => {
                    // A preallocated zero cluster: its host cluster is ours to fill.
                    let mut c = vec![0u8; cs as usize];
                    c[(ws - cstart) as usize..(we - cstart) as usize].copy_from_slice(piece);
                    self.pwrite(st, &c, prealloc, "qcow2 data cluster")?;
                    table[idx] = prealloc | COPIED;
                }
                _ if piece.len() as u64 == cs => {
                    // A whole cluster: its bytes go to the run as they are, no copy-on-write.
                    fresh = Some(Cow::Borrowed(piece));
                    self.note_free(m, word, &mut frees);
                }
                _ => {
                    let mut c = vec![0u8; cs as usize];
                    if !full {
                        self.old_cluster(m, vcl, &mut c)?;
                    }
                    c[(ws - cstart) as usize..(we - cstart) as usize].copy_from_slice(piece);
                    fresh = Some(Cow::Owned(c));
                    self.note_free(m, word, &mut frees);
                }
            }
            match (fresh, &mut run) {
                (Some(c), Some((_, data))) => data.extend_from_slice(&c),
                (Some(c), None) => {
                    let mut data = Vec::with_capacity((end - cstart).next_multiple_of(cs) as usize);
                    data.extend_from_slice(&c);
                    run = Some((vcl, data));
                }
                (None, _) => self.flush_run(st, run.take(), &mut table, per, base)?,
            }
            vcl += 1;
        }
        self.flush_run(st, run.take(), &mut table, per, base)?;
        if table != orig {
            if l2 == 0 {
                let t = self.alloc(st, 1)?;
                let mut full = vec![0u64; per as usize];
                full[base as usize..(base + count) as usize].copy_from_slice(&table);
                let raw: Vec<u8> = full.iter().flat_map(|e| e.to_be_bytes()).collect();
                self.pwrite(st, &raw, t, "qcow2 L2 table")?;
                st.l2.put(t, full);
                st.l1[l1i as usize] = t | COPIED;
                let at = self.header.l1_table_offset + l1i * 8;
                self.pwrite(st, &(t | COPIED).to_be_bytes(), at, "qcow2 L1 table")?;
            } else {
                let lo = table
                    .iter()
                    .zip(&orig)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let hi = table.len()
                    - table
                        .iter()
                        .rev()
                        .zip(orig.iter().rev())
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                let raw: Vec<u8> = table[lo..hi].iter().flat_map(|e| e.to_be_bytes()).collect();
                let at = base as usize + lo;
                self.pwrite(st, &raw, l2 + at as u64 * 8, "qcow2 L2 table")?;
                self.l2_table(st, l2)?[at..at + hi - lo].copy_from_slice(&table[lo..hi]);
            }
        }
        for (c, n) in frees {
            self.add_refcounts(st, c, n, -1)?;
        }
        Ok(())
    }

    /// Records the host clusters a replaced entry held, to be released once unreferenced.
    fn note_free(&self, m: Mapping, word: u64, frees: &mut Vec<(u64, u64)>) {
        let cb = self.geo.cluster_bits;
        match m {
            Mapping::Compressed { host, size } => {
                let first = host >> cb;
                let last = (host + size - 1) >> cb;
                frees.push((first, last - first + 1));
            }
            Mapping::Data { host } => frees.push((host >> cb, 1)),
            Mapping::Zero if word & OFFSET_MASK != 0 => frees.push(((word & OFFSET_MASK) >> cb, 1)),
            _ => {}
        }
    }

    /// Allocates host clusters for a run of fresh guest clusters, writes them, and points the
    /// (in-memory) table entries at them; `table` holds the entries from index `base` on.
    fn flush_run(
        &self,
        st: &mut State,
        run: Option<(u64, Vec<u8>)>,
        table: &mut [u64],
        per: u64,
        base: u64,
    ) -> Result<()> {
        let Some((first, data)) = run else {
            return Ok(());
        };
        let cs = self.cs();
        let n = data.len() as u64 / cs;
        let host = self.alloc(st, n)?;
        self.pwrite(st, &data, host, "qcow2 data cluster")?;
        for i in 0..n {
            table[((first + i) % per - base) as usize] = (host + i * cs) | COPIED;
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
        let cb = self.geo.cluster_bits;
        {
            let mut st = self.state.lock();
            let (word, _) = self.entry(&mut st, vcl)?;
            if word & !ZERO_FLAG == 0 {
                self.write_compressed_locked(&mut st, vcl, z)?;
                return Ok(true);
            }
        }
        self.write_at(plain, vcl << cb)?;
        Ok(false)
    }

    fn write_compressed_locked(&self, st: &mut State, vcl: u64, data: &[u8]) -> Result<()> {
        let cs = self.cs();
        let cb = self.geo.cluster_bits;
        if vcl << cb >= self.len() || data.is_empty() || data.len() as u64 > cs {
            return Err(Error::OutOfRange {
                offset: vcl << cb,
                len: data.len() as u64,
                size: self.len(),
            });
        }
        // The L2 table first, as qemu's qcow2_alloc_compressed_cluster_offset takes it before
        // the bytes: a table allocated after them would land between two compressed clusters
        // and break the packing (18,944 bytes more on 64 MiB of text).
        let per = self.geo.l2_entries();
        if self.l2_offset(st, vcl / per)? == 0 {
            self.new_l2_table(st, vcl / per, vec![0u64; per as usize])?;
        }
        let size = data.len() as u64;
        let max = refcount::max_value(self.header.refcount_order);
        let z = st.zpos;
        if z != 0 && self.refcount(st, z >> cb)? >= max {
            st.zpos = 0;
        }
        let host = if st.zpos == 0 {
            self.alloc(st, 1)?
        } else {
            let h = st.zpos;
            let boundary = (h | (cs - 1)) + 1;
            if boundary - h >= size {
                self.add_refcounts(st, h >> cb, 1, 1)?;
                h
            } else {
                // `size < cs`, so one more cluster always holds the rest.
                let next = self.alloc(st, 1)?;
                if next == boundary {
                    self.add_refcounts(st, h >> cb, 1, 1)?;
                    h
                } else {
                    next
                }
            }
        };
        self.pwrite(st, data, host, "qcow2 compressed cluster")?;
        st.zpos = if (host + size) % cs == 0 {
            0
        } else {
            host + size
        };
        let shift = 62 - (cb - 8);
        let sectors = ((host + size - 1) >> 9) - (host >> 9);
        let word = COMPRESSED | (sectors << shift) | host;
        self.set_fresh(st, vcl, 1, |_| word)
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
        let cs = self.cs();
        let n = len.div_ceil(cs);
        let mut st = self.state.lock();
        st.file_len = st.file_len.max(host + len);
        self.set_fresh(&mut st, vcl, n, |i| (host + i * cs) | COPIED)
    }

    /// Sets the L2 entries of unallocated guest clusters `vcl..vcl+n` to `word(i)`, allocating L2
    /// tables as needed: one write per table touched, then the L1 entry of a new table.
    fn set_fresh(&self, st: &mut State, vcl: u64, n: u64, word: impl Fn(u64) -> u64) -> Result<()> {
        let cb = self.geo.cluster_bits;
        let per = self.geo.l2_entries();
        if n == 0 || (vcl + n - 1) << cb >= self.len() {
            return Err(Error::OutOfRange {
                offset: vcl << cb,
                len: n << cb,
                size: self.len(),
            });
        }
        let mut i = 0;
        while i < n {
            let v = vcl + i;
            let l1i = v / per;
            let first = (v % per) as usize;
            let m = (per - v % per).min(n - i) as usize;
            let l2 = self.l2_offset(st, l1i)?;
            if l2 == 0 {
                let mut table = vec![0u64; per as usize];
                for (k, e) in table[first..first + m].iter_mut().enumerate() {
                    *e = word(i + k as u64);
                }
                self.new_l2_table(st, l1i, table)?;
            } else {
                let table = self.l2_table(st, l2)?;
                // A zero-flag entry without a host cluster holds nothing to free or leak.
                if let Some(k) = table[first..first + m]
                    .iter()
                    .position(|&e| e & !ZERO_FLAG != 0)
                {
                    return Err(Error::unsupported(
                        &self.path,
                        format!(
                            "new data for cluster {}, which is already allocated",
                            v + k as u64
                        ),
                    ));
                }
                for (k, e) in table[first..first + m].iter_mut().enumerate() {
                    *e = word(i + k as u64);
                }
                let raw: Vec<u8> = table[first..first + m]
                    .iter()
                    .flat_map(|e| e.to_be_bytes())
                    .collect();
                self.pwrite(st, &raw, l2 + first as u64 * 8, "qcow2 L2 table")?;
            }
            i += m as u64;
        }
        Ok(())
    }

    /// Allocates L2 table `l1i` holding `table`, writes it and points the L1 entry at it.
    fn new_l2_table(&self, st: &mut State, l1i: u64, table: Vec<u64>) -> Result<()> {
        let t = self.alloc(st, 1)?;
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.pwrite(st, &raw, t, "qcow2 L2 table")?;
        st.l2.put(t, table);
        st.l1[l1i as usize] = t | COPIED;
        let at = self.header.l1_table_offset + l1i * 8;
        self.pwrite(st, &(t | COPIED).to_be_bytes(), at, "qcow2 L1 table")
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
        let packing = st.zpos != 0 && st.next_free == st.zpos.div_ceil(cs) * cs;
        let end = if packing {
            st.file_len.next_multiple_of(SECTOR)
        } else {
            st.file_len.div_ceil(cs) * cs
        };
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
        check_range(off, buf.len() as u64, self.len())?;
        let cs = self.cs();
        let mut pos = off;
        let mut rest = buf;
        while !rest.is_empty() {
            let (m, run) = self.map_run(pos, rest.len() as u64)?;
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(run as usize);
            rest = tail;
            match m {
                Mapping::Data { host } => self.pread(dst, host, "qcow2 data cluster")?,
                Mapping::Zero => dst.fill(0),
                Mapping::Unallocated => read_backing(self.backing.as_ref(), dst, pos)?,
                Mapping::Compressed { host, size } => {
                    let mut c = vec![0u8; cs as usize];
                    self.inflate(host, size, &mut c)?;
                    let at = (pos & (cs - 1)) as usize;
                    dst.copy_from_slice(&c[at..at + dst.len()]);
                }
            }
            pos += run;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len())?;
        let per_table = self.geo.l2_entries() << self.geo.cluster_bits;
        let mut st = self.state.lock();
        let mut pos = off;
        let end = off + buf.len() as u64;
        while pos < end {
            let stop = ((pos / per_table + 1) * per_table).min(end);
            self.write_table(
                &mut st,
                &buf[(pos - off) as usize..(stop - off) as usize],
                pos,
            )?;
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
        let end = off + len;
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let (m, run) = self.map_run(pos, end - pos)?;
            super::push_mapping(&mut out, self.backing.as_ref(), pos, run, m)?;
            pos += run;
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
            disk_size: self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
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
        let mut put = |at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
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
            put(pos, &0xe279_2acau32.to_be_bytes());
            put(pos + 4, &(fmt.len() as u32).to_be_bytes());
            put(pos + 8, fmt.as_bytes());
            put(backing_at as usize, name.as_bytes());
            put(8, &backing_at.to_be_bytes());
            put(16, &(name.len() as u32).to_be_bytes());
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
            let got = header_bytes(&o, 12, 3).unwrap();
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
        header_bytes(&o, 12, 1).unwrap()
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
            match Header::parse(&full[..len], p, len as u64) {
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
        let text: Vec<u8> = (0..65536u32)
            .map(|i| b"the quick brown fox "[(i % 20) as usize])
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
