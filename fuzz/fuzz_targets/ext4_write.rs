//! The ext2/3/4 writer over arbitrary bytes: the first 8 bytes seed a sequence of operations
//! (create, mkdir, symlink, write, truncate, rename, link, unlink, rmdir, setxattr,
//! removexattr) applied to the filesystem in the rest, opened read-write in memory. Damaged
//! images must be refused or answer errors: no panic, no hang, no unbounded allocation.
//! Seed it with small mkfs.ext4/ext3/ext2 images (prefixed with 8 bytes).
#![no_main]

use ferry::block::mem::MemDeviceRw;
use ferry::fs::ext4::Ext4;
use ferry::fs::{Filesystem, NewInode, RenameFlags, SetAttr};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

/// Operations per input, and the largest single write.
const OPS: usize = 64;
const MAX_WRITE: u64 = 256 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mut seed = u64::from_le_bytes(data[..8].try_into().unwrap()) | 1;
    let Ok(fs) = Ext4::open_rw(Arc::new(MemDeviceRw::new(data[8..].to_vec()))) else {
        return;
    };
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let root = fs.root_ino();
    let mut inos = vec![root];
    let names: [&[u8]; 6] = [b"a", b"b", b"lost+found", b"dir", b"x.txt", b"long-name-long-name"];
    let payload = vec![0x5au8; MAX_WRITE as usize];
    for _ in 0..OPS {
        let r = next();
        let ino = inos[(r >> 8) as usize % inos.len()];
        let name = names[(r >> 16) as usize % names.len()];
        let new = |mode| NewInode {
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        let res = match r % 11 {
            0 => fs.create(ino, name, &new(0o100644)).map(|a| inos.push(a.ino)),
            1 => fs.create(ino, name, &new(0o040755)).map(|a| inos.push(a.ino)),
            2 => fs
                .symlink(ino, name, &payload[..(r >> 24) as usize % 300 + 1], &new(0o120777))
                .map(drop),
            3 => fs
                .write(ino, (r >> 20) % (1 << 34), &payload[..((r >> 40) % MAX_WRITE) as usize])
                .map(drop),
            4 => fs
                .setattr(
                    ino,
                    &SetAttr {
                        size: Some((r >> 20) % (1 << 30)),
                        ..Default::default()
                    },
                )
                .map(drop),
            5 => {
                let to = inos[(r >> 32) as usize % inos.len()];
                let flags = RenameFlags {
                    exchange: r & (1 << 50) != 0,
                    noreplace: false,
                };
                fs.rename_with(ino, name, to, names[(r >> 40) as usize % names.len()], flags)
            }
            6 => fs.link(inos[(r >> 32) as usize % inos.len()], ino, name).map(drop),
            7 => fs.unlink(ino, name),
            8 => fs.rmdir(ino, name),
            9 => fs.setxattr(ino, b"user.k", &payload[..(r >> 24) as usize % 5000]),
            _ => fs.removexattr(ino, b"user.k"),
        };
        let _ = res;
    }
    let _ = fs.statfs();
    let mut n = 0;
    let _ = fs.readdir(root, 0, &mut |_, _| {
        n += 1;
        n < 10_000
    });
});
