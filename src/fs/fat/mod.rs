//! FAT12/16/32 with VFAT long names, read-only: the EFI system partition and other small
//! volumes a guest mounts as `vfat`. Shown as the Linux kernel's vfat driver shows it with
//! its default mount options (see [`Options`]), so `ferry mount` of `/boot/efi` matches what
//! the guest sees.
//!
//! Our own reader rather than the `fatfs` crate (0.3.6) that DESIGN.md allows: fatfs 0.3 asks
//! for a writable device and writes the FSInfo sector and the dirty flag when dropped; its
//! directory iterator loops forever inside one `next()` on a directory whose cluster chain
//! loops through free or long-name slots (nothing outside can bound it); it hides the entry
//! positions and first clusters (so no stable inode numbers) and lends `Dir`/`File` handles
//! borrowing the filesystem (so every call would walk the path again); it shows 8.3 names as
//! ASCII only and is not `Sync`. Reading FAT is small enough to do here with every loop
//! bounded: see `boot`, `dir` and the limits below.
//!
//! Inode numbers: the root is 1; any other file's is the byte position of its 8.3 entry on
//! the volume divided by 32 (entries are 32 bytes, so positions never collide). FAT has no
//! inode numbers at all; the kernel uses the same position (`i_pos`) to find an inode again
//! but hands out arbitrary numbers (`iunique`) that change at every mount. The position is
//! stable across opens and needs no table on disk; the parent of each entry is remembered as
//! it is found, which ".." needs (a FAT ".." entry points at a cluster, not an entry).
//!
//! Where ferry differs from the kernel, on purpose: a file's cluster chain that loops is an
//! error where the kernel reads the loop's clusters again up to the size; a directory chain
//! is cut at FAT's 65536 entries where the kernel walks up to 4 GiB of clusters first; free
//! space is counted in the FAT where the kernel trusts a valid FAT32 FSInfo count; times are
//! always read as UTC (the kernel applies `tz=`/`time_offset=`, or its own timezone when
//! the RTC keeps local time).

mod boot;
mod dir;
mod time;

use super::{Attr, DamageLog, DirEntry, Error, FileType, Filesystem, FsInfo, Result, StatFs};
use crate::block::BlockDevice;
use crate::bytes::wide;
use boot::{FatType, Geometry, FIRST_CLUSTER};
use dir::{Raw, ATTR_DIR, ATTR_RO};
use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use boot::SECTOR;

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;

/// The largest directory read: FAT allows 65536 entries of 32 bytes (the kernel's
/// FAT_MAX_DIR_SIZE, which it enforces when a directory grows). A longer cluster chain is a
/// loop or damage, and reading on would never end.
const MAX_DIR_BYTES: u64 = 65536 * 32;
/// FAT bytes read and cached at a time.
const FAT_CHUNK: u64 = 64 << 10;
/// A directory entry's size as a byte count.
const ENTRY64: u64 = wide(dir::ENTRY);
/// FAT chunks kept (16 MiB: the whole FAT of a volume of up to 4M clusters).
const FAT_CHUNKS: usize = 256;
/// Directory listings kept, and file cluster chains kept.
const LISTINGS: usize = 512;
const CHAINS: usize = 64;
/// The kernel's f_namelen for vfat: 255 UTF-16 units, each up to NLS_MAX_CHARSET_SIZE (6)
/// bytes.
const NAME_MAX: u32 = 255 * 6;
/// Bytes of device read in one go when a file's clusters are contiguous.
const MAX_RUN: u64 = 1 << 20;

/// The mount options that change what the kernel's vfat shows. The defaults are what
/// `mount -t vfat` gives root with umask 022: owner root, files and directories 0755, write
/// bits taken off read-only files only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits taken off files (`fmask=`, or `umask=`).
    pub fmask: u32,
    /// Permission bits taken off directories (`dmask=`, or `umask=`).
    pub dmask: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            uid: 0,
            gid: 0,
            fmask: 0o022,
            dmask: 0o022,
        }
    }
}

impl Options {
    /// The options of an fstab entry's option string that the kernel's vfat takes for owner
    /// and permissions (`uid=`, `gid=`, `umask=`, `fmask=`, `dmask=`, octal masks, as
    /// fat_parse_param reads them); the others leave the defaults.
    pub fn from_fstab(opts: &str) -> Options {
        let mut o = Options::default();
        for opt in opts.split(',') {
            let Some((k, v)) = opt.split_once('=') else {
                continue;
            };
            let dec = || v.parse::<u32>().ok();
            let oct = || u32::from_str_radix(v, 8).ok().map(|m| m & 0o777);
            match k {
                "uid" => o.uid = dec().unwrap_or(o.uid),
                "gid" => o.gid = dec().unwrap_or(o.gid),
                "umask" => {
                    if let Some(m) = oct() {
                        o.fmask = m;
                        o.dmask = m;
                    }
                }
                "fmask" => o.fmask = oct().unwrap_or(o.fmask),
                "dmask" => o.dmask = oct().unwrap_or(o.dmask),
                _ => {}
            }
        }
        o
    }
}

/// What ferry remembers of an inode: its entry and its parent directory.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: u64,
    raw: Raw,
}

/// One child of a listed directory.
struct Child {
    ino: u64,
    name: Vec<u8>,
    short: Vec<u8>,
    kind: FileType,
}

/// A directory's entries, read once.
struct Listing {
    children: Vec<Child>,
    /// The kernel's `fat_subdirs` (entries with the directory attribute, dots included).
    subdirs: u32,
    /// Bytes of the directory (its clusters, or the fixed root region).
    bytes: u64,
    label: Option<[u8; 11]>,
}

/// Where the next cluster of a chain is, as its FAT entry says.
enum Next {
    Cluster(u32),
    End,
    /// Free, bad, or a number outside the data area: the chain is broken here.
    Broken(u32),
}

pub struct Fat {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    opts: Options,
    fat: Mutex<LruCache<u64, Arc<[u8]>>>,
    nodes: RwLock<HashMap<u64, Node>>,
    listings: Mutex<LruCache<u64, Arc<Listing>>>,
    chains: Mutex<LruCache<u64, Arc<Vec<u32>>>>,
    free: OnceLock<u64>,
    label: Vec<u8>,
    reported: DamageLog,
}

/// Whether `dev` starts with a FAT boot sector (as `volume::content` recognises one, which
/// NTFS, exFAT and BitLocker boot sectors are not).
pub fn probe(dev: &dyn BlockDevice) -> Result<bool> {
    if dev.len() < wide(SECTOR) {
        return Ok(false);
    }
    let mut b = [0u8; SECTOR];
    dev.read_at(&mut b, 0)?;
    let other = matches!(&b[3..11], b"NTFS    " | b"EXFAT   " | b"-FVE-FS-");
    Ok(!other
        && crate::volume::mbr::has_signature(&b)
        && crate::volume::content::is_boot_sector_fs(&b))
}

fn lru<K: std::hash::Hash + Eq, V>(n: usize) -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
    ))
}

impl Fat {
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(dev, Options::default())
    }

    pub fn open_with(dev: Arc<dyn BlockDevice>, opts: Options) -> Result<Self> {
        if dev.len() < wide(SECTOR) {
            return Err(Error::corrupt(
                "fat boot sector",
                0,
                0,
                format!("the volume has {} bytes, less than one sector", dev.len()),
            ));
        }
        let mut b = [0u8; SECTOR];
        dev.read_at(&mut b, 0)?;
        let geo = Geometry::parse(&b)?;
        if geo.volume_bytes > dev.len() {
            log::warn!(
                "vfat: the boot sector gives {} bytes, the volume has {}: files past its end \
                 cannot be read",
                geo.volume_bytes,
                dev.len()
            );
        }
        let mut fs = Fat {
            dev,
            geo,
            opts,
            fat: lru(FAT_CHUNKS),
            nodes: RwLock::new(HashMap::new()),
            listings: lru(LISTINGS),
            chains: lru(CHAINS),
            free: OnceLock::new(),
            label: Vec::new(),
            reported: DamageLog::new("vfat"),
        };
        fs.nodes.write().insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                raw: Raw {
                    attr: ATTR_DIR,
                    first_cluster: fs.geo.root_cluster,
                    ..Raw::default()
                },
            },
        );
        let root = fs.listing(ROOT_INO)?;
        // blkid's rule: the root directory's label entry, else the boot sector's field
        // unless it says "NO NAME".
        let label = match root.label {
            Some(l) => l,
            None if &fs.geo.label != b"NO NAME    " => fs.geo.label,
            None => [b' '; 11],
        };
        let end = label
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(0, |p| p.saturating_add(1));
        fs.label = label[..end].to_vec();
        Ok(fs)
    }

    pub fn fat_type(&self) -> &'static str {
        self.geo.fat_type.name()
    }

    fn report(&self, e: Error) -> Error {
        self.reported.report(e)
    }

    /// The FAT chunk `k` (FAT_CHUNK bytes of the first FAT, shorter at its end).
    fn fat_chunk(&self, k: u64) -> Result<Arc<[u8]>> {
        if let Some(c) = self.fat.lock().get(&k) {
            return Ok(c.clone());
        }
        // Chunks of a FAT of at most 2^28 entries: no saturation.
        let start = k.saturating_mul(FAT_CHUNK);
        let len = FAT_CHUNK.min(self.geo.fat_bytes.saturating_sub(start));
        // At most FAT_CHUNK (64 KiB).
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.dev
            .read_at(&mut buf, self.geo.fat_start.saturating_add(start))?;
        let c: Arc<[u8]> = buf.into();
        self.fat.lock().put(k, c.clone());
        Ok(c)
    }

    /// The byte at offset `off` of the first FAT (0 past its end: the geometry check makes
    /// the FAT hold every cluster's entry).
    fn fat_byte(&self, off: u64) -> Result<u8> {
        let c = self.fat_chunk(off / FAT_CHUNK)?;
        Ok(c.get(chunk_index(off)).copied().unwrap_or(0))
    }

    /// Where cluster `c`'s entry lies in a FAT: 1.5, 2 or 4 bytes per entry (a u32 cluster
    /// number times at most 4: no overflow).
    fn entry_offset(&self, c: u32) -> u64 {
        let c = u64::from(c);
        match self.geo.fat_type {
            FatType::Fat12 => c.saturating_add(c >> 1),
            FatType::Fat16 => c << 1,
            FatType::Fat32 => c << 2,
        }
    }

    /// The raw FAT entry of cluster `c`.
    fn fat_entry(&self, c: u32) -> Result<u32> {
        let off = self.entry_offset(c);
        let next = off.saturating_add(1);
        Ok(match self.geo.fat_type {
            FatType::Fat12 => {
                let v = u16::from_le_bytes([self.fat_byte(off)?, self.fat_byte(next)?]);
                u32::from(if c & 1 == 1 { v >> 4 } else { v & 0xFFF })
            }
            FatType::Fat16 => u32::from(u16::from_le_bytes([
                self.fat_byte(off)?,
                self.fat_byte(next)?,
            ])),
            FatType::Fat32 => {
                let chunk = self.fat_chunk(off / FAT_CHUNK)?;
                crate::bytes::le32(&chunk, chunk_index(off)) & 0x0FFF_FFFF
            }
        })
    }

    /// What follows cluster `c` in its chain.
    fn next(&self, c: u32) -> Result<Next> {
        let v = self.fat_entry(c)?;
        let end = match self.geo.fat_type {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        };
        Ok(if v >= end {
            Next::End
        } else if self.geo.is_cluster(v) {
            Next::Cluster(v)
        } else {
            Next::Broken(v)
        })
    }

    /// The byte position of cluster `c`'s FAT entry (for error messages).
    fn fat_pos(&self, c: u32) -> u64 {
        self.geo.fat_start.saturating_add(self.entry_offset(c))
    }

    fn broken(&self, ino: u64, c: u32, detail: String) -> Error {
        self.report(
            Error::corrupt("fat cluster chain", ino, u64::from(c), detail).at(self.fat_pos(c)),
        )
    }

    /// The chain from cluster `first`: all of it (`want` None; longer than `limit` clusters
    /// is an error), or its first `want` clusters (ending before them is an error).
    fn chain(&self, ino: u64, first: u32, want: Option<u64>, limit: u64) -> Result<Vec<u32>> {
        if !self.geo.is_cluster(first) {
            return Err(self.report(
                Error::corrupt(
                    "fat directory entry",
                    ino,
                    0,
                    format!(
                        "first cluster {first} is outside clusters 2..{}",
                        u64::from(self.geo.clusters).saturating_add(1)
                    ),
                )
                .at(self.entry_pos(ino)),
            ));
        }
        let mut out = vec![first];
        // A loop is named where it closes (the kernel reads a looping file's clusters over
        // and over up to its size; an error says more than repeated data).
        let mut seen = HashSet::from([first]);
        let mut c = first;
        loop {
            if want.is_some_and(|w| wide(out.len()) >= w) {
                return Ok(out);
            }
            match self.next(c)? {
                Next::End => break,
                Next::Cluster(n) => {
                    if !seen.insert(n) {
                        return Err(self.broken(
                            ino,
                            c,
                            format!(
                                "the entry of cluster {c} points back to cluster {n}: the chain \
                                 from cluster {first} is a loop"
                            ),
                        ));
                    }
                    if wide(out.len()) >= limit {
                        return Err(self.broken(
                            ino,
                            c,
                            format!(
                                "the chain from cluster {first} goes on past {limit} clusters, \
                                 more than a directory may have"
                            ),
                        ));
                    }
                    out.push(n);
                    c = n;
                }
                Next::Broken(v) => {
                    let what = match v {
                        0 => "a free cluster".to_string(),
                        _ if v == self.bad_mark() => "a bad cluster".to_string(),
                        _ => format!("cluster {v}, outside the data area"),
                    };
                    return Err(self.broken(
                        ino,
                        c,
                        format!("the entry of cluster {c} (chain from {first}) points to {what}"),
                    ));
                }
            }
        }
        if let Some(w) = want {
            return Err(self.broken(
                ino,
                c,
                format!(
                    "the chain from cluster {first} ends after {} clusters; the size needs {w}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    fn bad_mark(&self) -> u32 {
        match self.geo.fat_type {
            FatType::Fat12 => 0xFF7,
            FatType::Fat16 => 0xFFF7,
            FatType::Fat32 => 0x0FFF_FFF7,
        }
    }

    /// The byte position of `ino`'s 8.3 entry (0 for the root, which has none).
    fn entry_pos(&self, ino: u64) -> u64 {
        if ino == ROOT_INO {
            0
        } else {
            // An inode number is its entry's position / 32, inside the volume.
            ino.saturating_mul(ENTRY64)
        }
    }

    fn node(&self, ino: u64) -> Result<Node> {
        self.nodes.read().get(&ino).copied().ok_or(Error::NotFound)
    }

    /// The entries of directory `ino`, read and remembered.
    fn listing(&self, ino: u64) -> Result<Arc<Listing>> {
        if let Some(l) = self.listings.lock().get(&ino) {
            return Ok(l.clone());
        }
        let node = self.node(ino)?;
        if !node.raw.is_dir() {
            return Err(Error::NotDir(ino));
        }
        let fixed_root = ino == ROOT_INO && self.geo.fat_type != FatType::Fat32;
        let cs = u64::from(self.geo.cluster_size);
        let (data, starts, unit) = if fixed_root {
            // At most 2^16 entries of 32 bytes.
            let len = u64::from(self.geo.root_entries).saturating_mul(ENTRY64);
            let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
            self.dev.read_at(&mut data, self.geo.root_start)?;
            (data, vec![self.geo.root_start], len.max(1))
        } else if node.raw.first_cluster == 0 {
            // An empty chain: the kernel shows such a directory with no entries at all.
            (Vec::new(), Vec::new(), cs)
        } else {
            // The cluster size is at least a sector (Geometry::parse); at most `limit`
            // clusters of it stay near MAX_DIR_BYTES.
            let limit = MAX_DIR_BYTES.checked_div(cs).unwrap_or(0).max(1);
            let clusters = self.chain(ino, node.raw.first_cluster, None, limit)?;
            let cs_len = usize::try_from(self.geo.cluster_size).unwrap_or(usize::MAX);
            let mut data = vec![0u8; clusters.len().saturating_mul(cs_len)];
            let starts: Vec<u64> = clusters
                .iter()
                .map(|&c| self.geo.cluster_offset(c))
                .collect();
            for (piece, &at) in data.chunks_exact_mut(cs_len).zip(&starts) {
                self.dev.read_at(piece, at)?;
            }
            (data, starts, cs)
        };
        let bytes = wide(data.len());
        // Entry i's volume position: its piece's start plus its offset there (unit >= 1).
        let parsed = dir::parse(&data, self.geo.fat_type == FatType::Fat32, |i| {
            let off = wide(i).saturating_mul(ENTRY64);
            let piece = off.checked_div(unit).and_then(|k| usize::try_from(k).ok());
            let start = piece.and_then(|k| starts.get(k)).copied().unwrap_or(0);
            start.saturating_add(off.checked_rem(unit).unwrap_or(0))
        });
        let mut children = Vec::with_capacity(parsed.entries.len());
        {
            let mut nodes = self.nodes.write();
            for e in parsed.entries.into_iter().filter(|e| !e.dot) {
                let child = e.pos / ENTRY64;
                nodes.insert(
                    child,
                    Node {
                        parent: ino,
                        raw: e.raw,
                    },
                );
                children.push(Child {
                    ino: child,
                    name: e.name,
                    short: e.short,
                    kind: kind(&e.raw),
                });
            }
        }
        let l = Arc::new(Listing {
            children,
            subdirs: parsed.subdirs,
            bytes,
            label: parsed.label,
        });
        self.listings.lock().put(ino, l.clone());
        Ok(l)
    }

    /// The kernel's `fat_make_mode`: all permissions less the mask of the kind, and for a
    /// read-only file its write bits too (read-only directories keep them, as without
    /// `rodir`). Hidden and system attributes change nothing on vfat.
    fn mode(&self, raw: &Raw) -> u32 {
        let mut perm = 0o777;
        if raw.attr & ATTR_RO != 0 && !raw.is_dir() {
            perm &= !0o222;
        }
        if raw.is_dir() {
            libc::S_IFDIR | (perm & !self.opts.dmask)
        } else {
            libc::S_IFREG | (perm & !self.opts.fmask)
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> Result<Attr> {
        let cs = u64::from(self.geo.cluster_size);
        let (size, nlink) = if node.raw.is_dir() {
            let l = self.listing(ino)?;
            let extra = if ino == ROOT_INO { 2 } else { 0 };
            // Subdirectories counted in a directory of at most 2^16 entries.
            (l.bytes, l.subdirs.saturating_add(extra))
        } else {
            (u64::from(node.raw.size), 1)
        };
        let r = &node.raw;
        let (mtime, atime, crtime) = if ino == ROOT_INO {
            // The root has no entry: the kernel gives it the epoch.
            Default::default()
        } else {
            (
                time::to_unix(r.mtime, r.mdate, 0),
                time::to_unix(0, r.adate, 0),
                time::to_unix(r.ctime, r.cdate, r.ctime_cs),
            )
        };
        Ok(Attr {
            ino,
            kind: kind(r),
            mode: self.mode(r),
            uid: self.opts.uid,
            gid: self.opts.gid,
            size,
            // A u32 file size rounded up to whole clusters: no saturation.
            blocks: size.div_ceil(cs).saturating_mul(cs) / 512,
            nlink,
            atime,
            mtime,
            ctime: mtime,
            crtime: Some(crtime),
            rdev: 0,
            blksize: self.geo.cluster_size,
        })
    }

    /// The clusters of file `ino` its size needs.
    fn file_chain(&self, ino: u64, node: &Node) -> Result<Arc<Vec<u32>>> {
        if let Some(c) = self.chains.lock().get(&ino) {
            return Ok(c.clone());
        }
        let cs = u64::from(self.geo.cluster_size);
        let want = u64::from(node.raw.size).div_ceil(cs);
        let c = Arc::new(if want == 0 {
            Vec::new()
        } else {
            self.chain(ino, node.raw.first_cluster, Some(want), want)?
        });
        self.chains.lock().put(ino, c.clone());
        Ok(c)
    }

    /// Calls `f` with the FAT entry of every cluster of the data area, in order.
    fn each_entry(&self, f: &mut dyn FnMut(u32, u32)) -> Result<()> {
        // Fewer than 2^28 clusters (Geometry::parse): no saturation.
        let end = self.geo.clusters.saturating_add(FIRST_CLUSTER);
        if self.geo.fat_type == FatType::Fat12 {
            for c in FIRST_CLUSTER..end {
                f(c, self.fat_entry(c)?);
            }
            return Ok(());
        }
        let width: usize = if self.geo.fat_type == FatType::Fat16 {
            2
        } else {
            4
        };
        let mut c = FIRST_CLUSTER;
        while c < end {
            let off = self.entry_offset(c);
            let chunk = self.fat_chunk(off / FAT_CHUNK)?;
            let rest = chunk.get(chunk_index(off)..).unwrap_or_default();
            for e in rest.chunks_exact(width) {
                if c >= end {
                    break;
                }
                let v = if width == 2 {
                    u32::from(crate::bytes::le16(e, 0))
                } else {
                    crate::bytes::le32(e, 0) & 0x0FFF_FFFF
                };
                f(c, v);
                c = c.saturating_add(1);
            }
            if c < end && wide(chunk.len()) < FAT_CHUNK {
                // The FAT ends before the last clusters' entries: cannot happen after the
                // geometry check, but must not loop.
                break;
            }
        }
        Ok(())
    }

    fn free_clusters(&self) -> Result<u64> {
        if let Some(&n) = self.free.get() {
            return Ok(n);
        }
        let mut n = 0u64;
        self.each_entry(&mut |_, v| n = n.saturating_add(u64::from(v == 0)))?;
        Ok(*self.free.get_or_init(|| n))
    }
}

fn kind(raw: &Raw) -> FileType {
    if raw.is_dir() {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

impl Filesystem for Fat {
    fn root_ino(&self) -> u64 {
        ROOT_INO
    }

    fn info(&self) -> FsInfo {
        let cs = u64::from(self.geo.cluster_size);
        let mut uuid = [0u8; 16];
        uuid[..4].copy_from_slice(&self.geo.serial.to_le_bytes());
        FsInfo {
            kind: "vfat",
            uuid,
            label: self.label.clone(),
            block_size: self.geo.cluster_size,
            // Fewer than 2^28 clusters of at most 512 KiB: no saturation.
            size_bytes: u64::from(self.geo.clusters).saturating_mul(cs),
            free_bytes: self.free_clusters().unwrap_or(0).saturating_mul(cs),
        }
    }

    /// The kernel's `fat_statfs`: clusters as blocks, no inode counts.
    fn statfs(&self) -> Result<StatFs> {
        let free = self.free_clusters()?;
        Ok(StatFs {
            bsize: self.geo.cluster_size,
            blocks: u64::from(self.geo.clusters),
            bfree: free,
            bavail: free,
            files: 0,
            ffree: 0,
            namelen: NAME_MAX,
        })
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        self.attr(ino, &node)
    }

    /// As vfat looks names up: trailing dots dropped, ASCII case ignored, the long name or
    /// the 8.3 alias.
    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
        let d = self.node(dir)?;
        if !d.raw.is_dir() {
            return Err(Error::NotDir(dir));
        }
        let ino = match name {
            b"." => dir,
            b".." => d.parent,
            _ => {
                let end = name
                    .iter()
                    .rposition(|&c| c != b'.')
                    .map_or(0, |p| p.saturating_add(1));
                let name = &name[..end];
                if name.is_empty() {
                    return Err(Error::NotFound);
                }
                let l = self.listing(dir)?;
                l.children
                    .iter()
                    .find(|c| dir::same_name(&c.name, name) || dir::same_name(&c.short, name))
                    .map(|c| c.ino)
                    .ok_or(Error::NotFound)?
            }
        };
        self.getattr(ino)
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        sink: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()> {
        let d = self.node(dir)?;
        let l = self.listing(dir)?;
        crate::fs::readdir_listed(
            dir,
            d.parent,
            &l.children,
            |c| DirEntry {
                ino: c.ino,
                name: c.name.clone(),
                kind: c.kind,
            },
            cookie,
            sink,
        );
        Ok(())
    }

    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let node = self.node(ino)?;
        if node.raw.is_dir() {
            return Err(Error::IsDir(ino));
        }
        let size = u64::from(node.raw.size);
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        // off < size: at most buf.len() bytes.
        let n = usize::try_from(size.saturating_sub(off)).map_or(buf.len(), |r| r.min(buf.len()));
        let chain = self.file_chain(ino, &node)?;
        let cs = u64::from(self.geo.cluster_size);
        let mut done = 0usize;
        while done < n {
            // Below the u32 size; the cluster size is not zero (Geometry::parse).
            let at = off.saturating_add(wide(done));
            let k = at.checked_div(cs).and_then(|k| usize::try_from(k).ok());
            let in_cluster = at.checked_rem(cs).unwrap_or(0);
            let Some(&first) = k.and_then(|k| chain.get(k)) else {
                break;
            };
            let left = n.saturating_sub(done);
            // Extend over clusters that follow on disk (cluster numbers are below 2^28).
            let mut run = cs.saturating_sub(in_cluster);
            let mut last = first;
            for &c in chain.iter().skip(k.unwrap_or(0).saturating_add(1)) {
                if run >= wide(left) || run >= MAX_RUN || last.checked_add(1) != Some(c) {
                    break;
                }
                run = run.saturating_add(cs);
                last = c;
            }
            let len = usize::try_from(run).map_or(left, |r| r.min(left));
            let dev_off = self.geo.cluster_offset(first).saturating_add(in_cluster);
            // done + len <= n <= buf.len().
            let Some(dst) = buf.get_mut(done..).and_then(|b| b.get_mut(..len)) else {
                break;
            };
            self.dev.read_at(dst, dev_off)?;
            done = done.saturating_add(len);
        }
        Ok(done)
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.node(ino)?;
        Err(Error::NotSymlink(ino))
    }

    /// vfat has no extended attributes: the kernel lists none.
    fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.node(ino)?;
        Ok(Vec::new())
    }

    /// Free clusters, as byte ranges of the volume; refused for a volume not cleanly
    /// unmounted, whose FAT may mark free a cluster a directory entry still uses.
    fn unused(&self) -> Result<Vec<std::ops::Range<u64>>> {
        if self.geo.dirty {
            return Err(Error::Unsupported(
                "vfat: the volume was not cleanly unmounted (dirty bit set); its FAT may not \
                 match its directories"
                    .into(),
            ));
        }
        let cs = u64::from(self.geo.cluster_size);
        let mut out: Vec<std::ops::Range<u64>> = Vec::new();
        self.each_entry(&mut |c, v| {
            if v != 0 {
                return;
            }
            let start = self.geo.cluster_offset(c);
            match out.last_mut() {
                // Cluster offsets inside the volume: no saturation.
                Some(r) if r.end == start => r.end = r.end.saturating_add(cs),
                _ => out.push(start..start.saturating_add(cs)),
            }
        })?;
        Ok(out)
    }
}

/// Where byte `off` of a FAT lies in its chunk (below FAT_CHUNK, so it fits usize).
fn chunk_index(off: u64) -> usize {
    usize::try_from(off % FAT_CHUNK).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn fat_fstab_options() {
        assert_eq!(Options::from_fstab("defaults"), Options::default());
        let o = Options::from_fstab("umask=0077,shortname=winnt");
        assert_eq!((o.fmask, o.dmask), (0o077, 0o077));
        let o = Options::from_fstab("uid=1000,gid=100,fmask=0133,dmask=0022");
        assert_eq!(
            o,
            Options {
                uid: 1000,
                gid: 100,
                fmask: 0o133,
                dmask: 0o022
            }
        );
    }
}
