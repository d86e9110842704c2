//! Finding a name in a directory and reading directory blocks with their checksums: through
//! the htree index when there is one (falling back to the linear scan when it is damaged),
//! case-insensitively in casefolded directories, and by no-key name in encrypted ones.

use super::inode::{self, Inode};
use super::superblock::{Compat, Incompat, FLAGS_UNSIGNED_HASH};
use super::{casefold, csum, dir, fscrypt, htree, Ext4, Run};
use crate::fs::{Error, FileType, Result};
use std::sync::Arc;

impl Ext4 {
    /// Whether `dir` has a hash index to search (is_dx: dir_index on, EXT4_INDEX_FL set).
    pub(crate) fn is_indexed(&self, dir: &Inode) -> bool {
        self.sb.has_compat(Compat::DIR_INDEX)
            && dir.flags & inode::FL_INDEX != 0
            && dir.flags & inode::FL_INLINE_DATA == 0
    }

    /// Whether `dir` compares names case-insensitively.
    pub(crate) fn is_casefolded(&self, dir: &Inode) -> bool {
        self.sb.has_incompat(Incompat::CASEFOLD) && dir.flags & inode::FL_CASEFOLD != 0
    }

    /// Block `lblk` (stored at `phys`) of `dir` for a linear walk. Leaf blocks must carry a
    /// valid checksum tail; index blocks are verified too, but a mismatch there is only
    /// logged: the walk uses nothing of them but "." and "..", which are validated as records.
    pub(crate) fn dir_block(&self, dir: &Inode, lblk: u64, phys: u64) -> Result<Arc<[u8]>> {
        let raw = self.meta_block(phys, "directory block", dir.ino)?;
        if !self.sb.metadata_csum {
            return Ok(raw);
        }
        let seed = self.inode_seed(dir);
        if self.is_indexed(dir) && htree::is_interior(&raw, lblk) {
            let _ = self.checked_block(phys, "directory index block", dir.ino, |b| {
                htree::check_interior(seed, b)
            });
            return Ok(raw);
        }
        self.checked_block(phys, "directory block", dir.ino, |b| {
            csum::dir_leaf(seed, b)
        })
    }

    /// Physical block of directory block `lblk`; None for a hole.
    fn dir_phys(&self, dir: &Inode, lblk: u64) -> Result<Option<u64>> {
        Ok(match self.map(dir, lblk)? {
            Run::Data { pblk, .. } => Some(pblk),
            Run::Zero(_) | Run::Hole(_) => None,
        })
    }

    /// Interior htree block `lblk` of `dir`, its dx_tail checksum verified.
    pub(crate) fn dir_index_block(&self, dir: &Inode, lblk: u64) -> Result<Arc<[u8]>> {
        let phys = self.dir_phys(dir, lblk)?.ok_or_else(|| {
            Error::corrupt(
                "directory index",
                dir.ino,
                0,
                format!("block {lblk} is a hole"),
            )
        })?;
        let seed = self.inode_seed(dir);
        self.checked_block(phys, "directory index block", dir.ino, |b| {
            htree::check_interior(seed, b)
        })
    }

    /// Searches leaf block `lblk` of `dir` for a record whose name satisfies `matches`.
    pub(crate) fn search_dir_block(
        &self,
        dir: &Inode,
        lblk: u64,
        matches: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Option<u32>> {
        let Some(phys) = self.dir_phys(dir, lblk)? else {
            return Ok(None);
        };
        let seed = self.inode_seed(dir);
        let block = self.checked_block(phys, "directory block", dir.ino, |b| {
            csum::dir_leaf(seed, b)
        })?;
        let filetype = self.sb.has_incompat(super::superblock::Incompat::FILETYPE);
        let mut found = None;
        dir::for_each_entry(&block, filetype, dir.ino, phys, |e| {
            if matches(e.name) {
                found = Some(e.ino);
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Looks a name up in `dir` by scanning every record. Damaged blocks are skipped: a name
    /// elsewhere is still found, and one not found is an error rather than "no such entry",
    /// since it may have been in the damaged block (the kernel answers ENOENT there).
    fn find_linear(&self, dir: &Inode, matches: &dyn Fn(&[u8]) -> bool) -> Result<Option<u64>> {
        let mut found = None;
        let mut damaged = None;
        self.walk_dir(dir, 0, Some(&mut damaged), &mut |e, _, _| {
            if matches(e.name) {
                found = Some(u64::from(e.ino));
                return Ok(false);
            }
            Ok(true)
        })?;
        match (found, damaged) {
            (None, Some(e)) => Err(e),
            (found, _) => Ok(found),
        }
    }

    /// The inode number of entry `name` of `dir`, or None.
    pub(crate) fn find(&self, dir: &Inode, name: &[u8]) -> Result<Option<u64>> {
        if dir.kind != FileType::Directory {
            return Err(Error::NotDir(dir.ino));
        }
        let dots = name == b"." || name == b"..";
        if dir.flags & inode::FL_ENCRYPT != 0 && !dots {
            // Names on disk are ciphertext; the caller has a no-key name. The index is sorted
            // by the hash of the ciphertext (ext4fs_dirhash), so a full ciphertext is hashed;
            // an abbreviated one carries its hash when readdir gave one. Casefolded encrypted
            // directories hash with a key, so they are scanned.
            let Some(nokey) = fscrypt::NoKey::parse(name) else {
                return Ok(None);
            };
            let matches = |n: &[u8]| n != b"." && n != b".." && nokey.matches(n);
            let key = match (nokey.ciphertext(), nokey.dirhash()) {
                (Some(c), _) => Some(htree::Key::Name(c)),
                (None, (h, _)) if h != 0 => Some(htree::Key::Hash(h)),
                _ => None,
            };
            if let (Some(key), false) = (key, self.is_casefolded(dir)) {
                if self.is_indexed(dir) {
                    match htree::lookup(self, dir, key, &matches)? {
                        htree::Probe::Found(ino) => return Ok(Some(u64::from(ino))),
                        htree::Probe::NotFound => return Ok(None),
                        htree::Probe::BadIndex(why) => self.index_damaged(dir, &why),
                    }
                }
            }
            return self.find_linear(dir, &matches);
        }
        let casefold = self.is_casefolded(dir) && !dots;
        let exact = |n: &[u8]| n == name;
        let folded = |n: &[u8]| casefold::matches(name, n);
        let matches: &dyn Fn(&[u8]) -> bool = if casefold { &folded } else { &exact };
        // "." and ".." live in block 0, outside the hash ranges.
        if self.is_indexed(dir) && !dots {
            let hash_name = if casefold {
                casefold::hash_name(name)
            } else {
                Some(name.into())
            };
            if let Some(h) = hash_name {
                match htree::lookup(self, dir, htree::Key::Name(&h), matches)? {
                    htree::Probe::Found(ino) => return Ok(Some(u64::from(ino))),
                    htree::Probe::NotFound => return Ok(None),
                    htree::Probe::BadIndex(why) => self.index_damaged(dir, &why),
                }
            }
        }
        self.find_linear(dir, matches)
    }

    /// Logs (once) that the index of `dir` cannot be used and the scan takes over.
    fn index_damaged(&self, dir: &Inode, why: &str) {
        let _ = self.damage(
            "directory index",
            dir.ino,
            0,
            format!("{why}; searching the directory linearly"),
        );
    }

    /// Looks `name` up in directory `dir` by the linear scan alone, ignoring any index (for
    /// tests and benchmarks).
    pub fn find_without_index(&self, dir: u64, name: &[u8]) -> Result<Option<u64>> {
        let d = self.inode(dir)?;
        if d.kind != FileType::Directory {
            return Err(Error::NotDir(dir));
        }
        self.find_linear(&d, &|n| n == name)
    }

    /// Looks `name` up in directory `dir` through its hash index alone, with no fallback (for
    /// tests and benchmarks): `Unsupported` if the directory has no usable index.
    pub fn find_with_index(&self, dir: u64, name: &[u8]) -> Result<Option<u64>> {
        let d = self.inode(dir)?;
        if !self.is_indexed(&d) || d.kind != FileType::Directory {
            return Err(Error::Unsupported(format!(
                "directory {dir} has no hash index"
            )));
        }
        let hash_name = if self.is_casefolded(&d) {
            casefold::hash_name(name)
                .ok_or_else(|| Error::Unsupported("casefolded non-ASCII name".into()))?
        } else {
            name.into()
        };
        let folded = |n: &[u8]| casefold::matches(name, n);
        let exact = |n: &[u8]| n == name;
        let matches: &dyn Fn(&[u8]) -> bool = if self.is_casefolded(&d) {
            &folded
        } else {
            &exact
        };
        match htree::lookup(self, &d, htree::Key::Name(&hash_name), matches)? {
            htree::Probe::Found(ino) => Ok(Some(u64::from(ino))),
            htree::Probe::NotFound => Ok(None),
            htree::Probe::BadIndex(why) => Err(Error::corrupt("directory index", dir, 0, why)),
        }
    }

    /// For an encrypted directory, how readdir names its entries: the hash version whose
    /// (major, minor) hash of each ciphertext name goes into the no-key name, or None for
    /// zeros. The kernel hashes in readdir when it reads the directory in hash order
    /// (ext4_dx_readdir: indexed, single-block and inline directories), else it passes zeros.
    pub(crate) fn nokey_hash_version(&self, dir: &Inode) -> Option<u8> {
        if !self.sb.has_compat(Compat::DIR_INDEX) {
            return None;
        }
        let bs = u64::from(self.block_size());
        let version = if self.is_indexed(dir) {
            let root = self.dir_index_block(dir, 0).ok()?;
            *root.get(0x1c)?
        } else if dir.size.div_ceil(bs) == 1 || dir.flags & inode::FL_INLINE_DATA != 0 {
            self.sb.def_hash_version
        } else {
            return None;
        };
        if version <= htree::TEA && self.sb.flags & FLAGS_UNSIGNED_HASH != 0 {
            // version <= TEA (2): the unsigned variants are 3 higher.
            Some(version.saturating_add(3))
        } else {
            Some(version)
        }
    }

    /// The name readdir shows for record `name` (with the rest of its record `tail`) of
    /// encrypted directory `dir`, given `nokey_hash_version`'s answer.
    pub(crate) fn nokey_entry_name(
        &self,
        dir: &Inode,
        version: Option<u8>,
        name: &[u8],
        tail: &[u8],
    ) -> Vec<u8> {
        if name == b"." || name == b".." {
            return name.to_vec();
        }
        let (h, minor) = if self.is_casefolded(dir) {
            // Encrypted and casefolded: the keyed hash is stored after the name.
            let pad = name.len().next_multiple_of(4).saturating_sub(name.len());
            (
                crate::bytes::le32(tail, pad),
                crate::bytes::le32(tail, pad.saturating_add(4)),
            )
        } else {
            version
                .and_then(|v| htree::hash(v, name, &self.sb.hash_seed))
                .unwrap_or((0, 0))
        };
        fscrypt::nokey_name(name, h, minor)
    }
}
