//! Symbolic links (xfs_symlink_remote.c): a target that fits the data fork is stored there
//! (local); a longer one in blocks of the data fork, on v5 with a header ("XSLM",
//! `xfs_dsymlink_hdr`) at the start of each extent (the kernel writes one buffer per mapping)
//! saying which bytes of which inode's target it holds; the CRC covers the whole extent.

use super::inode::{Inode, FMT_LOCAL};
use super::Xfs;
use crate::bytes::{be32, wide};
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
        let len = usize::try_from(ip.size).ok();
        let Some(len) = len.filter(|_| ip.size != 0 && ip.size <= MAX_LEN) else {
            return Err(self.damage(what, ip.ino, 0, format!("length {}", ip.size)));
        };
        if ip.format == FMT_LOCAL {
            // Inode::parse checked that a local fork holds di_size bytes.
            let target = ip.data_fork.get(..len);
            let target = target.ok_or_else(|| {
                self.damage(what, ip.ino, 0, format!("length {len} past the fork"))
            })?;
            return Ok(target.to_vec());
        }
        let v5 = self.sb.is_v5();
        // The block size is at most 64 KiB (Superblock::check_geometry), far above HDR.
        let bs = usize::try_from(self.sb.blocksize).unwrap_or(usize::MAX);
        let list = self.extents(ip, false)?;
        let mut out = Vec::with_capacity(len);
        for e in list.iter() {
            if out.len() == len {
                break;
            }
            // One buffer per extent, with one header (xfs_symlink_write), but no more
            // blocks than the target needs.
            // At most 1024 bytes: a block or two, so the products stay small.
            let need = len.div_ceil(bs.saturating_sub(HDR).max(1));
            let nblk = e.len.min(wide(need));
            let space = usize::try_from(nblk)
                .unwrap_or(need)
                .saturating_mul(bs)
                .saturating_sub(if v5 { HDR } else { 0 });
            let want = space.min(len.saturating_sub(out.len()));
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
                if u64::from(be32(b, 4)) != wide(offset) || u64::from(be32(b, 8)) != wide(want) {
                    return Err(format!(
                        "holds {} bytes at {}, expected {want} at {offset}",
                        be32(b, 8),
                        be32(b, 4)
                    ));
                }
                Ok(())
            })?;
            let from = if v5 { HDR } else { 0 };
            let part = b.get(from..).and_then(|r| r.get(..want));
            let part = part.ok_or_else(|| {
                self.damage(
                    what,
                    ip.ino,
                    e.off,
                    "extent shorter than its header says".into(),
                )
            })?;
            out.extend_from_slice(part);
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
