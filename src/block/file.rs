//! A host file opened read-only, read with `pread` (no shared cursor, so FUSE threads read in
//! parallel) and bounds-checked against the length seen at open time. It holds qemu's reader
//! locks (`block::lock`) while open: a file another process writes is refused unless
//! force-shared, and writers elsewhere see it in use. An image can also be one member of an
//! archive (a disk inside an OVA's tar), read in place as a window of the archive file.
#![allow(unsafe_code)] // lseek for SEEK_DATA/SEEK_HOLE and the size of block devices; each block says why it is sound.

use super::error::{Error, Result};
use crate::bytes::wide;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Identity of a host file (device, inode): what chain loop detection compares, since the same
/// file can be reached under many names.
pub(crate) type FileId = (u64, u64);

#[derive(Debug)]
pub(crate) struct ImageFile {
    path: PathBuf,
    file: File,
    len: u64,
    /// Where the image starts in the host file: 0, or a member's data offset in an archive.
    base: u64,
    /// Set when the image is a member of an archive: it cannot name other files beside it.
    member: bool,
    id: FileId,
    _lock: Option<super::lock::Lock>,
    /// Set when the image is the output of a gzip stream that `file` holds (read through
    /// its index; `len` is then the output's length).
    inflated: Option<std::sync::Arc<super::gzip::Gzip>>,
}

impl ImageFile {
    /// Opens `path` read-only, with the reader's locks. Block devices work too: their length
    /// comes from seeking to the end.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // SAFETY: lseek on a valid fd owned by `file`; no memory is touched.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(open_err(io::Error::last_os_error()));
            }
            // Not negative: checked above.
            end.unsigned_abs()
        };
        let lock = super::lock::acquire(&file, path, super::lock::Access::Read)?;
        Ok(ImageFile {
            path: path.to_path_buf(),
            file,
            len,
            base: 0,
            member: false,
            id: (meta.dev(), meta.ino()),
            _lock: lock,
            inflated: None,
        })
    }

    /// Opens the `len` bytes at `offset` of the archive at `archive` as an image of their own,
    /// named `archive/name` in messages. The window must lie inside the file.
    pub(crate) fn open_member(archive: &Path, name: &str, offset: u64, len: u64) -> Result<Self> {
        let whole = Self::open(archive)?;
        match offset.checked_add(len) {
            Some(end) if end <= whole.len => {}
            _ => return Err(whole.truncated("archive member", offset, len)),
        }
        Ok(ImageFile {
            path: archive.join(name),
            len,
            base: offset,
            member: true,
            ..whole
        })
    }

    /// The output of the gzip stream `packed` holds, as an image of its own (read in place
    /// through an index, see `block::gzip`); it cannot name other files beside it either.
    pub(crate) fn open_gzip(packed: ImageFile) -> Result<Self> {
        let file = packed.file.try_clone().map_err(|source| Error::Open {
            path: packed.path.clone(),
            source,
        })?;
        let (path, id) = (packed.path.clone(), packed.id);
        let g = super::gzip::Gzip::open(packed)?;
        Ok(ImageFile {
            path,
            file,
            len: g.len(),
            base: 0,
            member: true,
            id,
            _lock: None,
            inflated: Some(std::sync::Arc::new(g)),
        })
    }

    /// Whether this image is a member of an archive (see `open_member`).
    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes the host has allocated to the file (st_blocks), when the image is the whole
    /// file; `None` for an archive member or a decompressed stream, whose allocation the
    /// host cannot tell apart.
    pub(crate) fn allocated_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        if self.member || self.base != 0 || self.inflated.is_some() {
            return None;
        }
        self.file
            .metadata()
            .ok()
            .map(|m| m.blocks().saturating_mul(512))
    }

    pub(crate) fn id(&self) -> FileId {
        self.id
    }

    /// Where the image starts in the host file (see `base`).
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The host file's modification time in nanoseconds (0 when unknown).
    pub(crate) fn mtime_ns(&self) -> i128 {
        self.file.metadata().map_or(0, |m| {
            // i64 seconds times 10^9 plus nanoseconds is far inside i128.
            i128::from(m.mtime())
                .saturating_mul(1_000_000_000)
                .saturating_add(i128::from(m.mtime_nsec()))
        })
    }

    /// Bytes the file occupies on the host (st_blocks), like `qemu-img info`'s "disk size".
    pub(crate) fn disk_usage(&self) -> u64 {
        if let Some(g) = &self.inflated {
            return g.source().disk_usage();
        }
        if self.member {
            return self.len;
        }
        self.file
            .metadata()
            .map(|m| m.blocks().saturating_mul(512))
            .unwrap_or(0)
    }

    fn truncated(&self, what: &'static str, offset: u64, len: u64) -> Error {
        Error::Truncated {
            path: self.path.clone(),
            what,
            offset,
            len,
            file_len: self.len,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`; any part past the end of the file is an error
    /// naming `what` (the structure being read).
    pub(crate) fn read_exact_at(
        &self,
        buf: &mut [u8],
        offset: u64,
        what: &'static str,
    ) -> Result<()> {
        let len = wide(buf.len());
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => return Err(self.truncated(what, offset, len)),
        }
        self.pread_full(buf, offset, what)
    }

    /// Asks the host to read `[offset, offset+len)` into its page cache in the background
    /// (posix_fadvise WILLNEED, which only queues the reads), clipped to the image. A hint:
    /// errors are ignored, and an image read through a gzip index has no host range to name.
    pub(crate) fn will_need(&self, offset: u64, len: u64) {
        // A zero length would ask for everything to the end of the file.
        if self.inflated.is_some() || offset >= self.len || len == 0 {
            return;
        }
        let len = len.min(self.len.saturating_sub(offset));
        // base + offset + len lies inside the host file (clipped above), below i64::MAX
        // for any file the host can hold; a value that does not fit is skipped.
        let (Ok(at), Ok(n)) = (
            libc::off_t::try_from(self.base.saturating_add(offset)),
            libc::off_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: posix_fadvise on a valid fd owned by `self.file`; no memory is touched.
        unsafe {
            libc::posix_fadvise(self.file.as_raw_fd(), at, n, libc::POSIX_FADV_WILLNEED);
        }
    }

    /// Reads `buf.len()` bytes at `offset`, filling whatever lies past the end of the file with
    /// zeros (as qemu does for the tail cluster of a file that was not extended to a cluster
    /// boundary). `offset` itself must lie inside the file.
    pub(crate) fn read_zero_padded(
        &self,
        buf: &mut [u8],
        offset: u64,
        what: &'static str,
    ) -> Result<()> {
        let left = match self.len.checked_sub(offset) {
            Some(l) if l > 0 || buf.is_empty() => l,
            _ => return Err(self.truncated(what, offset, wide(buf.len()))),
        };
        let avail = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let (head, tail) = buf.split_at_mut(avail);
        self.pread_full(head, offset, what)?;
        tail.fill(0);
        Ok(())
    }

    fn pread_full(&self, mut buf: &mut [u8], mut offset: u64, what: &'static str) -> Result<()> {
        if let Some(g) = &self.inflated {
            return g.read_at(buf, offset);
        }
        while !buf.is_empty() {
            // base + offset: a place inside the host file (checked by the callers).
            match self.file.read_at(buf, self.base.saturating_add(offset)) {
                Ok(0) => {
                    // The file shrank under us.
                    return Err(self.truncated(what, offset, wide(buf.len())));
                }
                Ok(n) => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    offset = offset.saturating_add(wide(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        what,
                        offset,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The data (non-hole) ranges of `[offset, offset+len)` per SEEK_DATA/SEEK_HOLE, clipped to the
    /// file. Where the host cannot tell (block devices, old filesystems), everything is data.
    pub(crate) fn data_ranges(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset.saturating_add(len).min(self.len);
        if self.inflated.is_some() {
            // The output has no holes the host knows of.
            return if offset < end {
                vec![(offset, end.saturating_sub(offset))]
            } else {
                Vec::new()
            };
        }
        let mut out = Vec::new();
        let fd = self.file.as_raw_fd();
        let base = self.base;
        // Host file positions: the image lies inside the host file, whose size is an off_t.
        let (offset, end) = (offset.saturating_add(base), end.saturating_add(base));
        let seek = |pos: u64, whence| -> Option<u64> {
            let pos = libc::off_t::try_from(pos).ok()?;
            // SAFETY: lseek on a valid fd; no memory is touched.
            let r = unsafe { libc::lseek(fd, pos, whence) };
            u64::try_from(r).ok()
        };
        let mut pos = offset;
        while pos < end {
            let Some(data) = seek(pos, libc::SEEK_DATA) else {
                if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                    break; // no data after pos
                }
                out.push((pos, end.saturating_sub(pos)));
                break;
            };
            if data >= end {
                break;
            }
            let hole = seek(data, libc::SEEK_HOLE).map_or(end, |h| h.min(end));
            if hole <= data {
                out.push((data, end.saturating_sub(data)));
                break;
            }
            out.push((data, hole.saturating_sub(data)));
            pos = hole;
        }
        // Every range starts at or after `offset`, which is base or more.
        out.iter_mut().for_each(|r| r.0 = r.0.saturating_sub(base));
        out
    }
}

/// Empties `file`, a new output that its caller holds open (and locked) for the whole write,
/// through a second, short-lived descriptor of the same file. ext4 (`auto_da_alloc`) marks a
/// file truncated to size 0 and, when the descriptor that truncated it is closed, allocates
/// and starts writing back everything written since: with the output's own descriptor that
/// put 1.4 s into the close at the end of a 4 GiB raw -> qcow2 convert (2.4 GiB of data, on a
/// copy of 2.9 s), which qemu-img, truncating through a descriptor of its own, never pays.
/// Here the short-lived descriptor's close finds nothing written yet. Falls back to `file`
/// itself when /proc is not there.
pub(crate) fn truncate_to_empty(file: &File) -> io::Result<()> {
    let own = format!("/proc/self/fd/{}", file.as_raw_fd());
    match std::fs::OpenOptions::new().write(true).open(own) {
        Ok(other) => other.set_len(0),
        Err(_) => file.set_len(0),
    }
}
