//! The ext2/3/4 writer against real oracles. Images are made by mkfs (this Debian's defaults,
//! and without metadata_csum, without 64bit, with 1 KiB blocks, ext3, ext2), copied, and the
//! same operations applied to one copy through ferry (`Ext4::open_rw`) and to the other
//! through the kernel (a read-write loop mount). Afterwards both pass `e2fsck -fn` and the
//! kernel, mounting both, sees the same tree: types, modes, owners, sizes, link counts, the
//! times set last, xattrs and contents. Every operation must also succeed or fail alike (the
//! same errno). The random workload prints its seed (FERRY_SEED=N replays one).

use crate::common;

use common::kernel::{self, KernelMount};
use ferry::block::{BlockDevice, Describe, Extent, ExtentKind, LayerInfo};
use ferry::fs::ext4::Ext4;
use ferry::fs::{Error, FileType, Filesystem, NewInode, RenameFlags, SetAttr, Timestamp};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// A raw image file opened read-write: the writable device the tests give ferry.
pub(crate) struct FileDev {
    f: File,
    len: u64,
}

impl FileDev {
    pub(crate) fn open(p: &Path) -> Arc<dyn BlockDevice> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        let len = f.metadata().unwrap().len();
        Arc::new(FileDev { f, len })
    }
}

impl BlockDevice for FileDev {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> ferry::block::Result<()> {
        ferry::block::check_range(off, buf.len() as u64, self.len)?;
        self.f
            .read_exact_at(buf, off)
            .map_err(|e| ferry::block::Error::Io {
                path: PathBuf::from("image"),
                what: "read",
                offset: off,
                source: e,
            })
    }
    fn write_at(&self, buf: &[u8], off: u64) -> ferry::block::Result<()> {
        ferry::block::check_range(off, buf.len() as u64, self.len)?;
        self.f
            .write_all_at(buf, off)
            .map_err(|e| ferry::block::Error::Io {
                path: PathBuf::from("image"),
                what: "write",
                offset: off,
                source: e,
            })
    }
    fn extents(&self, off: u64, len: u64) -> ferry::block::Result<Vec<Extent>> {
        Ok(vec![Extent::new(off, len, ExtentKind::Data)])
    }
}

impl Describe for FileDev {
    fn info(&self) -> ferry::block::Result<LayerInfo> {
        Ok(LayerInfo::default())
    }
}

/// The filesystem kinds every workload runs on: (name, mkfs arguments).
const KINDS: &[(&str, &[&str])] = &[
    ("ext4", &[]),
    ("ext4-nocsum", &["-O", "^metadata_csum"]),
    ("ext4-no64bit", &["-O", "^64bit"]),
    ("ext4-1k", &["-b", "1024"]),
    ("ext3", &["-t", "ext3"]),
    ("ext2", &["-t", "ext2"]),
];

pub(crate) fn e2fsck(image: &Path) -> Result<(), String> {
    let out = Command::new(common::tool("e2fsck").expect("e2fsck"))
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "e2fsck -fn {}: {}\n{}{}",
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub(crate) fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/loop-control").exists() {
        assert!(!kernel::required(), "needs root and loop devices");
        eprintln!("SKIP: needs root and loop devices");
        return false;
    }
    true
}

/// One operation of a workload, on paths relative to the root.
#[derive(Clone, Debug)]
enum Op {
    Mkdir(String, u32),
    Create(String, u32),
    Mknod(String, u32, u64),
    Symlink(String, String),
    Write(String, u64, usize, u64),
    Truncate(String, u64),
    Rename(String, String, RenameFlags),
    Link(String, String),
    Unlink(String),
    Rmdir(String),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimens(String, Timestamp, Timestamp),
    SetXattr(String, String, Vec<u8>),
    RemoveXattr(String, String),
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    common::pseudo_random(seed, len)
}

fn errno_of_io(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(r: i32) -> Result<(), i32> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    }
}

/// Gives a new inode exactly `mode`'s permission bits, as ferry's create does: the kernel
/// side applies the process umask, which the test does not change (it is shared by every test
/// of the binary).
fn exact_mode(path: &Path, mode: u32) -> Result<(), i32> {
    // SAFETY: a valid C string and a mode.
    check(unsafe { libc::chmod(cpath(path).as_ptr(), mode & 0o7777) })
}

/// Applies `op` through the kernel under `root`; Err(errno).
fn kernel_apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    let io = |r: std::io::Result<()>| r.map_err(|e| errno_of_io(&e));
    match op {
        Op::Mkdir(path, mode) => {
            // SAFETY: a valid C string and a mode.
            check(unsafe { libc::mkdir(cpath(&p(path)).as_ptr(), *mode) })?;
            exact_mode(&p(path), *mode)
        }
        Op::Create(path, mode) => {
            // SAFETY: as above.
            check(unsafe { libc::mknod(cpath(&p(path)).as_ptr(), libc::S_IFREG | *mode, 0) })?;
            exact_mode(&p(path), *mode)
        }
        Op::Mknod(path, mode, rdev) => {
            // SAFETY: as above.
            check(unsafe { libc::mknod(cpath(&p(path)).as_ptr(), *mode, *rdev) })?;
            exact_mode(&p(path), *mode)
        }
        Op::Symlink(path, target) => io(std::os::unix::fs::symlink(target, p(path))),
        Op::Write(path, off, len, seed) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .map_err(|e| errno_of_io(&e))?;
            io(f.write_all_at(&data(*seed, *len), *off))
        }
        Op::Truncate(path, size) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p(path))
                .map_err(|e| errno_of_io(&e))?;
            io(f.set_len(*size))
        }
        Op::Rename(a, b, flags) => {
            let mut fl = 0;
            if flags.noreplace {
                fl |= libc::RENAME_NOREPLACE;
            }
            if flags.exchange {
                fl |= libc::RENAME_EXCHANGE;
            }
            // SAFETY: valid C strings and flags.
            check(unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    cpath(&p(a)).as_ptr(),
                    libc::AT_FDCWD,
                    cpath(&p(b)).as_ptr(),
                    fl,
                )
            })
        }
        Op::Link(a, b) => io(std::fs::hard_link(p(a), p(b))),
        Op::Unlink(path) => io(std::fs::remove_file(p(path))),
        Op::Rmdir(path) => io(std::fs::remove_dir(p(path))),
        Op::Chmod(path, mode) => {
            // SAFETY: a valid C string.
            check(unsafe { libc::chmod(cpath(&p(path)).as_ptr(), *mode) })
        }
        Op::Chown(path, u, g) => io(std::os::unix::fs::lchown(p(path), Some(*u), Some(*g))),
        Op::Utimens(path, a, m) => {
            let ts = [
                libc::timespec {
                    tv_sec: a.secs,
                    tv_nsec: i64::from(a.nsecs),
                },
                libc::timespec {
                    tv_sec: m.secs,
                    tv_nsec: i64::from(m.nsecs),
                },
            ];
            // SAFETY: a valid C string and two timespecs.
            check(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    cpath(&p(path)).as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
        }
        Op::SetXattr(path, name, value) => {
            let n = CString::new(name.as_bytes()).unwrap();
            // SAFETY: valid C strings and a buffer with its length.
            check(unsafe {
                libc::lsetxattr(
                    cpath(&p(path)).as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            })
        }
        Op::RemoveXattr(path, name) => {
            let n = CString::new(name.as_bytes()).unwrap();
            // SAFETY: valid C strings.
            check(unsafe { libc::lremovexattr(cpath(&p(path)).as_ptr(), n.as_ptr()) })
        }
    }
}

/// (parent inode, last name) of `path` in ferry's tree.
fn resolve(fs: &Ext4, path: &str) -> Result<(u64, Vec<u8>), Error> {
    let mut dir = fs.root_ino();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        let a = fs.lookup(dir, part.as_bytes())?;
        if a.kind != FileType::Directory {
            return Err(Error::NotDir(a.ino));
        }
        dir = a.ino;
    }
    Ok((dir, parts[parts.len() - 1].as_bytes().to_vec()))
}

fn ino_of(fs: &Ext4, path: &str) -> Result<u64, Error> {
    if path.is_empty() {
        return Ok(fs.root_ino());
    }
    let (d, n) = resolve(fs, path)?;
    Ok(fs.lookup(d, &n)?.ino)
}

/// Applies `op` through ferry; Err(errno).
fn ferry_apply(fs: &Ext4, op: &Op) -> Result<(), i32> {
    let r: Result<(), Error> = (|| {
        let new = |mode: u32, rdev: u64| NewInode {
            mode,
            uid: 0,
            gid: 0,
            rdev,
        };
        match op {
            Op::Mkdir(path, mode) => {
                let (d, n) = resolve(fs, path)?;
                fs.create(d, &n, &new(0o040000 | mode, 0)).map(drop)
            }
            Op::Create(path, mode) => {
                let (d, n) = resolve(fs, path)?;
                fs.create(d, &n, &new(0o100000 | mode, 0)).map(drop)
            }
            Op::Mknod(path, mode, rdev) => {
                let (d, n) = resolve(fs, path)?;
                fs.create(d, &n, &new(*mode, *rdev)).map(drop)
            }
            Op::Symlink(path, target) => {
                let (d, n) = resolve(fs, path)?;
                fs.symlink(d, &n, target.as_bytes(), &new(0o120777, 0))
                    .map(drop)
            }
            Op::Write(path, off, len, seed) => {
                let ino = ino_of(fs, path)?;
                fs.write(ino, *off, &data(*seed, *len)).map(drop)
            }
            Op::Truncate(path, size) => {
                let ino = ino_of(fs, path)?;
                fs.setattr(
                    ino,
                    &SetAttr {
                        size: Some(*size),
                        ..Default::default()
                    },
                )
                .map(drop)
            }
            Op::Rename(a, b, flags) => {
                let (d1, n1) = resolve(fs, a)?;
                let (d2, n2) = resolve(fs, b)?;
                fs.rename_with(d1, &n1, d2, &n2, *flags)
            }
            Op::Link(a, b) => {
                let ino = ino_of(fs, a)?;
                let (d, n) = resolve(fs, b)?;
                fs.link(ino, d, &n).map(drop)
            }
            Op::Unlink(path) => {
                let (d, n) = resolve(fs, path)?;
                fs.unlink(d, &n)
            }
            Op::Rmdir(path) => {
                let (d, n) = resolve(fs, path)?;
                fs.rmdir(d, &n)
            }
            Op::Chmod(path, mode) => {
                let ino = ino_of(fs, path)?;
                fs.setattr(
                    ino,
                    &SetAttr {
                        mode: Some(*mode),
                        ..Default::default()
                    },
                )
                .map(drop)
            }
            Op::Chown(path, u, g) => {
                let ino = ino_of(fs, path)?;
                fs.setattr(
                    ino,
                    &SetAttr {
                        uid: Some(*u),
                        gid: Some(*g),
                        ..Default::default()
                    },
                )
                .map(drop)
            }
            Op::Utimens(path, a, m) => {
                let ino = ino_of(fs, path)?;
                fs.setattr(
                    ino,
                    &SetAttr {
                        atime: Some(*a),
                        mtime: Some(*m),
                        ..Default::default()
                    },
                )
                .map(drop)
            }
            Op::SetXattr(path, name, value) => {
                let ino = ino_of(fs, path)?;
                fs.setxattr(ino, name.as_bytes(), value)
            }
            Op::RemoveXattr(path, name) => {
                let ino = ino_of(fs, path)?;
                fs.removexattr(ino, name.as_bytes())
            }
        }
    })();
    r.map_err(|e| ferry::mount::errno(&e))
}

/// What the comparison looks at for one path: everything but inode numbers, st_blocks
/// (allocators differ) and ctime (set by the clock).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    entry: String,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0, "lgetxattr {}", p.display());
        v.truncate(m as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

fn seen(root: &Path, times: bool) -> BTreeMap<Vec<u8>, Seen> {
    let snap = kernel::walk(root);
    snap.into_iter()
        .map(|(k, e)| {
            let p = root.join(OsStr::from_bytes(&k));
            let t = if times {
                format!("{:?} {:?}", e.atime, e.mtime)
            } else {
                String::new()
            };
            // A directory's size is its block count: the kernel indexes and splits big
            // directories where ferry keeps them linear, so only files' sizes compare.
            let size = if e.kind == FileType::Directory {
                0
            } else {
                e.size
            };
            let entry = format!(
                "{:?} {:o} {}:{} size {} nlink {} rdev {} link {:?} sha {} {t}",
                e.kind,
                e.mode,
                e.uid,
                e.gid,
                size,
                e.nlink,
                e.rdev,
                String::from_utf8_lossy(&e.link),
                e.sha
            );
            (
                k,
                Seen {
                    entry,
                    xattrs: xattrs(&p),
                },
            )
        })
        .collect()
}

/// Makes two identical images of `kind`, runs `ops` through ferry on one and the kernel on
/// the other, then compares; `times`: every object got explicit times last.
fn differential(dir: &Path, kind: &str, args: &[&str], size: &str, ops: &[Op], times: bool) {
    let a = dir.join(format!("{kind}-ferry.img"));
    let b = dir.join(format!("{kind}-kernel.img"));
    kernel::mkfs_ext4(&a, size, None, args);
    std::fs::copy(&a, &b).unwrap();
    let mnt_b = dir.join(format!("{kind}-mnt-b"));
    let kb = KernelMount::new(&b, &mnt_b, "noatime").expect("mount the kernel's copy");
    let fs = Ext4::open_rw(FileDev::open(&a)).expect("open_rw");
    let start = Instant::now();
    for (n, op) in ops.iter().enumerate() {
        let rk = kernel_apply(&mnt_b, op);
        let rf = ferry_apply(&fs, op);
        assert_eq!(
            rf, rk,
            "{kind}: operation {n} {op:?}: ferry {rf:?}, kernel {rk:?} (errno)"
        );
    }
    let took = start.elapsed();
    fs.fsync().unwrap();
    drop(fs);
    kb.unmount().unwrap();
    eprintln!("{kind}: {} operations in {took:?}", ops.len());
    e2fsck(&b).unwrap();
    e2fsck(&a).unwrap_or_else(|e| panic!("{kind}: ferry's image: {e}"));
    let ma = KernelMount::new(&a, &dir.join(format!("{kind}-mnt-a")), "ro").unwrap();
    let mb = KernelMount::new(&b, &mnt_b, "ro").unwrap();
    let sa = seen(ma.path(), times);
    let sb = seen(mb.path(), times);
    let mut diffs = Vec::new();
    for (k, v) in &sb {
        match sa.get(k) {
            None => diffs.push(format!(
                "{}: missing in ferry's",
                String::from_utf8_lossy(k)
            )),
            Some(f) if f != v => diffs.push(format!(
                "{}:\n  ferry  {f:?}\n  kernel {v:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in sa.keys().filter(|k| !sb.contains_key(*k)) {
        diffs.push(format!("{}: only in ferry's", String::from_utf8_lossy(k)));
    }
    assert!(
        diffs.is_empty(),
        "{kind}: {} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn ts(secs: i64, nsecs: u32) -> Timestamp {
    Timestamp { secs, nsecs }
}

/// A fixed workload touching every operation and the interesting sizes.
fn fixed_ops() -> Vec<Op> {
    use Op::*;
    let s = |x: &str| x.to_string();
    let mut v = vec![
        Mkdir(s("d"), 0o755),
        Mkdir(s("d/e"), 0o700),
        Create(s("d/f"), 0o644),
        Write(s("d/f"), 0, 5000, 1),
        Write(s("d/f"), 100, 10, 2),
        Create(s("big"), 0o600),
        Write(s("big"), 0, 3 << 20, 3),
        Write(s("big"), (3 << 20) + 4096 * 7, 100_000, 4),
        Create(s("sparse"), 0o644),
        Write(s("sparse"), 5 << 30, 4096, 5),
        Write(s("sparse"), 1 << 20, 1, 6),
        Truncate(s("sparse"), 6 << 30),
        // The largest size (1 KiB blocks with extents: 2^32 - 1 blocks, s_maxbytes), and just
        // past it; removed again, as reading 4 TiB of holes takes too long.
        Create(s("edge"), 0o644),
        Truncate(s("edge"), 1 << 42),
        Truncate(s("edge"), (1 << 42) - 1024),
        Write(s("edge"), (1 << 42) - 1025, 1, 10),
        Write(s("edge"), (1 << 42) - 1, 1, 11),
        Unlink(s("edge")),
        Create(s("t"), 0o644),
        Write(s("t"), 0, 200_000, 7),
        Truncate(s("t"), 5000),
        Truncate(s("t"), 90_000),
        Write(s("t"), 100_000, 10, 8),
        Symlink(s("fast"), s("d/f")),
        Symlink(s("slow"), "x".repeat(300)),
        Mknod(s("fifo"), libc::S_IFIFO | 0o644, 0),
        Mknod(s("chr"), libc::S_IFCHR | 0o600, libc::makedev(4, 64)),
        Mknod(s("blk"), libc::S_IFBLK | 0o600, libc::makedev(259, 70000)),
        Mknod(s("sock"), libc::S_IFSOCK | 0o755, 0),
        Link(s("d/f"), s("d/e/hard")),
        Link(s("d"), s("dirlink")),
        Rename(s("d/f"), s("g"), RenameFlags::default()),
        Rename(s("d/e"), s("e2"), RenameFlags::default()),
        Mkdir(s("e2/sub"), 0o755),
        Rename(s("e2"), s("e2/sub/x"), RenameFlags::default()),
        Rmdir(s("d")),
        Unlink(s("d/e")),
        Create(s("victim"), 0o644),
        Write(s("victim"), 0, 10_000, 9),
        Rename(s("g"), s("victim"), RenameFlags::default()),
        Mkdir(s("full"), 0o755),
        Create(s("full/x"), 0o644),
        Rmdir(s("full")),
        // Onto its own parent: ENOTEMPTY before any type check (a file onto a directory).
        Rename(s("full/x"), s("full"), RenameFlags::default()),
        Mkdir(s("emptydir"), 0o755),
        Rename(s("e2/sub"), s("emptydir"), RenameFlags::default()),
        Create(s("a1"), 0o644),
        Mkdir(s("a2"), 0o755),
        Rename(
            s("a1"),
            s("a2"),
            RenameFlags {
                exchange: true,
                noreplace: false,
            },
        ),
        Rename(
            s("a2"),
            s("t"),
            RenameFlags {
                noreplace: true,
                exchange: false,
            },
        ),
        // chown(2) clears set-id bits (the VFS does it, for the kernel and for FUSE alike).
        Chown(s("t"), 1234, 70000),
        Chmod(s("t"), 0o4755),
        Chown(s("fast"), 5, 6),
        SetXattr(s("t"), s("user.small"), b"v".to_vec()),
        SetXattr(s("t"), s("user.big"), vec![7u8; 1500]),
        SetXattr(s("t"), s("user.small"), b"replaced".to_vec()),
        SetXattr(s("t"), s("trusted.t"), vec![1u8; 100]),
        RemoveXattr(s("t"), s("user.big")),
        RemoveXattr(s("t"), s("user.none")),
        SetXattr(s("emptydir"), s("user.d"), vec![2u8; 3000]),
        Mkdir(s("many"), 0o755),
    ];
    for i in 0..600 {
        v.push(Create(format!("many/file-with-a-long-name-{i:05}"), 0o644));
    }
    for i in (0..600).step_by(3) {
        v.push(Unlink(format!("many/file-with-a-long-name-{i:05}")));
    }
    for i in 0..200 {
        v.push(Mkdir(format!("many/dir-{i}"), 0o755));
    }
    v
}

/// Sets explicit times on every path of the kernel's tree, in both.
fn final_times(mnt: &Path) -> Vec<Op> {
    let snap = kernel::walk(mnt);
    snap.keys()
        .enumerate()
        .map(|(i, k)| {
            Op::Utimens(
                String::from_utf8(k.clone()).unwrap(),
                ts(1_000_000_000 + i as i64, i as u32 * 7),
                ts(4_107_542_400 + i as i64, 999_999_999 - i as u32),
            )
        })
        .collect()
}

#[test]
fn fixed_workload_matches_the_kernel() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (kind, args) in KINDS {
        let mut ops = fixed_ops();
        // Times last, on every path the workload leaves: known from a kernel dry run.
        let probe = tmp.path().join(format!("{kind}-probe.img"));
        kernel::mkfs_ext4(&probe, "128M", None, args);
        let mnt = tmp.path().join(format!("{kind}-probe"));
        {
            let m = KernelMount::new(&probe, &mnt, "noatime").unwrap();
            for op in &ops {
                let _ = kernel_apply(m.path(), op);
            }
            ops.extend(final_times(m.path()));
        }
        std::fs::remove_file(&probe).unwrap();
        differential(tmp.path(), kind, args, "128M", &ops, true);
    }
}

/// xorshift64*: the workload's only source of randomness, so a seed replays it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, v: &'a [String]) -> Option<&'a String> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.below(v.len() as u64) as usize])
        }
    }
}

/// What the workload believes exists, to aim most operations at real objects.
struct Model {
    dirs: Vec<String>,
    files: Vec<String>,
    others: Vec<String>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn under(p: &str, top: &str) -> bool {
    p == top || p.starts_with(&format!("{top}/"))
}

impl Model {
    fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| !d.is_empty())
            .cloned()
            .collect();
        v.extend(self.files.iter().cloned());
        v.extend(self.others.iter().cloned());
        v
    }

    fn forget(&mut self, p: &str) {
        self.files.retain(|x| x != p);
        self.others.retain(|x| x != p);
        self.dirs.retain(|x| !under(x, p) || p.is_empty());
    }

    fn is_dir(&self, p: &str) -> bool {
        self.dirs.iter().any(|d| d == p)
    }

    fn moved(&mut self, a: &str, b: &str, exchange: bool) {
        let map = |x: &String| -> String {
            if under(x, a) {
                format!("{b}{}", &x[a.len()..])
            } else if exchange && under(x, b) {
                format!("{a}{}", &x[b.len()..])
            } else {
                x.clone()
            }
        };
        if !exchange {
            // What was at b is replaced (a file, or an empty directory).
            self.files.retain(|x| x != b);
            self.others.retain(|x| x != b);
            self.dirs.retain(|x| x != b);
        }
        self.dirs = self.dirs.iter().map(map).collect();
        self.files = self.files.iter().map(map).collect();
        self.others = self.others.iter().map(map).collect();
    }

    fn update(&mut self, op: &Op) {
        match op {
            Op::Mkdir(p, _) => self.dirs.push(p.clone()),
            Op::Create(p, _) | Op::Link(_, p) => self.files.push(p.clone()),
            Op::Mknod(p, ..) | Op::Symlink(p, _) => self.others.push(p.clone()),
            Op::Unlink(p) | Op::Rmdir(p) => self.forget(p),
            Op::Rename(a, b, f) => self.moved(a, b, f.exchange),
            _ => {}
        }
    }
}

/// A random operation, mostly on objects that exist.
fn random_op(r: &mut Rng, m: &Model, seq: u64) -> Op {
    let names = |r: &mut Rng| format!("n{}", r.below(24));
    let dir = |r: &mut Rng| {
        // Half the creations go to the big (indexed) directory.
        if r.below(2) == 0 && m.is_dir("big") {
            "big".to_string()
        } else {
            r.pick(&m.dirs).cloned().unwrap_or_default()
        }
    };
    let new_path = |r: &mut Rng| {
        let d = dir(r);
        let n = if d == "big" {
            format!("entry-with-a-long-name-{:05}", r.below(4000))
        } else {
            names(r)
        };
        join(&d, &n)
    };
    let any = m.all();
    let file = |r: &mut Rng| r.pick(&m.files).cloned().unwrap_or_else(|| "none".into());
    let obj = |r: &mut Rng| r.pick(&any).cloned().unwrap_or_else(|| "none".into());
    let t = |r: &mut Rng| {
        ts(
            r.below(5_000_000_000) as i64 - 1_000_000_000,
            r.below(1_000_000_000) as u32,
        )
    };
    match r.below(100) {
        0..=17 => Op::Create(new_path(r), 0o600 + r.below(0o177) as u32),
        18..=23 => Op::Mkdir(new_path(r), 0o700 + r.below(0o77) as u32),
        24..=37 => {
            // Past 4 GiB now and then only: the comparison reads every file whole.
            let off = match r.below(3) {
                _ if seq == 7 => (4u64 << 30) + r.below(1 << 20),
                0 => r.below(64 << 10),
                1 => r.below(8 << 20),
                _ => r.below(16 << 20),
            };
            let len = match r.below(3) {
                0 => r.below(100) as usize + 1,
                1 => r.below(20_000) as usize + 1,
                _ => r.below(300_000) as usize + 1,
            };
            Op::Write(file(r), off, len, seq)
        }
        38..=44 => {
            let size = match r.below(3) {
                0 => 0,
                1 => r.below(100_000),
                _ => r.below(16 << 20),
            };
            Op::Truncate(file(r), size)
        }
        45..=52 => {
            let flags = match r.below(8) {
                0 => RenameFlags {
                    noreplace: true,
                    exchange: false,
                },
                1 => RenameFlags {
                    noreplace: false,
                    exchange: true,
                },
                _ => RenameFlags::default(),
            };
            let to = if r.below(2) == 0 { obj(r) } else { new_path(r) };
            Op::Rename(obj(r), to, flags)
        }
        53..=56 => Op::Link(file(r), new_path(r)),
        57..=64 => {
            let p = if r.below(2) == 0 { file(r) } else { obj(r) };
            Op::Unlink(p)
        }
        65..=68 => {
            let sub: Vec<String> = m.dirs.iter().filter(|d| !d.is_empty()).cloned().collect();
            Op::Rmdir(r.pick(&sub).cloned().unwrap_or_else(|| "none".into()))
        }
        69..=72 => {
            let len = [1usize, 20, 59, 60, 61, 200, 1000][r.below(7) as usize];
            Op::Symlink(new_path(r), "t".repeat(len))
        }
        73..=74 => {
            let (mode, rdev) = match r.below(4) {
                0 => (libc::S_IFIFO | 0o644, 0),
                1 => (
                    libc::S_IFCHR | 0o600,
                    libc::makedev(r.below(300) as u32, r.below(70000) as u32),
                ),
                2 => (libc::S_IFBLK | 0o600, libc::makedev(8, r.below(256) as u32)),
                _ => (libc::S_IFSOCK | 0o755, 0),
            };
            Op::Mknod(new_path(r), mode, rdev)
        }
        // chmod(2) follows symlinks (a dangling one is ENOENT): aim at files and directories.
        75..=78 => {
            let target = if r.below(2) == 0 {
                file(r)
            } else {
                r.pick(&m.dirs).cloned().unwrap_or_default()
            };
            Op::Chmod(target, r.below(0o1000) as u32)
        }
        79..=81 => Op::Chown(obj(r), r.below(100_000) as u32, r.below(100_000) as u32),
        82..=85 => Op::Utimens(obj(r), t(r), t(r)),
        86..=94 => {
            // user.* attributes exist on files and directories only.
            let target = if r.below(2) == 0 {
                file(r)
            } else {
                r.pick(&m.dirs).cloned().unwrap_or_default()
            };
            let len = match r.below(4) {
                0 => 0,
                1 => r.below(40) as usize,
                2 => r.below(400) as usize,
                _ => r.below(2500) as usize,
            };
            Op::SetXattr(target, format!("user.a{}", r.below(6)), data(seq, len))
        }
        _ => {
            let target = if r.below(2) == 0 {
                file(r)
            } else {
                r.pick(&m.dirs).cloned().unwrap_or_default()
            };
            Op::RemoveXattr(target, format!("user.a{}", r.below(6)))
        }
    }
}

fn seed() -> u64 {
    match std::env::var("FERRY_SEED") {
        Ok(s) => s.parse().expect("FERRY_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    }
}

/// Entries of the directory the kernel indexes before the workload starts.
const BIG_DIR: usize = 800;

/// The random workload: both copies start with a directory "big" the kernel indexed, so
/// insertions into an htree and the fallback to linear are exercised.
#[test]
fn random_workload_matches_the_kernel() {
    if !can_mount() {
        return;
    }
    let seed = seed();
    eprintln!("random workload seed {seed} (FERRY_SEED={seed} replays it)");
    let tmp = tempfile::tempdir().unwrap();
    for (k, (kind, args)) in KINDS.iter().enumerate() {
        let count = if k == 0 { 3000 } else { 500 };
        let mut r = Rng(seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let a = tmp.path().join(format!("{kind}-ferry.img"));
        let b = tmp.path().join(format!("{kind}-kernel.img"));
        kernel::mkfs_ext4(&a, "256M", None, args);
        {
            let m = KernelMount::new(&a, &tmp.path().join("prep"), "").unwrap();
            std::fs::create_dir(m.path().join("big")).unwrap();
            for i in 0..BIG_DIR {
                File::create(m.path().join(format!("big/entry-with-a-long-name-{i:05}"))).unwrap();
            }
        }
        std::fs::copy(&a, &b).unwrap();
        let mut model = Model {
            dirs: vec![String::new(), "big".into()],
            files: (0..BIG_DIR)
                .map(|i| format!("big/entry-with-a-long-name-{i:05}"))
                .collect(),
            others: vec![],
        };
        let mnt_b = tmp.path().join(format!("{kind}-mnt-b"));
        let kb = KernelMount::new(&b, &mnt_b, "noatime").unwrap();
        let fs = Ext4::open_rw(FileDev::open(&a)).expect("open_rw");
        let mut agree_err = 0;
        for n in 0..count {
            let op = random_op(&mut r, &model, n);
            if let Ok(w) = std::env::var("FERRY_WATCH") {
                if format!("{op:?}").contains(&w) {
                    eprintln!("op {n}: {op:?}");
                }
            }
            let rk = kernel_apply(&mnt_b, &op);
            let rf = ferry_apply(&fs, &op);
            assert_eq!(
                rf, rk,
                "seed {seed} {kind}: operation {n} {op:?}: ferry {rf:?}, kernel {rk:?} (errno)"
            );
            match rk {
                Ok(()) => model.update(&op),
                Err(_) => agree_err += 1,
            }
            if std::env::var("FERRY_CHECK_EACH").is_ok() {
                for d in &model.dirs {
                    let mut kn: Vec<Vec<u8>> = std::fs::read_dir(mnt_b.join(d))
                        .unwrap()
                        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                        .collect();
                    kn.sort();
                    let ino = ino_of(&fs, d).unwrap();
                    let mut fnames: Vec<Vec<u8>> = kernel::list(&fs, ino, 1000)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.name)
                        .filter(|n| n != b"." && n != b"..")
                        .collect();
                    fnames.sort();
                    assert_eq!(fnames.len(), kn.len(), "after op {n} {op:?}: dir {d:?}");
                    assert!(fnames == kn, "after op {n} {op:?}: dir {d:?} differs");
                }
                for p in model.all() {
                    let k = std::fs::symlink_metadata(mnt_b.join(&p))
                        .map(|m| m.mode())
                        .ok();
                    let f = ino_of(&fs, &p)
                        .and_then(|i| fs.getattr(i))
                        .map(|a| a.mode)
                        .ok();
                    assert_eq!(f, k, "after op {n} {op:?}: {p}");
                }
            }
        }
        // Explicit times on everything there is (the kernel's tree says what).
        let mut all = vec![String::new()];
        let mut todo = vec![String::new()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(mnt_b.join(&d)).unwrap() {
                let e = e.unwrap();
                let p = join(&d, &e.file_name().to_string_lossy());
                if e.file_type().unwrap().is_dir() {
                    todo.push(p.clone());
                }
                all.push(p);
            }
        }
        for (i, p) in all.iter().enumerate() {
            let op = Op::Utimens(p.clone(), ts(i as i64, 1), ts(2_000_000_000 + i as i64, 2));
            assert_eq!(kernel_apply(&mnt_b, &op), Ok(()), "{p}");
            assert_eq!(ferry_apply(&fs, &op), Ok(()), "{p}");
        }
        drop(fs);
        kb.unmount().unwrap();
        eprintln!("{kind}: {count} operations ({agree_err} failing alike)");
        e2fsck(&b).unwrap();
        e2fsck(&a).unwrap_or_else(|e| panic!("seed {seed} {kind}: ferry's image: {e}"));
        let ma = KernelMount::new(&a, &tmp.path().join(format!("{kind}-mnt-a")), "ro").unwrap();
        let mb = KernelMount::new(&b, &mnt_b, "ro").unwrap();
        let (sa, sb) = (seen(ma.path(), true), seen(mb.path(), true));
        let diffs: Vec<String> = sb
            .iter()
            .filter(|(k, v)| sa.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{}:\n  ferry  {:?}\n  kernel {v:?}",
                    String::from_utf8_lossy(k),
                    sa.get(k)
                )
            })
            .chain(
                sa.keys()
                    .filter(|k| !sb.contains_key(*k))
                    .map(|k| format!("{}: only in ferry's", String::from_utf8_lossy(k))),
            )
            .collect();
        assert!(
            diffs.is_empty(),
            "seed {seed} {kind}: {} differences:\n{}",
            diffs.len(),
            diffs
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        drop((ma, mb));
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
    }
}

/// A full filesystem answers NoSpace (blocks, then inodes) and stays consistent.
#[test]
fn enospc_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, args) in [KINDS[0], KINDS[4]] {
        let img = tmp.path().join(format!("{kind}-full.img"));
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-N", "64"]);
        kernel::mkfs_ext4(&img, "8M", None, &a);
        let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
        let root = fs.root_ino();
        let new = |mode| NewInode {
            mode,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        let f = fs.create(root, b"fill", &new(0o100644)).unwrap().ino;
        let chunk = vec![0xa5u8; 1 << 20];
        let mut off = 0u64;
        let err = loop {
            match fs.write(f, off, &chunk) {
                Ok(n) => off += n as u64,
                Err(e) => break e,
            }
            assert!(off < 64 << 20, "{kind}: wrote past the device");
        };
        assert!(matches!(err, Error::NoSpace), "{kind}: {err:?}");
        // Smaller writes fill what is left, then fail the same way.
        let err = loop {
            match fs.write(f, off, &chunk[..4096]) {
                Ok(n) => off += n as u64,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::NoSpace), "{kind}: {err:?}");
        // What is left cannot hold another block and the tree node it would need.
        assert!(fs.statfs().unwrap().bfree < 8, "{kind}");
        assert_eq!(fs.getattr(f).unwrap().size, off);
        // Inodes run out too (directories need a block: none left).
        let mut made = 0;
        let err = loop {
            match fs.create(root, format!("e{made}").as_bytes(), &new(0o100644)) {
                Ok(_) => made += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::NoSpace), "{kind}: {err:?}");
        assert!(matches!(
            fs.create(root, b"d", &new(0o040755)),
            Err(Error::NoSpace)
        ));
        // Freeing makes room again.
        fs.setattr(
            f,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(fs.statfs().unwrap().bfree > 1000);
        fs.unlink(root, b"e0").unwrap();
        fs.create(root, b"d", &new(0o040755)).unwrap();
        drop(fs);
        e2fsck(&img).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
}

/// Filesystems ferry must not write are refused at open, naming why; objects it cannot
/// change are read-only; damage found while writing turns the whole filesystem read-only.
#[test]
fn refuses_what_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("r.img");
    let refused = |args: &[&str], debugfs: Option<&str>, want: &str| {
        kernel::mkfs_ext4(&img, "32M", None, args);
        if let Some(cmd) = debugfs {
            common::run(Command::new("debugfs").args(["-w", "-R", cmd]).arg(&img));
        }
        let before = common::sha256_file(&img);
        match Ext4::open_rw(FileDev::open(&img)) {
            Ok(_) => panic!("{args:?} {debugfs:?}: opened for writing"),
            Err(e) => assert!(e.to_string().contains(want), "{args:?} {debugfs:?}: {e}"),
        }
        assert_eq!(common::sha256_file(&img), before, "refusal wrote");
        // Reading still works.
        Ext4::open(FileDev::open(&img)).unwrap();
    };
    refused(&["-O", "bigalloc", "-C", "16384"], None, "bigalloc");
    refused(&["-O", "quota"], None, "quota");
    refused(&["-O", "mmp"], None, "mmp");
    refused(&[], Some("ssv state 2"), "errors are recorded");
    refused(&[], Some("ssv error_count 3"), "errors are recorded");
    refused(&[], Some("ssv state 0"), "not cleanly unmounted");

    // A journal that needs recovery is replayed first, as a read-write mount does (here the
    // log is empty: only the flag is set), and the filesystem closes clean.
    kernel::mkfs_ext4(&img, "32M", None, &[]);
    common::run(
        Command::new("debugfs")
            .args(["-w", "-R", "feature needs_recovery"])
            .arg(&img),
    );
    let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
    fs.create(
        fs.root_ino(),
        b"after-recovery",
        &NewInode {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            rdev: 0,
        },
    )
    .unwrap();
    drop(fs);
    e2fsck(&img).unwrap();

    // Without a journal (ext2), the filesystem is marked not clean while it is open for
    // writing, as the kernel marks it, so that a writer that dies leaves it for e2fsck; and
    // clean again when closed.
    kernel::mkfs_ext4(&img, "32M", None, &["-t", "ext2"]);
    let state = || {
        let out = common::run(Command::new("dumpe2fs").arg("-h").arg(&img));
        out.lines()
            .find_map(|l| l.strip_prefix("Filesystem state:"))
            .map(|v| v.trim().to_string())
            .expect("dumpe2fs names the state")
    };
    assert_eq!(state(), "clean");
    let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
    assert_eq!(state(), "not clean");
    fs.create(
        fs.root_ino(),
        b"ext2-file",
        &NewInode {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            rdev: 0,
        },
    )
    .unwrap();
    assert_eq!(state(), "not clean");
    drop(fs);
    assert_eq!(state(), "clean");
    e2fsck(&img).unwrap();

    // Inline data: such a file or directory is read-only, the rest is writable.
    kernel::mkfs_ext4(&img, "32M", None, &["-O", "inline_data"]);
    common::run(
        Command::new("debugfs")
            .args(["-w", "-R", "mkdir inl"])
            .arg(&img),
    );
    let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
    let inl = fs.lookup(fs.root_ino(), b"inl").unwrap().ino;
    let new = NewInode {
        mode: 0o100644,
        uid: 0,
        gid: 0,
        rdev: 0,
    };
    assert!(matches!(fs.create(inl, b"x", &new), Err(Error::ReadOnly)));
    fs.create(fs.root_ino(), b"ok", &new).unwrap();
    drop(fs);
    e2fsck(&img).unwrap();

    // A block bitmap that claims a metadata block free: the allocation that finds it fails,
    // nothing of the operation is written, and the filesystem refuses further writes.
    kernel::mkfs_ext4(&img, "32M", None, &["-O", "^flex_bg", "-b", "4096"]);
    let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
    let bs = 4096u64;
    let mut bitmap_blk = [0u8; 4];
    // Group 0's descriptor is in block 1; bg_block_bitmap_lo is its first field.
    FileDev::open(&img).read_at(&mut bitmap_blk, bs).unwrap();
    let bitmap_blk = u64::from(u32::from_le_bytes(bitmap_blk));
    drop(fs);
    let dev = FileDev::open(&img);
    let mut map = vec![0u8; 4096];
    dev.read_at(&mut map, bitmap_blk * bs).unwrap();
    map.fill(0);
    dev.write_at(&map, bitmap_blk * bs).unwrap();
    let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
    let f = fs.create(fs.root_ino(), b"f", &new);
    let err = match f {
        Ok(a) => fs.write(a.ino, 0, b"data").unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Corrupt(_)), "{err:?}");
    assert!(matches!(
        fs.create(fs.root_ino(), b"g", &new),
        Err(Error::ReadOnly)
    ));
}

/// Operations over damaged images (mutants of a small populated filesystem): every one is
/// refused at open or answers, never panics; e2fsck is not asked (the input is damaged).
#[test]
fn damaged_images_do_not_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("d/f{i}")), data(i, (i as usize) * 997)).unwrap();
    }
    std::fs::write(src.join("big"), data(99, 300_000)).unwrap();
    std::os::unix::fs::symlink("x".repeat(100), src.join("slow")).unwrap();
    for (kind, args) in [KINDS[0], KINDS[4]] {
        let img = tmp.path().join(format!("{kind}.img"));
        let mut a = args.to_vec();
        a.extend(["-b", "1024", "-N", "128"]);
        kernel::mkfs_ext4(&img, "4M", Some(&src), &a);
        let orig = std::fs::read(&img).unwrap();
        // Superblock, descriptors, bitmaps and inode tables: the first 40 KiB.
        let hot = [(1024, 40 << 10)];
        let mut opened = 0;
        for (n, m) in common::mutants(&orig, &hot, 300, 7).enumerate() {
            let dev = Arc::new(ferry::block::mem::MemDeviceRw::new(m));
            let Ok(fs) = Ext4::open_rw(dev) else { continue };
            opened += 1;
            let mut r = Rng(n as u64 + 1);
            let root = fs.root_ino();
            let mut inos = vec![root];
            if let Ok(entries) = kernel::list(&fs, root, 100) {
                inos.extend(entries.iter().map(|e| e.ino));
            }
            let new = |mode| NewInode {
                mode,
                uid: 0,
                gid: 0,
                rdev: 0,
            };
            for _ in 0..30 {
                let ino = inos[r.below(inos.len() as u64) as usize];
                let name = format!("f{}", r.below(45));
                let name = name.as_bytes();
                let _ = match r.below(9) {
                    0 => fs
                        .create(ino, name, &new(0o100644))
                        .map(|a| inos.push(a.ino)),
                    1 => fs
                        .create(ino, name, &new(0o040755))
                        .map(|a| inos.push(a.ino)),
                    2 => fs
                        .write(ino, r.below(1 << 20), &data(3, r.below(50_000) as usize))
                        .map(drop),
                    3 => fs
                        .setattr(
                            ino,
                            &SetAttr {
                                size: Some(r.below(1 << 20)),
                                ..Default::default()
                            },
                        )
                        .map(drop),
                    4 => fs.unlink(ino, name),
                    5 => fs.rmdir(ino, name),
                    6 => fs.rename(ino, name, root, b"moved"),
                    7 => fs.setxattr(ino, b"user.x", &data(4, r.below(3000) as usize)),
                    _ => fs.link(ino, root, name).map(drop),
                };
            }
        }
        assert!(opened > 100, "{kind}: only {opened} mutants opened");
    }
}

/// A file unlinked while open lives on until its last close, as POSIX wants: its handle
/// still reads and writes it, its inode and blocks are not reused meanwhile, and the orphan
/// list holds it, so that a writer that stops before the close leaves a filesystem that the
/// kernel (or ferry, or e2fsck) cleans up.
#[test]
fn files_unlinked_while_open_are_orphans_until_closed() {
    for (name, args) in [
        ("ext4", &[][..]),
        ("ext2", &["-t", "ext2"][..]),
        ("nocsum", &["-O", "^metadata_csum"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("o.img");
        kernel::mkfs_ext4(&img, "32M", None, args);
        let new = NewInode {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        let fs = Ext4::open_rw(FileDev::open(&img)).unwrap();
        let free_before = fs.statfs().unwrap();
        let a = fs.create(fs.root_ino(), b"tmpfile", &new).unwrap();
        fs.opened(a.ino);
        let data = vec![0xa5u8; 300 << 10];
        fs.write(a.ino, 0, &data).unwrap();
        fs.unlink(fs.root_ino(), b"tmpfile").unwrap();
        assert!(matches!(
            fs.lookup(fs.root_ino(), b"tmpfile"),
            Err(Error::NotFound)
        ));
        // Still usable through the handle, and not handed out again.
        fs.write(a.ino, data.len() as u64, b"more").unwrap();
        let mut back = vec![0u8; data.len() + 4];
        assert_eq!(fs.read(a.ino, 0, &mut back).unwrap(), back.len(), "{name}");
        assert_eq!(&back[..data.len()], &data[..], "{name}");
        assert_eq!(fs.getattr(a.ino).unwrap().nlink, 0, "{name}");
        let b = fs.create(fs.root_ino(), b"other", &new).unwrap();
        assert_ne!(b.ino, a.ino, "{name}: an open orphan's inode was reused");
        fs.write(b.ino, 0, b"other file").unwrap();
        fs.fsync().unwrap();

        // A writer that stops here: each copy is cleaned up by whoever opens it next (ext2
        // has no journal: it is left marked for e2fsck, which ferry refuses to write).
        if name != "ext2" {
            crash_copies_clean_up(&img, a.ino, tmp.path(), name);
        }

        // The last close frees it.
        fs.released(a.ino).unwrap();
        fs.unlink(fs.root_ino(), b"other").unwrap();
        let free_after = fs.statfs().unwrap();
        assert_eq!(free_after.bfree, free_before.bfree, "{name}: blocks leaked");
        assert_eq!(free_after.ffree, free_before.ffree, "{name}: inodes leaked");
        drop(fs);
        e2fsck(&img).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dump = common::run(Command::new("dumpe2fs").arg("-h").arg(&img));
        assert!(!dump.contains("First orphan inode"), "{name}:\n{dump}");
    }
}

/// Copies of `img` taken while inode `orphan` is open and unlinked: ferry's next writer and
/// the kernel each clean the orphan up, and e2fsck then finds nothing.
fn crash_copies_clean_up(img: &Path, orphan: u64, tmp: &Path, name: &str) {
    let crashed = tmp.join("crashed.img");
    std::fs::copy(img, &crashed).unwrap();
    let by_ferry = tmp.join("by-ferry.img");
    std::fs::copy(img, &by_ferry).unwrap();
    let dump = common::run(Command::new("dumpe2fs").arg("-h").arg(&crashed));
    assert!(
        dump.lines()
            .any(|l| l.starts_with("First orphan inode:") && l.contains(&orphan.to_string())),
        "{name}: the orphan is not on the list:\n{dump}"
    );
    drop(Ext4::open_rw(FileDev::open(&by_ferry)).unwrap());
    e2fsck(&by_ferry).unwrap_or_else(|e| panic!("{name}, cleaned by ferry: {e}"));
    if can_mount() {
        let m = KernelMount::new(&crashed, &tmp.join("k"), "").unwrap();
        assert_eq!(
            std::fs::read(m.path().join("other")).unwrap(),
            b"other file",
            "{name}"
        );
        m.unmount().unwrap();
        e2fsck(&crashed).unwrap_or_else(|e| panic!("{name}, cleaned by the kernel: {e}"));
    }
}
