//! VMDK images (placeholder until the reader lands).

pub mod descriptor;

use super::error::{Error, Result};
use super::file::ImageFile;
use super::{BlockDevice, Extent, LayerInfo, OpenCtx};

/// First 8 bytes of an ESXi SEsparse extent (magic 0xcafebabe, little-endian u64).
pub const SESPARSE_MAGIC_BYTES: [u8; 8] = 0xcafe_babe_u64.to_le_bytes();

pub struct Vmdk {}

impl Vmdk {
    pub fn open(file: ImageFile, _ctx: &mut OpenCtx) -> Result<Self> {
        Err(Error::unsupported(file.path(), "VMDK is not readable yet"))
    }
}

impl BlockDevice for Vmdk {
    fn len(&self) -> u64 {
        0
    }
    fn read_at(&self, _buf: &mut [u8], _off: u64) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn extents(&self, _off: u64, _len: u64) -> Result<Vec<Extent>> {
        Ok(Vec::new())
    }
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}
