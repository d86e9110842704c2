//! Files unlinked while open. POSIX keeps such a file alive, nameless, until its last close;
//! ext4 records it on the orphan list meanwhile, so that whoever opens the filesystem after a
//! crash frees it (the kernel's ext4_orphan_add / ext4_orphan_cleanup, e2fsck's
//! release_orphan_inodes). The list is threaded through the inodes: the superblock's
//! s_last_orphan names the first, each orphan's i_dtime the next, 0 ends it.
//!
//! The FUSE adapter reports opens and closes (`file_opened` / `file_released`); the last
//! unlink of an open file puts it on the list (`orphan_add`), its last close takes it off and
//! frees it. Opening the filesystem for writing, and closing it, clean the list up as a mount
//! does: an inode with no link left is freed, one with links (the kernel's interrupted
//! truncate) loses the blocks past its size.

use super::inode::InodeBuf;
use super::ops::has_block_map;
use super::Ext4;
use crate::fs::{Error, FileType, Result};

impl Ext4 {
    /// Whether inode `ino` has an open handle.
    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.rw
            .as_ref()
            .is_some_and(|rw| rw.open.lock().get(&ino).is_some_and(|n| *n > 0))
    }

    /// A handle on inode `ino` was opened.
    pub fn file_opened(&self, ino: u64) {
        if let Some(rw) = self.rw.as_ref() {
            let mut open = rw.open.lock();
            let n = open.entry(ino).or_insert(0);
            // One per open handle: the kernel's file table bounds them.
            *n = n.saturating_add(1);
        }
    }

    /// A handle on inode `ino` was closed; the last close of an inode with no name left frees
    /// it.
    pub fn file_released(&self, ino: u64) -> Result<()> {
        let Some(rw) = self.rw.as_ref() else {
            return Ok(());
        };
        {
            let mut open = rw.open.lock();
            match open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n = n.saturating_sub(1);
                    return Ok(());
                }
                Some(_) => {
                    open.remove(&ino);
                }
                None => return Ok(()),
            }
        }
        self.mutate(|| {
            // Opened again, or still linked, meanwhile: nothing to free.
            if self.is_open(ino) {
                return Ok(());
            }
            let mut b = self.inode_buf(ino)?;
            let i = b.parse(&self.sb)?;
            if i.links != 0 || !self.orphan_remove(ino)? {
                return Ok(());
            }
            self.free_unlinked(&mut b, &i)
        })
    }

    /// Puts inode `b`, whose last link is gone, at the head of the orphan list.
    pub(super) fn orphan_add(&self, b: &mut InodeBuf) -> Result<()> {
        b.set_dtime(self.sb_last_orphan()?);
        self.put_inode(b)?;
        self.set_sb_last_orphan(ino32(b.ino)?)
    }

    /// Takes `ino` off the orphan list; false when it is not on it.
    fn orphan_remove(&self, ino: u64) -> Result<bool> {
        let mut prev: Option<InodeBuf> = None;
        let mut cur = u64::from(self.sb_last_orphan()?);
        for _ in 0..self.sb.inodes_count {
            if cur == 0 {
                return Ok(false);
            }
            let b = self.inode_buf(cur)?;
            if cur == ino {
                let next = b.dtime();
                match prev.as_mut() {
                    Some(p) => {
                        p.set_dtime(next);
                        self.put_inode(p)?;
                    }
                    None => self.set_sb_last_orphan(next)?,
                }
                return Ok(true);
            }
            cur = u64::from(b.dtime());
            prev = Some(b);
        }
        Err(self.orphan_loop())
    }

    /// Empties the orphan list: inodes with no link are freed, others truncated to their
    /// size (what the kernel does when it mounts, and e2fsck when it checks). Files still
    /// open are left on it.
    pub(super) fn orphans_cleanup(&self) -> Result<()> {
        if self.sb_last_orphan()? == 0 {
            return Ok(());
        }
        self.mutate(|| {
            let mut keep: Vec<InodeBuf> = Vec::new();
            let mut cur = u64::from(self.sb_last_orphan()?);
            let mut steps = 0u32;
            while cur != 0 {
                // At most inodes_count + 1 (checked below).
                steps = steps.saturating_add(1);
                if steps > self.sb.inodes_count {
                    return Err(self.orphan_loop());
                }
                if cur > u64::from(self.sb.inodes_count) {
                    return Err(Error::corrupt(
                        "orphan list",
                        cur,
                        0,
                        format!("inode {cur} is past the last inode"),
                    ));
                }
                let mut b = self.inode_buf(cur)?;
                let i = b.parse(&self.sb)?;
                let next = u64::from(b.dtime());
                if self.is_open(cur) {
                    keep.push(b);
                } else if i.links == 0 {
                    self.free_unlinked(&mut b, &i)?;
                } else {
                    b.set_dtime(0);
                    if i.kind == FileType::RegularFile && has_block_map(self, &i) {
                        let bs = u64::from(self.block_size());
                        let mut fm = self.load_map(&b)?;
                        self.fm_truncate(&mut fm, &mut b, i.size.div_ceil(bs), false)?;
                        self.fm_store(fm, &mut b)?;
                    }
                    self.put_inode(&mut b)?;
                }
                cur = next;
            }
            // The open ones, chained again in the order they were found.
            let mut head = 0u32;
            for b in keep.iter_mut().rev() {
                b.set_dtime(head);
                self.put_inode(b)?;
                head = ino32(b.ino)?;
            }
            self.set_sb_last_orphan(head)
        })
    }

    fn orphan_loop(&self) -> Error {
        Error::corrupt(
            "orphan list",
            0,
            0,
            "the list loops (longer than the inode count)",
        )
    }
}

/// An inode number as the list stores it (u32 on disk; numbers are at most s_inodes_count).
fn ino32(ino: u64) -> Result<u32> {
    u32::try_from(ino)
        .map_err(|_| Error::corrupt("orphan list", ino, 0, "inode number above 32 bits"))
}
