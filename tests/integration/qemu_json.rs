//! qemu-img's JSON habits (issue 17): `ferry info --json` is `qemu-img info --output=json`
//! key for key (qapi ImageInfo: kebab-case, "format-specific" as type and data, the chain as an
//! array with --backing-chain) for qcow2 (v2, v3, zstd, lazy refcounts, dirty, backing files),
//! raw and every VMDK subformat qemu-img creates; and `--output=json` is accepted wherever
//! `--json` is.

use crate::common::{self, ferry_ok, qemu_img, qemu_io};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Keys ferry adds to qemu's top level (qemu uses none of these names).
const FERRY_TOP: &[&str] = &["allocated", "files", "warnings"];
/// Keys ferry adds inside "format-specific" data.
const FERRY_DATA: &[&str] = &[
    "adapter-type",
    "hw-version",
    "uuid",
    "internal-snapshots",
    "has-bitmaps",
];
/// qemu keys ferry does not emit: the protocol layer under the format, internal snapshots.
const QEMU_ONLY: &[&str] = &["children", "snapshots"];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every key qemu prints is in `ours` with the same value (objects and arrays compared the
/// same way, recursively); `ours` has no other key than those `extra` allows.
fn assert_like_qemu(ours: &Value, theirs: &Value, extra: &[&str], at: &str) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, tv) in t {
                if QEMU_ONLY.contains(&k.as_str()) {
                    continue;
                }
                let Some(ov) = o.get(k) else {
                    panic!("{at}: ferry has no \"{k}\" (qemu: {tv})\nours: {ours:#}")
                };
                let inner = if k == "data" { FERRY_DATA } else { &[] };
                assert_like_qemu(ov, tv, inner, &format!("{at}.{k}"));
            }
            for k in o.keys() {
                assert!(
                    t.contains_key(k) || extra.contains(&k.as_str()),
                    "{at}: ferry's \"{k}\" is neither qemu's nor one of ferry's known extras"
                );
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            assert_eq!(
                o.len(),
                t.len(),
                "{at}: lengths\nours: {ours:#}\nqemu: {theirs:#}"
            );
            for (i, (a, b)) in o.iter().zip(t).enumerate() {
                assert_like_qemu(a, b, &[], &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(ours, theirs, "{at}"),
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `ferry info` against `qemu-img info`, the image alone and the whole chain.
fn compare(image: &Path) {
    let ours = json(&ferry_ok(&["info", "--json", s(image)]));
    let theirs = json(&qemu_img(&["info", "--output=json", s(image)]));
    assert_like_qemu(&ours, &theirs, FERRY_TOP, &image.display().to_string());
    let ours = json(&ferry_ok(&[
        "info",
        "--output=json",
        "--backing-chain",
        s(image),
    ]));
    let theirs = json(&qemu_img(&[
        "info",
        "--output=json",
        "--backing-chain",
        s(image),
    ]));
    let (o, t) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(o.len(), t.len(), "{}: chain length", image.display());
    for (i, (a, b)) in o.iter().zip(t).enumerate() {
        assert_like_qemu(a, b, FERRY_TOP, &format!("{}[{i}]", image.display()));
    }
}

fn images(d: &Path) -> Vec<PathBuf> {
    let p = |n: &str| d.join(n);
    let mut out = Vec::new();
    let raw = p("base.raw");
    common::make_mixed_raw(&raw, 12 << 20, 5);
    out.push(raw.clone());
    for (name, opts) in [
        ("v3.qcow2", "compat=1.1"),
        ("v2.qcow2", "compat=0.10,cluster_size=4k"),
        ("zstd.qcow2", "compression_type=zstd,refcount_bits=8"),
        ("lazy.qcow2", "lazy_refcounts=on"),
    ] {
        let q = p(name);
        qemu_img(&["convert", "-q", "-O", "qcow2", "-o", opts, s(&raw), s(&q)]);
        out.push(q);
    }
    // A chain: qcow2 over qcow2 over raw, names relative.
    let mid = p("mid.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&mid),
    ]);
    let top = p("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io("qcow2", &top, &["write -P 0x5a 1M 64k"]);
    out.push(top);
    // Dirty: qemu killed while writing with lazy refcounts.
    let dirty = p("dirty.qcow2");
    std::fs::copy(p("lazy.qcow2"), &dirty).unwrap();
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x43 1M 1M", "-c", "abort"])
        .arg(&dirty)
        .output()
        .unwrap();
    assert!(!o.status.success());
    out.push(dirty);
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let v = p(&format!("{sub}.vmdk"));
        let o = format!("subformat={sub}");
        qemu_img(&["convert", "-q", "-O", "vmdk", "-o", &o, s(&raw), s(&v)]);
        out.push(v);
    }
    // A VMDK snapshot (parent CID, parentFileNameHint).
    let snap = p("snap.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "monolithicSparse.vmdk",
        "-F",
        "vmdk",
        s(&snap),
    ]);
    out.push(snap);
    out
}

#[test]
fn info_json_is_qemu_imgs() {
    if !common::have_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for image in images(dir.path()) {
        compare(&image);
    }
}

#[test]
fn output_json_is_accepted_wherever_json_is() {
    if !common::have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    common::make_mixed_raw(&raw, 4 << 20, 3);
    let q = d.join("disk.qcow2");
    qemu_img(&["convert", "-q", "-O", "qcow2", s(&raw), s(&q)]);
    for args in [vec!["info", s(&q)], vec!["map", s(&q)], vec!["hash", s(&q)]] {
        let mut a = args.clone();
        a.insert(1, "--json");
        let with_json = ferry_ok(&a);
        a[1] = "--output=json";
        assert_eq!(ferry_ok(&a), with_json, "{args:?}");
        let mut a = args.clone();
        a.insert(1, "--output");
        a.insert(2, "json");
        assert_eq!(ferry_ok(&a), with_json, "{args:?}");
        a[2] = "human";
        assert_eq!(ferry_ok(&a), ferry_ok(&args), "{args:?}");
    }
    // A convert's summary.
    let out = d.join("out.raw");
    let stats = json(&ferry_ok(&[
        "convert",
        "--output=json",
        s(&q),
        "-O",
        "raw",
        s(&out),
    ]));
    assert_eq!(stats["virtual_size"], 4 << 20);
    let o = common::run_ferry(&["info", "--output=yaml", s(&q)]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown output format is a usage error"
    );
}
