//! The one face of block for writing images: `create` makes a new qcow2 or VMDK from
//! `CreateOptions` (`Qcow2Writer::open` opens a qcow2 to write in place), and the option types
//! are re-exported here, so callers (convert, commit, the CLI) never name a format module. The
//! writers stay the format modules' own types; only their entry points and options pass here.

use super::{BlockDevice, Result};
use std::path::{Path, PathBuf};

pub use super::qcow2::header::Compression;
pub use super::qcow2::writer::{CreateOptions as Qcow2CreateOptions, Qcow2Writer};
pub use super::vmdk::writer::{
    CreateOptions as VmdkCreateOptions, Subformat as VmdkSubformat, VmdkWriter,
    ADAPTER_TYPES as VMDK_ADAPTER_TYPES,
};

/// What to create: the format and its settings.
#[derive(Clone, Debug)]
pub enum CreateOptions {
    Qcow2(Qcow2CreateOptions),
    /// A sparse or streamOptimized VMDK; a monolithicFlat one is a raw extent and a descriptor
    /// (`vmdk_flat_extent_path`, `write_vmdk_flat_descriptor`), written by the caller.
    Vmdk(VmdkCreateOptions),
}

/// A new or opened image being written.
pub enum ImageWriter {
    /// Boxed: the qcow2 writer is several times the size of the VMDK one.
    Qcow2(Box<Qcow2Writer>),
    Vmdk(VmdkWriter),
}

impl ImageWriter {
    /// Writes what the image still needs to be complete (tables, refcounts, footer).
    pub fn finish(&self) -> Result<()> {
        match self {
            ImageWriter::Qcow2(w) => w.finish(),
            ImageWriter::Vmdk(w) => w.finish(),
        }
    }

    /// Flushes everything written to the disk (fsync).
    pub fn sync(&self) -> Result<()> {
        match self {
            ImageWriter::Qcow2(w) => w.flush(),
            ImageWriter::Vmdk(w) => w.sync(),
        }
    }
}

/// Creates the image at `path` as `opts` says (replacing any file there).
pub fn create(path: &Path, opts: &CreateOptions) -> Result<ImageWriter> {
    Ok(match opts {
        CreateOptions::Qcow2(o) => ImageWriter::Qcow2(Box::new(Qcow2Writer::create(path, o)?)),
        CreateOptions::Vmdk(o) => ImageWriter::Vmdk(VmdkWriter::create(path, o)?),
    })
}

/// The raw extent file of the monolithicFlat VMDK whose descriptor is `path`.
pub fn vmdk_flat_extent_path(path: &Path) -> PathBuf {
    super::vmdk::writer::flat_extent_path(path)
}

/// Writes the descriptor of a monolithicFlat VMDK at `path`, naming its extent.
pub fn write_vmdk_flat_descriptor(path: &Path, o: &VmdkCreateOptions) -> Result<()> {
    super::vmdk::writer::write_flat_descriptor(path, o)
}
