//! The qcow2 header and its extensions (qemu docs/interop/qcow2.txt, "Header" and "Header
//! extensions"). Everything the reader later trusts is validated here.

use crate::block::error::{Error, Result};
use crate::bytes::wide;
use std::mem::{offset_of, size_of};
use std::path::Path;
use zerocopy::byteorder::{BigEndian, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub(crate) const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
/// qemu's bounds on cluster_bits (512 B .. 2 MiB).
pub(crate) const MIN_CLUSTER_BITS: u32 = 9;
pub(crate) const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's QCOW_MAX_L1_SIZE: the L1 table is at most 32 MiB, which also bounds the virtual size.
pub(crate) const MAX_L1_BYTES: u64 = 32 << 20;
/// Size of the refcount table qemu refuses (8 MiB, QCOW_MAX_REFTABLE_SIZE): the writer does not
/// grow one beyond it, and the reader reads none larger.
pub(crate) const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// qemu refuses backing file names longer than this.
pub(crate) const MAX_BACKING_NAME: u32 = 1023;

bitflags::bitflags! {
    /// incompatible_features (qcow2.txt): a reader that does not know a bit must refuse the
    /// image. Unknown bits are kept (`from_bits_retain`) so that `check_features` can name them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Incompatible: u64 {
        const DIRTY = 1 << 0;
        const CORRUPT = 1 << 1;
        const DATA_FILE = 1 << 2;
        const COMPRESSION = 1 << 3;
        const EXTL2 = 1 << 4;
        const _ = !0;
    }
}

impl Incompatible {
    /// The bits this reader implements (DATA_FILE is known, and refused by name).
    const KNOWN: Self = Self::DIRTY
        .union(Self::CORRUPT)
        .union(Self::DATA_FILE)
        .union(Self::COMPRESSION)
        .union(Self::EXTL2);
}

bitflags::bitflags! {
    /// compatible_features: bits a reader may ignore.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Compatible: u64 {
        const LAZY_REFCOUNTS = 1 << 0;
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// autoclear_features: bits a writer that does not know them must clear (see the writer).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Autoclear: u64 {
        const BITMAPS = 1 << 0;
        const RAW_EXTERNAL = 1 << 1;
        const _ = !0;
    }
}

const EXT_END: u32 = 0;
pub(crate) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_ENCRYPTION: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

type Be32 = U32<BigEndian>;
type Be64 = U64<BigEndian>;

/// The header every qcow2 version starts with (qcow2.txt, "Header", bytes 0..72): the one
/// definition the reader parses and the writer fills, so the two cannot disagree on a position.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct RawHeader {
    pub magic: Be32,
    pub version: Be32,
    pub backing_file_offset: Be64,
    pub backing_file_size: Be32,
    pub cluster_bits: Be32,
    pub size: Be64,
    pub crypt_method: Be32,
    pub l1_size: Be32,
    pub l1_table_offset: Be64,
    pub refcount_table_offset: Be64,
    pub refcount_table_clusters: Be32,
    pub nb_snapshots: Be32,
    pub snapshots_offset: Be64,
}

/// The cluster size a header announces, when its fixed part is in `head` and its
/// cluster_bits within qemu's bounds: how much of the file the header, its extensions and the
/// backing name may occupy. `None` leaves the refusal to `Header::parse`.
pub(crate) fn announced_cluster_size(head: &[u8]) -> Option<usize> {
    let (raw, _) = RawHeader::read_from_prefix(head).ok()?;
    let bits = raw.cluster_bits.get();
    (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS)
        .contains(&bits)
        .then(|| 1usize.checked_shl(bits))
        .flatten()
}

/// The version-3 fields that follow [`RawHeader`] (bytes 72..104).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct RawHeaderV3 {
    pub incompatible_features: Be64,
    pub compatible_features: Be64,
    pub autoclear_features: Be64,
    pub refcount_order: Be32,
    pub header_length: Be32,
}

/// The compression type and its padding (bytes 104..112), present when header_length > 104.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct RawCompressionType {
    pub compression_type: u8,
    pub padding: [u8; 7],
}

/// The type and length that open every header extension; the data follows, padded to 8 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct RawExtension {
    pub ty: Be32,
    pub len: Be32,
}

/// One entry of the feature name table extension.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct RawFeatureName {
    ty: u8,
    bit: u8,
    name: [u8; 46],
}

/// Length of the version-2 header.
pub(crate) const V2_LEN: usize = size_of::<RawHeader>();
/// Length of the version-3 header without the compression type (its minimum header_length).
pub(crate) const V3_LEN: usize = V2_LEN + size_of::<RawHeaderV3>();
/// Length of the version-3 header with the compression type, as qemu writes it.
pub(crate) const V3_COMPRESSION_LEN: usize = V3_LEN + size_of::<RawCompressionType>();
const _: () = assert!(V2_LEN == 72 && V3_LEN == 104 && V3_COMPRESSION_LEN == 112);
const _: () = assert!(size_of::<RawExtension>() == 8 && size_of::<RawFeatureName>() == 48);

/// Byte position of a [`RawHeader`] field, for error messages and in-place updates.
macro_rules! v2_at {
    ($field:ident) => {
        wide(offset_of!(RawHeader, $field))
    };
}

/// Byte position of a [`RawHeaderV3`] field in the image.
macro_rules! v3_at {
    ($field:ident) => {
        wide(V2_LEN).saturating_add(wide(offset_of!(RawHeaderV3, $field)))
    };
}

/// Where a writer clears the autoclear features it does not know.
pub(crate) const AUTOCLEAR_AT: u64 = v3_at!(autoclear_features);
/// Where the refcount table offset sits; its cluster count follows it directly, so a writer
/// that moves the table updates both with one write.
pub(crate) const REFCOUNT_TABLE_AT: u64 = v2_at!(refcount_table_offset);
const _: () = assert!(
    offset_of!(RawHeader, refcount_table_clusters)
        == offset_of!(RawHeader, refcount_table_offset).saturating_add(8)
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: Incompatible,
    pub compatible_features: Compatible,
    pub autoclear_features: Autoclear,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    // From header extensions and the backing name field.
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    pub has_bitmaps: bool,
    /// (type, bit, name) from the feature name table, to name unknown feature bits.
    pub feature_names: Vec<(u8, u8, String)>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible_features.contains(Incompatible::EXTL2)
    }

    /// Parses and validates the header from the image's first cluster (or as much of the file as
    /// exists, at least 72 bytes). `path` and `file_len` are for error messages and bounds.
    pub fn parse(buf: &[u8], path: &Path, file_len: u64) -> Result<Self> {
        let Ok((raw, _)) = RawHeader::read_from_prefix(buf) else {
            return Err(Error::Truncated {
                path: path.into(),
                what: "qcow2 header",
                offset: 0,
                len: wide(V2_LEN),
                file_len,
            });
        };
        let mut h = Header::from_v2(&raw, path)?;
        // Extensions and the backing file name must lie in the first cluster.
        let cluster = usize::try_from(h.cluster_size()).unwrap_or(usize::MAX);
        let buf = &buf[..buf.len().min(cluster)];
        if h.version >= 3 {
            h.read_v3(buf, path, file_len)?;
        }
        h.check_tables(path)?;
        h.read_backing_name(buf, path)?;
        h.read_extensions(buf, path)?;
        h.check_features(path)?;
        Ok(h)
    }

    /// The version-2 part every image has, with the version-3 fields at their v2 meanings
    /// (no features, 16-bit refcounts, zlib); refuses what is not a qcow2 image at all.
    fn from_v2(raw: &RawHeader, path: &Path) -> Result<Self> {
        if raw.magic.get() != MAGIC {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                v2_at!(magic),
                "bad magic (not a qcow2 image)",
            ));
        }
        let version = raw.version.get();
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                path,
                format!("qcow2 version {version} is not supported (only 2 and 3)"),
            ));
        }
        let cluster_bits = raw.cluster_bits.get();
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                v2_at!(cluster_bits),
                format!(
                    "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        Ok(Header {
            version,
            backing_file_offset: raw.backing_file_offset.get(),
            backing_file_size: raw.backing_file_size.get(),
            cluster_bits,
            size: raw.size.get(),
            crypt_method: raw.crypt_method.get(),
            l1_size: raw.l1_size.get(),
            l1_table_offset: raw.l1_table_offset.get(),
            refcount_table_offset: raw.refcount_table_offset.get(),
            refcount_table_clusters: raw.refcount_table_clusters.get(),
            nb_snapshots: raw.nb_snapshots.get(),
            snapshots_offset: raw.snapshots_offset.get(),
            incompatible_features: Incompatible::empty(),
            compatible_features: Compatible::empty(),
            autoclear_features: Autoclear::empty(),
            refcount_order: 4,
            header_length: 72, // V2_LEN (asserted above)
            compression: Compression::Zlib,
            backing_file: None,
            backing_format: None,
            data_file: None,
            has_bitmaps: false,
            feature_names: Vec::new(),
        })
    }

    /// The version-3 tail: feature masks, refcount order, header length and compression type.
    /// `buf` is the first cluster (or less, when the file is shorter).
    fn read_v3(&mut self, buf: &[u8], path: &Path, file_len: u64) -> Result<()> {
        let bad =
            |offset: u64, detail: String| Error::corrupt(path, "qcow2 header", offset, detail);
        let Ok((v3, _)) = RawHeaderV3::read_from_prefix(buf.get(V2_LEN..).unwrap_or(&[])) else {
            return Err(Error::Truncated {
                path: path.into(),
                what: "qcow2 v3 header",
                offset: 0,
                len: wide(V3_LEN),
                file_len,
            });
        };
        self.incompatible_features = Incompatible::from_bits_retain(v3.incompatible_features.get());
        self.compatible_features = Compatible::from_bits_retain(v3.compatible_features.get());
        self.autoclear_features = Autoclear::from_bits_retain(v3.autoclear_features.get());
        self.refcount_order = v3.refcount_order.get();
        self.header_length = v3.header_length.get();
        let cluster_size = self.cluster_size();
        let header_length = u64::from(self.header_length);
        if header_length < wide(V3_LEN) || header_length > cluster_size {
            return Err(bad(
                v3_at!(header_length),
                format!(
                    "header_length {} outside {V3_LEN}..={cluster_size}",
                    self.header_length
                ),
            ));
        }
        if header_length > wide(buf.len()) {
            return Err(Error::Truncated {
                path: path.into(),
                what: "qcow2 header",
                offset: 0,
                len: self.header_length.into(),
                file_len,
            });
        }
        if self.refcount_order > 6 {
            return Err(bad(
                v3_at!(refcount_order),
                format!("refcount_order {} > 6", self.refcount_order),
            ));
        }
        if header_length > wide(V3_LEN) {
            // Within buf: header_length was checked against it above. The padding that
            // completes RawCompressionType may be absent (header_length 105..112).
            let ty = buf
                .get(V3_LEN..)
                .and_then(|t| t.get(offset_of!(RawCompressionType, compression_type)));
            let Some(&ty) = ty else {
                return Err(Error::Truncated {
                    path: path.into(),
                    what: "qcow2 header",
                    offset: 0,
                    len: header_length,
                    file_len,
                });
            };
            self.compression = match ty {
                0 => Compression::Zlib,
                1 => Compression::Zstd,
                t => {
                    return Err(Error::unsupported(
                        path,
                        format!("unknown qcow2 compression type {t}"),
                    ))
                }
            };
        }
        let has_bit = self
            .incompatible_features
            .contains(Incompatible::COMPRESSION);
        if has_bit != (self.compression != Compression::Zlib) {
            return Err(bad(
                v3_at!(incompatible_features),
                "compression type and its incompatible feature bit disagree".into(),
            ));
        }
        Ok(())
    }

    /// Checks what the reader will trust about the L1 table and encryption: the table is
    /// aligned, covers the virtual size, and stays within qemu's bound.
    fn check_tables(&self, path: &Path) -> Result<()> {
        let bad =
            |offset: u64, detail: String| Error::corrupt(path, "qcow2 header", offset, detail);
        if self.crypt_method != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "encrypted qcow2 images (crypt_method {}) are not supported",
                    self.crypt_method
                ),
            ));
        }
        let cluster_size = self.cluster_size();
        if self.l1_table_offset.checked_rem(cluster_size) != Some(0) {
            return Err(bad(
                v2_at!(l1_table_offset),
                format!(
                    "L1 table offset {:#x} is not cluster-aligned",
                    self.l1_table_offset
                ),
            ));
        }
        // At most 2 MiB × 256 Ki entries: no overflow; at least 512 × 32, never zero.
        let bytes_per_l2 = cluster_size
            .saturating_mul(cluster_size.checked_div(self.l2_entry_size()).unwrap_or(1))
            .max(1);
        let needed = self.size.div_ceil(bytes_per_l2);
        if needed.saturating_mul(8) > MAX_L1_BYTES {
            return Err(bad(
                v2_at!(size),
                format!(
                    "virtual size {} is too large (L1 table would exceed {} MiB)",
                    self.size,
                    MAX_L1_BYTES >> 20
                ),
            ));
        }
        if u64::from(self.l1_size) < needed {
            return Err(bad(
                v2_at!(l1_size),
                format!(
                    "L1 table of {} entries cannot cover the virtual size {} ({needed} needed)",
                    self.l1_size, self.size
                ),
            ));
        }
        if u64::from(self.l1_size).saturating_mul(8) > MAX_L1_BYTES {
            return Err(bad(
                v2_at!(l1_size),
                format!(
                    "L1 table of {} entries exceeds {} MiB",
                    self.l1_size,
                    MAX_L1_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    /// Refuses incompatible features ferry does not implement, named from the feature name
    /// table when the image has one (so the user reads "'foo' (bit 7)", not just a number).
    fn check_features(&self, path: &Path) -> Result<()> {
        let unknown = self.incompatible_features.difference(Incompatible::KNOWN);
        if !unknown.is_empty() {
            let names: Vec<String> = (0..64)
                .filter(|b| unknown.contains(Incompatible::from_bits_retain(1 << b)))
                .map(|b| {
                    self.feature_names
                        .iter()
                        .find(|(t, bit, _)| *t == 0 && u32::from(*bit) == b)
                        .map(|(_, _, n)| format!("'{n}' (bit {b})"))
                        .unwrap_or_else(|| format!("bit {b}"))
                })
                .collect();
            return Err(Error::unsupported(
                path,
                format!(
                    "qcow2 incompatible features not supported: {}",
                    names.join(", ")
                ),
            ));
        }
        if self.incompatible_features.contains(Incompatible::DATA_FILE) {
            return Err(Error::unsupported(
                path,
                format!(
                    "qcow2 images with an external data file ({}) are not supported",
                    self.data_file.as_deref().unwrap_or("name not recorded")
                ),
            ));
        }
        Ok(())
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 (an extra subcluster bitmap).
    pub fn l2_entry_size(&self) -> u64 {
        if self.incompatible_features.contains(Incompatible::EXTL2) {
            16
        } else {
            8
        }
    }

    fn read_backing_name(&mut self, buf: &[u8], path: &Path) -> Result<()> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        if self.backing_file_size == 0 || self.backing_file_size > MAX_BACKING_NAME {
            return Err(Error::corrupt(
                path,
                "qcow2 header",
                v2_at!(backing_file_size),
                format!(
                    "backing file name length {} outside 1..={MAX_BACKING_NAME}",
                    self.backing_file_size
                ),
            ));
        }
        let start = self.backing_file_offset;
        let end = start.saturating_add(u64::from(self.backing_file_size));
        if end > wide(buf.len()) {
            return Err(Error::corrupt(
                path,
                "qcow2 backing file name",
                start,
                "lies outside the first cluster".to_string(),
            ));
        }
        let raw = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(a, b)| buf.get(a..b))
            .ok_or_else(|| {
                Error::corrupt(
                    path,
                    "qcow2 backing file name",
                    start,
                    "lies outside the first cluster".to_string(),
                )
            })?;
        let name = String::from_utf8(raw.to_vec()).map_err(|_| {
            Error::corrupt(
                path,
                "qcow2 backing file name",
                start,
                "not valid UTF-8".to_string(),
            )
        })?;
        self.backing_file = Some(name);
        Ok(())
    }

    fn read_extensions(&mut self, buf: &[u8], path: &Path) -> Result<()> {
        let mut pos = usize::try_from(self.header_length).unwrap_or(usize::MAX);
        // Extensions end at the backing file name if it comes first, or at the cluster end.
        let limit = if self.backing_file_offset != 0 {
            usize::try_from(self.backing_file_offset).map_or(buf.len(), |o| o.min(buf.len()))
        } else {
            buf.len()
        };
        loop {
            let Ok((ext, _)) = RawExtension::read_from_prefix(buf.get(pos..limit).unwrap_or(&[]))
            else {
                // qemu tolerates a header cluster that ends without an end marker.
                return Ok(());
            };
            let ty = ext.ty.get();
            let len = usize::try_from(ext.len.get()).unwrap_or(usize::MAX);
            // pos + 8 <= limit: the extension header was read from inside it.
            let data_start = pos.saturating_add(size_of::<RawExtension>());
            if ty == EXT_END {
                return Ok(());
            }
            let data_end = data_start
                .checked_add(len)
                .filter(|e| *e <= limit)
                .ok_or_else(|| {
                    Error::corrupt(
                        path,
                        "qcow2 header extension",
                        wide(pos),
                        format!("type {ty:#x} with length {len} runs past the header area"),
                    )
                })?;
            let data = &buf[data_start..data_end];
            match ty {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_string(),
                    )
                }
                EXT_DATA_FILE => {
                    self.data_file = Some(
                        String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_string(),
                    )
                }
                EXT_FEATURE_NAMES => {
                    // The largest whole number of entries; a partial last one is ignored.
                    let entries =
                        <[RawFeatureName]>::ref_from_prefix(data).map_or(&[][..], |(e, _)| e);
                    for ent in entries {
                        let name = String::from_utf8_lossy(&ent.name)
                            .trim_end_matches('\0')
                            .to_string();
                        self.feature_names.push((ent.ty, ent.bit, name));
                    }
                }
                EXT_BITMAPS => self.has_bitmaps = true,
                EXT_ENCRYPTION => {
                    return Err(Error::unsupported(
                        path,
                        "encrypted qcow2 images (LUKS) are not supported",
                    ))
                }
                _ => log::debug!(
                    "{}: skipping unknown qcow2 header extension {ty:#x}",
                    path.display()
                ),
            }
            // data_end <= limit: the padded end cannot overflow.
            pos = data_start.saturating_add(len.div_ceil(8).saturating_mul(8));
        }
    }
}
