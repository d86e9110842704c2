//! ext4 metadata against real oracles: extended attributes and ACLs against `getfattr` on a
//! kernel loop mount; metadata_csum damage against the kernel's view of the same image; htree
//! lookups in a 100 000-entry directory against the kernel's readdir (and timed against the
//! linear scan) and the name hashes against debugfs; encrypted directories against the kernel
//! without the key; casefolded directories against e2fsprogs (this kernel may lack Unicode);
//! and every feature mkfs.ext4 1.47 can set.

use crate::common;

use common::kernel;

use ferry::block::mem::MemDevice;
use ferry::fs::ext4::{htree, Ext4};
use ferry::fs::{Error, FileType, Filesystem};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

fn open(image: &Path) -> Ext4 {
    Ext4::open(ferry::block::open(image).unwrap()).unwrap()
}

fn open_bytes(img: Vec<u8>) -> ferry::fs::Result<Ext4> {
    Ext4::open(Arc::new(MemDevice(img)))
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in v {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Every path of the filesystem ("." for the root, else relative like "a/b") with its inode
/// and type, through readdir; directories whose listing fails are left out, as is their tree.
fn ferry_paths(fs: &dyn Filesystem) -> Vec<(String, u64, FileType)> {
    let mut out = vec![(".".to_string(), fs.root_ino(), FileType::Directory)];
    let mut todo = vec![(String::new(), fs.root_ino())];
    while let Some((path, dir)) = todo.pop() {
        let mut entries = Vec::new();
        if fs
            .readdir(dir, 0, &mut |e, _| {
                entries.push(e);
                true
            })
            .is_err()
        {
            continue;
        }
        for e in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(&e.name);
            let p = if path.is_empty() {
                name.into_owned()
            } else {
                format!("{path}/{name}")
            };
            if e.kind == FileType::Directory {
                todo.push((p.clone(), e.ino));
            }
            out.push((p, e.ino, e.kind));
        }
    }
    out
}

/// path -> attribute name -> value in hex, for paths that have attributes.
type Xattrs = BTreeMap<String, BTreeMap<String, String>>;

/// The kernel's view, from `getfattr -R -P -h -d -m - -e hex` (every namespace; we are root).
fn kernel_xattrs(mnt: &Path) -> Xattrs {
    let out = common::run(
        Command::new("getfattr")
            .args(["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."])
            .current_dir(mnt),
    );
    let mut all = Xattrs::new();
    let mut cur = None;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            let p = p.strip_prefix("./").unwrap_or(p).to_string();
            all.entry(p.clone()).or_default();
            cur = Some(p);
        } else if let Some((name, value)) = line.split_once('=') {
            let p = cur.clone().expect("attribute before a file line");
            all.get_mut(&p)
                .unwrap()
                .insert(name.to_string(), value.to_string());
        }
    }
    all
}

/// ferry's view: listxattr then getxattr of every name, checking that names are not repeated
/// and that an absent name is NoAttr.
fn ferry_xattrs(fs: &dyn Filesystem) -> Xattrs {
    let mut all = Xattrs::new();
    for (path, ino, _) in ferry_paths(fs) {
        let names = fs
            .listxattr(ino)
            .unwrap_or_else(|e| panic!("listxattr {path}: {e}"));
        let mut m = BTreeMap::new();
        for n in &names {
            let v = fs
                .getxattr(ino, n)
                .unwrap_or_else(|e| panic!("getxattr {path} {}: {e}", String::from_utf8_lossy(n)));
            let prev = m.insert(String::from_utf8(n.clone()).unwrap(), hex(&v));
            assert!(
                prev.is_none(),
                "{path}: {} listed twice",
                String::from_utf8_lossy(n)
            );
        }
        assert!(matches!(
            fs.getxattr(ino, b"user.no-such-attribute"),
            Err(Error::NoAttr)
        ));
        if !m.is_empty() {
            all.insert(path, m);
        }
    }
    all
}

/// A tree with attributes of every namespace and size class that a source filesystem holds.
fn xattr_tree(root: &Path, large: usize) {
    // What fits one block besides the large value: 30 with 4 KiB blocks, 12 with 1 KiB.
    let many_count = if large > 1000 { 30 } else { 12 };
    let f = |p: &str| {
        let p = root.join(p);
        std::fs::write(&p, p.file_name().unwrap().as_bytes()).unwrap();
        p.display().to_string()
    };
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    let small = f("small");
    common::sh(&format!(
        "setfattr -n user.a -v 1 '{small}' && setfattr -n user.b -v 'hello world' '{small}'"
    ));
    let many = f("many");
    for i in 0..many_count {
        common::sh(&format!(
            "setfattr -n user.attr-{i:02} -v value-of-attribute-{i} '{many}'"
        ));
    }
    let big = f("large");
    common::sh(&format!(
        "setfattr -n user.large -v 0x{} '{big}'",
        &hex(&common::pseudo_random(7, large))[2..]
    ));
    let empty = f("empty_value");
    common::sh(&format!("setfattr -n user.empty -v '' '{empty}'"));
    let bin = f("binary");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    common::sh(&format!(
        "setfattr -n user.bin -v {} '{bin}'",
        hex(&all_bytes)
    ));
    let acl = f("acl_file");
    common::sh(&format!("setfacl -m u:1234:rw,g:55:r,u:70000:x '{acl}'"));
    let d = root.join("dir").display().to_string();
    common::sh(&format!(
        "setfacl -m u:99:rx '{d}' && setfacl -d -m u:99:rwx,g:7:r '{d}'"
    ));
    common::sh(&format!("setfattr -n user.on_dir -v d '{d}'"));
    let sec = f("dir/sub/labels");
    common::sh(&format!(
        "setfattr -n security.test -v system_u:object_r:etc_t:s0 '{sec}' && \
         setfattr -n trusted.overlay.opaque -v y '{sec}' && setfattr -n user.x -v y '{sec}'"
    ));
    std::os::unix::fs::symlink("small", root.join("link")).unwrap();
    common::sh(&format!(
        "setfattr -h -n trusted.on_link -v l '{}'",
        root.join("link").display()
    ));
    for name in ["same1", "same2"] {
        let p = f(name);
        common::sh(&format!(
            "setfattr -n user.shared -v 0x{} '{p}'",
            &hex(&common::pseudo_random(9, 500))[2..]
        ));
    }
}

#[test]
fn xattrs_match_the_kernel() {
    if !common::have_tools(&["mkfs.ext4", "getfattr", "setfattr", "setfacl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Small filesystems default to 1 KiB blocks; most variants ask for 4 KiB.
    let variants: &[(&str, &[&str], usize)] = &[
        ("ext4", &["-b", "4096"], 3000),
        ("ext4-128", &["-b", "4096", "-I", "128"], 3000),
        ("ext4-1k", &["-b", "1024"], 700),
        ("ext4-nocsum", &["-b", "4096", "-O", "^metadata_csum"], 3000),
        ("ext4-inline", &["-b", "4096", "-O", "inline_data"], 3000),
        ("ext4-ea_inode", &["-b", "4096", "-O", "ea_inode"], 3000),
        ("ext3", &["-t", "ext3", "-b", "4096"], 3000),
        ("ext2-1k", &["-t", "ext2", "-b", "1024", "-I", "128"], 700),
    ];
    for (name, args, large) in variants {
        let src = tmp.path().join(format!("src-{name}"));
        xattr_tree(&src, *large);
        let image = tmp.path().join(format!("{name}.img"));
        kernel::mkfs_ext4(&image, "64M", Some(&src), args);
        let mnt = tmp.path().join("mnt");
        if name.contains("ea_inode") || name.contains("inline") {
            // The kernel writes what the source filesystem cannot hold: values in EA inodes,
            // and inline data that spills into system.data.
            let Some(_m) = kernel::mount_or_skip(&image, &mnt, "loop") else {
                return;
            };
            for (file, sizes) in [
                ("ea_small", &[5000usize][..]),
                ("ea_big", &[65536]),
                ("ea_two", &[20000, 20001]),
            ] {
                let p = mnt.join(file);
                std::fs::write(&p, b"x").unwrap();
                if !name.contains("ea_inode") {
                    continue;
                }
                for (i, size) in sizes.iter().enumerate() {
                    let value = common::pseudo_random(*size as u64, *size);
                    set_xattr(&p, &format!("user.v{i}"), &value);
                }
            }
            std::fs::write(mnt.join("inline_file"), common::pseudo_random(3, 100)).unwrap();
            common::sh(&format!(
                "setfattr -n user.next_to_data -v z '{}'",
                mnt.join("inline_file").display()
            ));
        }
        let fs = open(&image);
        let ours = ferry_xattrs(&fs);
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
            return;
        };
        let kernel = kernel_xattrs(&mnt);
        assert_eq!(
            ours, kernel,
            "{name}: xattrs differ (left ferry, right kernel)"
        );
        // listxattr gives the names in the kernel's order too.
        for (path, ino, _) in ferry_paths(&fs) {
            let theirs = list_xattr(&mnt.join(&path));
            assert_eq!(
                fs.listxattr(ino).unwrap(),
                theirs,
                "{name}: order of {path}"
            );
        }
        let values: usize = kernel.values().map(BTreeMap::len).sum();
        assert!(values >= 27, "{name}: only {values} attributes");
        // Names without a kernel handler: system.data of inline files is stored but neither
        // listed nor readable.
        let root = fs.root_ino();
        let f = fs.lookup(root, b"small").unwrap();
        assert!(matches!(
            fs.getxattr(f.ino, b"system.data"),
            Err(Error::NotSupported)
        ));
        assert!(matches!(
            fs.getxattr(f.ino, b"bogus.name"),
            Err(Error::NotSupported)
        ));
        assert_eq!(ferry::mount::errno(&Error::NoAttr), 61, "ENODATA");
        if name.contains("ea_inode") {
            let e = fs.lookup(root, b"ea_big").unwrap();
            assert_eq!(fs.getxattr(e.ino, b"user.v0").unwrap().len(), 65536);
            // 64 KiB fits neither the inode nor a block: it is in an EA inode.
            let stat = stat_of(&image, "/ea_big");
            assert!(
                stat.contains("File ACL: 0") && stat.contains("user.v0 (65536)"),
                "{stat}"
            );
        }
        eprintln!(
            "{name}: {} paths, {values} attributes agree with the kernel",
            kernel.len()
        );
    }
}

/// lsetxattr(2) on the kernel mount, for values too large for a command line.
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// llistxattr(2) on the kernel mount: the names in the kernel's order.
fn list_xattr(path: &Path) -> Vec<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Flips one byte inside block `blk` (of `bs` bytes) at `at`.
fn flip(img: &mut [u8], bs: u64, blk: u64, at: u64) {
    img[(blk * bs + at) as usize] ^= 0x55;
}

/// A path's state as a reader sees it: its stat and content, or an error.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    File {
        ino: u64,
        size: u64,
        mode: u32,
        sha: String,
    },
    Err,
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// The kernel's view of the tree: every path it can list, with stat and content or Err.
fn kernel_view(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let p = root.join(&rel);
        let key = rel.display().to_string();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            out.insert(key, Seen::Err);
            continue;
        };
        let content = if m.is_dir() {
            // A listing that fails part way (the kernel's htree readdir) counts as failed.
            let listed: Option<Vec<_>> = std::fs::read_dir(&p)
                .ok()
                .and_then(|rd| rd.map(|e| e.ok().map(|e| e.file_name())).collect());
            listed.map(|mut names| {
                names.sort();
                for n in &names {
                    todo.push(rel.join(n));
                }
                let joined: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
                sha(&joined.join(&b'/'))
            })
        } else if m.is_file() {
            std::fs::read(&p).ok().map(|d| sha(&d))
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p)
                .ok()
                .map(|t| sha(t.as_os_str().as_bytes()))
        } else {
            Some(String::new())
        };
        out.insert(
            key,
            match content {
                Some(sha) => Seen::File {
                    ino: m.ino(),
                    size: m.size(),
                    mode: m.mode(),
                    sha,
                },
                None => Seen::Err,
            },
        );
    }
    out
}

/// ferry's view in the same shape as `kernel_view`.
fn ferry_view(fs: &dyn Filesystem) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), fs.root_ino())];
    while let Some((key, ino)) = todo.pop() {
        let Ok(a) = fs.getattr(ino) else {
            out.insert(key, Seen::Err);
            continue;
        };
        let content = match a.kind {
            FileType::Directory => {
                let mut entries = Vec::new();
                let listed = fs.readdir(ino, 0, &mut |e, _| {
                    entries.push(e);
                    true
                });
                listed.ok().map(|()| {
                    let mut names: Vec<Vec<u8>> = Vec::new();
                    for e in entries {
                        if e.name == b"." || e.name == b".." {
                            continue;
                        }
                        let n = String::from_utf8_lossy(&e.name).into_owned();
                        todo.push((
                            if key.is_empty() {
                                n
                            } else {
                                format!("{key}/{n}")
                            },
                            e.ino,
                        ));
                        names.push(e.name);
                    }
                    names.sort();
                    sha(&names.join(&b'/'))
                })
            }
            FileType::RegularFile => {
                let mut buf = vec![0u8; a.size as usize];
                match fs.read(ino, 0, &mut buf) {
                    Ok(n) if n as u64 == a.size => Some(sha(&buf)),
                    _ => None,
                }
            }
            FileType::Symlink => fs.readlink(ino).ok().map(|t| sha(&t)),
            _ => Some(String::new()),
        };
        out.insert(
            key,
            match content {
                Some(sha) => Seen::File {
                    ino,
                    size: a.size,
                    mode: a.mode,
                    sha,
                },
                None => Seen::Err,
            },
        );
    }
    out
}

/// Physical blocks of `path` as `debugfs -R "blocks PATH"` lists them.
fn blocks_of(image: &Path, path: &str) -> Vec<u64> {
    common::run_tool(
        "debugfs",
        &["-R", &format!("blocks {path}"), image.to_str().unwrap()],
    )
    .split_whitespace()
    .filter_map(|w| w.parse().ok())
    .collect()
}

/// `debugfs -R "stat PATH"` output.
fn stat_of(image: &Path, path: &str) -> String {
    common::run_tool(
        "debugfs",
        &["-R", &format!("stat {path}"), image.to_str().unwrap()],
    )
}

/// Where inode `ino` sits: (block, byte offset in it), from `debugfs imap`.
fn inode_location(image: &Path, path: &str) -> (u64, u64) {
    let out = common::run_tool(
        "debugfs",
        &["-R", &format!("imap {path}"), image.to_str().unwrap()],
    );
    // "Inode 12 is part of block group 0\n\tlocated at block 1234, offset 0x0b00"
    let line = out
        .lines()
        .find(|l| l.contains("located at block"))
        .unwrap();
    let blk: u64 = line
        .split("block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let off = line.split("offset ").nth(1).unwrap().trim();
    (
        blk,
        u64::from_str_radix(off.trim_start_matches("0x"), 16).unwrap(),
    )
}

/// Log lines of the library, captured so that tests can check that damage is reported.
/// Log lines with the thread that wrote them: tests run in parallel threads of one process,
/// and each must see only its own (ferry logs from the calling thread).
static LOG: std::sync::Mutex<Vec<(std::thread::ThreadId, String)>> =
    std::sync::Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOG.lock()
                .unwrap()
                .push((std::thread::current().id(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
    });
}

/// Whether a captured log line contains every one of `words`.
fn logged(words: &[&str]) -> bool {
    let me = std::thread::current().id();
    LOG.lock()
        .unwrap()
        .iter()
        .any(|(t, l)| *t == me && words.iter().all(|w| l.contains(w)))
}

#[test]
fn checksum_damage_is_eio_on_that_object() {
    capture_logs();
    if !common::have_tools(&["mkfs.ext4", "debugfs", "setfattr"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("linear")).unwrap();
    std::fs::create_dir_all(src.join("other")).unwrap();
    std::fs::write(src.join("victim"), b"inode checksum").unwrap();
    std::fs::write(src.join("neighbour"), b"same inode table block").unwrap();
    std::fs::write(src.join("other/kept"), b"untouched").unwrap();
    // 1 KiB blocks: 120 long names fill several linear directory blocks.
    for i in 0..120 {
        std::fs::write(
            src.join(format!("linear/entry-{i:03}-{}", "n".repeat(40))),
            b"",
        )
        .unwrap();
    }
    // 200 small extents: a depth-1 extent tree.
    let f = std::fs::File::create(src.join("fragmented")).unwrap();
    for i in 0..200u64 {
        f.write_all_at(&common::pseudo_random(i, 100), i * 2048)
            .unwrap();
    }
    drop(f);
    std::fs::write(src.join("with_xattr_block"), b"x").unwrap();
    common::sh(&format!(
        "setfattr -n user.big -v 0x{} '{}'",
        &hex(&common::pseudo_random(4, 700))[2..],
        src.join("with_xattr_block").display()
    ));
    let image = tmp.path().join("csum.img");
    kernel::mkfs_ext4(&image, "32M", Some(&src), &["-b", "1024"]);
    // An htree directory, grown by the kernel.
    let mnt = tmp.path().join("mnt");
    {
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "loop") else {
            return;
        };
        std::fs::create_dir(mnt.join("hashed")).unwrap();
        for i in 0..600 {
            std::fs::write(
                mnt.join(format!("hashed/name-{i:04}-{}", "h".repeat(20))),
                b"",
            )
            .unwrap();
        }
    }
    let orig = std::fs::read(&image).unwrap();
    let bs = 1024u64;
    let intact = ferry_view(&open_bytes(orig.clone()).unwrap());
    {
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
            return;
        };
        assert_eq!(
            intact,
            kernel_view(&mnt),
            "intact image differs from the kernel"
        );
    }

    // (label, damaged path, byte to flip)
    let mut cases: Vec<(&str, &str, u64, u64)> = Vec::new();
    let (iblk, ioff) = inode_location(&image, "/victim");
    cases.push(("inode", "victim", iblk, ioff + 0x10));
    let lin = blocks_of(&image, "/linear");
    assert!(lin.len() >= 3, "linear dir has {} blocks", lin.len());
    cases.push(("directory block", "linear", lin[1], 30));
    let st = stat_of(&image, "/fragmented");
    let etb: u64 = st
        .split("(ETB0):")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no extent tree block in {st}"));
    cases.push(("extent block", "fragmented", etb, 40));
    let acl: u64 = st_field(&stat_of(&image, "/with_xattr_block"), "File ACL:");
    assert_ne!(acl, 0);
    cases.push(("xattr block", "with_xattr_block", acl, 100));
    let hashed = blocks_of(&image, "/hashed");
    cases.push(("htree leaf", "hashed", hashed[3], 60));
    cases.push(("htree root", "hashed", hashed[0], 40));

    for (label, path, blk, at) in cases {
        let mut img = orig.clone();
        flip(&mut img, bs, blk, at);
        let damaged = tmp.path().join("damaged.img");
        std::fs::write(&damaged, &img).unwrap();
        let fs = open_bytes(img).unwrap_or_else(|e| panic!("{label}: open failed: {e}"));
        let ours = ferry_view(&fs);
        let Some(_m) = kernel::mount_or_skip(&damaged, &mnt, "ro,loop") else {
            return;
        };
        let kernel = kernel_view(&mnt);
        // Everything outside the damaged object is as the kernel shows it.
        let outside = |k: &&String| k.as_str() != path && !k.starts_with(&format!("{path}/"));
        let a: BTreeMap<_, _> = ours.iter().filter(|(k, _)| outside(k)).collect();
        let b: BTreeMap<_, _> = kernel.iter().filter(|(k, _)| outside(k)).collect();
        assert_eq!(
            a, b,
            "{label}: the rest of the tree differs from the kernel's"
        );
        let root = fs.root_ino();
        let eio = |r: ferry::fs::Result<()>| match r {
            Err(e) => assert_eq!(ferry::mount::errno(&e), 5, "{label}: {e}"),
            Ok(()) => panic!("{label}: damage not detected"),
        };
        match label {
            "inode" => {
                eio(fs.lookup(root, b"victim").map(drop));
                assert_eq!(ours["victim"], Seen::Err);
                assert_eq!(kernel["victim"], Seen::Err, "the kernel read a bad inode");
            }
            "extent block" | "xattr block" => {
                let ino = fs.lookup(root, path.as_bytes()).unwrap().ino;
                if label == "xattr block" {
                    eio(fs.listxattr(ino).map(drop));
                    eio(fs.getxattr(ino, b"user.big").map(drop));
                } else {
                    let mut buf = vec![0u8; 1 << 20];
                    eio(fs.read(ino, 0, &mut buf).map(drop));
                    // The kernel refuses the same file.
                    assert_eq!(kernel[path], Seen::Err, "{label}: kernel read it");
                }
            }
            "directory block" | "htree leaf" | "htree root" => {
                let d = fs.lookup(root, path.as_bytes()).unwrap().ino;
                let listed = fs.readdir(d, 0, &mut |_, _| true);
                // Names in intact blocks are found; one in the damaged block is EIO, never a
                // wrong answer.
                let (mut found, mut failed) = (0, 0);
                for (k, s) in &intact {
                    let Some(name) = k.strip_prefix(&format!("{path}/")) else {
                        continue;
                    };
                    match fs.lookup(d, name.as_bytes()) {
                        Ok(a) => {
                            let Seen::File { ino, .. } = s else { panic!() };
                            assert_eq!(a.ino, *ino, "{label}: {name} found as another inode");
                            found += 1;
                        }
                        Err(e) => {
                            assert_eq!(ferry::mount::errno(&e), 5, "{label}: {name}: {e}");
                            failed += 1;
                        }
                    }
                }
                eprintln!("{label}: {found} names found, {failed} EIO, readdir {listed:?}");
                if label == "htree root" {
                    // Index damage falls back to the linear scan: every name is found and the
                    // directory lists (the kernel refuses both).
                    assert_eq!(failed, 0);
                    assert!(listed.is_ok());
                    assert!(logged(&["searching the directory linearly"]));
                } else {
                    assert!(
                        listed.is_err(),
                        "{label}: readdir did not report the damage"
                    );
                    assert!(
                        found > 0 && failed > 0,
                        "{label}: {found} found, {failed} failed"
                    );
                }
            }
            _ => unreachable!(),
        }
        assert!(
            logged(&[&format!("block {blk}")])
                || logged(&[label.split(' ').next().unwrap(), "checksum"]),
            "{label}: no log line about block {blk}: {:?}",
            LOG.lock().unwrap()
        );
        eprintln!("{label}: damage confined to {path}");
    }

    // A bad group descriptor checksum: the kernel mounts read-only anyway and so does ferry,
    // with a log line; nothing else changes (here the free block count was hit).
    assert!(!logged(&["group 0: checksum mismatch"]) && !logged(&["superblock checksum"]));
    let mut img = orig.clone();
    flip(&mut img, bs, 2, 0x0c);
    let damaged = tmp.path().join("damaged.img");
    std::fs::write(&damaged, &img).unwrap();
    let fs = open_bytes(img).unwrap();
    let ours = ferry_view(&fs);
    assert!(
        logged(&["group 0: checksum mismatch"]),
        "{:?}",
        LOG.lock().unwrap()
    );
    {
        let Some(_m) = kernel::mount_or_skip(&damaged, &mnt, "ro,loop") else {
            return;
        };
        assert_eq!(ours, kernel_view(&mnt), "group descriptor damage");
    }
    assert_eq!(ours, intact);

    // A bad superblock checksum: the kernel refuses to mount; ferry reads on (every field it
    // uses is validated) and says so.
    let mut img = orig.clone();
    img[1024 + 0x3f0] ^= 1;
    let fs = open_bytes(img).unwrap();
    assert!(logged(&["superblock checksum mismatch"]));
    assert_eq!(ferry_view(&fs), intact);
}

/// The number after `field` in debugfs stat output.
fn st_field(stat: &str, field: &str) -> u64 {
    stat.split(field)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {stat}"))
}

/// The kernel's names and inode numbers of directory `dir`.
fn kernel_entries(dir: &Path) -> BTreeMap<Vec<u8>, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().as_bytes().to_vec(), e.ino())
        })
        .collect()
}

#[test]
fn htree_lookup_of_100k_names_matches_the_kernel() {
    if !common::have_tools(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("big.img");
    kernel::mkfs_ext4(&image, "256M", None, &["-N", "120000", "-b", "1024"]);
    let mnt = tmp.path().join("mnt");
    {
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "loop") else {
            return;
        };
        std::fs::create_dir(mnt.join("d")).unwrap();
        for i in 0..100_000 {
            std::fs::File::create(mnt.join(format!("d/file-{i:06}-some-name"))).unwrap();
        }
    }
    let dump = common::run_tool("debugfs", &["-R", "htree_dump /d", image.to_str().unwrap()]);
    assert!(
        dump.contains("Indirect levels: 1"),
        "not a two-level index:\n{}",
        &dump[..500.min(dump.len())]
    );
    let kernel = {
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
            return;
        };
        kernel_entries(&mnt.join("d"))
    };
    assert_eq!(kernel.len(), 100_000);
    let fs = open(&image);
    let d = fs.lookup(fs.root_ino(), b"d").unwrap().ino;
    let t = Instant::now();
    for (name, ino) in &kernel {
        let a = fs
            .lookup(d, name)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(name)));
        assert_eq!(a.ino, *ino, "{}", String::from_utf8_lossy(name));
    }
    let with_attr = t.elapsed();
    // The index alone (no fallback) finds every name, and lookup speed without getattr.
    let t = Instant::now();
    for (name, ino) in &kernel {
        assert_eq!(fs.find_with_index(d, name).unwrap(), Some(*ino));
    }
    let hashed = t.elapsed();
    for miss in [
        &b"file-100000-some-name"[..],
        b"nope",
        b"file-000001-some-nam",
        b"FILE-000001-some-name",
    ] {
        assert!(matches!(fs.lookup(d, miss), Err(Error::NotFound)));
        assert_eq!(fs.find_with_index(d, miss).unwrap(), None);
    }
    // The linear scan, on a sample (it reads half the directory per name on average).
    let sample: Vec<_> = kernel.iter().step_by(1000).collect();
    let t = Instant::now();
    for (name, ino) in &sample {
        assert_eq!(fs.find_without_index(d, name).unwrap(), Some(**ino));
    }
    let linear = t.elapsed() / sample.len() as u32;
    let per_hashed = hashed / kernel.len() as u32;
    eprintln!(
        "htree: 100000 lookups in {hashed:?} ({per_hashed:?} each; {with_attr:?} with getattr); \
         linear scan {linear:?} each ({:.0}x slower)",
        linear.as_secs_f64() / per_hashed.as_secs_f64()
    );
    assert!(
        linear > per_hashed * 10,
        "the index does not speed lookups up"
    );
}

/// Hash of `name` by debugfs, as (major, minor).
fn debugfs_hash(image: &Path, version: u8, seed: &str, name: &str, casefold: bool) -> (u32, u32) {
    let cf = if casefold { "-c -e utf8 " } else { "" };
    let out = common::run_tool(
        "debugfs",
        &[
            "-R",
            &format!("dx_hash {cf}-h {version} -s {seed} {name}"),
            image.to_str().unwrap(),
        ],
    );
    // "Hash of NAME is 0x6f5bb1a8 (minor 0x231917c2)"
    let num = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let rest = out.rsplit(" is ").next().unwrap();
    let major = rest.split_whitespace().next().unwrap();
    let minor = rest
        .split("minor ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n']);
    (num(major), num(minor))
}

#[test]
fn name_hashes_match_debugfs() {
    if !common::have_tools(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("h.img");
    kernel::mkfs_ext4(&image, "8M", None, &[]);
    let seed_uuid = "6f1c4e2a-0b39-4d7e-9a51-c2d83f60e417";
    let hex_seed: Vec<u8> = seed_uuid
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect();
    let seed: [u32; 4] =
        std::array::from_fn(|i| u32::from_le_bytes(hex_seed[i * 4..i * 4 + 4].try_into().unwrap()));
    let names = [
        "a".to_string(),
        "hello".into(),
        "héllo-ünïcødé".into(),
        "x".repeat(31),
        "y".repeat(32),
        "z".repeat(33),
        "w".repeat(255),
        "\u{7f}\u{80}mixed-Bytes_0123456789".into(),
        "file-000123-some-name".into(),
    ];
    let mut checked = 0;
    for version in 0..=5u8 {
        for name in &names {
            let ours = htree::hash(version, name.as_bytes(), &seed).unwrap();
            assert_eq!(
                ours,
                debugfs_hash(&image, version, seed_uuid, name, false),
                "version {version}, {name:?}"
            );
            checked += 1;
        }
    }
    // The default seed (all zero) too.
    let zero = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        htree::hash(1, b"hello", &[0; 4]).unwrap(),
        debugfs_hash(&image, 1, zero, "hello", false)
    );
    eprintln!("{checked} hashes agree with debugfs");
}

#[test]
fn htree_hash_versions_and_signedness_match_the_kernel() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "tune2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    // Names with bytes above 0x7f, where signed and unsigned hashes differ.
    let names: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("n-{i}-\u{e9}\u{4e2d}-{}", i * 7919 % 1000).into_bytes())
        .collect();
    for alg in ["legacy", "half_md4", "tea"] {
        for (flag_name, flags) in [("signed", 1), ("unsigned", 2)] {
            let image = tmp.path().join(format!("{alg}-{flag_name}.img"));
            kernel::mkfs_ext4(&image, "32M", None, &["-b", "1024"]);
            common::run_tool(
                "tune2fs",
                &["-E", &format!("hash_alg={alg}"), image.to_str().unwrap()],
            );
            common::run_tool(
                "debugfs",
                &[
                    "-w",
                    "-R",
                    &format!("ssv flags {flags}"),
                    image.to_str().unwrap(),
                ],
            );
            {
                let Some(_m) = kernel::mount_or_skip(&image, &mnt, "loop") else {
                    return;
                };
                std::fs::create_dir(mnt.join("d")).unwrap();
                for n in &names {
                    std::fs::File::create(mnt.join("d").join(OsStr::from_bytes(n))).unwrap();
                }
            }
            let kernel = {
                let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
                    return;
                };
                kernel_entries(&mnt.join("d"))
            };
            let dump =
                common::run_tool("debugfs", &["-R", "htree_dump /d", image.to_str().unwrap()]);
            let want = ["legacy", "half_md4", "tea"]
                .iter()
                .position(|a| *a == alg)
                .unwrap();
            assert!(
                dump.contains(&format!("Hash Version: {want}")),
                "{alg}: {}",
                &dump[..300]
            );
            let fs = open(&image);
            let d = fs.lookup(fs.root_ino(), b"d").unwrap().ino;
            for (name, ino) in &kernel {
                assert_eq!(
                    fs.find_with_index(d, name).unwrap(),
                    Some(*ino),
                    "{alg} {flag_name}"
                );
            }
            eprintln!(
                "{alg}, {flag_name}: {} lookups agree with the kernel",
                kernel.len()
            );
        }
    }
}

/// Encrypted directories without the key: names, sizes, symlink targets and readdir/lookup as
/// the kernel shows them with no key loaded; contents refused with ENOKEY.
#[test]
fn encrypted_dirs_as_the_kernel_shows_them_without_the_key() {
    if !common::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    // With dir_index, readdir names carry the hash of each ciphertext (hash-order readdir);
    // without it, zeros.
    for (name, args) in [
        ("encrypt", &["-O", "encrypt", "-b", "4096"][..]),
        (
            "encrypt-1k-nodirindex",
            &["-O", "encrypt,^dir_index", "-b", "1024"][..],
        ),
    ] {
        let image = tmp.path().join(format!("{name}.img"));
        kernel::mkfs_ext4(&image, "64M", None, args);
        {
            // test_dummy_encryption: new directories get a policy with a key that only this
            // mount has; the next mount sees them as a user without the key does.
            let Some(_m) = kernel::mount_or_skip(&image, &mnt, "loop,test_dummy_encryption") else {
                return;
            };
            let d = mnt.join("enc");
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("small"), b"secret").unwrap();
            std::fs::write(d.join("x".repeat(200)), common::pseudo_random(1, 10000)).unwrap();
            std::fs::write(d.join("y".repeat(255)), b"").unwrap();
            std::os::unix::fs::symlink("target", d.join("short_link")).unwrap();
            std::os::unix::fs::symlink("t".repeat(300), d.join("long_link")).unwrap();
            std::fs::create_dir(d.join("many")).unwrap();
            for i in 0..500 {
                std::fs::write(d.join(format!("many/file-number-{i:04}")), b"").unwrap();
            }
            // Names whose ciphertext is abbreviated: looked up by the hash they carry.
            for i in 0..40 {
                std::fs::write(d.join(format!("many/{i:03}-{}", "l".repeat(190))), b"").unwrap();
            }
            std::fs::create_dir(d.join("one_block")).unwrap();
            std::fs::write(d.join("one_block/only"), b"1").unwrap();
        }
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
            return;
        };
        let kernel = kernel_view(&mnt);
        let fs = open(&image);
        let ours = ferry_view(&fs);
        assert_eq!(
            ours, kernel,
            "{name}: differs from the kernel without the key"
        );
        let names = kernel_entries(&mnt.join("enc"));
        assert!(
            !names.contains_key(&b"small"[..]),
            "{name}: names are not encrypted"
        );
        let enc = fs.lookup(fs.root_ino(), b"enc").unwrap().ino;
        let mut refused = 0;
        let mut total = 0;
        for (dir, kdir) in [(enc, mnt.join("enc"))] {
            for (n, ino) in kernel_entries(&kdir) {
                let a = fs.lookup(dir, &n).unwrap();
                assert_eq!(a.ino, ino, "{name}: lookup by no-key name");
                if a.kind == FileType::RegularFile {
                    let err = fs.read(a.ino, 0, &mut [0u8; 16]).unwrap_err();
                    assert!(matches!(err, Error::NoKey(_)), "{err}");
                    assert_eq!(ferry::mount::errno(&err), 126, "ENOKEY");
                    refused += 1;
                }
                if a.kind == FileType::Directory {
                    let sub = a.ino;
                    for (n, ino) in kernel_entries(&mnt.join("enc").join(OsStr::from_bytes(&n))) {
                        assert_eq!(fs.lookup(sub, &n).unwrap().ino, ino);
                        total += 1;
                    }
                }
            }
        }
        assert!(
            refused >= 3 && total >= 501,
            "{name}: {refused} refused, {total} looked up"
        );
        assert!(matches!(fs.lookup(enc, b"small"), Err(Error::NotFound)));
        eprintln!(
            "{name}: {} paths agree with the kernel without the key",
            kernel.len()
        );
    }
}

/// Casefolded directories. This kernel may have no Unicode support (no casefold mounts), so
/// the oracles are e2fsprogs: e2fsck rebuilds the index with casefolded hashes and then finds
/// the filesystem clean, and debugfs computes casefolded hashes.
#[test]
fn casefold_lookup_is_case_insensitive() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("cf")).unwrap();
    std::fs::create_dir_all(src.join("plain")).unwrap();
    for i in 0..400 {
        std::fs::write(src.join(format!("cf/File-{i:03}-MixedCase.Txt")), b"").unwrap();
    }
    std::fs::write(src.join("cf/\u{c4}rger"), b"").unwrap();
    std::fs::write(src.join("plain/Upper.TXT"), b"").unwrap();
    let image = tmp.path().join("cf.img");
    kernel::mkfs_ext4(&image, "64M", Some(&src), &["-O", "casefold", "-b", "4096"]);
    let img = image.to_str().unwrap();
    let stat = common::run_tool("debugfs", &["-R", "stat /cf", img]);
    let flags = stat
        .split("Flags: 0x")
        .nth(1)
        .and_then(|r| u32::from_str_radix(r.split_whitespace().next()?, 16).ok())
        .unwrap();
    common::run_tool(
        "debugfs",
        &[
            "-w",
            "-R",
            &format!("set_inode_field /cf flags {:#x}", flags | 0x4000_0000),
            img,
        ],
    );
    // e2fsck -D indexes the directory with casefolded hashes; a second pass must be clean.
    let _ = Command::new(common::tool("e2fsck").unwrap())
        .args(["-fyD", img])
        .output();
    common::run_tool("e2fsck", &["-fn", img]);
    let dump = common::run_tool("debugfs", &["-R", "htree_dump /cf", img]);
    assert!(dump.contains("Number of entries"), "no index:\n{dump}");

    let fs = open(&image);
    let root = fs.root_ino();
    let cf = fs.lookup(root, b"cf").unwrap().ino;
    let mut entries = Vec::new();
    fs.readdir(cf, 0, &mut |e, _| {
        entries.push(e);
        true
    })
    .unwrap();
    assert_eq!(entries.len(), 403);
    let mut checked = 0;
    for e in entries
        .iter()
        .filter(|e| e.name.is_ascii() && e.name[0] != b'.')
    {
        for variant in [
            e.name.clone(),
            e.name.to_ascii_lowercase(),
            e.name.to_ascii_uppercase(),
        ] {
            assert_eq!(fs.lookup(cf, &variant).unwrap().ino, e.ino);
            // Through the index alone: the casefolded hash is the one e2fsck sorted by.
            assert_eq!(fs.find_with_index(cf, &variant).unwrap(), Some(e.ino));
            checked += 1;
        }
    }
    let umlaut = entries
        .iter()
        .find(|e| e.name == "\u{c4}rger".as_bytes())
        .unwrap();
    assert_eq!(
        fs.lookup(cf, "\u{e4}RGER".as_bytes()).unwrap().ino,
        umlaut.ino
    );
    assert!(matches!(
        fs.lookup(cf, b"File-000-MixedCase.Tx"),
        Err(Error::NotFound)
    ));
    // Directories without the flag stay case-sensitive.
    let plain = fs.lookup(root, b"plain").unwrap().ino;
    assert!(fs.lookup(plain, b"Upper.TXT").is_ok());
    assert!(matches!(
        fs.lookup(plain, b"upper.txt"),
        Err(Error::NotFound)
    ));
    // The hash of an ASCII name in a casefolded directory is that of its lower case.
    let seed_line = common::run_tool("dumpe2fs", &["-h", img]);
    let seed = seed_line
        .lines()
        .find_map(|l| l.strip_prefix("Directory Hash Seed:"))
        .unwrap()
        .trim()
        .to_string();
    let sb_seed = fs.superblock().hash_seed;
    for n in ["File-001-MixedCase.Txt", "ABC", "mixed_Case-123"] {
        let ours = htree::hash(1, n.to_ascii_lowercase().as_bytes(), &sb_seed).unwrap();
        assert_eq!(ours, debugfs_hash(&image, 1, &seed, n, true), "{n}");
    }
    eprintln!("casefold: {checked} lookups by case variant found the entry");
}

/// Every feature mkfs.ext4 1.47 accepts (and the defaults it can turn off): ferry opens the
/// filesystem and sees what the kernel sees; an external journal device is refused by name.
#[test]
fn every_mkfs_feature_opens_and_matches_the_kernel() {
    if !common::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("dir/entry-{i:03}")), format!("{i}")).unwrap();
    }
    std::fs::write(src.join("data"), common::pseudo_random(5, 200_000)).unwrap();
    std::os::unix::fs::symlink("data", src.join("link")).unwrap();
    let mnt = tmp.path().join("mnt");
    let kernel_has = |f: &str| Path::new("/sys/fs/ext4/features").join(f).exists();
    let features = [
        "orphan_file",
        "quota",
        "project",
        "verity",
        "stable_inodes",
        "fast_commit",
        "large_dir",
        "ea_inode",
        "metadata_csum_seed",
        "mmp",
        "encrypt",
        "casefold",
        "inline_data",
        "uninit_bg,^metadata_csum",
        "^has_journal",
        "^dir_index",
        "^flex_bg",
        "^huge_file",
        "^dir_nlink",
        "^extra_isize",
        "^filetype",
        "^sparse_super,^resize_inode",
        "^ext_attr",
        "^large_file",
        "extent,^64bit",
        "sparse_super2",
        "meta_bg,^resize_inode",
        "bigalloc",
    ];
    let mut compared = 0;
    for f in features {
        let image = tmp.path().join("f.img");
        kernel::mkfs_ext4(&image, "64M", Some(&src), &["-O", f]);
        let fs =
            Ext4::open(ferry::block::open(&image).unwrap()).unwrap_or_else(|e| panic!("{f}: {e}"));
        let ours = kernel::snapshot(&fs);
        assert!(ours.len() >= 304, "{f}: {} paths", ours.len());
        if f == "casefold" && !kernel_has("casefold") {
            eprintln!("{f}: this kernel has no Unicode support; compared with e2fsck only");
            common::run_tool("e2fsck", &["-fn", image.to_str().unwrap()]);
            continue;
        }
        let Some(_m) = kernel::mount_or_skip(&image, &mnt, "ro,loop") else {
            return;
        };
        kernel::assert_same(&kernel::walk(&mnt), &ours, f);
        compared += 1;
    }
    eprintln!("{compared} feature sets agree with the kernel");
    let journal = tmp.path().join("journal.img");
    kernel::mkfs_ext4(&journal, "16M", None, &["-O", "journal_dev"]);
    match Ext4::open(ferry::block::open(&journal).unwrap()) {
        Err(e @ Error::Unsupported(_)) => assert!(e.to_string().contains("journal_dev"), "{e}"),
        Err(e) => panic!("journal_dev: {e}"),
        Ok(_) => panic!("journal_dev opened as a filesystem"),
    }
}

/// Everything a reader can ask of a damaged filesystem, errors ignored, with bounds on the
/// work so that a corrupt size or a loop cannot make the test itself run forever.
fn poke(fs: &Ext4) {
    let mut todo = vec![(fs.root_ino(), 0)];
    let mut visited = 0;
    let mut buf = vec![0u8; 64 << 10];
    while let Some((ino, depth)) = todo.pop() {
        visited += 1;
        if visited > 3000 {
            return;
        }
        if let Ok(names) = fs.listxattr(ino) {
            for n in names.iter().take(50) {
                let _ = fs.getxattr(ino, n);
            }
        }
        let _ = fs.getxattr(ino, b"system.posix_acl_default");
        let Ok(a) = fs.getattr(ino) else { continue };
        match a.kind {
            FileType::Directory if depth < 6 => {
                let mut entries = Vec::new();
                let _ = fs.readdir(ino, 0, &mut |e, _| {
                    entries.push(e);
                    entries.len() < 2000
                });
                for e in entries {
                    let _ = fs.lookup(ino, &e.name);
                    let _ = fs.lookup(ino, &e.name.to_ascii_uppercase());
                    let _ = fs.find_with_index(ino, &e.name);
                    if e.name != b"." && e.name != b".." {
                        todo.push((e.ino, depth + 1));
                    }
                }
                let _ = fs.lookup(ino, b"not-there");
            }
            FileType::RegularFile => {
                let _ = fs.read(ino, 0, &mut buf);
            }
            FileType::Symlink => {
                let _ = fs.readlink(ino);
            }
            _ => {}
        }
    }
}

/// Mutated images with xattr blocks, ACLs, EA inodes, htree indexes and checksums: no panic,
/// no hang.
#[test]
fn damaged_metadata_does_not_panic_or_hang() {
    if !common::have_tools(&["mkfs.ext4", "debugfs", "e2fsck", "setfattr", "setfacl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("hashed")).unwrap();
    std::fs::create_dir_all(src.join("acl_dir")).unwrap();
    for i in 0..150 {
        std::fs::write(src.join(format!("hashed/name-{i:03}-padding")), b"").unwrap();
    }
    let f = src.join("attrs").display().to_string();
    std::fs::write(&f, b"x").unwrap();
    common::sh(&format!(
        "setfattr -n user.a -v 1 '{f}' && setfattr -n user.big -v 0x{} '{f}' && \
         setfacl -m u:5:r '{f}' && setfacl -d -m u:6:rw '{}'",
        &hex(&common::pseudo_random(2, 600))[2..],
        src.join("acl_dir").display()
    ));
    for (name, features) in [
        ("csum", "ea_inode"),
        ("nocsum", "^metadata_csum,ea_inode"),
        ("inline", "^metadata_csum,inline_data"),
    ] {
        let image = tmp.path().join(format!("{name}.img"));
        kernel::mkfs_ext4(
            &image,
            "2M",
            Some(&src),
            &["-b", "1024", "-N", "256", "-O", features],
        );
        let img = image.to_str().unwrap();
        // Index the big directory (mke2fs -d writes it linearly).
        let _ = Command::new(common::tool("e2fsck").unwrap())
            .args(["-fyD", img])
            .output();
        let orig = std::fs::read(&image).unwrap();
        poke(&open_bytes(orig.clone()).unwrap());
        let mut hot = vec![(1024, 3072)];
        let block = |b: u64| ((b * 1024) as usize, (b as usize + 1) * 1024);
        for b in blocks_of(&image, "/hashed").into_iter().take(4) {
            hot.push(block(b));
        }
        let acl = st_field(&stat_of(&image, "/attrs"), "File ACL:");
        if acl != 0 {
            hot.push(block(acl));
        }
        let (iblk, _) = inode_location(&image, "/attrs");
        hot.push(block(iblk));
        for (i, m) in common::mutants(&orig, &hot, 1200, 0x3e7a).enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                if let Ok(fs) = open_bytes(m) {
                    poke(&fs);
                }
                let _ = tx.send(());
            });
            match rx.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(()) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{name} mutant {i}: hang (over 10 s)")
                }
                Err(_) => panic!("{name} mutant {i}: panicked"),
            }
        }
        eprintln!("{name}: 1200 mutants survived");
    }
}
