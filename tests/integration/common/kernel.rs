//! The kernel as an oracle: loop mounts that always come undone, a stat-for-stat snapshot of a
//! mounted tree, the same snapshot of ferry's own view, and a comparison that says readably
//! where two snapshots differ. Also the mkfs.ext4 call every ext4 test builds its images with.

use ferry::fs::{DirEntry, FileType, Filesystem, Timestamp};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any one losetup/mount/umount command: a stuck one fails its test, never
/// hangs CI.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// CI (FERRY_REQUIRE_FUSE=1): a test that cannot run must fail, not skip.
pub(crate) fn required() -> bool {
    std::env::var("FERRY_REQUIRE_FUSE").as_deref() == Ok("1")
}

/// Runs `cmd` to completion within DEADLINE, killing it otherwise: Ok(stdout) on success,
/// Err(stderr, or the timeout) on failure. The output is read once the command exits, so it
/// must be small (a daemon the command leaves behind must not hold the pipes).
pub(crate) fn run_bounded(cmd: &mut Command) -> Result<String, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return if status.success() {
                Ok(out)
            } else {
                Err(format!("{}{status}", err))
            };
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} timed out after {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A kernel mount of an image file (or of a byte range of it) through a loop device of its
/// own; on drop it is unmounted and the loop device detached.
pub(crate) struct KernelMount {
    mnt: PathBuf,
    dev: String,
    released: bool,
}

impl KernelMount {
    /// Mounts all of `image` at `mnt` (created if missing) with the mount options `opts`, for
    /// instance "ro", "ro,noload" or "" (read-write). A "loop" option is implied and may be
    /// given; with "ro" the loop device itself is read-only. Err says why the kernel refused.
    pub(crate) fn new(image: &Path, mnt: &Path, opts: &str) -> Result<Self, String> {
        Self::attach(image, None, mnt, opts)
    }

    /// Mounts `size` bytes of `image` from byte `offset` (a partition: loop devices here have
    /// no partition scan), otherwise as `new`.
    pub(crate) fn range(
        image: &Path,
        offset: u64,
        size: u64,
        mnt: &Path,
        opts: &str,
    ) -> Result<Self, String> {
        Self::attach(image, Some((offset, size)), mnt, opts)
    }

    /// The mountpoint.
    pub(crate) fn path(&self) -> &Path {
        &self.mnt
    }

    fn attach(
        image: &Path,
        range: Option<(u64, u64)>,
        mnt: &Path,
        opts: &str,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(mnt).unwrap();
        let opts: Vec<&str> = opts
            .split(',')
            .filter(|o| !o.is_empty() && *o != "loop")
            .collect();
        let mut losetup = Command::new("losetup");
        losetup.args(["--find", "--show"]);
        if opts.contains(&"ro") {
            losetup.arg("--read-only");
        }
        if let Some((offset, size)) = range {
            losetup
                .arg("--offset")
                .arg(offset.to_string())
                .arg("--sizelimit")
                .arg(size.to_string());
        }
        losetup.arg(image);
        // Parallel tests take loop devices too: losetup's free device can be gone by the time
        // it claims it.
        let mut last = String::new();
        let mut dev = None;
        for attempt in 0..10 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt.min(3)));
            }
            match run_bounded(&mut losetup) {
                Ok(out) => {
                    dev = Some(out.trim().to_string());
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(dev) = dev else {
            return Err(format!("losetup {}: {last}", image.display()));
        };
        let mut guard = KernelMount {
            mnt: mnt.to_path_buf(),
            dev,
            released: false,
        };
        let mut mount = Command::new("mount");
        if !opts.is_empty() {
            mount.arg("-o").arg(opts.join(","));
        }
        mount.arg(&guard.dev).arg(mnt);
        // A mount that fails is retried once: the first can lose a race with udev probing the
        // new device. A filesystem the kernel refuses fails both.
        let mut last = String::new();
        for attempt in 0..2 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            match run_bounded(&mut mount) {
                Ok(_) => return Ok(guard),
                Err(e) => last = e,
            }
        }
        guard.released = true;
        guard.detach();
        Err(format!(
            "mount -o {} {} ({}): {last}",
            opts.join(","),
            image.display(),
            guard.dev
        ))
    }

    fn detach(&self) {
        if let Err(e) = run_bounded(Command::new("losetup").arg("-d").arg(&self.dev)) {
            eprintln!("losetup -d {}: {e}", self.dev);
        }
    }

    /// Unmounts now (a test that mounts the same image again, or wants a read-write mount's
    /// changes on disk); Err if the mount was busy and had to be detached lazily.
    pub(crate) fn unmount(mut self) -> Result<(), String> {
        self.release()
    }

    /// A child process forked by a parallel test can hold a file of the mount open for a
    /// moment (until its exec closes it), making umount fail with EBUSY: retry, then detach
    /// lazily rather than leave it behind. The loop device goes with it (autoclear if busy).
    fn release(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..20 {
            match run_bounded(Command::new("umount").arg(&self.mnt)) {
                Ok(_) => {
                    self.detach();
                    return Ok(());
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run_bounded(Command::new("umount").arg("-l").arg(&self.mnt));
        self.detach();
        Err(format!(
            "umount {}: {last} (detached lazily)",
            self.mnt.display()
        ))
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("{e}");
        }
    }
}

/// `KernelMount::new`, or a loud SKIP (None) where this machine cannot loop-mount, or a
/// panic under FERRY_REQUIRE_FUSE=1.
pub(crate) fn mount_or_skip(image: &Path, mnt: &Path, opts: &str) -> Option<KernelMount> {
    match KernelMount::new(image, mnt, opts) {
        Ok(m) => Some(m),
        Err(e) if required() => panic!("cannot mount (FERRY_REQUIRE_FUSE=1): {e}"),
        Err(e) => {
            eprintln!("SKIP: cannot mount (needs root and loop devices): {e}");
            None
        }
    }
}

/// `mkfs.ext4 -q -F [-d SRC] ARGS IMAGE` on a new sparse file of `size` ("16M", "1G").
pub(crate) fn mkfs_ext4(image: &Path, size: &str, src: Option<&Path>, args: &[&str]) {
    let _ = std::fs::remove_file(image);
    super::run(Command::new("truncate").args(["-s", size]).arg(image));
    let mut cmd = Command::new(super::tool("mkfs.ext4").expect("mkfs.ext4"));
    cmd.args(["-q", "-F"]);
    if let Some(src) = src {
        cmd.arg("-d").arg(src);
    }
    cmd.args(args).arg(image);
    super::run(&mut cmd);
}

/// One path as a reader sees it: every stat field a user can see, the link target, and the
/// sha256 of the contents ("error …" when reading fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// st_blocks (512-byte units).
    pub blocks: u64,
    pub nlink: u64,
    pub ino: u64,
    pub rdev: u64,
    /// (seconds, nanoseconds).
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub link: Vec<u8>,
    pub sha: String,
}

impl Entry {
    /// The fields that differ, as "field: ours vs theirs".
    pub(crate) fn diff(&self, other: &Entry) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! field {
            ($($f:ident),*) => {$(
                if self.$f != other.$f {
                    out.push(format!(
                        "{}: {:?} vs {:?}",
                        stringify!($f),
                        self.$f,
                        other.$f
                    ));
                }
            )*};
        }
        field!(kind, uid, gid, size, blocks, nlink, ino, rdev, atime, mtime, ctime, sha);
        if self.mode != other.mode {
            out.push(format!("mode: {:o} vs {:o}", self.mode, other.mode));
        }
        if self.link != other.link {
            out.push(format!(
                "link: {:?} vs {:?}",
                String::from_utf8_lossy(&self.link),
                String::from_utf8_lossy(&other.link)
            ));
        }
        out
    }
}

/// Path (relative, "" for the root, bytes as on disk) → what is there.
pub(crate) type Snapshot = BTreeMap<Vec<u8>, Entry>;

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// What both walkers record, when lenient, for an object that cannot be read at all (its
/// inode or its directory damaged): the two report such damage with different errors.
pub(crate) fn unreadable() -> Entry {
    Entry {
        kind: FileType::RegularFile,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        blocks: 0,
        nlink: 0,
        ino: 0,
        rdev: 0,
        atime: (0, 0),
        mtime: (0, 0),
        ctime: (0, 0),
        link: vec![],
        sha: "unreadable".into(),
    }
}

/// The tree under `root` (a kernel mount, or a FUSE mount) through the ordinary file API.
pub(crate) fn walk(root: &Path) -> Snapshot {
    walk_with(root, false)
}

/// `walk`, where an object that cannot be stat'ed or listed is recorded as `unreadable()`.
pub(crate) fn walk_lenient(root: &Path) -> Snapshot {
    walk_with(root, true)
}

fn walk_with(root: &Path, lenient: bool) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let p = root.join(&rel);
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) if lenient => {
                out.insert(rel.as_os_str().as_bytes().to_vec(), unreadable());
                continue;
            }
            Err(e) => panic!("{}: {e}", p.display()),
        };
        let kind = FileType::from_mode(m.mode())
            .unwrap_or_else(|| panic!("{}: mode {:o}", p.display(), m.mode()));
        let mut e = Entry {
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            nlink: m.nlink(),
            ino: m.ino(),
            rdev: m.rdev(),
            atime: (m.atime(), m.atime_nsec() as u32),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            ctime: (m.ctime(), m.ctime_nsec() as u32),
            link: vec![],
            sha: String::new(),
        };
        match kind {
            FileType::Symlink => {
                e.link = std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }
            // An unreadable file (damaged, or encrypted without its key) must fail the same
            // way in both views.
            FileType::RegularFile => {
                e.sha = match std::fs::read(&p) {
                    Ok(data) => sha256(&data),
                    Err(err) => format!("error {err}"),
                }
            }
            FileType::Directory => {
                let names: std::io::Result<Vec<_>> = std::fs::read_dir(&p)
                    .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect());
                match names {
                    Ok(names) => todo.extend(names.into_iter().map(|n| rel.join(n))),
                    Err(_) if lenient => e = unreadable(),
                    Err(err) => panic!("{}: {err}", p.display()),
                }
            }
            _ => {}
        }
        out.insert(rel.as_os_str().as_bytes().to_vec(), e);
    }
    out
}

/// Lists a directory through `readdir`, `per_call` entries at a time (resuming by cookie).
pub(crate) fn list(
    fs: &dyn Filesystem,
    dir: u64,
    per_call: usize,
) -> ferry::fs::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let mut got = 0;
        let mut next_cookie = cookie;
        fs.readdir(dir, cookie, &mut |e, next| {
            if got == per_call {
                return false;
            }
            got += 1;
            out.push(e);
            next_cookie = next;
            true
        })?;
        if got == 0 {
            return Ok(out);
        }
        assert!(next_cookie > cookie, "readdir cookie does not advance");
        cookie = next_cookie;
    }
}

/// Reads a whole file `chunk` bytes at a time, checking it ends at `size`.
pub(crate) fn read_all(
    fs: &dyn Filesystem,
    ino: u64,
    size: u64,
    chunk: usize,
) -> ferry::fs::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = fs.read(ino, data.len() as u64, &mut buf)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        assert!(data.len() as u64 <= size, "read past the size");
    }
    assert_eq!(data.len() as u64, size, "read ends before the size");
    Ok(data)
}

/// ferry's view of a whole filesystem in `walk`'s shape, checking as it goes that `lookup`
/// agrees with `readdir`, that "." and ".." are right, that a readdir resumed by cookie lists
/// the same, and that reads in odd chunk sizes agree.
pub(crate) fn snapshot(fs: &dyn Filesystem) -> Snapshot {
    snapshot_with(fs, false)
}

/// `snapshot`, where a file that cannot be read is recorded ("error …" as its sha, like
/// `walk`) instead of failing, when `lenient`.
pub(crate) fn snapshot_lenient(fs: &dyn Filesystem) -> Snapshot {
    snapshot_with(fs, true)
}

fn snapshot_with(fs: &dyn Filesystem, lenient: bool) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut todo = vec![(Vec::<u8>::new(), fs.root_ino(), fs.root_ino())];
    while let Some((path, ino, parent)) = todo.pop() {
        let name = String::from_utf8_lossy(&path).into_owned();
        let a = match fs.getattr(ino) {
            Ok(a) => a,
            Err(_) if lenient => {
                out.insert(path, unreadable());
                continue;
            }
            Err(e) => panic!("getattr {name:?}: {e}"),
        };
        assert_eq!(a.ino, ino);
        let t = |x: Timestamp| (x.secs, x.nsecs);
        let mut e = Entry {
            kind: a.kind,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            blocks: a.blocks,
            nlink: u64::from(a.nlink),
            ino,
            rdev: a.rdev,
            atime: t(a.atime),
            mtime: t(a.mtime),
            ctime: t(a.ctime),
            link: vec![],
            sha: String::new(),
        };
        match a.kind {
            FileType::Symlink => {
                e.link = fs
                    .readlink(ino)
                    .unwrap_or_else(|e| panic!("readlink {name:?}: {e}"))
            }
            FileType::RegularFile => {
                let data = match read_all(fs, ino, a.size, 1 << 20) {
                    Ok(d) => d,
                    Err(err) if lenient => {
                        e.sha = format!("error {err}");
                        out.insert(path, e);
                        continue;
                    }
                    Err(err) => panic!("read {name:?}: {err}"),
                };
                if a.size > 0 && a.size < (8 << 20) {
                    let odd = read_all(fs, ino, a.size, 4999).unwrap();
                    assert!(odd == data, "chunked read differs for {name:?}");
                }
                e.sha = sha256(&data);
            }
            FileType::Directory => {
                let entries = match list(fs, ino, 7) {
                    Ok(entries) => entries,
                    Err(_) if lenient => {
                        out.insert(path, unreadable());
                        continue;
                    }
                    Err(e) => panic!("readdir {name:?}: {e}"),
                };
                let all = list(fs, ino, usize::MAX).unwrap();
                assert_eq!(entries, all, "resumed readdir differs for {name:?}");
                let dot = entries.iter().find(|e| e.name == b".").expect(".");
                let dotdot = entries.iter().find(|e| e.name == b"..").expect("..");
                assert_eq!((dot.ino, dotdot.ino), (ino, parent), "{name:?}: . and ..");
                for d in entries {
                    if d.name == b"." || d.name == b".." {
                        continue;
                    }
                    match fs.lookup(ino, &d.name) {
                        Ok(l) => {
                            assert_eq!((l.ino, l.kind), (d.ino, d.kind), "lookup in {name:?}")
                        }
                        Err(e) if !lenient => panic!("lookup {:?} in {name:?}: {e}", d.name),
                        Err(_) => {}
                    }
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&d.name);
                    todo.push((p, d.ino, ino));
                }
                assert!(matches!(
                    fs.lookup(ino, b"no such name"),
                    Err(ferry::fs::Error::NotFound)
                ));
            }
            _ => {}
        }
        out.insert(path, e);
    }
    out
}

/// How `ours` differs from `expected`: the number of differing paths and, for the first
/// `max` of them (in path order), a readable line each.
pub(crate) fn differences(
    expected: &Snapshot,
    ours: &Snapshot,
    max: usize,
) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut lines = Vec::new();
    let mut note = |line: String| {
        n += 1;
        if lines.len() < max {
            lines.push(line);
        }
    };
    let mut paths: Vec<&Vec<u8>> = expected.keys().chain(ours.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let name = String::from_utf8_lossy(p);
        match (expected.get(p), ours.get(p)) {
            (Some(_), None) => note(format!("{name:?}: missing")),
            (None, Some(_)) => note(format!("{name:?}: extra")),
            (Some(k), Some(o)) if k != o => {
                let mut line = format!("{name:?}:");
                for d in o.diff(k) {
                    let _ = write!(line, " {d};");
                }
                note(line);
            }
            _ => {}
        }
    }
    (n, lines)
}

/// Panics with the first differences unless `ours` equals `expected` (the kernel's view),
/// path for path and field for field. Fields read "ours vs expected".
pub(crate) fn assert_same(expected: &Snapshot, ours: &Snapshot, what: &str) {
    let (n, lines) = differences(expected, ours, 10);
    assert!(
        n == 0,
        "{what}: {n} paths differ (fields: ours vs expected); first:\n  {}",
        lines.join("\n  ")
    );
}

/// A ferry FUSE mount; unmounted (and its daemon waited for) on drop.
pub(crate) struct FerryMount(PathBuf);

impl FerryMount {
    pub(crate) fn new(args: &[&OsStr], mnt: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(mnt).unwrap();
        run_bounded(
            Command::new(super::ferry_bin())
                .arg("mount")
                .args(args)
                .arg(mnt),
        )
        .map(|_| FerryMount(mnt.to_path_buf()))
    }
}

impl Drop for FerryMount {
    /// A process forked by a parallel test holds the files it inherited until its exec
    /// closes them, so a busy umount is retried for a moment before it counts as a failure.
    fn drop(&mut self) {
        let mut r = Ok(String::new());
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            r = run_bounded(Command::new(super::ferry_bin()).arg("umount").arg(&self.0));
            match &r {
                Err(e) if e.contains("is busy") => continue,
                _ => break,
            }
        }
        if let Err(err) = r {
            eprintln!("ferry umount {}: {err}; detaching", self.0.display());
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            if !std::thread::panicking() {
                panic!("ferry umount failed: {err}");
            }
        }
    }
}
