//! VMDK images (VMware "Virtual Disk Format 5.0"): a descriptor (a text file, or embedded in a
//! monolithic sparse file) lists extents in order; each extent is sparse (KDMV, optionally
//! stream-optimized), SEsparse, flat (a plain file at an offset) or zero. A snapshot child names
//! its parent with `parentFileNameHint`; grains it does not hold read from the parent.
//!
//! Lookups go through a bounded LRU of grain tables under a short lock; file I/O and inflation
//! happen outside it, so many threads read in parallel.

pub(super) mod descriptor;
pub(super) mod flat;
pub(super) mod sesparse;
pub(super) mod sparse;
pub(super) mod stream;
pub(super) mod writer;

use crate::block::error::{Error, Result};
use crate::block::file::ImageFile;
use crate::block::{
    check_range, open_backing, parallel, push_backing_extents, push_extent, read_backing,
    resolve_relative, BlockDevice, Describe, Extent, ExtentKind, LayerInfo, OpenCtx,
};
use crate::bytes::wide;
use descriptor::{Access, Descriptor, ExtentLine, ExtentType, MAX_DESCRIPTOR_BYTES};
use flat::FlatExtent;
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::json;
use sparse::{Grain, GtCache, SparseExtent, SECTOR};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// First 8 bytes of an ESXi SEsparse extent (magic 0xcafebabe, little-endian u64).
pub(super) const SESPARSE_MAGIC_BYTES: [u8; 8] = sesparse::MAGIC.to_le_bytes();
const COWD_MAGIC: &[u8; 4] = b"COWD";
/// Bytes of inflated grains kept for reads smaller than a grain (at least 4 grains).
const ZCACHE_BYTES: u64 = 4 << 20;

enum Kind {
    Sparse(Box<SparseExtent>),
    Flat(FlatExtent),
    Zero,
}

/// One extent of the disk, at guest bytes `[start, start+len)`.
struct Ext {
    start: u64,
    len: u64,
    kind: Kind,
    line: ExtentLine,
    file: Option<PathBuf>,
}

pub struct Vmdk {
    path: PathBuf,
    /// The descriptor file, when it is not itself an extent.
    desc_file: Option<ImageFile>,
    desc: Option<Descriptor>,
    create_type: String,
    len: u64,
    exts: Vec<Ext>,
    gt_cache: GtCache,
    zcache: Mutex<LruCache<sparse::CacheKey, Arc<[u8]>>>,
    backing: Option<Arc<dyn BlockDevice>>,
    backing_path: Option<PathBuf>,
    warnings: Vec<String>,
}

fn desc_error(path: &Path, base: u64, e: descriptor::Error) -> Error {
    Error::corrupt(
        path,
        "vmdk descriptor",
        base.saturating_add(wide(e.offset)),
        e.detail,
    )
}

/// Reads a whole text descriptor file, refusing one too large to be a descriptor.
fn read_text_descriptor(file: &ImageFile) -> Result<Descriptor> {
    if file.len() > wide(MAX_DESCRIPTOR_BYTES) {
        return Err(Error::corrupt(
            file.path(),
            "vmdk descriptor",
            0,
            format!(
                "the file is {} bytes: too large for a descriptor (at most {MAX_DESCRIPTOR_BYTES})",
                file.len()
            ),
        ));
    }
    // At most MAX_DESCRIPTOR_BYTES (just checked).
    let len = usize::try_from(file.len()).unwrap_or(MAX_DESCRIPTOR_BYTES);
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0, "vmdk descriptor")?;
    Descriptor::parse(&buf).map_err(|e| desc_error(file.path(), 0, e))
}

/// The CID of the VMDK at `path`, if it can be read (for the parent check only).
fn peek_cid(path: &Path) -> Option<u32> {
    let file = ImageFile::open(path).ok()?;
    let mut head = [0u8; 4];
    file.read_exact_at(&mut head, 0, "vmdk header").ok()?;
    if &head == sparse::MAGIC {
        let mut h = [0u8; sparse::HEADER_LEN];
        file.read_exact_at(&mut h, 0, "vmdk sparse header").ok()?;
        let h = sparse::SparseHeader::parse(&h, path).ok()?;
        // Bounded by parse (MAX_DESCRIPTOR_BYTES).
        let len = h.descriptor_size.checked_mul(SECTOR)?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        file.read_exact_at(
            &mut buf,
            h.descriptor_offset.checked_mul(SECTOR)?,
            "vmdk embedded descriptor",
        )
        .ok()?;
        return Descriptor::parse(&buf).ok()?.cid;
    }
    read_text_descriptor(&file).ok()?.cid
}

fn sectors_to_bytes(path: &Path, s: u64, at: u64) -> Result<u64> {
    s.checked_mul(SECTOR)
        .filter(|&b| b <= sparse::MAX_CAPACITY_SECTORS * SECTOR)
        .ok_or_else(|| {
            Error::corrupt(
                path,
                "vmdk descriptor",
                at,
                format!("{s} sectors is more than ferry accepts"),
            )
        })
}

impl Vmdk {
    /// Opens a VMDK from its descriptor file, its monolithic sparse / streamOptimized file, or a
    /// bare SEsparse extent, with its parent chain.
    pub(crate) fn open(file: ImageFile, ctx: &mut OpenCtx) -> Result<Self> {
        let path = file.path().to_path_buf();
        let mut head = [0u8; 8];
        let n = usize::try_from(file.len()).map_or(8, |l| l.min(8));
        file.read_exact_at(&mut head[..n], 0, "vmdk header")?;
        let mut warnings = Vec::new();
        let (desc, desc_file, exts, create_type) = if head.starts_with(sparse::MAGIC) {
            let o = sparse::open(file)?;
            let desc = match &o.descriptor {
                Some((bytes, at)) => {
                    Some(Descriptor::parse(bytes).map_err(|e| desc_error(&path, *at, e))?)
                }
                None => None,
            };
            let compressed = o.extent.header.as_ref().is_some_and(|h| h.compressed());
            let create_type = desc
                .as_ref()
                .and_then(|d| d.create_type.clone())
                .unwrap_or_else(|| {
                    if compressed {
                        "streamOptimized"
                    } else {
                        "monolithicSparse"
                    }
                    .to_string()
                });
            let ext = Self::single(&path, Kind::Sparse(Box::new(o.extent)));
            (desc, None, vec![ext], create_type)
        } else if head.starts_with(COWD_MAGIC) {
            return Err(Error::unsupported(
                &path,
                "VMDK COWD (ESX 2 / VMFSSPARSE) extents are not supported",
            ));
        } else if head == SESPARSE_MAGIC_BYTES {
            let ext = Self::single(&path, Kind::Sparse(Box::new(sesparse::open(file)?)));
            (None, None, vec![ext], "seSparse".to_string())
        } else {
            let desc = read_text_descriptor(&file)?;
            if file.is_member() {
                let first = desc.extents.first().and_then(|e| e.file.as_deref());
                let first = first.unwrap_or("");
                return Err(super::member_names_file(&path, "extent file", first));
            }
            let exts = Self::open_extents(&path, &desc)?;
            let create_type = desc.create_type.clone().unwrap_or_default();
            (Some(desc), Some(file), exts, create_type)
        };
        let mut len = 0u64;
        for e in &exts {
            len = len
                .checked_add(e.len)
                .filter(|&l| l <= sparse::MAX_CAPACITY_SECTORS * SECTOR)
                .ok_or_else(|| {
                    Error::corrupt(
                        &path,
                        "vmdk descriptor",
                        0,
                        "the extents add up to more than ferry accepts",
                    )
                })?;
            if let Kind::Sparse(s) = &e.kind {
                warnings.extend(
                    s.warnings
                        .iter()
                        .map(|w| format!("{}: {w}", s.file.path().display())),
                );
            }
        }
        let max_gt_entries = exts
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Sparse(s) => Some(s.gtes_per_gt),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        let max_grain = exts
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Sparse(s) => Some(s.grain_bytes),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        let zslots = usize::try_from(ZCACHE_BYTES.checked_div(max_grain).unwrap_or(0))
            .unwrap_or(4)
            .max(4);

        let (backing, backing_path) = match desc
            .as_ref()
            .and_then(|d| d.parent_file_name_hint.as_deref())
        {
            Some(hint) => {
                let (dev, p) = open_backing(&path, hint, Some("vmdk"), ctx)?;
                if let (Some(want), Some(got)) =
                    (desc.as_ref().and_then(|d| d.parent_cid), peek_cid(&p))
                {
                    if want != got {
                        let w = format!(
                            "{} expects its parent {} to have CID {want:08x}, but it has {got:08x}: \
                             the parent changed after the snapshot was taken, so the disk may read \
                             inconsistently (qemu refuses to read it)",
                            path.display(),
                            p.display()
                        );
                        log::warn!("{w}");
                        warnings.push(w);
                    }
                }
                (Some(dev), Some(p))
            }
            None => (None, None),
        };
        Ok(Vmdk {
            gt_cache: GtCache::new(max_gt_entries),
            zcache: Mutex::new(LruCache::new(
                NonZeroUsize::new(zslots).unwrap_or(NonZeroUsize::MIN),
            )),
            path,
            desc_file,
            desc,
            create_type,
            len,
            exts,
            backing,
            backing_path,
            warnings,
        })
    }

    /// Opens a standalone file as a VMDK (for tools and fuzzing), with its parent chain.
    pub fn open_path(path: &Path) -> Result<Self> {
        let mut ctx = OpenCtx::default();
        let file = ImageFile::open(path)?;
        ctx.enter(&file)?;
        Vmdk::open(file, &mut ctx)
    }

    /// The disk as one extent of a file that is its own descriptor (monolithic, bare SEsparse).
    fn single(path: &Path, kind: Kind) -> Ext {
        let (len, ty) = match &kind {
            Kind::Sparse(s) if matches!(s.format, sparse::GteFormat::SeSparse { .. }) => {
                (s.capacity, ExtentType::SeSparse)
            }
            Kind::Sparse(s) => (s.capacity, ExtentType::Sparse),
            _ => (0, ExtentType::Zero),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        Ext {
            start: 0,
            len,
            kind,
            line: ExtentLine {
                access: Access::ReadWrite,
                sectors: len / SECTOR,
                kind: ty,
                file: name,
                offset: 0,
            },
            file: Some(path.to_path_buf()),
        }
    }

    /// Opens every extent a text descriptor lists, in order.
    fn open_extents(path: &Path, desc: &Descriptor) -> Result<Vec<Ext>> {
        if desc.extents.is_empty() {
            return Err(Error::corrupt(
                path,
                "vmdk descriptor",
                0,
                "the descriptor lists no extents",
            ));
        }
        let mut out = Vec::with_capacity(desc.extents.len());
        let mut start = 0u64;
        for (no, line) in (1usize..).zip(&desc.extents) {
            let bad =
                |d: String| Error::corrupt(path, "vmdk descriptor", 0, format!("extent {no}: {d}"));
            let len = sectors_to_bytes(path, line.sectors, 0)?;
            let file_path = match (&line.file, line.kind) {
                (_, ExtentType::Zero) => None,
                (Some(name), _) => Some(resolve_relative(path, name)),
                (None, _) => return Err(bad(format!("{} extent names no file", line.kind.name()))),
            };
            let open = || ImageFile::open(file_path.as_deref().unwrap_or(path));
            let kind = match line.kind {
                ExtentType::Zero => Kind::Zero,
                ExtentType::Flat | ExtentType::Vmfs | ExtentType::VmfsRdm => {
                    let offset = sectors_to_bytes(path, line.offset, 0)?;
                    Kind::Flat(FlatExtent {
                        file: open()?,
                        offset,
                    })
                }
                ExtentType::SeSparse => Kind::Sparse(Box::new(sesparse::open(open()?)?)),
                ExtentType::VmfsSparse => {
                    return Err(Error::unsupported(
                        path,
                        "VMDK COWD (VMFSSPARSE) extents are not supported",
                    ))
                }
                ExtentType::Sparse => {
                    let f = open()?;
                    let mut magic = [0u8; 4];
                    f.read_exact_at(&mut magic, 0, "vmdk sparse header")?;
                    if &magic == COWD_MAGIC {
                        return Err(Error::unsupported(
                            f.path(),
                            "VMDK COWD (ESX 2) sparse extents are not supported",
                        ));
                    }
                    Kind::Sparse(Box::new(sparse::open(f)?.extent))
                }
            };
            if let Kind::Sparse(s) = &kind {
                if len > s.capacity.next_multiple_of(s.grain_bytes) {
                    return Err(bad(format!(
                        "the descriptor gives it {len} bytes, but {} maps only {}",
                        s.file.path().display(),
                        s.capacity
                    )));
                }
            }
            out.push(Ext {
                start,
                len,
                kind,
                line: line.clone(),
                file: file_path,
            });
            start = start
                .checked_add(len)
                .ok_or_else(|| bad("extents overflow".into()))?;
        }
        Ok(out)
    }

    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.desc.as_ref()
    }

    /// The extent holding guest byte `pos` (< len) and its index.
    fn ext_at(&self, pos: u64) -> Result<(usize, &Ext)> {
        // open() checked that the extents' ends do not overflow.
        let i = self
            .exts
            .partition_point(|e| e.start.saturating_add(e.len) <= pos);
        self.exts.get(i).map(|e| (i, e)).ok_or(Error::OutOfRange {
            offset: pos,
            len: 1,
            size: self.len,
        })
    }

    /// Inflates the compressed grain of extent `i` whose marker is at `host` and whose first
    /// guest byte is extent-relative `grain_rel`, into `out` (one grain).
    fn inflate(
        &self,
        s: &SparseExtent,
        e: &Ext,
        grain_rel: u64,
        host: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let markers = matches!(s.format, sparse::GteFormat::Hosted { markers: true, .. });
        // grain_rel < e.len; a grain is at most 64 MiB.
        let need = usize::try_from(s.grain_bytes.min(e.len.saturating_sub(grain_rel)))
            .unwrap_or(usize::MAX);
        stream::read_grain(&s.file, host, markers, need, out)
    }

    fn read_compressed(
        &self,
        i: usize,
        e: &Ext,
        s: &SparseExtent,
        rel: u64,
        host: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let g = s.grain_bytes;
        let in_grain = rel.checked_rem(g).unwrap_or(0);
        let grain_rel = rel.saturating_sub(in_grain);
        if in_grain == 0 && wide(dst.len()) == g {
            return self.inflate(s, e, grain_rel, host, dst);
        }
        let cached = self.zcache.lock().get(&(i, host)).cloned();
        let data = match cached {
            Some(d) => d,
            None => {
                let len = usize::try_from(g)
                    .map_err(|_| Error::corrupt(s.file.path(), "vmdk grain", host, "too large"))?;
                let mut buf = vec![0u8; len];
                self.inflate(s, e, grain_rel, host, &mut buf)?;
                let d: Arc<[u8]> = buf.into();
                self.zcache.lock().put((i, host), d.clone());
                d
            }
        };
        let src = usize::try_from(in_grain)
            .ok()
            .and_then(|at| data.get(at..)?.get(..dst.len()));
        let Some(src) = src else {
            return Err(Error::corrupt(
                s.file.path(),
                "vmdk grain",
                host,
                format!("{} bytes at {in_grain} lie past the grain", dst.len()),
            ));
        };
        dst.copy_from_slice(src);
        Ok(())
    }

    /// Bytes this layer maps itself: allocated grains and whole flat extents.
    fn allocated_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        for (i, e) in self.exts.iter().enumerate() {
            match &e.kind {
                // Totals of extents inside the image's length: no overflow.
                Kind::Flat(_) => total = total.saturating_add(e.len),
                Kind::Zero => {}
                Kind::Sparse(s) => {
                    let mut rel = 0;
                    while rel < e.len {
                        let (g, run) =
                            s.map_run(i, &self.gt_cache, rel, e.len.saturating_sub(rel))?;
                        if matches!(g, Grain::Data { .. } | Grain::Compressed { .. }) {
                            total = total.saturating_add(run);
                        }
                        rel = rel.saturating_add(run);
                    }
                }
            }
        }
        Ok(total)
    }
}

impl Vmdk {
    /// qemu-img's "format-specific" (qapi ImageInfoSpecificVmdk): CIDs as numbers (a parent
    /// CID of all ones when there is none), the create type, and per extent its size, file,
    /// grain size (sparse only), type as the separate descriptor names it ("" for the extent
    /// a sparse file describes itself, as qemu) and whether it is compressed. ferry adds the
    /// descriptor's adapter type, hardware version, uuid and geometry under names qemu does
    /// not use.
    fn qemu_specific(&self) -> serde_json::Value {
        let mut d = serde_json::Map::new();
        let desc = self.desc.as_ref();
        if let Some(c) = desc.and_then(|d| d.cid) {
            d.insert("cid".into(), json!(c));
        }
        let parent = desc.and_then(|d| d.parent_cid).unwrap_or(u32::MAX);
        d.insert("parent-cid".into(), json!(parent));
        d.insert("create-type".into(), json!(self.create_type));
        let extents: Vec<serde_json::Value> = self
            .exts
            .iter()
            .filter_map(|e| {
                let file = e.file.as_ref()?;
                let mut x = serde_json::Map::new();
                x.insert("virtual-size".into(), json!(e.len));
                x.insert("filename".into(), json!(file.to_string_lossy()));
                let kind = if self.desc_file.is_some() {
                    e.line.kind.name()
                } else {
                    ""
                };
                x.insert("format".into(), json!(kind));
                if let Kind::Sparse(s) = &e.kind {
                    x.insert("cluster-size".into(), json!(s.grain_bytes));
                    if s.header.as_ref().is_some_and(|h| h.compressed()) {
                        x.insert("compressed".into(), json!(true));
                    }
                }
                Some(serde_json::Value::Object(x))
            })
            .collect();
        d.insert("extents".into(), json!(extents));
        if let Some(desc) = desc {
            for (key, ddb) in [
                ("adapter-type", "adapterType"),
                ("hw-version", "virtualHWVersion"),
                ("uuid", "uuid"),
            ] {
                if let Some(v) = desc.ddb(ddb) {
                    d.insert(key.into(), json!(v));
                }
            }
        }
        json!({"type": "vmdk", "data": d})
    }
}

/// Splits the first `n` bytes (a run of the read at guest offset `pos`) off `buf`; a run is
/// never longer than it was asked to be.
fn split(buf: &mut [u8], pos: u64, n: u64, size: u64) -> Result<(&mut [u8], &mut [u8])> {
    usize::try_from(n)
        .ok()
        .and_then(|n| buf.split_at_mut_checked(n))
        .ok_or(Error::OutOfRange {
            offset: pos,
            len: n,
            size,
        })
}

impl BlockDevice for Vmdk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, wide(buf.len()), self.len)?;
        // Whole compressed grains are collected and inflated together, on idle cores too.
        let mut whole: Vec<(&SparseExtent, &Ext, u64, u64, &mut [u8])> = Vec::new();
        let mut rest = buf;
        let mut pos = off;
        while !rest.is_empty() {
            let (i, e) = self.ext_at(pos)?;
            // ext_at: e.start <= pos < e.start + e.len.
            let rel = pos.saturating_sub(e.start);
            let max = wide(rest.len()).min(e.len.saturating_sub(rel));
            let run = match &e.kind {
                Kind::Sparse(s) => {
                    let (g, run) = s.map_run(i, &self.gt_cache, rel, max)?;
                    let (dst, tail) = split(std::mem::take(&mut rest), pos, run, self.len)?;
                    rest = tail;
                    match g {
                        Grain::Data { host } => s.file.read_zero_padded(dst, host, "vmdk grain")?,
                        Grain::Zero => dst.fill(0),
                        Grain::Unallocated => read_backing(self.backing.as_ref(), dst, pos)?,
                        Grain::Compressed { host }
                            if rel.checked_rem(s.grain_bytes) == Some(0)
                                && run == s.grain_bytes =>
                        {
                            whole.push((s, e, rel, host, dst))
                        }
                        Grain::Compressed { host } => {
                            self.read_compressed(i, e, s, rel, host, dst)?
                        }
                    }
                    run
                }
                kind => {
                    let (dst, tail) = split(std::mem::take(&mut rest), pos, max, self.len)?;
                    rest = tail;
                    match kind {
                        Kind::Flat(f) => f.read(dst, rel)?,
                        _ => dst.fill(0),
                    }
                    max
                }
            };
            pos = pos.saturating_add(run);
        }
        parallel::for_each(whole, |(s, e, rel, host, dst)| {
            self.inflate(s, e, rel, host, dst)
        })
    }

    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(off, len, self.len)?;
        // check_range: off + len fits; ext_at: e.start <= pos < e.start + e.len.
        let end = off.saturating_add(len);
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let (i, e) = self.ext_at(pos)?;
            let rel = pos.saturating_sub(e.start);
            let max = end.saturating_sub(pos).min(e.len.saturating_sub(rel));
            let run = match &e.kind {
                Kind::Zero => {
                    push_extent(&mut out, Extent::new(pos, max, ExtentKind::Zero));
                    max
                }
                Kind::Flat(f) => {
                    f.extents(&mut out, pos, rel, max);
                    max
                }
                Kind::Sparse(s) => {
                    let (g, run) = s.map_run(i, &self.gt_cache, rel, max)?;
                    match g {
                        Grain::Data { host } => {
                            let mut x = Extent::new(pos, run, ExtentKind::Data);
                            x.host_offset = Some(host);
                            push_extent(&mut out, x);
                        }
                        Grain::Compressed { host } => {
                            let mut x = Extent::new(pos, run, ExtentKind::Data);
                            x.compressed = true;
                            x.host_offset = Some(host);
                            push_extent(&mut out, x);
                        }
                        Grain::Zero => {
                            push_extent(&mut out, Extent::new(pos, run, ExtentKind::Zero))
                        }
                        Grain::Unallocated => {
                            push_backing_extents(&mut out, self.backing.as_ref(), pos, run)?
                        }
                    }
                    run
                }
            };
            pos = pos.saturating_add(run);
        }
        Ok(out)
    }

    fn backing(&self) -> Option<&Arc<dyn BlockDevice>> {
        self.backing.as_ref()
    }
}

impl Describe for Vmdk {
    fn info(&self) -> Result<LayerInfo> {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut disk_size = self.desc_file.as_ref().map_or(0, |f| f.disk_usage());
        for e in &self.exts {
            let f = match &e.kind {
                Kind::Sparse(s) => &s.file,
                Kind::Flat(f) => &f.file,
                Kind::Zero => continue,
            };
            if !files.iter().any(|p| p == f.path()) {
                files.push(f.path().to_path_buf());
                disk_size = disk_size.saturating_add(f.disk_usage());
            }
        }
        let cluster_size = self.exts.iter().find_map(|e| match &e.kind {
            Kind::Sparse(s) => Some(s.grain_bytes),
            _ => None,
        });
        let d = self.desc.as_ref();
        let mut specific = vec![
            (
                "cid".to_string(),
                json!(d.and_then(|d| d.cid).map(|c| format!("{c:08x}"))),
            ),
            (
                "parent_cid".into(),
                json!(d.and_then(|d| d.parent_cid).map(|c| format!("{c:08x}"))),
            ),
            ("create_type".into(), json!(self.create_type)),
        ];
        if let Some(d) = d {
            if let Some(a) = d.ddb("adapterType") {
                specific.push(("adapter_type".into(), json!(a)));
            }
            if let Some(v) = d.ddb("virtualHWVersion") {
                specific.push(("hw_version".into(), json!(v)));
            }
            if let Some(u) = d.ddb("uuid") {
                specific.push(("uuid".into(), json!(u)));
            }
            let geo: Vec<_> = ["cylinders", "heads", "sectors"]
                .iter()
                .filter_map(|k| {
                    d.ddb(&format!("geometry.{k}"))
                        .map(|v| (k.to_string(), json!(v)))
                })
                .collect();
            if !geo.is_empty() {
                specific.push((
                    "geometry".into(),
                    json!(geo
                        .into_iter()
                        .collect::<serde_json::Map<String, serde_json::Value>>()),
                ));
            }
        }
        let extents: Vec<_> = self
            .exts
            .iter()
            .map(|e| {
                let mut v = json!({
                    "type": e.line.kind.name(),
                    "sectors": e.line.sectors,
                    "file": e.file.as_ref().map(|p| p.display().to_string()),
                    "offset": e.line.offset,
                });
                if let Kind::Sparse(s) = &e.kind {
                    v["grain_size"] = json!(s.grain_bytes);
                    if let Some(h) = &s.header {
                        v["version"] = json!(h.version);
                        v["compressed"] = json!(h.compressed());
                        v["zeroed_grain"] = json!(h.flags & sparse::FLAG_ZERO_GRAIN != 0);
                    }
                }
                v
            })
            .collect();
        specific.push(("extents".into(), json!(extents)));
        let qemu_specific = self.qemu_specific();
        Ok(LayerInfo {
            qemu_specific: Some(qemu_specific),
            dirty: false,
            allocated: None,
            filename: self.path.clone(),
            format: "vmdk".into(),
            subformat: Some(self.create_type.clone()),
            virtual_size: self.len,
            disk_size,
            cluster_size,
            backing_filename: self
                .desc
                .as_ref()
                .and_then(|d| d.parent_file_name_hint.clone()),
            full_backing_filename: self.backing_path.clone(),
            backing_format: self.backing.as_ref().map(|_| "vmdk".to_string()),
            files,
            specific,
            warnings: self.warnings.clone(),
        })
    }

    fn allocated(&self) -> Result<Option<u64>> {
        self.allocated_bytes().map(Some)
    }
}
