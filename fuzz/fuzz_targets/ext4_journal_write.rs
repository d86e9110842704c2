//! The jbd2 journal writer over a mutated journal superblock: the first 1024 input bytes are
//! XORed into a valid version 2 journal superblock (its checksum refreshed when the mutation
//! asks for csum v2/v3, so that the writer gets past it), the rest is a sequence of operations
//! (commits of blocks, revokes, checkpoints, clean closes, policy changes) on a 4 MiB device
//! with 1 KiB blocks. No operation may panic, and after every commit that succeeded in deferred
//! mode ferry's recovery must read back exactly what the last transaction wrote.
#![no_main]

use ferry::block::{check_range, BlockDevice, Describe, Extent, ExtentKind, LayerInfo, Result};
use ferry::fs::ext4::journal::superblock::{JournalSuperblock, INCOMPAT_CSUM_V2, INCOMPAT_CSUM_V3};
use ferry::fs::ext4::journal::writer::{replay_map, Checkpoint, JournalMap, JournalWriter};
use ferry::fs::ext4::superblock::Superblock;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};

const BS: usize = 1024;
const FS_BLOCKS: usize = 4096;
const JOURNAL_AT: usize = 2048;
const JOURNAL_LEN: usize = 1536;

struct Disk(Mutex<Vec<u8>>);

impl BlockDevice for Disk {
    fn len(&self) -> u64 {
        (FS_BLOCKS * BS) as u64
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len())?;
        let o = off as usize;
        buf.copy_from_slice(&self.0.lock().unwrap()[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        check_range(off, buf.len() as u64, self.len())?;
        let o = off as usize;
        self.0.lock().unwrap()[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for Disk {
    fn info(&self) -> Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

fn le(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn be(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let mut disk = vec![0u8; FS_BLOCKS * BS];
    let sb = &mut disk[1024..2048];
    le(sb, 0x0, 1024);
    le(sb, 0x4, FS_BLOCKS as u32);
    le(sb, 0x14, 1);
    le(sb, 0x20, 8192);
    le(sb, 0x28, 1024);
    le(sb, 0x4c, 1);
    sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
    sb[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
    le(sb, 0x5c, 0x4);
    le(sb, 0xe0, 8);
    let Ok(sb) = Superblock::parse(sb) else { return };
    let j = &mut disk[JOURNAL_AT * BS..][..BS];
    be(j, 0, 0xc03b_3998);
    be(j, 4, 4);
    be(j, 0xc, BS as u32);
    be(j, 0x10, JOURNAL_LEN as u32);
    be(j, 0x14, 1);
    be(j, 0x18, 1);
    be(j, 0x28, 1);
    let (mutation, ops) = data.split_at(data.len().min(1024));
    for (x, m) in j.iter_mut().zip(mutation) {
        *x ^= m;
    }
    // A checksummed superblock gets its checksum, computed from a copy parsed without it.
    let incompat = u32::from_be_bytes([j[0x28], j[0x29], j[0x2a], j[0x2b]]);
    if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0 {
        let mut plain = j.to_vec();
        be(&mut plain, 0x28, incompat & !(INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3));
        if let Ok(mut s) = JournalSuperblock::parse(&plain, 0, BS as u32, JOURNAL_LEN as u64) {
            s.feature_incompat = incompat;
            s.encode_into(j);
        }
    }
    let dev = Arc::new(Disk(Mutex::new(disk)));
    let map = JournalMap::contiguous(JOURNAL_AT as u64, JOURNAL_LEN as u64, BS as u32);
    let Ok(mut w) = JournalWriter::open(dev.clone(), &sb, map.clone()) else {
        return;
    };
    let mut deferred = false;
    for op in ops.chunks(4) {
        let [kind, n, seed, extra] = [0, 1, 2, 3].map(|i| op.get(i).copied().unwrap_or(0));
        match kind % 8 {
            0..=3 => {
                // Blocks 100.. (some starting with the jbd2 magic), maybe out of range.
                let base = 100 + u64::from(seed) * 13 + u64::from(extra & 0x80) * 40;
                let blocks: Vec<(u64, Arc<[u8]>)> = (0..u64::from(n) * 4)
                    .map(|i| {
                        let mut v = vec![seed ^ i as u8; BS];
                        if (i + u64::from(extra)) % 3 == 0 {
                            v[..4].copy_from_slice(&0xc03b_3998u32.to_be_bytes());
                        }
                        (base + i * u64::from(1 + (extra & 3)), v.into())
                    })
                    .collect();
                let revoked: Vec<u64> = (0..u64::from(extra & 0x1f))
                    .map(|i| 100 + u64::from(seed) + i * 7)
                    .collect();
                if w.commit(&blocks, &revoked).is_ok() && deferred && w.log_used() > 0 {
                    let (view, _) = replay_map(dev.clone(), &map)
                        .expect("ferry's recovery refuses the writer's log")
                        .expect("a committed transaction is not in the log");
                    let mut want = std::collections::BTreeMap::new();
                    for (b, d) in &blocks {
                        want.insert(*b, d.clone());
                    }
                    for (b, d) in want {
                        let mut got = vec![0u8; BS];
                        view.read_at(&mut got, b * BS as u64).unwrap();
                        assert!(got[..] == d[..], "block {b} reads back wrong");
                    }
                }
            }
            4 => {
                let _ = w.checkpoint();
            }
            5 => {
                let _ = w.mark_clean();
            }
            6 => {
                deferred = !deferred;
                w.set_checkpoint(if deferred {
                    Checkpoint::Deferred
                } else {
                    Checkpoint::Immediate
                });
            }
            _ => {
                let _ = w.max_transaction_blocks();
                let _ = w.mark_dirty();
            }
        }
    }
});
