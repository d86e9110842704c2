//! The block layer's error type: every variant names the file, and where it applies the on-disk
//! structure and byte offset, so a user can tell a truncated download from a corrupt table.

use super::Format;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot open: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error("{}: I/O error on {what} at offset {offset:#x}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        source: io::Error,
    },

    #[error(
        "{}: {what} at offset {offset:#x} (+{len} bytes) lies past the end of the file \
         ({file_len} bytes): the image is truncated or corrupt",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: u64,
    },

    #[error("{}: corrupt {what} at offset {offset:#x}: {detail}", .path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        offset: u64,
        detail: String,
    },

    #[error("{}: {detail}", .path.display())]
    Unsupported { path: PathBuf, detail: String },

    #[error(
        "{}: this is a {found} image, not {given} (the format given with -f); without -f ferry \
         probes it: {given} failed with: {cause}",
        .path.display()
    )]
    WrongFormat {
        path: PathBuf,
        given: Format,
        found: Format,
        cause: Box<Error>,
    },

    #[error("{}: cannot open its backing/parent file {}: {source}", .path.display(), .backing.display())]
    MissingBacking {
        path: PathBuf,
        backing: PathBuf,
        source: io::Error,
    },

    #[error("{}: backing/parent chain loops: {} is already part of it", .path.display(), .target.display())]
    ChainLoop { path: PathBuf, target: PathBuf },

    #[error("{}: backing/parent chain is deeper than {max} images", .path.display())]
    ChainTooDeep { path: PathBuf, max: usize },

    #[error("access at offset {offset:#x} (+{len} bytes) is outside the device ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },

    /// Another process uses the image in a way that excludes ours (see `block::lock`): `perm`
    /// is the permission qemu names, `shared` whether it is one we would not share.
    #[error("{}", super::lock::locked_text(.path, .perm, *.shared, *.writing))]
    Locked {
        path: PathBuf,
        perm: &'static str,
        shared: bool,
        writing: bool,
    },

    #[error("the device is read-only")]
    ReadOnly,
}

impl Error {
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        what: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            what,
            offset,
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// `v`, the result of a `checked_*` or `try_from(..).ok()` on a size or offset of `path`, or
/// an error naming `what` did not fit. Writers bound their inputs (capacity, table sizes), so
/// this fires only when such a bound is wrong: a refusal instead of a wrapped offset.
pub(crate) fn fit<T>(v: Option<T>, path: &Path, what: &str) -> Result<T> {
    v.ok_or_else(|| {
        Error::unsupported(
            path,
            format!("{what} does not fit in its type (a size or offset overflowed)"),
        )
    })
}
