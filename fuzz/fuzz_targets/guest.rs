//! A whole guest from arbitrary bytes as one raw disk: volumes, filesystems, inspection of
//! every root (fstab resolved through the device map, the layout composed into a tree), then a
//! bounded walk of each root's tree across its mountpoints; and the free space a conversion
//! would leave out, which must map inside the disk. Seed it with small guest images
//! (an ext4 root holding /etc/fstab and /etc/os-release, with and without a partition table).
#![no_main]

use ferry::block::{mem::MemDevice, BlockDevice};
use ferry::fs::{FileType, Filesystem};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const MAX_NODES: usize = 500;

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn BlockDevice> = Arc::new(MemDevice(data.to_vec()));
    // The free space a conversion leaves out always maps inside the disk.
    if let Ok(u) = ferry::guest::unused::unused(&[disk.clone()]) {
        let t = ferry::block::trim::Trimmed::new(disk.clone(), u.disks[0].clone());
        assert!(t.is_ok(), "unused space outside the disk: {:?}", u.disks[0]);
    }
    let Ok(guest) = ferry::guest::Guest::open(&[disk]) else {
        return;
    };
    for r in &guest.inspection.roots {
        let _ = guest.facts(r);
        let Ok((tree, _)) = guest.tree(Some(&r.root)) else {
            continue;
        };
        let mut queue = vec![tree.root_ino()];
        let mut seen = std::collections::HashSet::new();
        while let Some(dir) = queue.pop() {
            if !seen.insert(dir) || seen.len() > MAX_NODES {
                continue;
            }
            let _ = tree.statfs_at(dir);
            let _ = tree.lookup(dir, b"..");
            let _ = tree.readdir(dir, 0, &mut |e, _| {
                if e.kind == FileType::Directory && e.name != b"." && e.name != b".." {
                    queue.push(e.ino);
                }
                queue.len() < MAX_NODES
            });
        }
    }
});
