//! qcow2 reader against qemu-img as the oracle: every subformat qemu makes reads byte for byte as
//! `qemu-img convert -O raw` reads it, and `extents()` classifies like `qemu-img map`.

use crate::common;

use common::*;
use ferry::block::{self, Error};
use std::path::Path;

/// Virtual size used by the differential tests: a few tens of MiB, not a multiple of any cluster.
const SIZE: u64 = 40 * 1024 * 1024 + 7 * 512;

fn check_against_qemu(image: &Path, dir: &Path) {
    // Written back first: with preallocation=falloc, whether a range reads as data or hole
    // (SEEK_DATA over unwritten extents) could otherwise change between qemu's look and ours
    // when something on the machine syncs in between.
    std::fs::File::open(image).unwrap().sync_all().unwrap();
    let _guard = Unchanged::new(&[image]);
    let dev = block::open(image).unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    let want = qemu_raw(image, dir);
    assert_eq!(
        dev.len(),
        want.len() as u64,
        "{}: virtual size",
        image.display()
    );
    assert!(
        read_all(&dev, 1 << 20) == want,
        "{}: 1 MiB reads differ from qemu-img",
        image.display()
    );
    assert!(
        read_all(&dev, 12345) == want,
        "{}: 12345-byte reads differ from qemu-img",
        image.display()
    );
    assert_map_matches(&dev, image);
}

fn base_raw(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("base.raw");
    make_mixed_raw(&raw, SIZE, 7);
    raw
}

#[test]
fn qemu_made_subformats_read_identically() {
    let dir = tempfile::tempdir().unwrap();
    let raw = base_raw(dir.path());
    let variants: &[(&str, &[&str])] = &[
        ("v3", &["-O", "qcow2"]),
        ("v2", &["-O", "qcow2", "-o", "compat=0.10"]),
        ("zlib", &["-O", "qcow2", "-c"]),
        (
            "zstd",
            &["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
        ),
        ("extl2", &["-O", "qcow2", "-o", "extended_l2=on"]),
        ("c512", &["-O", "qcow2", "-o", "cluster_size=512"]),
        ("c2m", &["-O", "qcow2", "-o", "cluster_size=2M"]),
        (
            "c2m-zstd",
            &[
                "-O",
                "qcow2",
                "-c",
                "-o",
                "cluster_size=2M,compression_type=zstd",
            ],
        ),
        ("prealloc", &["-O", "qcow2", "-o", "preallocation=metadata"]),
        ("falloc", &["-O", "qcow2", "-o", "preallocation=falloc"]),
        ("refbits1", &["-O", "qcow2", "-o", "refcount_bits=1"]),
    ];
    for (name, args) in variants {
        let img = dir.path().join(format!("{name}.qcow2"));
        let mut a = vec!["convert"];
        a.extend_from_slice(args);
        a.push(raw.to_str().unwrap());
        a.push(img.to_str().unwrap());
        qemu_img(&a);
        check_against_qemu(&img, dir.path());
    }
}

#[test]
fn zero_clusters_subclusters_and_partial_writes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, opts) in [
        ("std", "cluster_size=65536"),
        ("extl2", "extended_l2=on,cluster_size=65536"),
        ("extl2-c2m", "extended_l2=on,cluster_size=2M"),
        ("v2", "compat=0.10"),
    ] {
        let img = dir.path().join(format!("{name}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            img.to_str().unwrap(),
            "9999872",
        ]);
        qemu_io(
            "qcow2",
            &img,
            &[
                "write -P 0x11 0 64k",
                "write -P 0x22 70k 5k", // partial cluster, odd subclusters
                "write -z 128k 64k",    // zero cluster (plain, v3) / written zeros (v2)
                "write -P 0x33 256k 256k",
                "write -z 300k 8k", // zero inside allocated data (preallocated zero / subcluster zero)
                "write -P 0x44 9999360 512", // the last sector
                "discard 400k 64k",
            ],
        );
        check_against_qemu(&img, dir.path());
    }
}

#[test]
fn backing_chains_qcow2_over_qcow2_over_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A raw base shorter than the layers above: reads past its end are zeros.
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 6 << 20, 3);
    let mid = d.join("mid.qcow2");
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        mid.to_str().unwrap(),
        "8M",
    ]);
    qemu_io(
        "qcow2",
        &mid,
        &[
            "write -P 0x5a 1M 192k",
            "write -z 2M 64k",
            "write -P 0x5b 7M 64k",
        ],
    );
    // Backing without a recorded format: probed (qemu probes too).
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "10M",
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x77 1100k 4k",
            "write -z 5M 1M",
            "write -P 0x78 9M 4k",
        ],
    );
    let _g = Unchanged::new(&[&raw, &mid, &top]);
    check_against_qemu(&top, d);
    let dev = block::open(&top).unwrap();
    let layers = block::chain(&dev);
    assert_eq!(layers.len(), 3);
    let formats: Vec<String> = layers.iter().map(|l| l.info().unwrap().format).collect();
    assert_eq!(formats, ["qcow2", "qcow2", "raw"]);
    let top_info = layers[0].info().unwrap();
    assert_eq!(top_info.backing_filename.as_deref(), Some("mid.qcow2"));
    assert_eq!(
        top_info.full_backing_filename.as_deref(),
        Some(mid.as_path())
    );
}

#[test]
fn backing_format_is_probed_when_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "4M"]);
    qemu_io("qcow2", &base, &["write -P 0x61 0 1M"]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    // qemu-img 10 always records the backing format: turn its header extension into an unknown
    // one, which the reader must skip, leaving the format to be probed.
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes[..4096]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    std::fs::write(&top, bytes).unwrap();
    assert!(block::open(&top)
        .unwrap()
        .info()
        .unwrap()
        .backing_format
        .is_none());
    check_against_qemu(&top, d);
}

#[test]
fn chain_loops_and_missing_backing_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = d.join("a.qcow2");
    let b = d.join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", a.to_str().unwrap(), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        b.to_str().unwrap(),
    ]);
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        a.to_str().unwrap(),
    ]);
    match block::open(&b) {
        Err(Error::ChainLoop { .. }) => {}
        Err(e) => panic!("expected a chain loop error, got {e}"),
        Ok(_) => panic!("a looping chain opened"),
    }
    // A self-reference through another name (a symlink) is the same file.
    let c = d.join("c.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", c.to_str().unwrap(), "1M"]);
    std::os::unix::fs::symlink("c.qcow2", d.join("c-link.qcow2")).unwrap();
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "c-link.qcow2",
        "-F",
        "qcow2",
        c.to_str().unwrap(),
    ]);
    assert!(matches!(block::open(&c), Err(Error::ChainLoop { .. })));

    let orphan = d.join("orphan.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "gone.qcow2",
        "-F",
        "qcow2",
        orphan.to_str().unwrap(),
        "1M",
    ]);
    let err = block::open(&orphan)
        .err()
        .expect("opened with a missing backing file");
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingBacking { .. }), "{msg}");
    assert!(
        msg.contains("orphan.qcow2") && msg.contains("gone.qcow2"),
        "{msg}"
    );
}

#[test]
fn deep_chain_reads_through_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        d.join("l0.qcow2").to_str().unwrap(),
        "2M",
    ]);
    for i in 1..40 {
        let img = d.join(format!("l{i}.qcow2"));
        let prev = format!("l{}.qcow2", i - 1);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &prev,
            "-F",
            "qcow2",
            img.to_str().unwrap(),
        ]);
        qemu_io("qcow2", &img, &[&format!("write -P {i} {} 512", i * 4096)]);
    }
    check_against_qemu(&d.join("l39.qcow2"), d);
}

#[test]
fn sparse_terabyte_opens_with_small_state() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1T"]);
    qemu_io("qcow2", &img, &["write -P 0xaa 700G 64k"]);
    let dev = block::open(&img).unwrap();
    assert_eq!(dev.len(), 1 << 40);
    let ext = dev.extents(0, dev.len()).unwrap();
    assert_eq!(ext.len(), 3, "{ext:?}");
    assert_eq!((ext[1].offset, ext[1].length), (700 << 30, 65536));
    let mut buf = vec![0u8; 65536];
    dev.read_at(&mut buf, 700 << 30).unwrap();
    assert!(buf.iter().all(|&b| b == 0xaa));
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let enc = d.join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s0,data=pw",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0",
        enc.to_str().unwrap(),
        "1M",
    ]);
    let msg = block::open(&enc)
        .err()
        .expect("encrypted image opened")
        .to_string();
    assert!(msg.contains("encrypted"), "{msg}");

    let ext = d.join("ext.qcow2");
    // An absolute name: qemu-img creates a relative one in its working directory.
    let data_file = format!("data_file={}", d.join("ext.data").display());
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &data_file,
        ext.to_str().unwrap(),
        "1M",
    ]);
    let msg = block::open(&ext)
        .err()
        .expect("external data file image opened")
        .to_string();
    assert!(
        msg.contains("external data file") && msg.contains("ext.data"),
        "{msg}"
    );
}

#[test]
fn random_unaligned_reads_match_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("r.raw");
    make_mixed_raw(&raw, 9 << 20, 21);
    let base = d.join("base.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        raw.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=65536",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "10M",
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 1 3000k 5k",
            "write -z 4M 10k",
            "write -P 2 9215k 2k",
            "discard 6M 64k",
        ],
    );
    let want = qemu_raw(&top, d);
    let dev = block::open(&top).unwrap();
    let r = pseudo_random(99, 3000 * 16);
    for k in 0..3000 {
        let w = |i: usize| {
            u64::from_le_bytes(r[k * 16 + i * 8..k * 16 + i * 8 + 8].try_into().unwrap())
        };
        let off = w(0) % dev.len();
        // Mostly small reads, some up to 300 KiB, never past the end.
        let max = if w(1) % 4 == 0 { 300 << 10 } else { 9000 };
        let len = (w(1) >> 8) % max.min(dev.len() - off) + 1;
        let mut buf = vec![0u8; len as usize];
        dev.read_at(&mut buf, off).unwrap();
        assert!(
            buf[..] == want[off as usize..(off + len) as usize],
            "read {off:#x}+{len} differs"
        );
    }
    // Reads past the end are errors, not short reads.
    let mut b = [0u8; 2];
    assert!(dev.read_at(&mut b, dev.len() - 1).is_err());
}

#[test]
fn concurrent_readers_see_the_same_bytes() {
    // FUSE serves requests on several threads through one device: caches and parallel inflation
    // must not mix up clusters between readers.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("r.raw");
    make_mixed_raw(&raw, 24 << 20, 17);
    let img = d.join("c.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "compression_type=zstd,cluster_size=16384",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let want = std::sync::Arc::new(qemu_raw(&img, d));
    let dev = block::open(&img).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (dev, want) = (dev.clone(), want.clone());
            s.spawn(move || {
                let r = pseudo_random(1000 + t, 800 * 16);
                for k in 0..800 {
                    let w = |i: usize| {
                        u64::from_le_bytes(
                            r[k * 16 + i * 8..k * 16 + i * 8 + 8].try_into().unwrap(),
                        )
                    };
                    let off = w(0) % dev.len();
                    let len = (w(1) % (1 << 20) + 1).min(dev.len() - off);
                    let mut buf = vec![0u8; len as usize];
                    dev.read_at(&mut buf, off).unwrap();
                    assert!(
                        buf[..] == want[off as usize..(off + len) as usize],
                        "thread {t}: read {off:#x}+{len} differs"
                    );
                }
            });
        }
    });
}
