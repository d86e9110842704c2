//! A depth-first walk of a guest tree (or one filesystem): every path once, in the order
//! `fls -r` lists them (a directory, then its subtree, each directory in on-disk order).
//! Damage in one directory is recorded and the walk goes on, so it does not hide the rest.

use crate::fs::{path, Attr, FileType, Filesystem};

/// Directory depth the walk follows: deeper than any real tree (PATH_MAX allows ~2048 levels
/// of one-letter names); bounds the work on a looping, damaged directory graph.
pub const MAX_DEPTH: usize = 4096;

/// One path of the tree.
pub struct Visit<'a> {
    /// Guest-absolute path ("/etc/passwd").
    pub path: &'a [u8],
    /// The type the directory entry records (fls's first mode letter).
    pub entry_kind: FileType,
    pub attr: &'a Attr,
}

struct Pending {
    ino: u64,
    path: Vec<u8>,
    kind: FileType,
    depth: usize,
}

/// Walks `fs` from its root, calling `visit` for every path but the root itself; returns what
/// could not be read ("PATH: error"), one line each.
pub fn walk(fs: &dyn Filesystem, visit: &mut dyn FnMut(&Visit)) -> Vec<String> {
    let mut errors = Vec::new();
    let mut stack = Vec::new();
    push_children(fs, fs.root_ino(), b"", 0, &mut stack, &mut errors);
    while let Some(p) = stack.pop() {
        let attr = match fs.getattr(p.ino) {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{}: {e}", String::from_utf8_lossy(&p.path)));
                continue;
            }
        };
        visit(&Visit {
            path: &p.path,
            entry_kind: p.kind,
            attr: &attr,
        });
        if attr.kind == FileType::Directory {
            if p.depth + 1 >= MAX_DEPTH {
                errors.push(format!(
                    "{}: deeper than {MAX_DEPTH} directories, not followed",
                    String::from_utf8_lossy(&p.path)
                ));
            } else {
                push_children(fs, attr.ino, &p.path, p.depth + 1, &mut stack, &mut errors);
            }
        }
    }
    errors
}

/// Pushes the entries of `dir` in reverse, so that they come off the stack in order.
fn push_children(
    fs: &dyn Filesystem,
    dir: u64,
    prefix: &[u8],
    depth: usize,
    stack: &mut Vec<Pending>,
    errors: &mut Vec<String>,
) {
    match path::list(fs, dir) {
        Ok(entries) => {
            let start = stack.len();
            for e in entries {
                let mut path = Vec::with_capacity(prefix.len() + 1 + e.name.len());
                path.extend_from_slice(prefix);
                path.push(b'/');
                path.extend_from_slice(&e.name);
                stack.push(Pending {
                    ino: e.ino,
                    path,
                    kind: e.kind,
                    depth,
                });
            }
            stack[start..].reverse();
        }
        Err(e) => errors.push(format!("{}/: {e}", String::from_utf8_lossy(prefix))),
    }
}
