//! [`FsFiles`]: the fix engine's and inspection's [`FileTree`] over any [`Filesystem`] (one
//! filesystem, or a whole [`super::tree::Tree`]), read in process with no FUSE. Paths resolve
//! as in [`crate::fix::tree`] (chroot-style, at most 40 links). Writing is refused until the
//! filesystems have a write half.

use crate::fix::error::{FixError, Result};
use crate::fix::tree::{resolve_with, Attrs, FileTree, Kind, Meta, Probe};
use crate::fs::{path, Attr, FileType, Filesystem, FsError};
use std::io;

/// A [`FileTree`] reading a [`Filesystem`].
pub struct FsFiles<'a> {
    fs: &'a dyn Filesystem,
}

fn fix_error(path: &str, e: FsError) -> FixError {
    let kind = match e {
        FsError::NotFound => io::ErrorKind::NotFound,
        FsError::NotDir(_) => io::ErrorKind::NotADirectory,
        FsError::ReadOnly => io::ErrorKind::ReadOnlyFilesystem,
        _ => io::ErrorKind::Other,
    };
    FixError::Io {
        path: path.to_string(),
        source: io::Error::new(kind, e),
    }
}

fn read_only(path: &str) -> FixError {
    fix_error(path, FsError::ReadOnly)
}

impl<'a> FsFiles<'a> {
    pub fn new(fs: &'a dyn Filesystem) -> Self {
        FsFiles { fs }
    }

    /// The inode at a canonical path (no symlink among its parents), the final component
    /// not followed; None if it does not exist.
    fn walk(&self, canonical: &str) -> Result<Option<Attr>> {
        match path::resolve(self.fs, canonical.as_bytes(), false) {
            Ok(a) => Ok(Some(a)),
            Err(FsError::NotFound) | Err(FsError::NotDir(_)) => Ok(None),
            Err(e) => Err(fix_error(canonical, e)),
        }
    }

    fn probe(&self, canonical: &str) -> Result<Probe> {
        Ok(match self.walk(canonical)? {
            None => Probe::Missing,
            Some(a) => match a.kind {
                FileType::Directory => Probe::Dir,
                FileType::Symlink => Probe::Link(self.link_text(&a, canonical)?),
                _ => Probe::Other,
            },
        })
    }

    fn link_text(&self, a: &Attr, path: &str) -> Result<String> {
        let t = self.fs.readlink(a.ino).map_err(|e| fix_error(path, e))?;
        String::from_utf8(t).map_err(|_| FixError::NonUtf8Link {
            path: path.to_string(),
        })
    }

    /// `path` with its parents resolved; the final component as written.
    fn canonical(&self, path: &str, follow_last: bool) -> Result<String> {
        resolve_with(|p| self.probe(p), path, follow_last)
    }

    /// The regular file at `path` (a final symlink is refused: callers resolve first).
    fn regular(&self, path: &str) -> Result<(String, Attr)> {
        let (c, a) = self.existing(path, false)?;
        match a.kind {
            FileType::RegularFile => Ok((c, a)),
            FileType::Symlink => Err(FixError::WrongKind {
                path: c,
                what: "is a symlink (resolve it first)",
            }),
            _ => Err(FixError::WrongKind {
                path: c,
                what: "not a regular file",
            }),
        }
    }

    /// The first `len` bytes of the file `a` (fewer if it ends sooner); `len` is bounded by
    /// the caller's limit.
    fn read_prefix(&self, path: &str, a: &Attr, len: u64) -> Result<Vec<u8>> {
        // OK: len is at most a caller's limit, which is small.
        let mut data = vec![0u8; len as usize];
        let mut done = 0;
        while done < data.len() {
            let n = self
                .fs
                .read(a.ino, done as u64, &mut data[done..])
                .map_err(|e| fix_error(path, e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        data.truncate(done);
        Ok(data)
    }

    fn existing(&self, path: &str, follow_last: bool) -> Result<(String, Attr)> {
        let c = self.canonical(path, follow_last)?;
        match self.walk(&c)? {
            Some(a) => Ok((c, a)),
            None => Err(fix_error(&c, FsError::NotFound)),
        }
    }
}

fn kind(k: FileType) -> Kind {
    match k {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl FileTree for FsFiles<'_> {
    fn lstat(&self, path: &str) -> Result<Option<Meta>> {
        let c = self.canonical(path, false)?;
        Ok(self.walk(&c)?.map(|a| Meta {
            kind: kind(a.kind),
            attrs: Attrs {
                mode: a.mode & 0o7777,
                uid: a.uid,
                gid: a.gid,
            },
            size: a.size,
        }))
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let (c, a) = self.existing(path, false)?;
        if a.kind != FileType::Symlink {
            return Err(FixError::WrongKind {
                path: c,
                what: "not a symlink",
            });
        }
        self.link_text(&a, &c)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let (c, a) = self.regular(path)?;
        if a.size > limit {
            return Err(FixError::TooLarge {
                path: c,
                size: a.size,
                limit,
            });
        }
        self.read_prefix(&c, &a, a.size)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let (c, a) = self.regular(path)?;
        self.read_prefix(&c, &a, a.size.min(len as u64))
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let (c, a) = self.existing(path, true)?;
        if a.kind != FileType::Directory {
            return Err(FixError::WrongKind {
                path: c,
                what: "not a directory",
            });
        }
        let mut names: Vec<String> = path::list(self.fs, a.ino)
            .map_err(|e| fix_error(&c, e))?
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn write(&self, path: &str, _data: &[u8], _attrs: Attrs) -> Result<()> {
        Err(read_only(path))
    }

    fn set_attrs(&self, path: &str, _attrs: Attrs) -> Result<()> {
        Err(read_only(path))
    }

    fn symlink(&self, _target: &str, path: &str) -> Result<()> {
        Err(read_only(path))
    }

    fn remove(&self, path: &str) -> Result<()> {
        Err(read_only(path))
    }

    fn create_dir_all(&self, path: &str, _mode: u32) -> Result<()> {
        Err(read_only(path))
    }
}
