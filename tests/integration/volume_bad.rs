//! Bad partition tables: loops, absurd counts and sizes, partitions past the end, garbage in
//! every header field, truncation, and thousands of byte mutations. Each must end in a clear
//! error or warning, never a panic or a hang.

use crate::common;

use ferry::block::BlockDevice;
use ferry::volume::{self, Volume, VolumeKind};
use std::sync::Arc;
use std::time::Duration;

use ferry::block::mem::MemDevice as Mem;

fn discover(bytes: Vec<u8>) -> Vec<Volume> {
    let d: Arc<dyn BlockDevice> = Arc::new(Mem(bytes));
    volume::discover(&[d]).expect("discover fails only on LVM errors")
}

const SECTOR: usize = 512;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes an MBR/EBR entry `slot` in the sector at `base`.
fn entry(d: &mut [u8], base: usize, slot: usize, ptype: u8, start: u32, sectors: u32) {
    let at = base + 446 + 16 * slot;
    d[at + 4] = ptype;
    put32(d, at + 8, start);
    put32(d, at + 12, sectors);
    d[base + 510] = 0x55;
    d[base + 511] = 0xaa;
}

/// An MBR disk: two primaries, an extended partition from sector 2048 with `logicals` logical
/// partitions, their EBRs 8 sectors apart; just long enough to hold them.
fn mbr_disk(logicals: u32) -> Vec<u8> {
    let mut d = vec![0u8; (2048 + 8 * logicals as usize + 8) * SECTOR];
    put32(&mut d, 440, 0x1234_5678);
    entry(&mut d, 0, 0, 0x83, 64, 64);
    entry(&mut d, 0, 1, 0x82, 128, 64);
    entry(&mut d, 0, 2, 0x05, 2048, 8 * logicals + 8);
    for i in 0..logicals {
        let ebr = 2048 + 8 * i;
        entry(&mut d, ebr as usize * SECTOR, 0, 0x83, 2, 4);
        if i + 1 < logicals {
            entry(&mut d, ebr as usize * SECTOR, 1, 0x05, 8 * (i + 1), 8);
        }
    }
    d
}

/// The GPT header at `lba` with its CRC recomputed.
fn gpt_header(
    d: &mut [u8],
    lba: u64,
    alt: u64,
    entries_lba: u64,
    count: u32,
    esize: u32,
    ecrc: u32,
) {
    let at = lba as usize * SECTOR;
    let h = &mut d[at..at + SECTOR];
    h.fill(0);
    h[..8].copy_from_slice(b"EFI PART");
    put32(h, 8, 0x0001_0000);
    put32(h, 12, 92);
    put64(h, 24, lba);
    put64(h, 32, alt);
    put64(h, 40, 34);
    put64(h, 48, alt - 33);
    h[56..72].copy_from_slice(&[0xab; 16]);
    put64(h, 72, entries_lba);
    put32(h, 80, count);
    put32(h, 84, esize);
    put32(h, 88, ecrc);
    fix_crc(d, lba);
}

fn fix_crc(d: &mut [u8], lba: u64) {
    let at = lba as usize * SECTOR;
    let size = u32::from_le_bytes(d[at + 12..at + 16].try_into().unwrap()) as usize;
    let size = size.clamp(92, SECTOR);
    put32(d, at + 16, 0);
    let crc = crc32fast::hash(&d[at..at + size]);
    put32(d, at + 16, crc);
}

/// A 64 KiB GPT disk with three partitions, primary and backup intact.
fn gpt_disk() -> Vec<u8> {
    let mut d = vec![0u8; 64 << 10];
    let last = (d.len() / SECTOR - 1) as u64;
    entry(&mut d, 0, 0, 0xee, 1, last as u32);
    let mut entries = vec![0u8; 128 * 128];
    for (i, (first, end)) in [(34u64, 49u64), (50, 69), (70, 94)].iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&[0x11 * (i as u8 + 1); 16]);
        e[16..32].copy_from_slice(&[0x20 + i as u8; 16]);
        put64(e, 32, *first);
        put64(e, 40, *end);
        e[56] = b'p';
    }
    let crc = crc32fast::hash(&entries);
    d[2 * SECTOR..34 * SECTOR].copy_from_slice(&entries);
    let backup_entries = (last - 32) as usize * SECTOR;
    d[backup_entries..backup_entries + entries.len()].copy_from_slice(&entries);
    gpt_header(&mut d, 1, last, 2, 128, 128, crc);
    gpt_header(&mut d, last, 1, last - 32, 128, 128, crc);
    d
}

fn parts(v: &[Volume]) -> Vec<&Volume> {
    v.iter()
        .filter(|v| {
            matches!(
                v.kind,
                VolumeKind::Partition | VolumeKind::ExtendedPartition
            )
        })
        .collect()
}

fn all_warnings(v: &[Volume]) -> String {
    v.iter()
        .flat_map(|v| v.warnings.iter().chain(v.error.iter()))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn synthetic_tables_read_cleanly() {
    let v = discover(mbr_disk(3));
    let names: Vec<&str> = parts(&v).iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "/dev/sda1",
            "/dev/sda2",
            "/dev/sda3",
            "/dev/sda5",
            "/dev/sda6",
            "/dev/sda7"
        ]
    );
    assert_eq!(all_warnings(&v), "");
    let v = discover(gpt_disk());
    assert_eq!(parts(&v).len(), 3);
    assert_eq!(all_warnings(&v), "");
}

#[test]
fn ebr_pointing_at_itself_or_back() {
    let mut d = mbr_disk(1);
    entry(&mut d, 2048 * SECTOR, 1, 0x05, 0, 8); // the link points at this same EBR
    let v = discover(d);
    assert_eq!(parts(&v).len(), 4);
    assert!(
        all_warnings(&v).contains("loops back"),
        "{}",
        all_warnings(&v)
    );

    let mut d = mbr_disk(3);
    entry(&mut d, (2048 + 16) * SECTOR, 1, 0x05, 0, 8); // the third EBR links to the first
    let v = discover(d);
    assert_eq!(parts(&v).len(), 6);
    assert!(all_warnings(&v).contains("loops back"));
}

#[test]
fn ebr_chain_is_capped() {
    let v = discover(mbr_disk(700));
    let logicals = parts(&v)
        .iter()
        .filter(|v| v.partition.as_ref().unwrap().number >= 5)
        .count();
    assert_eq!(logicals, volume::mbr::MAX_LOGICAL);
    assert!(all_warnings(&v).contains("logical partitions"));
}

#[test]
fn gpt_absurd_entry_geometry_is_refused_cleanly() {
    for (count, esize) in [
        (u32::MAX, 128),
        (1 << 20, 128),
        (128, 0),
        (128, 7),
        (128, 1 << 31),
        (u32::MAX, u32::MAX),
    ] {
        // Both headers damaged the same way: a clean per-disk error naming the structure.
        let mut d = gpt_disk();
        let last = (d.len() / SECTOR - 1) as u64;
        gpt_header(&mut d, 1, last, 2, count, esize, 0);
        gpt_header(&mut d, last, 1, last - 32, count, esize, 0);
        let v = discover(d);
        let e = v[0]
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{count}x{esize}: no error"));
        assert!(e.contains("gpt header") && e.contains("0x200"), "{e}");
        // Only the primary damaged: the backup is used, with a warning.
        let mut d = gpt_disk();
        gpt_header(&mut d, 1, last, 2, count, esize, 0);
        let v = discover(d);
        assert_eq!(parts(&v).len(), 3, "{count}x{esize}");
        assert!(all_warnings(&v).contains("backup"));
    }
}

#[test]
fn partitions_past_the_end_are_clamped_with_a_warning() {
    let mut d = mbr_disk(0);
    d.resize(4 << 20, 0);
    entry(&mut d, 0, 0, 0x83, 8000, 100_000); // ends past the 4 MiB disk
    entry(&mut d, 0, 1, 0x83, u32::MAX - 10, u32::MAX); // starts past it
    entry(&mut d, 0, 2, 0, 0, 0);
    let v = discover(d);
    let p = parts(&v);
    assert_eq!(p[0].size, (4 << 20) - 8000 * 512);
    assert_eq!(p[1].size, 0);
    let w = all_warnings(&v);
    assert!(
        w.contains("/dev/sda1: ends at byte") && w.contains("/dev/sda2: starts at byte"),
        "{w}"
    );

    let mut d = gpt_disk();
    let ent = 2 * SECTOR + 128;
    put64(&mut d, ent + 32, 1 << 40); // far past the end
    put64(&mut d, ent + 40, (1 << 40) + 10);
    let crc = crc32fast::hash(&d[2 * SECTOR..34 * SECTOR]);
    put32(&mut d, SECTOR + 88, crc);
    fix_crc(&mut d, 1);
    let v = discover(d);
    assert_eq!(parts(&v).len(), 3);
    assert!(
        all_warnings(&v).contains("/dev/sda2"),
        "{}",
        all_warnings(&v)
    );
    // An entry whose byte range overflows u64 is dropped with a warning.
    let mut d = gpt_disk();
    put64(&mut d, ent + 32, 0);
    put64(&mut d, ent + 40, u64::MAX);
    let crc = crc32fast::hash(&d[2 * SECTOR..34 * SECTOR]);
    put32(&mut d, SECTOR + 88, crc);
    fix_crc(&mut d, 1);
    let v = discover(d);
    assert_eq!(parts(&v).len(), 2);
    assert!(all_warnings(&v).contains("impossible"));
}

/// Runs `f` on a thread and fails if it panics or takes longer than `secs`.
fn deadline(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(true) => {}
        Ok(false) => panic!("{what}: ferry panicked"),
        Err(_) => panic!("{what}: ferry hung (> {secs} s)"),
    }
}

/// Discovers `d` and reads the first sectors of every volume found.
fn discover_and_read(d: Vec<u8>) {
    for v in discover(d) {
        if let Some(dev) = &v.dev {
            let n = dev.len().min(4096) as usize;
            let mut buf = vec![0u8; n];
            dev.read_at(&mut buf, 0).unwrap();
        }
    }
}

#[test]
fn garbage_in_every_gpt_header_field() {
    // (offset, width) of every field of the 92-byte header (UEFI table 5-5).
    let fields = [
        (8, 4),
        (12, 4),
        (24, 8),
        (32, 8),
        (40, 8),
        (48, 8),
        (56, 16),
        (72, 8),
        (80, 4),
        (84, 4),
        (88, 4),
    ];
    deadline(30, "header fields", move || {
        for (at, w) in fields {
            for fill in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                for lba in [1usize, 127] {
                    let mut d = gpt_disk();
                    d[lba * SECTOR + at..lba * SECTOR + at + w].fill(fill);
                    fix_crc(&mut d, lba as u64);
                    discover_and_read(d);
                }
            }
        }
    });
}

#[test]
fn truncated_disks() {
    deadline(30, "truncation", || {
        let gpt = gpt_disk();
        let mbr = mbr_disk(3);
        for len in [
            0usize,
            1,
            446,
            511,
            512,
            513,
            1023,
            1024,
            1536,
            4096,
            17408,
            17920,
            20000,
            1 << 19,
        ] {
            discover_and_read(gpt[..len.min(gpt.len())].to_vec());
            discover_and_read(mbr[..len.min(mbr.len())].to_vec());
        }
        for len in [2048 * 512, 2048 * 512 + 511, 2056 * 512] {
            let v = discover(mbr[..len].to_vec());
            assert!(parts(&v).len() >= 3);
        }
    });
}

#[test]
fn mutated_tables_never_panic_or_hang() {
    deadline(60, "mutants", || {
        let gpt = gpt_disk();
        let last = gpt.len() - SECTOR;
        let hot = [
            (0, SECTOR),
            (SECTOR, 2 * SECTOR),
            (2 * SECTOR, 2 * SECTOR + 3 * 128),
            (last, gpt.len()),
        ];
        for (i, m) in common::mutants(&gpt, &hot, 2500, 7).enumerate() {
            let r = std::panic::catch_unwind(|| discover_and_read(m));
            assert!(r.is_ok(), "gpt mutant {i} panicked");
        }
        let mbr = mbr_disk(4);
        let ebr = |k: usize| ((2048 + 8 * k) * SECTOR + 446, (2048 + 8 * k) * SECTOR + 512);
        let hot = [(446, 512), ebr(0), ebr(1), ebr(2), ebr(3)];
        for (i, m) in common::mutants(&mbr, &hot, 2500, 11).enumerate() {
            let r = std::panic::catch_unwind(|| discover_and_read(m));
            assert!(r.is_ok(), "mbr mutant {i} panicked");
        }
    });
}
