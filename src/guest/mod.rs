//! Layer 4: the guest as a whole. For now only the choice of one filesystem among the guest's
//! volumes, by the device name `ferry filesystems` prints; inspection (OS, fstab, the guest's
//! own mount layout) grows here.

pub mod fstab;
pub mod inspect;

use crate::block::BlockDevice;
use crate::fs::{self, Filesystem, FsError};
use crate::volume::{self, content::Usage, Volume};
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error("no filesystem found on the image(s) (see `ferry filesystems --all`)")]
    NoFilesystem,
    #[error("several filesystems: choose one with -m DEVICE ({})", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("no device {name} (filesystems: {})", .available.join(", "))]
    NoSuchDevice {
        name: String,
        available: Vec<String>,
    },
    #[error("{device}: {source}")]
    Fs {
        device: String,
        #[source]
        source: FsError,
    },
}

/// One filesystem of the guest, opened.
pub struct Opened {
    /// The guest's name for its device (`/dev/sda1`, `/dev/VG/LV`).
    pub device: String,
    pub fs: Arc<dyn Filesystem>,
}

fn candidate(v: &Volume) -> bool {
    v.dev.is_some()
        && v.content
            .as_ref()
            .is_some_and(|c| matches!(c.usage, Usage::Filesystem))
}

/// Whether `v` answers to `name`: its device name or an alias, with or without `/dev/`.
fn named(v: &Volume, name: &str) -> bool {
    let full = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/dev/{name}")
    };
    v.name == full || v.aliases.contains(&full)
}

/// Opens the filesystem on `device` (a name as `ferry filesystems` prints it), or the only
/// filesystem of the guest when `device` is None.
pub fn open_filesystem(disks: &[Arc<dyn BlockDevice>], device: Option<&str>) -> Result<Opened> {
    let vols = volume::discover(disks)?;
    let names = || -> Vec<String> {
        vols.iter()
            .filter(|v| candidate(v))
            .map(|v| v.name.clone())
            .collect()
    };
    let v = match device {
        Some(name) => vols
            .iter()
            .find(|v| named(v, name))
            .ok_or_else(|| Error::NoSuchDevice {
                name: name.into(),
                available: names(),
            })?,
        None => {
            let mut c = vols.iter().filter(|v| candidate(v));
            match (c.next(), c.next()) {
                (None, _) => return Err(Error::NoFilesystem),
                (Some(v), None) => v,
                (Some(_), Some(_)) => return Err(Error::Ambiguous(names())),
            }
        }
    };
    let fail = |source| Error::Fs {
        device: v.name.clone(),
        source,
    };
    let dev = v.dev.clone().ok_or_else(|| {
        fail(FsError::Unsupported(
            v.error
                .clone()
                .unwrap_or_else(|| "volume cannot be read".into()),
        ))
    })?;
    let fs = fs::open(dev).map_err(fail)?;
    Ok(Opened {
        device: v.name.clone(),
        fs: Arc::from(fs),
    })
}
