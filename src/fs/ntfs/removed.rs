//! Files removed from an NTFS volume whose MFT records still describe them, read only for
//! forensics (`ferry timeline`, issue 18). Windows and ntfs-3g free a record by clearing its
//! in-use flag (and bumping its sequence number) and leave its attributes, so a removed file's
//! $STANDARD_INFORMATION times, sizes and $FILE_NAME (name and parent directory) stay readable
//! until the record is reused. The Sleuth Kit lists such a record under its parent directory
//! when that directory is still the one the name refers to (same record, same sequence), and
//! under `$OrphanFiles`, by its own name, otherwise; ferry does the same. Separate from
//! readdir, which must never show them.

use super::{attribute, filename, inode::Inode, record, Ntfs, Shape};
use crate::fs::{Attr, DeletedEntry, Error, Orphans, Result};
use std::collections::{BTreeMap, HashMap};

/// A removed file's record and one of its names.
type Named = (u64, Vec<u8>);

/// The records not in use that still hold attributes, read in one pass over the MFT.
#[derive(Default)]
pub(super) struct Removed {
    /// (parent record, parent sequence as the name recorded it) → (record, name) of each
    /// removed file named in that directory (DOS aliases left out, as listings leave them).
    by_parent: HashMap<(u64, u16), Vec<Named>>,
    /// Every such record in number order (fls's orphan candidates: a freed record was used),
    /// with the first of its names, if it has one.
    records: Vec<(u64, Option<Vec<u8>>)>,
}

impl Ntfs {
    /// `Removed`, read once (the first call pays one read of the whole MFT, as fls does).
    fn removed(&self) -> &Removed {
        self.removed.get_or_init(|| self.read_removed())
    }

    fn read_removed(&self) -> Removed {
        let mut out = Removed::default();
        for n in 0..self.mft_records {
            let Some(r) = self.removed_record(n) else {
                continue;
            };
            let mut first = None;
            for a in r
                .attributes
                .iter()
                .filter(|a| a.kind == attribute::FILE_NAME)
            {
                let Some(f) = a.resident().and_then(|v| filename::FileName::parse(v).ok()) else {
                    continue;
                };
                if f.namespace == filename::NS_DOS {
                    continue;
                }
                let name = filename::to_utf8(&f.name);
                first.get_or_insert_with(|| name.clone());
                let key = (record::ref_number(f.parent), record::ref_sequence(f.parent));
                out.by_parent.entry(key).or_default().push((n, name));
            }
            out.records.push((n, first));
        }
        out
    }

    /// Record `n` when it is a base record not in use that holds attributes; None otherwise,
    /// quietly (never-written and damaged records are common in free MFT space).
    fn removed_record(&self, n: u64) -> Option<record::Record> {
        let r = self.parse_record(n).ok()?.ok()?;
        (!r.in_use() && r.base == 0 && !r.attributes.is_empty()).then_some(r)
    }

    /// Whether record `n` is in use (false when it cannot be read).
    fn record_in_use(&self, n: u64) -> bool {
        self.record(n).is_ok_and(|r| r.in_use())
    }

    /// The removed files named in directory `dir` (see the module documentation): `dir`'s
    /// sequence number is the one its children's names recorded, one less once `dir` itself
    /// was freed (freeing bumps it).
    pub(super) fn removed_children(&self, dir: u64) -> Result<Vec<DeletedEntry>> {
        let r = self.record(dir)?;
        let seq = if r.in_use() {
            r.sequence
        } else {
            r.sequence.wrapping_sub(1)
        };
        Ok(self
            .removed()
            .by_parent
            .get(&(dir, seq))
            .map(|v| {
                v.iter()
                    .map(|(ino, name)| DeletedEntry {
                        ino: *ino,
                        name: name.clone(),
                        kind: None,
                        reallocated: self.record_in_use(*ino),
                        stale: false,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// fls's orphan candidates (see `Orphans`): every removed record, by its own name where
    /// it has one. `$OrphanFiles` takes the number after the last record.
    pub(super) fn removed_orphans(&self) -> Orphans {
        let removed = self.removed();
        let names: BTreeMap<u64, Vec<u8>> = removed
            .records
            .iter()
            .filter_map(|(n, name)| Some((*n, name.clone()?)))
            .collect();
        Orphans {
            dir_ino: self.mft_records,
            inodes: removed.records.iter().map(|(n, _)| *n).collect(),
            names,
        }
    }

    /// Metadata of file `ino` as its record holds it, in use or not (a removed file's record
    /// keeps its attributes). A removed file is shown as a directory or a regular file only:
    /// its reparse data or special-file content may already belong to another file.
    pub(super) fn removed_attr(&self, ino: u64) -> Result<Attr> {
        let r = self.record(ino)?;
        if r.in_use() {
            let i = self.inode(ino)?;
            let shape = self.shape(&i)?;
            return Ok(self.attr_of(&i, &shape));
        }
        if r.base != 0 {
            return Err(Error::NotFound);
        }
        let i = Inode::assemble(ino, r.sequence, r.link_count, r.flags, r.attributes)
            .map_err(|e| self.damage("removed MFT record", ino, self.record_pos(ino), e))?;
        let shape = if i.is_dir() {
            Shape::Dir
        } else {
            Shape::File(None)
        };
        Ok(self.attr_of(&i, &shape))
    }
}
