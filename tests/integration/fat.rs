//! FAT12/16/32 (src/fs/fat) against dosfstools and mtools: images made by mkfs.vfat and filled
//! by mcopy/mattrib (this machine's kernel has no vfat, so mtools stands in for the kernel loop
//! mount), then ferry's view compared with what mtools extracts and lists, path for path; the
//! metadata mtools cannot show is checked against the kernel's rules (fs/fat/inode.c), and
//! against the kernel itself where it can mount vfat. fsck.vfat -n must find the image clean
//! and its hash unchanged afterwards. Also: an EFI system partition at /boot/efi of a GPT
//! guest, damaged images, and `ferry filesystems`.

use crate::common::{self, kernel, Unchanged};
use common::guest::{debian_root, mkfs, put};
use ferry::block::mem::MemDevice;
use ferry::fs::fat::Fat;
use ferry::fs::{Error, FileType, Filesystem};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const TOOLS: &[&str] = &[
    "mkfs.vfat",
    "fsck.vfat",
    "mcopy",
    "mattrib",
    "mdir",
    "sfdisk",
];

/// The first of many: 2020-09-13 12:26:41 UTC, an odd second (FAT keeps even ones).
const T0: i64 = 1_600_000_001;

/// mtools reads and writes names in the locale's charset, and FAT times as local time.
fn mtools(tool: &str, args: &[&OsStr]) -> String {
    let t = common::tool(tool).unwrap_or_else(|| panic!("{tool} not installed"));
    common::run(
        Command::new(t)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(args),
    )
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// Sets a host file's mtime (and atime) to `secs`.
fn set_time(p: &Path, secs: i64) {
    let f = std::fs::File::options()
        .read(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

/// The tree every image gets: 8.3-only names (upper case, and lower case kept by the NT case
/// flags), long and Unicode names (mtools 4.0.32 writes characters outside the BMP as one
/// truncated UTF-16 unit, so surrogate pairs are left to the unit tests), empty files, a file of several MB,
/// a deep chain of directories, a directory of several clusters, and files to mark hidden,
/// system and read-only. Every file and directory gets its own odd-second mtime.
fn source_tree(dir: &Path, big: usize) -> PathBuf {
    let src = dir.join("src");
    put(&src, "/README.TXT", "read me\n");
    put(&src, "/lower.txt", "lower case 8.3\n");
    put(&src, "/NOEXT", "no extension\n");
    put(&src, "/MixedCase Long Name.text", "long\n");
    put(&src, "/Ünïcödé ∑ 日本語 file.txt", "unicode\n");
    put(&src, "/empty", "");
    put(&src, "/also.empty.dat", "");
    put(&src, "/big.bin", common::pseudo_random(7, big));
    put(&src, "/deep/a/b/c/d/e/f/g/h/leaf.txt", "deep\n");
    for i in 0..150 {
        put(
            &src,
            &format!("/many/entry number {i:03} with a long name.txt"),
            format!("{i}\n"),
        );
    }
    put(&src, "/attrs/hidden.txt", "h\n");
    put(&src, "/attrs/system.sys", "s\n");
    put(&src, "/attrs/readonly.txt", "r\n");
    put(&src, "/attrs/ALL.TXT", "a\n");
    std::fs::create_dir_all(src.join("attrs/ro dir/inner")).unwrap();
    put(&src, "/attrs/ro dir/inner/x", "x\n");
    // Children before parents, so a directory's own time is set after its entries change.
    let mut paths = Vec::new();
    let mut todo = vec![src.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        set_time(p, T0 + i as i64 * 86_400 * 17 + (i as i64 % 30) * 61);
    }
    src
}

struct Image {
    path: PathBuf,
    src: PathBuf,
    cluster: u64,
}

/// `mkfs.vfat -F BITS` on a new file of `size` bytes with `sectors_per_cluster`, filled from
/// the source tree with `mcopy -s -m` (mtimes kept) and attributes set with `mattrib`.
fn build(dir: &Path, bits: u32, size: u64, sectors_per_cluster: u32, big: usize) -> Image {
    let src = source_tree(dir, big);
    let path = dir.join(format!("fat{bits}.img"));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    common::run_tool(
        "mkfs.vfat",
        &[
            "-F",
            &bits.to_string(),
            "-s",
            &sectors_per_cluster.to_string(),
            "-n",
            &format!("FAT{bits} VOL"),
            "-i",
            "a1b2c3d4",
            path.to_str().unwrap(),
        ],
    );
    let mut args = vec![os("-s"), os("-m"), os("-i"), path.as_os_str()];
    let entries: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    args.extend(entries.iter().map(|p| p.as_os_str()));
    args.push(os("::/"));
    mtools("mcopy", &args);
    for (flags, p) in [
        ("+h", "::/attrs/hidden.txt"),
        ("+s", "::/attrs/system.sys"),
        ("+r", "::/attrs/readonly.txt"),
        ("+r", "::/README.TXT"),
        ("+r", "::/attrs/ro dir"),
        ("+h", "::/attrs/ro dir"),
    ] {
        mtools("mattrib", &[os("-i"), path.as_os_str(), os(flags), os(p)]);
    }
    mtools(
        "mattrib",
        &[
            os("-i"),
            path.as_os_str(),
            os("+r"),
            os("+h"),
            os("+s"),
            os("::/attrs/ALL.TXT"),
        ],
    );
    Image {
        path,
        src,
        cluster: u64::from(sectors_per_cluster) * 512,
    }
}

fn fsck_clean(img: &Path) {
    let out = Command::new(common::tool("fsck.vfat").unwrap())
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck.vfat -n {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open(img: &Path) -> Fat {
    let dev = ferry::block::open(img).unwrap();
    Fat::open(dev).unwrap_or_else(|e| panic!("{}: {e}", img.display()))
}

/// What mtools extracts (`mcopy -s -m` back to the host): path → (kind, size, sha256 of the
/// data, mtime). Its own decoding of names, chains and times.
fn mtools_view(img: &Path, out: &Path) -> BTreeMap<Vec<u8>, (FileType, u64, String, i64)> {
    std::fs::create_dir_all(out).unwrap();
    mtools(
        "mcopy",
        &[
            os("-s"),
            os("-m"),
            os("-n"),
            os("-i"),
            img.as_os_str(),
            os("::/"),
            out.as_os_str(),
        ],
    );
    kernel::walk(out)
        .into_iter()
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, e)| (p, (e.kind, e.size, e.sha, e.mtime.0)))
        .collect()
}

/// `mattrib -/` of the whole image: path → attribute letters (A, S, H, R).
fn mtools_attributes(img: &Path) -> BTreeMap<Vec<u8>, String> {
    let out = mtools("mattrib", &[os("-/"), os("-i"), img.as_os_str(), os("::/")]);
    out.lines()
        .filter_map(|l| {
            let (flags, path) = l.split_once("::/")?;
            Some((path.as_bytes().to_vec(), flags.split_whitespace().collect()))
        })
        .collect()
}

/// The 8.3 alias mtools lists beside each long name of the root (`mdir`).
fn mtools_aliases(img: &Path) -> Vec<(String, String)> {
    let out = mtools("mdir", &[os("-i"), img.as_os_str(), os("::/")]);
    out.lines()
        // Entry lines only: "NAME     EXT      SIZE YYYY-MM-DD  HH:MM  long name".
        .filter(|l| l.get(27..28) == Some("-") && l.get(30..31) == Some("-"))
        .filter_map(|l| {
            let base = l.get(..8)?.trim_end();
            let ext = l.get(9..12)?.trim_end();
            let long = l.get(42..)?.trim();
            if long.is_empty() || base.is_empty() {
                return None;
            }
            let alias = if ext.is_empty() {
                base.to_string()
            } else {
                format!("{base}.{ext}")
            };
            Some((alias, long.to_string()))
        })
        .collect()
}

/// Whether the kernel can mount vfat here (this machine's cannot: then mtools is the oracle).
fn kernel_has_vfat() -> bool {
    let has = |s: &str| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("vfat"))
    };
    if std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| has(&s)) {
        return true;
    }
    let _ = Command::new("modprobe").arg("vfat").output();
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| has(&s))
}

/// Every check of one image against mtools, the kernel's rules, fsck.vfat and (where it can)
/// the kernel itself; the FUSE mount against the library view.
fn check_image(bits: u32, size: u64, spc: u32, big: usize) {
    if !common::have_tools(TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = build(tmp.path(), bits, size, spc, big);
    fsck_clean(&img.path);
    let _same = Unchanged::new(&[&img.path]);
    let fs = open(&img.path);
    let info = fs.info();
    assert_eq!(info.kind, "vfat");
    assert_eq!(fs.fat_type(), format!("FAT{bits}"));
    assert_eq!(info.label, format!("FAT{bits} VOL").as_bytes());
    assert_eq!(&info.uuid[..4], &0xa1b2c3d4u32.to_le_bytes());
    let blk = common::blkid(&img.path);
    assert_eq!(blk.get("UUID").map(String::as_str), Some("A1B2-C3D4"));
    assert_eq!(blk.get("VERSION"), Some(&format!("FAT{bits}")));

    // The walk checks lookup against readdir, "." and "..", resumed readdir and odd reads.
    let ours = kernel::snapshot(&fs);
    let theirs = mtools_view(&img.path, &tmp.path().join("out"));
    let our_paths: Vec<&Vec<u8>> = ours.keys().filter(|p| !p.is_empty()).collect();
    let their_paths: Vec<&Vec<u8>> = theirs.keys().collect();
    assert_eq!(
        our_paths, their_paths,
        "FAT{bits}: the names differ from mtools'"
    );
    let attrs = mtools_attributes(&img.path);
    for (p, (kind, size, sha, mtime)) in &theirs {
        let name = String::from_utf8_lossy(p);
        let o = &ours[p];
        assert_eq!(o.kind, *kind, "{name}");
        assert_eq!(o.mtime, (*mtime, 0), "{name}: mtime");
        let a = attrs
            .get(p)
            .unwrap_or_else(|| panic!("{name}: no attributes"));
        // The kernel's fat_make_mode with uid 0, umask 022: 0755, read-only files 0555,
        // read-only directories keep their write bits; hidden and system change nothing.
        let perm = match kind {
            FileType::RegularFile if a.contains('R') => 0o555,
            _ => 0o755,
        };
        assert_eq!(o.mode & 0o7777, perm, "{name}: mode for attributes {a:?}");
        assert_eq!((o.uid, o.gid), (0, 0), "{name}");
        if *kind == FileType::RegularFile {
            assert_eq!((o.size, &o.sha), (*size, sha), "{name}: data");
            assert_eq!(o.nlink, 1, "{name}");
        } else {
            // fat_subdirs: its subdirectories, "." and "..".
            let subdirs = theirs
                .iter()
                .filter(|(q, v)| {
                    v.0 == FileType::Directory
                        && q.len() > p.len() + 1
                        && q.starts_with(p)
                        && q[p.len()] == b'/'
                        && !q[p.len() + 1..].contains(&b'/')
                })
                .count() as u64;
            assert_eq!(o.nlink, 2 + subdirs, "{name}: nlink");
            assert_eq!(o.size % img.cluster, 0, "{name}: whole clusters");
            assert!(o.size > 0, "{name}");
        }
        assert_eq!(
            o.blocks,
            o.size.div_ceil(img.cluster) * img.cluster / 512,
            "{name}: blocks"
        );
        // mcopy writes the creation time as the mtime and the access date as its day.
        assert_eq!(
            o.atime,
            ((*mtime).div_euclid(86400) * 86400, 0),
            "{name}: atime"
        );
        assert_eq!(o.ctime, o.mtime, "{name}: ctime");
    }
    // The source's mtimes, rounded down to FAT's 2 seconds.
    let src = kernel::walk(&img.src);
    for (p, e) in &src {
        if !p.is_empty() {
            assert_eq!(
                ours[p].mtime.0,
                e.mtime.0 & !1,
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }
    let root = &ours[&b""[..]];
    assert_eq!((root.mode, root.mtime), (0o40755, (0, 0)));
    let top_dirs = theirs
        .iter()
        .filter(|(p, v)| v.0 == FileType::Directory && !p.contains(&b'/'))
        .count() as u64;
    assert_eq!(root.nlink, 2 + top_dirs, "root: 2 + its subdirectories");
    let a = fs.getattr(fs.root_ino()).unwrap();
    assert_eq!(a.blksize as u64, img.cluster);
    for p in our_paths {
        let f = fs.lookup_path(p);
        assert_eq!(f.crtime, Some(f.mtime), "{}", String::from_utf8_lossy(p));
    }

    // Lookups as vfat does them: ASCII case ignored, trailing dots dropped, the 8.3 alias
    // found too; other case differences are different names.
    let r = fs.root_ino();
    let ino = |n: &str| fs.lookup(r, n.as_bytes()).map(|a| a.ino);
    assert_eq!(ino("readme.txt").unwrap(), ino("README.TXT").unwrap());
    assert_eq!(ino("LOWER.TXT.").unwrap(), ino("lower.txt").unwrap());
    assert!(matches!(
        ino("ÜNÏCÖDÉ ∑ 日本語 FILE.TXT"),
        Err(Error::NotFound)
    ));
    let aliases = mtools_aliases(&img.path);
    assert!(aliases.len() >= 2, "{aliases:?}");
    for (alias, long) in &aliases {
        let (a, l) = (ino(alias), ino(long));
        assert!(
            a.is_ok() && a.as_ref().ok() == l.as_ref().ok(),
            "{alias} ({a:?}) is {long} ({l:?})"
        );
    }
    assert!(matches!(
        fs.readlink(ino("empty").unwrap()),
        Err(Error::NotSymlink(_))
    ));
    assert_eq!(fs.listxattr(r).unwrap(), Vec::<Vec<u8>>::new());

    // statfs as fat_statfs: clusters, free ones as fsck counts them.
    let st = fs.statfs().unwrap();
    assert_eq!(u64::from(st.bsize), img.cluster);
    assert_eq!((st.files, st.ffree, st.namelen), (0, 0, 1530));
    let fsck = Command::new(common::tool("fsck.vfat").unwrap())
        .args(["-n", "-v"])
        .arg(&img.path)
        .output()
        .unwrap();
    let fsck = String::from_utf8_lossy(&fsck.stdout).into_owned();
    // "…: 25 files, 1234/5678 clusters"
    let counts = fsck
        .lines()
        .find_map(|l| l.rsplit_once(" files, ")?.1.strip_suffix(" clusters"))
        .and_then(|c| c.split_once('/'))
        .map(|(u, t)| (u.parse::<u64>().unwrap(), t.parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("fsck.vfat -v: {fsck}"));
    assert_eq!(
        (st.blocks, st.blocks - st.bfree),
        (counts.1, counts.0),
        "{fsck}"
    );
    let unused: u64 = fs.unused().unwrap().iter().map(|r| r.end - r.start).sum();
    assert_eq!(
        unused,
        st.bfree * img.cluster,
        "unused() is the free clusters"
    );

    if kernel_has_vfat() {
        let kmnt = tmp.path().join("kernel");
        let k = kernel::mount_or_skip(&img.path, &kmnt, "ro,uid=0,gid=0,umask=022")
            .expect("vfat mount");
        let mut theirs = kernel::walk(k.path());
        let mut ours = ours.clone();
        // The kernel numbers vfat inodes at random (iunique); ours are entry positions.
        for e in theirs.values_mut().chain(ours.values_mut()) {
            e.ino = 0;
        }
        kernel::assert_same(&theirs, &ours, &format!("FAT{bits} against the kernel"));
    } else {
        eprintln!(
            "NOTE: the kernel here has no vfat; mtools and the kernel's rules are the oracle"
        );
    }

    // ferry mount of the volume alone: the same view through FUSE.
    if fuse_ok() {
        let mnt = tmp.path().join("ferry");
        let m = kernel::FerryMount::new(&[img.path.as_os_str(), os("-m"), os("/dev/sda")], &mnt)
            .unwrap_or_else(|e| panic!("ferry mount: {e}"));
        let through_fuse = kernel::walk(&mnt);
        let mut ours = ours.clone();
        let mut through_fuse = through_fuse;
        for e in through_fuse.values_mut().chain(ours.values_mut()) {
            e.ino &= (1 << 56) - 1;
        }
        through_fuse.get_mut(&b""[..]).unwrap().ino = fs.root_ino();
        kernel::assert_same(
            &ours,
            &through_fuse,
            &format!("FAT{bits} through ferry mount"),
        );
        drop(m);
    }
    drop(fs);
    fsck_clean(&img.path);
}

fn fuse_ok() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists();
    if !ok {
        assert!(!kernel::required(), "no FUSE and FERRY_REQUIRE_FUSE=1");
        eprintln!("SKIP: ferry mount of FAT needs root and /dev/fuse");
    }
    ok
}

/// Path lookups from the root through the library, for the tests.
trait LookupPath {
    fn lookup_path(&self, p: &[u8]) -> ferry::fs::Attr;
}

impl LookupPath for Fat {
    fn lookup_path(&self, p: &[u8]) -> ferry::fs::Attr {
        let mut a = self.getattr(self.root_ino()).unwrap();
        for c in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            a = self.lookup(a.ino, c).unwrap();
        }
        a
    }
}

#[test]
fn fat12_matches_mtools_and_the_kernels_rules() {
    check_image(12, 16 << 20, 16, 5 << 20);
}

#[test]
fn fat16_matches_mtools_and_the_kernels_rules() {
    check_image(16, 64 << 20, 4, 6 << 20);
}

#[test]
fn fat32_matches_mtools_and_the_kernels_rules() {
    check_image(32, 96 << 20, 1, 7 << 20);
}

/// A UEFI guest: GPT with the EFI system partition (FAT32) mounted at /boot/efi by its
/// fstab (by UUID, with RHEL's options) and an ext4 root. The ESP's files are in the guest's
/// tree for `ferry ls`/`cat`, `ferry mount` and inspection; `ferry filesystems` lists it as
/// blkid does.
#[test]
fn fat_esp_at_boot_efi_of_a_gpt_guest() {
    if !common::have_tools(&["mkfs.vfat", "mcopy", "sfdisk", "mkfs.ext4", "blkid"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let grub = "set timeout=5\nsearch --no-floppy --fs-uuid --set=dev 8b00-0001\n\
                set prefix=($dev)/grub2\nexport $prefix\nconfigfile $prefix/grub.cfg\n";
    // The ESP: 64 MiB FAT32 (as Anaconda makes it, 600 MiB, but smaller).
    let esp_src = dir.join("esp");
    put(&esp_src, "/EFI/redhat/grub.cfg", grub);
    put(
        &esp_src,
        "/EFI/redhat/shimx64.efi",
        common::pseudo_random(3, 900_000),
    );
    put(
        &esp_src,
        "/EFI/redhat/grubx64.efi",
        common::pseudo_random(4, 2_000_000),
    );
    put(
        &esp_src,
        "/EFI/BOOT/BOOTX64.EFI",
        common::pseudo_random(3, 900_000),
    );
    put(&esp_src, "/EFI/BOOT/fbx64.efi", "fallback\n");
    let esp_len: u64 = 64 << 20;
    let esp = dir.join("esp.img");
    std::fs::File::create(&esp)
        .unwrap()
        .set_len(esp_len)
        .unwrap();
    common::run_tool(
        "mkfs.vfat",
        &[
            "-F",
            "32",
            "-n",
            "EFI SYSTEM",
            "-i",
            "5eed1234",
            esp.to_str().unwrap(),
        ],
    );
    mtools(
        "mcopy",
        &[
            os("-s"),
            os("-m"),
            os("-i"),
            esp.as_os_str(),
            esp_src.join("EFI").as_os_str(),
            os("::/"),
        ],
    );
    let blk = common::blkid(&esp);
    assert_eq!(blk["UUID"], "5EED-1234");
    let fstab = "UUID=a0000000-0000-4000-8000-00000000e5e5 /    ext4 defaults 1 1\n\
                 UUID=5EED-1234 /boot/efi vfat umask=0077,shortname=winnt 0 2\n";
    let root_src = dir.join("root");
    debian_root(&root_src, fstab);
    std::fs::create_dir_all(root_src.join("boot/efi")).unwrap();
    let root_len: u64 = 96 << 20;
    let root = dir.join("root.img");
    mkfs(
        &root,
        "ext4",
        root_len,
        "a0000000-0000-4000-8000-00000000e5e5",
        None,
        Some(&root_src),
        &[],
    );
    let disk = dir.join("uefi.img");
    common::sfdisk_image(
        &disk,
        (1 << 20) + esp_len + root_len + (1 << 20),
        &format!(
            "label: gpt\nstart=2048, size={}, type=U, name=\"EFI System Partition\"\n\
             start={}, size={}, type=L, name=root\n",
            esp_len / 512,
            2048 + esp_len / 512,
            root_len / 512
        ),
    );
    common::write_into(&disk, 1 << 20, &esp);
    common::write_into(&disk, (1 << 20) + esp_len, &root);
    let _same = Unchanged::new(&[&disk]);
    let d = disk.to_str().unwrap();

    let fss = common::ferry_ok(&["filesystems", d]);
    let line = fss
        .lines()
        .find(|l| l.starts_with("/dev/sda1 "))
        .unwrap_or_else(|| panic!("{fss}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..2], &["/dev/sda1", "filesystem"], "{fss}");
    assert!(
        line.contains(" vfat ") && line.contains("5EED-1234"),
        "{fss}"
    );
    assert!(line.contains("EFI SYSTEM"), "{fss}");

    assert_eq!(
        common::ferry_ok(&["cat", d, "/boot/efi/EFI/redhat/grub.cfg"]),
        grub
    );
    // vfat looks names up without regard to ASCII case.
    assert_eq!(
        common::ferry_ok(&["cat", d, "/boot/efi/efi/REDHAT/Grub.Cfg"]),
        grub
    );
    let long = common::ferry_ok(&["ls", "-l", d, "/boot/efi/EFI/redhat"]);
    assert!(
        long.lines()
            .any(|l| l.starts_with("-rwx------ 1 0 0 ") && l.ends_with(" grub.cfg")),
        "{long}"
    );
    let ls = common::ferry_ok(&["ls", "-R", d, "/boot/efi"]);
    for p in [
        "/boot/efi/EFI/redhat/shimx64.efi",
        "/boot/efi/EFI/BOOT/BOOTX64.EFI",
        "/boot/efi/EFI/BOOT/fbx64.efi",
    ] {
        assert!(ls.lines().any(|l| l == p), "{p} missing from:\n{ls}");
    }

    let insp = common::ferry_json(&["inspect", "--json", d]);
    let text = insp.to_string();
    assert!(
        text.contains("/boot/efi/EFI/redhat/grub.cfg"),
        "inspection does not find the ESP's grub.cfg: {insp:#}"
    );
    let mps = &insp["roots"][0]["mountpoints"];
    assert!(
        mps.as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountpoint"] == "/boot/efi" && m["device"] == "/dev/sda1"),
        "{mps}"
    );

    if fuse_ok() {
        let mnt = dir.join("mnt");
        let m = kernel::FerryMount::new(&[disk.as_os_str()], &mnt)
            .unwrap_or_else(|e| panic!("ferry mount: {e}"));
        let tree = kernel::walk(&mnt.join("boot/efi"));
        let src = kernel::walk(&esp_src);
        let names = |s: &kernel::Snapshot| -> Vec<(Vec<u8>, FileType, String)> {
            s.iter()
                .filter(|(p, _)| !p.is_empty())
                .map(|(p, e)| (p.clone(), e.kind, e.sha.clone()))
                .collect()
        };
        assert_eq!(names(&tree), names(&src), "the ESP at /boot/efi");
        // fstab's umask=0077, as the kernel applies it: no access but the owner's.
        let cfg = std::fs::metadata(mnt.join("boot/efi/EFI/redhat/grub.cfg")).unwrap();
        assert_eq!((cfg.uid(), cfg.mode()), (0, 0o100700));
        let esp_root = std::fs::metadata(mnt.join("boot/efi")).unwrap();
        assert_eq!(esp_root.mode(), 0o40700);
        drop(m);
    }
}

/// Damaged volumes: named errors for a bad boot sector, a looping directory chain, a chain
/// into free space or past the data area, and a truncated image; a bounded walk of hundreds
/// of mutants never panics or hangs.
#[test]
fn fat_damaged_volumes() {
    if !common::have_tools(TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = build(tmp.path(), 16, 32 << 20, 4, 300_000);
    let orig = std::fs::read(&img.path).unwrap();
    let fs = open(&img.path);
    let r = fs.root_ino();
    let many = fs.lookup(r, b"many").unwrap().ino;
    let big = fs.lookup(r, b"big.bin").unwrap().ino;
    drop(fs);
    // Geometry of the image (FAT16, 512-byte sectors).
    let le16 = |at: usize| u16::from_le_bytes([orig[at], orig[at + 1]]) as u64;
    let (reserved, fats, fat_len, root_entries) = (le16(14), orig[16] as u64, le16(22), le16(17));
    let fat = (reserved * 512) as usize;
    let data = ((reserved + fats * fat_len) * 512 + root_entries * 32) as usize;
    // The 8.3 entries of many/ and big.bin: ino × 32 is their position; cluster at +26.
    let first = |ino: u64| le16(ino as usize * 32 + 26);
    let (many_c, big_c) = (first(many), first(big));

    let open_mem = |data: Vec<u8>| Fat::open(Arc::new(MemDevice(data)));
    // A garbled boot sector: the field and its offset.
    let mut b = orig.clone();
    b[21] = 0x42;
    let e = open_mem(b).err().expect("bad media byte").to_string();
    assert!(
        e.contains("media descriptor") && e.contains("offset 0x15"),
        "{e}"
    );
    let mut b = orig.clone();
    b[13] = 0;
    let e = open_mem(b)
        .err()
        .expect("no sectors per cluster")
        .to_string();
    assert!(
        e.contains("sectors per cluster") && e.contains("offset 0xd"),
        "{e}"
    );
    assert!(matches!(
        ferry::fs::open(Arc::new(MemDevice(vec![0u8; 4096]))),
        Err(Error::Unsupported(_))
    ));

    // many/'s chain loops back to its first cluster: a bounded read, an error naming the FAT.
    let mut b = orig.clone();
    let mut c = many_c;
    loop {
        let next = u16::from_le_bytes([b[fat + 2 * c as usize], b[fat + 2 * c as usize + 1]]);
        if next >= 0xFFF8 {
            break;
        }
        c = u64::from(next);
    }
    b[fat + 2 * c as usize..fat + 2 * c as usize + 2]
        .copy_from_slice(&(many_c as u16).to_le_bytes());
    let fs = open_mem(b).unwrap();
    let e = kernel::list(&fs, many, 1000).unwrap_err().to_string();
    assert!(
        e.contains("fat cluster chain") && e.contains("a loop"),
        "{e}"
    );
    assert!(
        e.contains(&format!("offset {:#x}", fat + 2 * c as usize)),
        "{e}"
    );

    // big.bin's chain runs into a free cluster, then points past the data area.
    for (to, says) in [(0u16, "a free cluster"), (0xFFF0, "outside the data area")] {
        let mut b = orig.clone();
        let at = fat + 2 * big_c as usize;
        b[at..at + 2].copy_from_slice(&to.to_le_bytes());
        let fs = open_mem(b).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let e = fs.read(big, 0, &mut buf).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains(&format!("offset {at:#x}")),
            "{e}"
        );
        // The rest of the tree still reads.
        assert_eq!(fs.lookup(r, b"README.TXT").unwrap().size, 8);
    }
    // A volume left mounted (the state byte's dirty bit): its free space is not offered.
    let mut b = orig.clone();
    b[37] |= 1;
    let e = open_mem(b).unwrap().unused().unwrap_err().to_string();
    assert!(e.contains("not cleanly unmounted"), "{e}");
    // A first cluster past the data area.
    let mut b = orig.clone();
    let at = big as usize * 32 + 26;
    b[at..at + 2].copy_from_slice(&0xFFEEu16.to_le_bytes());
    let fs = open_mem(b).unwrap();
    let e = fs.read(big, 0, &mut [0u8; 10]).unwrap_err().to_string();
    assert!(e.contains("first cluster 65518"), "{e}");

    // Truncated: the boot sector alone, then the metadata without the data.
    assert!(open_mem(orig[..511].to_vec()).is_err());
    for cut in [512, data, data + 3 * img.cluster as usize, orig.len() / 2] {
        walk_bounded(orig[..cut].to_vec());
    }
    // Mutants: mostly in the boot sector, the FAT and the root directory.
    let hot = [
        (0, 512),
        (fat, fat + 4096),
        (data - root_entries as usize * 32, data),
    ];
    let mut opened = 0;
    for m in common::mutants(&orig, &hot, 300, 21) {
        opened += usize::from(walk_bounded(m));
    }
    assert!(opened > 100, "only {opened} of 300 mutants opened");
}

/// `common::walk_bounded` over FAT bytes.
fn walk_bounded(data: Vec<u8>) -> bool {
    common::walk_bounded("FAT", move || {
        let fs = Fat::open(Arc::new(MemDevice(data))).ok()?;
        Some(Box::new(fs) as Box<dyn Filesystem>)
    })
}
