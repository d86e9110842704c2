//! The volume layer's error type: names the disk or volume, the structure and the byte offset.

use crate::block;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Block(#[from] block::Error),

    /// `device` is the guest name (`/dev/sda`, `/dev/sda2`) or an image path.
    #[error("{device}: corrupt {what} at offset {offset:#x}: {detail}")]
    Corrupt {
        device: String,
        what: &'static str,
        offset: u64,
        detail: String,
    },

    #[error("{device}: {detail}")]
    Unsupported { device: String, detail: String },
}

impl Error {
    pub fn corrupt(
        device: impl Into<String>,
        what: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            device: device.into(),
            what,
            offset,
            detail: detail.into(),
        }
    }
}
