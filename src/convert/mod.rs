//! Layer "convert": writing a device out as another image. Copies are driven by `extents()`, so
//! holes and known zeros are never read or written, and data is read by several workers at once
//! (decompression runs on every core).

pub mod commit;
pub mod copy;
pub mod interrupt;
pub mod progress;

pub use copy::{
    into_existing, to_qcow2, to_raw, to_vmdk, Options, Qcow2Options, Stats, VmdkOptions,
};

use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Block(#[from] crate::block::Error),

    #[error("{}: {what}: {source}", .path.display())]
    Output {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },

    #[error("{}: refusing to write over a file of the source image's chain", .path.display())]
    OutputIsSource { path: PathBuf },

    #[error(
        "{}: already exists; --overwrite replaces it",
        .path.display()
    )]
    Exists { path: PathBuf },

    #[error("output format {0} is not supported yet (only raw and qcow2)")]
    UnsupportedTarget(String),

    #[error("{0}")]
    Commit(String),

    /// `convert -n`: the existing target cannot take the source as it is.
    #[error("{}: {why}", .path.display())]
    Target { path: PathBuf, why: String },

    /// A signal asked the copy to stop; the partial output has been removed.
    #[error("interrupted by {}: the partial output was removed", interrupt::name(*.0))]
    Interrupted(i32),

    /// A signal stopped a copy into an existing target (`convert -n`), which is left partly
    /// written: it was there before, so it is not removed.
    #[error("interrupted by {}: the existing target is partly written", interrupt::name(*.0))]
    InterruptedInPlace(i32),
}
