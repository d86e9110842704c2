//! The NTFS reader against ntfs-3g: volumes made by mkntfs (several cluster and record sizes),
//! filled through an ntfs-3g mount (compressed, sparse, streams, hard links, Interix and
//! reparse-point symlinks, junctions, a 20k-entry directory, long and unicode names), then
//! mounted read-only by ntfs-3g and read by ferry: every path's type, size, st_blocks, nlink,
//! times, link target and sha256, and every stream xattr, must agree. Also the corpus volumes
//! that Windows and mkntfs wrote, and damaged volumes that must not panic or hang.

use crate::common;

use common::kernel::{self, Snapshot};
use common::ntfs3g::Ntfs3g;
use ferry::block::mem::MemDevice;
use ferry::fs::ntfs::Ntfs;
use ferry::fs::{Error, FileType, Filesystem};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Whether ntfs-3g can be used here; a loud SKIP (or a failure under FERRY_REQUIRE_FUSE=1)
/// when not.
fn have_ntfs3g() -> bool {
    let ok = common::have_tools(&["mkntfs", "ntfs-3g", "setfattr", "getfattr"])
        && Path::new("/dev/fuse").exists()
        && nix_is_root();
    if !ok {
        assert!(
            !kernel::required(),
            "ntfs-3g, mkntfs, attr, /dev/fuse and root are needed (FERRY_REQUIRE_FUSE=1)"
        );
        eprintln!("SKIP: needs ntfs-3g, mkntfs, setfattr/getfattr, /dev/fuse and root");
    }
    ok
}

fn nix_is_root() -> bool {
    common::sh("id -u").trim() == "0"
}

fn mkntfs(img: &Path, size: u64, args: &[&str]) {
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img).unwrap().set_len(size).unwrap();
    common::run(
        Command::new("mkntfs")
            .args(["-F", "-Q", "-q"])
            .args(args)
            .arg(img),
    );
}

/// Reparse data of a symbolic link ([MS-FSCC] 2.1.2.4).
fn symlink_reparse(target: &str, relative: bool) -> Vec<u8> {
    let t: Vec<u8> = target.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let n = t.len() as u16;
    let mut d = Vec::new();
    for v in [0, n, n, n] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d.extend_from_slice(&u32::from(relative).to_le_bytes());
    d.extend_from_slice(&t);
    d.extend_from_slice(&t);
    reparse(0xa000_000c, &d)
}

/// Reparse data of a junction to `target` ("C:\dir").
fn junction_reparse(target: &str) -> Vec<u8> {
    let s: Vec<u8> = format!("\\??\\{target}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let p: Vec<u8> = target.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut d = Vec::new();
    for v in [0, s.len(), s.len() + 2, p.len()] {
        d.extend_from_slice(&(v as u16).to_le_bytes());
    }
    d.extend_from_slice(&s);
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&p);
    d.extend_from_slice(&[0, 0]);
    reparse(0xa000_0003, &d)
}

fn reparse(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut r = tag.to_le_bytes().to_vec();
    r.extend_from_slice(&(data.len() as u16).to_le_bytes());
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(data);
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How big a tree to write.
#[derive(Clone, Copy)]
struct Fill {
    big_dir: usize,
    long_names: usize,
    compress: bool,
}

/// Fills the ntfs-3g mount at `m` (read-write, streams_interface=xattr).
fn populate(m: &Path, fill: Fill) {
    let w = |p: &str, data: &[u8]| std::fs::write(m.join(p), data).unwrap();
    for d in ["a/b/c/d", "big", "long", "cmp", "junk", "docs"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    for n in [0usize, 1, 4095, 4096, 4097] {
        w(&format!("size{n}"), &common::pseudo_random(n as u64, n));
    }
    w("large", &common::pseudo_random(7, (3 << 20) + 123));
    w("a/b/c/d/deep", b"deep file\n");
    w("ünïcødé-名前-😀", b"utf8\n");
    w(&"n".repeat(255), b"longest name\n");
    w("with space", b"spaces\n");
    // Hard links in other directories.
    std::fs::hard_link(m.join("size4097"), m.join("a/link1")).unwrap();
    std::fs::hard_link(m.join("size4097"), m.join("a/b/link2")).unwrap();
    // Sparse: holes at the start, in the middle and at the end.
    let f = std::fs::File::create(m.join("sparse")).unwrap();
    f.set_len(40 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&common::pseudo_random(3, 100_000), 5 << 20)
        .unwrap();
    f.write_all_at(b"tail", 30 << 20).unwrap();
    drop(f);
    // Interix symlinks (what ntfs-3g makes for symlink(2)), a FIFO.
    std::os::unix::fs::symlink("a/b/c/d/deep", m.join("intx_rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", m.join("intx_abs")).unwrap();
    common::sh(&format!("mkfifo '{}'", m.join("fifo").display()));
    // Windows symlinks and junctions, written as raw reparse data.
    let set_reparse = |p: &str, data: Vec<u8>| {
        common::run(
            Command::new("setfattr")
                .args(["-n", "system.ntfs_reparse_data", "-v"])
                .arg(format!("0x{}", hex(&data)))
                .arg(m.join(p)),
        );
    };
    for (name, target, relative) in [
        ("win_rel", "A\\B\\C\\D\\DEEP", true),
        ("win_rel_dir", "a\\b", true),
        ("win_full", "\\??\\C:\\Size4097", false),
        ("win_missing", "\\??\\D:\\elsewhere\\x", false),
    ] {
        w(name, b"");
        set_reparse(name, symlink_reparse(target, relative));
    }
    for (name, target) in [("junction", "C:\\A\\B"), ("junction_far", "E:\\data")] {
        std::fs::create_dir(m.join(name)).unwrap();
        set_reparse(name, junction_reparse(target));
    }
    // Alternate data streams: resident and non-resident.
    for (p, k, v) in [
        ("size1", "user.small", b"stream".to_vec()),
        ("size1", "user.big", common::pseudo_random(11, 20_000)),
        ("a", "user.ondir", b"dir stream".to_vec()),
    ] {
        common::run(
            Command::new("setfattr")
                .args(["-n", k, "-v"])
                .arg(format!("0x{}", hex(&v)))
                .arg(m.join(p)),
        );
    }
    if fill.compress {
        // A directory with the compression attribute: files made in it are LZNT1-compressed.
        common::run(
            Command::new("setfattr")
                .args(["-n", "system.ntfs_attrib_be", "-v", "0x00000800"])
                .arg(m.join("cmp")),
        );
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {} of text\n", i % 977).into_bytes())
            .take(700_000)
            .collect();
        w("cmp/text", &text);
        w("cmp/random", &common::pseudo_random(5, 200_000));
        for n in [0usize, 1, 4095, 4096, 4097, 65536, 65537] {
            w(&format!("cmp/z{n}"), &vec![b'z'; n]);
        }
        let f = std::fs::File::create(m.join("cmp/sparse")).unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_all_at(&text[..100_000], 3 << 20).unwrap();
        drop(f);
    }
    // Many entries: a B+ tree several levels deep.
    common::sh(&format!(
        "cd '{}' && seq -w 1 {} | sed 's/^/entry-/' | xargs touch",
        m.join("big").display(),
        fill.big_dir
    ));
    common::sh(&format!(
        "cd '{}' && for i in $(seq 1 {}); do printf $i > \"$(printf 'L%0200d' $i)\"; done",
        m.join("long").display(),
        fill.long_names
    ));
    // Real content: a copy of some documentation.
    common::sh(&format!(
        "cp -r /usr/share/doc/[a-c]* '{}' 2>/dev/null || true",
        m.join("docs").display()
    ));
}

/// Makes an image with mkntfs `args` and fills it through ntfs-3g.
fn build(dir: &Path, name: &str, size: u64, args: &[&str], fill: Fill) -> PathBuf {
    let img = dir.join(name);
    mkntfs(&img, size, args);
    let m = Ntfs3g::mount(
        &img,
        &dir.join(format!("{name}.rw")),
        "streams_interface=xattr",
    );
    populate(&m.0, fill);
    drop(m);
    img
}

/// Stream xattrs of every path under `root`, as getfattr lists them ("user." only).
fn ntfs3g_xattrs(root: &Path) -> BTreeMap<Vec<u8>, BTreeMap<String, String>> {
    let out = Command::new("getfattr")
        .args(["-R", "-P", "-d", "-e", "hex", "-m", "^user\\."])
        .arg(".")
        .current_dir(root)
        .output()
        .unwrap();
    let mut map: BTreeMap<Vec<u8>, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = Vec::new();
    for line in out.stdout.split(|&b| b == b'\n') {
        if let Some(p) = line.strip_prefix(b"# file: ") {
            cur = p.strip_prefix(b"./").unwrap_or(p).to_vec();
            if cur == b"." {
                cur.clear();
            }
        } else if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let k = String::from_utf8_lossy(&line[..eq]).into_owned();
            let v = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            map.entry(cur.clone()).or_default().insert(k, v);
        }
    }
    map
}

/// The same from ferry, for the paths of `snap`.
fn ferry_xattrs(
    fs: &dyn Filesystem,
    snap: &Snapshot,
) -> BTreeMap<Vec<u8>, BTreeMap<String, String>> {
    let mut map: BTreeMap<Vec<u8>, BTreeMap<String, String>> = BTreeMap::new();
    for path in snap.keys() {
        let ino = resolve(fs, path);
        for n in fs.listxattr(ino).unwrap() {
            let v = fs.getxattr(ino, &n).unwrap();
            map.entry(path.clone()).or_default().insert(
                String::from_utf8_lossy(&n).into_owned(),
                format!("0x{}", hex(&v)),
            );
        }
    }
    map
}

fn resolve(fs: &dyn Filesystem, path: &[u8]) -> u64 {
    let mut ino = fs.root_ino();
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c).unwrap().ino;
    }
    ino
}

/// ntfs-3g's view, made comparable: absolute link targets lose the mountpoint prefix, in
/// the target and in the size (ferry maps them for a volume mounted at /).
fn ntfs3g_view(img: &Path, mnt: &Path) -> (Snapshot, BTreeMap<Vec<u8>, BTreeMap<String, String>>) {
    let m = Ntfs3g::mount(img, mnt, "ro,streams_interface=xattr");
    let mut snap = kernel::walk(&m.0);
    let xattrs = ntfs3g_xattrs(&m.0);
    let prefix = m.0.as_os_str().as_bytes().to_vec();
    for e in snap.values_mut() {
        if e.link.starts_with(&prefix) {
            e.link.drain(..prefix.len());
            e.size -= prefix.len() as u64;
        }
    }
    drop(m);
    (snap, xattrs)
}

/// ferry and ntfs-3g agree on the whole of `img`; returns ferry's snapshot.
fn assert_agree(img: &Path, dir: &Path, what: &str) -> Snapshot {
    let before = common::sha256_file(img);
    let (theirs, their_x) = ntfs3g_view(img, &dir.join(format!("{what}.ro")));
    let dev = ferry::block::open(img).unwrap();
    let fs = Ntfs::open(dev).unwrap();
    let ours = kernel::snapshot(&fs);
    kernel::assert_same(&theirs, &ours, what);
    let our_x = ferry_xattrs(&fs, &ours);
    assert_eq!(our_x, their_x, "{what}: stream xattrs differ");
    assert_eq!(
        common::sha256_file(img),
        before,
        "{what}: the image changed"
    );
    ours
}

#[test]
fn ntfs3g_agrees_4k_clusters() {
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fill = Fill {
        big_dir: 20_000,
        long_names: 1500,
        compress: true,
    };
    let img = build(
        tmp.path(),
        "c4k.img",
        256 << 20,
        &["-c", "4096", "-L", "ferry"],
        fill,
    );
    let ours = assert_agree(&img, tmp.path(), "4 KiB clusters");
    // The things this image is for are really there.
    let get = |p: &str| {
        ours.get(p.as_bytes())
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(get("size4097").nlink, 3);
    assert_eq!(get("intx_rel").link, b"a/b/c/d/deep");
    assert_eq!(get("win_rel").link, b"a/b/c/d/deep");
    assert_eq!(get("junction").link, b"/a/b");
    assert_eq!(get("junction_far").link, b"/.NTFS-3G/E:/data");
    assert_eq!(get("fifo").kind, FileType::NamedPipe);
    assert!(
        get("sparse").blocks * 512 < 1 << 20,
        "sparse file fully allocated"
    );
    assert!(
        get("cmp/text").blocks * 512 < 200_000,
        "text not compressed"
    );
    assert_eq!(
        ours.keys().filter(|k| k.starts_with(b"big/")).count(),
        20_000
    );

    let fs = Ntfs::open(ferry::block::open(&img).unwrap()).unwrap();
    let info = fs.info();
    assert_eq!((info.kind, info.label.as_slice()), ("ntfs", &b"ferry"[..]));
    // Case-insensitive lookup of names Windows wrote (the system files are Win32 names),
    // exact lookup of ntfs-3g's POSIX names.
    let root = fs.root_ino();
    assert_eq!(fs.lookup(root, b"$mft").unwrap().ino, 0);
    assert_eq!(fs.lookup(root, b"$UPCASE").unwrap().ino, 10);
    assert!(matches!(fs.lookup(root, b"SIZE1"), Err(Error::NotFound)));
    // System files are not listed.
    assert!(!ours.keys().any(|k| k.starts_with(b"$")));
    // statfs against ntfs-3g's (same cluster counts).
    let st = fs.statfs().unwrap();
    let m = Ntfs3g::mount(&img, &tmp.path().join("statfs"), "ro");
    let df = common::sh(&format!("stat -f -c '%S %b %f' '{}'", m.0.display()));
    drop(m);
    assert_eq!(
        df.trim(),
        format!("{} {} {}", st.bsize, st.blocks, st.bfree)
    );

    // ferry mount shows the same tree as ntfs-3g (FUSE calls the root 1 in both, and ferry
    // puts the filesystem's index in the top byte of inode numbers).
    let (mut theirs, _) = ntfs3g_view(&img, &tmp.path().join("again"));
    let fmnt = tmp.path().join("ferry");
    let f = kernel::FerryMount::new(&[img.as_os_str()], &fmnt).expect("ferry mount");
    let mut mounted = kernel::walk(&fmnt);
    drop(f);
    for e in mounted.values_mut().chain(theirs.values_mut()) {
        e.ino &= (1 << 56) - 1;
    }
    for snap in [&mut mounted, &mut theirs] {
        snap.get_mut(&b""[..]).unwrap().ino = 0;
        // ferry maps absolute targets for a volume at /, ntfs-3g for its mountpoint.
        snap.retain(|_, e| !e.link.starts_with(b"/"));
    }
    kernel::assert_same(&theirs, &mounted, "ferry mount");

    // ferry ls/cat use it.
    let s = img.to_str().unwrap();
    let ls = common::ferry_ok(&["ls", s, "/a/b"]);
    assert_eq!(ls, "c\nlink2\n");
    let cat = common::run(Command::new(common::ferry_bin()).args(["cat", s, "/a/b/c/d/deep"]));
    assert_eq!(cat, "deep file\n");
}

#[test]
fn ntfs3g_agrees_other_geometries() {
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = Fill {
        big_dir: 3000,
        long_names: 300,
        compress: true,
    };
    for (name, args, fill) in [
        ("c512.img", &["-c", "512"][..], small),
        // 4 KiB sectors: 4 KiB MFT records.
        ("s4k.img", &["-c", "4096", "-s", "4096"][..], small),
        // NTFS does not compress with clusters over 4 KiB.
        (
            "c64k.img",
            &["-c", "65536"][..],
            Fill {
                compress: false,
                ..small
            },
        ),
    ] {
        let img = build(tmp.path(), name, 192 << 20, args, fill);
        let fs = Ntfs::open(ferry::block::open(&img).unwrap()).unwrap();
        let bs = fs.boot_sector().clone();
        drop(fs);
        match name {
            "c512.img" => assert_eq!((bs.cluster_size, bs.record_size), (512, 1024)),
            "s4k.img" => assert_eq!((bs.cluster_size, bs.record_size), (4096, 4096)),
            _ => assert_eq!(bs.cluster_size, 65536),
        }
        assert_agree(&img, tmp.path(), name);
    }
}

/// A volume filled with one-cluster files until full, every other one deleted, then large
/// files written into the holes: files of thousands of runs, whose runlists overflow their
/// record into extension records named by an $ATTRIBUTE_LIST; read back as ntfs-3g reads
/// them.
#[test]
fn fragmented_files_with_attribute_lists() {
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("frag.img");
    mkntfs(&img, 24 << 20, &["-c", "1024"]);
    let m = Ntfs3g::mount(&img, &tmp.path().join("rw"), "streams_interface=xattr");
    common::sh(&format!(
        "cd '{}' && mkdir fill && i=0; while [ $i -lt 40000 ] && head -c 1000 /dev/urandom \
         > fill/f$i 2>/dev/null; do i=$((i+1)); done; rm -f fill/f*[02468]; \
         head -c 1500000 /dev/urandom > big1 2>/dev/null; \
         head -c 1500000 /dev/urandom > big2 2>/dev/null; true",
        m.0.display()
    ));
    drop(m);
    assert_agree(&img, tmp.path(), "fragmented");
    let info = common::run(Command::new("ntfsinfo").args(["-F", "/big1"]).arg(&img));
    assert!(
        info.contains("$ATTRIBUTE_LIST"),
        "big1 has no attribute list:\n{info}"
    );
}

/// XPRESS Huffman with every symbol 9 bits long (canonical code = the symbol): literals and
/// matches of 3..=17 bytes, as [MS-XCA] 2.2 lays them out; enough to make WOF test files.
fn xpress_encode(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x99u8; 256];
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    let mut words: Vec<u16> = Vec::new();
    let mut put = |v: u32, n: u32, words: &mut Vec<u16>| {
        acc = (acc << n) | u64::from(v);
        nbits += n;
        while nbits >= 16 {
            words.push((acc >> (nbits - 16)) as u16);
            nbits -= 16;
        }
    };
    let mut i = 0;
    while i < data.len() {
        // The longest match of up to 17 bytes within 1024 bytes back.
        let mut best = (0usize, 0usize);
        for off in 1..=i.min(1024) {
            let mut l = 0;
            while l < 17 && i + l < data.len() && data[i + l] == data[i + l - off] {
                l += 1;
            }
            if l > best.0 {
                best = (l, off);
            }
        }
        if best.0 >= 3 {
            let (l, off) = best;
            let obits = usize::BITS - 1 - off.leading_zeros();
            put(256 + (obits << 4) + (l as u32 - 3), 9, &mut words);
            if obits > 0 {
                put((off - (1 << obits)) as u32, obits, &mut words);
            }
            i += l;
        } else {
            put(u32::from(data[i]), 9, &mut words);
            i += 1;
        }
    }
    put(0, 16, &mut words);
    put(0, 16, &mut words);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// wimlib's own compressors (libwim15, through dlopen): the XPRESS and LZX it writes into WIM
/// resources and WOF streams, chunk by chunk. None when the library is absent.
struct Wimlib {
    create: CreateFn,
    compress: CompressFn,
    free: FreeFn,
}

type Void = std::ffi::c_void;
/// wimlib_create_compressor(ctype, max_block_size, level, &compressor).
type CreateFn = unsafe extern "C" fn(u32, usize, u32, *mut *mut Void) -> i32;
/// wimlib_compress(in, in_size, out, out_avail, compressor) -> out size, 0 if it did not fit.
type CompressFn = unsafe extern "C" fn(*const Void, usize, *mut Void, usize, *mut Void) -> usize;
type FreeFn = unsafe extern "C" fn(*mut Void);

impl Wimlib {
    const XPRESS: u32 = 1;
    const LZX: u32 = 2;

    fn open() -> Option<Wimlib> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have these C
        // signatures in wimlib.h (wimlib_create_compressor, wimlib_compress,
        // wimlib_free_compressor), and the library is never closed.
        unsafe {
            let lib = libc::dlopen(c"libwim.so.15".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let sym = |n: &std::ffi::CStr| libc::dlsym(lib, n.as_ptr());
            let (c, z, f) = (
                sym(c"wimlib_create_compressor"),
                sym(c"wimlib_compress"),
                sym(c"wimlib_free_compressor"),
            );
            if c.is_null() || z.is_null() || f.is_null() {
                return None;
            }
            Some(Wimlib {
                create: std::mem::transmute::<*mut Void, CreateFn>(c),
                compress: std::mem::transmute::<*mut Void, CompressFn>(z),
                free: std::mem::transmute::<*mut Void, FreeFn>(f),
            })
        }
    }

    /// Each `chunk`-byte piece of `data` compressed, or stored as it is when compression does
    /// not make it smaller (as WOF stores it).
    fn chunks(&self, kind: u32, chunk: usize, data: &[u8]) -> Vec<Vec<u8>> {
        let mut c = std::ptr::null_mut();
        // SAFETY: see `open`; the compressor is freed below, the buffers outlive the calls.
        unsafe {
            assert_eq!(
                (self.create)(kind, chunk, 0, &mut c),
                0,
                "wimlib compressor"
            );
            let out = data
                .chunks(chunk)
                .map(|p| {
                    let mut z = vec![0u8; p.len() - 1];
                    let n = (self.compress)(
                        p.as_ptr().cast(),
                        p.len(),
                        z.as_mut_ptr().cast(),
                        z.len(),
                        c,
                    );
                    if n == 0 {
                        p.to_vec()
                    } else {
                        z.truncate(n);
                        z
                    }
                })
                .collect();
            (self.free)(c);
            out
        }
    }
}

/// WOF-compressed files (XPRESS4K/16K and LZX, as CompactOS writes them) built by the
/// published layout through ntfs-3g, the chunks made by wimlib's compressors (and XPRESS also
/// by a minimal encoder of [MS-XCA]): ferry reads the plaintext back. The plaintext holds x86
/// code, so LZX's E8 call translation is exercised. The same volume with a hibernation file
/// is read with a warning.
#[test]
fn wof_compressed_files() {
    if !have_ntfs3g() {
        return;
    }
    let Some(wim) = Wimlib::open() else {
        eprintln!("SKIP wof_compressed_files: libwim.so.15 (Debian libwim15) is not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("wof.img");
    mkntfs(&img, 16 << 20, &["-c", "4096"]);
    let text: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("{} bottles of beer; ", i % 97).into_bytes())
        .collect();
    let mut plain = text.clone();
    plain.extend_from_slice(&common::pseudo_random(9, 5000));
    plain.truncate(40_000);
    // x86-64 code with its CALLs (0xE8) and text, and a last chunk that is not whole.
    let code = std::fs::read("/usr/bin/ls").unwrap();
    plain.extend_from_slice(&code[..code.len().min(60_000)]);
    plain.extend_from_slice(&text[..7_777]);
    let calls = plain.iter().filter(|&&b| b == 0xe8).count();
    assert!(calls > 50, "only {calls} E8 bytes in the plaintext");
    let m = Ntfs3g::mount(&img, &tmp.path().join("rw"), "streams_interface=xattr");
    let minimal = |chunk: usize| -> Vec<Vec<u8>> {
        plain
            .chunks(chunk)
            .map(|c| {
                let z = xpress_encode(c);
                if z.len() < c.len() {
                    z
                } else {
                    c.to_vec()
                }
            })
            .collect()
    };
    let files = [
        ("x4k", 0u32, minimal(4096)),
        ("x16k", 3, minimal(16384)),
        ("wx4k", 0, wim.chunks(Wimlib::XPRESS, 4096, &plain)),
        ("wx8k", 2, wim.chunks(Wimlib::XPRESS, 8192, &plain)),
        ("lzx", 1, wim.chunks(Wimlib::LZX, 32768, &plain)),
    ];
    // The LZX file with its second chunk cut in half.
    let mut cut = files[4].2.clone();
    let half = cut[1].len() / 2;
    cut[1].truncate(half);
    for (name, alg, chunks) in files.iter().chain([&("lzxcut", 1, cut)]) {
        let mut table = Vec::new();
        let mut at = 0u32;
        for c in &chunks[..chunks.len() - 1] {
            at += c.len() as u32;
            table.extend_from_slice(&at.to_le_bytes());
        }
        let mut stream = table;
        for c in chunks {
            stream.extend_from_slice(c);
        }
        // Compressed chunks, not stored ones, are what is under test.
        assert!(
            stream.len() < plain.len() * 2 / 3,
            "{name}: {} bytes",
            stream.len()
        );
        let p = m.0.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(plain.len() as u64)
            .unwrap();
        common::run(
            Command::new("setfattr")
                .args(["-n", "user.WofCompressedData", "-v"])
                .arg(format!("0x{}", hex(&stream)))
                .arg(&p),
        );
        let mut r = Vec::new();
        for v in [1u32, 2, 1, *alg] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        common::run(
            Command::new("setfattr")
                .args(["-n", "system.ntfs_reparse_data", "-v"])
                .arg(format!("0x{}", hex(&reparse(0x8000_0017, &r))))
                .arg(&p),
        );
    }
    // A hibernated Windows: still read, with a warning.
    std::fs::write(m.0.join("hiberfil.sys"), b"hibr\0\0\0\0").unwrap();
    drop(m);
    let out = common::run_ferry(&["ls", img.to_str().unwrap(), "/"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Windows is hibernated"));
    let fs = Ntfs::open(ferry::block::open(&img).unwrap()).unwrap();
    for (name, _, _) in &files {
        let ino = resolve(&fs, name.as_bytes());
        let a = fs.getattr(ino).unwrap();
        assert_eq!(
            (a.kind, a.size),
            (FileType::RegularFile, plain.len() as u64)
        );
        let got = kernel::read_all(&fs, ino, a.size, 5000).unwrap();
        assert!(got == plain, "{name}: decompressed content differs");
        // A read that starts inside a chunk and ends inside a later one.
        let mut part = vec![0u8; 40_000];
        let n = fs.read(ino, 30_000, &mut part).unwrap();
        assert_eq!(
            part[..n],
            plain[30_000..30_000 + n],
            "{name}: read at 30000"
        );
    }
    // A damaged LZX chunk fails that chunk's reads with EIO; the chunks before it still read.
    let ino = resolve(&fs, b"lzxcut");
    let mut buf = vec![0u8; 32768];
    assert_eq!(fs.read(ino, 0, &mut buf).unwrap(), 32768);
    assert!(
        buf == plain[..32768],
        "lzxcut: the intact first chunk differs"
    );
    let e = fs.read(ino, 32768, &mut buf).unwrap_err();
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("chunk 1"), "{e}");
}

/// Volumes written by Windows (dissect.ntfs) and by mkntfs elsewhere (ColinFinck/ntfs) read
/// as ntfs-3g reads them.
#[test]
fn corpus_volumes() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let testfs1 = corpus.join("ColinFinck-ntfs/testfs1");
    let copy = tmp.path().join("testfs1");
    std::fs::copy(&testfs1, &copy).unwrap();
    let ours = assert_agree(&copy, tmp.path(), "testfs1");
    assert!(!ours.is_empty());
    for gz in ["dissect.ntfs/ntfs.bin.gz", "dissect.ntfs/ntfs-cloud.bin.gz"] {
        let img = common::unpack(&corpus.join(gz), tmp.path());
        let name = img.file_name().unwrap().to_string_lossy().into_owned();
        let before = common::sha256_file(&img);
        let (theirs, their_x) = ntfs3g_view(&img, &tmp.path().join(format!("{name}.ro")));
        let fs = Ntfs::open(ferry::block::open_as(&img, Some(ferry::block::Format::Raw)).unwrap())
            .unwrap();
        let mut ours = kernel::snapshot_lenient(&fs);
        // ntfs-3g shows files whose data is elsewhere (cloud placeholders) as symlinks to
        // an "unsupported reparse" text; ferry shows them as regular files that fail with
        // EIO, and such directories (a OneDrive root) as directories, whose contents ntfs-3g
        // does not show.
        let mut skipped = 0;
        for (p, e) in &theirs {
            if e.kind == FileType::Symlink && e.link.starts_with(b"unsupported reparse") {
                let o = ours.remove(p).expect("the file is listed");
                let name = String::from_utf8_lossy(p);
                match o.kind {
                    FileType::Directory => {
                        let mut under = p.clone();
                        under.push(b'/');
                        ours.retain(|k, _| !k.starts_with(&under));
                    }
                    _ => assert!(o.sha.starts_with("error"), "{name} read as if it had data"),
                }
                skipped += 1;
            }
        }
        let theirs: Snapshot = theirs
            .into_iter()
            .filter(|(_, e)| {
                !(e.kind == FileType::Symlink && e.link.starts_with(b"unsupported reparse"))
            })
            .collect();
        eprintln!(
            "{name}: {} paths, {skipped} with data elsewhere",
            theirs.len()
        );
        kernel::assert_same(&theirs, &ours, &name);
        let our_x = ferry_xattrs(&fs, &ours);
        let their_x: BTreeMap<_, _> = their_x
            .into_iter()
            .filter(|(p, _)| ours.contains_key(p))
            .collect();
        assert_eq!(our_x, their_x, "{name}: stream xattrs differ");
        assert_eq!(common::sha256_file(&img), before);
    }
}

/// Damaged volumes: bytes flipped in MFT records, runlists and index blocks, and truncated
/// images. Opening and walking never panics or hangs; a record with a torn stride is an
/// error for that file only.
#[test]
fn damaged_volumes() {
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = build(
        tmp.path(),
        "dmg.img",
        16 << 20,
        &["-c", "1024"],
        Fill {
            big_dir: 400,
            long_names: 40,
            compress: true,
        },
    );
    let orig = std::fs::read(&img).unwrap();
    let fs = Ntfs::open(Arc::new(MemDevice(orig.clone()))).unwrap();
    let deep = resolve(&fs, b"a/b/c/d/deep");
    let rs = fs.boot_sector().record_size as usize;
    let mft = (fs.boot_sector().mft_lcn * u64::from(fs.boot_sector().cluster_size)) as usize;
    drop(fs);
    // A torn stride in one record (its update sequence number no longer matches): that
    // file is EIO, its neighbours are fine. mkntfs' $MFT is contiguous at first, and the
    // files made here fit its first extent.
    let mut torn = orig.clone();
    let at = mft + deep as usize * rs + 510;
    torn[at] ^= 0xff;
    let fs = Ntfs::open(Arc::new(MemDevice(torn))).unwrap();
    let d = resolve(&fs, b"a/b/c/d");
    // The error names the record, the volume byte of the torn stride's tail, and the update
    // sequence number it should end with.
    let err = fs.lookup(d, b"deep").unwrap_err();
    let c = err.corruption().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        (c.what, c.ino, c.offset),
        ("MFT record", deep, Some(at as u64)),
        "{err}"
    );
    let hex = |a: u8, b: u8| format!("{a:02x}{b:02x}");
    let m = c.mismatch.as_ref().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(m.expected, hex(orig[at], orig[at + 1]), "{err}");
    assert_eq!(m.found, hex(orig[at] ^ 0xff, orig[at + 1]), "{err}");
    assert_eq!(fs.lookup(fs.root_ino(), b"size1").unwrap().size, 1);
    drop(fs);

    // An index block whose magic is gone: listing `big` (400 entries, so a B+ tree with
    // INDX blocks) fails with the block's volume position and the magic expected.
    let fs = Ntfs::open(Arc::new(MemDevice(orig.clone()))).unwrap();
    let big = resolve(&fs, b"big");
    drop(fs);
    // Index blocks are cluster-aligned (1 KiB clusters here).
    let indx: Vec<usize> = (0..orig.len() / 1024)
        .map(|k| k * 1024)
        .filter(|&o| orig[o..].starts_with(b"INDX"))
        .collect();
    let mut found = false;
    for &o in &indx {
        let mut bad = orig.clone();
        bad[o] = b'X';
        let fs = Ntfs::open(Arc::new(MemDevice(bad))).unwrap();
        let Err(err) = fs.readdir(big, 0, &mut |_, _| true) else {
            continue; // another directory's block
        };
        let c = err.corruption().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(
            (c.what, c.ino, c.offset),
            ("index block", big, Some(o as u64))
        );
        let m = c.mismatch.as_ref().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(m.expected, "INDX", "{err}");
        assert!(
            err.to_string().contains(&format!("at offset {o:#x}")),
            "{err}"
        );
        found = true;
        break;
    }
    assert!(found, "no INDX block of `big` among {indx:?}");

    // Hot ranges: the boot sector, the MFT records in use, and the index blocks.
    let mut hot = vec![(0, 512), (mft, mft + 200 * rs)];
    hot.extend(indx.iter().map(|&o| (o, (o + 4096).min(orig.len()))));
    let mut opened = 0;
    for m in common::mutants(&orig, &hot, 300, 14) {
        if walk_bounded(m) {
            opened += 1;
        }
    }
    assert!(opened > 100, "only {opened} mutants opened at all");
    for cut in [
        0,
        100,
        4096,
        mft,
        mft + 17 * rs,
        orig.len() / 2,
        orig.len() - 1,
    ] {
        walk_bounded(orig[..cut].to_vec());
    }
}

/// `common::walk_bounded` over NTFS bytes.
fn walk_bounded(data: Vec<u8>) -> bool {
    common::walk_bounded("NTFS", move || {
        let fs = Ntfs::open(Arc::new(MemDevice(data))).ok()?;
        Some(Box::new(fs) as Box<dyn Filesystem>)
    })
}

/// An NTFS partition of a GPT disk and of an MBR disk, through qcow2 and VMDK: `ferry ls`
/// and `ferry cat` read it as ntfs-3g reads the volume itself.
#[test]
fn ntfs_partition_through_qcow2_and_vmdk() {
    if !have_ntfs3g() || !common::have_tools(&["sfdisk", "qemu-img"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fill = Fill {
        big_dir: 100,
        long_names: 10,
        compress: true,
    };
    let vol = build(tmp.path(), "part.img", 64 << 20, &["-c", "4096"], fill);
    let (theirs, _) = ntfs3g_view(&vol, &tmp.path().join("part.ro"));
    let data = std::fs::read(&vol).unwrap();
    let sectors = data.len() / 512;
    for (label, ptype) in [
        ("gpt", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        ("dos", "7"),
    ] {
        let disk = tmp.path().join(format!("{label}.raw"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(data.len() as u64 + (4 << 20))
            .unwrap();
        common::sh(&format!(
            "echo 'label: {label}\nstart=2048, size={sectors}, type={ptype}' | sfdisk -q '{}'",
            disk.display()
        ));
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .unwrap()
            .write_all_at(&data, 1 << 20)
            .unwrap();
        for fmt in ["qcow2", "vmdk"] {
            let img = tmp.path().join(format!("{label}.{fmt}"));
            common::qemu_img(&[
                "convert",
                "-O",
                fmt,
                disk.to_str().unwrap(),
                img.to_str().unwrap(),
            ]);
            let s = img.to_str().unwrap();
            assert_eq!(common::ferry_ok(&["ls", s, "/a/b"]), "c\nlink2\n", "{s}");
            for p in ["size4097", "cmp/text", "large", "sparse"] {
                let out = common::run_ferry(&["cat", s, &format!("/{p}")]);
                assert!(out.status.success(), "{s} {p}");
                let sha = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&out.stdout));
                assert_eq!(sha, theirs[p.as_bytes()].sha, "{s}: {p}");
            }
        }
    }
}

/// Whether ntfscluster (ntfs-3g's tool) finds a file using clusters `first..=last`.
fn ntfscluster_used(img: &Path, first: u64, last: u64) -> bool {
    let out = common::run_tool(
        "ntfscluster",
        &["-c", &format!("{first}-{last}"), img.to_str().unwrap()],
    );
    !out.contains("no inode found")
}

/// `unused` gives the clusters $Bitmap marks free: as many as ntfs-3g's statfs counts, none
/// of them used by a file, and the clusters between them used (ntfscluster, which walks every
/// file's runs, is the oracle); a volume marked dirty makes it refuse.
#[test]
fn unused_clusters_are_the_ones_no_file_uses() {
    if !have_ntfs3g() || !common::have_tools(&["ntfscluster"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fill = Fill {
        big_dir: 500,
        long_names: 10,
        compress: true,
    };
    let img = build(tmp.path(), "free.img", 96 << 20, &["-c", "4096"], fill);
    {
        let m = Ntfs3g::mount(&img, &tmp.path().join("del"), "");
        std::fs::remove_dir_all(m.0.join("big")).unwrap();
        std::fs::remove_dir_all(m.0.join("docs")).unwrap();
    }
    let free_3g = {
        let m = Ntfs3g::mount(&img, &tmp.path().join("ro"), "ro");
        let s = statvfs_free(&m.0);
        drop(m);
        s
    };
    let fs = Ntfs::open(ferry::block::open(&img).unwrap()).unwrap();
    let cs = u64::from(fs.info().block_size);
    let free: Vec<(u64, u64)> = fs
        .unused()
        .unwrap()
        .into_iter()
        .map(|r| (r.start / cs, r.end / cs))
        .collect();
    let total: u64 = free.iter().map(|(a, b)| b - a).sum();
    assert_eq!(total * cs, free_3g);
    assert!(free.len() > 3, "{free:?}");
    for (a, b) in free.iter().take(40) {
        assert!(
            !ntfscluster_used(&img, *a, b - 1),
            "clusters {a}..{b} are in use"
        );
    }
    for w in free.windows(2).take(40) {
        let (used_from, used_to) = (w[0].1, w[1].0);
        assert!(
            ntfscluster_used(&img, used_from, used_to - 1),
            "clusters {used_from}..{used_to} are used by nothing"
        );
    }

    // The volume flags' dirty bit, as Windows leaves it after a crash.
    set_dirty(&img);
    let fs = Ntfs::open(ferry::block::open(&img).unwrap()).unwrap();
    let e = fs.unused().unwrap_err().to_string();
    assert!(e.contains("dirty"), "{e}");
}

/// Free bytes by statvfs (f_bfree × f_frsize) of a mounted filesystem.
fn statvfs_free(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills a zeroed struct through a valid pointer; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree * st.f_frsize
}

/// Sets the dirty bit in $Volume's $VOLUME_INFORMATION (MFT record 3) of `img`, in place.
/// The flags sit early in the record, clear of the update sequence's sector ends.
fn set_dirty(img: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut boot = [0u8; 512];
    f.read_exact_at(&mut boot, 0).unwrap();
    let cluster = u64::from(u16::from_le_bytes([boot[11], boot[12]])) * u64::from(boot[13]);
    let mft = u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap()) * cluster;
    let rs = match boot[0x40] as i8 {
        n if n < 0 => 1u64 << -n,
        n => n as u64 * cluster,
    };
    let at = mft + 3 * rs;
    let mut rec = vec![0u8; rs as usize];
    f.read_exact_at(&mut rec, at).unwrap();
    assert_eq!(&rec[..4], b"FILE");
    let mut a = usize::from(u16::from_le_bytes([rec[0x14], rec[0x15]]));
    loop {
        let kind = u32::from_le_bytes(rec[a..a + 4].try_into().unwrap());
        assert_ne!(kind, 0xffff_ffff, "no $VOLUME_INFORMATION");
        let len = u32::from_le_bytes(rec[a + 4..a + 8].try_into().unwrap()) as usize;
        if kind == 0x70 {
            let v = a + usize::from(u16::from_le_bytes([rec[a + 0x14], rec[a + 0x15]]));
            rec[v + 10] |= 1;
            break;
        }
        a += len;
    }
    f.write_all_at(&rec, at).unwrap();
}

/// What ntfs-3g says of a volume's $LogFile when asked to mount it read-write ("The disk
/// contains an unclean file system") and whether ferry warns that "$LogFile is not clean"
/// agree: on Windows-written volumes (dissect.ntfs: one closed cleanly, one captured in use)
/// and on the clean one with the "volume is clean" flag of its restart areas cleared.
#[test]
fn unclean_log_warns_as_ntfs3g_judges() {
    let Some(corpus) = common::corpus() else {
        return;
    };
    if !have_ntfs3g() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let clean = common::unpack(&corpus.join("dissect.ntfs/ntfs.bin.gz"), tmp.path());
    let in_use = common::unpack(&corpus.join("dissect.ntfs/ntfs-cloud.bin.gz"), tmp.path());
    // The clean volume with the flag cleared in both restart pages ("RSTR", whose restart
    // area offset is at byte 24; the flags are at 14 in the area).
    let cleared = tmp.path().join("cleared.bin");
    let mut img = std::fs::read(&clean).unwrap();
    let mut pages = 0;
    for at in (0..img.len() - 4096).step_by(4096) {
        if &img[at..at + 4] == b"RSTR" {
            let ra = at + usize::from(u16::from_le_bytes([img[at + 24], img[at + 25]]));
            img[ra + 14] &= !2;
            pages += 1;
        }
    }
    assert_eq!(pages, 2, "restart pages found");
    std::fs::write(&cleared, &img).unwrap();
    let mnt = tmp.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    let mut verdicts = Vec::new();
    for img in [&clean, &in_use, &cleared] {
        let copy = tmp.path().join("copy.bin");
        std::fs::copy(img, &copy).unwrap();
        let out = Command::new("timeout")
            .args(["30", "ntfs-3g"])
            .arg(&copy)
            .arg(&mnt)
            .output()
            .unwrap();
        let _ = Command::new("umount").arg(&mnt).output();
        let theirs = String::from_utf8_lossy(&out.stderr).contains("unclean file system");
        let before = common::sha256_file(img);
        // ntfs.bin ends in a VHD footer: read the file as the raw volume it holds.
        let ours = common::run_ferry(&["ls", "-f", "raw", img.to_str().unwrap(), "/"]);
        assert!(
            ours.status.success(),
            "{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert_eq!(common::sha256_file(img), before, "the image changed");
        let ours = String::from_utf8_lossy(&ours.stderr).contains("$LogFile is not clean");
        assert_eq!(
            ours,
            theirs,
            "{}: ntfs-3g unclean {theirs}, ferry {ours}",
            img.display()
        );
        verdicts.push(ours);
    }
    assert_eq!(verdicts, [false, true, true]);
}
