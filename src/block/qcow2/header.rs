//! The qcow2 header and its extensions (qemu docs/interop/qcow2.txt, "Header" and "Header
//! extensions"). Everything the reader later trusts is validated here.

use crate::block::error::{Error, Result};
use std::path::Path;

pub const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
/// qemu's bounds on cluster_bits (512 B .. 2 MiB).
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's QCOW_MAX_L1_SIZE: the L1 table is at most 32 MiB, which also bounds the virtual size.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// qemu refuses backing file names longer than this.
pub const MAX_BACKING_NAME: u32 = 1023;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_ENCRYPTION: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

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
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
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

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// Parses and validates the header from the image's first cluster (or as much of the file as
    /// exists, at least 72 bytes). `path` and `file_len` are for error messages and bounds.
    pub fn parse(buf: &[u8], path: &Path, file_len: u64) -> Result<Self> {
        let bad =
            |offset: u64, detail: String| Error::corrupt(path, "qcow2 header", offset, detail);
        if buf.len() < 72 {
            return Err(Error::Truncated {
                path: path.into(),
                what: "qcow2 header",
                offset: 0,
                len: 72,
                file_len,
            });
        }
        if be32(buf, 0) != MAGIC {
            return Err(bad(0, "bad magic (not a qcow2 image)".into()));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                path,
                format!("qcow2 version {version} is not supported (only 2 and 3)"),
            ));
        }
        let cluster_bits = be32(buf, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(
                20,
                format!(
                    "cluster_bits {cluster_bits} outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
                ),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        // Extensions and the backing file name must lie in the first cluster.
        let buf = &buf[..buf.len().min(cluster_size as usize)];
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 72,
            compression: Compression::Zlib,
            backing_file: None,
            backing_format: None,
            data_file: None,
            has_bitmaps: false,
            feature_names: Vec::new(),
        };
        if version >= 3 {
            if buf.len() < 104 {
                return Err(Error::Truncated {
                    path: path.into(),
                    what: "qcow2 v3 header",
                    offset: 0,
                    len: 104,
                    file_len,
                });
            }
            h.incompatible_features = be64(buf, 72);
            h.compatible_features = be64(buf, 80);
            h.autoclear_features = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 || u64::from(h.header_length) > cluster_size {
                return Err(bad(
                    100,
                    format!(
                        "header_length {} outside 104..={cluster_size}",
                        h.header_length
                    ),
                ));
            }
            if h.header_length as usize > buf.len() {
                return Err(Error::Truncated {
                    path: path.into(),
                    what: "qcow2 header",
                    offset: 0,
                    len: h.header_length.into(),
                    file_len,
                });
            }
            if h.refcount_order > 6 {
                return Err(bad(96, format!("refcount_order {} > 6", h.refcount_order)));
            }
            if h.header_length > 104 {
                h.compression = match buf[104] {
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
            let has_bit = h.incompatible_features & INCOMPAT_COMPRESSION != 0;
            if has_bit != (h.compression != Compression::Zlib) {
                return Err(bad(
                    72,
                    "compression type and its incompatible feature bit disagree".into(),
                ));
            }
        }
        if h.crypt_method != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "encrypted qcow2 images (crypt_method {}) are not supported",
                    h.crypt_method
                ),
            ));
        }
        if h.l1_table_offset % cluster_size != 0 {
            return Err(bad(
                40,
                format!(
                    "L1 table offset {:#x} is not cluster-aligned",
                    h.l1_table_offset
                ),
            ));
        }
        // The L1 table must cover the virtual size, and is bounded as qemu bounds it.
        let bytes_per_l2 = cluster_size * (cluster_size / h.l2_entry_size());
        let needed = h.size.div_ceil(bytes_per_l2);
        if needed.saturating_mul(8) > MAX_L1_BYTES {
            return Err(bad(
                24,
                format!(
                    "virtual size {} is too large (L1 table would exceed {} MiB)",
                    h.size,
                    MAX_L1_BYTES >> 20
                ),
            ));
        }
        if u64::from(h.l1_size) < needed {
            return Err(bad(
                36,
                format!(
                    "L1 table of {} entries cannot cover the virtual size {} ({needed} needed)",
                    h.l1_size, h.size
                ),
            ));
        }
        if u64::from(h.l1_size) * 8 > MAX_L1_BYTES {
            return Err(bad(
                36,
                format!(
                    "L1 table of {} entries exceeds {} MiB",
                    h.l1_size,
                    MAX_L1_BYTES >> 20
                ),
            ));
        }
        h.read_backing_name(buf, path)?;
        h.read_extensions(buf, path)?;
        let unknown = h.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64)
                .filter(|b| unknown & (1 << b) != 0)
                .map(|b| {
                    h.feature_names
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
        if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported(
                path,
                format!(
                    "qcow2 images with an external data file ({}) are not supported",
                    h.data_file.as_deref().unwrap_or("name not recorded")
                ),
            ));
        }
        Ok(h)
    }

    /// Bytes per L2 entry: 8, or 16 with extended L2 (an extra subcluster bitmap).
    pub fn l2_entry_size(&self) -> u64 {
        if self.incompatible_features & INCOMPAT_EXTL2 != 0 {
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
                16,
                format!(
                    "backing file name length {} outside 1..={MAX_BACKING_NAME}",
                    self.backing_file_size
                ),
            ));
        }
        let start = self.backing_file_offset;
        let end = start.saturating_add(u64::from(self.backing_file_size));
        if end > buf.len() as u64 {
            return Err(Error::corrupt(
                path,
                "qcow2 backing file name",
                start,
                "lies outside the first cluster".to_string(),
            ));
        }
        let raw = &buf[start as usize..end as usize];
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
        let mut pos = self.header_length as usize;
        // Extensions end at the backing file name if it comes first, or at the cluster end.
        let limit = if self.backing_file_offset != 0 {
            (self.backing_file_offset as usize).min(buf.len())
        } else {
            buf.len()
        };
        loop {
            if pos + 8 > limit {
                // qemu tolerates a header cluster that ends without an end marker.
                return Ok(());
            }
            let ty = be32(buf, pos);
            let len = be32(buf, pos + 4) as usize;
            let data_start = pos + 8;
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
                        pos as u64,
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
                    for ent in data.chunks_exact(48) {
                        let name = String::from_utf8_lossy(&ent[2..])
                            .trim_end_matches('\0')
                            .to_string();
                        self.feature_names.push((ent[0], ent[1], name));
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
            pos = data_start + len.div_ceil(8) * 8;
        }
    }
}
