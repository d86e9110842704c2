//! Untrusted qcow2 input: crafted corruptions give one clear error naming the file, the structure
//! and the offset; truncations and thousands of mutants never panic or hang.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A small image with data, zero clusters and a compressed region: (path, bytes).
fn sample(dir: &Path, opts: &str, compressed: bool) -> (PathBuf, Vec<u8>) {
    let raw = dir.join("s.raw");
    make_mixed_raw(&raw, 3 << 20, 11);
    let img = dir.join("s.qcow2");
    let mut a = vec!["convert", "-O", "qcow2", "-o", opts];
    if compressed {
        a.push("-c");
    }
    a.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
    qemu_img(&a);
    let bytes = std::fs::read(&img).unwrap();
    (img, bytes)
}

fn expect_error(dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    match exercise(&p) {
        Ok(()) => panic!("{name}: corrupt image was accepted"),
        Err(msg) => {
            assert!(
                msg.contains(name),
                "{name}: error does not name the file: {msg}"
            );
            for n in needles {
                assert!(msg.contains(n), "{name}: error lacks '{n}': {msg}");
            }
        }
    }
}

#[test]
fn crafted_corruptions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, orig) = sample(d, "cluster_size=65536", false);
    let l1_off = be64(&orig, 40) as usize;
    let l2_off = (be64(&orig, l1_off) & 0x00ff_ffff_ffff_fe00) as usize;
    let patch = |at: usize, v: &[u8]| {
        let mut b = orig.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    expect_error(
        d,
        "cbits.qcow2",
        &patch(20, &40u32.to_be_bytes()),
        &["qcow2 header", "cluster_bits"],
    );
    expect_error(
        d,
        "cbits0.qcow2",
        &patch(20, &0u32.to_be_bytes()),
        &["cluster_bits"],
    );
    expect_error(
        d,
        "huge.qcow2",
        &patch(24, &(1u64 << 63).to_be_bytes()),
        &["qcow2 header", "too large"],
    );
    expect_error(
        d,
        "l1size.qcow2",
        &patch(36, &0x7fff_ffffu32.to_be_bytes()),
        &["L1 table"],
    );
    expect_error(
        d,
        "l1small.qcow2",
        &patch(36, &0u32.to_be_bytes()),
        &["L1 table", "cannot cover"],
    );
    expect_error(
        d,
        "l1eof.qcow2",
        &patch(40, &(1u64 << 40).to_be_bytes()),
        &["qcow2 L1 table", "0x10000000000"],
    );
    expect_error(
        d,
        "l1unaligned.qcow2",
        &patch(40, &0x10200u64.to_be_bytes()),
        &["qcow2 header", "L1 table offset"],
    );
    expect_error(
        d,
        "l2eof.qcow2",
        &patch(l1_off, &(0x8000_0000_0000_0000u64 | 1 << 40).to_be_bytes()),
        &["qcow2 L2 table", "past the end"],
    );
    expect_error(
        d,
        "l2hdr.qcow2",
        &patch(l1_off, &0x8000_0000_0000_0200u64.to_be_bytes()),
        &["qcow2 L1 entry", &format!("{l1_off:#x}")],
    );
    expect_error(
        d,
        "datahdr.qcow2",
        &patch(l2_off, &0x8000_0000_0000_0200u64.to_be_bytes()),
        &["qcow2 L2 entry", &format!("{l2_off:#x}")],
    );
    expect_error(
        d,
        "dataeof.qcow2",
        &patch(l2_off, &(0x8000_0000_0000_0000u64 | 1 << 44).to_be_bytes()),
        &["qcow2 data cluster", "past the end"],
    );
    // Compressed entry (bit 62) pointing past the end, and one pointing at non-deflate bytes.
    expect_error(
        d,
        "ceof.qcow2",
        &patch(l2_off, &(0x4000_0000_0000_0000u64 | 1 << 40).to_be_bytes()),
        &["qcow2 compressed cluster"],
    );
    expect_error(
        d,
        "cgarbage.qcow2",
        &patch(
            l2_off,
            &(0x4000_0000_0000_0000u64 | l1_off as u64).to_be_bytes(),
        ),
        &["qcow2 compressed cluster", "deflate"],
    );
    expect_error(
        d,
        "incompat.qcow2",
        &patch(72, &(1u64 << 40).to_be_bytes()),
        &["incompatible", "bit 40"],
    );
    expect_error(
        d,
        "version.qcow2",
        &patch(4, &9u32.to_be_bytes()),
        &["version 9"],
    );
    expect_error(
        d,
        "hdrlen.qcow2",
        &patch(100, &0xffff_fff0u32.to_be_bytes()),
        &["header_length"],
    );
    // A header extension whose length runs past the header cluster.
    let ext_at = 112; // qemu writes the first extension right after the 112-byte v3 header
    let mut b = orig.clone();
    b[ext_at + 4..ext_at + 8].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
    expect_error(d, "extlen.qcow2", &b, &["header extension"]);
    expect_error(
        d,
        "backname.qcow2",
        &patch(16, &5000u32.to_be_bytes())
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (8..16).contains(&i) {
                    if i == 15 {
                        0x80
                    } else {
                        0
                    }
                } else {
                    x
                }
            })
            .collect::<Vec<u8>>(),
        &["backing file name"],
    );
}

#[test]
fn truncated_images_error_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (opts, c) in [
        ("cluster_size=65536", true),
        ("extended_l2=on", false),
        ("compat=0.10,cluster_size=4096", false),
    ] {
        let (_, orig) = sample(d, opts, c);
        let mut cuts: Vec<usize> = vec![
            0, 1, 4, 71, 72, 103, 104, 111, 112, 4095, 65535, 65536, 65537,
        ];
        cuts.extend((1..40).map(|i| orig.len() * i / 40));
        cuts.push(orig.len() - 1);
        for cut in cuts {
            let p = d.join(format!("cut{cut}.qcow2"));
            std::fs::write(&p, &orig[..cut.min(orig.len())]).unwrap();
            // Either it reads (the cut spared everything that is mapped) or it errors: never
            // a panic or hang, which exercise() turns into a failure.
            if let Err(msg) = exercise(&p) {
                assert!(msg.contains(&format!("cut{cut}.qcow2")), "{msg}");
            }
        }
    }
}

#[test]
fn mutated_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, (opts, c)) in [
        ("cluster_size=4096", true),
        ("extended_l2=on,cluster_size=16384", false),
        ("compression_type=zstd,cluster_size=4096", true),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, orig) = sample(d, opts, c);
        let l1_off = be64(&orig, 40) as usize;
        let cs = 1usize << u32::from_be_bytes(orig[20..24].try_into().unwrap());
        let hot = [
            (0, 512),
            (l1_off, l1_off + 512),
            (l1_off + cs, l1_off + 4 * cs),
        ];
        let mut errors = 0;
        for (k, m) in mutants(&orig, &hot, 700, 100 + i as u64).enumerate() {
            let p = d.join(format!("m{i}-{k}.qcow2"));
            std::fs::write(&p, m).unwrap();
            if exercise(&p).is_err() {
                errors += 1;
            }
            std::fs::remove_file(&p).unwrap();
        }
        // The mutations hit headers and tables: at least 5% must be caught as errors, or the
        // mutants are not reaching the parsers.
        assert!(
            errors > 35,
            "{opts}: only {errors} of 700 mutants were rejected"
        );
    }
}

/// Inputs that crashed a fuzz target once, kept as regressions (fuzz/fuzz_targets).
#[test]
fn fuzz_regressions() {
    // qcow2_header: backing_file_offset near 2^64 overflowed offset + length.
    let backing_offset_overflow: &[u8] = &[
        81, 70, 73, 251, 0, 0, 0, 3, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 32, 0, 0, 0,
        10, 0, 0, 0, 77, 231, 5, 0, 1, 0, 0, 0, 0, 0, 45, 16, 74, 231, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 2, 0, 0, 0, 0, 0, 0, 0, 231, 0, 0, 0, 0, 0, 0, 0, 73, 0, 0, 77, 231, 5, 0, 1, 0, 0, 0,
        0, 0, 45, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 77, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 104, 0, 0, 0,
    ];
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8])] = &[("backing_offset_overflow", backing_offset_overflow)];
    for &(name, bytes) in cases {
        let r =
            ferry::block::fuzzing::Qcow2Header::parse(bytes, Path::new(name), bytes.len() as u64);
        assert!(r.is_err(), "{name} parsed");
        let p = dir.path().join(format!("{name}.qcow2"));
        std::fs::write(&p, bytes).unwrap();
        assert!(exercise(&p).is_err(), "{name} opened");
    }
}
