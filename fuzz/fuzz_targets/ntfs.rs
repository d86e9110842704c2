//! A whole NTFS volume from arbitrary bytes: open (boot sector, $MFT and its attribute list,
//! $UpCase, $Volume), then a bounded walk of the tree (readdir, lookup, getattr, read,
//! readlink, listxattr, getxattr, the removed names of `ferry timeline`) that exercises MFT records and fixups, attribute lists, runlists, index B+ trees, LZNT1 units,
//! sparse runs, reparse points and streams. Seed it with small mkntfs images (-c 512, 1 MiB).
#![no_main]

use ferry::block::mem::MemDevice;
use ferry::fs::ntfs::Ntfs;
use ferry::fs::{FileType, Filesystem};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

/// Bounds on the walk so one input stays fast; the parsers' own limits are what is under test.
const MAX_NODES: usize = 2000;
const MAX_READ: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(fs) = Ntfs::open(Arc::new(MemDevice(data.to_vec()))) else {
        return;
    };
    let _ = fs.statfs();
    let _ = fs.unused();
    let mut queue = vec![fs.root_ino()];
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 64 << 10];
    while let Some(dir) = queue.pop() {
        if !seen.insert(dir) || seen.len() > MAX_NODES {
            continue;
        }
        // Removed names, from index slack and freed records (`ferry timeline`).
        if let Ok(removed) = fs.deleted_entries(dir) {
            for d in removed.iter().take(64) {
                let _ = fs.removed_getattr(d.ino);
            }
        }
        let mut entries = Vec::new();
        let _ = fs.readdir(dir, 0, &mut |e, _next| {
            entries.push(e);
            entries.len() < MAX_NODES
        });
        for e in entries {
            let _ = fs.lookup(dir, &e.name);
            let upper = e.name.to_ascii_uppercase();
            let _ = fs.lookup(dir, &upper);
            if let Ok(names) = fs.listxattr(e.ino) {
                for n in names.iter().take(64) {
                    let _ = fs.getxattr(e.ino, n);
                }
            }
            let _ = fs.getxattr(e.ino, b"system.ntfs_reparse_data");
            let Ok(attr) = fs.getattr(e.ino) else {
                continue;
            };
            match e.kind {
                FileType::Directory if e.name != b"." && e.name != b".." => queue.push(e.ino),
                FileType::Symlink => {
                    let _ = fs.readlink(e.ino);
                }
                FileType::RegularFile => {
                    let mut off = 0u64;
                    while (off as usize) < MAX_READ.min(attr.size as usize) {
                        match fs.read(e.ino, off, &mut buf) {
                            Ok(n) if n > 0 => off += n as u64,
                            _ => break,
                        }
                    }
                }
                _ => {}
            }
        }
    }
});
