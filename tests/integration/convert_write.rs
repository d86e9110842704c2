//! `ferry convert -O qcow2` and `ferry commit`: every image written passes `qemu-img check` and
//! `qemu-img compare` equals the source; sources stay unchanged; a full disk fails cleanly.

use crate::common;

use common::{
    ferry_ok, have_tools, make_mixed_raw, map_json_shape, qemu_img, qemu_io, run_ferry, Unchanged,
};
use std::path::Path;
use std::process::Command;

fn check_json(image: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `qemu-img map` without host offsets: which guest ranges are compressed, plain or zero.
fn map_json(image: &Path) -> Vec<(u64, u64, bool, bool, bool)> {
    common::qemu_map(image)
        .into_iter()
        .map(|e| (e.start, e.length, e.compressed, e.data, e.zero))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn convert_to_qcow2_equals_the_source() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    // An odd size: the last sector is partial, as some real raw images are.
    make_mixed_raw(&src, (40 << 20) + 1000, 21);
    let _g = Unchanged::new(&[&src]);
    let cases: &[(&[&str], &str)] = &[
        (&[], "zlib"),
        (&["-c"], "zlib"),
        (&["-o", "compression=zstd"], "zstd"),
        (&["-o", "compat=0.10,cluster_size=4k"], "v2"),
        (&["-c", "-o", "cluster_size=2M"], "zlib"),
        (&["-o", "cluster_size=512"], "zlib"),
    ];
    for (i, (opts, kind)) in cases.iter().enumerate() {
        let dst = d.join(format!("o{i}.qcow2"));
        let mut args = vec!["convert", s(&src), "-O", "qcow2", "--json"];
        args.extend_from_slice(opts);
        args.push(s(&dst));
        let stats: serde_json::Value = serde_json::from_str(&ferry_ok(&args)).unwrap();
        let chk = check_json(&dst);
        assert_eq!(
            chk["corruptions"].as_u64().unwrap_or(0),
            0,
            "{opts:?}: {chk}"
        );
        assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{opts:?}: {chk}");
        qemu_img(&["compare", s(&src), s(&dst)]);
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", s(&dst)])).unwrap();
        let spec = &info["format-specific"]["data"];
        let compressed = chk["compressed-clusters"].as_u64().unwrap_or(0);
        match *kind {
            "v2" => assert_eq!(spec["compat"], "0.10"),
            k => {
                assert_eq!(spec["compat"], "1.1");
                assert_eq!(spec["compression-type"], k, "{opts:?}");
            }
        }
        let wants_compressed = opts.contains(&"-c") || opts.contains(&"compression=zstd");
        assert_eq!(compressed > 0, wants_compressed, "{opts:?}: {chk}");
        // Holes of the source are neither read nor allocated (2 MiB clusters are each larger
        // than the source's holes, so there every cluster holds some data).
        assert!(
            opts.contains(&"cluster_size=2M") || stats["bytes_skipped"].as_u64().unwrap() > 4 << 20,
            "{stats}"
        );
        // ferry reads its own output back equal too.
        let dev = ferry::block::open(&dst).unwrap();
        let raw = std::fs::read(&src).unwrap();
        let got = common::read_all(&dev, 1 << 20);
        assert!(got[..raw.len()] == raw[..] && got[raw.len()..].iter().all(|&b| b == 0));
    }
}

#[test]
fn convert_qcow2_from_vmdk_and_qcow2_chains() {
    if !have_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("r.raw");
    make_mixed_raw(&raw, 24 << 20, 4);
    let stream = d.join("s.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&stream),
    ]);
    let zq = d.join("z.qcow2");
    qemu_img(&["convert", "-q", "-c", "-O", "qcow2", s(&raw), s(&zq)]);
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "z.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qemu_io("qcow2", &top, &["write -P 0x5a 3M 1M", "write -z 8M 4M"]);
    let _g = Unchanged::new(&[&stream, &zq, &top]);
    for (i, src) in [&stream, &top].iter().enumerate() {
        let dst = d.join(format!("out{i}.qcow2"));
        ferry_ok(&["convert", s(src), "-O", "qcow2", s(&dst)]);
        check_json(&dst);
        qemu_img(&["compare", s(src), s(&dst)]);
    }
}

#[test]
fn commit_writes_the_merged_view() {
    if !have_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("base.raw");
    make_mixed_raw(&src, 16 << 20, 9);
    let ov = d.join("ov.qcow2");
    ferry_ok(&["overlay", "create", s(&src), s(&ov)]);
    qemu_io("qcow2", &ov, &["write -P 0x77 100k 2M", "write -z 6M 1M"]);
    let _g = Unchanged::new(&[&src, &ov]);
    for fmt in ["qcow2", "raw"] {
        let dst = d.join(format!("merged.{fmt}"));
        ferry_ok(&["commit", s(&ov), "-O", fmt, s(&dst)]);
        if fmt == "qcow2" {
            check_json(&dst);
            let info = qemu_img(&["info", s(&dst)]);
            assert!(!info.contains("backing file"), "{info}");
        }
        qemu_img(&["compare", s(&ov), s(&dst)]);
    }
    // Committing onto the overlay's own source is refused.
    let o = run_ferry(&["commit", s(&ov), "-O", "raw", s(&src)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to write over"));
}

#[test]
fn corpus_vmdk_converts_like_qemu() {
    let Some(c) = common::corpus() else { return };
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = common::unpack(
        &c.join("qemu-iotests-sample_images/iotest-version3.vmdk.bz2"),
        d,
    );
    let _g = Unchanged::new(&[&img]);
    let dst = d.join("v.qcow2");
    ferry_ok(&["convert", s(&img), "-O", "qcow2", "-c", s(&dst)]);
    check_json(&dst);
    qemu_img(&["compare", s(&img), s(&dst)]);
}

#[test]
fn a_full_disk_fails_cleanly() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("big.raw");
    make_mixed_raw(&src, 48 << 20, 2);
    let mnt = d.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: cannot mount a small tmpfs (not root?); ENOSPC test not run");
        return;
    }
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Umount(&mnt);
    // Every target; the VMDKs too (a streamOptimized file is only complete with its footer,
    // a flat one is two files, both removed).
    let cases: &[(&str, &[&str], &str)] = &[
        ("qcow2", &[], "out.qcow2"),
        ("raw", &[], "out.raw"),
        ("vmdk", &["-o", "subformat=monolithicSparse"], "sparse.vmdk"),
        ("vmdk", &["-o", "subformat=streamOptimized"], "stream.vmdk"),
        ("vmdk", &["-o", "subformat=monolithicFlat"], "flat.vmdk"),
    ];
    for (fmt, opts, name) in cases {
        let dst = mnt.join(name);
        let mut args = vec!["convert", s(&src), "-O", fmt];
        args.extend_from_slice(opts);
        args.push(s(&dst));
        let o = run_ferry(&args);
        assert_eq!(o.status.code(), Some(1), "{fmt} {opts:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("No space left on device"),
            "{fmt} {opts:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let left: Vec<_> = std::fs::read_dir(&mnt).unwrap().collect();
        assert!(
            left.is_empty(),
            "{fmt} {opts:?}: a half-written output was left behind: {left:?}"
        );
    }
    // Random data (stored VMDK grains are barely smaller than the source) fills it too.
    let rnd = d.join("rnd.raw");
    std::fs::write(&rnd, common::pseudo_random(5, 12 << 20)).unwrap();
    let dst = mnt.join("rnd.vmdk");
    let o = run_ferry(&[
        "convert",
        s(&rnd),
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&dst),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"));
    assert!(!dst.exists());
}

#[test]
fn an_existing_output_is_replaced_only_with_overwrite() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    make_mixed_raw(&src, 8 << 20, 21);
    let ov = d.join("ov.qcow2");
    ferry_ok(&["overlay", "create", s(&src), s(&ov)]);
    let _g = Unchanged::new(&[&src, &ov]);
    let cases: &[(&str, &[&str], &str)] = &[
        ("raw", &[], "out.raw"),
        ("qcow2", &[], "out.qcow2"),
        ("vmdk", &["-o", "subformat=monolithicFlat"], "flat.vmdk"),
    ];
    for (fmt, opts, name) in cases {
        let dst = d.join(name);
        std::fs::write(&dst, b"precious").unwrap();
        for cmd in ["convert", "commit"] {
            let src_arg = if cmd == "convert" { &src } else { &ov };
            let mut args = vec![cmd, s(src_arg), "-O", fmt];
            args.extend_from_slice(opts);
            args.push(s(&dst));
            let o = run_ferry(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{cmd} {fmt}: {err}");
            assert!(
                err.contains("already exists") && err.contains("--overwrite"),
                "{cmd} {fmt}: {err}"
            );
            assert_eq!(std::fs::read(&dst).unwrap(), b"precious", "{cmd} {fmt}");
            args.insert(1, "--overwrite");
            ferry_ok(&args);
            qemu_img(&["compare", s(&src), s(&dst)]);
            std::fs::write(&dst, b"precious").unwrap();
        }
    }
    // A monolithicFlat output's extent counts as the output too.
    let flat = d.join("f.vmdk");
    std::fs::write(d.join("f-flat.vmdk"), b"precious").unwrap();
    let o = run_ferry(&[
        "convert",
        s(&src),
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&flat),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("f-flat.vmdk: already exists"));
    assert!(!flat.exists());
    assert_eq!(std::fs::read(d.join("f-flat.vmdk")).unwrap(), b"precious");
}

#[test]
fn converting_onto_the_source_is_refused_for_every_target() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk-flat.vmdk"); // a raw file named as a flat extent
    make_mixed_raw(&raw, 4 << 20, 3);
    let q = d.join("base.qcow2");
    qemu_img(&["convert", "-q", "-O", "qcow2", s(&raw), s(&q)]);
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
        s(&top),
    ]);
    let flat_desc = d.join("f.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&raw),
        s(&flat_desc),
    ]);
    let link = d.join("link.raw");
    std::os::unix::fs::symlink(&raw, &link).unwrap();
    let hard = d.join("hard.raw");
    std::fs::hard_link(&raw, &hard).unwrap();
    let _g = Unchanged::new(&[&raw, &q, &top, &flat_desc, &d.join("f-flat.vmdk")]);
    let targets: &[(&str, &[&str])] = &[
        ("raw", &[]),
        ("qcow2", &[]),
        ("qcow2", &["-c"]),
        ("qcow2", &["-o", "preallocation=metadata"]),
        ("vmdk", &["-o", "subformat=monolithicSparse"]),
        ("vmdk", &["-o", "subformat=streamOptimized"]),
        ("vmdk", &["-o", "subformat=monolithicFlat"]),
    ];
    // (source, output): the file itself, a backing file of its chain, a symlink and a hard
    // link to it, a flat descriptor's extent.
    let pairs = [
        (&raw, &raw),
        (&top, &top),
        (&top, &q),
        (&raw, &link),
        (&raw, &hard),
        (&flat_desc, &d.join("f-flat.vmdk")),
        (&flat_desc, &flat_desc),
    ];
    for (src, dst) in pairs {
        for (fmt, opts) in targets {
            let mut args = vec!["convert", s(src), "-O", fmt];
            args.extend_from_slice(opts);
            args.push(s(dst));
            let o = run_ferry(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.contains("refusing to write over"),
                "{} -> {} as {fmt} {opts:?}: {err}",
                src.display(),
                dst.display()
            );
        }
    }
    // A monolithicFlat output whose extent would be the source ("disk.vmdk" writes
    // "disk-flat.vmdk").
    let o = run_ferry(&[
        "convert",
        s(&raw),
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&d.join("disk.vmdk")),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to write over"));
    assert!(!d.join("disk.vmdk").exists());
    // And commit: onto the overlay itself or its source.
    let ov = d.join("ov.qcow2");
    ferry_ok(&["overlay", "create", s(&q), s(&ov)]);
    for dst in [&ov, &q] {
        let o = run_ferry(&["commit", s(&ov), "-O", "qcow2", s(dst)]);
        assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to write over"));
    }
}

#[test]
fn json_summary_counts_what_was_read_written_and_skipped() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    make_mixed_raw(&src, (24 << 20) + 300, 17);
    let _g = Unchanged::new(&[&src]);
    let bytes = std::fs::read(&src).unwrap();
    // The oracle: qemu-img map's data extents of the source are what is read; of those, the
    // 4 KiB blocks that are not all zeros are what a raw output gets written.
    let data: Vec<(u64, u64)> = common::qemu_map_classes(&src)
        .into_iter()
        .filter(|(_, _, c)| c.data)
        .map(|(a, n, _)| (a, n))
        .collect();
    let read: u64 = data.iter().map(|e| e.1).sum();
    let written: u64 = data
        .iter()
        .flat_map(|&(a, n)| {
            (a..a + n)
                .step_by(4096)
                .map(move |b| (b, (b + 4096).min(a + n)))
        })
        .filter(|&(b, e)| bytes[b as usize..e as usize].iter().any(|&x| x != 0))
        .map(|(b, e)| e - b)
        .sum();
    assert!(
        read < bytes.len() as u64 && written < read,
        "a source with holes and zeros"
    );
    let dst = d.join("o.raw");
    let v: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "convert",
        s(&src),
        "-O",
        "raw",
        "--json",
        s(&dst),
    ]))
    .unwrap();
    assert_eq!(v["virtual_size"], bytes.len() as u64, "{v}");
    assert_eq!(v["bytes_read"], read, "{v}");
    assert_eq!(v["bytes_skipped"], bytes.len() as u64 - read, "{v}");
    assert_eq!(v["bytes_written"], written, "{v}");
    assert!(v["seconds"].as_f64().unwrap() > 0.0, "{v}");
    qemu_img(&["compare", s(&src), s(&dst)]);
    // The raw output holds exactly what was written (its data per qemu-img map).
    let out: u64 = common::qemu_map_classes(&dst)
        .iter()
        .filter(|(_, _, c)| c.data)
        .map(|e| e.1)
        .sum();
    assert_eq!(out, written);
    // qcow2 reads whole clusters; what it writes is whole non-zero clusters, which is what
    // qemu-img check counts as allocated.
    let q = d.join("o.qcow2");
    let v: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "convert",
        s(&src),
        "-O",
        "qcow2",
        "--json",
        s(&q),
    ]))
    .unwrap();
    let chk = check_json(&q);
    let clusters = chk["allocated-clusters"].as_u64().unwrap();
    let w = v["bytes_written"].as_u64().unwrap();
    assert_eq!(w.div_ceil(64 << 10), clusters, "{v} {chk}");
    assert_eq!(
        v["bytes_read"].as_u64().unwrap() + v["bytes_skipped"].as_u64().unwrap(),
        bytes.len() as u64
    );
    // commit --json: the same summary.
    let ov = d.join("ov.qcow2");
    ferry_ok(&["overlay", "create", s(&src), s(&ov)]);
    let v: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "commit",
        s(&ov),
        "-O",
        "raw",
        "--json",
        s(&d.join("c.raw")),
    ]))
    .unwrap();
    assert_eq!(v["bytes_read"], read, "{v}");
    assert_eq!(v["bytes_written"], written, "{v}");
}

#[test]
fn commit_into_source_writes_back_raw_and_qcow2() {
    if !have_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 16 << 20, 13);
    let q = d.join("base.qcow2");
    qemu_img(&["convert", "-q", "-O", "qcow2", s(&raw), s(&q)]);
    for src in [&raw, &q] {
        let ov = d.join("ov.qcow2");
        let _ = std::fs::remove_file(&ov);
        ferry_ok(&["overlay", "create", s(src), s(&ov)]);
        qemu_io(
            "qcow2",
            &ov,
            &[
                "write -P 0x31 1000 3M",
                "write -z 7M 2M",
                "write -P 9 15M 4097",
            ],
        );
        let want = common::qemu_raw(&ov, d);
        // Not a terminal and no --yes: refused, source untouched.
        let g = Unchanged::new(&[src]);
        let o = run_ferry(&["commit", s(&ov), "--into-source"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
        drop(g);
        let stats: serde_json::Value = serde_json::from_str(&ferry_ok(&[
            "commit",
            s(&ov),
            "--into-source",
            "--yes",
            "--json",
        ]))
        .unwrap();
        // Only the overlay's own clusters were written (3 MiB + 2 MiB + 2 clusters, rounded).
        let w = stats["bytes_written"].as_u64().unwrap();
        assert!(w < 6 << 20, "{stats}");
        assert!(
            common::qemu_raw(src, d) == want,
            "{} after commit",
            src.display()
        );
        if src == &q {
            check_json(&q);
        }
    }
    // A VMDK source is refused with its reason.
    let v = d.join("base.vmdk");
    qemu_img(&["convert", "-q", "-O", "vmdk", s(&raw), s(&v)]);
    let ov = d.join("ovv.qcow2");
    ferry_ok(&["overlay", "create", s(&v), s(&ov)]);
    let _g = Unchanged::new(&[&v]);
    let o = run_ferry(&["commit", s(&ov), "--into-source", "--yes"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only into raw or qcow2"));
}

/// `qemu-img map --output=json` as (start, length, zero, data, host offset).
fn map_shape(image: &Path) -> Vec<(u64, u64, bool, bool, Option<u64>)> {
    map_json_shape(&serde_json::from_str(&qemu_img(&["map", "--output=json", s(image)])).unwrap())
}

#[test]
fn preallocation_metadata_and_lazy_refcounts_as_qemu() {
    if !have_tools(&["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Three L2 tables at 64 KiB clusters (512 MiB each), data in each, a partial last sector.
    let src = d.join("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len((1100 << 20) + 700).unwrap();
    drop(f);
    for (at, seed) in [
        (0u64, 1u64),
        (600 << 20, 2),
        ((1100 << 20) + 700 - (5 << 20), 3),
    ] {
        common::write_into(&src, at, &{
            let p = d.join(format!("piece{seed}"));
            make_mixed_raw(&p, 5 << 20, seed);
            p
        });
    }
    assert_eq!(std::fs::metadata(&src).unwrap().len(), (1100 << 20) + 700);
    let _g = Unchanged::new(&[&src]);
    for (opts, cs) in [
        ("preallocation=metadata", 64u64 << 10),
        ("preallocation=metadata,cluster_size=2M", 2 << 20),
        (
            "preallocation=metadata,compat=0.10,cluster_size=16k",
            16 << 10,
        ),
        ("preallocation=off", 64 << 10),
    ] {
        let ours = d.join("ours.qcow2");
        let theirs = d.join("theirs.qcow2");
        ferry_ok(&[
            "convert",
            s(&src),
            "-O",
            "qcow2",
            "-o",
            opts,
            "--overwrite",
            s(&ours),
        ]);
        qemu_img(&["convert", "-O", "qcow2", "-o", opts, s(&src), s(&theirs)]);
        let chk = check_json(&ours);
        assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{opts}: {chk}");
        assert_eq!(chk["corruptions"].as_u64().unwrap_or(0), 0, "{opts}: {chk}");
        qemu_img(&["compare", s(&src), s(&ours)]);
        // Same layout as qemu's: every cluster allocated, each L2 table followed by its
        // clusters in guest order, so the map (with host offsets) and the file length agree.
        let (a, b) = (map_shape(&ours), map_shape(&theirs));
        if opts.contains("metadata") {
            assert_eq!(a, b, "{opts}: qemu-img map differs from qemu's own");
        } else {
            // Without preallocation the host offsets are the allocator's choice: the same
            // bytes are data, zero or unallocated.
            let merged = |v: Vec<(u64, u64, bool, bool, Option<u64>)>| {
                let mut out: Vec<(u64, u64, bool, bool)> = Vec::new();
                for (start, len, zero, data, _) in v {
                    match out.last_mut() {
                        Some(l) if (l.2, l.3) == (zero, data) => l.1 += len,
                        _ => out.push((start, len, zero, data)),
                    }
                }
                out
            };
            assert_eq!(
                merged(a.clone()),
                merged(b),
                "{opts}: qemu-img map differs from qemu's own"
            );
        }
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        if opts.contains("metadata") {
            assert!(a.iter().all(|e| e.3), "{opts}: not all allocated: {a:?}");
            assert_eq!(len(&ours), len(&theirs), "{opts}: file length");
            let alloc = chk["allocated-clusters"].as_u64().unwrap();
            assert_eq!(alloc, len(&src).div_ceil(cs), "{opts}: {chk}");
        }
    }
    // Compression and preallocation exclude each other, as in qemu-img.
    let o = run_ferry(&[
        "convert",
        s(&src),
        "-O",
        "qcow2",
        "-c",
        "-o",
        "preallocation=metadata",
        s(&d.join("x.qcow2")),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exclude each other"));
    let o = run_ferry(&[
        "convert",
        s(&src),
        "-O",
        "qcow2",
        "-o",
        "preallocation=full",
        s(&d.join("x.qcow2")),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not supported"));

    // lazy_refcounts=on is recorded; the image is left clean, qemu then writes it with lazy
    // refcounts (setting and clearing the dirty bit itself) and ferry can write it after.
    let lazy = d.join("lazy.qcow2");
    ferry_ok(&[
        "convert",
        s(&src),
        "-O",
        "qcow2",
        "-o",
        "lazy_refcounts=on",
        s(&lazy),
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", s(&lazy)])).unwrap();
    let spec = &info["format-specific"]["data"];
    assert_eq!(spec["lazy-refcounts"], true, "{info}");
    assert_eq!(spec["corrupt"], false, "{info}");
    assert!(info["dirty-flag"].as_bool() != Some(true), "{info}");
    check_json(&lazy);
    qemu_io("qcow2", &lazy, &["write -P 0x42 700M 3M"]);
    check_json(&lazy);
    let w = ferry::block::Qcow2Writer::open(&lazy).unwrap();
    use ferry::block::BlockDevice;
    w.write_at(&[7u8; 100_000], 900 << 20).unwrap();
    w.flush().unwrap();
    drop(w);
    let chk = check_json(&lazy);
    assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{chk}");
    // qemu killed while writing with lazy refcounts leaves the dirty bit set: ferry reads the
    // image (with a warning) but does not write it; qemu repairs it when it opens it for writing.
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x43 10M 1M", "-c", "abort"])
        .arg(&lazy)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", s(&lazy)])).unwrap();
    assert_eq!(info["dirty-flag"], true, "{info}");
    let err = match ferry::block::Qcow2Writer::open(&lazy) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a dirty image was opened for writing"),
    };
    assert!(
        err.contains("dirty") && err.contains("qemu-img check -r all"),
        "{err}"
    );
    let r = ferry::block::open(&lazy).unwrap();
    let mut b = vec![0u8; 1 << 20];
    r.read_at(&mut b, 10 << 20).unwrap();
    assert!(b.iter().all(|&x| x == 0x43));
    let o = run_ferry(&[
        "convert",
        s(&src),
        "-O",
        "qcow2",
        "-o",
        "lazy_refcounts=on,compat=0.10",
        s(&d.join("x.qcow2")),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("compat=1.1"));
}

#[test]
fn an_interrupted_convert_leaves_nothing() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.raw");
    // Text compresses slowly enough that every target is still being written when the
    // signal comes.
    make_mixed_raw(&src, 768 << 20, 11);
    let _same = Unchanged::new(&[&src]);
    let cases: [(&[&str], &str, i32); 4] = [
        (&["-O", "qcow2", "-c"], "out.qcow2", libc::SIGINT),
        (
            &["-O", "vmdk", "-o", "subformat=streamOptimized"],
            "out.vmdk",
            libc::SIGTERM,
        ),
        (&["-O", "raw", "--threads", "1"], "out.raw", libc::SIGINT),
        (
            &[
                "-O",
                "vmdk",
                "-o",
                "subformat=monolithicFlat",
                "--threads",
                "1",
            ],
            "flat.vmdk",
            libc::SIGTERM,
        ),
    ];
    for (args, out, sig) in cases {
        let dst = d.path().join(out);
        let child = Command::new(common::ferry_bin())
            .arg("convert")
            .arg(&src)
            .args(args)
            .arg(&dst)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The signal comes once the output exists (the handler that removes it is in place by
        // then) and some data is written: a fixed delay lost the race to a fast raw copy.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while others(d.path()).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        // SAFETY: a plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(128 + sig), "{args:?}: {err}");
        assert!(err.contains("interrupted by SIG"), "{args:?}: {err}");
        let left = others(d.path());
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// What `dir` holds besides the source `src.raw`.
fn others(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "src.raw")
        .collect()
}

/// A raw source of `size` bytes: random data with zero runs of 2k, 8k, 32k and 100k inside it
/// (the sizes `-S` tells apart), after a 1 MiB hole and before a hole to the end.
fn zero_runs_raw(path: &Path, size: u64) {
    let mut b = common::pseudo_random(17, 1 << 20);
    for (off, n) in [
        (100 << 10, 2048),
        (200 << 10, 8192),
        (300 << 10, 32768),
        (500 << 10, 100 << 10),
    ] {
        b[off..off + n].fill(0);
    }
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &b, 1 << 20).unwrap();
}

/// `qemu-img map` of `image` as one bool per 4 KiB block: allocated with data.
fn data_blocks(image: &Path, fmt: &str) -> Vec<bool> {
    let out = qemu_img(&["map", "--output=json", "-f", fmt, s(image)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut blocks = Vec::new();
    for e in v.as_array().unwrap() {
        let n = e["length"].as_u64().unwrap() / 4096;
        let data = e["data"].as_bool().unwrap();
        blocks.extend(std::iter::repeat_n(data, n as usize));
    }
    blocks
}

#[test]
fn sparse_threshold_allocates_as_qemu_img() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    zero_runs_raw(&src, 8 << 20);
    let _g = Unchanged::new(&[&src]);
    for sparse in ["0", "4k", "64k", "1M"] {
        for fmt in ["raw", "qcow2"] {
            let theirs = d.join(format!("q{sparse}.{fmt}"));
            let ours = d.join(format!("f{sparse}.{fmt}"));
            qemu_img(&["convert", "-S", sparse, "-O", fmt, s(&src), s(&theirs)]);
            ferry_ok(&["convert", "-S", sparse, "-O", fmt, s(&src), s(&ours)]);
            qemu_img(&["compare", "-q", s(&src), s(&ours)]);
            let (mut q, f) = (data_blocks(&theirs, fmt), data_blocks(&ours, fmt));
            // qemu-img allocates the first 4 KiB of every raw file it creates (so that
            // O_DIRECT probing works there), whatever -S says; not a sparseness rule.
            if fmt == "raw" && sparse != "0" {
                q[0] = f[0];
            }
            assert_eq!(
                q, f,
                "-S {sparse} -O {fmt}: allocation differs from qemu-img's"
            );
        }
    }
    let o = run_ferry(&[
        "convert",
        "-S",
        "1000",
        "-O",
        "raw",
        s(&src),
        s(&d.join("x")),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("multiple of 512"));
}

#[test]
fn convert_n_writes_into_an_existing_image_as_qemu_img() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    zero_runs_raw(&src, 8 << 20);
    let fill = d.join("fill.raw");
    std::fs::write(&fill, common::pseudo_random(5, 10 << 20)).unwrap();
    let _g = Unchanged::new(&[&src, &fill]);
    // Raw: identical pre-filled targets, larger than the source; byte-identical results
    // (the old data past the source's size kept, its zeros written over old data).
    let (q, f) = (d.join("q.raw"), d.join("f.raw"));
    std::fs::copy(&fill, &q).unwrap();
    std::fs::copy(&fill, &f).unwrap();
    qemu_img(&["convert", "-n", "-O", "raw", s(&src), s(&q)]);
    ferry_ok(&["convert", "-n", "-O", "raw", s(&src), s(&f)]);
    assert!(
        std::fs::read(&q).unwrap() == std::fs::read(&f).unwrap(),
        "raw -n differs"
    );
    // qcow2: pre-filled the same way; equal contents, a clean image.
    let (q, f) = (d.join("q.qcow2"), d.join("f.qcow2"));
    for t in [&q, &f] {
        qemu_img(&["convert", "-O", "qcow2", s(&fill), s(t)]);
    }
    qemu_img(&["convert", "-n", "-O", "qcow2", s(&src), s(&q)]);
    ferry_ok(&["convert", "-n", "-O", "qcow2", s(&src), s(&f)]);
    qemu_img(&["compare", s(&q), s(&f)]);
    let chk = check_json(&f);
    assert_eq!(chk["corruptions"].as_u64().unwrap_or(0), 0, "{chk}");
    assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{chk}");
    // Refused, target untouched: missing, smaller than the source, not of the -O format.
    let small = d.join("small.raw");
    std::fs::write(&small, vec![7u8; 1 << 20]).unwrap();
    let smallq = d.join("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&smallq), "1M"]);
    let fbytes = std::fs::read(d.join("f.raw")).unwrap();
    for (fmt, dst, why) in [
        ("raw", d.join("missing.raw"), "does not exist"),
        ("raw", small.clone(), "smaller than the source"),
        ("qcow2", smallq.clone(), "smaller than the source"),
        ("qcow2", d.join("f.raw"), "not a qcow2 image"),
    ] {
        let before = std::fs::read(&dst).ok();
        let o = run_ferry(&["convert", "-n", "-O", fmt, s(&src), s(&dst)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{dst:?}: {err}");
        assert_eq!(std::fs::read(&dst).ok(), before, "{dst:?} changed");
    }
    assert!(!d.join("missing.raw").exists());
    assert_eq!(std::fs::read(d.join("f.raw")).unwrap(), fbytes);
}

/// `convert -n -c`: into an empty qcow2 the clusters are stored compressed with the image's
/// own compression type, as qemu-img stores them (same map, size within 1%); into a qcow2
/// that already holds data qemu-img fails with EIO, and ferry writes those clusters plain:
/// the content is the source's and the image stays clean. A raw target is refused.
#[test]
fn convert_n_c_compresses_into_an_existing_qcow2() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 6 MiB: text, a 1 MiB run of zeros, random data (stored plain), text.
    let src = d.join("src.raw");
    let mut data = Vec::new();
    let mut n = 0u64;
    while data.len() < 2 << 20 {
        n += 1;
        data.extend_from_slice(format!("line {n} of a log file, nothing to see\n").as_bytes());
    }
    data.truncate(2 << 20);
    data.extend(std::iter::repeat_n(0u8, 1 << 20));
    data.extend(common::pseudo_random(9, 1 << 20));
    data.extend_from_within(..2 << 20);
    std::fs::write(&src, &data).unwrap();
    let _g = Unchanged::new(&[&src]);
    let compressed = |p: &Path| -> u64 {
        let m = qemu_img(&["map", "--output=json", s(p)]);
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["compressed"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum()
    };
    for ty in ["zlib", "zstd"] {
        let (q, f) = (
            d.join(format!("q-{ty}.qcow2")),
            d.join(format!("f-{ty}.qcow2")),
        );
        for t in [&q, &f] {
            let o = format!("compression_type={ty}");
            qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, s(t), "8M"]);
        }
        qemu_img(&["convert", "-n", "-c", "-O", "qcow2", s(&src), s(&q)]);
        ferry_ok(&["convert", "-n", "-c", "-O", "qcow2", s(&src), s(&f)]);
        qemu_img(&["compare", "-q", s(&q), s(&f)]);
        let (cq, cf) = (compressed(&q), compressed(&f));
        assert!(cf >= 4 << 20, "{ty}: only {cf} bytes compressed");
        assert_eq!(cq, cf, "{ty}: compressed bytes differ from qemu-img's");
        let (qs, fs) = (
            std::fs::metadata(&q).unwrap().len(),
            std::fs::metadata(&f).unwrap().len(),
        );
        assert!(
            fs * 100 <= qs * 101,
            "{ty}: ferry {fs} > qemu-img {qs} + 1%"
        );
        let chk = check_json(&f);
        assert_eq!(chk["corruptions"].as_u64().unwrap_or(0), 0, "{chk}");
        assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{chk}");
    }
    // Into an image full of other data: qemu-img fails, ferry writes the source whole.
    let fill = d.join("fill.raw");
    std::fs::write(&fill, common::pseudo_random(5, 8 << 20)).unwrap();
    let (q, f) = (d.join("q-full.qcow2"), d.join("f-full.qcow2"));
    for t in [&q, &f] {
        qemu_img(&["convert", "-O", "qcow2", s(&fill), s(t)]);
    }
    let o = Command::new("qemu-img")
        .args(["convert", "-n", "-c", "-O", "qcow2", s(&src), s(&q)])
        .output()
        .unwrap();
    assert!(!o.status.success(), "qemu-img compressed over data");
    ferry_ok(&["convert", "-n", "-c", "-O", "qcow2", s(&src), s(&f)]);
    let out = d.join("f-full.raw");
    qemu_img(&["convert", "-O", "raw", s(&f), s(&out)]);
    let got = std::fs::read(&out).unwrap();
    assert!(got[..6 << 20] == data[..], "the source's bytes");
    assert!(
        got[6 << 20..] == std::fs::read(&fill).unwrap()[6 << 20..],
        "past the source: kept"
    );
    let chk = check_json(&f);
    assert_eq!(chk["corruptions"].as_u64().unwrap_or(0), 0, "{chk}");
    assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{chk}");
    // Raw has no compressed clusters.
    let raw = d.join("t.raw");
    std::fs::write(&raw, vec![1u8; 8 << 20]).unwrap();
    let o = run_ferry(&["convert", "-n", "-c", "-O", "raw", s(&src), s(&raw)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("qcow2 images only"),
        "{err}"
    );
    assert!(std::fs::read(&raw).unwrap().iter().all(|&b| b == 1));
}

#[test]
fn compressed_clusters_pack_as_tightly_as_qemu() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("text.raw");
    // 64 MiB of log-like text: words from a small vocabulary, so clusters compress to a few
    // KiB each and how they are packed decides the file size.
    let vocab: Vec<String> = common::pseudo_random(9, 4000)
        .chunks(8)
        .map(|c| {
            c.iter()
                .map(|b| (b'a' + b % 26) as char)
                .take(2 + (c[0] % 7) as usize)
                .collect()
        })
        .collect();
    let picks = common::pseudo_random(11, 16 << 20);
    let mut text = Vec::with_capacity(64 << 20);
    let mut line = 0u64;
    let mut p = picks.iter().cycle();
    while text.len() < 64 << 20 {
        line += 1;
        text.extend_from_slice(format!("{line:08} host{}:", p.next().unwrap() % 50).as_bytes());
        for _ in 0..4 + p.next().unwrap() % 10 {
            text.push(b' ');
            text.extend_from_slice(vocab[*p.next().unwrap() as usize % vocab.len()].as_bytes());
        }
        text.push(b'\n');
    }
    text.truncate(64 << 20);
    std::fs::write(&src, &text).unwrap();
    let _g = Unchanged::new(&[&src]);
    for opts in [&[][..], &["-o", "compression_type=zstd"][..]] {
        let (q, f) = (d.join("q.qcow2"), d.join("f.qcow2"));
        let _ = std::fs::remove_file(&q);
        let _ = std::fs::remove_file(&f);
        let mut qa = vec!["convert", "-c", "-O", "qcow2"];
        qa.extend_from_slice(opts);
        qa.extend([s(&src), s(&q)]);
        qemu_img(&qa);
        let mut fa = vec!["convert", "-c", "-O", "qcow2"];
        fa.extend_from_slice(opts);
        fa.extend([s(&src), s(&f)]);
        ferry_ok(&fa);
        let (qs, fs) = (
            std::fs::metadata(&q).unwrap().len(),
            std::fs::metadata(&f).unwrap().len(),
        );
        eprintln!("-c {opts:?}: ferry {fs} bytes, qemu-img {qs} bytes");
        if opts.is_empty() {
            // zlib: the same C deflate with qemu's parameters, so the same clusters compress
            // to the same lengths: the same map and a file no larger than qemu-img's.
            assert!(fs <= qs, "zlib: ferry {fs} > qemu-img {qs}");
            assert_eq!(
                map_json(&f),
                map_json(&q),
                "zlib: the compressed clusters differ from qemu-img's"
            );
        } else {
            // zstd: ferry's bundled libzstd (1.5.7) is a newer release than the one qemu
            // links (Debian 12: 1.5.4) and compresses this text 0.06% tighter; the packing
            // is qemu's, so the file is no larger.
            assert!(fs <= qs, "zstd: ferry {fs} > qemu-img {qs}");
        }
        let chk = check_json(&f);
        assert_eq!(chk["corruptions"].as_u64().unwrap_or(0), 0, "{chk}");
        assert_eq!(chk["leaks"].as_u64().unwrap_or(0), 0, "{chk}");
        qemu_img(&["compare", s(&src), s(&f)]);
    }
}
