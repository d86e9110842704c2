//! Layer 1: disk images as `BlockDevice`s. `open` probes the format by content and follows
//! backing (qcow2) and parent (VMDK) chains; every format answers reads and `extents`.

mod create;
pub mod error;
pub(crate) mod file;
mod gzip;
mod info;
pub mod lock;
pub mod mem;
pub mod overlay;
pub(crate) mod parallel;
pub(crate) mod probe;
mod qcow2;
mod raw;
pub mod trim;
mod vmdk;
mod zstream;

pub use create::{
    create, vmdk_flat_extent_path, write_vmdk_flat_descriptor, Compression, CreateOptions,
    ImageWriter, Qcow2CreateOptions, Qcow2Writer, VmdkCreateOptions, VmdkSubformat, VmdkWriter,
    VMDK_ADAPTER_TYPES,
};
pub use error::{Error, Result};
pub use info::{describe, Describe, LayerInfo};
pub use probe::Format;

/// Format internals that fuzz targets and integration tests drive directly (header and
/// descriptor parsers, the VMDK reader's descriptor). Not API: no stability promised.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::qcow2::header::Header as Qcow2Header;
    pub use super::vmdk::descriptor::Descriptor as VmdkDescriptor;
    pub use super::vmdk::sparse::SparseHeader as VmdkSparseHeader;
    pub use super::vmdk::Vmdk;
}

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a range of a device holds, as `qemu-img map` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Allocated data somewhere in the chain: must be read to be copied.
    Data,
    /// Known to read as zeros (zero clusters, zero grains, host file holes) without reading.
    Zero,
    /// Allocated nowhere in the chain: reads as zeros.
    Hole,
}

/// A run of the virtual disk with one kind. `depth` is the chain layer that decides it (0 = this
/// image); `host_offset` is where the bytes start in that layer's file, when it is one plain range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: ExtentKind,
    pub depth: u32,
    pub compressed: bool,
    pub host_offset: Option<u64>,
}

impl Extent {
    pub fn new(offset: u64, length: u64, kind: ExtentKind) -> Self {
        Extent {
            offset,
            length,
            kind,
            depth: 0,
            compressed: false,
            host_offset: None,
        }
    }

    /// The first byte past the extent. Extents lie inside their device (at most 2^64 - 1
    /// bytes), so this does not saturate for any extent a device reports.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// `inner`'s extents with the units numbered in `patched` (each `unit` bytes, ascending)
/// reported as data: what a device that lays replayed blocks over another (a journal or log
/// replayed in memory) maps.
pub(crate) fn extents_with_patches(inner: Vec<Extent>, patched: &[u64], unit: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    for e in inner {
        let mut pos = e.offset;
        // Below, pos <= ustart < uend <= e.end(), so every difference is non-negative and
        // every host offset stays inside the host range the extent maps.
        let part = |from: u64, to: u64| {
            let mut p = e.clone();
            p.host_offset = e
                .host_offset
                .map(|h| h.saturating_add(from.saturating_sub(e.offset)));
            p.offset = from;
            p.length = to.saturating_sub(from);
            p
        };
        for &u in patched {
            let ustart = u.saturating_mul(unit).max(e.offset);
            let uend = u.saturating_add(1).saturating_mul(unit).min(e.end());
            if ustart >= uend {
                continue;
            }
            if ustart > pos {
                push_extent(&mut out, part(pos, ustart));
            }
            push_extent(
                &mut out,
                Extent::new(ustart, uend.saturating_sub(ustart), ExtentKind::Data),
            );
            pos = uend;
        }
        if pos < e.end() {
            push_extent(&mut out, part(pos, e.end()));
        }
    }
    out
}

/// Appends `e` to `out`, merging it into the last extent when they continue each other (same
/// kind, depth and compression, adjacent, and host offsets contiguous or both absent).
pub(crate) fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if e.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        let host_continues = match (last.host_offset, e.host_offset) {
            (None, None) => true,
            (Some(a), Some(b)) => a.checked_add(last.length) == Some(b),
            _ => false,
        };
        if last.end() == e.offset
            && last.kind == e.kind
            && last.depth == e.depth
            && last.compressed == e.compressed
            && !e.compressed
            && host_continues
        {
            // Adjacent extents of one device: the sum is the span they cover.
            last.length = last.length.saturating_add(e.length);
            return;
        }
    }
    out.push(e);
}

/// Pushes the extents of `backing` for `[off, off+len)` one level deeper, with whatever lies past
/// the backing device's end as a hole (reads as zeros). Without a backing device it is all hole.
pub(crate) fn push_backing_extents(
    out: &mut Vec<Extent>,
    backing: Option<&Arc<dyn BlockDevice>>,
    off: u64,
    len: u64,
) -> Result<()> {
    let mut covered = 0;
    if let Some(b) = backing {
        let blen = b.len();
        if let Some(left) = blen.checked_sub(off).filter(|&l| l > 0) {
            covered = len.min(left);
            for mut e in b.extents(off, covered)? {
                e.depth = e.depth.saturating_add(1);
                push_extent(out, e);
            }
        }
    }
    if let Some(rest) = len.checked_sub(covered).filter(|&r| r > 0) {
        let depth = u32::from(backing.is_some());
        let mut e = Extent::new(off.saturating_add(covered), rest, ExtentKind::Hole);
        e.depth = depth;
        push_extent(out, e);
    }
    Ok(())
}

/// Reads `[off, off+buf.len())` of `backing` into `buf`, zero-filling past its end or when there
/// is no backing device (qcow2 semantics for a shorter backing file).
pub(crate) fn read_backing(
    backing: Option<&Arc<dyn BlockDevice>>,
    buf: &mut [u8],
    off: u64,
) -> Result<()> {
    let mut covered = 0;
    if let Some(b) = backing {
        let blen = b.len();
        if let Some(left) = blen.checked_sub(off).filter(|&l| l > 0) {
            covered = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let (head, _) = buf.split_at_mut(covered);
            b.read_at(head, off)?;
        }
    }
    let (_, tail) = buf.split_at_mut(covered);
    tail.fill(0);
    Ok(())
}

/// Checks that `[off, off+len)` lies inside a device of `size` bytes.
pub fn check_range(off: u64, len: u64, size: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            offset: off,
            len,
            size,
        }),
    }
}

/// A virtual disk. `&self` everywhere: implementations lock internally, so FUSE threads and the
/// copy engine's workers read in parallel. What a layer says about itself is `Describe`.
pub trait BlockDevice: Describe + Send + Sync {
    /// Virtual size in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` entirely from `off`; an access past `len()` is `Error::OutOfRange`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;

    fn write_at(&self, _buf: &[u8], _off: u64) -> Result<()> {
        Err(Error::ReadOnly)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// What `[off, off+len)` holds, resolved through the whole chain: sorted, contiguous,
    /// covering exactly the range, adjacent runs merged. `convert` copies only `Data`.
    /// Callers ask in windows: a fragmented terabyte has millions of extents.
    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>>;

    /// The next layer down the chain, if any.
    fn backing(&self) -> Option<&Arc<dyn BlockDevice>> {
        None
    }

    /// A hint that `[off, off+len)` will be read soon: a layer that can start fetching it in
    /// the background (a raw file asks the host's page cache to read it ahead) does so and
    /// returns at once. Nothing is read into memory of ours and nothing can fail; a range
    /// past the end is clipped. The default does nothing (formats whose mapping would have
    /// to be read first to know where the bytes are).
    fn prefetch(&self, _off: u64, _len: u64) {}
}

/// Most images in one chain. Deeper chains are refused: each layer holds open files and a level
/// of recursion on reads. Real snapshot chains are tens deep at most.
pub(crate) const MAX_CHAIN_DEPTH: usize = 256;

/// State carried while opening a chain: the files already in it (loop detection) and the depth.
#[derive(Debug, Default)]
pub(crate) struct OpenCtx {
    seen: Vec<(file::FileId, PathBuf)>,
    /// The archive member being opened, if the top layer is one: it cannot name other files.
    member: Option<PathBuf>,
}

impl OpenCtx {
    /// Records `f` as the next layer; errors if it is already in the chain or the chain is too deep.
    pub(crate) fn enter(&mut self, f: &file::ImageFile) -> Result<()> {
        if let Some((_, first)) = self.seen.iter().find(|(id, _)| *id == f.id()) {
            return Err(Error::ChainLoop {
                path: f.path().to_path_buf(),
                target: first.clone(),
            });
        }
        if self.seen.len() >= MAX_CHAIN_DEPTH {
            return Err(Error::ChainTooDeep {
                path: f.path().to_path_buf(),
                max: MAX_CHAIN_DEPTH,
            });
        }
        self.seen.push((f.id(), f.path().to_path_buf()));
        if f.is_member() {
            self.member = Some(f.path().to_path_buf());
        }
        Ok(())
    }
}

/// Opens the image at `path`, probing its format by content, read-only, with its whole chain.
pub fn open(path: &Path) -> Result<Arc<dyn BlockDevice>> {
    open_as(path, None)
}

/// Like `open`, but with the format given (as `qemu-img -f`), for the top layer only.
pub fn open_as(path: &Path, format: Option<Format>) -> Result<Arc<dyn BlockDevice>> {
    open_layer(path, format, &mut OpenCtx::default())
}

/// Opens one layer (and, recursively, those below it) as part of the chain in `ctx`.
pub(crate) fn open_layer(
    path: &Path,
    format: Option<Format>,
    ctx: &mut OpenCtx,
) -> Result<Arc<dyn BlockDevice>> {
    let file = file::ImageFile::open(path)?;
    ctx.enter(&file)?;
    let format = match format {
        Some(f) => f,
        None => probe::probe(&file)?,
    };
    let opened: Result<Arc<dyn BlockDevice>> = match format {
        Format::Raw => return Ok(Arc::new(raw::Raw::new(file))),
        Format::Qcow2 => {
            qcow2::Qcow2::open(file, ctx).map(|d| -> Arc<dyn BlockDevice> { Arc::new(d) })
        }
        Format::Vmdk => {
            vmdk::Vmdk::open(file, ctx).map(|d| -> Arc<dyn BlockDevice> { Arc::new(d) })
        }
    };
    // A format given by hand that does not open: say what the file is, when it is plainly
    // something else (`-f vmdk` on a qcow2 is not a "corrupt vmdk descriptor").
    opened.map_err(|cause| {
        let found = file::ImageFile::open(path)
            .ok()
            .and_then(|f| probe::probe(&f).ok())
            .filter(|&found| found != format && found != Format::Raw);
        match found {
            Some(found) => Error::WrongFormat {
                path: path.to_path_buf(),
                given: format,
                found,
                cause: Box::new(cause),
            },
            None => cause,
        }
    })
}

/// Opens the image stored as the `len` bytes at `offset` of `archive` (a disk inside an OVA's
/// tar, read in place), probing its format unless given. It must be self-contained. `gzip`:
/// the bytes are a gzip stream whose output is the image (`ovf:compression="gzip"`), read
/// through an index without being decompressed to disk.
pub fn open_member(
    archive: &Path,
    name: &str,
    offset: u64,
    len: u64,
    format: Option<Format>,
    gzip: bool,
) -> Result<Arc<dyn BlockDevice>> {
    let mut file = file::ImageFile::open_member(archive, name, offset, len)?;
    if gzip {
        file = file::ImageFile::open_gzip(file)?;
    }
    let mut ctx = OpenCtx::default();
    ctx.enter(&file)?;
    let format = match format {
        Some(f) => f,
        None => probe::probe(&file)?,
    };
    Ok(match format {
        Format::Raw => Arc::new(raw::Raw::new(file)),
        Format::Qcow2 => Arc::new(qcow2::Qcow2::open(file, &mut ctx)?),
        Format::Vmdk => Arc::new(vmdk::Vmdk::open(file, &mut ctx)?),
    })
}

/// Resolves a backing/parent file name written inside `image`: absolute as is, relative to the
/// directory that holds `image` (as qemu and VMware do).
pub(crate) fn resolve_relative(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match image.parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}

/// A backing file named the way qemu names a window of a file, as virt-v2v writes it for a
/// disk inside an OVA: `json:{"file": {"driver": "raw", "offset": N, "size": N, "file":
/// {"driver": "file", "filename": PATH}}}` (qemu's block driver options as JSON; an outer
/// `"driver"` naming the format may be there too). Nothing else of that syntax is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonWindow {
    pub filename: String,
    pub offset: u64,
    pub size: u64,
    /// The window holds a gzip stream whose output is the image: ferry's own
    /// `"compression": "gzip"` in the raw object, which qemu does not read (it has no gzip
    /// driver); only ferry's scratch overlays over gzip-stored OVA disks carry it.
    pub gzip: bool,
}

impl JsonWindow {
    pub(crate) fn parse(json: &str) -> std::result::Result<JsonWindow, String> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let raw = v.get("file").ok_or("no \"file\" object")?;
        if raw.get("driver").and_then(|d| d.as_str()) != Some("raw") {
            return Err("the \"file\" object is not the raw driver".into());
        }
        let num = |k: &str| {
            raw.get(k)
                .and_then(|n| n.as_u64())
                .ok_or(format!("no numeric \"{k}\""))
        };
        let (offset, size) = (num("offset")?, num("size")?);
        let gzip = match raw.get("compression").map(|c| c.as_str()) {
            None => false,
            Some(Some("gzip")) => true,
            Some(_) => return Err("a \"compression\" other than gzip".into()),
        };
        let inner = raw.get("file").ok_or("no inner \"file\" object")?;
        if inner.get("driver").and_then(|d| d.as_str()) != Some("file") {
            return Err("the inner \"file\" object is not the file driver".into());
        }
        let filename = inner
            .get("filename")
            .and_then(|f| f.as_str())
            .filter(|f| !f.is_empty())
            .ok_or("no \"filename\"")?
            .to_string();
        Ok(JsonWindow {
            filename,
            offset,
            size,
            gzip,
        })
    }

    /// The JSON form (without the `json:` prefix), as qemu-img reads it.
    pub(crate) fn to_json(&self) -> String {
        let mut raw = serde_json::json!({
            "driver": "raw",
            "offset": self.offset,
            "size": self.size,
            "file": {"driver": "file", "filename": self.filename},
        });
        if self.gzip {
            raw["compression"] = "gzip".into();
        }
        serde_json::json!({ "file": raw }).to_string()
    }

    /// How the window is named in messages (it has no name of its own).
    fn label(&self) -> String {
        format!("@{}+{}", self.offset, self.size)
    }
}

/// The error for an image inside an archive that names another file (a backing file, an
/// extent): the name would resolve beside the archive, not inside it.
pub(crate) fn member_names_file(member: &Path, what: &str, name: &str) -> Error {
    Error::unsupported(
        member,
        format!(
            "this image inside an archive names the {what} {name}, which ferry does not look up \
             inside the archive: extract the archive first"
        ),
    )
}

/// Opens the backing/parent layer `name` (as written inside `image`) with `format` if recorded,
/// probing otherwise. A missing file is reported with the image that names it.
pub(crate) fn open_backing(
    image: &Path,
    name: &str,
    format: Option<&str>,
    ctx: &mut OpenCtx,
) -> Result<(Arc<dyn BlockDevice>, PathBuf)> {
    if let Some(m) = &ctx.member {
        return Err(member_names_file(m, "backing file", name));
    }
    if let Some(json) = name.strip_prefix("json:") {
        let w = JsonWindow::parse(json).map_err(|why| {
            Error::unsupported(
                image,
                format!("backing file {name}: {why} (ferry reads only a raw window of a file)"),
            )
        })?;
        let path = resolve_relative(image, &w.filename);
        let format = format.filter(|f| !f.is_empty()).map(str::parse::<Format>);
        let format = format.transpose().map_err(|_| {
            Error::unsupported(image, format!("backing file {name}: unknown format"))
        })?;
        let dev = open_member(&path, &w.label(), w.offset, w.size, format, w.gzip)?;
        return Ok((dev, path));
    }
    let path = resolve_relative(image, name);
    let format = match format {
        None | Some("") => None,
        Some(f) => Some(f.parse::<Format>().map_err(|_| {
            Error::unsupported(
                image,
                format!("backing file {name} has format '{f}', which ferry does not read"),
            )
        })?),
    };
    match open_layer(&path, format, ctx) {
        Ok(dev) => Ok((dev, path)),
        Err(Error::Open { source, .. }) => Err(Error::MissingBacking {
            path: image.to_path_buf(),
            backing: path,
            source,
        }),
        Err(e) => Err(e),
    }
}

/// Extents asked for in windows of this size, so a fragmented terabyte never needs millions of
/// extents in memory at once.
pub(crate) const EXTENT_WINDOW: u64 = 1 << 30;

/// Calls `f` with every extent of `[off, off+len)` of `dev` in order, merged across windows.
pub fn for_each_extent<E: From<Error>>(
    dev: &dyn BlockDevice,
    off: u64,
    len: u64,
    mut f: impl FnMut(Extent) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let end = off.checked_add(len).ok_or(Error::OutOfRange {
        offset: off,
        len,
        size: dev.len(),
    })?;
    let mut pending: Vec<Extent> = Vec::with_capacity(2);
    let mut pos = off;
    while pos < end {
        let n = EXTENT_WINDOW.min(end.saturating_sub(pos));
        for e in dev.extents(pos, n)? {
            push_extent(&mut pending, e);
            if pending.len() > 1 {
                let first = pending.remove(0);
                f(first)?;
            }
        }
        pos = pos.saturating_add(n);
    }
    for e in pending {
        f(e)?;
    }
    Ok(())
}

/// The layers of the chain from `top` down.
pub fn chain(top: &Arc<dyn BlockDevice>) -> Vec<Arc<dyn BlockDevice>> {
    let mut out = vec![top.clone()];
    while let Some(b) = out.last().and_then(|l| l.backing().cloned()) {
        out.push(b);
    }
    out
}
