//! Real images written by others (../shared/corpus, see its SOURCES.md) read as qemu-img reads them.

use crate::common;

use common::*;
use ferry::block;

#[test]
fn dissect_qcow2_samples_match_qemu() {
    let Some(c) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let q = c.join("dissect.hypervisor/disk/qcow2");
    for name in ["basic.qcow2.gz", "basic-zstd.qcow2.gz", "snapshot.qcow2.gz"] {
        let img = unpack(&q.join(name), d);
        let _g = Unchanged::new(&[&img]);
        let dev = block::open(&img).unwrap();
        assert!(
            read_all(&dev, 1 << 20) == qemu_raw(&img, d),
            "{name} differs from qemu-img"
        );
        assert_map_matches(&dev, &img);
    }
    // A three-image chain referring to each other by relative name.
    for n in 1..=3 {
        unpack(&q.join(format!("backing-chain-{n}.qcow2.gz")), d);
    }
    let names: Vec<_> = (1..=3)
        .map(|n| d.join(format!("backing-chain-{n}.qcow2")))
        .collect();
    let mut tops = Vec::new();
    for p in &names {
        let dev = block::open(p).unwrap();
        tops.push((p.clone(), block::chain(&dev).len()));
        assert!(
            read_all(&dev, 1 << 20) == qemu_raw(p, d),
            "{} differs from qemu-img",
            p.display()
        );
        assert_map_matches(&dev, p);
    }
    assert!(
        tops.iter().any(|(_, n)| *n == 3),
        "no three-deep chain among {tops:?}"
    );
    // The external data file variant is refused with its reason.
    let img = unpack(&q.join("data-file.qcow2.gz"), d);
    let msg = block::open(&img)
        .err()
        .expect("data-file image opened")
        .to_string();
    assert!(msg.contains("external data file"), "{msg}");
}

#[test]
fn vasi_qcow2_sample_matches_qemu() {
    let Some(c) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = c.join("vasi-qcow2-rs/test.qcow2");
    let _g = Unchanged::new(&[&img]);
    let dev = block::open(&img).unwrap();
    assert!(read_all(&dev, 4 << 20) == qemu_raw(&img, dir.path()));
    assert_map_matches(&dev, &img);
}

#[test]
fn foreign_formats_are_refused_by_name() {
    let Some(c) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (file, needle) in [
        ("dissect.hypervisor/disk/vhd/dynamic.vhd.gz", "VHD"),
        ("dissect.hypervisor/disk/vhd/fixed.vhd.gz", "VHD"),
        ("dissect.hypervisor/disk/vhdx/dynamic.vhdx.gz", "VHDX"),
        ("dissect.hypervisor/disk/vdi/basic.vdi.gz", "VDI"),
    ] {
        let img = unpack(&c.join(file), d);
        let msg = block::open(&img)
            .err()
            .unwrap_or_else(|| panic!("{file} opened as an image"))
            .to_string();
        assert!(msg.contains(needle), "{file}: {msg}");
    }
}
