//! Path resolution inside one filesystem, for `ferry ls`/`cat` and inspection, which read the
//! guest without FUSE. Symbolic links resolve as they would inside the guest (an absolute
//! target starts at the filesystem's root, `..` never climbs above it), with the kernel's
//! limit of 40 links per resolution.

use super::{Attr, Error, FileType, Filesystem, Result};

/// Symbolic links followed in one resolution before giving up with ELOOP (MAXSYMLINKS).
pub const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute or relative to the root) to its inode's attributes. The last
/// component is followed if it is a symbolic link only when `follow_last` is set (`stat` vs
/// `lstat`).
pub fn resolve(fs: &dyn Filesystem, path: &[u8], follow_last: bool) -> Result<Attr> {
    let root = fs.root_ino();
    // Directories walked so far: `..` pops, so the parent of a directory reached through a
    // symbolic link is where the walk came from, as in the kernel.
    let mut stack: Vec<Attr> = vec![fs.getattr(root)?];
    // Components still to walk, last first.
    let mut todo: Vec<Vec<u8>> = components(path).rev().collect();
    let mut links = 0usize;
    while let Some(name) = todo.pop() {
        // OK: the stack always holds the root.
        let dir = stack.last().cloned().unwrap_or_else(|| unreachable!());
        if dir.kind != FileType::Directory {
            return Err(Error::NotDir(dir.ino));
        }
        match name.as_slice() {
            b"." => continue,
            b".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            _ => {}
        }
        let a = fs.lookup(dir.ino, &name)?;
        if a.kind == FileType::Symlink && (follow_last || !todo.is_empty()) {
            links = links.saturating_add(1);
            if links > MAX_SYMLINKS {
                return Err(Error::Loop);
            }
            let target = fs.readlink(a.ino)?;
            if target.is_empty() {
                return Err(Error::NotFound);
            }
            if target.starts_with(b"/") {
                stack.truncate(1);
            }
            todo.extend(components(&target).rev());
            continue;
        }
        stack.push(a);
    }
    Ok(stack.pop().unwrap_or_else(|| unreachable!()))
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
}

/// Every entry of directory `dir` except `.` and `..`, in on-disk order.
pub fn list(fs: &dyn Filesystem, dir: u64) -> Result<Vec<super::DirEntry>> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, &mut |e, _| {
        if e.name != b"." && e.name != b".." {
            out.push(e);
        }
        true
    })?;
    Ok(out)
}
