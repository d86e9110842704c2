//! Symbolic links (xfs_symlink_remote.c): a target that fits the data fork is stored there
//! (local); a longer one in blocks of the data fork, on v5 with a header ("XSLM",
//! `xfs_dsymlink_hdr`) at the start of each extent (the kernel writes one buffer per mapping)
//! saying which bytes of which inode's target it holds; the CRC covers the whole extent.

use super::inode::{Inode, FMT_LOCAL};
use super::Xfs;
use crate::bytes::be32;
use crate::fs::{Error, FileType, Result};

/// Longest target XFS stores (XFS_SYMLINK_MAXLEN).
pub const MAX_LEN: u64 = 1024;
const MAGIC: u32 = 0x5853_4c4d;
const HDR: usize = 56;
/// Offsets of CRC, self address, UUID and owner in the header.
const V5_HEADER: [usize; 4] = [12, 40, 16, 32];

impl Xfs {
    pub(super) fn symlink_target(&self, ip: &Inode) -> Result<Vec<u8>> {
        let what = "xfs symlink";
        if ip.kind != FileType::Symlink {
            return Err(Error::NotSymlink(ip.ino));
        }
        if ip.size == 0 || ip.size > MAX_LEN {
            return Err(self.damage(what, ip.ino, 0, format!("length {}", ip.size)));
        }
        // OK: at most 1024.
        let len = ip.size as usize;
        if ip.format == FMT_LOCAL {
            return Ok(ip.data_fork[..len].to_vec());
        }
        let v5 = self.sb.is_v5();
        let bs = self.sb.blocksize as usize;
        let list = self.extents(ip, false)?;
        let mut out = Vec::with_capacity(len);
        for e in list.iter() {
            if out.len() == len {
                break;
            }
            // One buffer per extent, with one header (xfs_symlink_write), but no more
            // blocks than the target needs.
            let nblk = e.len.min(len.div_ceil(bs - HDR) as u64);
            let space = nblk as usize * bs - if v5 { HDR } else { 0 };
            let want = space.min(len - out.len());
            let offset = out.len();
            let ino = ip.ino;
            let b = self.fork_block(ip, false, e.off, nblk, what, |b, daddr| {
                if !v5 {
                    return Ok(());
                }
                if be32(b, 0) != MAGIC {
                    return Err(format!("magic {:#x}", be32(b, 0)));
                }
                self.v5_header(b, daddr, ino, V5_HEADER)?;
                if be32(b, 4) as usize != offset || be32(b, 8) as usize != want {
                    return Err(format!(
                        "holds {} bytes at {}, expected {want} at {offset}",
                        be32(b, 8),
                        be32(b, 4)
                    ));
                }
                Ok(())
            })?;
            let from = if v5 { HDR } else { 0 };
            out.extend_from_slice(&b[from..from + want]);
        }
        if out.len() != len {
            return Err(self.damage(
                what,
                ip.ino,
                0,
                format!("{} of {len} bytes mapped", out.len()),
            ));
        }
        Ok(out)
    }
}
