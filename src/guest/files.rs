//! [`FsFiles`]: the fix engine's and inspection's [`FileTree`] over any [`Filesystem`] (one
//! filesystem, or a whole [`super::tree::Tree`]), read in process with no FUSE. Paths resolve
//! as in [`crate::fs::files`] (chroot-style, at most 40 links). Writes go through the
//! filesystem's write half (a read-only one answers EROFS); a file is replaced by writing a
//! temporary file beside it and renaming it over, as `HostTree` does, so a reader never sees
//! half a file.

use crate::bytes::wide;
use crate::fs::files::{
    self, child, resolve_with, split_parent, Attrs, FileTree, Kind, Meta, Probe, Result,
};
use crate::fs::{path, Attr, Error, FileType, Filesystem, NewInode, SetAttr};

/// A [`FileTree`] reading a [`Filesystem`].
pub struct FsFiles<'a> {
    fs: &'a dyn Filesystem,
}

/// Bytes handed to one `Filesystem::write` when a file is written whole.
const WRITE_CHUNK: usize = 1 << 20;
/// Temporary names tried before giving up (each is taken only by a leftover of an earlier run).
const TEMP_TRIES: u32 = 100;

/// A filesystem without extended attributes has none to copy.
fn no_xattrs(e: Error) -> std::result::Result<Vec<Vec<u8>>, Error> {
    match e {
        Error::NotSupported => Ok(Vec::new()),
        e => Err(e),
    }
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
            Err(Error::NotFound) | Err(Error::NotDir(_)) => Ok(None),
            Err(e) => Err(files::Error::fs(canonical, e)),
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
        let t = self
            .fs
            .readlink(a.ino)
            .map_err(|e| files::Error::fs(path, e))?;
        String::from_utf8(t).map_err(|_| files::Error::NonUtf8Link {
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
            FileType::Symlink => Err(files::Error::WrongKind {
                path: c,
                what: "is a symlink (resolve it first)",
            }),
            _ => Err(files::Error::WrongKind {
                path: c,
                what: "not a regular file",
            }),
        }
    }

    /// The first `len` bytes of the file `a` (fewer if it ends sooner); `len` is bounded by
    /// the caller's limit.
    fn read_prefix(&self, path: &str, a: &Attr, len: u64) -> Result<Vec<u8>> {
        // len is at most a caller's limit, which is small.
        let mut data = vec![0u8; usize::try_from(len).unwrap_or_default()];
        let mut done = 0;
        while let Some(rest) = data.get_mut(done..).filter(|r| !r.is_empty()) {
            let n = self
                .fs
                .read(a.ino, wide(done), rest)
                .map_err(|e| files::Error::fs(path, e))?;
            if n == 0 {
                break;
            }
            // A read returns at most what was asked.
            done = done.saturating_add(n.min(rest.len()));
        }
        data.truncate(done);
        Ok(data)
    }

    /// The canonical `path` (its final component not followed), the inode of the directory
    /// holding it, and its name: where a file is created or replaced.
    fn parent_of(&self, path: &str) -> Result<(String, u64, String)> {
        let c = self.canonical(path, false)?;
        let Some((parent, name)) = split_parent(&c) else {
            return Err(files::Error::WrongKind {
                path: c,
                what: "is the root directory",
            });
        };
        let (parent, name) = (parent.to_string(), name.to_string());
        let dir = match self.walk(&parent)? {
            Some(a) if a.kind == FileType::Directory => a.ino,
            Some(_) => {
                return Err(files::Error::WrongKind {
                    path: parent,
                    what: "not a directory",
                })
            }
            None => return Err(files::Error::fs(&parent, Error::NotFound)),
        };
        Ok((c, dir, name))
    }

    /// A name for a temporary file in `dir` beside `name`, not in use.
    fn temp_name(&self, dir: u64, name: &str, path: &str) -> Result<Vec<u8>> {
        for n in 0..TEMP_TRIES {
            let t = format!(".{name}.ferry-{}-{n}", std::process::id());
            let t = if t.len() > 255 {
                format!(".ferry-{}-{n}", std::process::id())
            } else {
                t
            };
            match self.fs.lookup(dir, t.as_bytes()) {
                Err(Error::NotFound) => return Ok(t.into_bytes()),
                Ok(_) => continue,
                Err(e) => return Err(files::Error::fs(path, e)),
            }
        }
        Err(files::Error::fs(path, Error::Exists))
    }

    fn existing(&self, path: &str, follow_last: bool) -> Result<(String, Attr)> {
        let c = self.canonical(path, follow_last)?;
        match self.walk(&c)? {
            Some(a) => Ok((c, a)),
            None => Err(files::Error::fs(&c, Error::NotFound)),
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
            return Err(files::Error::WrongKind {
                path: c,
                what: "not a symlink",
            });
        }
        self.link_text(&a, &c)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let (c, a) = self.regular(path)?;
        if a.size > limit {
            return Err(files::Error::TooLarge {
                path: c,
                size: a.size,
                limit,
            });
        }
        self.read_prefix(&c, &a, a.size)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let (c, a) = self.regular(path)?;
        self.read_prefix(&c, &a, a.size.min(wide(len)))
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let (c, a) = self.existing(path, true)?;
        if a.kind != FileType::Directory {
            return Err(files::Error::WrongKind {
                path: c,
                what: "not a directory",
            });
        }
        let mut names: Vec<String> = path::list(self.fs, a.ino)
            .map_err(|e| files::Error::fs(&c, e))?
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn write(&self, path: &str, data: &[u8], attrs: Attrs) -> Result<()> {
        let (c, dir, name) = self.parent_of(path)?;
        let old = self.walk(&c)?;
        if let Some(o) = &old {
            if o.kind == FileType::Directory {
                return Err(files::Error::WrongKind {
                    path: c,
                    what: "is a directory",
                });
            }
        }
        let new = NewInode {
            mode: libc::S_IFREG | (attrs.mode & 0o7777),
            uid: attrs.uid,
            gid: attrs.gid,
            rdev: 0,
        };
        let tmp = self.temp_name(dir, &name, &c)?;
        let fail = |e| files::Error::fs(&c, e);
        let a = self.fs.create(dir, &tmp, &new).map_err(fail)?;
        let filled = (|| {
            let mut done = 0;
            while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
                let chunk = rest.get(..WRITE_CHUNK).unwrap_or(rest);
                let n = self.fs.write(a.ino, wide(done), chunk)?;
                if n == 0 {
                    return Err(Error::NoSpace);
                }
                // A write takes at most what it was given.
                done = done.saturating_add(n.min(chunk.len()));
            }
            // The label (security.selinux) and any other attribute of the file replaced.
            if let Some(o) = old.as_ref().filter(|o| o.kind == FileType::RegularFile) {
                for n in self.fs.listxattr(o.ino).or_else(no_xattrs)? {
                    let v = self.fs.getxattr(o.ino, &n)?;
                    self.fs.setxattr(a.ino, &n, &v)?;
                }
            }
            self.fs.rename(dir, &tmp, dir, name.as_bytes())
        })();
        if let Err(e) = filled {
            let _ = self.fs.unlink(dir, &tmp);
            return Err(fail(e));
        }
        Ok(())
    }

    fn set_attrs(&self, path: &str, attrs: Attrs) -> Result<()> {
        let (c, a) = self.regular(path)?;
        let changes = SetAttr {
            mode: Some(attrs.mode & 0o7777),
            uid: Some(attrs.uid),
            gid: Some(attrs.gid),
            ..SetAttr::default()
        };
        self.fs
            .setattr(a.ino, &changes)
            .map(drop)
            .map_err(|e| files::Error::fs(&c, e))
    }

    fn symlink(&self, target: &str, path: &str) -> Result<()> {
        let (c, dir, name) = self.parent_of(path)?;
        if let Some(o) = self.walk(&c)? {
            if o.kind == FileType::Directory {
                return Err(files::Error::WrongKind {
                    path: c,
                    what: "is a directory",
                });
            }
        }
        let new = NewInode {
            mode: libc::S_IFLNK | 0o777,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        let tmp = self.temp_name(dir, &name, &c)?;
        let fail = |e| files::Error::fs(&c, e);
        self.fs
            .symlink(dir, &tmp, target.as_bytes(), &new)
            .map_err(fail)?;
        if let Err(e) = self.fs.rename(dir, &tmp, dir, name.as_bytes()) {
            let _ = self.fs.unlink(dir, &tmp);
            return Err(fail(e));
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<()> {
        let (c, dir, name) = self.parent_of(path)?;
        match self.walk(&c)? {
            None => Err(files::Error::fs(&c, Error::NotFound)),
            Some(a) if a.kind == FileType::Directory => Err(files::Error::WrongKind {
                path: c,
                what: "is a directory",
            }),
            Some(_) => self
                .fs
                .unlink(dir, name.as_bytes())
                .map_err(|e| files::Error::fs(&c, e)),
        }
    }

    fn create_dir_all(&self, path: &str, mode: u32) -> Result<()> {
        let c = self.canonical(path, true)?;
        let mut dir = self.fs.root_ino();
        let mut here = String::new();
        for name in c.split('/').filter(|n| !n.is_empty()) {
            here = child(if here.is_empty() { "/" } else { &here }, name);
            let a = match self.fs.lookup(dir, name.as_bytes()) {
                Ok(a) => a,
                Err(Error::NotFound) => {
                    let new = NewInode {
                        mode: libc::S_IFDIR | (mode & 0o7777),
                        uid: 0,
                        gid: 0,
                        rdev: 0,
                    };
                    self.fs
                        .create(dir, name.as_bytes(), &new)
                        .map_err(|e| files::Error::fs(&here, e))?
                }
                Err(e) => return Err(files::Error::fs(&here, e)),
            };
            if a.kind != FileType::Directory {
                return Err(files::Error::WrongKind {
                    path: here,
                    what: "not a directory",
                });
            }
            dir = a.ino;
        }
        Ok(())
    }
}
