//! Recognising what a volume holds from its superblock, as `blkid -p` does: type name, UUID and
//! label formatted the way blkid prints them. Nothing is mounted or trusted beyond the few fields
//! read here; a volume too small for a signature's offset simply does not match it.

use super::bytes::{cstr, field, non_empty, utf16le, uuid};
use super::slice::read_opt;
use super::Result;
use crate::block::BlockDevice;
use crate::bytes::{le16, le32, le64};
use serde::Serialize;

/// blkid's USAGE: what kind of thing the signature says this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Filesystem,
    Raid,
    Crypto,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Content {
    /// blkid's TYPE: ext2/ext3/ext4, xfs, ntfs, vfat, btrfs, swap, crypto_LUKS, BitLocker,
    /// linux_raid_member, LVM2_member.
    pub fstype: String,
    pub usage: Usage,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// blkid's VERSION where it gives one (LUKS 1/2, md 1.2, FAT32, swap 1, ...).
    pub version: Option<String>,
    /// blkid's UUID_SUB: the member's own UUID (md device UUID, btrfs device UUID).
    pub uuid_sub: Option<String>,
}

impl Content {
    fn new(fstype: &str, usage: Usage) -> Self {
        Content {
            fstype: fstype.into(),
            usage,
            uuid: None,
            label: None,
            version: None,
            uuid_sub: None,
        }
    }

    /// A filesystem or swap: what `ferry filesystems` lists by default.
    pub fn is_filesystem_like(&self) -> bool {
        matches!(self.usage, Usage::Filesystem | Usage::Crypto) || self.fstype == "swap"
    }
}

/// Probes `dev` for every signature we know, RAID and container signatures first (an md 1.0
/// member or a LUKS volume may also carry a stale filesystem superblock where it starts).
pub fn probe(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    type Prober = fn(&dyn BlockDevice) -> Result<Option<Content>>;
    const PROBES: [Prober; 10] = [
        mdraid, luks, bitlocker, lvm2, swap, xfs, ext, btrfs, ntfs, vfat,
    ];
    for p in PROBES {
        if let Some(c) = p(dev)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// True when sector 0 is a filesystem boot sector (FAT, NTFS, exFAT, BitLocker) rather than an
/// MBR: all of them end in 0x55AA too.
pub fn is_boot_sector_fs(s: &[u8]) -> bool {
    matches!(field(s, 3, 8), b"NTFS    " | b"EXFAT   " | b"-FVE-FS-") || fat_bpb(s).is_some()
}

fn opt(dev: &dyn BlockDevice, off: u64, n: usize) -> Result<Option<Vec<u8>>> {
    Ok(read_opt(dev, off, n)?)
}

/// ext2/3/4 (the superblock at 1024; which one by feature flags, as libblkid decides: ext4 as
/// soon as a feature ext3 does not know is set, ext3 with a journal, ext2 otherwise).
fn ext(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(sb) = opt(dev, 1024, 1024)? else {
        return Ok(None);
    };
    if le16(&sb, 0x38) != 0xef53 {
        return Ok(None);
    }
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    const EXT2_INCOMPAT: u32 = 0x02 | 0x10; // filetype, meta_bg
    const EXT3_INCOMPAT: u32 = EXT2_INCOMPAT | 0x04; // + recover
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
    let compat = le32(&sb, 0x5c);
    let incompat = le32(&sb, 0x60);
    let ro = le32(&sb, 0x64);
    let journal = compat & COMPAT_HAS_JOURNAL != 0;
    let fstype = if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if ro & !EXT3_RO_COMPAT != 0 || incompat & !EXT3_INCOMPAT != 0 {
        "ext4"
    } else if journal {
        "ext3"
    } else if incompat & !EXT2_INCOMPAT == 0 {
        "ext2"
    } else {
        "ext4"
    };
    let mut c = Content::new(fstype, Usage::Filesystem);
    c.uuid = non_empty(uuid(field(&sb, 0x68, 16)));
    c.label = non_empty(cstr(field(&sb, 0x78, 16)));
    c.version = Some(format!("{}.{}", le32(&sb, 0x4c), le16(&sb, 0x3e)));
    Ok(Some(c))
}

/// XFS: "XFSB" at 0, big-endian; UUID at 32, the 12-byte label at 108.
fn xfs(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(sb) = opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if &sb[..4] != b"XFSB" {
        return Ok(None);
    }
    let bsize = u32::from_be_bytes([sb[4], sb[5], sb[6], sb[7]]);
    if !(512..=65536).contains(&bsize) || !bsize.is_power_of_two() {
        return Ok(None);
    }
    let mut c = Content::new("xfs", Usage::Filesystem);
    c.uuid = non_empty(uuid(field(&sb, 32, 16)));
    c.label = non_empty(cstr(field(&sb, 108, 12)));
    Ok(Some(c))
}

/// btrfs: the superblock at 64 KiB, magic "_BHRfS_M" at 0x40, fsid at 0x20, label at 0x12b,
/// the device item's UUID at 0xc9 + 0x42.
fn btrfs(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(sb) = opt(dev, 0x10000, 0x22b)? else {
        return Ok(None);
    };
    if field(&sb, 0x40, 8) != b"_BHRfS_M" {
        return Ok(None);
    }
    let mut c = Content::new("btrfs", Usage::Filesystem);
    c.uuid = non_empty(uuid(field(&sb, 0x20, 16)));
    c.uuid_sub = non_empty(uuid(field(&sb, 0xc9 + 0x42, 16)));
    c.label = non_empty(cstr(field(&sb, 0x12b, 256)));
    Ok(Some(c))
}

/// Linux swap: the signature in the last 10 bytes of the first page (page sizes 4 to 64 KiB),
/// the v1 header at 1024 with UUID and label (include/linux/swap.h, `union swap_header`).
fn swap(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    // The signature's offset: the end of each page size less its 10 bytes.
    for sig_at in [4096u64 - 10, 8192 - 10, 16384 - 10, 65536 - 10] {
        let Some(sig) = opt(dev, sig_at, 10)? else {
            break;
        };
        let v1 = match sig.as_slice() {
            b"SWAPSPACE2" => true,
            b"SWAP-SPACE" => false,
            _ => continue,
        };
        let mut c = Content::new("swap", Usage::Other);
        if v1 {
            let Some(h) = opt(dev, 1024, 44)? else {
                return Ok(None);
            };
            if le32(&h, 0) != 1 {
                continue;
            }
            c.version = Some("1".into());
            if h[12..28].iter().any(|&b| b != 0) {
                c.uuid = non_empty(uuid(&h[12..28]));
            }
            c.label = non_empty(cstr(&h[28..44]));
        } else {
            c.version = Some("0".into());
        }
        return Ok(Some(c));
    }
    Ok(None)
}

/// LUKS1 and LUKS2 (cryptsetup docs "LUKS On-Disk Format"): magic "LUKS\xba\xbe", big-endian
/// version at 6, the UUID as text at 168; LUKS2 has a label at 24.
fn luks(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(h) = opt(dev, 0, 208)? else {
        return Ok(None);
    };
    if &h[..6] != b"LUKS\xba\xbe" {
        return Ok(None);
    }
    let version = u16::from_be_bytes([h[6], h[7]]);
    let mut c = Content::new("crypto_LUKS", Usage::Crypto);
    c.version = Some(version.to_string());
    c.uuid = non_empty(cstr(&h[168..208]));
    if version == 2 {
        c.label = non_empty(cstr(&h[24..72]));
    }
    Ok(Some(c))
}

/// BitLocker: "-FVE-FS-" as the OEM name of the volume boot record.
fn bitlocker(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(h) = opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if field(&h, 3, 8) != b"-FVE-FS-" {
        return Ok(None);
    }
    Ok(Some(Content::new("BitLocker", Usage::Crypto)))
}

const MD_MAGIC: u32 = 0xa92b_4efc;
/// md 0.90 reserves the last 64 KiB-aligned 64 KiB of the device for its superblock.
const MD_RESERVED: u64 = 0x10000;

/// Linux md RAID members (the kernel's md_p.h): 0.90 at the end, 1.0 near the end, 1.1 at 0,
/// 1.2 at 4 KiB, in the order libblkid tries them.
fn mdraid(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let size = dev.len();
    // The last 64 KiB-aligned 64 KiB (size > MD_RESERVED, so the subtraction succeeds).
    let md090 = (size & !(MD_RESERVED - 1))
        .checked_sub(MD_RESERVED)
        .filter(|_| size > MD_RESERVED);
    // 1.0: 8 KiB before the end, 4 KiB-aligned.
    let md10 = (size / 512)
        .checked_sub(16)
        .and_then(|s| (s & !7).checked_mul(512));
    // Both superblocks at the end come from one read of the span that holds them (under
    // 2 × MD_RESERVED): on a cold image that is one wait on the disk instead of two.
    let tail = match md090.into_iter().chain(md10).min() {
        Some(start) => {
            let n = usize::try_from(size.saturating_sub(start)).unwrap_or(usize::MAX);
            opt(dev, start, n)?.map(|b| (start, b))
        }
        None => None,
    };
    let at = |off: u64, n: usize| -> Option<&[u8]> {
        let (start, b) = tail.as_ref()?;
        let i = usize::try_from(off.checked_sub(*start)?).ok()?;
        b.get(i..i.checked_add(n)?)
    };
    if let Some(sb) = md090.and_then(|off| at(off, 64)) {
        if le32(sb, 0) == MD_MAGIC && le32(sb, 4) == 0 {
            // The set UUID is four host-order words (set_uuid0 at 20, 1-3 at 52), shown as
            // libblkid shows them: each word's bytes reversed; before 0.90 only the first.
            let mut id = [0u8; 16];
            let words = [&sb[20..24], &sb[52..56], &sb[56..60], &sb[60..64]];
            let used = if le32(sb, 8) >= 90 { 4 } else { 1 };
            for (out, w) in id.chunks_exact_mut(4).zip(words).take(used) {
                out.copy_from_slice(w);
                out.reverse();
            }
            let mut c = Content::new("linux_raid_member", Usage::Raid);
            c.uuid = non_empty(uuid(&id));
            c.version = Some(format!("0.{}.{}", le32(sb, 8), le32(sb, 12)));
            return Ok(Some(c));
        }
    }
    let mut places = Vec::new();
    if let Some(off) = md10 {
        places.push(("1.0", off));
    }
    places.push(("1.1", 0));
    places.push(("1.2", 4096));
    for (version, off) in places {
        let sb = match version {
            "1.0" => at(off, 256).map(<[u8]>::to_vec),
            _ => opt(dev, off, 256)?,
        };
        let Some(sb) = sb else {
            continue;
        };
        if le32(&sb, 0) != MD_MAGIC || le32(&sb, 4) != 1 || le64(&sb, 144) != off / 512 {
            continue;
        }
        let mut c = Content::new("linux_raid_member", Usage::Raid);
        c.uuid = non_empty(uuid(&sb[16..32]));
        c.label = non_empty(cstr(&sb[32..64]));
        c.uuid_sub = non_empty(uuid(&sb[168..184]));
        c.version = Some(version.into());
        return Ok(Some(c));
    }
    Ok(None)
}

/// LVM2 physical volume: a "LABELONE" label in one of the first four sectors, whose sector
/// field names that sector, "LVM2 001" as its type, and the PV header it points to starting
/// with the 32-character PV UUID (printed 6-4-4-4-4-4-6 as blkid does).
fn lvm2(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(head) = opt(dev, 0, 2048)? else {
        return Ok(None);
    };
    for (i, sector) in (0u64..).zip(head.chunks_exact(512)) {
        if &sector[..8] != b"LABELONE" || le64(sector, 8) != i {
            continue;
        }
        if &sector[24..32] != b"LVM2 001" {
            continue;
        }
        let at = usize::try_from(le32(sector, 20)).unwrap_or(usize::MAX);
        let Some(raw) = sector.get(at..at.saturating_add(32)) else {
            continue;
        };
        let mut c = Content::new("LVM2_member", Usage::Raid);
        c.version = Some("LVM2 001".into());
        let s = String::from_utf8_lossy(raw).into_owned();
        if s.len() == 32 && s.is_ascii() {
            c.uuid = Some(format!(
                "{}-{}-{}-{}-{}-{}-{}",
                &s[0..6],
                &s[6..10],
                &s[10..14],
                &s[14..18],
                &s[18..22],
                &s[22..26],
                &s[26..32]
            ));
        }
        return Ok(Some(c));
    }
    Ok(None)
}

/// NTFS: "NTFS    " as OEM name; the UUID is the 64-bit volume serial at 0x48 (blkid prints it
/// as 16 hex digits); the label is the $VOLUME_NAME attribute of MFT record 3 ($Volume).
fn ntfs(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(b) = opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if field(&b, 3, 8) != b"NTFS    " {
        return Ok(None);
    }
    let mut c = Content::new("ntfs", Usage::Filesystem);
    c.uuid = Some(format!("{:016X}", le64(&b, 0x48)));
    c.label = ntfs_label(dev, &b)?;
    Ok(Some(c))
}

/// Largest MFT record accepted for reading the label.
const NTFS_MAX_RECORD: u64 = 64 << 10;
/// Update sequence arrays protect 512-byte strides whatever the sector size.
const NTFS_FIXUP_STRIDE: usize = 512;

fn ntfs_label(dev: &dyn BlockDevice, b: &[u8]) -> Result<Option<String>> {
    let bps = u64::from(le16(b, 0x0b));
    if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
        return Ok(None);
    }
    let spc_raw = b[0x0d];
    let spc = if spc_raw <= 0x80 {
        u64::from(spc_raw)
    } else {
        // 0x81..=0xff: 2^(256 - n), n > 0x80 so the difference is 1..=127.
        1u64 << 256u32.saturating_sub(u32::from(spc_raw)).min(31)
    };
    let cluster = bps.saturating_mul(spc);
    if cluster == 0 {
        return Ok(None);
    }
    let cpr = i8::from_le_bytes([b[0x40]]);
    let record = if cpr > 0 {
        cluster.saturating_mul(u64::from(cpr.unsigned_abs()))
    } else {
        1u64 << u32::from(cpr.unsigned_abs()).min(63)
    };
    if !(256..=NTFS_MAX_RECORD).contains(&record) {
        return Ok(None);
    }
    let Some(off) = le64(b, 0x30)
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(record.checked_mul(3)?))
    else {
        return Ok(None);
    };
    // record <= NTFS_MAX_RECORD.
    let Ok(record_len) = usize::try_from(record) else {
        return Ok(None);
    };
    let Some(mut r) = opt(dev, off, record_len)? else {
        return Ok(None);
    };
    if &r[..4] != b"FILE" {
        return Ok(None);
    }
    // Fixups: the last two bytes of every 512-byte stride are stored in the update sequence
    // array; the first array element is the check value they must currently hold.
    // (16-bit offsets and counts: the saturating sums and products below never saturate.)
    let usa = usize::from(le16(&r, 4));
    let count = usize::from(le16(&r, 6));
    let check = le16(&r, usa);
    for i in 1..count {
        let end = i.saturating_mul(NTFS_FIXUP_STRIDE);
        let src = usa.saturating_add(i.saturating_mul(2));
        let v: Option<[u8; 2]> = r
            .get(src..src.saturating_add(2))
            .and_then(|v| v.try_into().ok());
        let tail = r
            .get_mut(end.saturating_sub(2)..end)
            .filter(|t| le16(t, 0) == check);
        let (Some(v), Some(tail)) = (v, tail) else {
            return Ok(None);
        };
        tail.copy_from_slice(&v);
    }
    // Attribute records: type, length; the volume name (0x60) is resident, its value UTF-16.
    let mut at = usize::from(le16(&r, 0x14));
    while at.saturating_add(0x18) <= r.len() {
        let ty = le32(&r, at);
        let len = usize::try_from(le32(&r, at.saturating_add(4))).unwrap_or(usize::MAX);
        let next = at.checked_add(len).filter(|&n| n <= r.len());
        let Some(next) = next.filter(|_| ty != 0xffff_ffff && len >= 0x18) else {
            break;
        };
        if ty == 0x60 && r.get(at.saturating_add(8)) == Some(&0) {
            let vlen = usize::try_from(le32(&r, at.saturating_add(0x10))).unwrap_or(usize::MAX);
            let start = at.saturating_add(usize::from(le16(&r, at.saturating_add(0x14))));
            return Ok(r
                .get(start..start.saturating_add(vlen))
                .and_then(|v| non_empty(utf16le(v))));
        }
        at = next;
    }
    Ok(None)
}

/// The fields of a FAT BIOS parameter block that every FAT variant shares, once they look sane.
///
/// Its fields are 8-, 16- or 32-bit on disk: the sums and products of a few of them below stay
/// far below 2^64, so their saturating forms never saturate.
struct Bpb {
    bps: u64,
    spc: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    fat_sectors: u64,
    total: u64,
    fat32: bool,
}

/// Validates a FAT boot sector the way libblkid and the kernel do (power-of-two sector and
/// cluster sizes, reserved sectors, FAT count, media byte).
fn fat_bpb(b: &[u8]) -> Option<Bpb> {
    let bps = u64::from(le16(b, 11));
    let spc = u64::from(*b.get(13)?);
    let reserved = u64::from(le16(b, 14));
    let fats = u64::from(*b.get(16)?);
    let media = *b.get(21)?;
    if !matches!(bps, 512 | 1024 | 2048 | 4096)
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || !(1..=4).contains(&fats)
        || !(media == 0xf0 || media >= 0xf8)
    {
        return None;
    }
    let fat16_len = u64::from(le16(b, 22));
    let fat32 = fat16_len == 0;
    let fat_sectors = if fat32 {
        u64::from(le32(b, 36))
    } else {
        fat16_len
    };
    let total = match le16(b, 19) {
        0 => u64::from(le32(b, 32)),
        n => u64::from(n),
    };
    if fat_sectors == 0 || total == 0 {
        return None;
    }
    Some(Bpb {
        bps,
        spc,
        reserved,
        fats,
        root_entries: u64::from(le16(b, 17)),
        fat_sectors,
        total,
        fat32,
    })
}

/// FAT12/16/32 (Microsoft "FAT: General Overview of On-Disk Format"): variant by cluster count,
/// serial printed XXXX-XXXX, label from the root directory's volume-label entry, else from the
/// boot sector unless "NO NAME".
fn vfat(dev: &dyn BlockDevice) -> Result<Option<Content>> {
    let Some(b) = opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if field(&b, 3, 8) == b"NTFS    " || !crate::volume::mbr::has_signature(&b) {
        return Ok(None);
    }
    let Some(p) = fat_bpb(&b) else {
        return Ok(None);
    };
    let root_sectors = p.root_entries.saturating_mul(32).div_ceil(p.bps);
    let meta = p
        .reserved
        .saturating_add(p.fats.saturating_mul(p.fat_sectors))
        .saturating_add(root_sectors);
    // spc is a power of two (fat_bpb); None never happens.
    let clusters = p.total.saturating_sub(meta).checked_div(p.spc).unwrap_or(0);
    let (version, serial_at, label_at) = if p.fat32 {
        ("FAT32", 67, 71)
    } else if clusters < 4085 {
        ("FAT12", 39, 43)
    } else {
        ("FAT16", 39, 43)
    };
    let mut c = Content::new("vfat", Usage::Filesystem);
    c.version = Some(version.into());
    let s = field(&b, serial_at, 4);
    c.uuid = Some(format!("{:02X}{:02X}-{:02X}{:02X}", s[3], s[2], s[1], s[0]));
    let boot_label = field(&b, label_at, 11);
    let label = match fat_root_label(dev, &b, &p)? {
        Some(l) => Some(l),
        None if boot_label != b"NO NAME    " => Some(boot_label.to_vec()),
        None => None,
    };
    c.label = label.and_then(|l| non_empty(cstr(&l).trim_end_matches(' ').to_string()));
    Ok(Some(c))
}

/// Largest root directory region scanned for the volume label.
const FAT_MAX_ROOT_SCAN: u64 = 64 << 10;

/// The volume-label entry (attribute 0x08, not a long-name entry) of the root directory: the
/// fixed root region on FAT12/16, the root directory's first cluster on FAT32.
fn fat_root_label(dev: &dyn BlockDevice, b: &[u8], p: &Bpb) -> Result<Option<Vec<u8>>> {
    let fat_end = p
        .reserved
        .saturating_add(p.fats.saturating_mul(p.fat_sectors));
    let (sector, bytes) = if p.fat32 {
        let root = u64::from(le32(b, 44));
        let Some(first) = root.checked_sub(2) else {
            return Ok(None);
        };
        (
            fat_end.saturating_add(first.saturating_mul(p.spc)),
            p.spc.saturating_mul(p.bps),
        )
    } else {
        (fat_end, p.root_entries.saturating_mul(32))
    };
    let Some(off) = sector.checked_mul(p.bps) else {
        return Ok(None);
    };
    let Ok(scan) = usize::try_from(bytes.min(FAT_MAX_ROOT_SCAN)) else {
        return Ok(None);
    };
    let Some(dir) = opt(dev, off, scan)? else {
        return Ok(None);
    };
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xe5 => continue,
            _ => {}
        }
        let attr = e[11];
        if attr & 0x08 != 0 && attr & 0x0f != 0x0f {
            return Ok(Some(e[..11].to_vec()));
        }
    }
    Ok(None)
}
