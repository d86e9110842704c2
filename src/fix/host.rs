//! `HostTree`: a guest tree in a host directory (a ferry mount or an unpacked guest).
//!
//! Each path is resolved inside the root with [`resolve_with`] before any host call, so a
//! guest symlink (absolute or full of `..`) never reaches a host file outside the root. The
//! final component of every operation is opened with `O_NOFOLLOW` or acted on with a call
//! that does not follow symlinks (rename, unlink, `AT_SYMLINK_NOFOLLOW`), so a final symlink
//! swapped in after resolution is refused rather than followed. The parents are trusted not
//! to change between resolution and use: nothing else writes the tree while ferry fixes it.
#![allow(unsafe_code)] // llistxattr/lgetxattr on the host directory; each block says why it is sound.

use crate::bytes::{upto, wide};
use crate::fs::files::{
    self, resolve_with, split_parent, Attrs, FileTree, Kind, Meta, Probe, Result,
};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A guest tree rooted at a host directory.
#[derive(Debug, Clone)]
pub struct HostTree {
    root: PathBuf,
}

/// Extended attributes are copied one by one; a file with more than this much in names or
/// one value larger than this is unusual enough to refuse.
const XATTR_MAX: usize = 64 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl HostTree {
    /// Opens the host directory `root` (canonicalised: a symlink to the tree is fine).
    pub fn new(root: &Path) -> Result<Self> {
        let name = root.display().to_string();
        let root = fs::canonicalize(root).map_err(|e| files::Error::io(&name, e))?;
        let meta = fs::metadata(&root).map_err(|e| files::Error::io(&name, e))?;
        if !meta.is_dir() {
            return Err(files::Error::WrongKind {
                path: name,
                what: "not a directory",
            });
        }
        Ok(HostTree { root })
    }

    /// The host directory holding the guest's `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of a canonical guest path.
    fn host(&self, canonical: &str) -> PathBuf {
        self.root.join(canonical.trim_start_matches('/'))
    }

    /// Looks up a canonical path directly (its parents hold no symlink).
    fn probe(&self, canonical: &str) -> Result<Probe> {
        let host = self.host(canonical);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => Ok(Probe::Link(link_text(&host, canonical)?)),
            Ok(m) if m.is_dir() => Ok(Probe::Dir),
            Ok(_) => Ok(Probe::Other),
            Err(e) if is_missing(&e) => Ok(Probe::Missing),
            Err(e) => Err(files::Error::io(canonical, e)),
        }
    }

    /// Resolves the parents of `path` (not its final component): the canonical path whose
    /// final component is a plain name.
    fn resolve_parent(&self, path: &str) -> Result<(String, String)> {
        let canonical = resolve_with(|p| self.probe(p), path, false)?;
        match split_parent(&canonical) {
            Some((parent, name)) => Ok((parent.to_string(), name.to_string())),
            None => Err(files::Error::WrongKind {
                path: path.to_string(),
                what: "is the root directory",
            }),
        }
    }

    /// Host path of `path` with its parents resolved inside the root.
    fn host_nofollow(&self, path: &str) -> Result<(PathBuf, String)> {
        let (parent, name) = self.resolve_parent(path)?;
        let canonical = crate::fs::files::child(&parent, &name);
        Ok((self.host(&canonical), canonical))
    }

    /// Opens the regular file at `path` (a final symlink refused) for reading: the file, its
    /// canonical guest path and its size.
    fn open_file(&self, path: &str) -> Result<(fs::File, String, u64)> {
        let (host, canonical) = self.host_nofollow(path)?;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&host)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => files::Error::WrongKind {
                    path: canonical.clone(),
                    what: "is a symlink (resolve it first)",
                },
                _ => files::Error::io(&canonical, e),
            })?;
        let m = f.metadata().map_err(|e| files::Error::io(&canonical, e))?;
        if !m.is_file() {
            return Err(files::Error::WrongKind {
                path: canonical,
                what: "not a regular file",
            });
        }
        Ok((f, canonical, m.len()))
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

fn link_text(host: &Path, guest: &str) -> Result<String> {
    let t = fs::read_link(host).map_err(|e| files::Error::io(guest, e))?;
    t.into_os_string()
        .into_string()
        .map_err(|_| files::Error::NonUtf8Link {
            path: guest.to_string(),
        })
}

fn meta_of(m: &fs::Metadata) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    Meta {
        kind,
        attrs: Attrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        },
        size: m.len(),
    }
}

fn cstr(p: &Path, guest: &str) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| files::Error::BadPath {
        path: guest.to_string(),
    })
}

fn last_os_error(guest: &str) -> files::Error {
    files::Error::io(guest, io::Error::last_os_error())
}

/// Reads every extended attribute of `path` (not following a symlink).
fn read_xattrs(path: &CString, guest: &str) -> Result<Vec<(CString, Vec<u8>)>> {
    // SAFETY: a null buffer of size 0 asks for the needed size.
    let n = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    // Negative: the call failed.
    let Ok(n) = usize::try_from(n) else {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(files::Error::io(guest, e)),
        };
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > XATTR_MAX {
        return Err(files::Error::WrongKind {
            path: guest.to_string(),
            what: "too many extended attributes to keep",
        });
    }
    let mut names = vec![0u8; n];
    // SAFETY: `names` has `n` writable bytes.
    let got = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), n) };
    names.truncate(usize::try_from(got).map_err(|_| last_os_error(guest))?);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).expect("split on NUL"); // OK: names are split at NUL
                                                               // SAFETY: size query with a null buffer.
        let len =
            unsafe { libc::lgetxattr(path.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        let len = usize::try_from(len).map_err(|_| last_os_error(guest))?;
        if len > XATTR_MAX {
            return Err(files::Error::WrongKind {
                path: guest.to_string(),
                what: "extended attribute too large to keep",
            });
        }
        let mut value = vec![0u8; len];
        // SAFETY: `value` has `len` writable bytes.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                len,
            )
        };
        value.truncate(usize::try_from(got).map_err(|_| last_os_error(guest))?);
        out.push((cname, value));
    }
    Ok(out)
}

fn write_xattrs(f: &fs::File, attrs: &[(CString, Vec<u8>)], guest: &str) -> Result<()> {
    for (name, value) in attrs {
        // SAFETY: valid fd, NUL-terminated name, buffer of value.len() bytes.
        let r = unsafe {
            libc::fsetxattr(
                f.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            return Err(files::Error::io(
                &format!("{guest} (xattr {})", name.to_string_lossy()),
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn fchown(f: &fs::File, attrs: Attrs, guest: &str) -> Result<()> {
    let m = f.metadata().map_err(|e| files::Error::io(guest, e))?;
    if m.uid() != attrs.uid || m.gid() != attrs.gid {
        // SAFETY: valid fd.
        if unsafe { libc::fchown(f.as_raw_fd(), attrs.uid, attrs.gid) } != 0 {
            return Err(last_os_error(guest));
        }
    }
    Ok(())
}

/// A temporary name next to `name` in the same directory, so `rename` is atomic.
fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.ferry-{}-{n}", std::process::id())
}

impl FileTree for HostTree {
    fn lstat(&self, path: &str) -> Result<Option<Meta>> {
        let (host, canonical) = match self.host_nofollow(path) {
            Ok(x) => x,
            Err(files::Error::WrongKind { .. }) => (self.root.clone(), "/".to_string()),
            Err(e) => return Err(e),
        };
        match fs::symlink_metadata(&host) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(files::Error::io(&canonical, e)),
        }
    }

    fn read_link(&self, path: &str) -> Result<String> {
        let (host, canonical) = self.host_nofollow(path)?;
        link_text(&host, &canonical)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let (f, canonical, size) = self.open_file(path)?;
        if size > limit {
            return Err(files::Error::TooLarge {
                path: canonical,
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(upto(size, usize::MAX));
        // Take one byte past the limit so a file that grew is caught too (no limit: all).
        f.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| files::Error::io(&canonical, e))?;
        if wide(data.len()) > limit {
            return Err(files::Error::TooLarge {
                path: canonical,
                size: wide(data.len()),
                limit,
            });
        }
        Ok(data)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let (f, canonical, _) = self.open_file(path)?;
        let mut data = Vec::with_capacity(len.min(1 << 20));
        f.take(wide(len))
            .read_to_end(&mut data)
            .map_err(|e| files::Error::io(&canonical, e))?;
        Ok(data)
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let canonical = self.resolve(path)?;
        let host = self.host(&canonical);
        let rd = fs::read_dir(&host).map_err(|e| files::Error::io(&canonical, e))?;
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| files::Error::io(&canonical, e))?;
            // Names that are not UTF-8 cannot be named by a rule; leave them alone.
            if let Ok(n) = ent.file_name().into_string() {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    fn write(&self, path: &str, data: &[u8], attrs: Attrs) -> Result<()> {
        let (parent, name) = self.resolve_parent(path)?;
        let canonical = crate::fs::files::child(&parent, &name);
        let host = self.host(&canonical);
        let keep = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() => read_xattrs(&cstr(&host, &canonical)?, &canonical)?,
            Ok(m) if m.is_dir() => {
                return Err(files::Error::WrongKind {
                    path: canonical,
                    what: "is a directory",
                })
            }
            Ok(_) => Vec::new(),
            Err(e) if is_missing(&e) => Vec::new(),
            Err(e) => return Err(files::Error::io(&canonical, e)),
        };
        let tmp = self.host(&parent).join(temp_name(&name));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(|e| files::Error::io(&canonical, e))?;
            f.write_all(data)
                .map_err(|e| files::Error::io(&canonical, e))?;
            fchown(&f, attrs, &canonical)?;
            // After chown, which clears set-id bits.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(attrs.mode))
                .map_err(|e| files::Error::io(&canonical, e))?;
            write_xattrs(&f, &keep, &canonical)?;
            f.sync_all().map_err(|e| files::Error::io(&canonical, e))?;
            fs::rename(&tmp, &host).map_err(|e| files::Error::io(&canonical, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn set_attrs(&self, path: &str, attrs: Attrs) -> Result<()> {
        let (host, canonical) = self.host_nofollow(path)?;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&host)
            .map_err(|e| files::Error::io(&canonical, e))?;
        if !f
            .metadata()
            .map_err(|e| files::Error::io(&canonical, e))?
            .is_file()
        {
            return Err(files::Error::WrongKind {
                path: canonical,
                what: "not a regular file",
            });
        }
        fchown(&f, attrs, &canonical)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(attrs.mode))
            .map_err(|e| files::Error::io(&canonical, e))
    }

    fn symlink(&self, target: &str, path: &str) -> Result<()> {
        let (parent, name) = self.resolve_parent(path)?;
        let canonical = crate::fs::files::child(&parent, &name);
        let host = self.host(&canonical);
        if let Ok(m) = fs::symlink_metadata(&host) {
            if m.is_dir() {
                return Err(files::Error::WrongKind {
                    path: canonical,
                    what: "is a directory",
                });
            }
        }
        let tmp = self.host(&parent).join(temp_name(&name));
        std::os::unix::fs::symlink(OsStr::new(target), &tmp)
            .map_err(|e| files::Error::io(&canonical, e))?;
        if let Err(e) = fs::rename(&tmp, &host) {
            let _ = fs::remove_file(&tmp);
            return Err(files::Error::io(&canonical, e));
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<()> {
        let (host, canonical) = self.host_nofollow(path)?;
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Err(files::Error::WrongKind {
                path: canonical,
                what: "is a directory (ferry removes files and symlinks only)",
            }),
            Ok(_) => fs::remove_file(&host).map_err(|e| files::Error::io(&canonical, e)),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(files::Error::io(&canonical, e)),
        }
    }

    fn create_dir_all(&self, path: &str, mode: u32) -> Result<()> {
        let canonical = self.resolve(path)?;
        let mut sofar = String::new();
        for c in canonical.split('/').filter(|c| !c.is_empty()) {
            sofar.push('/');
            sofar.push_str(c);
            match self.probe(&sofar)? {
                Probe::Dir => {}
                Probe::Missing => {
                    let host = self.host(&sofar);
                    fs::DirBuilder::new()
                        .mode(mode)
                        .create(&host)
                        .map_err(|e| files::Error::io(&sofar, e))?;
                }
                _ => {
                    return Err(files::Error::WrongKind {
                        path: sofar,
                        what: "exists and is not a directory",
                    })
                }
            }
        }
        Ok(())
    }

    fn resolve(&self, path: &str) -> Result<String> {
        resolve_with(|p| self.probe(p), path, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_without_limit() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"data\n").unwrap();
        let t = HostTree::new(d.path()).unwrap();
        assert_eq!(t.read("/f", u64::MAX).unwrap(), b"data\n");
        assert_eq!(t.read("/f", 5).unwrap(), b"data\n");
        assert!(matches!(
            t.read("/f", 4),
            Err(files::Error::TooLarge { size: 5, .. })
        ));
    }
}
