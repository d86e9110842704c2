//! A file as ferry sees it: the attributes of its base MFT record and of every extension
//! record its $ATTRIBUTE_LIST names, with the pieces of one non-resident attribute (split
//! across records by VCN range) merged into one runlist.

use super::attribute::{self, Attribute, Body};
use super::filename::{self, FileName};
use super::stdinfo::StdInfo;

#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    pub sequence: u16,
    pub link_count: u16,
    /// MFT record flags (in use, directory).
    pub record_flags: u16,
    pub attributes: Vec<Attribute>,
}

/// "$I30", the name of directory indexes.
pub const I30: [u16; 4] = [0x24, 0x49, 0x33, 0x30];

impl Inode {
    /// Builds the inode from its attributes, merging the extents of non-resident attributes
    /// (same type and name) in VCN order. The sizes are those of the first extent.
    pub fn assemble(
        ino: u64,
        sequence: u16,
        link_count: u16,
        record_flags: u16,
        mut pieces: Vec<Attribute>,
    ) -> Result<Self, String> {
        pieces.sort_by_key(|a| {
            let vcn = match &a.body {
                Body::NonResident(n) => n.lowest_vcn,
                Body::Resident(_) => 0,
            };
            (a.kind, a.name.clone(), vcn)
        });
        let mut attributes: Vec<Attribute> = Vec::new();
        for a in pieces {
            let continues = match (attributes.last_mut(), &a.body) {
                (Some(prev), Body::NonResident(n))
                    if prev.kind == a.kind && prev.name == a.name && n.lowest_vcn > 0 =>
                {
                    match &mut prev.body {
                        Body::NonResident(p) => {
                            let end = p.runs.last().map_or(p.lowest_vcn, |r| r.end());
                            if n.lowest_vcn != end {
                                return Err(format!(
                                    "attribute {:#x}: extent from VCN {} does not follow VCN {end}",
                                    a.kind, n.lowest_vcn
                                ));
                            }
                            // Lengths of vectors in memory: no saturation.
                            if p.runs.len().saturating_add(n.runs.len()) > super::runlist::MAX_RUNS
                            {
                                return Err(format!("attribute {:#x}: too many runs", a.kind));
                            }
                            p.runs.extend_from_slice(&n.runs);
                            p.highest_vcn = n.highest_vcn;
                            true
                        }
                        Body::Resident(_) => false,
                    }
                }
                _ => false,
            };
            if !continues {
                attributes.push(a);
            }
        }
        Ok(Inode {
            ino,
            sequence,
            link_count,
            record_flags,
            attributes,
        })
    }

    pub fn find(&self, kind: u32, name: &[u16]) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|a| a.kind == kind && a.name == name)
    }

    pub fn is_dir(&self) -> bool {
        self.record_flags & super::record::FLAG_DIRECTORY != 0
    }

    pub fn std_info(&self) -> Option<StdInfo> {
        let v = self
            .find(attribute::STANDARD_INFORMATION, &[])?
            .resident()?;
        StdInfo::parse(v).ok()
    }

    /// The file attribute flags (0 without $STANDARD_INFORMATION).
    pub fn file_flags(&self) -> u32 {
        self.std_info().map_or(0, |s| s.flags)
    }

    pub fn file_names(&self) -> impl Iterator<Item = FileName> + '_ {
        self.attributes
            .iter()
            .filter(|a| a.kind == attribute::FILE_NAME)
            .filter_map(|a| FileName::parse(a.resident()?).ok())
    }

    /// The parent directory from the first name that is not a DOS alias.
    pub fn parent(&self) -> Option<u64> {
        self.file_names()
            .find(|f| f.namespace != filename::NS_DOS)
            .map(|f| super::record::ref_number(f.parent))
    }

    pub fn data(&self) -> Option<&Attribute> {
        self.find(attribute::DATA, &[])
    }

    /// Named $DATA attributes (alternate data streams).
    pub fn streams(&self) -> impl Iterator<Item = &Attribute> + '_ {
        self.attributes
            .iter()
            .filter(|a| a.kind == attribute::DATA && !a.name.is_empty())
    }
}
