//! Volume discovery against the real tools: disks partitioned by sfdisk, filesystems made by
//! mkfs.*, converted by qemu-img; `sfdisk --json` and `blkid -p` are the oracles.

use crate::common;

use common::*;
use ferry::volume::{self, Volume, VolumeKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// What blkid said about each partition number.
type Expected = BTreeMap<u32, BTreeMap<String, String>>;

/// Runs `mkfs` for every partition of `image` that has a command, on a file of the partition's
/// size, records blkid's view of it and writes it into the image at the partition's offset.
fn fill(dir: &Path, image: &Path, mkfs: &[(u32, &str, &[&str])]) -> Expected {
    let table = sfdisk_json(image);
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let mut expected = Expected::new();
    for (number, cmd, args) in mkfs {
        let p = &parts
            .iter()
            .find(|p| p["node"].as_str().unwrap().ends_with(&number.to_string()))
            .unwrap();
        let start = p["start"].as_u64().unwrap() * 512;
        let size = p["size"].as_u64().unwrap() * 512;
        let file = dir.join(format!("part{number}"));
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        let mut a: Vec<&str> = args.to_vec();
        let f = file.to_str().unwrap().to_string();
        a.push(&f);
        run_tool(cmd, &a);
        let b = blkid(&file);
        assert!(b.contains_key("TYPE"), "blkid sees nothing in part{number}");
        expected.insert(*number, b);
        write_into(image, start, &file);
        std::fs::remove_file(&file).unwrap();
    }
    expected
}

fn disk_vols<'a>(vols: &'a [Volume], disk: &str) -> Vec<&'a Volume> {
    vols.iter()
        .filter(|v| v.parent.as_deref() == Some(disk) && v.kind != VolumeKind::Free)
        .collect()
}

/// Checks the volumes of `disk` against sfdisk's table of `raw` and blkid's view of each
/// partition's content.
fn check(vols: &[Volume], disk: &str, raw: &Path, expected: &Expected) {
    let t = sfdisk_json(raw);
    let t = &t["partitiontable"];
    let d = vols.iter().find(|v| v.name == disk).expect("disk volume");
    let ti = d.table.as_ref().expect("table");
    let label = t["label"].as_str().unwrap();
    assert_eq!(ti.kind.as_str(), if label == "dos" { "mbr" } else { "gpt" });
    let id = t["id"].as_str().unwrap().to_lowercase();
    assert_eq!(ti.id, id);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    let parts = t["partitions"].as_array().unwrap();
    let ours = disk_vols(vols, disk);
    assert_eq!(ours.len(), parts.len(), "partition count");
    for p in parts {
        let node = p["node"].as_str().unwrap();
        let number: u32 = node[raw.to_str().unwrap().len()..].parse().unwrap();
        let name = format!("{disk}{number}");
        let v = ours
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let pi = v.partition.as_ref().unwrap();
        assert_eq!(v.offset, p["start"].as_u64().unwrap() * 512, "{name} start");
        assert_eq!(v.size, p["size"].as_u64().unwrap() * 512, "{name} size");
        assert_eq!(
            pi.type_id,
            p["type"].as_str().unwrap().to_lowercase(),
            "{name} type"
        );
        assert!(v.warnings.is_empty(), "{name}: {:?}", v.warnings);
        if label == "gpt" {
            assert_eq!(pi.name.as_deref(), p["name"].as_str(), "{name} name");
            assert_eq!(
                pi.uuid.as_deref().unwrap(),
                p["uuid"].as_str().unwrap().to_lowercase(),
                "{name} partuuid"
            );
        } else {
            let want = format!("{}-{number:02x}", id.trim_start_matches("0x"));
            assert_eq!(pi.uuid.as_deref(), Some(want.as_str()), "{name} partuuid");
            assert_eq!(
                v.kind == VolumeKind::ExtendedPartition,
                matches!(p["type"].as_str().unwrap(), "5" | "f" | "85")
            );
        }
        match expected.get(&number) {
            Some(b) => {
                let c = v
                    .content
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: no content"));
                assert_eq!(c.fstype, b["TYPE"], "{name} TYPE");
                assert_eq!(c.uuid.as_ref(), b.get("UUID"), "{name} UUID");
                assert_eq!(c.label.as_ref(), b.get("LABEL"), "{name} LABEL");
                if let (Some(ours), Some(theirs)) = (&c.version, b.get("VERSION")) {
                    assert_eq!(ours, theirs, "{name} VERSION");
                }
                if let Some(sub) = b.get("UUID_SUB") {
                    assert_eq!(c.uuid_sub.as_ref(), Some(sub), "{name} UUID_SUB");
                }
            }
            None if v.kind == VolumeKind::Partition => {
                assert!(v.content.is_none(), "{name}: {:?}", v.content)
            }
            None => {}
        }
    }
}

/// The raw image and its qcow2 and vmdk conversions.
fn formats(raw: &Path) -> Vec<PathBuf> {
    let mut out = vec![raw.to_path_buf()];
    for fmt in ["qcow2", "vmdk"] {
        let p = raw.with_extension(fmt);
        qemu_img(&[
            "convert",
            "-O",
            fmt,
            raw.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        out.push(p);
    }
    out
}

fn discover(paths: &[&Path]) -> Vec<Volume> {
    let disks: Vec<Arc<dyn ferry::block::BlockDevice>> = paths
        .iter()
        .map(|p| ferry::block::open(p).unwrap())
        .collect();
    volume::discover(&disks).unwrap()
}

const MBR_SCRIPT: &str = "label: dos\n\
    size=32MiB, type=83\n\
    size=32MiB, type=83\n\
    size=40MiB, type=e\n\
    type=5\n\
    size=32MiB, type=83\n\
    size=300MiB, type=83\n\
    size=64MiB, type=7\n";

const GPT_SCRIPT: &str = "label: gpt\n\
    size=64MiB, type=L, name=root\n\
    size=128MiB, type=L, name=data\n\
    size=64MiB, type=U, name=\"EFI system\"\n\
    size=32MiB, type=L, name=crypt\n\
    size=16MiB, type=S, name=swap\n";

const MBR_TOOLS: &[&str] = &[
    "sfdisk",
    "blkid",
    "dd",
    "mkfs.ext2",
    "mkfs.ext3",
    "mkfs.xfs",
    "mkfs.vfat",
    "mkfs.ntfs",
    "cryptsetup",
];
const GPT_TOOLS: &[&str] = &[
    "sfdisk",
    "blkid",
    "dd",
    "mkfs.ext4",
    "mkfs.btrfs",
    "mkfs.vfat",
    "cryptsetup",
    "mkswap",
];

/// MBR: 3 primaries (ext2, LUKS1, FAT16) and an extended partition with 3 logicals (ext3, XFS,
/// NTFS).
fn build_mbr(dir: &Path) -> (PathBuf, Expected) {
    let raw = dir.join("mbr.raw");
    sfdisk_image(&raw, 600 * MIB, MBR_SCRIPT);
    let key = dir.join("key");
    std::fs::write(&key, b"not a secret").unwrap();
    let key_arg = format!("--key-file={}", key.display());
    let luks1: Vec<&str> = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks1",
        "--pbkdf-force-iterations",
        "1000",
        &key_arg,
    ];
    let exp = fill(
        dir,
        &raw,
        &[
            (1, "mkfs.ext2", &["-F", "-q", "-L", "mbr-ext2"]),
            (2, "cryptsetup", &luks1),
            (3, "mkfs.vfat", &["-n", "BOOTFAT"]),
            (5, "mkfs.ext3", &["-F", "-q", "-L", "logical-ext3"]),
            (6, "mkfs.xfs", &["-f", "-q", "-L", "xfslabel"]),
            (7, "mkfs.ntfs", &["-F", "-Q", "-q", "-L", "Windows Data"]),
        ],
    );
    (raw, exp)
}

/// GPT: ext4, btrfs, FAT32, LUKS2 and swap, with free space after them.
fn build_gpt(dir: &Path) -> (PathBuf, Expected) {
    let raw = dir.join("gpt.raw");
    sfdisk_image(&raw, 400 * MIB, GPT_SCRIPT);
    let key = dir.join("key2");
    std::fs::write(&key, b"not a secret").unwrap();
    let key_arg = format!("--key-file={}", key.display());
    let luks2: Vec<&str> = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--label",
        "cryptlabel",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        &key_arg,
    ];
    let exp = fill(
        dir,
        &raw,
        &[
            (1, "mkfs.ext4", &["-F", "-q", "-L", "root"]),
            (2, "mkfs.btrfs", &["-f", "-q", "-L", "data"]),
            (3, "mkfs.vfat", &["-F", "32", "-n", "EFI"]),
            (4, "cryptsetup", &luks2),
            (5, "mkswap", &["-L", "swaplabel"]),
        ],
    );
    (raw, exp)
}

#[test]
fn sfdisk_mbr_and_gpt_match_sfdisk_and_blkid_in_every_format() {
    let mut tools = MBR_TOOLS.to_vec();
    tools.extend_from_slice(GPT_TOOLS);
    if !have_tools(&tools) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mbr, mbr_exp) = build_mbr(dir.path());
    let (gpt, gpt_exp) = build_gpt(dir.path());
    let mbr_formats = formats(&mbr);
    let gpt_formats = formats(&gpt);
    for (m, g) in mbr_formats.iter().zip(&gpt_formats) {
        let _guard = Unchanged::new(&[m, g]);
        let vols = discover(&[m, g]);
        check(&vols, "/dev/sda", &mbr, &mbr_exp);
        check(&vols, "/dev/sdb", &gpt, &gpt_exp);
        // The GPT disk has ~95 MiB after its last partition; the MBR disk none.
        let free: Vec<_> = vols.iter().filter(|v| v.kind == VolumeKind::Free).collect();
        assert_eq!(free.len(), 1, "{}", g.display());
        assert_eq!(free[0].parent.as_deref(), Some("/dev/sdb"));
        assert!(free[0].size > 90 * MIB && free[0].size < 100 * MIB);
        // The extended partition is listed but not probed.
        let ext = vols.iter().find(|v| v.name == "/dev/sda4").unwrap();
        assert_eq!(ext.kind, VolumeKind::ExtendedPartition);
        assert!(ext.content.is_none());
    }

    // The CLI on two disks: letters follow the command line, in both orders.
    for (first, second, mbr_letter) in [
        (&mbr_formats[1], &gpt_formats[2], "a"),
        (&gpt_formats[1], &mbr_formats[2], "b"),
    ] {
        let v = ferry_json(&[
            "filesystems".as_ref(),
            "--json".as_ref(),
            "--all".as_ref(),
            first.as_os_str(),
            second.as_os_str(),
        ]);
        let vols = v.as_array().unwrap();
        let by_name = |n: &str| {
            vols.iter()
                .find(|v| v["name"] == n)
                .unwrap_or_else(|| panic!("{n} missing from {v:#}"))
        };
        let gpt_letter = if mbr_letter == "a" { "b" } else { "a" };
        let x = by_name(&format!("/dev/sd{mbr_letter}6"));
        assert_eq!(x["content"]["fstype"], "xfs");
        assert_eq!(x["content"]["uuid"], mbr_exp[&6]["UUID"].as_str());
        assert_eq!(x["partition"]["table"], "mbr");
        assert_eq!(x["kind"], "partition");
        let r = by_name(&format!("/dev/sd{gpt_letter}1"));
        assert_eq!(r["content"]["fstype"], "ext4");
        assert_eq!(r["partition"]["name"], "root");
        assert_eq!(r["parent"], format!("/dev/sd{gpt_letter}").as_str());
        assert_eq!(by_name(&format!("/dev/sd{gpt_letter}"))["kind"], "disk");
        assert_eq!(
            by_name(&format!("/dev/sd{mbr_letter}4"))["kind"],
            "extended_partition"
        );
    }

    // Without --all: only filesystems, swap and crypto, one line each plus the header.
    let out = std::process::Command::new(ferry_bin())
        .arg("filesystems")
        .arg(&mbr_formats[0])
        .arg(&gpt_formats[0])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1 + 6 + 5, "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("/dev/sdb5 ") && l.contains("swaplabel")));
}

#[test]
fn damaged_primary_gpt_falls_back_to_the_backup() {
    if !have_tools(&["sfdisk", "mkfs.ext4", "dd", "blkid"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("gpt.raw");
    sfdisk_image(&raw, 64 * MIB, GPT_SCRIPT.replace("MiB", "KiB").as_str());
    let exp = fill(dir.path(), &raw, &[]);
    let good = discover(&[&raw]);
    check(&good, "/dev/sda", &raw, &exp);
    let orig = std::fs::read(&raw).unwrap();
    // (what is damaged, bytes to change)
    let cases: [(&str, Vec<(usize, u8)>); 4] = [
        ("zeroed LBA 1", (512..1024).map(|i| (i, 0)).collect()),
        ("header CRC", vec![(512 + 16, orig[512 + 16] ^ 1)]),
        (
            "disk GUID under the CRC",
            vec![(512 + 60, orig[512 + 60] ^ 0x80)],
        ),
        ("entry array", vec![(1024 + 40, orig[1024 + 40] ^ 4)]),
    ];
    for (what, changes) in cases {
        let mut bad = orig.clone();
        for (at, b) in &changes {
            bad[*at] = *b;
        }
        let p = dir.path().join("bad.raw");
        std::fs::write(&p, &bad).unwrap();
        let vols = discover(&[&p]);
        let disk = &vols[0];
        assert!(
            disk.warnings.iter().any(|w| w.contains("backup")),
            "{what}: {:?}",
            disk.warnings
        );
        let parts = disk_vols(&vols, "/dev/sda");
        assert_eq!(parts.len(), 5, "{what}");
        for (g, b) in disk_vols(&good, "/dev/sda").iter().zip(&parts) {
            assert_eq!(
                (g.offset, g.size, &g.name),
                (b.offset, b.size, &b.name),
                "{what}"
            );
            assert_eq!(
                g.partition.as_ref().unwrap().uuid,
                b.partition.as_ref().unwrap().uuid
            );
        }
    }
}

#[test]
fn whole_disk_filesystem_without_a_table() {
    if !have_tools(&["mkfs.ext4", "mkfs.vfat", "mkfs.ntfs", "blkid"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 3] = [
        ("mkfs.ext4", &["-F", "-q", "-L", "whole"]),
        ("mkfs.vfat", &["-n", "WHOLE"]),
        ("mkfs.ntfs", &["-F", "-Q", "-q", "-L", "whole"]),
    ];
    for (cmd, args) in cases {
        let p = dir.path().join(format!("{cmd}.raw"));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(48 * MIB)
            .unwrap();
        let mut a = args.to_vec();
        let f = p.to_str().unwrap().to_string();
        a.push(&f);
        run_tool(cmd, &a);
        let b = blkid(&p);
        let vols = discover(&[&p]);
        assert_eq!(vols.len(), 1, "{cmd}: {}", vols.len());
        let v = &vols[0];
        assert_eq!(v.name, "/dev/sda");
        assert!(v.table.is_none(), "{cmd}: read as a partition table");
        let c = v.content.as_ref().unwrap();
        assert_eq!(c.fstype, b["TYPE"], "{cmd}");
        assert_eq!(c.uuid.as_ref(), b.get("UUID"), "{cmd}");
        assert_eq!(c.label.as_ref(), b.get("LABEL"), "{cmd}");
    }
}

#[test]
fn corpus_partition_tables() {
    let Some(corpus) = corpus() else {
        return;
    };
    let d = corpus.join("dissect.volume/disk");
    let open = |name: &str| -> Vec<Volume> {
        let dev = ferry::block::open_as(&d.join(name), Some(ferry::block::Format::Raw)).unwrap();
        volume::discover(&[dev]).unwrap()
    };
    // (file, sector size, [(number, table start in bytes, type name, partition name)])
    type Want = (
        &'static str,
        u64,
        &'static [(u32, u64, &'static str, Option<&'static str>)],
    );
    let wants: [Want; 6] = [
        (
            "mbr.bin",
            512,
            &[
                (1, 2048 * 512, "HPFS/NTFS/exFAT", None),
                (2, 1026048 * 512, "HPFS/NTFS/exFAT", None),
            ],
        ),
        (
            "gpt.bin",
            512,
            &[
                (1, 40 * 512, "EFI System", Some("EFI System Partition")),
                (2, 411648 * 512, "Microsoft basic data", None),
            ],
        ),
        (
            "gpt_4k.bin",
            4096,
            &[
                (1, 256 * 4096, "Linux filesystem", Some("Linux filesystem")),
                (2, 768 * 4096, "Linux filesystem", Some("Linux filesystem")),
                (3, 1280 * 4096, "Linux filesystem", Some("Linux filesystem")),
            ],
        ),
        (
            "gpt_esxi.bin",
            512,
            &[
                (1, 64 * 512, "EFI System", Some("BOOT")),
                (5, 208896 * 512, "Microsoft basic data", Some("BOOTBANK1")),
                (6, 8597504 * 512, "Microsoft basic data", Some("BOOTBANK2")),
                (7, 16986112 * 512, "", Some("OSDATA")),
                (8, 268437504 * 512, "VMware VMFS", Some("datastore1")),
            ],
        ),
        (
            "gpt_hybrid.bin",
            512,
            &[
                (1, 2048 * 512, "Linux filesystem", Some("Linux filesystem")),
                (2, 34 * 512, "Linux filesystem", Some("Linux filesystem")),
                (3, 3073 * 512, "Linux filesystem", Some("Linux filesystem")),
            ],
        ),
        (
            "gpt_no_name_xff.bin",
            512,
            &[(1, 2048 * 512, "VMware VMFS", None)],
        ),
    ];
    for (file, ss, parts) in wants {
        let vols = open(file);
        let t = vols[0]
            .table
            .as_ref()
            .unwrap_or_else(|| panic!("{file}: no table"));
        assert_eq!(t.sector_size, ss, "{file}");
        let ours = disk_vols(&vols, "/dev/sda");
        assert_eq!(ours.len(), parts.len(), "{file}");
        for (v, (n, start, tname, pname)) in ours.iter().zip(parts) {
            let pi = v.partition.as_ref().unwrap();
            assert_eq!(pi.number, *n, "{file}");
            assert_eq!(pi.table_start, *start, "{file} #{n}");
            assert_eq!(pi.type_name.as_deref().unwrap_or(""), *tname, "{file} #{n}");
            assert_eq!(pi.name.as_deref(), *pname, "{file} #{n}");
            // The samples are the first sectors of big disks: partitions past the end are
            // clamped with a warning that names them.
            if pi.table_start.saturating_add(pi.table_size) > vols[0].size {
                assert!(
                    v.warnings.iter().any(|w| w.contains(&v.name)),
                    "{file} #{n}"
                );
            }
        }
    }
    // The truncated sample's entry array fails its CRC and has no backup: listed with a warning.
    let v = open("gpt_no_name_xff.bin");
    assert!(
        v[0].warnings.iter().any(|w| w.contains("CRC32")),
        "{:?}",
        v[0].warnings
    );

    let tmp = tempfile::tempdir().unwrap();
    let img = unpack(
        &corpus.join("libguestfs-test-data/mbr-ext2-empty.img.gz"),
        tmp.path(),
    );
    let vols = discover(&[&img]);
    let p = vols.iter().find(|v| v.name == "/dev/sda1").unwrap();
    assert_eq!(p.offset, 512);
    let c = p.content.as_ref().unwrap();
    assert_eq!(c.fstype, "ext2");
    if have_tools(&["blkid"]) {
        let part = tmp.path().join("p1");
        let bytes = std::fs::read(&img).unwrap();
        std::fs::write(&part, &bytes[512..]).unwrap();
        let b = blkid(&part);
        assert_eq!(c.uuid.as_ref(), b.get("UUID"));
        assert_eq!(b["TYPE"], "ext2");
    }
}

#[test]
fn guest_names() {
    assert_eq!(volume::disk_name(0), "/dev/sda");
    assert_eq!(volume::disk_name(25), "/dev/sdz");
    assert_eq!(volume::disk_name(26), "/dev/sdaa");
    assert_eq!(volume::disk_name(27), "/dev/sdab");
    assert_eq!(volume::disk_name(26 + 26 * 26), "/dev/sdaaa");
    assert_eq!(volume::mapper_name("vg0", "root"), "/dev/mapper/vg0-root");
    assert_eq!(
        volume::mapper_name("my-vg", "lv-home--x"),
        "/dev/mapper/my--vg-lv--home----x"
    );
}

/// An md 1.x superblock (the kernel's md_p.h `mdp_superblock_1`) claiming to sit at `off`,
/// with no device roles and its checksum as mdadm computes it.
fn md1_superblock(off: u64) -> Vec<u8> {
    let mut sb = vec![0u8; 256];
    sb[0..4].copy_from_slice(&0xa92b_4efc_u32.to_le_bytes());
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(&[0x11; 16]); // set_uuid
    sb[32..40].copy_from_slice(b"host:md7"); // set_name
    sb[72..76].copy_from_slice(&1u32.to_le_bytes()); // level
    sb[92..96].copy_from_slice(&2u32.to_le_bytes()); // raid_disks
    sb[144..152].copy_from_slice(&(off / 512).to_le_bytes()); // super_offset
    sb[168..184].copy_from_slice(&[0x22; 16]); // device_uuid
    let sum: u64 = sb
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let csum = (sum & 0xffff_ffff) + (sum >> 32);
    sb[216..220].copy_from_slice(&u32::try_from(csum & 0xffff_ffff).unwrap().to_le_bytes());
    sb
}

/// An md 0.90 superblock (`mdp_super_t`): magic, version 0.90.3, the set UUID in its four words.
fn md090_superblock() -> Vec<u8> {
    let mut sb = vec![0u8; 4096];
    sb[0..4].copy_from_slice(&0xa92b_4efc_u32.to_le_bytes());
    sb[8..12].copy_from_slice(&90u32.to_le_bytes());
    sb[12..16].copy_from_slice(&3u32.to_le_bytes());
    sb[20..24].copy_from_slice(&[0x31, 0x32, 0x33, 0x34]);
    sb[52..64].copy_from_slice(b"0123456789ab");
    sb
}

/// md RAID members of every superblock version, on a device whose size is not a multiple of
/// 64 KiB (where the end-of-device offsets differ), with an ext4 filesystem at the start that
/// the member's superblock must win over: what libblkid says of each is the oracle.
#[test]
fn md_raid_members_of_every_version_read_as_blkid_does() {
    if !have_tools(&["mkfs.ext4", "blkid"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 24 * MIB + 5 * 1024 + 512;
    let sectors = size / 512;
    let md10 = ((sectors - 16) & !7) * 512;
    let md090 = (size & !0xffff) - 0x10000;
    let cases: [(&str, u64, Vec<u8>); 4] = [
        ("0.90", md090, md090_superblock()),
        ("1.0", md10, md1_superblock(md10)),
        ("1.1", 0, md1_superblock(0)),
        ("1.2", 4096, md1_superblock(4096)),
    ];
    for (version, off, sb) in cases {
        let p = dir.path().join(format!("md{version}.raw"));
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        if off != 0 {
            run_tool("mkfs.ext4", &["-F", "-q", p.to_str().unwrap()]);
        }
        let sbf = dir.path().join("sb");
        std::fs::write(&sbf, &sb).unwrap();
        write_into(&p, off, &sbf);
        let b = blkid(&p);
        assert_eq!(
            b.get("TYPE").map(String::as_str),
            Some("linux_raid_member"),
            "{version}: blkid says {b:?}"
        );
        let vols = discover(&[&p]);
        let c = vols[0].content.as_ref().expect(version);
        assert_eq!(c.fstype, "linux_raid_member", "{version}");
        assert_eq!(c.uuid.as_ref(), b.get("UUID"), "{version}");
        assert_eq!(c.label.as_ref(), b.get("LABEL"), "{version}");
        assert_eq!(c.version.as_ref(), b.get("VERSION"), "{version}");
        assert_eq!(c.uuid_sub.as_ref(), b.get("UUID_SUB"), "{version}");
    }
}
