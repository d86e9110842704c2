//! XFS against real oracles: images made by mkfs.xfs 6.1 in its variants and filled through a
//! kernel loop mount, then read by ferry (the library's `Filesystem`, and `ferry mount`) and by
//! the kernel's read-only loop mount, compared path by path (every stat field, link targets,
//! contents), attribute by attribute (`getfattr -d -m - -e hex`) and by statvfs. v4 (which
//! this kernel does not mount) is built with the same prototype file as a v5 image and
//! compared with the kernel's view of that one. Damaged images must neither panic nor hang.

mod common;

use common::kernel::{self, FerryMount, KernelMount, Snapshot};
use ferry::block::mem::MemDevice;
use ferry::block::BlockDevice;
use ferry::fs::xfs::{log::LogState, Xfs};
use ferry::fs::{FileType, Filesystem, FsError};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Root, the loop driver and the XFS and attribute tools; says why not (or fails in CI).
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = common::have_tools(&[
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "xfs_io",
        "getfattr",
        "setfattr",
        "setfacl",
        "losetup",
    ]);
    if root && tools {
        return true;
    }
    let why = format!("root: {root}, xfsprogs/attr/acl tools: {tools}");
    assert!(
        !kernel::required(),
        "cannot run XFS tests ({why}) and FERRY_REQUIRE_FUSE=1"
    );
    eprintln!("SKIP: XFS tests need root, loop devices, xfsprogs, attr and acl ({why})");
    false
}

fn open(image: &Path) -> Xfs {
    Xfs::open(ferry::block::open(image).unwrap()).unwrap()
}

/// Fills the mounted filesystem at `root`: every file type, odd names, sparse, unwritten
/// and fragmented files (bmbt of depth 2), directories of every format (`big` entries in
/// the largest), attributes in every form and namespace, ACLs, times before 1970 and after
/// 2038 (which need bigtime).
fn populate(root: &Path, big: usize, bigtime: bool) {
    let far = if bigtime {
        "2200-01-02 03:04:05.987654321"
    } else {
        "2037-12-31 23:59:59.5"
    };
    let script = format!(
        r#"set -e
cd '{root}'
mkdir -p etc doc sp big blockdir leafdir attrs
cp -a /etc/. etc/ 2>/dev/null || true
cp -a /usr/share/doc/[a-d]* doc/ 2>/dev/null || true
head -c 3000000 /dev/urandom > sp/random
truncate -s 100M sp/sparse
printf hi | dd of=sp/sparse bs=1 seek=52428800 conv=notrunc status=none
xfs_io -f -c 'falloc 0 1m' -c 'pwrite -S 0x61 512k 4k' sp/unwritten >/dev/null
xfs_io -f -c 'falloc -k 0 64k' sp/keepsize >/dev/null
python3 -c "
f = open('sp/frag', 'wb')
for i in range(6000):
    f.seek(i * 8192)
    f.write(bytes([i % 251]) * 4096)
"
ln -s short sp/l1
ln -s "$(python3 -c "print('d/' * 300 + 'end')")" sp/llong
ln -s "$(python3 -c "print('x' * 1023)")" sp/lmax
ln sp/random sp/hard1
ln sp/random big/hard2
mknod sp/c c 4 5
mknod sp/b b 259 70000
mknod sp/c2 c 300 262143
mkfifo sp/fifo
python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('sp/sock')"
touch 'sp/sp ace' "sp/$(printf 'new\nline')" "sp/$(printf '\xff\xfe')"
python3 -c "open('sp/' + 'n' * 255, 'w').write('long')"
chown 70000:70001 sp/random
chmod 4755 sp/random
mkdir sp/sticky sp/sgid && chmod 1777 sp/sticky && chmod 2750 sp/sgid
for i in $(seq 1 25); do : > blockdir/file-$i; done
for i in $(seq 1 400); do : > leafdir/entry-with-a-longer-name-$i; done
for i in $(seq 1 {big}); do : > big/f$i; done
: > attrs/sf
setfattr -n user.small -v hello attrs/sf
setfattr -n trusted.t -v 1 attrs/sf
setfattr -n security.s -v secret attrs/sf
: > attrs/leaf
for i in $(seq 1 20); do setfattr -n user.a$i -v "$(printf %0100d $i)" attrs/leaf; done
: > attrs/node
for i in $(seq 1 300); do setfattr -n user.node-attribute-$i -v "$(printf %0150d $i)" attrs/node; done
: > attrs/remote
setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' a)" attrs/remote
python3 -c "import os; os.setxattr('attrs/remote', 'user.max', bytes(range(256)) * 256)"
: > attrs/acl
setfacl -m u:1234:rw,g:70000:r attrs/acl
setfacl -d -m g:70000:r,u::rwx attrs
setfattr -h -n trusted.link -v onlink sp/l1
touch -h -d '1960-01-01 00:00:00.123456789' sp/l1
touch -d '1901-12-14 00:00:00' sp/fifo
touch -d '{far}' sp/random attrs
"#,
        root = root.display()
    );
    common::run(Command::new("sh").arg("-c").arg(script));
}

/// A fresh image: mkfs.xfs with `args`, filled through a kernel mount, checked clean by
/// xfs_repair -n. False (with a message) when the kernel refuses to mount it read-write.
fn make_image(image: &Path, mnt: &Path, size: &str, args: &[&str], big: usize) -> bool {
    let _ = std::fs::remove_file(image);
    common::run(Command::new("truncate").args(["-s", size]).arg(image));
    common::run(
        Command::new(common::tool("mkfs.xfs").unwrap())
            .args(["-q", "-f"])
            .args(args)
            .arg(image),
    );
    let m = match KernelMount::new(image, mnt, "") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIP {args:?}: the kernel does not mount it: {e}");
            return false;
        }
    };
    let bigtime = !args.contains(&"bigtime=0");
    populate(mnt, big, bigtime);
    m.unmount().unwrap();
    repair_clean(image);
    true
}

fn repair_clean(image: &Path) {
    let out = Command::new(common::tool("xfs_repair").unwrap())
        .args(["-n", "-f"])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xfs_repair -n {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in v {
        s.push_str(&format!("{b:02x}"));
    }
    s
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
    all.retain(|_, m| !m.is_empty());
    all
}

/// ferry's view through listxattr/getxattr, walking `snap`'s paths (ASCII names only, as
/// getfattr escapes the others).
fn ferry_xattrs(fs: &dyn Filesystem, snap: &Snapshot) -> Xattrs {
    let mut all = Xattrs::new();
    for (path, e) in snap {
        if !path.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            continue;
        }
        let names = fs
            .listxattr(e.ino)
            .unwrap_or_else(|err| panic!("listxattr {path:?}: {err}"));
        let mut m = BTreeMap::new();
        for n in &names {
            let v = fs.getxattr(e.ino, n).unwrap_or_else(|err| {
                panic!(
                    "getxattr {:?} {}: {err}",
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(n)
                )
            });
            let prev = m.insert(String::from_utf8(n.clone()).unwrap(), hex(&v));
            assert!(prev.is_none(), "{path:?}: {n:?} listed twice");
        }
        assert!(matches!(
            fs.getxattr(e.ino, b"user.no-such-attribute"),
            Err(FsError::NoAttr)
        ));
        if !m.is_empty() {
            let p = if path.is_empty() {
                ".".to_string()
            } else {
                String::from_utf8(path.clone()).unwrap()
            };
            all.insert(p, m);
        }
    }
    all
}

fn statvfs(p: &Path) -> [u64; 7] {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and a zeroed out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    [
        s.f_bsize as u64,
        s.f_blocks as u64,
        s.f_bfree as u64,
        s.f_bavail as u64,
        s.f_files as u64,
        s.f_ffree as u64,
        s.f_namemax as u64,
    ]
}

fn ferry_statvfs(fs: &dyn Filesystem) -> [u64; 7] {
    let s = fs.statfs().unwrap();
    [
        u64::from(s.bsize),
        s.blocks,
        s.bfree,
        s.bavail,
        s.files,
        s.ffree,
        u64::from(s.namelen),
    ]
}

/// ferry's library view of `image` against the kernel's read-only mount: every path,
/// attributes, statvfs. Returns the kernel's walk.
fn compare_with_kernel(image: &Path, mnt: &Path, name: &str) -> Snapshot {
    let _same = common::Unchanged::new(&[image]);
    let fs = open(image);
    assert_eq!(
        fs.log(),
        &LogState::Clean,
        "{name}: log after a clean unmount"
    );
    assert_eq!(fs.info().kind, "xfs");
    let ours = kernel::snapshot(&fs);
    let k = KernelMount::new(image, mnt, "ro").unwrap_or_else(|e| panic!("{name}: {e}"));
    let theirs = kernel::walk(k.path());
    kernel::assert_same(&theirs, &ours, name);
    let kx = kernel_xattrs(k.path());
    assert!(kx.contains_key("attrs/node"), "{name}: no attributes seen");
    assert_eq!(kx, ferry_xattrs(&fs, &ours), "{name}: attributes differ");
    assert_eq!(statvfs(k.path()), ferry_statvfs(&fs), "{name}: statvfs");
    eprintln!(
        "{name}: {} paths, {} with attributes agree with the kernel",
        theirs.len(),
        kx.len()
    );
    theirs
}

#[test]
fn v5_variants_match_the_kernel() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let variants: &[(&str, &str, &[&str])] = &[
        ("default", "400M", &[]),
        ("1k-blocks", "400M", &["-b", "size=1024"]),
        ("dir64k", "400M", &["-n", "size=65536"]),
        (
            "rmapbt-nrext64",
            "400M",
            &["-m", "rmapbt=1", "-i", "nrext64=1"],
        ),
        (
            "sector4k-agcount12",
            "1G",
            &["-s", "size=4096", "-d", "agcount=12"],
        ),
        (
            "nobigtime-noreflink",
            "400M",
            &["-m", "bigtime=0,reflink=0,finobt=0", "-i", "sparse=0"],
        ),
    ];
    for (name, size, args) in variants {
        let image = tmp.path().join(format!("{name}.img"));
        if !make_image(&image, &mnt, size, args, 3000) {
            continue;
        }
        compare_with_kernel(&image, &mnt, name);
        std::fs::remove_file(&image).unwrap();
    }
}
