//! Which records a set of changed volume bytes may have changed (`Filesystem::touched`), and
//! which clusters records own (`Filesystem::owned`): what lets `ferry diff OVERLAY` compare
//! only what an overlay holds on a Windows guest.
//!
//! The argument is ext4's (see `fs::ext4::touched`), with MFT records for inodes: every
//! change a reader sees goes through a file's record (its $STANDARD_INFORMATION times,
//! $FILE_NAME, resident data and index root, and the runlists of its non-resident
//! attributes), and a directory whose entries change gets new times in its record. So the
//! records lying in the changed bytes (found through $MFT's own runlist), with the base
//! record of each extension record among them, hold every changed file; the parent
//! directories of their names are added, as the writer updates the copy of a name's
//! $FILE_NAME in the parent's index entry without touching the parent's record, and that
//! index block must be accounted for. It is then checked:
//! every other changed cluster must be the boot sector or its backup, a cluster of a system
//! file no path names ($MFT's mirror, $LogFile, $Bitmap, $Secure, $UsnJrnl... records 0-15
//! but the root, and the files under $Extend), free in $Bitmap on either side, or owned by
//! one of those records on either side; what is left makes the caller compare everything.

use super::attribute::{self, Body};
use super::filename::FileName;
use super::{record, Ntfs, FIRST_USER_INO, ROOT_INO};
use crate::fs::ranges::{intersect, normalize, subtract};
use crate::fs::{Result, Touched};
use std::ops::Range;

/// $Extend, whose children ($ObjId, $Quota, $Reparse, $UsnJrnl, $RmMetadata) no path names.
const EXTEND_INO: u64 = 11;

impl Ntfs {
    pub(super) fn touched_ranges(&self, ranges: &[Range<u64>]) -> Result<Touched> {
        let cs = u64::from(self.boot.cluster_size);
        let rs = u64::from(self.boot.record_size);
        let changed = normalize(ranges.to_vec());
        let mut meta: Vec<Range<u64>> = Vec::new();
        let mut records = Vec::new();
        for r in &self.mft_runs {
            let Some(lcn) = r.lcn else { continue };
            let (Some(start), Some(len)) = (lcn.checked_mul(cs), r.len.checked_mul(cs)) else {
                continue;
            };
            let vol = start..start.saturating_add(len);
            let stream = r.vcn.saturating_mul(cs);
            for x in intersect(&changed, std::slice::from_ref(&vol)) {
                // `x` lies inside `vol`, whose stream offset is `stream`: no saturation.
                let (a, b) = (
                    x.start.saturating_sub(vol.start).saturating_add(stream),
                    x.end.saturating_sub(vol.start).saturating_add(stream),
                );
                // The record size is at least 512 (BootSector::parse).
                let first = a.checked_div(rs).unwrap_or(0);
                records.extend((first..b.div_ceil(rs)).take_while(|&n| n < self.mft_records));
            }
            meta.push(vol);
        }
        // An extension record's attributes are its base record's. Each name's parent
        // directory too: its index entries repeat the name's $FILE_NAME (times, sizes), which
        // the writer refreshes in the index without touching the directory's own record.
        let mut inodes = records.clone();
        for &n in &records {
            let Ok(Ok(r)) = self.parse_record(n) else {
                continue;
            };
            if r.base != 0 {
                inodes.push(record::ref_number(r.base));
            }
            inodes.extend(
                r.attributes
                    .iter()
                    .filter(|a| a.kind == attribute::FILE_NAME)
                    .filter_map(|a| FileName::parse(a.resident()?).ok())
                    .map(|f| record::ref_number(f.parent)),
            );
        }
        // The boot sector's backup lies past the volume's last cluster.
        meta.push(self.boot.size_bytes()..u64::MAX);
        let mut hidden: Vec<u64> = (0..FIRST_USER_INO).filter(|&i| i != ROOT_INO).collect();
        if let Ok(ext) = self.inode(EXTEND_INO) {
            let _ = self.walk_index(&ext, &mut |e| {
                hidden.push(record::ref_number(e.mref));
                Ok(())
            });
        }
        meta.extend(self.clusters_of(&hidden, false));
        let mut rest = subtract(&changed, &normalize(meta));
        if !rest.is_empty() {
            rest = subtract(&rest, &self.free_ranges()?);
        }
        inodes.sort_unstable();
        inodes.dedup();
        Ok(Touched {
            inodes,
            residue: rest,
        })
    }

    pub(super) fn owned_ranges(&self, inodes: &[u64]) -> Result<Vec<Range<u64>>> {
        Ok(normalize(self.clusters_of(inodes, true)))
    }

    /// Volume byte ranges of the clusters the non-resident attributes of `inodes` map (in
    /// every record of each). With `in_use_only`, a record not in use owns nothing; one that
    /// cannot be read contributes nothing (which only makes a caller's check stricter).
    fn clusters_of(&self, inodes: &[u64], in_use_only: bool) -> Vec<Range<u64>> {
        let cs = u64::from(self.boot.cluster_size);
        let mut out = Vec::new();
        for &ino in inodes {
            if in_use_only && !self.record(ino).is_ok_and(|r| r.in_use()) {
                continue;
            }
            let Ok(i) = self.inode(ino) else { continue };
            for a in &i.attributes {
                let Body::NonResident(nr) = &a.body else {
                    continue;
                };
                for r in &nr.runs {
                    let Some(lcn) = r.lcn else { continue };
                    if let (Some(s), Some(n)) = (lcn.checked_mul(cs), r.len.checked_mul(cs)) {
                        out.push(s..s.saturating_add(n));
                    }
                }
            }
        }
        out
    }
}
