//! A whole FAT12/16/32 volume from arbitrary bytes: open (boot sector, root directory), then a
//! bounded walk of the tree (readdir, lookup by name, upper case and trailing dot, getattr, read,
//! readlink, listxattr) that exercises cluster chains (loops, free and bad clusters, numbers out
//! of range), long-name slots and 8.3 names. Seed it with small mkfs.vfat images (see
//! tests/integration/fat.rs).
#![no_main]

use ferry::block::mem::MemDevice;
use ferry::fs::{FileType, Filesystem};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

/// Bounds on the walk so one input stays fast; the parsers' own limits are what is under test.
const MAX_NODES: usize = 2000;
const MAX_READ: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(fs) = ferry::fs::fat::Fat::open(Arc::new(MemDevice(data.to_vec()))) else {
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
        let mut entries = Vec::new();
        let _ = fs.readdir(dir, 0, &mut |e, _next| {
            entries.push(e);
            entries.len() < MAX_NODES
        });
        for e in entries {
            let _ = fs.lookup(dir, &e.name);
            let upper = e.name.to_ascii_uppercase();
            let _ = fs.lookup(dir, &upper);
            let mut dotted = e.name.clone();
            dotted.push(b'.');
            let _ = fs.lookup(dir, &dotted);
            if let Ok(names) = fs.listxattr(e.ino) {
                for n in names.iter().take(64) {
                    let _ = fs.getxattr(e.ino, n);
                }
            }
            let _ = fs.getxattr(e.ino, b"system.posix_acl_access");
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
