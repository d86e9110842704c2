//! Writing new VMDK images ("Virtual Disk Format 5.0"): monolithicSparse (hosted sparse extent,
//! section "Hosted Sparse Extent Header", with a redundant grain directory), streamOptimized
//! (section "Stream-Optimized Compressed Sparse Extents": deflated grains behind grain markers,
//! each grain table written after its grains, then the grain directory, a footer and an
//! end-of-stream marker: what ESXi and vCenter import) and monolithicFlat (a descriptor file and a
//! raw `-flat.vmdk` extent). The descriptor and geometry follow what qemu-img writes.
//!
//! Grains must be handed over in increasing order (the copy engine reorders its chunks), so only
//! the grain table being filled is held in memory; grains that are all zeros are simply not given.

// Guard rails (issue 16 item 7): every conversion and every overflow this writer could hit is
// spelled out (`u64::from`, `try_from`, `checked_*` returning an error that names the quantity).

use super::sparse::{
    RawSparseHeader, COMPRESSION_DEFLATE, COMPRESSION_NONE, FLAG_COMPRESSED, FLAG_MARKERS,
    FLAG_NL_DETECT, FLAG_RGD, GD_AT_END, HEADER_LEN, MAGIC, MAX_CAPACITY_SECTORS, MAX_GTES_PER_GT,
    SECTOR,
};
use super::stream::{GRAIN_MARKER_LEN, MARKER_EOS, MARKER_FOOTER};
use crate::block::error::{fit, Error, Result};
use flate2::write::ZlibEncoder;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zerocopy::{FromBytes, IntoBytes};

/// Grain size in sectors (64 KiB), as VMware and qemu use.
pub(crate) const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table (the spec's fixed 512, written as MAX_GTES_PER_GT).
pub(crate) const GTES_PER_GT: u64 = 512;
/// A grain in bytes, a sector, and a grain table's entries, as buffer lengths.
const GRAIN_LEN: usize = 64 << 10;
const SECTOR_LEN: usize = 512;
const GT_ENTRIES: usize = 512;
const _: () = assert!(
    GTES_PER_GT == 512
        && GT_ENTRIES == 512
        && MAX_GTES_PER_GT == 512
        && GRAIN_SECTORS * SECTOR == 64 << 10
        && SECTOR == 512
        && GRAIN_MARKER_LEN == 12
);
/// The grain marker ahead of a compressed grain (lba u64, size u32), as a buffer length.
const GRAIN_MARKER_BYTES: usize = 12;
/// Sectors reserved for an embedded descriptor (qemu reserves 20).
const DESC_SECTORS: u64 = 20;
/// Metadata marker types of streamOptimized files (section "Markers").
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;

/// The three layouts ferry writes (`-o subformat=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subformat {
    MonolithicSparse,
    StreamOptimized,
    MonolithicFlat,
}

impl Subformat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "monolithicSparse" => Some(Self::MonolithicSparse),
            "streamOptimized" => Some(Self::StreamOptimized),
            "monolithicFlat" => Some(Self::MonolithicFlat),
            _ => None,
        }
    }

    /// The descriptor's createType.
    pub fn name(self) -> &'static str {
        match self {
            Self::MonolithicSparse => "monolithicSparse",
            Self::StreamOptimized => "streamOptimized",
            Self::MonolithicFlat => "monolithicFlat",
        }
    }
}

/// Adapter types a descriptor may name (`ddb.adapterType`).
pub const ADAPTER_TYPES: &[&str] = &["ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"];

/// What to create.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Virtual size in bytes (rounded up to whole sectors).
    pub size: u64,
    pub subformat: Subformat,
    /// One of ADAPTER_TYPES.
    pub adapter_type: String,
    /// `ddb.virtualHWVersion` (qemu's default is 4).
    pub hw_version: u32,
    /// The descriptor's CID (a content id that children check; any value but ffffffff).
    pub cid: u32,
}

impl CreateOptions {
    pub fn new(size: u64, subformat: Subformat) -> Self {
        // A fresh CID per image, as qemu picks a random one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            // The low 32 bits of the seconds: any varying value will do.
            .map(|d| d.subsec_nanos() ^ crate::bytes::le32(&d.as_secs().to_le_bytes(), 0))
            .unwrap_or(1);
        CreateOptions {
            size,
            subformat,
            adapter_type: "ide".into(),
            hw_version: 4,
            cid: (nanos ^ std::process::id().rotate_left(16)) & 0x7fff_ffff,
        }
    }
}

/// The descriptor text, laid out as qemu-img's. Geometry is qemu's: 63 sectors per track, 16
/// heads for IDE and 255 for SCSI, cylinders = size / (heads * 63 * 512).
pub(crate) fn descriptor_text(o: &CreateOptions, extent_file: &str) -> String {
    let sectors = o.size.div_ceil(SECTOR);
    let (heads, cylinders) = if o.adapter_type == "ide" {
        (16, sectors / (16 * 63))
    } else {
        (255, sectors / (255 * 63))
    };
    let kind = match o.subformat {
        Subformat::MonolithicFlat => "FLAT",
        _ => "SPARSE",
    };
    let offset = if o.subformat == Subformat::MonolithicFlat {
        " 0"
    } else {
        ""
    };
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={:08x}\nparentCID=ffffffff\ncreateType=\"{}\"\n\n\
         # Extent description\nRW {sectors} {kind} \"{extent_file}\"{offset}\n\n\
         # The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"{}\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{heads}\"\nddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"{}\"\n",
        o.cid,
        o.subformat.name(),
        o.hw_version,
        o.adapter_type
    )
}

/// The fields of a hosted sparse header that a writer chooses (sizes in sectors).
struct Header {
    version: u32,
    flags: u32,
    capacity: u64,
    desc_offset: u64,
    desc_size: u64,
    rgd_offset: u64,
    gd_offset: u64,
    overhead: u64,
    compress: u16,
}

impl Header {
    fn bytes(&self) -> [u8; HEADER_LEN] {
        let raw = RawSparseHeader {
            magic: *MAGIC,
            version: self.version.into(),
            flags: self.flags.into(),
            capacity: self.capacity.into(),
            grain_size: GRAIN_SECTORS.into(),
            descriptor_offset: self.desc_offset.into(),
            descriptor_size: self.desc_size.into(),
            num_gtes_per_gt: MAX_GTES_PER_GT.into(),
            rgd_offset: self.rgd_offset.into(),
            gd_offset: self.gd_offset.into(),
            overhead: self.overhead.into(),
            unclean_shutdown: 0,
            // The newline-detection bytes catch text-mode transfers.
            nl_check: *b"\n \r\n",
            compress_algorithm: self.compress.into(),
        };
        let mut b = [0u8; HEADER_LEN];
        b[..size_of_val(&raw)].copy_from_slice(raw.as_bytes());
        b
    }
}

/// A metadata marker sector of a streamOptimized file: {numSectors u64, size u32 = 0, type u32}.
fn marker(num_sectors: u64, kind: u32) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..8].copy_from_slice(&num_sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

struct State {
    /// Next free sector of the file (where the next grain goes).
    next: u64,
    /// Index and entries of the grain table being filled.
    gt_index: u64,
    gt: Vec<u32>,
    /// Grain tables before `gt_index` are written.
    /// streamOptimized: sector of each grain table, filled as they are written.
    gd: Vec<u32>,
    /// The next grain accepted must be at least this one.
    min_grain: u64,
}

/// A sparse (monolithicSparse or streamOptimized) VMDK being written.
pub struct VmdkWriter {
    path: PathBuf,
    file: File,
    /// qemu's writer locks on `file` (`block::lock`), held while it is open.
    _lock: Option<crate::block::lock::Lock>,
    stream: bool,
    capacity: u64,
    gt_count: u64,
    gd_sectors: u64,
    /// monolithicSparse: sector of the first grain table and of the first redundant one.
    gt_start: u64,
    rgt_start: u64,
    overhead: u64,
    state: Mutex<State>,
}

const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;

impl VmdkWriter {
    /// Creates `path` (truncating it) as an empty sparse VMDK of `o.size` bytes.
    pub fn create(path: &Path, o: &CreateOptions) -> Result<Self> {
        let stream = match o.subformat {
            Subformat::StreamOptimized => true,
            Subformat::MonolithicSparse => false,
            Subformat::MonolithicFlat => {
                return Err(Error::unsupported(
                    path,
                    "a monolithicFlat VMDK is a descriptor and a raw file, not a sparse extent"
                        .to_string(),
                ))
            }
        };
        let capacity = o.size.div_ceil(SECTOR);
        if capacity == 0 {
            // qemu (10) writes such a file too, then cannot open it: no grain directory.
            return Err(Error::unsupported(
                path,
                "an empty disk cannot be a sparse VMDK (use subformat=monolithicFlat)".to_string(),
            ));
        }
        if capacity > MAX_CAPACITY_SECTORS {
            return Err(Error::unsupported(
                path,
                format!("a VMDK of {} bytes is larger than ferry writes", o.size),
            ));
        }
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let gd_sectors =
            fit(gt_count.checked_mul(4), path, "vmdk grain directory size")?.div_ceil(SECTOR);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let desc = descriptor_text(o, &name);
        let desc_size = fit(u64::try_from(desc.len()).ok(), path, "vmdk descriptor size")?
            .div_ceil(SECTOR)
            .max(DESC_SECTORS);
        // Truncated only once locked: an image another process uses is left as it is.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.into(),
                source,
            })?;
        let lock = crate::block::lock::acquire(&file, path, crate::block::lock::Access::Write)?;
        crate::block::file::truncate_to_empty(&file).map_err(|source| Error::Io {
            path: path.into(),
            what: "VMDK image",
            offset: 0,
            source,
        })?;
        // monolithicSparse, as qemu lays it out: header, descriptor, redundant GD and its grain
        // tables, GD and its grain tables, grains from the next grain boundary.
        let at = |v: Option<u64>| fit(v, path, "vmdk metadata sector");
        let tables = at(gt_count.checked_mul(GT_SECTORS))?;
        let rgd_offset = at(desc_size.checked_add(1))?;
        let rgt_start = at(rgd_offset.checked_add(gd_sectors))?;
        let gd_offset = at(rgt_start.checked_add(tables))?;
        let gt_start = at(gd_offset.checked_add(gd_sectors))?;
        let overhead = if stream {
            at(rgd_offset.checked_next_multiple_of(GRAIN_SECTORS))?
        } else {
            at(gt_start
                .checked_add(tables)
                .and_then(|e| e.checked_next_multiple_of(GRAIN_SECTORS)))?
        };
        let h = if stream {
            Header {
                version: 3,
                flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
                capacity,
                desc_offset: 1,
                desc_size,
                rgd_offset: 0,
                gd_offset: GD_AT_END,
                overhead,
                compress: COMPRESSION_DEFLATE,
            }
        } else {
            Header {
                version: 1,
                flags: FLAG_NL_DETECT | FLAG_RGD,
                capacity,
                desc_offset: 1,
                desc_size,
                rgd_offset,
                gd_offset,
                overhead,
                compress: COMPRESSION_NONE,
            }
        };
        let w = VmdkWriter {
            path: path.into(),
            file,
            _lock: lock,
            stream,
            capacity,
            gt_count,
            gd_sectors,
            gt_start,
            rgt_start,
            overhead,
            state: Mutex::new(State {
                next: overhead,
                gt_index: 0,
                gt: vec![0; GT_ENTRIES],
                gd: Vec::new(),
                min_grain: 0,
            }),
        };
        // The header sector, then the descriptor padded to its reserved sectors.
        let mut head = h.bytes().to_vec();
        head.extend_from_slice(desc.as_bytes());
        head.resize(w.len(w.offset(rgd_offset)?)?, 0);
        w.pwrite(&head, 0, "vmdk header")?;
        if !stream {
            // Both grain directories point at their preallocated (zeroed) grain tables.
            let dir = |start: u64| -> Result<Vec<u8>> {
                let mut d = Vec::new();
                for i in 0..gt_count {
                    let gt = i
                        .checked_mul(GT_SECTORS)
                        .and_then(|o| o.checked_add(start))
                        .and_then(|s| u32::try_from(s).ok());
                    d.extend_from_slice(&fit(gt, path, "vmdk grain table sector")?.to_le_bytes());
                }
                Ok(d)
            };
            w.pwrite(
                &dir(rgt_start)?,
                w.offset(rgd_offset)?,
                "vmdk grain directory",
            )?;
            w.pwrite(
                &dir(gt_start)?,
                w.offset(gd_offset)?,
                "vmdk grain directory",
            )?;
        }
        w.file
            .set_len(w.offset(overhead)?)
            .map_err(|e| w.io("vmdk metadata", 0, e))?;
        Ok(w)
    }

    /// Grain size in bytes: copies hand over whole grains.
    pub fn grain_bytes(&self) -> u64 {
        GRAIN_SECTORS * SECTOR
    }

    /// Whether grains must come compressed (`compress_grain`) to `write_grain`.
    pub fn compressed(&self) -> bool {
        self.stream
    }

    /// Deflates one grain (zlib stream, RFC 1950), padded with zeros to a whole grain: qemu
    /// refuses a compressed grain that inflates to less. Runs in the copy's workers.
    pub fn compress_grain(&self, data: &[u8]) -> Vec<u8> {
        self.deflate_grain(data, flate2::Compression::default())
    }

    /// A grain as a zlib stream of stored blocks: for data deflate cannot shrink (random,
    /// encrypted, already compressed), where trying costs time and saves nothing. Every
    /// grain of a streamOptimized extent must be a zlib stream; this one is 11 bytes longer
    /// than the grain.
    pub fn store_grain(&self, data: &[u8]) -> Vec<u8> {
        self.deflate_grain(data, flate2::Compression::none())
    }

    fn deflate_grain(&self, data: &[u8], level: flate2::Compression) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::with_capacity(GRAIN_LEN + 64), level);
        // Writes to a Vec cannot fail.
        let _ = e.write_all(data);
        if let Some(pad) = GRAIN_LEN.checked_sub(data.len()).filter(|&p| p > 0) {
            let _ = e.write_all(&vec![0u8; pad]);
        }
        e.finish().unwrap_or_default()
    }

    /// The byte offset of file sector `sector`.
    fn offset(&self, sector: u64) -> Result<u64> {
        fit(sector.checked_mul(SECTOR), &self.path, "vmdk file offset")
    }

    /// `n` bytes as a buffer length.
    fn len(&self, n: u64) -> Result<usize> {
        fit(usize::try_from(n).ok(), &self.path, "vmdk buffer length")
    }

    /// A buffer's length as a file size.
    fn len64(&self, n: usize) -> Result<u64> {
        fit(u64::try_from(n).ok(), &self.path, "vmdk buffer length")
    }

    /// `a + b` for sector numbers.
    fn add(&self, a: u64, b: u64) -> Result<u64> {
        fit(a.checked_add(b), &self.path, "vmdk sector number")
    }

    fn io(&self, what: &'static str, offset: u64, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            what,
            offset,
            source,
        }
    }

    fn pwrite(&self, buf: &[u8], off: u64, what: &'static str) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .map_err(|e| self.io(what, off, e))
    }

    /// Writes grains starting at guest grain `first`: plain `data` (whole grains, the last one
    /// maybe short) for monolithicSparse, or one grain's `compress_grain` output for
    /// streamOptimized. Grains must come in increasing order.
    pub fn write_grains(&self, first: u64, data: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        let g = self.grain_bytes();
        let data_len = self.len64(data.len())?;
        let n = if self.stream { 1 } else { data_len.div_ceil(g) };
        let grains = self.capacity.div_ceil(GRAIN_SECTORS);
        let end = first.checked_add(n).filter(|&e| e <= grains);
        let Some(end) = end.filter(|_| first >= st.min_grain && n > 0) else {
            return Err(Error::unsupported(
                &self.path,
                format!(
                    "vmdk writer: grains {first}+{n} out of order or past the end ({grains} grains)"
                ),
            ));
        };
        // Before the grain: a streamOptimized table goes where the next grain would.
        if first / GTES_PER_GT != st.gt_index {
            self.flush_gt(&mut st, first / GTES_PER_GT)?;
        }
        let at = st.next;
        let len = if self.stream {
            // The marker, the grain, and the padding to a whole sector.
            let mut buf =
                Vec::with_capacity(data.len().saturating_add(GRAIN_MARKER_BYTES + SECTOR_LEN));
            let lba = fit(
                first.checked_mul(GRAIN_SECTORS),
                &self.path,
                "vmdk grain lba",
            )?;
            let size = fit(
                u32::try_from(data.len()).ok(),
                &self.path,
                "vmdk grain size",
            )?;
            buf.extend_from_slice(&lba.to_le_bytes());
            buf.extend_from_slice(&size.to_le_bytes());
            buf.extend_from_slice(data);
            let padded = fit(
                buf.len().checked_next_multiple_of(SECTOR_LEN),
                &self.path,
                "vmdk grain length",
            )?;
            buf.resize(padded, 0);
            self.pwrite(&buf, self.offset(at)?, "vmdk grain")?;
            self.len64(buf.len())?
        } else {
            self.pwrite(data, self.offset(at)?, "vmdk grain")?;
            let full = fit(n.checked_mul(g), &self.path, "vmdk grain run length")?;
            if let Some(pad) = full.checked_sub(data_len).filter(|&p| p > 0) {
                // The last grain is stored whole.
                self.pwrite(
                    &vec![0u8; self.len(pad)?],
                    self.add(self.offset(at)?, data_len)?,
                    "vmdk grain",
                )?;
            }
            full
        };
        for grain in first..end {
            let gti = grain / GTES_PER_GT;
            if gti != st.gt_index {
                self.flush_gt(&mut st, gti)?;
            }
            let sector = if self.stream {
                Some(at)
            } else {
                grain
                    .checked_sub(first)
                    .and_then(|i| i.checked_mul(GRAIN_SECTORS))
                    .and_then(|o| o.checked_add(at))
            };
            let entry = sector.and_then(|s| u32::try_from(s).ok()).ok_or_else(|| {
                Error::unsupported(
                    &self.path,
                    "the VMDK grows past 2 TiB of host sectors (32-bit grain table entries)"
                        .to_string(),
                )
            })?;
            st.gt[self.len(grain % GTES_PER_GT)?] = entry;
        }
        st.next = self.add(at, len / SECTOR)?;
        st.min_grain = end;
        Ok(())
    }

    /// Writes the grain table being filled and moves on to table `to` (streamOptimized writes
    /// the empty tables in between too, so every directory entry points at a table).
    fn flush_gt(&self, st: &mut State, to: u64) -> Result<()> {
        let bytes: Vec<u8> = st.gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        if self.stream {
            let empty = vec![0u8; bytes.len()];
            for i in st.gt_index..to {
                let data = if i == st.gt_index { &bytes } else { &empty };
                let m = st.next;
                let table = self.add(m, 1)?;
                self.pwrite(
                    &marker(GT_SECTORS, MARKER_GT),
                    self.offset(m)?,
                    "vmdk marker",
                )?;
                self.pwrite(data, self.offset(table)?, "vmdk grain table")?;
                st.gd.push(fit(
                    u32::try_from(table).ok(),
                    &self.path,
                    "vmdk grain table sector",
                )?);
                st.next = self.add(table, GT_SECTORS)?;
            }
        } else if st.gt.iter().any(|&e| e != 0) {
            let into = fit(
                st.gt_index.checked_mul(GT_SECTORS),
                &self.path,
                "vmdk grain table sector",
            )?;
            for start in [self.rgt_start, self.gt_start] {
                let at = self.offset(self.add(start, into)?)?;
                self.pwrite(&bytes, at, "vmdk grain table")?;
            }
        }
        st.gt.fill(0);
        st.gt_index = to;
        Ok(())
    }

    /// Ends the image: the last grain tables, and for streamOptimized the grain directory, the
    /// footer and the end-of-stream marker (syncing is the caller's choice: `sync`). Until then a streamOptimized file has no
    /// footer, so a half-written one is refused by readers instead of looking complete.
    pub fn finish(&self) -> Result<()> {
        let mut st = self.state.lock();
        if self.stream {
            self.flush_gt(&mut st, self.gt_count)?;
            let gd_at = self.add(st.next, 1)?;
            let mut gd: Vec<u8> = st.gd.iter().flat_map(|e| e.to_le_bytes()).collect();
            gd.resize(self.len(self.offset(self.gd_sectors)?)?, 0);
            let mut tail = Vec::with_capacity(gd.len().saturating_add(4 * HEADER_LEN));
            tail.extend_from_slice(&marker(self.gd_sectors, MARKER_GD));
            tail.extend_from_slice(&gd);
            tail.extend_from_slice(&marker(1, MARKER_FOOTER));
            let mut head = [0u8; HEADER_LEN];
            self.file
                .read_exact_at(&mut head, 0)
                .map_err(|e| self.io("vmdk header", 0, e))?;
            // The footer is the header again, with the grain directory now known.
            if let Ok((raw, _)) = RawSparseHeader::mut_from_prefix(&mut head[..]) {
                raw.gd_offset.set(gd_at);
            }
            tail.extend_from_slice(&head);
            tail.extend_from_slice(&marker(0, MARKER_EOS));
            self.pwrite(&tail, self.offset(st.next)?, "vmdk footer")?;
            st.next = self.add(st.next, self.len64(tail.len())? / SECTOR)?;
        } else {
            let to = self.add(st.gt_index, 1)?;
            self.flush_gt(&mut st, to)?;
            self.file
                .set_len(self.offset(st.next.max(self.overhead))?)
                .map_err(|e| self.io("vmdk file length", 0, e))?;
        }
        Ok(())
    }

    /// Writes the file through to the disk.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| self.io("vmdk sync", 0, e))
    }
}

/// The extent file name of a monolithicFlat descriptor `path` (`disk.vmdk` → `disk-flat.vmdk`,
/// qemu's naming).
pub(crate) fn flat_extent_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    path.with_file_name(format!("{stem}-flat.vmdk"))
}

/// Writes the descriptor file of a monolithicFlat image whose extent is `flat_extent_path(path)`.
pub(crate) fn write_flat_descriptor(path: &Path, o: &CreateOptions) -> Result<()> {
    let flat = flat_extent_path(path);
    let name = flat
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(path, descriptor_text(o, &name)).map_err(|source| Error::Io {
        path: path.into(),
        what: "vmdk descriptor",
        offset: 0,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::descriptor::Descriptor;
    use super::super::sparse::SparseHeader;
    use super::*;

    #[test]
    fn header_parses_back() {
        let h = Header {
            version: 3,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 12345,
            desc_offset: 1,
            desc_size: 20,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            compress: COMPRESSION_DEFLATE,
        };
        let p = SparseHeader::parse(&h.bytes(), Path::new("x")).unwrap();
        assert_eq!(
            (p.version, p.flags, p.capacity, p.grain_size, p.gd_offset),
            (3, h.flags, 12345, GRAIN_SECTORS, GD_AT_END)
        );
        assert_eq!(
            (p.overhead, p.num_gtes_per_gt, p.nl_check),
            (128, 512, *b"\n \r\n")
        );
        assert!(p.compressed() && !p.unclean_shutdown);
    }

    /// The header sector laid out at the spec's byte positions, independently of
    /// RawSparseHeader, pins the bytes the writer produces.
    #[test]
    fn header_layout() {
        let h = Header {
            version: 1,
            flags: FLAG_NL_DETECT | FLAG_RGD,
            capacity: 0x1122_3344_5566,
            desc_offset: 1,
            desc_size: 20,
            rgd_offset: 21,
            gd_offset: 29,
            overhead: 384,
            compress: COMPRESSION_NONE,
        };
        let mut want = [0u8; HEADER_LEN];
        let mut put = |at: usize, v: &[u8]| want[at..at + v.len()].copy_from_slice(v);
        put(0, b"KDMV");
        put(4, &1u32.to_le_bytes());
        put(8, &h.flags.to_le_bytes());
        put(12, &h.capacity.to_le_bytes());
        put(20, &GRAIN_SECTORS.to_le_bytes());
        put(28, &1u64.to_le_bytes());
        put(36, &20u64.to_le_bytes());
        put(44, &512u32.to_le_bytes());
        put(48, &21u64.to_le_bytes());
        put(56, &29u64.to_le_bytes());
        put(64, &384u64.to_le_bytes());
        put(73, b"\n \r\n");
        put(77, &COMPRESSION_NONE.to_le_bytes());
        assert_eq!(h.bytes(), want);
    }

    #[test]
    fn descriptor_parses_back() {
        let mut o = CreateOptions::new((10 << 30) + 1, Subformat::MonolithicFlat);
        o.adapter_type = "lsilogic".into();
        let d = Descriptor::parse(descriptor_text(&o, "d-flat.vmdk").as_bytes()).unwrap();
        assert_eq!(d.create_type.as_deref(), Some("monolithicFlat"));
        assert_eq!(d.cid, Some(o.cid));
        assert_eq!(d.parent_cid, None);
        assert_eq!(d.extents.len(), 1);
        assert_eq!(d.extents[0].sectors, (10 << 21) + 1);
        assert_eq!(d.extents[0].file.as_deref(), Some("d-flat.vmdk"));
        // 10 GiB over 255 heads of 63 sectors: 1305 whole cylinders, as qemu computes.
        assert_eq!(d.ddb("geometry.cylinders"), Some("1305"));
        assert_eq!(d.ddb("geometry.heads"), Some("255"));
        assert_eq!(d.ddb("adapterType"), Some("lsilogic"));
    }

    #[test]
    fn out_of_order_grains_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.vmdk");
        let w = VmdkWriter::create(
            &p,
            &CreateOptions::new(1 << 20, Subformat::MonolithicSparse),
        )
        .unwrap();
        w.write_grains(3, &[1u8; 65536]).unwrap();
        assert!(w.write_grains(2, &[1u8; 65536]).is_err());
        assert!(w.write_grains(16, &[1u8; 65536]).is_err(), "past the end");
        w.finish().unwrap();
    }
}
