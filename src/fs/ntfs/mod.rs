//! NTFS reader (read-only), over any `BlockDevice`. Structures as the Linux-NTFS project
//! documented them ("NTFS Documentation", flatcap.github.io/linux-ntfs) and [MS-FSCC]; what
//! a reader shows is modelled on ntfs-3g with its default options, so that a mount by ferry
//! and one by ntfs-3g agree:
//! - inode numbers are MFT record numbers (the root is record 5);
//! - every file is mode 0777 and every directory 0777 (no user mapping, umask 0), uid and
//!   gid 0 (`OpenOptions` changes them), nlink is the record's link count for files and 1
//!   for directories, st_blocks comes from the allocated (or, sparse or compressed, the
//!   compressed) size of the unnamed $DATA, and a directory's size is its $INDEX_ALLOCATION's;
//! - atime, mtime, ctime are $STANDARD_INFORMATION's access, data change and MFT change
//!   times (100 ns resolution), crtime its creation time;
//! - records 0-15 (the $MFT, $Bitmap... system files) and DOS 8.3 aliases are not listed;
//!   lookups are exact first, then case-insensitive through $UpCase for non-POSIX names;
//! - named $DATA streams are `user.<name>` xattrs (ntfs-3g's streams_interface=xattr);
//!   `system.ntfs_attrib` / `system.ntfs_attrib_be` and `system.ntfs_reparse_data` can be
//!   read as in ntfs-3g;
//! - symlink and junction reparse points are symlinks with targets mapped as ntfs-3g maps
//!   them for a volume mounted at `/`; Interix files (ntfs-3g's own symlinks, FIFOs, sockets,
//!   devices) are what they stand for.
//!
//! Where ferry differs on purpose: a WOF-compressed file is a regular file read decompressed
//! (XPRESS4K/8K/16K and LZX), a file whose reparse tag keeps its data elsewhere
//! (deduplication, cloud files) is a regular file whose reads fail with EIO and a log line
//! naming the tag (ntfs-3g without plugins shows both as broken symlinks), and a directory
//! with such a tag is a directory.
//!
//! Damage stays local: a record whose fixups, attributes or runs are wrong is an error (EIO)
//! for that file only, logged once.

pub mod attribute;
pub mod attrlist;
pub mod boot;
mod dir;
pub mod filename;
pub mod fixup;
pub mod flaw;
pub mod index;
pub mod index_slack;
pub mod inode;
pub mod intx;
mod lz77;
pub mod lznt1;
pub mod lzx;
pub mod record;
mod removed;
pub mod reparse;
pub mod runlist;
pub mod stdinfo;
mod stream;
mod touched;
pub mod upcase;
mod wof;
pub mod xpress;

use crate::block::BlockDevice;
use crate::bytes::{le16, le32, le64, wide};
use crate::fs::{Attr, DirEntry, Error, FileType, Filesystem, FsInfo, Result, StatFs};
use attribute::{Attribute, Body};
use boot::BootSector;
use flaw::Flaw;
use inode::Inode;
use lru::LruCache;
use parking_lot::Mutex;
use record::Record;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use upcase::UpCase;

/// The root directory's MFT record.
pub const ROOT_INO: u64 = 5;
pub const MFT_INO: u64 = 0;
pub const VOLUME_INO: u64 = 3;
pub const LOGFILE_INO: u64 = 2;
pub const BITMAP_INO: u64 = 6;
pub const UPCASE_INO: u64 = 10;
/// Records below this are the system files ntfs-3g hides from listings (FILE_first_user).
pub const FIRST_USER_INO: u64 = 16;
/// Extension records one file may use (an attribute list of MAX_ENTRIES entries could name
/// more; beyond this the list is taken as damaged).
pub const MAX_EXTENSION_RECORDS: usize = 4096;
/// Parsed files kept in memory.
const INODE_CACHE: usize = 4096;
/// Directory listings kept in memory (a listing resumes by position in it).
const DIR_CACHE: usize = 64;
/// Damaged objects remembered so that each is logged once.
const REPORTED_OBJECTS: usize = 4096;
/// Longest name in UTF-16 units.
pub const MAX_NAME_UNITS: usize = 255;
/// $UpCase's size: a u16 for each UTF-16 unit.
const UPCASE_BYTES: u64 = 2 * wide(upcase::ENTRIES);
/// Linux refuses xattr values larger than this (XATTR_SIZE_MAX); larger streams are not
/// offered as xattrs.
pub const MAX_XATTR_SIZE: u64 = 64 << 10;

/// Whether `dev` starts with an NTFS boot sector (everything else is checked by `open`).
pub fn probe(dev: &dyn BlockDevice) -> Result<bool> {
    if dev.len() < wide(boot::BOOT_SECTOR_SIZE) {
        return Ok(false);
    }
    let mut b = [0u8; 11];
    dev.read_at(&mut b, 0)?;
    Ok(&b[3..11] == boot::OEM_ID)
}

/// How files are presented (ntfs-3g's uid=, gid=, fmask=, dmask= options); the default is
/// ntfs-3g's for root: uid and gid 0, nothing masked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits cleared from files.
    pub fmask: u32,
    /// Permission bits cleared from directories.
    pub dmask: u32,
}

/// What a file is shown as.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    Dir,
    /// A regular file; Some(tag) when a reparse tag keeps its content elsewhere.
    File(Option<u32>),
    Symlink(Vec<u8>),
    Fifo,
    Socket,
    Char(u64),
    Block(u64),
}

/// One listed directory entry.
#[derive(Clone, Debug)]
struct Listed {
    name: Vec<u8>,
    ino: u64,
    kind: FileType,
}

/// An NTFS volume.
pub struct Ntfs {
    dev: Arc<dyn BlockDevice>,
    boot: BootSector,
    opts: OpenOptions,
    /// $MFT's unnamed $DATA, all extents merged.
    mft_runs: Vec<runlist::Run>,
    mft_records: u64,
    upcase: UpCase,
    label: Vec<u8>,
    version: (u8, u8),
    /// Why the volume's maps may be behind (dirty, hibernated); None when shut down cleanly.
    unclean: Option<&'static str>,
    inodes: Mutex<LruCache<u64, Arc<Inode>>>,
    dirs: Mutex<LruCache<u64, Arc<Vec<Listed>>>>,
    statfs: OnceLock<StatFs>,
    /// Removed files' records (forensics only; see `removed`).
    removed: OnceLock<removed::Removed>,
    reported: Mutex<LruCache<(&'static str, u64, u64), ()>>,
}

fn cache<K: std::hash::Hash + Eq, V>(n: usize) -> Mutex<LruCache<K, V>> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
    ))
}

impl Ntfs {
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Self> {
        Self::open_with(dev, OpenOptions::default())
    }

    /// Reads the boot sector, $MFT (with its attribute list, if fragmented so), $UpCase and
    /// $Volume, and checks that the root is a directory.
    pub fn open_with(dev: Arc<dyn BlockDevice>, opts: OpenOptions) -> Result<Self> {
        let mut b = vec![0u8; boot::BOOT_SECTOR_SIZE];
        dev.read_at(&mut b, 0)?;
        let boot = BootSector::parse(&b)?;
        if boot.size_bytes() > dev.len() {
            log::warn!(
                "ntfs: the volume is {} bytes but the device only {}: truncated image?",
                boot.size_bytes(),
                dev.len()
            );
        }
        let mut fs = Ntfs {
            dev,
            boot,
            opts,
            mft_runs: Vec::new(),
            mft_records: 0,
            upcase: UpCase::ascii(),
            label: Vec::new(),
            version: (0, 0),
            unclean: None,
            inodes: cache(INODE_CACHE),
            dirs: cache(DIR_CACHE),
            statfs: OnceLock::new(),
            removed: OnceLock::new(),
            reported: cache(REPORTED_OBJECTS),
        };
        fs.load_mft()?;
        match fs.load_upcase() {
            Ok(u) => fs.upcase = u,
            Err(e) => log::warn!("ntfs: $UpCase unreadable ({e}); folding ASCII letters only"),
        }
        fs.load_volume();
        let root = fs.inode(ROOT_INO)?;
        if !root.is_dir() {
            return Err(Error::corrupt(
                "root directory",
                ROOT_INO,
                0,
                "not a directory",
            ));
        }
        fs.warn_if_hibernated();
        fs.warn_if_log_unclean();
        fs.inodes.lock().clear();
        Ok(fs)
    }

    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// NTFS version from $Volume (3.1 for everything since Windows XP).
    pub fn version(&self) -> (u8, u8) {
        self.version
    }

    /// The error reporting `flaw` in `what` of record `ino`, where the structure starts at
    /// byte `at` of the volume (None: not known, e.g. inside a resident attribute); the
    /// position reported is the flawed field's, and its cluster is the error's block.
    /// Logged once per object.
    fn damage(
        &self,
        what: &'static str,
        ino: u64,
        at: Option<u64>,
        flaw: impl Into<Flaw>,
    ) -> Error {
        let flaw = flaw.into();
        let pos = at.and_then(|a| a.checked_add(flaw.at.map_or(0, wide)));
        let cs = u64::from(self.boot.cluster_size);
        let block = pos.and_then(|p| p.checked_div(cs)).unwrap_or(0);
        let mut e = Error::corrupt(what, ino, block, flaw.detail);
        if let Some(p) = pos {
            e = e.at(p);
        }
        if let Some((expected, found)) = flaw.mismatch {
            e = e.expected(expected, found);
        }
        if self
            .reported
            .lock()
            .put((what, ino, pos.unwrap_or(0)), ())
            .is_none()
        {
            log::error!("ntfs: {e}");
        }
        e
    }

    /// The volume byte that byte `off` of the stream `runs` describe is stored at (None in a
    /// sparse run or where no run maps it).
    fn stream_pos(&self, runs: &[runlist::Run], off: u64) -> Option<u64> {
        let cs = u64::from(self.boot.cluster_size);
        let r = runlist::find(runs, off.checked_div(cs)?)?;
        stream::locate(r, off, cs).1
    }

    /// The volume byte where MFT record `n` starts (record 0 from the boot sector, before
    /// $MFT's runlist is known).
    fn record_pos(&self, n: u64) -> Option<u64> {
        let rs = u64::from(self.boot.record_size);
        if self.mft_runs.is_empty() {
            let mft = self
                .boot
                .mft_lcn
                .checked_mul(u64::from(self.boot.cluster_size))?;
            return mft.checked_add(n.checked_mul(rs)?);
        }
        self.stream_pos(&self.mft_runs, n.checked_mul(rs)?)
    }

    /// Reads volume bytes at `off`, refusing anything past the end of the volume.
    fn read_dev(&self, buf: &mut [u8], off: u64, ino: u64) -> Result<()> {
        let end = off.checked_add(wide(buf.len()));
        if end.is_none_or(|e| e > self.boot.size_bytes() || e > self.dev.len()) {
            return Err(self.damage(
                "volume read",
                ino,
                None,
                format!(
                    "{} bytes at byte {off} are past the end of the volume ({} bytes, device {})",
                    buf.len(),
                    self.boot.size_bytes(),
                    self.dev.len()
                ),
            ));
        }
        Ok(self.dev.read_at(buf, off)?)
    }

    /// MFT record `n` as stored (through the $MFT runlist), parsed; damage is logged once.
    fn record(&self, n: u64) -> Result<Record> {
        self.parse_record(n)?
            .map_err(|e| self.damage("MFT record", n, self.record_pos(n), e))
    }

    /// Record `n` read and parsed, a parse failure left as the parser's message for the caller
    /// to report (`record`) or pass over (free records, which are often never written).
    fn parse_record(&self, n: u64) -> Result<std::result::Result<Record, Flaw>> {
        let rs = u64::from(self.boot.record_size);
        // At most MAX_RECORD_SIZE.
        let mut buf = vec![0u8; usize::try_from(rs).unwrap_or(0)];
        if self.mft_runs.is_empty() {
            // Record 0 itself, before $MFT's runlist is known ($MFT's cluster is inside
            // the volume, BootSector::parse: no saturation).
            let at = self
                .boot
                .mft_lcn
                .saturating_mul(u64::from(self.boot.cluster_size));
            self.read_dev(&mut buf, at, n)?;
        } else {
            if n >= self.mft_records {
                return Err(Error::NotFound);
            }
            // Below $MFT's data size: no saturation.
            self.read_runs(n, &self.mft_runs, n.saturating_mul(rs), &mut buf)?;
        }
        Ok(Record::parse(&mut buf, self.boot.clusters()))
    }

    /// $MFT's runlist: record 0's own $DATA extent, then the extents its attribute list
    /// places in other records, each read through the runs known so far.
    fn load_mft(&mut self) -> Result<()> {
        let r0 = self.record(MFT_INO)?;
        let mut pieces: Vec<Attribute> = r0.attributes.clone();
        let first = r0
            .attributes
            .iter()
            .find(|a| a.kind == attribute::DATA && a.name.is_empty())
            .cloned()
            .ok_or_else(|| Error::corrupt("$MFT", 0, 0, "record 0 has no $DATA"))?;
        let Body::NonResident(nr) = &first.body else {
            return Err(Error::corrupt("$MFT", 0, 0, "$DATA is resident"));
        };
        if nr.lowest_vcn != 0 {
            return Err(Error::corrupt(
                "$MFT",
                0,
                0,
                "record 0 lacks the first extent",
            ));
        }
        let rs = u64::from(self.boot.record_size);
        // The record size is at least 512 (BootSector::parse).
        self.mft_records = nr.data_size.checked_div(rs).unwrap_or(0);
        self.mft_runs = nr.runs.clone();
        if let Some(list) = r0
            .attributes
            .iter()
            .find(|a| a.kind == attribute::ATTRIBUTE_LIST)
        {
            let bytes = self.read_whole(MFT_INO, list, attrlist::MAX_SIZE)?;
            let entries = attrlist::parse(&bytes)
                .map_err(|e| Error::corrupt("$MFT attribute list", 0, 0, e))?;
            let mut done = std::collections::HashSet::new();
            for e in entries {
                let n = record::ref_number(e.record);
                if e.kind != attribute::DATA || !e.name.is_empty() || n == 0 || !done.insert(n) {
                    continue;
                }
                let r = self.record(n)?;
                for a in r.attributes {
                    if a.kind == attribute::DATA && a.name.is_empty() {
                        if let Body::NonResident(x) = &a.body {
                            if x.lowest_vcn == self.mft_runs.last().map_or(0, runlist::Run::end) {
                                self.mft_runs.extend_from_slice(&x.runs);
                            }
                        }
                        pieces.push(a);
                    }
                }
            }
        }
        let mapped = self.mft_runs.last().map_or(0, runlist::Run::end);
        // Records of $MFT's data size: no saturation.
        let need = self
            .mft_records
            .saturating_mul(rs)
            .div_ceil(u64::from(self.boot.cluster_size));
        if mapped < need {
            log::warn!(
                "ntfs: $MFT's runs map {mapped} clusters of its {need}; records past them are \
                 unreadable"
            );
        }
        Ok(())
    }

    /// $UpCase's table, its pages read when names need them (`upcase_page`); checked here for
    /// its size.
    fn load_upcase(&self) -> Result<UpCase> {
        self.with_upcase_data(|a| {
            if a.size() < UPCASE_BYTES {
                let msg = format!("{} bytes, want {UPCASE_BYTES}", a.size());
                return Err(Error::corrupt("$UpCase", UPCASE_INO, 0, msg));
            }
            Ok(UpCase::lazy())
        })
    }

    /// Page `p` of $UpCase; a page that cannot be read is logged, and folds ASCII letters only.
    pub(crate) fn upcase_page(&self, p: usize) -> Option<Vec<u8>> {
        self.with_upcase_data(|a| {
            let off = wide(p).saturating_mul(wide(upcase::PAGE_BYTES));
            let mut b = vec![0u8; upcase::PAGE_BYTES];
            if self.read_attr(UPCASE_INO, a, off, &mut b)? < b.len() {
                return Err(Error::corrupt("$UpCase", UPCASE_INO, off, "short page"));
            }
            Ok(b)
        })
        .inspect_err(|e| {
            log::warn!("ntfs: $UpCase page {p} unreadable ({e}); folding ASCII letters only")
        })
        .ok()
    }

    /// `f` of $UpCase's $DATA attribute.
    fn with_upcase_data<T>(&self, f: impl FnOnce(&Attribute) -> Result<T>) -> Result<T> {
        let i = self.inode(UPCASE_INO)?;
        let a = i
            .data()
            .ok_or_else(|| Error::corrupt("$UpCase", UPCASE_INO, 0, "no $DATA"))?;
        f(a)
    }

    /// Label and version from $Volume; warns about a volume Windows left dirty.
    fn load_volume(&mut self) {
        let Ok(v) = self.inode(VOLUME_INO) else {
            log::warn!("ntfs: $Volume unreadable; no label");
            return;
        };
        if let Some(n) = v
            .find(attribute::VOLUME_NAME, &[])
            .and_then(|a| a.resident())
        {
            let units: Vec<u16> = n
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            self.label = filename::to_utf8(&units);
        }
        if let Some(info) = v
            .find(attribute::VOLUME_INFORMATION, &[])
            .and_then(|a| a.resident())
        {
            if info.len() >= 12 {
                self.version = (info[8], info[9]);
                if le16(info, 10) & 1 != 0 {
                    self.unclean = Some("the volume is marked dirty");
                    log::warn!(
                        "ntfs: the volume is marked dirty (Windows did not shut down cleanly, \
                         or chkdsk is pending); reading it as it is, without replaying $LogFile"
                    );
                }
            }
        }
    }

    /// Windows left hibernated (or with Fast Startup) keeps the volume's state in memory:
    /// what is on disk may be behind. hiberfil.sys then starts with "hibr" (or "HIBR",
    /// "wake"); a clean shutdown zeros its header.
    fn warn_if_hibernated(&mut self) {
        let Ok(root) = self.inode(ROOT_INO) else {
            return;
        };
        let name: Vec<u16> = "hiberfil.sys".encode_utf16().collect();
        let Ok(Some((mref, _))) = self.find_name(&root, &name, false) else {
            return;
        };
        let mut head = [0u8; 4];
        let ok = self.inode(record::ref_number(mref)).ok().and_then(|i| {
            i.data()
                .and_then(|a| self.read_attr(i.ino, a, 0, &mut head).ok())
        });
        if ok == Some(4) && matches!(&head, b"hibr" | b"HIBR" | b"wake" | b"WAKE") {
            self.unclean = Some("Windows is hibernated");
            log::warn!(
                "ntfs: Windows is hibernated (or was shut down with Fast Startup): the volume \
                 may not hold its latest changes; reading it read-only as it is on disk"
            );
        }
    }

    /// A $LogFile that Windows did not close holds changes not yet in the metadata. Its two
    /// restart pages ("RSTR", at 0 and at the system page size; ntfs-3g's layout/logfile.h)
    /// each carry a restart area; the newer one (higher current LSN) counts. As ntfs-3g
    /// (`ntfs_is_logfile_clean`) judges it: a log client still in use without the
    /// "volume is clean" flag means an unclean shutdown. A log that is all 0xff (reset by
    /// mkntfs or ntfs-3g) or unreadable is not judged.
    fn warn_if_log_unclean(&mut self) {
        let Some(verdict) = self.log_restart_state() else {
            return;
        };
        if !verdict {
            self.unclean.get_or_insert("$LogFile is not clean");
            log::warn!(
                "ntfs: $LogFile is not clean (Windows did not shut down cleanly, or the volume \
                 was copied while in use); reading it as it is on disk, without replaying the log"
            );
        }
    }

    /// Whether the newest restart area says clean; None when there is none to read.
    fn log_restart_state(&self) -> Option<bool> {
        /// The restart area's fields (ntfs-3g's RESTART_AREA): current_lsn at 0,
        /// client_in_use_list at 12, flags at 14.
        const NO_CLIENT: u16 = 0xffff;
        const VOLUME_IS_CLEAN: u16 = 0x0002;
        let i = self.inode(LOGFILE_INO).ok()?;
        let a = i.data()?;
        let mut page = [0u8; 512];
        let mut newest: Option<(u64, bool)> = None;
        let mut at = 0u64;
        for _ in 0..2 {
            if self.read_attr(LOGFILE_INO, a, at, &mut page).ok()? < page.len()
                || &page[..4] != b"RSTR"
            {
                break;
            }
            let system_page = u64::from(le32(&page, 16));
            let ra = usize::from(le16(&page, 24));
            if !(512..=65536).contains(&system_page)
                || !system_page.is_power_of_two()
                || ra % 8 != 0
                || ra + 16 > 510
            {
                break;
            }
            let lsn = le64(&page, ra);
            let clean =
                le16(&page, ra + 12) == NO_CLIENT || le16(&page, ra + 14) & VOLUME_IS_CLEAN != 0;
            if newest.is_none_or(|(l, _)| lsn > l) {
                newest = Some((lsn, clean));
            }
            // Two pages of at most 64 KiB.
            at = at.saturating_add(system_page);
        }
        newest.map(|(_, clean)| clean)
    }

    /// File `ino`, all its records read and merged, through the cache.
    pub(crate) fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        if let Some(i) = self.inodes.lock().get(&ino) {
            return Ok(i.clone());
        }
        let r = self.record(ino)?;
        if !r.in_use() || r.base != 0 {
            return Err(Error::NotFound);
        }
        let list = r
            .attributes
            .iter()
            .find(|a| a.kind == attribute::ATTRIBUTE_LIST)
            .cloned();
        let mut pieces = r.attributes;
        if let Some(list) = list {
            let bytes = self.read_whole(ino, &list, attrlist::MAX_SIZE)?;
            let entries =
                attrlist::parse(&bytes).map_err(|e| self.damage("attribute list", ino, None, e))?;
            let mut records: Vec<u64> = entries
                .iter()
                .map(|e| record::ref_number(e.record))
                .filter(|&n| n != ino)
                .collect();
            records.sort_unstable();
            records.dedup();
            if records.len() > MAX_EXTENSION_RECORDS {
                return Err(self.damage(
                    "attribute list",
                    ino,
                    None,
                    format!("{} extension records", records.len()),
                ));
            }
            for n in records {
                let x = self.record(n)?;
                if !x.in_use() || record::ref_number(x.base) != ino {
                    return Err(self.damage(
                        "attribute list",
                        ino,
                        self.record_pos(n),
                        format!(
                            "extension record {n} belongs to record {}",
                            record::ref_number(x.base)
                        ),
                    ));
                }
                pieces.extend(x.attributes);
            }
        }
        let i = Inode::assemble(ino, r.sequence, r.link_count, r.flags, pieces)
            .map_err(|e| self.damage("attributes", ino, self.record_pos(ino), e))?;
        let i = Arc::new(i);
        self.inodes.lock().put(ino, i.clone());
        Ok(i)
    }

    /// The raw $REPARSE_POINT value, if the file has one.
    fn reparse_data(&self, i: &Inode) -> Result<Option<Vec<u8>>> {
        match i.find(attribute::REPARSE_POINT, &[]) {
            Some(a) => Ok(Some(self.read_whole(i.ino, a, reparse::MAX_SIZE)?)),
            None => Ok(None),
        }
    }

    /// How file `i` is shown (see the module documentation).
    fn shape(&self, i: &Inode) -> Result<Shape> {
        let flags = i.file_flags();
        if let Some(data) = self.reparse_data(i)? {
            let tag = reparse::tag(&data).unwrap_or(0);
            if tag == reparse::TAG_SYMLINK || tag == reparse::TAG_MOUNT_POINT {
                return Ok(Shape::Symlink(match reparse::link_target(&data) {
                    Some(t) => self.map_target(i, t),
                    None => format!("unsupported reparse tag 0x{tag:08x}").into_bytes(),
                }));
            }
            if i.is_dir() {
                return Ok(Shape::Dir);
            }
            return Ok(Shape::File(reparse::data_elsewhere(tag).then_some(tag)));
        }
        if i.is_dir() {
            return Ok(Shape::Dir);
        }
        if flags & stdinfo::ATTR_SYSTEM != 0 {
            let (size, head) = match i.data() {
                Some(a) if a.size() <= intx::MAX_SIZE => {
                    (a.size(), self.read_whole(i.ino, a, intx::MAX_SIZE)?)
                }
                Some(a) => (a.size(), Vec::new()),
                None => return Ok(Shape::File(None)),
            };
            let hidden = flags & stdinfo::ATTR_HIDDEN != 0;
            return Ok(match intx::classify(size, &head, hidden) {
                Some(intx::Special::Fifo) => Shape::Fifo,
                Some(intx::Special::Socket) => Shape::Socket,
                Some(intx::Special::Symlink(t)) => Shape::Symlink(filename::to_utf8(&t)),
                Some(intx::Special::Char(ma, mi)) => Shape::Char(makedev(ma, mi)),
                Some(intx::Special::Block(ma, mi)) => Shape::Block(makedev(ma, mi)),
                None => Shape::File(None),
            });
        }
        Ok(Shape::File(None))
    }

    fn attr_of(&self, i: &Inode, shape: &Shape) -> Attr {
        let si = i.std_info().unwrap_or_default();
        let (data_size, alloc) = match i.data().map(|a| &a.body) {
            // A value inside an MFT record: no saturation.
            Some(Body::Resident(v)) => (wide(v.len()), wide(v.len()).saturating_add(7) & !7),
            Some(Body::NonResident(n)) => {
                let a = i.data().map_or(0, |a| a.flags);
                let alloc = if a & (attribute::FLAG_COMPRESSED | attribute::FLAG_SPARSE) != 0 {
                    n.compressed_size
                } else {
                    n.allocated_size
                };
                (n.data_size, alloc)
            }
            None => (0, 0),
        };
        let file_blocks = alloc.div_ceil(512);
        let perm_f = 0o777 & !self.opts.fmask;
        let perm_d = 0o777 & !self.opts.dmask;
        let (kind, mode, size, blocks, nlink, rdev) = match shape {
            Shape::Dir => {
                let (size, alloc) = match i
                    .find(attribute::INDEX_ALLOCATION, &inode::I30)
                    .map(|a| &a.body)
                {
                    Some(Body::NonResident(n)) => (n.data_size, n.allocated_size),
                    _ => (0, 0),
                };
                (
                    FileType::Directory,
                    0o040000 | perm_d,
                    size,
                    alloc >> 9,
                    1,
                    0,
                )
            }
            Shape::File(_) => (
                FileType::RegularFile,
                0o100000 | perm_f,
                data_size,
                file_blocks,
                u32::from(i.link_count),
                0,
            ),
            Shape::Symlink(t) => (
                FileType::Symlink,
                0o120777,
                wide(t.len()),
                file_blocks,
                u32::from(i.link_count),
                0,
            ),
            Shape::Fifo => (
                FileType::NamedPipe,
                0o010000 | perm_f,
                data_size,
                file_blocks,
                u32::from(i.link_count),
                0,
            ),
            Shape::Socket => (
                FileType::Socket,
                0o140000 | perm_f,
                data_size,
                file_blocks,
                u32::from(i.link_count),
                0,
            ),
            Shape::Char(d) => (
                FileType::CharDevice,
                0o020000 | perm_f,
                data_size,
                file_blocks,
                u32::from(i.link_count),
                *d,
            ),
            Shape::Block(d) => (
                FileType::BlockDevice,
                0o060000 | perm_f,
                data_size,
                file_blocks,
                u32::from(i.link_count),
                *d,
            ),
        };
        Attr {
            ino: i.ino,
            kind,
            mode,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size,
            blocks,
            nlink,
            atime: si.accessed,
            mtime: si.modified,
            ctime: si.changed,
            crtime: Some(si.created),
            rdev,
            blksize: self.boot.cluster_size,
        }
    }

    /// A file that may be shown: in use, a base record.
    fn visible_inode(&self, ino: u64) -> Result<Arc<Inode>> {
        self.inode(ino)
    }

    /// Byte ranges of the clusters $Bitmap marks free (see `Filesystem::unused`), within the
    /// device; refused for a volume Windows did not close cleanly, whose $LogFile or memory
    /// image may still allocate from them.
    fn unused_ranges(&self) -> Result<Vec<Range<u64>>> {
        if let Some(why) = self.unclean {
            return Err(Error::Unsupported(format!(
                "ntfs: {why}: its free space is not trusted"
            )));
        }
        self.free_ranges()
    }

    /// Byte ranges of the clusters $Bitmap marks free, as it stands on the volume.
    fn free_ranges(&self) -> Result<Vec<Range<u64>>> {
        let cs = u64::from(self.boot.cluster_size);
        let clusters = self
            .boot
            .clusters()
            .min(self.dev.len().checked_div(cs).unwrap_or(0));
        let bm = self.inode(BITMAP_INO)?;
        let a = bm
            .data()
            .ok_or_else(|| Error::corrupt("$Bitmap", BITMAP_INO, 0, "no $DATA"))?;
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        // Bitmap bytes and cluster numbers below `clusters`, whose bytes fit a u64 (clusters
        // of the device): no saturation below.
        let mut off = 0u64;
        while off < clusters.div_ceil(8) {
            let n = self.read_attr(BITMAP_INO, a, off, &mut buf)?;
            if n == 0 {
                break;
            }
            for (byte, &b) in (off..).zip(&buf[..n]) {
                if b == 0xff {
                    continue;
                }
                let first = byte.saturating_mul(8);
                for (i, c) in (first..first.saturating_add(8)).enumerate() {
                    if c >= clusters {
                        break;
                    }
                    if b & (1 << i) != 0 {
                        continue;
                    }
                    let at = c.saturating_mul(cs);
                    match out.last_mut() {
                        Some(last) if last.end == at => last.end = at.saturating_add(cs),
                        _ => out.push(at..at.saturating_add(cs)),
                    }
                }
            }
            off = off.saturating_add(wide(n));
        }
        Ok(out)
    }

    fn compute_statfs(&self) -> Result<StatFs> {
        let clusters = self.boot.clusters();
        let bm = self.inode(BITMAP_INO)?;
        let a = bm
            .data()
            .ok_or_else(|| Error::corrupt("$Bitmap", BITMAP_INO, 0, "no $DATA"))?;
        let mut used = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let bytes = clusters.div_ceil(8);
        while off < bytes {
            let n = self.read_attr(BITMAP_INO, a, off, &mut buf)?;
            if n == 0 {
                break;
            }
            // Bytes below `bytes`, clusters below `clusters`: no saturation.
            for (byte, &b) in (off..).zip(&buf[..n]) {
                let first = byte.saturating_mul(8);
                // The bitmap's stream may run past the volume's clusters (fuzzing found it).
                let Some(left) = clusters.checked_sub(first).filter(|&l| l > 0) else {
                    break;
                };
                // Fewer than 8 clusters left: only their bits count.
                let bits = if left < 8 { b & !(u8::MAX << left) } else { b };
                used = used.saturating_add(u64::from(bits.count_ones()));
            }
            off = off.saturating_add(wide(n));
        }
        let free = clusters.saturating_sub(used);
        let mft = self.inode(MFT_INO)?;
        let mut free_records = 0u64;
        if let Some(bmp) = mft.find(attribute::BITMAP, &[]) {
            let v = self.read_whole(MFT_INO, bmp, 16 << 20)?;
            let used_records: u64 = v.iter().map(|b| u64::from(b.count_ones())).sum();
            free_records = self.mft_records.saturating_sub(used_records);
        }
        Ok(StatFs {
            bsize: self.boot.cluster_size,
            blocks: clusters,
            bfree: free,
            bavail: free,
            files: self.mft_records,
            ffree: free_records,
            namelen: u32::try_from(MAX_NAME_UNITS).unwrap_or(u32::MAX),
        })
    }

    /// The content of the named stream `name` (UTF-8) of `i`.
    fn stream(&self, i: &Inode, name: &[u8]) -> Result<Vec<u8>> {
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(Error::NoAttr);
        };
        let units: Vec<u16> = name.encode_utf16().collect();
        if units.is_empty() {
            return Err(Error::NoAttr);
        }
        let a = i.find(attribute::DATA, &units).ok_or(Error::NoAttr)?;
        if a.size() > MAX_XATTR_SIZE {
            return Err(Error::Unsupported(format!(
                "stream {name:?} of record {} is {} bytes, more than an xattr can hold",
                i.ino,
                a.size()
            )));
        }
        self.read_whole(i.ino, a, MAX_XATTR_SIZE)
    }
}

/// The Linux encoding of a device number (as st_rdev; glibc's makedev).
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

impl Filesystem for Ntfs {
    fn root_ino(&self) -> u64 {
        ROOT_INO
    }

    /// The names fls finds in `dir`'s index slack first, then the removed records naming
    /// `dir` (fls's order: a record listed both ways keeps the slack entry's type letter).
    fn deleted_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        let mut out = self.index_slack(dir)?;
        out.extend(self.removed_children(dir)?);
        Ok(out)
    }

    /// As `deleted_entries`: a removed directory's index still holds its names (fls counts
    /// every one of them as removed), in the slack and in the used part alike.
    fn removed_dir_entries(&self, dir: u64) -> Result<Vec<crate::fs::DeletedEntry>> {
        self.deleted_entries(dir)
    }

    fn orphans(&self, dir: u64, _errors: &mut Vec<String>) -> Result<Option<crate::fs::Orphans>> {
        Ok((dir == ROOT_INO).then(|| self.removed_orphans()))
    }

    fn removed_getattr(&self, ino: u64) -> Result<Attr> {
        self.removed_attr(ino)
    }

    fn info(&self) -> FsInfo {
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&self.boot.serial.to_le_bytes());
        let cs = u64::from(self.boot.cluster_size);
        FsInfo {
            kind: "ntfs",
            uuid,
            label: self.label.clone(),
            block_size: self.boot.cluster_size,
            size_bytes: self.boot.size_bytes(),
            free_bytes: self.statfs().map_or(0, |s| s.bfree.saturating_mul(cs)),
        }
    }

    fn unused(&self) -> Result<Vec<Range<u64>>> {
        self.unused_ranges()
    }

    fn touched(&self, ranges: &[Range<u64>]) -> Result<crate::fs::Touched> {
        self.touched_ranges(ranges)
    }

    fn owned(&self, inodes: &[u64]) -> Result<Vec<Range<u64>>> {
        self.owned_ranges(inodes)
    }

    fn statfs(&self) -> Result<StatFs> {
        if let Some(s) = self.statfs.get() {
            return Ok(s.clone());
        }
        let s = self.compute_statfs()?;
        Ok(self.statfs.get_or_init(|| s).clone())
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        let i = self.visible_inode(ino)?;
        let shape = self.shape(&i)?;
        Ok(self.attr_of(&i, &shape))
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Attr> {
        let d = self.visible_inode(dir)?;
        if !d.is_dir() {
            return Err(Error::NotDir(dir));
        }
        let ino = match name {
            b"." => dir,
            b".." => d.parent().unwrap_or(ROOT_INO),
            _ => {
                let Ok(s) = std::str::from_utf8(name) else {
                    return Err(Error::NotFound);
                };
                let units: Vec<u16> = s.encode_utf16().collect();
                if units.len() > MAX_NAME_UNITS {
                    return Err(Error::NameTooLong {
                        max: MAX_NAME_UNITS,
                    });
                }
                match self.find_name(&d, &units, false)? {
                    Some((mref, _)) => record::ref_number(mref),
                    None => return Err(Error::NotFound),
                }
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
        let d = self.visible_inode(dir)?;
        if !d.is_dir() {
            return Err(Error::NotDir(dir));
        }
        let list = self.listing(&d)?;
        let parent = if dir == ROOT_INO {
            ROOT_INO
        } else {
            d.parent().unwrap_or(ROOT_INO)
        };
        crate::fs::readdir_listed(
            dir,
            parent,
            &list,
            |l| DirEntry {
                ino: l.ino,
                name: l.name.clone(),
                kind: l.kind,
            },
            cookie,
            sink,
        );
        Ok(())
    }

    fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.visible_inode(ino)?;
        match self.shape(&i)? {
            Shape::File(None) => {}
            Shape::File(Some(reparse::TAG_WOF)) => {
                let r = self.reparse_data(&i)?.unwrap_or_default();
                return self.read_wof(&i, &r, off, buf);
            }
            Shape::File(Some(tag)) => {
                return Err(self.damage(
                    "reparse point",
                    ino,
                    None,
                    format!(
                        "its content is kept elsewhere (reparse tag 0x{tag:08x}{}), which ferry \
                         does not read",
                        match tag {
                            reparse::TAG_WOF => ": WOF/CompactOS compression",
                            reparse::TAG_DEDUP => ": data deduplication",
                            _ => "",
                        }
                    ),
                ))
            }
            Shape::Dir => return Err(Error::IsDir(ino)),
            _ => {
                return Err(Error::Unsupported(format!(
                    "record {ino} is not a regular file"
                )))
            }
        }
        match i.data() {
            Some(a) => self.read_attr(ino, a, off, buf),
            None => Ok(0),
        }
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.visible_inode(ino)?;
        match self.shape(&i)? {
            Shape::Symlink(t) => Ok(t),
            _ => Err(Error::NotSymlink(ino)),
        }
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let i = self.visible_inode(ino)?;
        Ok(i.streams()
            .map(|a| {
                let mut n = b"user.".to_vec();
                n.extend_from_slice(&filename::to_utf8(&a.name));
                n
            })
            .collect())
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let i = self.visible_inode(ino)?;
        match name {
            b"system.ntfs_attrib" => Ok(i.file_flags().to_le_bytes().to_vec()),
            b"system.ntfs_attrib_be" => Ok(i.file_flags().to_be_bytes().to_vec()),
            b"system.ntfs_reparse_data" => self.reparse_data(&i)?.ok_or(Error::NoAttr),
            _ => match name.strip_prefix(b"user.") {
                Some(s) => self.stream(&i, s),
                None => Err(Error::NoAttr),
            },
        }
    }
}
