//! The write half of `Filesystem` for ext2/3/4: each function here is the body of one
//! operation, run by `Ext4::mutate` (one lock, its metadata committed together at the end).
//! Link counts, sizes, i_blocks and times change as the kernel's ext4 changes them:
//! ctime on every inode change, mtime and ctime of a directory whose entries change, and
//! directory link counts with dir_nlink (a directory past 65000 subdirectories counts 1).

use super::dir_write::MAX_NAME_LEN;
use super::filemap::Seg;
use super::inode::{self, Inode, InodeBuf, TimeField};
use super::rw::now;
use super::superblock::{Compat, Incompat, RoCompat};
use super::{extent, Ext4, MAX_SYMLINK_LEN, ROOT_INO};
use crate::bytes::wide;
use crate::fs::{Error, FileType, NewInode, RenameFlags, Result, SetAttr};

/// EXT4_LINK_MAX: the most links an inode may have (past it a directory counts 1).
const LINK_MAX: u16 = 65000;
/// How far `rename` follows ".." looking for a loop before calling the tree damaged.
const MAX_DEPTH_WALK: usize = 65536;

/// A directory's link count after one more subdirectory (ext4_inc_count and
/// EXT4_DIR_LINK_MAX): past LINK_MAX it is 1 with `overflow_ok` (dir_nlink on an indexed
/// directory), else EMLINK.
fn dir_links_inc(n: u16, overflow_ok: bool) -> Result<u16> {
    if n >= LINK_MAX && !overflow_ok {
        return Err(Error::TooManyLinks);
    }
    match n.checked_add(1) {
        Some(m) if n != 1 && m <= LINK_MAX => Ok(m),
        // 1 (already counting 1), or past LINK_MAX with overflow_ok.
        _ => Ok(1),
    }
}

/// The low 16 bits of a mode (i_mode: the file type and permission bits).
fn mode16(mode: u32) -> u16 {
    let [a, b, ..] = mode.to_le_bytes();
    u16::from_le_bytes([a, b])
}

/// The low 32 bits of a time in seconds (i_dtime).
fn secs32(secs: i64) -> u32 {
    let [a, b, c, d, ..] = secs.to_le_bytes();
    u32::from_le_bytes([a, b, c, d])
}

/// The longest symlink target (MAX_SYMLINK_LEN counts the terminating NUL).
const MAX_TARGET: usize = 4095;
const _: () = assert!(wide(MAX_TARGET) == MAX_SYMLINK_LEN - 1);

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong { max: MAX_NAME_LEN });
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid(format!(
            "bad name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if name == b"." || name == b".." {
        return Err(Error::Exists);
    }
    Ok(())
}

/// The largest file size with blocks of `bs` bytes (see `Ext4::max_file_size`). Every
/// product is below 2^48 (bs <= 64 KiB, 4-byte pointers).
fn max_file_size(bs: u64, extents: bool) -> u64 {
    if extents {
        (u64::from(u32::MAX)).saturating_mul(bs)
    } else {
        let per = bs / 4;
        let per2 = per.saturating_mul(per);
        let blocks = 12u64
            .saturating_add(per)
            .saturating_add(per2)
            .saturating_add(per2.saturating_mul(per));
        blocks.min(1 << 32).saturating_mul(bs)
    }
}

/// Whether `i` maps blocks (regular file, directory, slow symlink), as opposed to a device,
/// FIFO, socket, fast symlink or inline inode.
pub(super) fn has_block_map(fs: &Ext4, i: &Inode) -> bool {
    if i.flags & inode::FL_INLINE_DATA != 0 {
        return false;
    }
    match i.kind {
        FileType::RegularFile | FileType::Directory => true,
        FileType::Symlink => {
            let ea = if i.file_acl != 0 {
                u64::from(fs.block_size() / 512)
            } else {
                0
            };
            i.blocks512.saturating_sub(ea) > 0
        }
        _ => false,
    }
}

impl Ext4 {
    fn is_dx(&self, b: &InodeBuf) -> bool {
        self.sb.has_compat(Compat::DIR_INDEX) && b.flags() & inode::FL_INDEX != 0
    }

    /// One more link on directory `b` from a new subdirectory.
    fn dir_link_inc(&self, b: &mut InodeBuf) -> Result<()> {
        let overflow_ok = self.sb.has_ro_compat(RoCompat::DIR_NLINK) && self.is_dx(b);
        b.set_links(dir_links_inc(b.links(), overflow_ok)?);
        Ok(())
    }

    /// One link less on directory `b` (ext4_dec_count: a count of 1 or 2 stays).
    fn dir_link_dec(b: &mut InodeBuf) {
        if let Some(n) = b.links().checked_sub(1).filter(|&n| n >= 2) {
            b.set_links(n);
        }
    }

    /// Refuses changes to inode `i` that its flags forbid.
    fn inode_changeable(i: &Inode) -> Result<()> {
        if i.flags & (inode::FL_IMMUTABLE | inode::FL_APPEND) != 0 {
            return Err(Error::NotPermitted);
        }
        Ok(())
    }

    /// Zeros the bytes of the block holding byte `size` from `size` on (the bytes past the
    /// end of a file must read as zeros once it grows again).
    fn zero_tail(&self, fm: &super::filemap::FileMap, b: &InodeBuf, size: u64) -> Result<()> {
        let bs = self.block_nz();
        let in_blk = size % bs;
        if in_blk == 0 {
            return Ok(());
        }
        if let Seg::Data { pblk, .. } = self.fm_lookup(fm, b, size / bs)? {
            // 0 < in_blk < bs <= 64 KiB.
            let rest = usize::try_from(bs.get().saturating_sub(in_blk)).unwrap_or(0);
            let zeros = vec![0u8; rest];
            let off = self.block_offset(pblk, 1, "file data", b.ino)?;
            self.dev.write_at(&zeros, off.saturating_add(in_blk))?;
        }
        Ok(())
    }

    /// The largest file size: with extents the kernel's (ext4_max_size), 2^32 - 1 blocks, so
    /// that the last extent ends within 32 bits (e2fsck calls a size of 2^32 blocks wrong);
    /// without, the triple-indirect reach.
    fn max_file_size(&self, b: &InodeBuf) -> u64 {
        max_file_size(
            u64::from(self.block_size()),
            b.flags() & inode::FL_EXTENTS != 0,
        )
    }

    pub(super) fn op_write(&self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        let mut b = self.inode_buf(ino)?;
        let i = b.parse(&self.sb)?;
        match i.kind {
            FileType::RegularFile => {}
            FileType::Directory => return Err(Error::IsDir(ino)),
            _ => return Err(Error::Invalid(format!("inode {ino} is not a regular file"))),
        }
        if i.flags & (inode::FL_ENCRYPT | inode::FL_VERITY | inode::FL_EA_INODE) != 0 {
            return Err(Error::ReadOnly);
        }
        if i.flags & inode::FL_IMMUTABLE != 0 || (i.flags & inode::FL_APPEND != 0 && off != i.size)
        {
            return Err(Error::NotPermitted);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let end = off
            .checked_add(wide(data.len()))
            .filter(|&e| e <= self.max_file_size(&b))
            .ok_or(Error::TooBig)?;
        let mut fm = self.load_map(&b)?;
        let old_size = b.size();
        if off > old_size {
            self.zero_tail(&fm, &b, old_size)?;
        }
        let bs = self.block_nz();
        let bsz = self.block_size_usize();
        let mut done = 0usize;
        while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
            // off + done < end, checked above.
            let pos = off.saturating_add(wide(done));
            let lblk = pos / bs;
            // < bs <= 64 KiB.
            let in_blk = usize::try_from(pos % bs).unwrap_or(0);
            let left = rest.len();
            // in_blk < bs, left <= data.len(): no overflow.
            let want_blocks = wide(in_blk.saturating_add(left).div_ceil(bsz));
            let seg = self.fm_lookup(&fm, &b, lblk)?;
            let (pblk, n, fresh) = match seg {
                Seg::Data { pblk, len } => (pblk, len.min(want_blocks), false),
                Seg::Unwritten { pblk, len } => {
                    let n = len.min(want_blocks);
                    Self::fm_mark_written(&mut fm, lblk, n);
                    (pblk, n, true)
                }
                Seg::Hole(len) => {
                    let (pblk, n) = self.fm_alloc(&mut fm, &mut b, lblk, len.min(want_blocks))?;
                    (pblk, n, true)
                }
            };
            // n <= want_blocks, which covers at most the rest of `data` plus a block; an empty
            // run (which a valid map never gives) would write nothing.
            let span = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(bsz))
                .filter(|&span| span > in_blk)
                .ok_or_else(|| {
                    Error::corrupt(
                        "file map",
                        ino,
                        pblk,
                        format!("run of {n} blocks at {lblk}"),
                    )
                })?;
            let take = span.saturating_sub(in_blk).min(left);
            let mut buf = vec![0u8; span];
            if !fresh {
                let at = self.block_offset(pblk, n, "file data", ino)?;
                if in_blk != 0 {
                    // span >= one block.
                    self.dev.read_at(&mut buf[..bsz], at)?;
                }
                // pos + take <= end.
                if pos.saturating_add(wide(take)) % bs != 0 {
                    // The last block of the run; span >= one block.
                    let last = span.saturating_sub(bsz);
                    self.dev
                        .read_at(&mut buf[last..], at.saturating_add(wide(last)))?;
                }
            }
            // in_blk + take <= span; take <= rest.len().
            buf[in_blk..][..take].copy_from_slice(&rest[..take]);
            self.write_data(pblk, &buf)?;
            done = done.saturating_add(take);
        }
        if end > old_size {
            b.set_size(end);
        }
        Self::touch(&mut b, true);
        self.fm_store(fm, &mut b)?;
        self.put_inode(&mut b)?;
        Ok(data.len())
    }

    /// Sets the size of `b` (a regular file): frees the blocks past a smaller size and zeros
    /// the rest of its last block; a larger size maps nothing (a hole).
    fn set_size(&self, b: &mut InodeBuf, size: u64) -> Result<()> {
        if size > self.max_file_size(b) {
            return Err(Error::TooBig);
        }
        let old = b.size();
        if size == old {
            return Ok(());
        }
        let mut fm = self.load_map(b)?;
        let bs = u64::from(self.block_size());
        if size < old {
            self.fm_truncate(&mut fm, b, size.div_ceil(bs), false)?;
            self.zero_tail(&fm, b, size)?;
        } else {
            self.zero_tail(&fm, b, old)?;
        }
        b.set_size(size);
        self.fm_store(fm, b)
    }

    pub(super) fn op_setattr(&self, ino: u64, c: &SetAttr) -> Result<()> {
        let mut b = self.inode_buf(ino)?;
        let i = b.parse(&self.sb)?;
        if i.flags & inode::FL_IMMUTABLE != 0 {
            return Err(Error::NotPermitted);
        }
        if let Some(mode) = c.mode {
            b.set_mode((i.mode & 0o170000) | mode16(mode & 0o7777));
        }
        if let Some(uid) = c.uid {
            b.set_uid(uid);
        }
        if let Some(gid) = c.gid {
            b.set_gid(gid);
        }
        if let Some(size) = c.size {
            match i.kind {
                FileType::RegularFile => {}
                FileType::Directory => return Err(Error::IsDir(ino)),
                _ => return Err(Error::Invalid(format!("inode {ino} is not a regular file"))),
            }
            if i.flags & (inode::FL_ENCRYPT | inode::FL_VERITY | inode::FL_EA_INODE) != 0 {
                return Err(Error::ReadOnly);
            }
            if i.flags & inode::FL_APPEND != 0 {
                return Err(Error::NotPermitted);
            }
            if size != i.size {
                self.set_size(&mut b, size)?;
                Self::touch(&mut b, true);
            }
        }
        if let Some(t) = c.atime {
            b.set_time(TimeField::Atime, t);
        }
        if let Some(t) = c.mtime {
            b.set_time(TimeField::Mtime, t);
        }
        Self::touch(&mut b, false);
        self.put_inode(&mut b)
    }

    /// Creates `name` in `dir`: the inode `new` describes, or with `target` a symlink.
    pub(super) fn op_create(
        &self,
        dir: u64,
        name: &[u8],
        new: &NewInode,
        target: Option<&[u8]>,
    ) -> Result<u64> {
        check_name(name)?;
        let mode = match target {
            Some(_) => 0o120777,
            None => new.mode,
        };
        let kind = FileType::from_mode(mode)
            .ok_or_else(|| Error::Invalid(format!("mode {mode:#o} has no file type")))?;
        if let Some(t) = target {
            if t.is_empty() {
                return Err(Error::Invalid("empty symlink target".into()));
            }
            if t.len() > MAX_TARGET || t.len() > self.block_size_usize() {
                return Err(Error::NameTooLong { max: MAX_TARGET });
            }
        }
        let mut db = self.inode_buf(dir)?;
        let di = db.parse(&self.sb)?;
        self.dir_writable(&di)?;
        if self.find(&di, name)?.is_some() {
            return Err(Error::Exists);
        }
        let is_dir = kind == FileType::Directory;
        if is_dir {
            // Fails early with EMLINK, before anything is allocated.
            self.dir_link_inc(&mut db.clone())?;
        }
        let ino = self.alloc_inode(dir, is_dir)?;
        let mut nb = InodeBuf::new(
            ino,
            usize::from(self.sb.inode_size),
            self.want_extra_isize(),
        );
        nb.set_mode(mode16(mode));
        nb.set_uid(new.uid);
        nb.set_gid(new.gid);
        let t = now();
        for f in [
            TimeField::Atime,
            TimeField::Mtime,
            TimeField::Ctime,
            TimeField::Crtime,
        ] {
            nb.set_time(f, t);
        }
        nb.set_generation(self.next_generation());
        nb.set_links(if is_dir { 2 } else { 1 });
        let fast_symlink = target.is_some_and(|t| t.len() < inode::I_BLOCK_LEN);
        let extents = self.sb.has_incompat(Incompat::EXTENTS)
            && matches!(
                kind,
                FileType::RegularFile | FileType::Directory | FileType::Symlink
            )
            && !fast_symlink;
        if extents {
            nb.set_flags(inode::FL_EXTENTS);
            let root = nb.i_block_mut();
            root[0..2].copy_from_slice(&extent::MAGIC.to_le_bytes());
            root[4..6].copy_from_slice(&4u16.to_le_bytes());
        }
        match kind {
            FileType::CharDevice | FileType::BlockDevice => nb.set_rdev(new.rdev),
            FileType::Directory => {
                let mut fm = self.load_map(&nb)?;
                let (pblk, _) = self.fm_alloc(&mut fm, &mut nb, 0, 1)?;
                self.fm_store(fm, &mut nb)?;
                let block = self.new_dir_block(&nb, dir)?;
                self.put_meta(pblk, block)?;
                nb.set_size(u64::from(self.block_size()));
            }
            FileType::Symlink => {
                let t = target.unwrap_or_default();
                if fast_symlink {
                    nb.i_block_mut()[..t.len()].copy_from_slice(t);
                } else {
                    let mut fm = self.load_map(&nb)?;
                    let (pblk, _) = self.fm_alloc(&mut fm, &mut nb, 0, 1)?;
                    self.fm_store(fm, &mut nb)?;
                    let mut block = vec![0u8; self.block_size_usize()];
                    block[..t.len()].copy_from_slice(t);
                    self.write_data(pblk, &block)?;
                }
                nb.set_size(wide(t.len()));
            }
            _ => {}
        }
        self.put_inode(&mut nb)?;
        self.dir_add(&mut db, name, ino, kind)?;
        if is_dir {
            self.dir_link_inc(&mut db)?;
        }
        Self::touch(&mut db, true);
        self.put_inode(&mut db)?;
        Ok(ino)
    }

    pub(super) fn op_link(&self, ino: u64, dir: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let mut b = self.inode_buf(ino)?;
        let i = b.parse(&self.sb)?;
        if i.kind == FileType::Directory {
            return Err(Error::NotPermitted);
        }
        Self::inode_changeable(&i)?;
        if i.links == 0 {
            return Err(Error::NotFound);
        }
        if i.links >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let mut db = self.inode_buf(dir)?;
        let di = db.parse(&self.sb)?;
        self.dir_writable(&di)?;
        if self.find(&di, name)?.is_some() {
            return Err(Error::Exists);
        }
        self.dir_add(&mut db, name, ino, i.kind)?;
        Self::touch(&mut db, true);
        self.put_inode(&mut db)?;
        // Below LINK_MAX (checked above).
        b.set_links(i.links.saturating_add(1));
        Self::touch(&mut b, false);
        self.put_inode(&mut b)
    }

    /// Drops one link of inode `b` (all of a directory's); frees it when none is left.
    fn drop_link(&self, b: &mut InodeBuf) -> Result<()> {
        let i = b.parse(&self.sb)?;
        let left = if i.kind == FileType::Directory {
            0
        } else {
            i.links.saturating_sub(1)
        };
        b.set_links(left);
        Self::touch(b, false);
        if left > 0 {
            return self.put_inode(b);
        }
        if i.kind != FileType::Directory && self.is_open(b.ino) {
            // Still open: it lives on, nameless, until its last close (see orphan.rs).
            return self.orphan_add(b);
        }
        self.free_unlinked(b, &i)
    }

    /// Frees inode `b` (`i` parsed from it), which has no name left: its xattrs, its blocks,
    /// then the inode itself.
    pub(super) fn free_unlinked(&self, b: &mut InodeBuf, i: &Inode) -> Result<()> {
        self.release_xattrs(b)?;
        if has_block_map(self, i) {
            let mut fm = self.load_map(b)?;
            self.fm_truncate(&mut fm, b, 0, i.kind == FileType::Directory)?;
            self.fm_store(fm, b)?;
        }
        b.set_size(0);
        // The low 32 bits of the time, as i_dtime holds it.
        b.set_dtime(secs32(now().secs));
        self.put_inode(b)?;
        self.free_inode(b.ino, i.kind == FileType::Directory)
    }

    pub(super) fn op_remove(&self, dir: u64, name: &[u8], rmdir: bool) -> Result<()> {
        if name == b"." {
            return Err(Error::Invalid("cannot remove \".\"".into()));
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        check_name(name)?;
        let mut db = self.inode_buf(dir)?;
        let di = db.parse(&self.sb)?;
        self.dir_writable(&di)?;
        let ino = self.find(&di, name)?.ok_or(Error::NotFound)?;
        let mut tb = self.inode_buf(ino)?;
        let ti = tb.parse(&self.sb)?;
        Self::inode_changeable(&ti)?;
        if rmdir {
            if ti.kind != FileType::Directory {
                return Err(Error::NotDir(ino));
            }
            if !self.dir_is_empty(&tb)? {
                return Err(Error::NotEmpty);
            }
        } else if ti.kind == FileType::Directory {
            return Err(Error::IsDir(ino));
        }
        self.dir_remove(&db, name)?;
        if rmdir {
            Self::dir_link_dec(&mut db);
        }
        Self::touch(&mut db, true);
        self.put_inode(&mut db)?;
        self.drop_link(&mut tb)
    }

    /// Whether directory `anc` is `d` or one of its ancestors.
    fn is_ancestor(&self, anc: u64, d: u64) -> Result<bool> {
        let mut cur = d;
        for _ in 0..MAX_DEPTH_WALK {
            if cur == anc {
                return Ok(true);
            }
            if cur == ROOT_INO {
                return Ok(false);
            }
            let i = self.inode(cur)?;
            cur = self
                .find(&i, b"..")?
                .ok_or_else(|| Error::corrupt("directory", cur, 0, "no \"..\" entry"))?;
        }
        Err(Error::corrupt(
            "directory",
            d,
            0,
            "\"..\" chain does not reach the root",
        ))
    }

    pub(super) fn op_rename(
        &self,
        dir: u64,
        name: &[u8],
        new_dir: u64,
        new_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.exchange && flags.noreplace {
            return Err(Error::Invalid(
                "RENAME_EXCHANGE with RENAME_NOREPLACE".into(),
            ));
        }
        if name == b"." || name == b".." || new_name == b"." || new_name == b".." {
            return Err(Error::Busy);
        }
        check_name(name)?;
        check_name(new_name)?;
        let same = dir == new_dir;
        let mut odb = self.inode_buf(dir)?;
        let mut ndb_own = if same {
            None
        } else {
            Some(self.inode_buf(new_dir)?)
        };
        macro_rules! nd {
            () => {
                match ndb_own.as_mut() {
                    Some(b) => b,
                    None => &mut odb,
                }
            };
        }
        let oi = odb.parse(&self.sb)?;
        self.dir_writable(&oi)?;
        let ni = nd!().parse(&self.sb)?;
        self.dir_writable(&ni)?;
        let src = self.find(&oi, name)?.ok_or(Error::NotFound)?;
        let tgt = self.find(&ni, new_name)?;
        if flags.exchange && tgt.is_none() {
            return Err(Error::NotFound);
        }
        if flags.noreplace && tgt.is_some() {
            return Err(Error::Exists);
        }
        if tgt == Some(src) {
            return Ok(());
        }
        let mut sb_ = self.inode_buf(src)?;
        let si = sb_.parse(&self.sb)?;
        Self::inode_changeable(&si)?;
        let s_dir = si.kind == FileType::Directory;
        let mut tb = tgt.map(|t| self.inode_buf(t)).transpose()?;
        let ti = tb.as_ref().map(|b| b.parse(&self.sb)).transpose()?;
        if let Some(ti) = &ti {
            Self::inode_changeable(ti)?;
        }
        let t_dir = ti.as_ref().is_some_and(|t| t.kind == FileType::Directory);
        if !same {
            if s_dir && self.is_ancestor(src, new_dir)? {
                return Err(Error::Invalid("moving a directory into itself".into()));
            }
            if flags.exchange && t_dir && self.is_ancestor(tgt.unwrap_or(0), dir)? {
                return Err(Error::Invalid("moving a directory into itself".into()));
            }
            // The target is the source's parent or above it: never empty, whatever the
            // source is (the kernel's `new_dentry == trap` check, before any type check).
            if !flags.exchange && t_dir && self.is_ancestor(tgt.unwrap_or(0), dir)? {
                return Err(Error::NotEmpty);
            }
        }
        if flags.exchange {
            let (Some(tb), Some(ti)) = (tb.as_mut(), ti.as_ref()) else {
                return Err(Error::NotFound);
            };
            self.dir_set(&odb, name, ti.ino, ti.kind)?;
            self.dir_set(nd!(), new_name, src, si.kind)?;
            if !same {
                if s_dir {
                    self.dir_set(&sb_, b"..", new_dir, FileType::Directory)?;
                }
                if t_dir {
                    self.dir_set(tb, b"..", dir, FileType::Directory)?;
                }
                if s_dir && !t_dir {
                    Self::dir_link_dec(&mut odb);
                    self.dir_link_inc(nd!())?;
                } else if t_dir && !s_dir {
                    self.dir_link_inc(&mut odb)?;
                    Self::dir_link_dec(nd!());
                }
            }
            Self::touch(tb, false);
            self.put_inode(tb)?;
        } else {
            match (tb.as_mut(), ti.as_ref()) {
                (Some(tb), Some(ti)) => {
                    if t_dir && !s_dir {
                        return Err(Error::IsDir(ti.ino));
                    }
                    if s_dir && !t_dir {
                        return Err(Error::NotDir(ti.ino));
                    }
                    if t_dir && !self.dir_is_empty(tb)? {
                        return Err(Error::NotEmpty);
                    }
                    self.dir_set(nd!(), new_name, src, si.kind)?;
                    if t_dir {
                        // The replaced directory's ".." link on the new parent goes.
                        Self::dir_link_dec(nd!());
                    }
                    self.drop_link(tb)?;
                }
                _ => {
                    self.dir_add(nd!(), new_name, src, si.kind)?;
                }
            }
            if s_dir && !same {
                self.dir_link_inc(nd!())?;
            }
            self.dir_remove(&odb, name)?;
            if s_dir && !same {
                Self::dir_link_dec(&mut odb);
                self.dir_set(&sb_, b"..", new_dir, FileType::Directory)?;
            }
        }
        Self::touch(&mut sb_, false);
        self.put_inode(&mut sb_)?;
        Self::touch(&mut odb, true);
        self.put_inode(&mut odb)?;
        if let Some(n) = ndb_own.as_mut() {
            Self::touch(n, true);
            self.put_inode(n)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_link_counts() {
        assert_eq!(dir_links_inc(2, false).unwrap(), 3);
        assert_eq!(dir_links_inc(1, false).unwrap(), 1);
        assert_eq!(dir_links_inc(LINK_MAX - 1, false).unwrap(), LINK_MAX);
        assert!(matches!(
            dir_links_inc(LINK_MAX, false),
            Err(Error::TooManyLinks)
        ));
        assert_eq!(dir_links_inc(LINK_MAX - 1, true).unwrap(), LINK_MAX);
        assert_eq!(dir_links_inc(LINK_MAX, true).unwrap(), 1);
        // A count past LINK_MAX (a damaged inode) under dir_nlink: before the fix n + 1
        // overflowed at 65535 (a panic, or a count of 0 in a release build).
        assert_eq!(dir_links_inc(u16::MAX, true).unwrap(), 1);
        assert!(matches!(
            dir_links_inc(u16::MAX, false),
            Err(Error::TooManyLinks)
        ));
    }

    #[test]
    fn largest_file_sizes() {
        // With extents the kernel's s_maxbytes: a size of 2^32 blocks (which this allowed
        // before) is one e2fsck calls wrong.
        assert_eq!(max_file_size(1024, true), (1 << 42) - 1024);
        assert_eq!(max_file_size(4096, true), (1 << 44) - 4096);
        assert_eq!(max_file_size(65536, true), (1 << 48) - 65536);
        // Without, the triple-indirect reach, at most 2^32 blocks.
        assert_eq!(
            max_file_size(1024, false),
            (12 + 256 + 256 * 256 + 256 * 256 * 256) * 1024
        );
        assert_eq!(
            max_file_size(4096, false),
            (12 + 1024 + 1024 * 1024 + 1024 * 1024 * 1024) * 4096
        );
        assert_eq!(max_file_size(65536, false), (1 << 32) * 65536);
    }
}
