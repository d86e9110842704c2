//! Directories: walking a $I30 B+ tree in order (listings) and searching it (lookups), and
//! mapping link targets through the tree the way ntfs-3g does.

use super::attribute::{self, Body};
use super::filename::{self, FileName};
use super::index::{self, Entry};
use super::inode::{Inode, I30};
use super::reparse::Target;
use super::{record, stdinfo, Listed, Ntfs, Shape, FIRST_USER_INO, ROOT_INO};
use crate::fs::{FileType, Result};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

/// Levels of index blocks below the root: Windows' trees are a few levels deep even for
/// millions of entries; more is a loop or damage.
pub(super) const MAX_DEPTH: usize = 32;
/// Index blocks visited in one listing (a 4 GiB index of 4 KiB blocks): bounds the work on
/// a damaged tree whose blocks point at each other.
pub(super) const MAX_BLOCKS: usize = 1 << 20;
/// Components followed when mapping a link target.
const MAX_TARGET_COMPONENTS: usize = 256;

/// The tree of one directory: its root entries and how to reach its blocks.
struct Tree<'a> {
    dir: &'a Inode,
    root: Vec<Entry>,
    alloc: Option<&'a attribute::Attribute>,
    block_size: u32,
    /// log2 of the bytes one index VCN stands for.
    vcn_shift: u32,
}

impl Ntfs {
    fn tree<'a>(&self, dir: &'a Inode) -> Result<Tree<'a>> {
        let ino = dir.ino;
        let root = dir
            .find(attribute::INDEX_ROOT, &I30)
            .and_then(|a| a.resident())
            .ok_or_else(|| self.damage("directory", ino, None, "no $INDEX_ROOT $I30"))?;
        let root =
            index::Root::parse(root).map_err(|e| self.damage("$INDEX_ROOT", ino, None, e))?;
        if root.collation != index::COLLATION_FILENAME || root.indexed_type != attribute::FILE_NAME
        {
            return Err(self.damage(
                "$INDEX_ROOT",
                ino,
                None,
                format!(
                    "indexes type {:#x} by collation {}, not file names",
                    root.indexed_type, root.collation
                ),
            ));
        }
        let bs = root.block_size;
        let alloc = dir.find(attribute::INDEX_ALLOCATION, &I30);
        if alloc.is_some()
            && (!bs.is_power_of_two()
                || !(super::boot::MIN_RECORD_SIZE..=super::boot::MAX_RECORD_SIZE).contains(&bs))
        {
            return Err(self.damage(
                "$INDEX_ROOT",
                ino,
                None,
                format!("index blocks of {bs} bytes"),
            ));
        }
        let cs = self.boot.cluster_size;
        let vcn_shift = if bs >= cs { cs.trailing_zeros() } else { 9 };
        Ok(Tree {
            dir,
            root: root.entries,
            alloc,
            block_size: bs,
            vcn_shift,
        })
    }

    fn index_block(&self, t: &Tree<'_>, vcn: u64) -> Result<Vec<Entry>> {
        let ino = t.dir.ino;
        let Some(alloc) = t.alloc else {
            return Err(self.damage(
                "directory index",
                ino,
                None,
                format!("an entry points at block VCN {vcn} but there is no $INDEX_ALLOCATION"),
            ));
        };
        let Body::NonResident(nr) = &alloc.body else {
            return Err(self.damage("$INDEX_ALLOCATION", ino, None, "resident"));
        };
        let off = vcn
            .checked_mul(1 << t.vcn_shift)
            .filter(|o| o.saturating_add(u64::from(t.block_size)) <= alloc.size())
            .ok_or_else(|| {
                self.damage(
                    "directory index",
                    ino,
                    None,
                    format!("block VCN {vcn} is outside the {}-byte index", alloc.size()),
                )
            })?;
        // At most MAX_RECORD_SIZE (checked in `tree`).
        let mut buf = vec![0u8; usize::try_from(t.block_size).unwrap_or(0)];
        let n = self.read_attr(ino, alloc, off, &mut buf)?;
        if n != buf.len() {
            return Err(self.damage("index block", ino, None, "short read"));
        }
        let at = self.stream_pos(&nr.runs, off);
        index::parse_block(&mut buf, vcn).map_err(|e| self.damage("index block", ino, at, e))
    }

    /// Calls `f` with each entry of `dir`'s index in order (keys only, not the end markers).
    pub(super) fn walk_index(
        &self,
        dir: &Inode,
        f: &mut dyn FnMut(&Entry) -> Result<()>,
    ) -> Result<()> {
        let t = self.tree(dir)?;
        // Frames: a node's entries, the next one, whether its child was already visited.
        let mut stack: Vec<(Vec<Entry>, usize, bool)> = vec![(t.root.clone(), 0, false)];
        let mut seen = HashSet::new();
        while let Some(top) = stack.last_mut() {
            let (entries, idx, descended) = top;
            let Some(e) = entries.get(*idx) else {
                stack.pop();
                continue;
            };
            if let (Some(vcn), false) = (e.child, *descended) {
                *descended = true;
                if stack.len() > MAX_DEPTH || !seen.insert(vcn) || seen.len() > MAX_BLOCKS {
                    return Err(self.damage(
                        "directory index",
                        dir.ino,
                        None,
                        format!("block VCN {vcn} is reached twice or too deep: a loop"),
                    ));
                }
                let child = self.index_block(&t, vcn)?;
                stack.push((child, 0, false));
                continue;
            }
            if !e.last {
                f(e)?;
            }
            // Below entries.len(): no saturation.
            *idx = idx.saturating_add(1);
            *descended = false;
        }
        Ok(())
    }

    /// Searches `dir`'s index for `name`: the exact name, else one equal ignoring case, which
    /// for lookups must not be in the POSIX namespace (those are case-sensitive, as in
    /// ntfs-3g) and for link targets (`any_namespace`) may be. Returns the MFT reference and
    /// the stored name.
    pub(crate) fn find_name(
        &self,
        dir: &Inode,
        name: &[u16],
        any_namespace: bool,
    ) -> Result<Option<(u64, Vec<u16>)>> {
        let t = self.tree(dir)?;
        let mut node = t.root.clone();
        let mut fallback = None;
        let load = |p| self.upcase_page(p);
        let mut seen = HashSet::new();
        for _ in 0..=MAX_DEPTH {
            let mut next = None;
            for e in &node {
                if e.last {
                    next = e.child;
                    break;
                }
                let Ok(key) = FileName::parse(&e.key) else {
                    return Err(self.damage(
                        "directory index",
                        dir.ino,
                        None,
                        "entry with a damaged key",
                    ));
                };
                match self.upcase.collate(name, &key.name, &load) {
                    Ordering::Equal => return Ok(Some((e.mref, key.name))),
                    Ordering::Less => {
                        if fallback.is_none()
                            && (any_namespace || key.namespace != filename::NS_POSIX)
                            && self.upcase.cmp_ignore_case(name, &key.name, &load)
                                == Ordering::Equal
                        {
                            fallback = Some((e.mref, key.name));
                        }
                        next = e.child;
                        break;
                    }
                    Ordering::Greater => {
                        if fallback.is_none()
                            && (any_namespace || key.namespace != filename::NS_POSIX)
                            && self.upcase.cmp_ignore_case(name, &key.name, &load)
                                == Ordering::Equal
                        {
                            fallback = Some((e.mref, key.name));
                        }
                    }
                }
            }
            match next {
                Some(vcn) if seen.insert(vcn) => node = self.index_block(&t, vcn)?,
                Some(vcn) => {
                    return Err(self.damage(
                        "directory index",
                        dir.ino,
                        None,
                        format!("block VCN {vcn} reached twice: a loop"),
                    ))
                }
                None => return Ok(fallback),
            }
        }
        Err(self.damage(
            "directory index",
            dir.ino,
            None,
            format!("deeper than {MAX_DEPTH} levels"),
        ))
    }

    /// The entries readdir lists for `dir` (without "." and ".."), cached: a listing resumes
    /// by position in it.
    pub(super) fn listing(&self, dir: &Inode) -> Result<Arc<Vec<Listed>>> {
        if let Some(l) = self.dirs.lock().get(&dir.ino) {
            return Ok(l.clone());
        }
        let mut out = Vec::new();
        self.walk_index(dir, &mut |e| {
            let Ok(key) = FileName::parse(&e.key) else {
                return Err(self.damage(
                    "directory index",
                    dir.ino,
                    None,
                    "entry with a damaged key",
                ));
            };
            let ino = record::ref_number(e.mref);
            if key.namespace == filename::NS_DOS || (ino < FIRST_USER_INO && ino != ROOT_INO) {
                return Ok(());
            }
            if ino == ROOT_INO {
                // The root's own "." entry.
                return Ok(());
            }
            let kind = if key.flags & (stdinfo::ATTR_REPARSE_POINT | stdinfo::ATTR_SYSTEM) != 0 {
                // Symlinks, junctions and Interix files: the record decides.
                match self.inode(ino).and_then(|i| self.shape(&i)) {
                    Ok(s) => shape_kind(&s),
                    Err(_) => file_kind(&key),
                }
            } else {
                file_kind(&key)
            };
            out.push(Listed {
                name: filename::to_utf8(&key.name),
                ino,
                kind,
            });
            Ok(())
        })?;
        let l = Arc::new(out);
        self.dirs.lock().put(dir.ino, l.clone());
        Ok(l)
    }

    /// A link target as a path in the mounted tree, as ntfs-3g makes it for a volume mounted
    /// at `/`: components matched case-insensitively and given their stored case; an
    /// absolute target not found on this volume goes to `/.NTFS-3G/<drive>:/...`, where a
    /// user may place a link of their own.
    pub(super) fn map_target(&self, link: &Inode, t: Target) -> Vec<u8> {
        let bs = u16::from(b'\\');
        let split =
            |p: &[u16]| -> Vec<Vec<u16>> { p.split(|&c| c == bs).map(<[u16]>::to_vec).collect() };
        match t {
            Target::Relative(p) => {
                let start = link.parent().unwrap_or(ROOT_INO);
                let comps = split(&p);
                let fixed = self.fix_case(start, &comps, true);
                join(&fixed.unwrap_or(comps), false)
            }
            Target::Absolute { drive, path } => {
                let comps = split(&path);
                match self.fix_case(ROOT_INO, &comps, false) {
                    Some(f) => join(&f, true),
                    None => {
                        let mut out = b"/.NTFS-3G/".to_vec();
                        if let Some(d) = drive {
                            let d = char::from_u32(u32::from(d)).unwrap_or('?');
                            out.extend_from_slice(d.to_ascii_uppercase().to_string().as_bytes());
                            out.extend_from_slice(b":/");
                        }
                        out.extend_from_slice(&join(&comps, false));
                        out
                    }
                }
            }
            Target::Other(p) => {
                let mut out = b"/.NTFS-3G/".to_vec();
                let s: Vec<u16> = p
                    .iter()
                    .skip(4)
                    .map(|&c| if c == bs { u16::from(b'/') } else { c })
                    .collect();
                out.extend_from_slice(&filename::to_utf8(&s));
                out
            }
        }
    }

    /// Follows `comps` from directory `start`, replacing each name by the stored one; None
    /// when a component is missing. Stops fixing (keeping the rest as given) at a reparse
    /// point or a non-directory, as ntfs-3g does.
    fn fix_case(&self, start: u64, comps: &[Vec<u16>], relative: bool) -> Option<Vec<Vec<u16>>> {
        let mut cur = start;
        let mut out = Vec::new();
        let mut stop = false;
        for (k, c) in comps.iter().enumerate() {
            if k >= MAX_TARGET_COMPONENTS {
                return None;
            }
            if stop || c.is_empty() {
                out.push(c.clone());
                continue;
            }
            if relative && c == &[u16::from(b'.')] {
                out.push(c.clone());
                continue;
            }
            if relative && c == &[u16::from(b'.'), u16::from(b'.')] {
                let d = self.inode(cur).ok()?;
                cur = if cur == ROOT_INO {
                    ROOT_INO
                } else {
                    d.parent().unwrap_or(ROOT_INO)
                };
                out.push(c.clone());
                continue;
            }
            let d = self.inode(cur).ok()?;
            if !d.is_dir() {
                return None;
            }
            let (mref, stored) = self.find_name(&d, c, true).ok()??;
            out.push(stored);
            cur = record::ref_number(mref);
            match self.inode(cur) {
                Ok(i) if i.is_dir() && i.file_flags() & stdinfo::ATTR_REPARSE_POINT == 0 => {}
                Ok(_) => stop = true,
                Err(_) => return None,
            }
        }
        Some(out)
    }
}

fn join(comps: &[Vec<u16>], absolute: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, c) in comps.iter().enumerate() {
        if k > 0 || absolute {
            out.push(b'/');
        }
        out.extend_from_slice(&filename::to_utf8(c));
    }
    out
}

fn file_kind(key: &FileName) -> FileType {
    if key.flags & stdinfo::ATTR_DIRECTORY != 0 {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

fn shape_kind(s: &Shape) -> FileType {
    match s {
        Shape::Dir => FileType::Directory,
        Shape::File(_) => FileType::RegularFile,
        Shape::Symlink(_) => FileType::Symlink,
        Shape::Fifo => FileType::NamedPipe,
        Shape::Socket => FileType::Socket,
        Shape::Char(_) => FileType::CharDevice,
        Shape::Block(_) => FileType::BlockDevice,
    }
}
