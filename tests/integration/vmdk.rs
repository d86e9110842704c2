//! VMDK reader against qemu-img 10: every subformat qemu writes, snapshot chains, the real
//! samples of the corpus, and hostile input (truncation, bad headers and tables, mutations).

use crate::common;

use common::*;
use ferry::block::{self, BlockDevice, Error};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 48 MiB + 28.5 KiB: not a multiple of the 64 KiB grain, so the last grain is partial.
const SIZE: u64 = (48 << 20) + 7 * 4096 + 512;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file in `dir` whose name ends in `.vmdk`.
fn vmdk_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vmdk"))
        .collect();
    v.sort();
    v
}

/// Opens `img`, reads it in two odd chunk sizes and compares with qemu's conversion, then the map.
fn compare_with_qemu(img: &Path, dir: &Path) -> Arc<dyn BlockDevice> {
    let dev = block::open(img).unwrap_or_else(|e| panic!("open {}: {e}", img.display()));
    let want = qemu_raw(img, dir);
    assert_eq!(
        dev.len(),
        want.len() as u64,
        "virtual size of {}",
        img.display()
    );
    for chunk in [1 << 20, 12345] {
        let got = read_all(&dev, chunk);
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "{}: first difference from qemu at byte {i:#x} (chunk {chunk})",
                img.display()
            );
        }
    }
    assert_map_matches(&dev, img);
    dev
}

fn subformat(sub: &str, extra: &[&str], seed: u64) {
    let dir = tmp();
    let raw = dir.path().join("src.raw");
    make_mixed_raw(&raw, SIZE, seed);
    let img = dir.path().join("disk.vmdk");
    let opts = format!("subformat={sub}");
    let mut args = vec!["convert", "-f", "raw", "-O", "vmdk", "-o", &opts];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[s(&raw), s(&img)]);
    qemu_img(&args);
    let files = vmdk_files(dir.path());
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let _guard = Unchanged::new(&paths);
    let dev = compare_with_qemu(&img, dir.path());
    assert_eq!(
        read_all(&dev, 1 << 20),
        std::fs::read(&raw).unwrap(),
        "differs from the source raw"
    );
    let info = block::describe(dev.as_ref()).unwrap();
    assert_eq!(info.format, "vmdk");
    assert_eq!(info.subformat.as_deref(), Some(sub));
    assert!(!info.files.is_empty());
    assert!(info.allocated.unwrap() > 0);
    assert!(info.specific.iter().any(|(k, _)| k == "extents"));
}

#[test]
fn monolithic_sparse() {
    subformat("monolithicSparse", &[], 1);
}

#[test]
fn monolithic_sparse_zeroed_grain() {
    subformat("monolithicSparse", &["-o", "zeroed_grain=on"], 2);
}

#[test]
fn monolithic_flat() {
    subformat("monolithicFlat", &[], 3);
}

#[test]
fn two_gb_sparse() {
    subformat("twoGbMaxExtentSparse", &[], 4);
}

#[test]
fn two_gb_flat() {
    subformat("twoGbMaxExtentFlat", &[], 5);
}

#[test]
fn stream_optimized() {
    subformat("streamOptimized", &[], 6);
}

/// qemu-img 10 no longer writes the vmfs subformat: an ESX-style descriptor (createType
/// "vmfs", one VMFS extent without offset) over a flat file that qemu made.
#[test]
fn vmfs() {
    let dir = tmp();
    let d = dir.path();
    let raw = d.join("src.raw");
    make_mixed_raw(&raw, SIZE, 7);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        s(&raw),
        s(&d.join("disk-flat.vmdk")),
    ]);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"vmfs\"\n\n# Extent description\nRW {} VMFS \"disk-flat.vmdk\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"lsilogic\"\n",
        SIZE / 512
    );
    let img = d.join("disk.vmdk");
    std::fs::write(&img, desc).unwrap();
    let _guard = Unchanged::new(&[&img, &d.join("disk-flat.vmdk")]);
    let dev = compare_with_qemu(&img, d);
    assert_eq!(read_all(&dev, 1 << 20), std::fs::read(&raw).unwrap());
    let info = dev.info().unwrap();
    assert_eq!(info.subformat.as_deref(), Some("vmfs"));
    assert_eq!(info.files, vec![d.join("disk-flat.vmdk")]);
}

/// Zero grains written by qemu-io into a zeroed_grain image are Zero extents, not data.
#[test]
fn zeroed_grain_writes() {
    let dir = tmp();
    let img = dir.path().join("z.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "zeroed_grain=on",
        s(&img),
        "8M",
    ]);
    qemu_io("vmdk", &img, &["write -P 0x11 0 4M", "write -z 1M 1M"]);
    let dev = compare_with_qemu(&img, dir.path());
    let ext = dev.extents(1 << 20, 1 << 20).unwrap();
    assert!(
        ext.iter().all(|e| e.kind == block::ExtentKind::Zero),
        "{ext:?}"
    );
}

/// A hand-written descriptor joining several extents of different types, with a flat offset.
#[test]
fn multi_extent_descriptor() {
    let dir = tmp();
    let d = dir.path();
    let a = pseudo_random(11, 1 << 20);
    std::fs::write(d.join("a.bin"), [vec![0xee; 4096], a.clone()].concat()).unwrap();
    let raw = d.join("b.raw");
    make_mixed_raw(&raw, 3 << 20, 12);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        s(&raw),
        s(&d.join("b.vmdk")),
    ]);
    let c = d.join("c.bin");
    std::fs::File::create(&c).unwrap().set_len(1 << 20).unwrap(); // all hole
    let desc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
        createType=\"monolithicFlat\"\nRW 2048 FLAT \"a.bin\" 8\nRW 6144 SPARSE \"b.vmdk\"\n\
        RW 2048 FLAT \"c.bin\" 0\n\nddb.adapterType = \"ide\"\n";
    let img = d.join("multi.vmdk");
    std::fs::write(&img, desc).unwrap();
    let dev = compare_with_qemu(&img, d);
    let all = read_all(&dev, 77777);
    assert_eq!(&all[..1 << 20], &a[..]);
    assert_eq!(&all[1 << 20..4 << 20], &std::fs::read(&raw).unwrap()[..]);
    let info = dev.info().unwrap();
    assert_eq!(info.files.len(), 3);
}

/// ZERO extents (which qemu does not read) are zeros and `Zero` extents.
#[test]
fn zero_extent() {
    let dir = tmp();
    let d = dir.path();
    std::fs::write(d.join("a.bin"), vec![7u8; 1 << 20]).unwrap();
    let desc = "version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\
        RW 2048 ZERO\nRW 2048 FLAT \"a.bin\" 0\n";
    let img = d.join("z.vmdk");
    std::fs::write(&img, desc).unwrap();
    let dev = block::open(&img).unwrap();
    let all = read_all(&dev, 100_000);
    assert!(all[..1 << 20].iter().all(|&b| b == 0));
    assert!(all[1 << 20..].iter().all(|&b| b == 7));
    let ext = dev.extents(0, 2 << 20).unwrap();
    assert_eq!(ext[0].kind, block::ExtentKind::Zero);
    assert_eq!(ext[0].length, 1 << 20);
    assert_eq!(ext[1].kind, block::ExtentKind::Data);
}

fn make_chain(d: &Path) -> (PathBuf, PathBuf) {
    let raw = d.join("base.raw");
    make_mixed_raw(&raw, 16 << 20, 21);
    let base = d.join("base.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", s(&raw), s(&base)]);
    let child = d.join("child.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        s(&child),
    ]);
    qemu_io(
        "vmdk",
        &child,
        &[
            "write -P 0x5a 1M 64k",
            "write -P 0x33 5000k 300k",
            "write -P 0 9M 128k",
            "write -P 0x77 16320k 64k",
        ],
    );
    (base, child)
}

#[test]
fn snapshot_chain() {
    let dir = tmp();
    let (base, child) = make_chain(dir.path());
    let _guard = Unchanged::new(&[&base, &child]);
    let dev = compare_with_qemu(&child, dir.path());
    let info = dev.info().unwrap();
    assert_eq!(info.backing_filename.as_deref(), Some("base.vmdk"));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert!(dev.backing().is_some());
    let ext = dev.extents(0, 2 << 20).unwrap();
    assert!(ext.iter().any(|e| e.depth == 1), "{ext:?}");
}

/// Replaces `from` by `to` (same length) inside the file at `p`.
fn patch(p: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(p).unwrap();
    let i = b
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not found"));
    b[i..i + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(p, b).unwrap();
}

#[test]
fn snapshot_wrong_parent_cid_warns() {
    let dir = tmp();
    let (_, child) = make_chain(dir.path());
    let text = String::from_utf8_lossy(&std::fs::read(&child).unwrap()).into_owned();
    let at = text.find("parentCID=").unwrap() + "parentCID=".len();
    // qemu writes the CID in hex without zero padding: up to the end of the line.
    let old = text[at..].lines().next().unwrap().trim();
    // Same length, so an embedded descriptor keeps its size.
    let new = if old.bytes().all(|b| b == b'0') {
        format!("{:0>w$}", "1", w = old.len())
    } else {
        "0".repeat(old.len())
    };
    patch(
        &child,
        &format!("parentCID={old}"),
        &format!("parentCID={new}"),
    );
    let dev = block::open(&child).unwrap();
    let w = dev.info().unwrap().warnings.join("\n");
    assert!(w.contains("child.vmdk") && w.contains("base.vmdk"), "{w}");
}

#[test]
fn snapshot_missing_parent() {
    let dir = tmp();
    let (base, child) = make_chain(dir.path());
    std::fs::rename(&base, dir.path().join("elsewhere.vmdk")).unwrap();
    match block::open(&child) {
        Err(Error::MissingBacking { backing, .. }) => assert!(backing.ends_with("base.vmdk")),
        Err(e) => panic!("expected MissingBacking, got {e}"),
        Ok(_) => panic!("opened a child without its parent"),
    }
}

#[test]
fn corpus_samples() {
    let Some(c) = corpus() else { return };
    let dir = tmp();
    for name in [
        "DiskAccessLibrary-VMDK/MonolithicSparse.vmdk",
        "DiskAccessLibrary-VMDK/StreamOptimized.vmdk",
    ] {
        let p = c.join(name);
        let _guard = Unchanged::new(&[&p]);
        let dev = block::open(&p).unwrap();
        compare_sparse_with_qemu(&dev, &p, dir.path());
    }
    let v3 = unpack(
        &c.join("qemu-iotests-sample_images/iotest-version3.vmdk.bz2"),
        dir.path(),
    );
    let dev = block::open(&v3).unwrap();
    compare_sparse_with_qemu(&dev, &v3, dir.path());
    assert_eq!(
        dev.info().unwrap().subformat.as_deref(),
        Some("streamOptimized")
    );
}

#[test]
fn corpus_sesparse() {
    let Some(c) = corpus() else { return };
    let dir = tmp();
    let f = unpack(
        &c.join("dissect.hypervisor/disk/vmdk/sesparse.vmdk.gz"),
        dir.path(),
    );
    let desc = dir.path().join("ses-desc.vmdk");
    std::fs::write(
        &desc,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"seSparse\"\n\
         RW 1048576 SESPARSE \"sesparse.vmdk\"\n",
    )
    .unwrap();
    let _guard = Unchanged::new(&[&f, &desc]);
    // No blank line before the extent line: qemu 10 then parses that line twice (a disk twice
    // as long, repeating itself).
    let via_desc = block::open(&desc).unwrap();
    compare_sparse_with_qemu(&via_desc, &desc, dir.path());
    assert_map_matches(&via_desc, &desc);
    let bare = block::open(&f).unwrap();
    assert_eq!(bare.len(), via_desc.len());
    assert_eq!(read_all(&bare, 1 << 20), read_all(&via_desc, 1 << 20));
    assert_eq!(
        bare.extents(0, bare.len()).unwrap(),
        via_desc.extents(0, via_desc.len()).unwrap()
    );
    assert_eq!(bare.info().unwrap().subformat.as_deref(), Some("seSparse"));
}

// ---- hostile input ----

/// Opens `p` and reads (at most the first 8 MiB) and maps it under catch_unwind: a panic fails
/// the test; errors are returned as text.
fn exercise(p: &Path) -> Result<(), String> {
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), Error> {
        let dev = block::open(p)?;
        let n = dev.len().min(8 << 20) as usize;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < n {
            let k = (n - off).min(buf.len());
            dev.read_at(&mut buf[..k], off as u64)?;
            off += k;
        }
        dev.extents(0, dev.len().min(1 << 40))?;
        dev.info()?;
        Ok(())
    }));
    match r {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => panic!("ferry panicked on {}", p.display()),
    }
}

fn small_image(d: &Path, sub: &str, seed: u64) -> Vec<u8> {
    let raw = d.join(format!("{sub}.raw"));
    make_mixed_raw(&raw, 3 << 20, seed);
    let img = d.join(format!("{sub}.vmdk"));
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        &format!("subformat={sub}"),
        s(&raw),
        s(&img),
    ]);
    std::fs::read(img).unwrap()
}

fn le32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn expect_err(d: &Path, bytes: &[u8], needle: &str) {
    let p = d.join("bad.vmdk");
    std::fs::write(&p, bytes).unwrap();
    match exercise(&p) {
        Err(e) => assert!(
            e.contains(needle),
            "error '{e}' does not mention '{needle}'"
        ),
        Ok(()) => panic!("accepted a bad image (expected an error about {needle})"),
    }
}

#[test]
fn truncated_files() {
    let dir = tmp();
    let d = dir.path();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let good = small_image(d, sub, 31);
        let n = good.len();
        let mut cuts = vec![
            0,
            1,
            4,
            79,
            100,
            511,
            512,
            513,
            1024,
            4096,
            10_000,
            65_536,
            n / 3,
            n / 2,
            n - 1536,
        ];
        cuts.extend((1..40).map(|i| i * n / 41));
        for cut in cuts {
            let p = d.join("cut.vmdk");
            std::fs::write(&p, &good[..cut]).unwrap();
            let r = exercise(&p);
            if (4..65_536).contains(&cut) || cut == n / 3 || cut == n / 2 {
                assert!(r.is_err(), "{sub} cut at {cut} of {n} was accepted");
            }
        }
    }
}

#[test]
fn bad_headers_and_tables() {
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "monolithicSparse", 41);
    let set64 = |at: usize, v: u64| {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    expect_err(d, &set64(20, 1 << 40), "grain size");
    expect_err(d, &set64(12, 1 << 63), "capacity");
    let mut b = good.clone();
    b[44..48].copy_from_slice(&(1u32 << 31).to_le_bytes());
    expect_err(d, &b, "grain table");
    let mut b = good.clone();
    b[4..8].copy_from_slice(&99u32.to_le_bytes());
    expect_err(d, &b, "version");
    // A broken magic makes it no VMDK at all (it opens as raw): only "no panic" matters.
    let mut b = good.clone();
    b[0] = b'X';
    let p = d.join("garbled.vmdk");
    std::fs::write(&p, &b).unwrap();
    let _ = exercise(&p);

    // Grain directories (primary at gdOffset, redundant at rgdOffset) and the first tables.
    let gd = u64::from_le_bytes(good[56..64].try_into().unwrap()) as usize * 512;
    let rgd = u64::from_le_bytes(good[48..56].try_into().unwrap()) as usize * 512;
    let gt = le32_at(&good, gd) as usize * 512;
    let rgt = le32_at(&good, rgd) as usize * 512;
    // Primary GD entry past EOF: the redundant directory takes over, with a warning.
    let mut b = good.clone();
    b[gd..gd + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
    let p = d.join("rgd.vmdk");
    std::fs::write(&p, &b).unwrap();
    let dev = block::open(&p).unwrap();
    assert!(dev
        .info()
        .unwrap()
        .warnings
        .iter()
        .any(|w| w.contains("redundant")));
    let orig = d.join("orig.vmdk");
    std::fs::write(&orig, &good).unwrap();
    assert_eq!(
        read_all(&dev, 1 << 20),
        read_all(&block::open(&orig).unwrap(), 1 << 20)
    );
    // Both directories bad: an error naming the grain table.
    b[rgd..rgd + 4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
    expect_err(d, &b, "grain table");
    // A grain table entry past EOF, and one pointing into the header/metadata.
    let first_alloc = (0..512).find(|i| le32_at(&good, gt + 4 * i) > 1).unwrap();
    for v in [0x0fff_fff0u32, 1, 3] {
        let mut b = good.clone();
        for t in [gt, rgt] {
            b[t + 4 * first_alloc..t + 4 * first_alloc + 4].copy_from_slice(&v.to_le_bytes());
        }
        expect_err(d, &b, "grain");
    }
}

#[test]
fn bad_descriptors() {
    let dir = tmp();
    let d = dir.path();
    let mut many =
        String::from("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n");
    for _ in 0..100_000 {
        many.push_str("RW 1 ZERO\n");
    }
    expect_err(d, many.as_bytes(), "extent lines");
    expect_err(
        d,
        b"# Disk DescriptorFile\nversion=1\nthis is not a descriptor at all\n",
        "not a descriptor line",
    );
    expect_err(
        d,
        b"# Disk DescriptorFile\nversion=1\ncreateType=\"x\"\n",
        "no extents",
    );
    expect_err(
        d,
        b"# Disk DescriptorFile\nversion=1\nRW 99999999999999999 FLAT \"x\" 0\n",
        "descriptor",
    );
    expect_err(
        d,
        b"# Disk DescriptorFile\nversion=1\nRW 100 FLAT \"missing.bin\" 0\n",
        "missing.bin",
    );
    expect_err(
        d,
        b"# Disk DescriptorFile\nversion=1\nRW 100 VMFSSPARSE \"x-delta.vmdk\"\n",
        "not supported",
    );
}

#[test]
fn stream_without_footer() {
    let dir = tmp();
    let d = dir.path();
    let mut good = small_image(d, "streamOptimized", 51);
    // qemu records the directory in the header and writes no footer: with gdOffset GD_AT_END
    // the image depends on a footer it does not have.
    good[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(d, &good, "footer");
    // A real footer (VMware's sample) cut off or garbled.
    let Some(c) = corpus() else { return };
    let good = std::fs::read(c.join("DiskAccessLibrary-VMDK/StreamOptimized.vmdk")).unwrap();
    assert_eq!(
        &good[56..64],
        &[0xff; 8],
        "the sample keeps its directory in the footer"
    );
    expect_err(d, &good[..good.len() - 1536], "footer");
    let mut b = good.clone();
    let n = b.len();
    b[n - 1024] = b'X'; // footer header magic
    expect_err(d, &b, "footer");
}

/// A deterministic xorshift for mutation positions and values.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn mutations_never_panic() {
    let dir = tmp();
    let d = dir.path();
    let mut seed = 0x1234_5678_9abc_def1u64;
    for sub in ["monolithicSparse", "streamOptimized"] {
        let good = small_image(d, sub, 61);
        let n = good.len() as u64;
        let p = d.join(format!("mut-{sub}.vmdk"));
        std::fs::write(&p, &good).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        for i in 0..1000 {
            // Half in the first 64 KiB (header, descriptor, directories and tables of
            // monolithicSparse), half in the last 8 KiB (tables, directory, footer of streams).
            let at = if i % 2 == 0 {
                rng(&mut seed) % 65536.min(n)
            } else {
                n - 1 - rng(&mut seed) % 8192
            };
            let v = (rng(&mut seed) & 0xff) as u8;
            f.write_all_at(&[v], at).unwrap();
            let _ = exercise(&p);
            f.write_all_at(&good[at as usize..at as usize + 1], at)
                .unwrap();
        }
    }
}

/// Several threads reading one device at once (compressed grains share the grain cache and
/// the inflated-grain cache) all see qemu's bytes.
#[test]
fn parallel_reads() {
    let dir = tmp();
    let d = dir.path();
    small_image(d, "streamOptimized", 71);
    let img = d.join("streamOptimized.vmdk");
    let want = Arc::new(qemu_raw(&img, d));
    let dev = block::open(&img).unwrap();
    let threads: Vec<_> = [4096usize, 12345, 65536, 100_000]
        .into_iter()
        .map(|chunk| {
            let (dev, want) = (dev.clone(), want.clone());
            std::thread::spawn(move || assert!(read_all(&dev, chunk) == *want, "chunk {chunk}"))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn shared_grain_tables_are_refused() {
    // Two directory entries naming one grain table would let a small file describe a huge
    // mapping; a real hosted sparse extent never shares tables.
    let dir = tmp();
    let d = dir.path();
    let img = d.join("big.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", s(&img), "200M"]);
    common::qemu_io("vmdk", &img, &["write -P 7 0 64k", "write -P 8 100M 64k"]);
    let good = std::fs::read(&img).unwrap();
    let gd = u64::from_le_bytes(good[56..64].try_into().unwrap()) as usize * 512;
    let rgd = u64::from_le_bytes(good[48..56].try_into().unwrap()) as usize * 512;
    let mut b = good.clone();
    for dir_at in [gd, rgd] {
        let first = b[dir_at..dir_at + 4].to_vec();
        b[dir_at + 4..dir_at + 8].copy_from_slice(&first);
    }
    expect_err(d, &b, "both point at the grain table");
}
