//! ESXi SEsparse ("space-efficient sparse") extents, the snapshot delta format of VMFS 6. VMware
//! does not publish the layout; this follows the layout qemu reads: a 512-byte constant header
//! (magic 0xcafebabe), a volatile header (magic 0xcafecafe), a journal, then a grain directory
//! of 64-bit entries naming grain tables by index, 4 KiB grains and 4096-entry tables.

use super::sparse::{
    read_directory, GteFormat, Layout, SparseExtent, MAX_CAPACITY_SECTORS, SECTOR,
};
use crate::block::error::{Error, Result};
use crate::block::file::ImageFile;
use crate::bytes::le64;

pub(crate) const MAGIC: u64 = 0xcafe_babe;
const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// The only version qemu and ESXi write (major 2, minor 1).
const VERSION: u64 = 0x2_0000_0001;
/// Grain size and grain table size, in sectors: fixed by the format (4 KiB grains, 32 KiB
/// tables of 4096 entries).
const GRAIN_SECTORS: u64 = 8;
const GT_SECTORS: u64 = 64;
const ENTRY_BYTES: u64 = 8;

/// Fields of the constant header, by byte offset.
const CAPACITY: usize = 16;
const GRAIN_SIZE: usize = 24;
const GT_SIZE: usize = 32;
const FLAGS: usize = 40;
const RESERVED: usize = 48;
const VOLATILE_OFFSET: usize = 80;
const GD_OFFSET: usize = 128;
const GD_SIZE: usize = 136;
const GTS_OFFSET: usize = 144;
const GRAINS_OFFSET: usize = 192;

/// Opens the SEsparse extent in `file` after checking its headers.
pub(crate) fn open(file: ImageFile) -> Result<SparseExtent> {
    let path = file.path().to_path_buf();
    let mut h = [0u8; 512];
    file.read_exact_at(&mut h, 0, "vmdk SEsparse header")?;
    let bad = |at: usize, d: String| {
        Error::corrupt(&path, "vmdk SEsparse header", crate::bytes::wide(at), d)
    };
    let field = |at: usize| le64(&h, at);
    if field(0) != MAGIC {
        return Err(bad(0, "bad magic (not an SEsparse extent)".into()));
    }
    if field(8) != VERSION {
        return Err(Error::unsupported(
            &path,
            format!("SEsparse version {:#x} is not supported", field(8)),
        ));
    }
    let capacity = field(CAPACITY);
    if capacity > MAX_CAPACITY_SECTORS {
        return Err(bad(
            CAPACITY,
            format!("capacity {capacity} sectors is more than {MAX_CAPACITY_SECTORS}"),
        ));
    }
    if field(GRAIN_SIZE) != GRAIN_SECTORS {
        return Err(bad(
            GRAIN_SIZE,
            format!(
                "grain size {} sectors, expected {GRAIN_SECTORS}",
                field(GRAIN_SIZE)
            ),
        ));
    }
    if field(GT_SIZE) != GT_SECTORS {
        return Err(bad(
            GT_SIZE,
            format!(
                "grain table size {} sectors, expected {GT_SECTORS}",
                field(GT_SIZE)
            ),
        ));
    }
    if field(FLAGS) != 0 {
        return Err(Error::unsupported(
            &path,
            format!("SEsparse flags {:#x} are not supported", field(FLAGS)),
        ));
    }
    if [0, 8, 16, 24]
        .iter()
        .any(|&i| field(RESERVED.saturating_add(i)) != 0)
    {
        return Err(bad(RESERVED, "reserved fields are not zero".into()));
    }
    let sector = |at: usize| {
        field(at)
            .checked_mul(SECTOR)
            .ok_or_else(|| bad(at, format!("offset {:#x} sectors overflows", field(at))))
    };
    let vol_at = sector(VOLATILE_OFFSET)?;
    let mut vol = [0u8; 32];
    file.read_exact_at(&mut vol, vol_at, "vmdk SEsparse volatile header")?;
    if le64(&vol, 0) != VOLATILE_MAGIC {
        return Err(Error::corrupt(
            &path,
            "vmdk SEsparse volatile header",
            vol_at,
            "bad magic",
        ));
    }
    if le64(&vol, 24) != 0 {
        return Err(Error::unsupported(
            &path,
            "the SEsparse journal needs replaying (the snapshot was not closed cleanly); \
             open it once in ESXi to consolidate it",
        ));
    }
    let gt_bytes = GT_SECTORS * SECTOR;
    let gtes = gt_bytes / ENTRY_BYTES;
    let grain_bytes = GRAIN_SECTORS * SECTOR;
    let needed = capacity.div_ceil(GRAIN_SECTORS.saturating_mul(gtes).max(1));
    let have = field(GD_SIZE).saturating_mul(SECTOR / ENTRY_BYTES);
    if have < needed {
        return Err(bad(
            GD_SIZE,
            format!(
                "grain directory of {have} entries cannot map {capacity} sectors ({needed} needed)"
            ),
        ));
    }
    let gd_at = sector(GD_OFFSET)?;
    let gd = read_directory(&file, gd_at, needed, ENTRY_BYTES)?;
    let format = GteFormat::SeSparse {
        gts_offset: sector(GTS_OFFSET)?,
        grains_offset: field(GRAINS_OFFSET),
    };
    sector(GRAINS_OFFSET)?;
    let layout = Layout {
        // capacity <= MAX_CAPACITY_SECTORS (checked above).
        capacity: capacity.saturating_mul(SECTOR),
        grain_bytes,
        gtes_per_gt: gtes,
        entry_bytes: ENTRY_BYTES,
        format,
    };
    SparseExtent::new(file, layout, (gd, gd_at), None, None)
}
