//! Mixed-format chains read as qemu reads them: qcow2 over VMDK over raw (a FLAT extent), and
//! qcow2 over a VMDK snapshot over a streamOptimized VMDK.

use crate::common;

use common::*;
use ferry::block;

#[test]
fn qcow2_over_vmdk_over_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 20 << 20, 9);
    // qemu only takes VMDK parents for VMDK: the raw disk enters the chain as VMware does it,
    // as the FLAT extent of a descriptor, with a sparse VMDK snapshot over it.
    let flat = d.join("base.vmdk");
    std::fs::write(
        &flat,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
             # Extent description\nRW {} FLAT \"base.raw\" 0\n# The Disk Data Base\nddb.adapterType = \"lsilogic\"\n",
            (20 << 20) / 512
        ),
    )
    .unwrap();
    let vmdk = d.join("mid.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        vmdk.to_str().unwrap(),
    ]);
    qemu_io(
        "vmdk",
        &vmdk,
        &["write -P 0x21 1M 128k", "write -P 0x22 19M 64k"],
    );
    let top = d.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.vmdk",
        "-F",
        "vmdk",
        top.to_str().unwrap(),
    ]);
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x31 1100k 4k",
            "write -z 5M 1M",
            "write -P 0x32 12345k 3k",
        ],
    );
    let _g = Unchanged::new(&[&raw, &flat, &vmdk, &top]);

    let dev = block::open(&top).unwrap();
    let formats: Vec<String> = block::chain(&dev)
        .iter()
        .map(|l| l.info().unwrap().format)
        .collect();
    assert_eq!(formats, ["qcow2", "vmdk", "vmdk"]);
    let files = block::chain(&dev)[2].info().unwrap().files;
    assert_eq!(files, [d.join("base.raw")]);
    assert!(read_all(&dev, 1 << 20) == qemu_raw(&top, d));
    assert!(read_all(&dev, 3333) == qemu_raw(&top, d));
    assert_map_matches(&dev, &top);
    // Depth says which layer holds each range.
    let ext = dev.extents(0, dev.len()).unwrap();
    let depth_at = |off: u64| {
        ext.iter()
            .find(|e| e.offset <= off && off < e.end())
            .unwrap()
            .depth
    };
    assert_eq!(
        (depth_at(1100 << 10), depth_at(1 << 20), depth_at(2 << 20)),
        (0, 1, 2)
    );
}

#[test]
fn qcow2_over_vmdk_snapshot_over_stream_optimized() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        base.to_str().unwrap(),
        "8M",
    ]);
    let raw = d.join("content.raw");
    make_mixed_raw(&raw, 8 << 20, 4);
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        raw.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let child = d.join("child.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        child.to_str().unwrap(),
    ]);
    qemu_io("vmdk", &child, &["write -P 0x44 2M 1M"]);
    let grandchild = d.join("grandchild.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "child.vmdk",
        "-F",
        "vmdk",
        grandchild.to_str().unwrap(),
    ]);
    qemu_io("qcow2", &grandchild, &["write -P 0x45 2500k 8k"]);
    let dev = block::open(&grandchild).unwrap();
    assert_eq!(block::chain(&dev).len(), 3);
    assert!(read_all(&dev, 1 << 20) == qemu_raw(&grandchild, d));
    assert_map_matches(&dev, &grandchild);
}
