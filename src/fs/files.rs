//! `FileTree`: a tree of files addressed by guest-absolute paths, the interface the fix
//! engine edits and guest inspection reads.
//!
//! Implementations: `guest::FsFiles` (any [`super::Filesystem`], in process) and
//! `fix::host::HostTree` (a host directory holding a guest, such as a ferry mount). Every path
//! is guest-absolute ("/etc/fstab"); each method resolves the path's *parents* the way a chroot
//! would (an absolute symlink in the guest points inside the guest, `..` stops at the root) and
//! does not follow a final symlink unless it says so. [`resolve_with`] is that resolution,
//! shared by implementations; it follows at most [`MAX_SYMLINKS`] links, as [`super::path`]
//! does for inode-level lookups.

use super::path::MAX_SYMLINKS;
use std::io;

/// What went wrong with a path of a [`FileTree`]: each variant names the guest path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a guest path of a host directory (or the host directory itself).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An error of the filesystem that holds the guest path.
    #[error("{path}: {source}")]
    Fs {
        path: String,
        #[source]
        source: super::Error,
    },
    /// Resolving a guest path met more symlinks than a kernel would follow (ELOOP).
    #[error("{path}: too many levels of symbolic links (more than {limit})")]
    SymlinkLoop { path: String, limit: usize },
    /// A guest path that is not absolute or that holds a NUL byte.
    #[error("{path:?}: not an absolute guest path")]
    BadPath { path: String },
    /// A symlink whose target is not UTF-8: guest configuration paths are text.
    #[error("{path}: symlink target is not UTF-8")]
    NonUtf8Link { path: String },
    /// A file read whole that is larger than the caller's limit.
    #[error(
        "{path}: {size} bytes, larger than the {limit} bytes ferry reads as a configuration file"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    /// The path is not what the operation needs (a directory where a file is wanted, …).
    #[error("{path}: {what}")]
    WrongKind { path: String, what: &'static str },
}

impl Error {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn fs(path: &str, source: super::Error) -> Self {
        Error::Fs {
            path: path.to_string(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The largest file [`FileTree::read_head`]'s default implementation reads whole to return
/// its beginning (a shell or `ls` binary is well under this).
pub const HEAD_FALLBACK_LIMIT: u64 = 16 << 20;

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets: never edited.
    Other,
}

/// What `lstat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub attrs: Attrs,
    pub size: u64,
}

/// Permission bits (07777) and numeric owner: what an edit keeps and a `write` rule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attrs {
    /// root-owned with the given permission bits.
    pub const fn root(mode: u32) -> Self {
        Attrs {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// File operations over guest paths; see the module documentation for path semantics.
pub trait FileTree {
    /// Metadata of `path`, not following a final symlink; `None` if it does not exist.
    fn lstat(&self, path: &str) -> Result<Option<Meta>>;
    /// The target of the symlink at `path`, as stored.
    fn read_link(&self, path: &str) -> Result<String>;
    /// The contents of the regular file at `path` (a final symlink is refused: resolve first);
    /// [`Error::TooLarge`] past `limit` bytes, before reading them.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>>;
    /// The first `len` bytes (fewer if the file is shorter) of the regular file at `path`,
    /// with the same rules as [`FileTree::read`]: inspection reads an ELF header this way
    /// without reading the program. The default reads the whole file up to
    /// [`HEAD_FALLBACK_LIMIT`]; implementations that can read a prefix should.
    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let mut data = self.read(path, HEAD_FALLBACK_LIMIT)?;
        data.truncate(len);
        Ok(data)
    }
    /// Names in the directory `path` (following a final symlink), sorted.
    fn list(&self, path: &str) -> Result<Vec<String>>;
    /// Creates or atomically replaces the regular file at `path` (its parent must exist) with
    /// `data` and `attrs`, keeping the extended attributes (SELinux labels) of the file it replaces.
    fn write(&self, path: &str, data: &[u8], attrs: Attrs) -> Result<()>;
    /// Sets mode and owner of the regular file at `path`.
    fn set_attrs(&self, path: &str, attrs: Attrs) -> Result<()>;
    /// Creates or atomically replaces `path` with a symlink to `target`.
    fn symlink(&self, target: &str, path: &str) -> Result<()>;
    /// Removes the file or symlink at `path` (never a directory).
    fn remove(&self, path: &str) -> Result<()>;
    /// Creates `path` and its missing parents as directories owned by root.
    fn create_dir_all(&self, path: &str, mode: u32) -> Result<()>;

    /// The canonical guest path of `path`: every symlink resolved inside the tree.
    /// Components that do not exist are kept as written.
    fn resolve(&self, path: &str) -> Result<String> {
        resolve_with(|p| probe_via_lstat(self, p), path, true)
    }
}

/// What the resolver needs to know about one canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Missing,
    Dir,
    /// A symlink and its target.
    Link(String),
    /// A file or special file: a path cannot go on below it.
    Other,
}

/// Probes a path of `tree` with `lstat`/`read_link`.
pub fn probe_via_lstat<T: FileTree + ?Sized>(tree: &T, path: &str) -> Result<Probe> {
    Ok(match tree.lstat(path)? {
        None => Probe::Missing,
        Some(m) => match m.kind {
            Kind::Dir => Probe::Dir,
            Kind::Symlink => Probe::Link(tree.read_link(path)?),
            Kind::File | Kind::Other => Probe::Other,
        },
    })
}

/// Checks that `path` is a guest-absolute path a rule or caller may use.
pub fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Error::BadPath {
            path: path.to_string(),
        });
    }
    Ok(())
}

/// Joins canonical components into a guest path.
fn join(parts: &[String]) -> String {
    if parts.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }
}

/// Resolves `path` inside the guest root as a chroot would: `..` at the root stays at the
/// root, an absolute symlink target restarts from the guest root, at most [`MAX_SYMLINKS`]
/// symlinks are followed. `probe` is asked only about canonical paths (no symlink among
/// their parents), so an implementation may look them up directly. With `follow_last`
/// false a final symlink is returned as is (like `lstat`).
pub fn resolve_with(
    mut probe: impl FnMut(&str) -> Result<Probe>,
    path: &str,
    follow_last: bool,
) -> Result<String> {
    check_path(path)?;
    let mut pending: std::collections::VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0usize;
    // Once a component is missing, the rest cannot be symlinks: keep them lexically.
    let mut missing = false;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        if missing || (pending.is_empty() && !follow_last) {
            done.push(c);
            continue;
        }
        done.push(c);
        let here = join(&done);
        match probe(&here)? {
            Probe::Missing => missing = true,
            Probe::Dir => {}
            Probe::Other => {
                // A file in the middle of a path: nothing exists below it.
                if !pending.is_empty() {
                    missing = true;
                }
            }
            Probe::Link(target) => {
                links = links.saturating_add(1);
                if links > MAX_SYMLINKS {
                    return Err(Error::SymlinkLoop {
                        path: path.to_string(),
                        limit: MAX_SYMLINKS,
                    });
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target
                    .split('/')
                    .rev()
                    .filter(|c| !c.is_empty() && *c != ".")
                {
                    pending.push_front(t.to_string());
                }
            }
        }
    }
    Ok(join(&done))
}

/// Splits a canonical path into its parent and final name ("/" has none).
pub fn split_parent(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// `parent/name` for a canonical parent.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(links: &[(&str, &str)], dirs: &[&str], path: &str) -> Result<String> {
        let links: HashMap<&str, &str> = links.iter().copied().collect();
        resolve_with(
            |p| {
                Ok(if let Some(t) = links.get(p) {
                    Probe::Link(t.to_string())
                } else if dirs.contains(&p) {
                    Probe::Dir
                } else {
                    Probe::Missing
                })
            },
            path,
            true,
        )
    }

    #[test]
    fn dotdot_stops_at_root() {
        assert_eq!(resolve(&[], &["/etc"], "/../../etc/../../x").unwrap(), "/x");
    }

    #[test]
    fn absolute_link_restarts_at_guest_root() {
        let l = [("/etc/grub2.cfg", "/boot/grub2/grub.cfg")];
        let d = ["/etc", "/boot", "/boot/grub2"];
        assert_eq!(
            resolve(&l, &d, "/etc/grub2.cfg").unwrap(),
            "/boot/grub2/grub.cfg"
        );
    }

    #[test]
    fn relative_link_climbing_out_is_clamped() {
        let l = [("/etc/fstab", "../../../../../../etc/shadow")];
        assert_eq!(resolve(&l, &["/etc"], "/etc/fstab").unwrap(), "/etc/shadow");
    }

    #[test]
    fn loops_are_errors() {
        let l = [("/a", "/b"), ("/b", "/a")];
        assert!(matches!(
            resolve(&l, &[], "/a/x"),
            Err(Error::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(matches!(
            resolve(&[], &[], "etc/fstab"),
            Err(Error::BadPath { .. })
        ));
    }

    #[test]
    fn split() {
        assert_eq!(split_parent("/etc/fstab"), Some(("/etc", "fstab")));
        assert_eq!(split_parent("/x"), Some(("/", "x")));
        assert_eq!(split_parent("/"), None);
    }
}
