//! `ferry convert -O vmdk`: every subformat passes `qemu-img check`, `qemu-img compare` equals
//! the source, the descriptor (create type, adapter, hardware version, geometry) matches what
//! qemu-img itself writes for the same size and adapter, and ferry reads its output back equal.

use crate::common;

use common::{ferry_ok, have_tools, make_mixed_raw, qemu_img, run_ferry, Unchanged};
use ferry::block::fuzzing::Vmdk;
use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SUBFORMATS: &[&str] = &["streamOptimized", "monolithicSparse", "monolithicFlat"];

/// The ddb keys qemu-img writes that ferry must write the same.
const DDB: &[&str] = &[
    "adapterType",
    "virtualHWVersion",
    "geometry.cylinders",
    "geometry.heads",
    "geometry.sectors",
];

fn ddb(img: &Path) -> Vec<(String, Option<String>)> {
    let v = Vmdk::open_path(img).unwrap();
    let d = v.descriptor().expect("a descriptor");
    DDB.iter()
        .map(|k| {
            let v = d.ddb(k).map(str::to_string);
            assert!(v.is_some(), "{}: no ddb.{k}", img.display());
            (k.to_string(), v)
        })
        .collect()
}

/// Converts `src` to `dst` with `opts` and checks it with qemu-img and ferry's reader.
fn convert_and_check(src: &Path, dst: &Path, subformat: &str, extra: &str) {
    let o = format!("subformat={subformat}{extra}");
    let stats: serde_json::Value = serde_json::from_str(&ferry_ok(&[
        "convert",
        s(src),
        "-O",
        "vmdk",
        "-o",
        &o,
        "--json",
        s(dst),
    ]))
    .unwrap();
    assert!(stats["virtual_size"].as_u64().unwrap() > 0, "{stats}");
    let chk = Command::new("qemu-img")
        .arg("check")
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        chk.status.success(),
        "qemu-img check {o} {}: {}{}",
        dst.display(),
        String::from_utf8_lossy(&chk.stdout),
        String::from_utf8_lossy(&chk.stderr)
    );
    qemu_img(&["compare", s(src), s(dst)]);
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", s(dst)])).unwrap();
    let spec = &info["format-specific"]["data"];
    assert_eq!(info["format"], "vmdk");
    assert_eq!(spec["create-type"], subformat, "{info}");
    assert_eq!(
        spec["extents"][0]["compressed"].as_bool().unwrap_or(false),
        subformat == "streamOptimized",
        "{info}"
    );
    // ferry reads it back equal (a source not a multiple of 512 reads back padded with zeros).
    let dev = ferry::block::open(dst).unwrap();
    let want = std::fs::read(src).unwrap();
    let got = common::read_all(&dev, 1 << 20);
    assert!(got.len() >= want.len() && got.len() - want.len() < 512);
    assert!(got[..want.len()] == want[..] && got[want.len()..].iter().all(|&b| b == 0));
}

#[test]
fn convert_to_each_subformat_equals_the_source() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 40 MiB + 1000: two grain tables, the last grain and the last sector partial.
    let mixed = d.join("mixed.raw");
    make_mixed_raw(&mixed, (40 << 20) + 1000, 7);
    // 200 MiB with data only at both ends: grain tables with nothing in between.
    let sparse = d.join("sparse.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len((200 << 20) + (64 << 10) + 512).unwrap();
        f.write_all_at(&common::pseudo_random(3, 100_000), 12345)
            .unwrap();
        f.write_all_at(&common::pseudo_random(4, 70_000), 200 << 20)
            .unwrap();
    }
    let _g = Unchanged::new(&[&mixed, &sparse]);
    for (i, src) in [&mixed, &sparse].into_iter().enumerate() {
        for sf in SUBFORMATS {
            let dst = d.join(format!("{i}-{sf}.vmdk"));
            convert_and_check(src, &dst, sf, "");
        }
    }
    // An empty disk: qemu cannot open an empty sparse VMDK, so ferry refuses to write one and
    // leaves nothing behind; a flat one is fine.
    let empty = d.join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    for sf in ["streamOptimized", "monolithicSparse"] {
        let dst = d.join(format!("empty-{sf}.vmdk"));
        let o = format!("subformat={sf}");
        let out = run_ferry(&["convert", s(&empty), "-O", "vmdk", "-o", &o, s(&dst)]);
        assert!(!out.status.success() && !dst.exists(), "{sf}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("empty disk"),
            "{sf}"
        );
    }
    let dst = d.join("empty-flat.vmdk");
    ferry_ok(&[
        "convert",
        s(&empty),
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        s(&dst),
    ]);
    qemu_img(&["compare", s(&empty), s(&dst)]);
    // Sparse outputs hold only data: far smaller than the 200 MiB disk.
    for sf in ["streamOptimized", "monolithicSparse"] {
        let len = std::fs::metadata(d.join(format!("1-{sf}.vmdk")))
            .unwrap()
            .len();
        assert!(len < 2 << 20, "{sf}: {len} bytes");
    }
}

#[test]
fn descriptor_matches_qemu_img() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    make_mixed_raw(&src, (100 << 20) + 3584, 9);
    let size = std::fs::metadata(&src).unwrap().len().to_string();
    // qemu-img 10 knows these adapters; ferry also takes pvscsi (ESXi's paravirtual SCSI).
    for (sf, adapter, hw) in [
        ("streamOptimized", "lsilogic", "7"),
        ("monolithicSparse", "ide", "4"),
        ("monolithicFlat", "buslogic", "6"),
        ("streamOptimized", "legacyESX", "4"),
    ] {
        let ours = d.join(format!("ours-{sf}-{adapter}.vmdk"));
        convert_and_check(
            &src,
            &ours,
            sf,
            &format!(",adapter_type={adapter},hwversion={hw}"),
        );
        let theirs = d.join(format!("theirs-{sf}-{adapter}.vmdk"));
        let o = format!("subformat={sf},adapter_type={adapter},hwversion={hw}");
        qemu_img(&["create", "-q", "-f", "vmdk", "-o", &o, s(&theirs), &size]);
        assert_eq!(ddb(&ours), ddb(&theirs), "{o}");
        let v = Vmdk::open_path(&ours).unwrap();
        let desc = v.descriptor().unwrap();
        assert_eq!(desc.create_type.as_deref(), Some(sf));
        assert_eq!(desc.parent_cid, None);
    }
    let pv = d.join("pv.vmdk");
    convert_and_check(&src, &pv, "streamOptimized", ",adapter_type=pvscsi");
    assert_eq!(ddb(&pv)[0].1.as_deref(), Some("pvscsi"));
    // Unknown options are refused, naming the known ones.
    for bad in [
        "subformat=twoGbMaxExtentSparse",
        "adapter_type=scsi",
        "hwversion=x",
    ] {
        let o = run_ferry(&[
            "convert",
            s(&src),
            "-O",
            "vmdk",
            "-o",
            bad,
            s(&d.join("bad.vmdk")),
        ]);
        assert!(!o.status.success(), "{bad}");
        assert!(!d.join("bad.vmdk").exists(), "{bad}");
    }
}

#[test]
fn corpus_vmdks_round_trip() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let Some(c) = common::corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut srcs = Vec::new();
    for f in [
        "DiskAccessLibrary-VMDK/MonolithicSparse.vmdk",
        "DiskAccessLibrary-VMDK/StreamOptimized.vmdk",
        "qemu-iotests-sample_images/iotest-version3.vmdk.bz2",
    ] {
        let p = c.join(f);
        if !p.exists() {
            eprintln!("SKIP: {} absent", p.display());
            continue;
        }
        srcs.push(common::unpack(&p, d));
    }
    let refs: Vec<&Path> = srcs.iter().map(|p| p.as_path()).collect();
    let _g = Unchanged::new(&refs);
    for src in &srcs {
        for sf in SUBFORMATS {
            let dst = d.join(format!(
                "rt-{}-{sf}.vmdk",
                src.file_stem().unwrap().to_string_lossy()
            ));
            ferry_ok(&[
                "convert",
                s(src),
                "-O",
                "vmdk",
                "-o",
                &format!("subformat={sf}"),
                s(&dst),
            ]);
            qemu_img(&["check", s(&dst)]);
            qemu_img(&["compare", s(src), s(&dst)]);
            // And through ferry's own reader, over the source's data (the samples are 10 GiB
            // disks; qemu-img compare above covered the holes).
            let (a, b) = (
                ferry::block::open(src).unwrap(),
                ferry::block::open(&dst).unwrap(),
            );
            assert_eq!(a.len(), b.len());
            let mut compared = 0u64;
            ferry::block::for_each_extent(
                a.as_ref(),
                0,
                a.len(),
                |e| -> ferry::block::Result<()> {
                    if e.kind != ferry::block::ExtentKind::Data {
                        return Ok(());
                    }
                    let (mut x, mut y) =
                        (vec![0u8; e.length as usize], vec![0u8; e.length as usize]);
                    a.read_at(&mut x, e.offset)?;
                    b.read_at(&mut y, e.offset)?;
                    assert!(x == y, "{} -> {sf} at {}", src.display(), e.offset);
                    compared += e.length;
                    Ok(())
                },
            )
            .unwrap();
            assert!(compared > 0, "{}: no data", src.display());
        }
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Walks a streamOptimized file front to back as a streaming importer does: grains in
/// increasing LBA order, every grain table after the grains it maps, then the grain directory,
/// the footer and the end-of-stream marker at the very end.
#[test]
fn stream_optimized_reads_front_to_back() {
    if !have_tools(&["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.raw");
    make_mixed_raw(&src, (70 << 20) + 1000, 5);
    let dst = d.join("s.vmdk");
    ferry_ok(&[
        "convert",
        s(&src),
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&dst),
    ]);
    let f = std::fs::read(&dst).unwrap();
    let h = ferry::block::fuzzing::VmdkSparseHeader::parse(&f[..512], &dst).unwrap();
    assert_eq!(
        h.gd_offset,
        u64::MAX,
        "the header defers the directory to the footer"
    );
    assert!(h.compressed() && h.version == 3);
    let grains_per_gt = h.grain_size * u64::from(h.num_gtes_per_gt);
    let mut at = (h.overhead * 512) as usize;
    let (mut last_lba, mut grains, mut gts, mut gd_seen) = (None::<u64>, 0, 0u64, false);
    loop {
        assert!(at + 512 <= f.len(), "ran off the end at {at}");
        let (val, size) = (le_u64(&f, at), le_u32(&f, at + 8));
        if size != 0 {
            assert!(!gd_seen, "grain after the directory");
            assert!(
                last_lba.is_none_or(|l| val > l),
                "grain LBA {val} out of order"
            );
            // Its grain table is not written yet.
            assert_eq!(val / grains_per_gt, gts, "grain {val} after its table");
            last_lba = Some(val);
            grains += 1;
            at += (12 + size as usize).next_multiple_of(512);
            continue;
        }
        match le_u32(&f, at + 12) {
            1 => gts += 1,
            2 => gd_seen = true,
            3 => {
                let footer =
                    ferry::block::fuzzing::VmdkSparseHeader::parse(&f[at + 512..], &dst).unwrap();
                assert!(gd_seen);
                // The footer's directory is the one just before it.
                let gd = (footer.gd_offset * 512) as usize;
                assert_eq!(le_u32(&f, gd - 512 + 12), 2, "footer's gdOffset");
            }
            0 => {
                assert_eq!(at + 512, f.len(), "end-of-stream marker is last");
                break;
            }
            t => panic!("unknown marker type {t} at {at}"),
        }
        at += 512 * (1 + val as usize);
    }
    assert_eq!(gts, h.gd_entries(), "one grain table per directory entry");
    assert!(grains > 100, "{grains} grains");
}
