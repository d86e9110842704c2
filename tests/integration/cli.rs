//! The `ferry` binary as a user runs it: info/map/convert against qemu-img's answers.

use crate::common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn chain_fixture(d: &Path) -> std::path::PathBuf {
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 24 << 20, 5);
    let mid = d.join("mid.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "compression_type=zstd",
        raw.to_str().unwrap(),
        mid.to_str().unwrap(),
    ]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
        "30M",
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x42 3M 300k",
            "write -z 8M 2M",
            "write -P 0x43 29M 64k",
        ],
    );
    top
}

#[test]
fn convert_is_identical_to_qemu_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let top = chain_fixture(d);
    let _g = Unchanged::new(&[&top, &d.join("mid.qcow2")]);
    let out = d.join("out.raw");
    let stats: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "convert",
        top.to_str().unwrap(),
        "-O",
        "raw",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let want = qemu_raw(&top, d);
    let got = std::fs::read(&out).unwrap();
    assert!(got == want, "ferry convert differs from qemu-img convert");
    let size = stats["virtual_size"].as_u64().unwrap();
    assert_eq!(size, want.len() as u64);
    assert_eq!(
        stats["bytes_read"].as_u64().unwrap() + stats["bytes_skipped"].as_u64().unwrap(),
        size
    );
    // Sparse: nothing beyond the non-zero 4 KiB blocks is allocated in the output.
    let nonzero_blocks = want
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64;
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated <= nonzero_blocks * 4096 + (1 << 20),
        "output not sparse: {allocated} bytes allocated for {nonzero_blocks} data blocks"
    );
    assert_eq!(
        stats["bytes_written"].as_u64().unwrap(),
        nonzero_blocks * 4096
    );
    // One worker gives the same bytes.
    let out1 = d.join("out1.raw");
    ferry_ok(&[
        "convert",
        "--threads",
        "1",
        top.to_str().unwrap(),
        "-O",
        "raw",
        out1.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out1).unwrap() == want);
}

#[test]
fn info_json_describes_the_chain_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let top = chain_fixture(dir.path());
    let ours: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "info",
        "--json",
        "--backing-chain",
        top.to_str().unwrap(),
    ]))
    .unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--backing-chain",
        "--output=json",
        top.to_str().unwrap(),
    ]))
    .unwrap();
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        for k in [
            "format",
            "virtual-size",
            "cluster-size",
            "backing-filename",
            "backing-filename-format",
            "actual-size",
            "format-specific",
        ] {
            assert_eq!(o[k], t[k], "{k}");
        }
    }
    let text = ferry_ok(&["info", top.to_str().unwrap()]);
    assert!(
        text.contains("backing file: mid.qcow2") && text.contains("compression_type: zstd"),
        "{text}"
    );
}

#[test]
fn map_json_is_qemu_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let top = chain_fixture(dir.path());
    let ours: serde_json::Value =
        serde_json::from_str(&ferry_ok(&["map", "--json", top.to_str().unwrap()])).unwrap();
    let theirs = qemu_map_classes(&top);
    let ours: Vec<(u64, u64, Class)> = ours
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (data, zero) = (e["data"].as_bool().unwrap(), e["zero"].as_bool().unwrap());
            let c = Class {
                data: data && !zero,
                zero,
                present: e["present"].as_bool().unwrap(),
            };
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                c,
            )
        })
        .collect();
    // Every byte classified alike: expand both to boundaries and compare.
    let class_at = |v: &[(u64, u64, Class)], at: u64| {
        v.iter()
            .find(|(s, l, _)| *s <= at && at < s + l)
            .map(|x| x.2)
    };
    let mut points: Vec<u64> = ours.iter().chain(theirs.iter()).map(|x| x.0).collect();
    points.sort_unstable();
    points.dedup();
    for p in points {
        assert_eq!(class_at(&ours, p), class_at(&theirs, p), "at {p:#x}");
    }
    // Depths agree too: compressed data lives one layer down.
    assert!(ferry_ok(&["map", top.to_str().unwrap()]).contains("data*  1"));
}

#[test]
fn convert_refuses_to_overwrite_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let top = chain_fixture(d);
    let mid = d.join("mid.qcow2");
    let g = Unchanged::new(&[&top, &mid]);
    for target in [&top, &mid] {
        let o = run_ferry(&[
            "convert",
            top.to_str().unwrap(),
            "-O",
            "raw",
            target.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("refusing to write over"), "{err}");
    }
    drop(g);
}

#[test]
fn errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run_ferry(&["info", d.join("nope.qcow2").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope.qcow2") && err.contains("cannot open"),
        "{err}"
    );
    let o = run_ferry(&["convert", "x", "-O", "vhdx", "y"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not supported"));
    // -f raw shows a qcow2 file's own bytes.
    let img = d.join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    let info: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "info",
        "-f",
        "raw",
        "--json",
        img.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["format"], "raw");
    assert_eq!(
        info["virtual-size"].as_u64().unwrap(),
        std::fs::metadata(&img).unwrap().len()
    );
}

#[test]
fn convert_fails_cleanly_on_a_corrupt_table_mid_copy() {
    // A bad L2 table far into the image: the copy starts, a reader fails, and every thread of
    // the copy engine must stop and report it (no hang, exit status 1, the structure named).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("r.raw");
    make_mixed_raw(&raw, 20 << 20, 3);
    let img = d.join("c.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let mut b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    // L1 entry 5 (4 KiB clusters: 2 MiB per L2 table, so guest 10-12 MiB) → past the end.
    b[l1 + 5 * 8..l1 + 6 * 8].copy_from_slice(&(0x8000_0000_0000_0000u64 | 1 << 40).to_be_bytes());
    std::fs::write(&img, &b).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let args: Vec<String> = [
        "convert",
        img.to_str().unwrap(),
        "-O",
        "raw",
        d.join("o.raw").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let _ = tx.send(run_ferry(&a));
    });
    let o = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("ferry convert hung on a corrupt image");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("qcow2 L2 table") && err.contains("c.qcow2"),
        "{err}"
    );
}

/// `ferry map | head -1`: when the reader goes away, ferry stops quietly with success.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let d = tempfile::tempdir().unwrap();
    let img = chain_fixture(d.path());
    let mut child = std::process::Command::new(ferry_bin())
        .args(["map", img.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
