//! LVM2 reader: metadata texts from the corpus, PV images from the corpus, volume groups built
//! with the real lvm2 tools on loop devices (no device-mapper: LVs are never activated; the data
//! is written into the image files at the offsets the metadata gives and read back through
//! `lvm::assemble`), and hand-made bad input.

use crate::common;

use common::lvm::{
    have_lvm_tools, lv_size, lvm, restore_with_lvs, seg, vg_name, write_lv, Loops, LvSpec, PvPlace,
    SegSpec,
};
use common::{
    blkid, corpus, ferry_bin, ferry_json, pseudo_random, qemu_img, read_all, run, sfdisk_image,
    unpack, Unchanged,
};
use ferry::block::{self, BlockDevice};
use ferry::volume::lvm::{self, label, metadata, vgmeta::VgMeta, Lv, Vg};
use ferry::volume::Slice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

type Candidates = Vec<(String, Arc<dyn BlockDevice>)>;

// ---------------------------------------------------------------------------------------------
// Helpers

use ferry::block::mem::MemDevice as Mem;

fn mem(name: &str, b: Vec<u8>) -> (String, Arc<dyn BlockDevice>) {
    (name.to_string(), Arc::new(Mem(b)))
}

fn lv<'a>(vg: &'a Vg, name: &str) -> &'a Lv {
    vg.lvs
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no LV {name} in {}", vg.name))
}

fn lv_bytes(l: &Lv) -> Vec<u8> {
    let dev = l
        .dev
        .as_ref()
        .unwrap_or_else(|| panic!("LV {} unreadable: {:?}", l.name, l.problem));
    // An odd chunk size, so reads cross stripe and segment boundaries.
    let v = read_all(dev, 100_000);
    // Extents: sorted, contiguous, covering the LV.
    let ex = dev.extents(0, dev.len()).unwrap();
    let mut pos = 0;
    for e in &ex {
        assert_eq!(e.offset, pos);
        pos = e.end();
    }
    assert_eq!(pos, dev.len());
    assert_eq!(dev.info().unwrap().format, "lvm-lv");
    v
}

fn open_raw(p: &Path) -> Arc<dyn BlockDevice> {
    block::open(p).unwrap()
}

fn only_vg(vgs: &[Vg]) -> &Vg {
    assert_eq!(vgs.len(), 1, "expected one VG");
    &vgs[0]
}

/// A throwaway ext4 filesystem image of `size` bytes.
fn ext4_image(dir: &Path, size: usize) -> Vec<u8> {
    let p = dir.join("fs.ext4");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size as u64).unwrap();
    drop(f);
    run(Command::new("mkfs.ext4").args(["-F", "-q"]).arg(&p));
    std::fs::read(&p).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Corpus

#[test]
fn corpus_metadata_texts_parse() {
    let Some(c) = corpus() else { return };
    let dir = c.join("lvm2-metadata-derived");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".vgmeta.txt") {
            continue;
        }
        let text = std::fs::read(&p).unwrap();
        let tree = metadata::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vg = VgMeta::from_tree(&tree).unwrap_or_else(|e| panic!("{name}: {e}"));
        let seqno: u64 = name
            .split(".seqno")
            .nth(1)
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(vg.seqno, seqno, "{name}");
        assert_eq!(
            tree.str("contents"),
            Some("Text Format Volume Group"),
            "{name}"
        );
        assert!(vg.extent_size > 0 && !vg.pvs.is_empty(), "{name}");
        for l in &vg.lvs {
            assert!(l.problem.is_none(), "{name}: {:?}", l.problem);
        }
        // Truncated and garbled copies: errors, never panics.
        for cut in (0..text.len()).step_by(37) {
            let _ = metadata::parse(&text[..cut]).map(|t| VgMeta::from_tree(&t));
        }
        for m in common::mutants(&text, &[], 50, n as u64) {
            let _ = metadata::parse(&m).map(|t| VgMeta::from_tree(&t));
        }
        n += 1;
    }
    assert_eq!(n, 32, "all corpus metadata texts");
    // DiscUtils' 18-version history: the last has 3 LVs, multi-segment.
    let t =
        std::fs::read(dir.join("DiscUtils-lvm2.vhdx.seqno18.offset0x509a00.vgmeta.txt")).unwrap();
    let vg = VgMeta::from_tree(&metadata::parse(&t).unwrap()).unwrap();
    let fat = vg.lvs.iter().find(|l| l.name == "fat").unwrap();
    assert_eq!(fat.segments.len(), 3);
    assert_eq!(fat.extents, 178);
    assert_eq!(fat.segments[2].stripes, vec![("pv0".to_string(), 946)]);
}

fn corpus_pv(dir: &Path, name: &str) -> (PathBuf, Arc<dyn BlockDevice>) {
    let c = corpus().unwrap();
    let p = unpack(&c.join("dissect.volume/lvm").join(name), dir);
    let d = open_raw(&p);
    (p, d)
}

#[test]
fn corpus_plain_pv() {
    if corpus().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, d) = corpus_pv(dir.path(), "lvm.bin.gz");
    let (pvs, vgs) = lvm::assemble(&[("/dev/sda".into(), d)]).unwrap();
    assert_eq!(pvs.len(), 1);
    assert_eq!(pvs[0].uuid, "2Svcy0-cRH2-3Xrz-87Fv-zNUI-9CoI-Ycoyql");
    assert_eq!(pvs[0].vg_name.as_deref(), Some("vg_test"));
    assert_eq!(pvs[0].pe_start, Some(1 << 20));
    let vg = only_vg(&vgs);
    assert_eq!(
        (vg.name.as_str(), vg.seqno, vg.extent_size),
        ("vg_test", 2, 8192)
    );
    assert!(vg.warnings.is_empty(), "{:?}", vg.warnings);
    let l = lv(vg, "lv_test");
    assert!(l.visible);
    assert_eq!(l.size, 4 << 20);
    let raw = std::fs::read(&p).unwrap();
    let got = lv_bytes(l);
    assert_eq!(&got[..8], &[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
    assert!(got == raw[1 << 20..5 << 20]);
    // The label checksum of a real PV, with LVM's CRC variant.
    let sector = &raw[512..1024];
    assert_eq!(
        label::crc(label::INITIAL_CRC, &sector[20..]),
        u32::from_le_bytes(sector[16..20].try_into().unwrap())
    );
}

#[test]
fn corpus_mirror_legs_readable() {
    if corpus().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, a) = corpus_pv(dir.path(), "lvm-mirror-1.bin.gz");
    let (_, b) = corpus_pv(dir.path(), "lvm-mirror-2.bin.gz");
    let (pvs, vgs) = lvm::assemble(&[("/dev/sda".into(), a), ("/dev/sdb".into(), b)]).unwrap();
    assert_eq!(pvs.len(), 2);
    let vg = only_vg(&vgs);
    assert_eq!(vg.seqno, 2);
    let m = lv(vg, "mirrormirror");
    assert!(m.dev.is_none() && m.visible);
    let prob = m.problem.as_deref().unwrap();
    assert!(
        prob.contains("segment type mirror is not supported"),
        "{prob}"
    );
    assert!(
        prob.contains("_mimage_N") && prob.contains("readable"),
        "{prob}"
    );
    assert_eq!(m.segment_types, vec!["mirror"]);
    let l0 = lv(vg, "mirrormirror_mimage_0");
    let l1 = lv(vg, "mirrormirror_mimage_1");
    assert!(!l0.visible && !l1.visible);
    let (d0, d1) = (lv_bytes(l0), lv_bytes(l1));
    assert_eq!(d0.len(), 4 << 20);
    assert_eq!(&d0[..4], &[1, 0, 1, 0]);
    assert!(d0 == d1, "the two mirror legs differ");
}

#[test]
fn corpus_thin_refused() {
    if corpus().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, d) = corpus_pv(dir.path(), "lvm-thin.bin.gz");
    let (_, vgs) = lvm::assemble(&[("/dev/vda".into(), d)]).unwrap();
    let vg = only_vg(&vgs);
    assert_eq!(vg.seqno, 8);
    for name in ["lv-1", "lv-2"] {
        let l = lv(vg, name);
        assert!(l.dev.is_none());
        let p = l.problem.as_deref().unwrap();
        assert!(p.contains("segment type thin is not supported"), "{p}");
    }
    let pool = lv(vg, "data");
    assert!(pool.problem.as_deref().unwrap().contains("thin-pool"));
    // The pool's hidden parts are plain linear LVs.
    let tdata = lv(vg, "data_tdata");
    assert!(!tdata.visible);
    assert_eq!(lv_bytes(tdata).len(), 8 << 20);
}

// ---------------------------------------------------------------------------------------------
// Real lvm2 tools

/// Two 64 MiB disks in one VG (1 MiB extents): linear, striped over both, multi-segment across
/// both, and an ext4 filesystem; then the same with only one disk (a missing PV).
#[test]
fn real_vg_over_two_disks() {
    if !have_lvm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = ["a.img", "b.img"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    for f in &files {
        std::fs::File::create(f).unwrap().set_len(64 << 20).unwrap();
    }
    let vg = vg_name("two");
    let mut loops = Loops(Vec::new());
    let devs: Vec<String> = files.iter().map(|f| loops.attach(f, 0, None)).collect();
    lvm("pvcreate", &["-ff", "-y", &devs[0], &devs[1]]);
    lvm("vgcreate", &["-s", "1m", &vg, &devs[0], &devs[1]]);
    let extent = 1u64 << 20;
    let lvs = vec![
        LvSpec {
            name: "lin",
            segs: vec![seg(0, 4, 0, 0)],
        },
        LvSpec {
            name: "str",
            segs: vec![SegSpec {
                start: 0,
                count: 8,
                stripe_size: 128, // 64 KiB
                stripes: vec![(0, 4), (1, 0)],
            }],
        },
        LvSpec {
            name: "multi",
            segs: vec![seg(0, 2, 1, 4), seg(2, 3, 0, 8), seg(5, 1, 1, 10)],
        },
        LvSpec {
            name: "fs",
            segs: vec![seg(0, 8, 1, 12)],
        },
    ];
    restore_with_lvs(dir.path(), &vg, &lvs);
    loops.detach();

    // Where the data area starts, from the PV label as lvm wrote it.
    let places: Vec<PvPlace> = files
        .iter()
        .map(|f| {
            let l = label::PvLabel::find(&*open_raw(f), "x").unwrap().unwrap();
            PvPlace {
                file: f.clone(),
                data_start: l.data_areas[0].offset,
            }
        })
        .collect();
    let mut want = Vec::new();
    for (i, l) in lvs.iter().enumerate() {
        let data = if l.name == "fs" {
            ext4_image(dir.path(), lv_size(l, extent))
        } else {
            pseudo_random(i as u64 + 7, lv_size(l, extent))
        };
        write_lv(&places, extent, l, &data);
        want.push(data);
    }

    let cands: Candidates = vec![
        ("/dev/sda".into(), open_raw(&files[0])),
        ("/dev/sdb".into(), open_raw(&files[1])),
    ];
    let (pvs, vgs) = lvm::assemble(&cands).unwrap();
    assert_eq!(pvs.len(), 2);
    assert!(pvs
        .iter()
        .all(|p| p.vg_name.as_deref() == Some(vg.as_str())));
    let v = only_vg(&vgs);
    assert_eq!(v.name, vg);
    assert_eq!(v.extent_size, 2048);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert!(v.pvs.iter().all(|(_, d)| d.is_some()));
    for (l, w) in lvs.iter().zip(&want) {
        let got = lv_bytes(lv(v, l.name));
        assert!(&got == w, "LV {} differs from what was written", l.name);
    }
    assert_eq!(&want[3][1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]); // ext4 magic

    // Only the first disk: the LVs touching the second report the missing PV.
    let pv1 = v.pvs[1].0.clone();
    let (_, vgs) = lvm::assemble(&cands[..1]).unwrap();
    let v = only_vg(&vgs);
    assert!(v.pvs[1].1.is_none());
    assert!(
        v.warnings.iter().any(|w| w.contains(&pv1)),
        "{:?}",
        v.warnings
    );
    assert!(lv_bytes(lv(v, "lin")) == want[0]);
    for name in ["str", "multi", "fs"] {
        let l = lv(v, name);
        assert!(l.dev.is_none());
        let p = l.problem.as_deref().unwrap();
        assert!(p.contains(&pv1) && p.contains("missing"), "{p}");
    }
}

/// A PV on the second MBR partition, handed to ferry as a Slice of the raw disk.
#[test]
fn real_pv_on_partition() {
    if !have_lvm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    sfdisk_image(
        &img,
        48 << 20,
        "label: dos\nstart=2048, size=16384, type=83\nstart=18432, type=8e\n",
    );
    let (p2_off, p2_len) = (18432u64 * 512, (48u64 << 20) - 18432 * 512);
    let vg = vg_name("part");
    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&img, p2_off, Some(p2_len));
    lvm("pvcreate", &["-ff", "-y", &dev]);
    lvm("vgcreate", &["-s", "4m", &vg, &dev]);
    let lvs = vec![LvSpec {
        name: "root",
        segs: vec![seg(0, 3, 0, 1), seg(3, 2, 0, 5)],
    }];
    restore_with_lvs(dir.path(), &vg, &lvs);
    loops.detach();

    let raw = open_raw(&img);
    let part: Arc<dyn BlockDevice> = Arc::new(Slice::new(raw.clone(), p2_off, p2_len).unwrap());
    let l = label::PvLabel::find(&*part, "p").unwrap().unwrap();
    let places = [PvPlace {
        file: img.clone(),
        data_start: p2_off + l.data_areas[0].offset,
    }];
    let data = pseudo_random(99, lv_size(&lvs[0], 4 << 20));
    write_lv(&places, 4 << 20, &lvs[0], &data);

    let (pvs, vgs) =
        lvm::assemble(&[("/dev/sda".into(), raw), ("/dev/sda2".into(), part)]).unwrap();
    assert_eq!(pvs.len(), 1);
    assert_eq!(pvs[0].device, "/dev/sda2");
    let v = only_vg(&vgs);
    assert_eq!(v.pvs[0].1.as_deref(), Some("/dev/sda2"));
    assert!(lv_bytes(lv(v, "root")) == data);
}

/// Two metadata copies on one PV: a damaged first copy (text, then header) falls back to the
/// second with a warning; both damaged leaves no VG and says why on the PV.
#[test]
fn real_damaged_metadata_copy_falls_back() {
    if !have_lvm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pv.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let vg = vg_name("mda2");
    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&img, 0, None);
    lvm("pvcreate", &["-ff", "-y", "--pvmetadatacopies", "2", &dev]);
    lvm("vgcreate", &["-s", "1m", &vg, &dev]);
    let lvs = vec![LvSpec {
        name: "data",
        segs: vec![seg(0, 5, 0, 2)],
    }];
    restore_with_lvs(dir.path(), &vg, &lvs);
    loops.detach();

    let l = label::PvLabel::find(&*open_raw(&img), "x")
        .unwrap()
        .unwrap();
    assert_eq!(l.metadata_areas.len(), 2);
    let data = pseudo_random(5, 5 << 20);
    write_lv(
        &[PvPlace {
            file: img.clone(),
            data_start: l.data_areas[0].offset,
        }],
        1 << 20,
        &lvs[0],
        &data,
    );
    let locate = |i: usize| {
        let d = open_raw(&img);
        let h = label::MdaHeader::read(&*d, l.metadata_areas[i], "x").unwrap();
        let r = h.committed().unwrap();
        (h.start, h.start + r.offset)
    };
    let (hdr0, text0) = locate(0);
    let (_, text1) = locate(1);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let assemble = || lvm::assemble(&[("/dev/sdc".into(), open_raw(&img))]).unwrap();

    // Text of the first copy overwritten.
    f.write_all_at(b"garbage garbage", text0 + 20).unwrap();
    let (_, vgs) = assemble();
    let v = only_vg(&vgs);
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("checksum mismatch") && w.contains("another metadata copy")),
        "{:?}",
        v.warnings
    );
    assert!(lv_bytes(lv(v, "data")) == data);

    // Header of the first copy overwritten.
    f.write_all_at(&[0x55; 64], hdr0).unwrap();
    let (_, vgs) = assemble();
    let v = only_vg(&vgs);
    assert!(
        v.warnings.iter().any(|w| w.contains("lvm mda_header")),
        "{:?}",
        v.warnings
    );
    assert!(lv_bytes(lv(v, "data")) == data);

    // Both copies damaged: no VG; the PV says why.
    f.write_all_at(b"garbage garbage", text1 + 20).unwrap();
    let (pvs, vgs) = assemble();
    assert!(vgs.is_empty());
    let p = pvs[0].problem.as_deref().unwrap();
    assert!(
        p.contains("no usable metadata") && p.contains("offset"),
        "{p}"
    );
}

/// A small metadata area written until its text wraps around the end of the ring.
#[test]
fn real_wrapped_metadata_text() {
    if !have_lvm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pv.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let vg = vg_name("wrap");
    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&img, 0, None);
    lvm(
        "pvcreate",
        &[
            "-ff",
            "-y",
            "--metadatasize",
            "32k",
            "--dataalignment",
            "64k",
            &dev,
        ],
    );
    lvm("vgcreate", &["-s", "1m", &vg, &dev]);
    let lvs = vec![LvSpec {
        name: "w",
        segs: vec![seg(0, 3, 0, 1)],
    }];
    restore_with_lvs(dir.path(), &vg, &lvs);
    let wrapped = || {
        // The loop writes through to the file; the header is read from the file.
        let d = open_raw(&img);
        let l = label::PvLabel::find(&*d, "x").unwrap().unwrap();
        let h = label::MdaHeader::read(&*d, l.metadata_areas[0], "x").unwrap();
        let r = h.committed().unwrap();
        r.offset + r.size > h.size
    };
    let mut n = 0;
    while !wrapped() {
        n += 1;
        assert!(n < 200, "metadata never wrapped");
        lvm("vgchange", &["--addtag", &format!("tag{n}"), &vg]);
    }
    let seqno: u64 = lvm("vgs", &["--noheadings", "-o", "vg_seqno", &vg])
        .trim()
        .parse()
        .unwrap();
    loops.detach();
    let data = pseudo_random(3, 3 << 20);
    let l = label::PvLabel::find(&*open_raw(&img), "x")
        .unwrap()
        .unwrap();
    write_lv(
        &[PvPlace {
            file: img.clone(),
            data_start: l.data_areas[0].offset,
        }],
        1 << 20,
        &lvs[0],
        &data,
    );
    let (_, vgs) = lvm::assemble(&[("/dev/sda".into(), open_raw(&img))]).unwrap();
    let v = only_vg(&vgs);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.seqno, seqno);
    assert!(lv_bytes(lv(v, "w")) == data);
}

// ---------------------------------------------------------------------------------------------
// Hand-made PVs and bad input

const SYNTH_UUID: &str = "AAAAAABBBBCCCCDDDDEEEEFFFFGGGGGG";
/// Hand-made PV layout: metadata area at 4 KiB of 64 KiB, data from 1 MiB, 1 MiB extents.
const MDA_AT: u64 = 4096;
const MDA_SIZE: u64 = 65536;
const DATA_AT: u64 = 1 << 20;

/// A PV of `size` bytes with `text` as its metadata, placed at `text_off` in the ring (so a
/// large offset makes it wrap).
fn synth_pv(size: usize, text: &[u8], text_off: u64) -> Vec<u8> {
    synth_pv_uuid(SYNTH_UUID, size, text, text_off)
}

fn synth_pv_uuid(uuid: &str, size: usize, text: &[u8], text_off: u64) -> Vec<u8> {
    let mut d = vec![0u8; size];
    let lab = &mut d[512..1024];
    lab[..8].copy_from_slice(b"LABELONE");
    lab[8..16].copy_from_slice(&1u64.to_le_bytes());
    lab[20..24].copy_from_slice(&32u32.to_le_bytes());
    lab[24..32].copy_from_slice(b"LVM2 001");
    lab[32..64].copy_from_slice(uuid.as_bytes());
    lab[64..72].copy_from_slice(&(size as u64).to_le_bytes());
    lab[72..80].copy_from_slice(&DATA_AT.to_le_bytes()); // data area, then terminator
    lab[104..112].copy_from_slice(&MDA_AT.to_le_bytes()); // metadata area, then terminator
    lab[112..120].copy_from_slice(&MDA_SIZE.to_le_bytes());
    let c = label::crc(label::INITIAL_CRC, &lab[20..]);
    lab[16..20].copy_from_slice(&c.to_le_bytes());
    // The text, wrapping past the end of the area to just after the header.
    let ring = MDA_SIZE - 512;
    for (i, &b) in text.iter().enumerate() {
        let pos = 512 + (text_off - 512 + i as u64) % ring;
        d[(MDA_AT + pos) as usize] = b;
    }
    let m = &mut d[MDA_AT as usize..MDA_AT as usize + 512];
    m[4..20].copy_from_slice(label::MDA_MAGIC);
    m[20..24].copy_from_slice(&1u32.to_le_bytes());
    m[24..32].copy_from_slice(&MDA_AT.to_le_bytes());
    m[32..40].copy_from_slice(&MDA_SIZE.to_le_bytes());
    m[40..48].copy_from_slice(&text_off.to_le_bytes());
    m[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    m[56..60].copy_from_slice(&label::crc(label::INITIAL_CRC, text).to_le_bytes());
    let c = label::crc(label::INITIAL_CRC, &m[4..]);
    m[..4].copy_from_slice(&c.to_le_bytes());
    d
}

/// A VG text over one PV with 4 extents (1 MiB each) and the given LVs' text.
fn synth_text(lvs: &str) -> Vec<u8> {
    format!(
        "synth {{\nid = \"vgvgvg-vgvg-vgvg-vgvg-vgvg-vgvg-vgvgvg\"\nseqno = 3\nformat = \"lvm2\"\n\
         status = [\"READ\"]\nextent_size = 2048\nphysical_volumes {{\npv0 {{\n\
         id = \"AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG\"\ndevice = \"/dev/x\"\npe_start = 2048\n\
         pe_count = 4\n}}\n}}\nlogical_volumes {{\n{lvs}}}\n}}\ncontents = \"Text Format Volume Group\"\n\0"
    )
    .into_bytes()
}

fn lin_lv(name: &str, count: u64, pe: u64) -> String {
    format!(
        "{name} {{\nid = \"x\"\nstatus = [\"READ\", \"VISIBLE\"]\nsegment1 {{\nstart_extent = 0\n\
         extent_count = {count}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", {pe}]\n}}\n}}\n"
    )
}

#[test]
fn synthetic_wrapped_text_and_segment_checks() {
    let text = synth_text(&format!(
        "{}{}{}",
        lin_lv("ok", 2, 0),
        lin_lv("pastpv", 2, 3),
        lin_lv("pastdev", 1, 3)
    ));
    // 5 MiB device: extent 3 ends at 5 MiB exactly; shrink to make "pastdev" fall off.
    let mut img = synth_pv(5 << 20, &text, MDA_SIZE - 100);
    for (i, b) in img[DATA_AT as usize..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let short = img[..(4 << 20) + 4096].to_vec();
    let (pvs, vgs) = lvm::assemble(&[mem("/dev/sda", short)]).unwrap();
    assert_eq!(pvs[0].uuid, "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG");
    let v = only_vg(&vgs);
    assert_eq!(v.seqno, 3);
    assert!(
        v.warnings.iter().any(|w| w.contains("may be truncated")),
        "{:?}",
        v.warnings
    );
    let got = lv_bytes(lv(v, "ok"));
    assert!(got == img[DATA_AT as usize..DATA_AT as usize + (2 << 20)]);
    let p = lv(v, "pastpv").problem.as_deref().unwrap();
    assert!(p.contains("extents 3..5 of pv0, which has only 4"), "{p}");
    let p = lv(v, "pastdev").problem.as_deref().unwrap();
    assert!(p.contains("past its PV's device"), "{p}");
    assert!(lv(v, "pastpv").dev.is_none() && lv(v, "pastdev").dev.is_none());
}

#[test]
fn synthetic_bad_label_and_header() {
    let text = synth_text(&lin_lv("ok", 1, 0));
    let good = synth_pv(2 << 20, &text, 512);
    let (_, vgs) = lvm::assemble(&[mem("/dev/sda", good.clone())]).unwrap();
    assert_eq!(only_vg(&vgs).lvs.len(), 1);

    // Label checksum.
    let mut b = good.clone();
    b[512 + 70] ^= 1;
    let (pvs, vgs) = lvm::assemble(&[mem("/dev/sda", b)]).unwrap();
    assert!(vgs.is_empty());
    let p = pvs[0].problem.as_deref().unwrap();
    assert!(
        p.contains("/dev/sda: corrupt lvm label at offset 0x210"),
        "{p}"
    );

    // mda_header garbage; text checksum; unparsable text with a valid checksum.
    let mut b = good.clone();
    b[MDA_AT as usize + 100] ^= 1;
    let mut c = good.clone();
    c[(MDA_AT + 512 + 30) as usize] ^= 1;
    let bad_text = b"synth {\nid = \"unterminated\n".to_vec();
    let d = synth_pv(2 << 20, &bad_text, 512);
    for (img, want) in [
        (b, "corrupt lvm mda_header at offset 0x1000"),
        (
            c,
            "corrupt lvm metadata text at offset 0x1200: checksum mismatch",
        ),
        (
            d,
            "corrupt lvm metadata text at offset 0x120d: line 2: unterminated string",
        ),
    ] {
        let (pvs, vgs) = lvm::assemble(&[mem("/dev/sdx", img)]).unwrap();
        assert!(vgs.is_empty());
        let p = pvs[0].problem.as_deref().unwrap();
        assert!(p.contains(want), "{p}");
    }

    // Random garbage after a valid LABELONE signature, and random whole sectors: no panic.
    for seed in 0..200u64 {
        let mut b = good.clone();
        let r = pseudo_random(seed, 1024);
        let at = if seed % 2 == 0 {
            512 + 8
        } else {
            MDA_AT as usize
        };
        let n = (seed as usize % 500) + 1;
        b[at..at + n].copy_from_slice(&r[..n]);
        if seed % 4 == 1 {
            // Keep the header checksum valid, so the fields themselves are exercised.
            let m = &mut b[MDA_AT as usize..MDA_AT as usize + 512];
            m[4..20].copy_from_slice(label::MDA_MAGIC);
            let c = label::crc(label::INITIAL_CRC, &m[4..]);
            m[..4].copy_from_slice(&c.to_le_bytes());
        }
        let _ = lvm::assemble(&[mem("/dev/sda", b)]).unwrap();
    }
}

#[test]
fn parser_bad_input() {
    // Deep nesting: a clean error, not a stack overflow.
    let deep = "a {".repeat(100_000);
    let e = metadata::parse(deep.as_bytes()).unwrap_err();
    assert!(e.detail.contains("nested deeper than 64"), "{e}");
    let e = metadata::parse(b"vg {\n  x = \"abc\\\"def\n}\n").unwrap_err();
    assert_eq!(e.offset, 11); // the opening quote
    assert!(e.detail.contains("unterminated string"));
    // A VG whose LVs are nonsense keeps the VG, with the problem on the LV.
    let t = synth_text("bad {\nsegment1 {\nstart_extent = 5\nextent_count = 1\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0]\n}\n}\n");
    let vg = VgMeta::from_tree(&metadata::parse(&t).unwrap()).unwrap();
    assert!(vg.lvs[0]
        .problem
        .as_deref()
        .unwrap()
        .contains("do not follow"));
    // Garbage bytes.
    for seed in 0..300 {
        let _ = metadata::parse(&pseudo_random(seed, 2000));
    }
}

/// Two PVs of one VG with different metadata versions: the newest seqno wins wherever it is,
/// the older copy is a warning; a newest copy that is damaged falls back to the other PV.
#[test]
fn synthetic_newest_seqno_across_pvs() {
    let ua = "AAAAAABBBBCCCCDDDDEEEEFFFFGGGGGG";
    let ub = "BBBBBBBBBBCCCCDDDDEEEEFFFFGGGGGG";
    let text = |seqno: u64, lvname: &str| {
        format!(
            "two {{\nid = \"vgvgvg-vgvg-vgvg-vgvg-vgvg-vgvg-vgvgvg\"\nseqno = {seqno}\n\
             extent_size = 2048\nphysical_volumes {{\n\
             pv0 {{\nid = \"{}\"\npe_start = 2048\npe_count = 1\n}}\n\
             pv1 {{\nid = \"{}\"\npe_start = 2048\npe_count = 1\n}}\n}}\n\
             logical_volumes {{\n{lvname} {{\nid = \"x\"\nstatus = [\"VISIBLE\"]\n\
             segment1 {{\nstart_extent = 0\nextent_count = 2\ntype = \"striped\"\n\
             stripe_count = 1\nstripes = [\"pv0\", 0]\n}}\n\
             segment2 {{\nstart_extent = 2\nextent_count = 1\ntype = \"striped\"\n\
             stripe_count = 1\nstripes = [\"pv1\", 0]\n}}\n}}\n}}\n}}\n\0",
            label::dashed(ua),
            label::dashed(ub)
        )
        .into_bytes()
    };
    let a = synth_pv_uuid(ua, 2 << 20, &text(7, "new"), 512);
    let b = synth_pv_uuid(ub, 2 << 20, &text(6, "old"), 512);
    let (pvs, vgs) =
        lvm::assemble(&[mem("/dev/sdb", b.clone()), mem("/dev/sda", a.clone())]).unwrap();
    assert!(pvs.iter().all(|p| p.vg_name.as_deref() == Some("two")));
    let v = only_vg(&vgs);
    assert_eq!(v.seqno, 7);
    assert_eq!(v.lvs.len(), 1);
    assert_eq!(v.lvs[0].name, "new");
    // pe_count 1 but the segment wants 2 extents of pv0.
    assert!(v.lvs[0]
        .problem
        .as_deref()
        .unwrap()
        .contains("which has only 1"));
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("/dev/sdb holds older metadata (seqno 6)")),
        "{:?}",
        v.warnings
    );
    // The newer copy damaged: seqno 6 from the other PV, with a warning.
    let mut a2 = a.clone();
    a2[(MDA_AT + 512 + 40) as usize] ^= 0x20;
    let (_, vgs) = lvm::assemble(&[mem("/dev/sda", a2), mem("/dev/sdb", b)]).unwrap();
    let v = only_vg(&vgs);
    assert_eq!((v.seqno, v.lvs[0].name.as_str()), (6, "old"));
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("/dev/sda") && w.contains("checksum mismatch")),
        "{:?}",
        v.warnings
    );
}

/// Big texts stay fast, and the LV count limit is a clean error.
#[test]
fn parser_large_vg_and_limits() {
    let mut lvs = String::new();
    for i in 0..30_000 {
        lvs += &lin_lv(&format!("lv{i}"), 1, 0);
    }
    let t = synth_text(&lvs);
    let start = std::time::Instant::now();
    let vg = VgMeta::from_tree(&metadata::parse(&t).unwrap()).unwrap();
    assert_eq!(vg.lvs.len(), 30_000);
    assert!(start.elapsed().as_secs() < 10);

    let many: String = (0..=vgmeta_max_lvs())
        .map(|i| format!("l{i} {{}}\n"))
        .collect();
    let e = VgMeta::from_tree(&metadata::parse(&synth_text(&many)).unwrap()).unwrap_err();
    assert!(e.contains("more than 100000 logical volumes"), "{e}");
    // Over 16 MiB of text is refused before parsing.
    let huge = vec![b' '; metadata::MAX_TEXT + 1];
    assert!(metadata::parse(&huge)
        .unwrap_err()
        .detail
        .contains("exceeds the limit"));
}

fn vgmeta_max_lvs() -> usize {
    ferry::volume::lvm::vgmeta::MAX_LVS
}

/// Old-style snapshot: the COW store LV is refused, the origin stays readable; a mirror's
/// message points to its legs.
#[test]
fn synthetic_snapshot_cow_store_refused() {
    let snap = "snapshot0 {\nid = \"s\"\nstatus = [\"READ\"]\nsegment1 {\nstart_extent = 0\n\
                extent_count = 1\ntype = \"snapshot\"\nchunk_size = 8\norigin = \"orig\"\n\
                cow_store = \"snap\"\n}\n}\n";
    let text = synth_text(&format!(
        "{}{}{snap}",
        lin_lv("orig", 1, 0),
        lin_lv("snap", 1, 1)
    ));
    let (_, vgs) = lvm::assemble(&[mem("/dev/sda", synth_pv(3 << 20, &text, 512))]).unwrap();
    let v = only_vg(&vgs);
    assert!(lv(v, "orig").dev.is_some());
    let s = lv(v, "snap");
    assert!(s.dev.is_none());
    let p = s.problem.as_deref().unwrap();
    assert!(
        p.contains("copy-on-write store") && p.contains("orig"),
        "{p}"
    );
    let p = lv(v, "snapshot0").problem.as_deref().unwrap();
    assert!(p.contains("segment type snapshot is not supported"), "{p}");
    assert!(!lv(v, "snapshot0").visible);
}

// ---------------------------------------------------------------------------------------------
// The whole volume layer through the CLI

/// `blkid -p -o export` of filesystem bytes, written to `dir/name` first.
fn blkid_of(data: &[u8], dir: &Path, name: &str) -> std::collections::BTreeMap<String, String> {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    blkid(&p)
}

/// The usual installer layout over two disks, converted to qcow2 and VMDK: /boot on sda1, a PV on
/// sda2 and a whole-disk PV on sdb in one VG, with root (linear, ext4), swap (striped over both
/// disks) and a dashed LV name. `ferry filesystems --json --all` must name, map and recognise all
/// of it as blkid does.
#[test]
fn filesystems_cli_on_an_installer_layout_over_two_disks() {
    if !have_lvm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk1 = d.join("disk1.img");
    let disk2 = d.join("disk2.img");
    sfdisk_image(
        &disk1,
        64 << 20,
        "label: dos\nstart=2048, size=16384, type=83, bootable\nstart=18432, type=8e\n",
    );
    std::fs::File::create(&disk2)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let (p1_off, p1_len) = (2048u64 * 512, 16384u64 * 512);
    let (p2_off, p2_len) = (18432u64 * 512, (64u64 << 20) - 18432 * 512);

    let vg = vg_name("inst");
    let mut loops = Loops(Vec::new());
    let boot = loops.attach(&disk1, p1_off, Some(p1_len));
    run(Command::new("mkfs.ext4").args(["-F", "-q", "-L", "boot", &boot]));
    let pv0 = loops.attach(&disk1, p2_off, Some(p2_len));
    let pv1 = loops.attach(&disk2, 0, None);
    lvm("pvcreate", &["-ff", "-y", &pv0, &pv1]);
    lvm("vgcreate", &["-s", "4m", &vg, &pv0, &pv1]);
    let lvs = vec![
        LvSpec {
            name: "root",
            segs: vec![seg(0, 4, 0, 0)],
        },
        LvSpec {
            name: "swap",
            segs: vec![SegSpec {
                start: 0,
                count: 2,
                stripe_size: 128,
                stripes: vec![(0, 5), (1, 0)],
            }],
        },
        LvSpec {
            name: "lv-with-dash",
            segs: vec![seg(0, 1, 1, 3)],
        },
    ];
    restore_with_lvs(d, &vg, &lvs);
    loops.detach();

    let extent = 4u64 << 20;
    let raw1 = open_raw(&disk1);
    let part: Arc<dyn BlockDevice> = Arc::new(Slice::new(raw1, p2_off, p2_len).unwrap());
    let l0 = label::PvLabel::find(&*part, "p").unwrap().unwrap();
    let l1 = label::PvLabel::find(&*open_raw(&disk2), "p")
        .unwrap()
        .unwrap();
    let places = [
        PvPlace {
            file: disk1.clone(),
            data_start: p2_off + l0.data_areas[0].offset,
        },
        PvPlace {
            file: disk2.clone(),
            data_start: l1.data_areas[0].offset,
        },
    ];
    let root_fs = ext4_image(d, lv_size(&lvs[0], extent));
    write_lv(&places, extent, &lvs[0], &root_fs);
    let swap_p = d.join("swap.img");
    std::fs::File::create(&swap_p)
        .unwrap()
        .set_len(lv_size(&lvs[1], extent) as u64)
        .unwrap();
    run(Command::new("mkswap")
        .args(["-q", "-L", "swappy"])
        .arg(&swap_p));
    let swap_fs = std::fs::read(&swap_p).unwrap();
    write_lv(&places, extent, &lvs[1], &swap_fs);

    let q1 = d.join("disk1.qcow2");
    let v2 = d.join("disk2.vmdk");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        disk1.to_str().unwrap(),
        q1.to_str().unwrap(),
    ]);
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        disk2.to_str().unwrap(),
        v2.to_str().unwrap(),
    ]);
    let _g = Unchanged::new(&[&q1, &v2]);

    let vols = ferry_json(&[
        "filesystems".as_ref(),
        "--json".as_ref(),
        "--all".as_ref(),
        q1.as_os_str(),
        v2.as_os_str(),
    ]);
    let vols = vols.as_array().unwrap();
    let by_name = |n: &str| {
        vols.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {vols:#?}"))
    };

    let boot_blkid = {
        let mut b = vec![0u8; p1_len as usize];
        std::fs::File::open(&disk1)
            .unwrap()
            .read_exact_at(&mut b, p1_off)
            .unwrap();
        blkid_of(&b, d, "boot.img")
    };
    let sda1 = by_name("/dev/sda1");
    assert_eq!(sda1["content"]["fstype"], "ext4");
    assert_eq!(
        sda1["content"]["uuid"].as_str(),
        boot_blkid.get("UUID").map(|s| s.as_str())
    );
    assert_eq!(sda1["content"]["label"], "boot");
    assert_eq!(by_name("/dev/sda2")["content"]["fstype"], "LVM2_member");
    assert_eq!(by_name("/dev/sdb")["content"]["fstype"], "LVM2_member");

    let root_blkid = blkid_of(&root_fs, d, "root.img");
    let root = by_name(&format!("/dev/{vg}/root"));
    assert_eq!(root["kind"], "logical_volume");
    assert_eq!(root["content"]["fstype"], "ext4");
    assert_eq!(
        root["content"]["uuid"].as_str(),
        root_blkid.get("UUID").map(|s| s.as_str())
    );
    assert_eq!(root["size"].as_u64(), Some(lv_size(&lvs[0], extent) as u64));
    assert!(root["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == &format!("/dev/mapper/{}-root", vg.replace('-', "--"))));
    let swap = by_name(&format!("/dev/{vg}/swap"));
    assert_eq!(swap["content"]["fstype"], "swap");
    assert_eq!(swap["content"]["label"], "swappy");
    assert_eq!(
        swap["content"]["uuid"].as_str(),
        blkid_of(&swap_fs, d, "swap.img")
            .get("UUID")
            .map(|s| s.as_str())
    );
    assert_eq!(swap["lvm"]["segment_types"][0], "striped");
    let dashed = by_name(&format!("/dev/{vg}/lv-with-dash"));
    assert!(dashed["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == &format!("/dev/mapper/{}-lv--with--dash", vg.replace('-', "--"))));

    // The human table lists the LVs' filesystems by default.
    let text = Command::new(ferry_bin())
        .arg("filesystems")
        .arg(&q1)
        .arg(&v2)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("/dev/{vg}/root")) && text.contains("/dev/sda1"),
        "{text}"
    );
}
