//! Sparse extents: the hosted sparse header "KDMV" ("Virtual Disk Format 5.0", section "Hosted
//! Sparse Extent Header") and the two-level grain directory (GD) / grain tables (GT) that map
//! grains to sectors of the extent file (section "Grain Directories and Grain Tables"). SEsparse
//! extents (`sesparse.rs`) use the same two levels with 64-bit typed entries, so they share the
//! lookup here.

use super::stream;
use crate::block::error::{Error, Result};
use crate::block::file::ImageFile;
use crate::bytes::{le32, le64, wide};
use lru::LruCache;
use parking_lot::Mutex;
use std::mem::{offset_of, size_of};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use zerocopy::byteorder::{LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub(crate) const MAGIC: &[u8; 4] = b"KDMV";
pub(crate) const SECTOR: u64 = 512;
/// The header occupies the first sector of the extent (79 bytes used, the rest padding).
pub(crate) const HEADER_LEN: usize = 512;
const HEADER_USED: usize = size_of::<RawSparseHeader>();
const _: () = assert!(HEADER_USED == 79);

/// The used part of the hosted sparse extent header, little-endian, sizes in sectors: the one
/// layout the reader parses and the writer fills (the rest of the first sector is zero padding).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct RawSparseHeader {
    pub magic: [u8; 4],
    pub version: U32<LittleEndian>,
    pub flags: U32<LittleEndian>,
    pub capacity: U64<LittleEndian>,
    pub grain_size: U64<LittleEndian>,
    pub descriptor_offset: U64<LittleEndian>,
    pub descriptor_size: U64<LittleEndian>,
    pub num_gtes_per_gt: U32<LittleEndian>,
    pub rgd_offset: U64<LittleEndian>,
    pub gd_offset: U64<LittleEndian>,
    pub overhead: U64<LittleEndian>,
    pub unclean_shutdown: u8,
    /// singleEndLineChar, nonEndLineChar, doubleEndLineChar1 and 2: "\n \r\n" when intact.
    pub nl_check: [u8; 4],
    pub compress_algorithm: U16<LittleEndian>,
}

/// Byte position of a [`RawSparseHeader`] field, for error messages and in-place updates.
macro_rules! at {
    ($field:ident) => {
        wide(offset_of!(RawSparseHeader, $field))
    };
}
/// gdOffset of a streamOptimized file whose grain directory is known only at the end: the
/// footer (a copy of the header) holds the real one.
pub(crate) const GD_AT_END: u64 = u64::MAX;

pub(crate) const FLAG_NL_DETECT: u32 = 1 << 0;
pub(crate) const FLAG_RGD: u32 = 1 << 1;
pub(crate) const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub(crate) const FLAG_COMPRESSED: u32 = 1 << 16;
pub(crate) const FLAG_MARKERS: u32 = 1 << 17;
pub(crate) const COMPRESSION_NONE: u16 = 0;
pub(crate) const COMPRESSION_DEFLATE: u16 = 1;

/// A grain table entry of 1 means "reads as zeros" when FLAG_ZERO_GRAIN is set.
const GTE_ZERO: u64 = 1;

/// Largest grain: VMware uses 64 KiB; 64 MiB bounds the buffer one compressed grain costs.
pub(crate) const MAX_GRAIN_SECTORS: u64 = 1 << 17;
/// Entries per grain table: the spec fixes 512, and qemu refuses more.
pub(crate) const MAX_GTES_PER_GT: u32 = 512;
/// Largest capacity (512 TiB): VMware's largest virtual disk is 62 TiB; the bound keeps every
/// byte offset computed from sectors far from u64 overflow.
pub(crate) const MAX_CAPACITY_SECTORS: u64 = 1 << 40;
/// Most grain directory entries (64 MiB of u32): a 512 TiB disk with the standard 32 MiB per
/// grain table needs 2^24. Bounds the directory allocated at open.
pub(crate) const MAX_GD_ENTRIES: u64 = 1 << 24;
/// Memory for cached grain tables per image (at least 16 tables). Tables are held decoded, 8 bytes
/// an entry: 8 MiB holds 2048 standard tables (512 entries), which map 64 TiB of 64 KiB grains.
const GT_CACHE_BYTES: u64 = 8 << 20;
/// Bytes of grain tables asked for at open when they lie together, at most: the tables of a
/// 256 GiB disk of 64 KiB grains (one 2 KiB table maps 32 MiB).
const TABLE_PREFETCH_MAX: u64 = 16 << 20;

/// The hosted sparse extent header, all sizes in sectors, validated by `parse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub grain_size: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub overhead: u64,
    pub unclean_shutdown: bool,
    pub nl_check: [u8; 4],
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses and validates a header from `buf` (at least 79 bytes). `path` names the file in
    /// errors; offsets in errors are those of the field within the header.
    pub fn parse(buf: &[u8], path: &Path) -> Result<Self> {
        let bad = |at: u64, d: String| Error::corrupt(path, "vmdk sparse header", at, d);
        let Ok((raw, _)) = RawSparseHeader::read_from_prefix(buf) else {
            return Err(Error::Truncated {
                path: path.into(),
                what: "vmdk sparse header",
                offset: 0,
                len: wide(HEADER_USED),
                file_len: wide(buf.len()),
            });
        };
        if &raw.magic != MAGIC {
            return Err(bad(
                at!(magic),
                "bad magic (not a VMDK sparse extent)".into(),
            ));
        }
        let h = SparseHeader {
            version: raw.version.get(),
            flags: raw.flags.get(),
            capacity: raw.capacity.get(),
            grain_size: raw.grain_size.get(),
            descriptor_offset: raw.descriptor_offset.get(),
            descriptor_size: raw.descriptor_size.get(),
            num_gtes_per_gt: raw.num_gtes_per_gt.get(),
            rgd_offset: raw.rgd_offset.get(),
            gd_offset: raw.gd_offset.get(),
            overhead: raw.overhead.get(),
            unclean_shutdown: raw.unclean_shutdown != 0,
            nl_check: raw.nl_check,
            compress_algorithm: raw.compress_algorithm.get(),
        };
        if !(1..=3).contains(&h.version) {
            return Err(Error::unsupported(
                path,
                format!(
                    "VMDK sparse extent version {} is not supported (only 1 to 3)",
                    h.version
                ),
            ));
        }
        if h.capacity > MAX_CAPACITY_SECTORS {
            return Err(bad(
                at!(capacity),
                format!(
                    "capacity {} sectors is more than the {MAX_CAPACITY_SECTORS} ferry accepts",
                    h.capacity
                ),
            ));
        }
        if !(1..=MAX_GRAIN_SECTORS).contains(&h.grain_size) {
            return Err(bad(
                at!(grain_size),
                format!(
                    "grain size {} sectors outside 1..={MAX_GRAIN_SECTORS}",
                    h.grain_size
                ),
            ));
        }
        if !(1..=MAX_GTES_PER_GT).contains(&h.num_gtes_per_gt) {
            return Err(bad(
                at!(num_gtes_per_gt),
                format!(
                    "{} entries per grain table outside 1..={MAX_GTES_PER_GT}",
                    h.num_gtes_per_gt
                ),
            ));
        }
        let max_desc = wide(super::descriptor::MAX_DESCRIPTOR_BYTES) / SECTOR;
        if h.descriptor_size > max_desc {
            return Err(bad(
                at!(descriptor_size),
                format!(
                    "embedded descriptor of {} sectors is larger than the {max_desc} ferry accepts",
                    h.descriptor_size
                ),
            ));
        }
        if h.compress_algorithm > COMPRESSION_DEFLATE {
            return Err(Error::unsupported(
                path,
                format!(
                    "VMDK compression algorithm {} is not supported (only deflate)",
                    h.compress_algorithm
                ),
            ));
        }
        if h.gd_entries() > MAX_GD_ENTRIES {
            return Err(bad(
                at!(capacity),
                format!(
                "capacity {} sectors needs {} grain directory entries, more than {MAX_GD_ENTRIES}",
                h.capacity, h.gd_entries()),
            ));
        }
        Ok(h)
    }

    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// Grain directory entries needed to cover the capacity (parse bounds the operands).
    pub fn gd_entries(&self) -> u64 {
        // grain_size and num_gtes_per_gt are checked first (at most 2^17 × 512): no overflow.
        let per_gt = self
            .grain_size
            .saturating_mul(u64::from(self.num_gtes_per_gt))
            .max(1);
        self.capacity.div_ceil(per_gt)
    }
}

/// How grain table entries are encoded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GteFormat {
    /// Hosted sparse / streamOptimized: u32 sector numbers (of the grain, or of its marker when
    /// compressed); grains must lie at or after `min_grain_sector` (the metadata area).
    Hosted {
        zero_grain: bool,
        compressed: bool,
        markers: bool,
        min_grain_sector: u64,
    },
    /// SEsparse: u64 entries whose top nibble is the type; GD entries are GT indices into the
    /// table area at `gts_offset` (bytes); grains are indices into the area at `grains_offset`
    /// (sectors).
    SeSparse { gts_offset: u64, grains_offset: u64 },
}

/// What one grain maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grain {
    /// Not allocated here: read from the parent.
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Guest data at this host byte offset (of the looked-up byte).
    Data { host: u64 },
    /// A compressed grain whose marker (or data, without markers) starts at `host`.
    Compressed { host: u64 },
}

/// Grain tables of every sparse extent of an image, keyed by (extent index, GT host offset),
/// each decoded to u64 entries. Bounded; I/O happens outside the lock.
pub(crate) struct GtCache(Mutex<LruCache<CacheKey, Arc<[u64]>>>);

/// (extent index in the image, host offset of the table or grain).
pub(crate) type CacheKey = (usize, u64);

impl GtCache {
    /// A cache sized for tables of `gt_entries` entries (held as u64s).
    pub(crate) fn new(gt_entries: u64) -> Self {
        let n = usize::try_from(
            GT_CACHE_BYTES
                .checked_div(gt_entries.saturating_mul(8))
                .unwrap_or(0),
        )
        .unwrap_or(16)
        .max(16);
        GtCache(Mutex::new(LruCache::new(
            NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
        )))
    }
}

/// The shape of a grain directory: sizes in bytes, all validated by the header parsers.
pub(crate) struct Layout {
    pub capacity: u64,
    pub grain_bytes: u64,
    pub gtes_per_gt: u64,
    pub entry_bytes: u64,
    pub format: GteFormat,
}

/// One sparse extent file with its grain directory (and the redundant copy, when usable).
pub(crate) struct SparseExtent {
    pub file: ImageFile,
    /// Virtual bytes the directory covers (the header's capacity).
    pub capacity: u64,
    pub grain_bytes: u64,
    pub gtes_per_gt: u64,
    pub entry_bytes: u64,
    pub format: GteFormat,
    gd: Vec<u64>,
    gd_pos: u64,
    rgd: Option<(Vec<u64>, u64)>,
    pub header: Option<SparseHeader>,
    pub warnings: Vec<String>,
}

impl SparseExtent {
    /// Builds an extent from its decoded directory; checks every directory entry once, so that
    /// bad ones covered by the redundant directory are reported as a warning up front.
    pub(crate) fn new(
        file: ImageFile,
        layout: Layout,
        gd: (Vec<u64>, u64),
        rgd: Option<(Vec<u64>, u64)>,
        header: Option<SparseHeader>,
    ) -> Result<Self> {
        let mut e = SparseExtent {
            file,
            capacity: layout.capacity,
            grain_bytes: layout.grain_bytes,
            gtes_per_gt: layout.gtes_per_gt,
            entry_bytes: layout.entry_bytes,
            format: layout.format,
            gd: gd.0,
            gd_pos: gd.1,
            rgd,
            header,
            warnings: Vec::new(),
        };
        let mut fallbacks = 0u64;
        let mut first = None;
        for i in 0..e.gd.len() {
            if let Err(err) = e.gt_location(&e.gd, e.gd_pos, i) {
                if let Some((rgd, rpos)) = &e.rgd {
                    if e.gt_location(rgd, *rpos, i).is_ok() {
                        fallbacks = fallbacks.saturating_add(1);
                        first.get_or_insert(err.to_string());
                    }
                }
            }
        }
        if let Some(first) = first {
            let w = format!(
                "{fallbacks} grain directory entries are bad (first: {first}); \
                 using the redundant grain directory for them"
            );
            log::warn!("{w}");
            e.warnings.push(w);
        }
        let tables = e.check_tables_unique()?;
        e.prefetch_tables(&tables);
        Ok(e)
    }

    /// Asks the host for the grain tables in one background read when they lie together
    /// (qemu-img writes them all after the directory; VMware's stream writer puts each after
    /// its grains, and those are left to be read as needed). A first read of the disk would
    /// otherwise wait on the disk for each table in turn. `tables`: their sorted offsets.
    fn prefetch_tables(&self, tables: &[u64]) {
        let (Some(&first), Some(&last)) = (tables.first(), tables.last()) else {
            return;
        };
        let span = last.saturating_add(self.gt_bytes()).saturating_sub(first);
        let bytes = wide(tables.len()).saturating_mul(self.gt_bytes());
        if span <= bytes.saturating_mul(2) && span <= TABLE_PREFETCH_MAX {
            self.file.will_need(first, span);
        }
    }

    /// Refuses a directory in which two entries name the same grain table: hosted sparse
    /// extents never share tables, and a shared one would let a small file describe a huge
    /// mapping (`extents()` work must stay proportional to the file's metadata). Returns the
    /// tables' offsets, sorted.
    fn check_tables_unique(&self) -> Result<Vec<u64>> {
        let mut tables: Vec<(u64, usize)> = (0..self.gd.len())
            .filter_map(|i| match self.table_location(i) {
                Ok(Some(off)) => Some((off, i)),
                _ => None, // unallocated, or an error that reads will report
            })
            .collect();
        tables.sort_unstable();
        match tables.windows(2).find(|w| w[0].0 == w[1].0) {
            Some(w) => Err(Error::corrupt(
                self.file.path(),
                "vmdk grain directory",
                self.gd_pos
                    .saturating_add(wide(w[1].1).saturating_mul(self.entry_bytes)),
                format!(
                    "entries {} and {} both point at the grain table at {:#x}",
                    w[0].1, w[1].1, w[0].0
                ),
            )),
            None => Ok(tables.into_iter().map(|(off, _)| off).collect()),
        }
    }

    // The layout's fields are bounded where headers are parsed (grains of at most 2^17
    // sectors, tables of at most 4096 entries of 4 or 8 bytes): these products never saturate.
    pub(crate) fn gt_bytes(&self) -> u64 {
        self.gtes_per_gt.saturating_mul(self.entry_bytes)
    }

    fn gt_coverage(&self) -> u64 {
        self.grain_bytes.saturating_mul(self.gtes_per_gt).max(1)
    }

    /// Decodes and checks directory entry `i` of `dir` (at host offset `pos`): the host offset
    /// of its grain table, or None if the table is not allocated.
    fn gt_location(&self, dir: &[u64], pos: u64, i: usize) -> Result<Option<u64>> {
        let path = self.file.path();
        let entry_pos = pos.saturating_add(wide(i).saturating_mul(self.entry_bytes));
        let bad = |d: String| Error::corrupt(path, "vmdk grain directory", entry_pos, d);
        let entry = *dir
            .get(i)
            .ok_or_else(|| bad(format!("entry {i} is past the directory")))?;
        if entry == 0 {
            return Ok(None);
        }
        let off = match self.format {
            // Hosted entries are u32: no overflow.
            GteFormat::Hosted { .. } => entry.saturating_mul(SECTOR),
            GteFormat::SeSparse { gts_offset, .. } => {
                if entry >> 32 != 0x1000_0000 {
                    return Err(bad(format!("entry {entry:#x} has an unknown type")));
                }
                (entry & 0xffff_ffff)
                    .checked_mul(self.gt_bytes())
                    .and_then(|o| o.checked_add(gts_offset))
                    .ok_or_else(|| bad(format!("grain table index {entry:#x} overflows")))?
            }
        };
        if off < wide(HEADER_LEN) {
            return Err(bad(format!(
                "grain table at {off:#x} lies inside the header"
            )));
        }
        match off.checked_add(self.gt_bytes()) {
            Some(end) if end <= self.file.len() => Ok(Some(off)),
            _ => Err(Error::Truncated {
                path: path.into(),
                what: "vmdk grain table",
                offset: off,
                len: self.gt_bytes(),
                file_len: self.file.len(),
            }),
        }
    }

    /// The grain table for directory entry `i`, from the primary directory or, when its entry
    /// is bad, from the redundant one.
    fn table_location(&self, i: usize) -> Result<Option<u64>> {
        match self.gt_location(&self.gd, self.gd_pos, i) {
            Ok(l) => Ok(l),
            Err(e) => match &self.rgd {
                Some((rgd, rpos)) => match self.gt_location(rgd, *rpos, i) {
                    Ok(l) => Ok(l),
                    Err(_) => Err(e),
                },
                None => Err(e),
            },
        }
    }

    fn load_gt(&self, id: usize, cache: &GtCache, off: u64) -> Result<Arc<[u64]>> {
        if let Some(t) = cache.0.lock().get(&(id, off)) {
            return Ok(t.clone());
        }
        // gt_bytes <= 512 * 8 or 4096 * 8 (SEsparse): small and bounded.
        let len = usize::try_from(self.gt_bytes())
            .map_err(|_| Error::corrupt(self.file.path(), "vmdk grain table", off, "too large"))?;
        let mut raw = vec![0u8; len];
        self.file.read_exact_at(&mut raw, off, "vmdk grain table")?;
        let t: Arc<[u64]> = if self.entry_bytes == 8 {
            raw.chunks_exact(8).map(|c| le64(c, 0)).collect()
        } else {
            raw.chunks_exact(4).map(|c| u64::from(le32(c, 0))).collect()
        };
        cache.0.lock().put((id, off), t.clone());
        Ok(t)
    }

    /// Decodes grain table entry `entry` (at host offset `entry_pos`).
    fn classify(&self, entry: u64, entry_pos: u64) -> Result<Grain> {
        let path = self.file.path();
        let bad = |d: String| Error::corrupt(path, "vmdk grain table", entry_pos, d);
        let host = match self.format {
            GteFormat::Hosted {
                zero_grain,
                min_grain_sector,
                ..
            } => {
                if entry == 0 {
                    return Ok(Grain::Unallocated);
                }
                if entry == GTE_ZERO && zero_grain {
                    return Ok(Grain::Zero);
                }
                if entry < min_grain_sector {
                    return Err(bad(format!(
                        "grain at sector {entry} lies inside the metadata (before sector {min_grain_sector})"
                    )));
                }
                // Hosted entries are u32: no overflow.
                entry.saturating_mul(SECTOR)
            }
            GteFormat::SeSparse { grains_offset, .. } => match entry >> 60 {
                0 if entry == 0 => return Ok(Grain::Unallocated),
                // 1 = unmapped by the guest (SCSI UNMAP), 2 = zeroed: both read as zeros.
                1 | 2 => return Ok(Grain::Zero),
                3 => {
                    let index = ((entry & 0x0fff_0000_0000_0000) >> 48)
                        | ((entry & 0x0000_ffff_ffff_ffff) << 12);
                    index
                        .checked_mul(self.grain_bytes / SECTOR)
                        .and_then(|s| s.checked_add(grains_offset))
                        .and_then(|s| s.checked_mul(SECTOR))
                        .ok_or_else(|| bad(format!("grain index {index:#x} overflows")))?
                }
                _ => return Err(bad(format!("entry {entry:#x} has an unknown type"))),
            },
        };
        if host >= self.file.len() {
            return Err(Error::Truncated {
                path: path.into(),
                what: "vmdk grain",
                offset: host,
                len: self.grain_bytes,
                file_len: self.file.len(),
            });
        }
        Ok(match self.format {
            GteFormat::Hosted {
                compressed: true, ..
            } => Grain::Compressed { host },
            _ => Grain::Data { host },
        })
    }

    /// Maps extent-relative byte `rel` (at most `max` bytes from it, never past the grain table
    /// that maps `rel`): what it holds and how far that continues (same kind, contiguous host
    /// bytes for data; one grain at most for compressed grains). `id` keys this extent in `cache`.
    pub(crate) fn map_run(
        &self,
        id: usize,
        cache: &GtCache,
        rel: u64,
        max: u64,
    ) -> Result<(Grain, u64)> {
        // gt_coverage and grain_bytes are at least 1; the table that maps rel ends after it,
        // so limit > rel and the differences below do not underflow.
        let cov = self.gt_coverage();
        let gdi = rel.checked_div(cov).unwrap_or(0);
        let table_end = gdi.saturating_add(1).saturating_mul(cov);
        let limit = rel.saturating_add(max).min(table_end);
        let gdi = usize::try_from(gdi).unwrap_or(usize::MAX);
        let Some(gt_off) = self.table_location(gdi)? else {
            return Ok((Grain::Unallocated, limit.saturating_sub(rel)));
        };
        let t = self.load_gt(id, cache, gt_off)?;
        let g = self.grain_bytes.max(1);
        // The entry of pos's grain in its table (u64::MAX, past any table, if the layout is
        // impossible).
        let at = |pos: u64| -> Result<Grain> {
            let i = pos
                .checked_div(g)
                .and_then(|c| c.checked_rem(self.gtes_per_gt))
                .unwrap_or(u64::MAX);
            let entry_pos = gt_off.saturating_add(i.saturating_mul(self.entry_bytes));
            let entry = usize::try_from(i).ok().and_then(|i| t.get(i)).copied();
            let Some(entry) = entry else {
                return Err(Error::corrupt(
                    self.file.path(),
                    "vmdk grain table",
                    entry_pos,
                    format!("entry {i} lies past the table"),
                ));
            };
            self.classify(entry, entry_pos)
        };
        let in_grain = rel.checked_rem(g).unwrap_or(0);
        let grain_end = rel.saturating_sub(in_grain).saturating_add(g).min(limit);
        let first = match at(rel)? {
            // classify checked host < file length, and in_grain < g: no overflow.
            Grain::Data { host } => Grain::Data {
                host: host.saturating_add(in_grain),
            },
            c @ Grain::Compressed { .. } => return Ok((c, grain_end.saturating_sub(rel))),
            m => m,
        };
        let mut end = grain_end;
        while end < limit {
            let next = at(end)?;
            let continues = match (first, next) {
                (Grain::Data { host: a }, Grain::Data { host: b }) => {
                    a.checked_add(end.saturating_sub(rel)) == Some(b)
                }
                (Grain::Zero, Grain::Zero) | (Grain::Unallocated, Grain::Unallocated) => true,
                _ => false,
            };
            if !continues {
                break;
            }
            end = end.saturating_add(g).min(limit);
        }
        Ok((first, end.saturating_sub(rel)))
    }
}

/// Reads `n` little-endian directory entries of `entry_bytes` each at byte `off`; bounds the
/// allocation by the file length before making it.
pub(crate) fn read_directory(
    file: &ImageFile,
    off: u64,
    n: u64,
    entry_bytes: u64,
) -> Result<Vec<u64>> {
    let bytes = n
        .checked_mul(entry_bytes)
        .filter(|b| off.checked_add(*b).is_some_and(|end| end <= file.len()));
    let Some(bytes) = bytes else {
        return Err(Error::Truncated {
            path: file.path().into(),
            what: "vmdk grain directory",
            offset: off,
            len: n.saturating_mul(entry_bytes),
            file_len: file.len(),
        });
    };
    // bytes <= the file's length, which the file's read proves fits memory ranges.
    let len = usize::try_from(bytes)
        .map_err(|_| Error::corrupt(file.path(), "vmdk grain directory", off, "too large"))?;
    let mut raw = vec![0u8; len];
    file.read_exact_at(&mut raw, off, "vmdk grain directory")?;
    Ok(if entry_bytes == 8 {
        raw.chunks_exact(8).map(|c| le64(c, 0)).collect()
    } else {
        raw.chunks_exact(4).map(|c| u64::from(le32(c, 0))).collect()
    })
}

/// A hosted sparse or streamOptimized extent, opened.
pub(crate) struct Opened {
    pub extent: SparseExtent,
    /// The embedded descriptor's bytes, if the header points to one.
    pub descriptor: Option<(Vec<u8>, u64)>,
}

/// Opens the hosted sparse extent in `file` (header, footer for streamOptimized, directories).
pub(crate) fn open(file: ImageFile) -> Result<Opened> {
    let path = file.path().to_path_buf();
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0, "vmdk sparse header")?;
    let mut h = SparseHeader::parse(&head, &path)?;
    if h.gd_offset == GD_AT_END {
        h = stream::read_footer(&file)?;
    }
    let mut warnings = Vec::new();
    if h.flags & FLAG_NL_DETECT != 0 && h.nl_check != *b"\n \r\n" {
        warnings.push(
            "the sparse header's newline check bytes are altered: the file was probably copied \
             in text (ASCII) mode and its data is corrupt"
                .to_string(),
        );
    }
    // SparseHeader::parse bounds grain_size (2^17 sectors) and capacity (2^24 tables of at
    // most 512 grains): the byte counts below never saturate.
    let grain_bytes = h.grain_size.saturating_mul(SECTOR);
    let n = h.gd_entries();
    let sector_off = |s: u64, at: u64| {
        s.checked_mul(SECTOR).ok_or_else(|| {
            Error::corrupt(
                &path,
                "vmdk sparse header",
                at,
                format!("sector {s:#x} overflows"),
            )
        })
    };
    let gd_pos = sector_off(h.gd_offset, 56)?;
    let rgd_pos = if h.flags & FLAG_RGD != 0 && h.rgd_offset != 0 && h.rgd_offset != GD_AT_END {
        Some(sector_off(h.rgd_offset, 48)?)
    } else {
        None
    };
    let primary = if h.gd_offset == 0 && n > 0 {
        Err(Error::corrupt(
            &path,
            "vmdk sparse header",
            56,
            "no grain directory (gdOffset is 0)",
        ))
    } else {
        read_directory(&file, gd_pos, n, 4)
    };
    let backup = rgd_pos.map(|p| read_directory(&file, p, n, 4).map(|d| (d, p)));
    let (gd, rgd) = match (primary, backup) {
        (Ok(gd), Some(Ok(r))) => ((gd, gd_pos), Some(r)),
        (Ok(gd), _) => ((gd, gd_pos), None),
        (Err(e), Some(Ok(r))) => {
            warnings.push(format!(
                "grain directory unreadable ({e}); using the redundant grain directory"
            ));
            (r, None)
        }
        (Err(e), _) => return Err(e),
    };
    let descriptor = if h.descriptor_offset != 0 && h.descriptor_size != 0 {
        let off = sector_off(h.descriptor_offset, 28)?;
        // Bounded by parse (MAX_DESCRIPTOR_BYTES).
        let len = h
            .descriptor_size
            .checked_mul(SECTOR)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                Error::corrupt(&path, "vmdk sparse header", 36, "descriptor size overflows")
            })?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, off, "vmdk embedded descriptor")?;
        Some((buf, off))
    } else {
        None
    };
    let sectors = file.len() / SECTOR;
    let min_grain_sector = if h.overhead > 0 && h.overhead <= sectors {
        h.overhead
    } else {
        1
    };
    let format = GteFormat::Hosted {
        zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
        compressed: h.compressed(),
        markers: h.flags & FLAG_MARKERS != 0,
        min_grain_sector,
    };
    let capacity = h.capacity.saturating_mul(SECTOR);
    let gtes = u64::from(h.num_gtes_per_gt);
    let layout = Layout {
        capacity,
        grain_bytes,
        gtes_per_gt: gtes,
        entry_bytes: 4,
        format,
    };
    let mut extent = SparseExtent::new(file, layout, gd, rgd, Some(h))?;
    for w in &warnings {
        log::warn!("{}: {w}", path.display());
    }
    warnings.append(&mut extent.warnings);
    extent.warnings = warnings;
    Ok(Opened { extent, descriptor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..20].copy_from_slice(&2048u64.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b
    }

    #[test]
    fn header_limits() {
        let p = Path::new("t.vmdk");
        assert!(SparseHeader::parse(&header(), p).is_ok());
        let mut b = header();
        b[20..28].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(SparseHeader::parse(&b, p)
            .unwrap_err()
            .to_string()
            .contains("grain size"));
        let mut b = header();
        b[12..20].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(SparseHeader::parse(&b, p)
            .unwrap_err()
            .to_string()
            .contains("capacity"));
        let mut b = header();
        b[44..48].copy_from_slice(&(1u32 << 31).to_le_bytes());
        assert!(SparseHeader::parse(&b, p).is_err());
        assert!(SparseHeader::parse(&header()[..40], p).is_err());
    }
}
