//! Layer 5: the FUSE mount. `adapter` translates requests onto a `fs::Filesystem`; this module
//! checks the mountpoint and the FUSE plumbing first, so a user gets one clear sentence
//! instead of an errno from deep inside the mount call, and `daemon` runs it in the background.
#![allow(unsafe_code)] // geteuid, access(2) on /dev/fuse, mallopt; each block says why it is sound.

pub mod adapter;
pub mod daemon;
pub mod reads;

use crate::fs::{self, Filesystem};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mountpoint {0} does not exist (create it with mkdir)")]
    MountpointMissing(PathBuf),
    #[error("mountpoint {0} is not a directory")]
    MountpointNotDir(PathBuf),
    #[error("mountpoint {0} is busy: something is already mounted there (ferry umount {0})")]
    MountpointBusy(PathBuf),
    #[error("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass the device in (--device /dev/fuse)")]
    NoFuseDevice,
    #[error("fusermount3 is missing: a mount without root needs it (apt-get install fuse3)")]
    NoFusermount,
    #[error("/dev/fuse is not open to you (mode {mode:04o}, owner uid {uid}): a mount without root needs to read and write it; as root, `chmod 0666 /dev/fuse` (what the fuse3 package's udev rule sets) or add yourself to its group, or mount as root")]
    FuseDenied { mode: u32, uid: u32 },
    #[error("{0} is not a mountpoint")]
    NotMounted(PathBuf),
    #[error("{path} is not a ferry mount (it is {fstype} from {from}); unmount it with umount(8)")]
    NotOurs {
        path: PathBuf,
        fstype: String,
        from: String,
    },
    #[error(
        "{0} is busy: a process still uses files under it (close them, or use ferry umount --lazy)"
    )]
    Busy(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the mount daemon failed: {0}")]
    Daemon(String),
}

/// The errno a filesystem error is answered with. Damage is EIO (not EUCLEAN) so that tools
/// treat a broken file like an unreadable one and the rest of the tree stays browsable.
pub fn errno(e: &fs::Error) -> i32 {
    match e {
        fs::Error::NotFound => libc::ENOENT,
        fs::Error::NotDir(_) => libc::ENOTDIR,
        fs::Error::IsDir(_) => libc::EISDIR,
        fs::Error::NotSymlink(_) => libc::EINVAL,
        fs::Error::NameTooLong { .. } => libc::ENAMETOOLONG,
        fs::Error::Corrupt(_) | fs::Error::Io(_) => libc::EIO,
        fs::Error::Unsupported(_) | fs::Error::NotSupported => libc::EOPNOTSUPP,
        fs::Error::NoAttr => libc::ENODATA,
        fs::Error::NoKey(_) => libc::ENOKEY,
        fs::Error::ReadOnly => libc::EROFS,
        fs::Error::Loop => libc::ELOOP,
        fs::Error::Busy => libc::EBUSY,
        fs::Error::CrossDevice => libc::EXDEV,
        fs::Error::Exists => libc::EEXIST,
        fs::Error::NotEmpty => libc::ENOTEMPTY,
        fs::Error::NoSpace => libc::ENOSPC,
        fs::Error::TooManyLinks => libc::EMLINK,
        fs::Error::Invalid(_) => libc::EINVAL,
        fs::Error::NotPermitted => libc::EPERM,
        fs::Error::TooBig => libc::EFBIG,
    }
}

/// How to mount.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shown as the mount's source in /proc/mounts and `df` (e.g. the image path).
    pub fsname: String,
    /// Threads answering file reads side by side (the kernel sends several at once), started
    /// as reads need them; requests are read by at most `REQUEST_THREADS`.
    pub threads: usize,
    /// Let other users see the mount (needs `user_allow_other` in /etc/fuse.conf unless root).
    pub allow_other: bool,
    /// Pass writes through to the filesystem (`ferry mount --rw`); read-only otherwise.
    pub writable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsname: "ferry".into(),
            threads: 4,
            allow_other: false,
            writable: false,
        }
    }
}

/// Checks that a mount can be attempted at `mountpoint`, naming the problem if not.
pub fn check(mountpoint: &Path) -> Result<()> {
    let md = match std::fs::metadata(mountpoint) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MountpointMissing(mountpoint.into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A FUSE daemon died and left its mount behind.
            return Err(Error::MountpointBusy(mountpoint.into()));
        }
        Err(source) => {
            return Err(Error::Io {
                what: "cannot stat mountpoint",
                path: mountpoint.into(),
                source,
            })
        }
    };
    if !md.is_dir() {
        return Err(Error::MountpointNotDir(mountpoint.into()));
    }
    let busy = match mount_root(mountpoint) {
        Some(root) => root,
        None => is_mountpoint(mountpoint)?,
    };
    if busy {
        return Err(Error::MountpointBusy(mountpoint.into()));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::NoFuseDevice);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && which("fusermount3").is_none() {
        return Err(Error::NoFusermount);
    }
    // fuser opens the device itself before it would call fusermount3, so without access the
    // mount fails with a bare EACCES: say which file and what to do.
    // SAFETY: the path is a NUL-terminated literal; access has no other preconditions.
    let ok = unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    if !ok {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata("/dev/fuse").map_err(|source| Error::Io {
            what: "cannot stat",
            path: "/dev/fuse".into(),
            source,
        })?;
        return Err(Error::FuseDenied {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
        });
    }
    Ok(())
}

/// Whether `path` is the root of a mount, from statx's `STATX_ATTR_MOUNT_ROOT` (bind mounts
/// included); `None` where the kernel does not say (before Linux 5.8). One statx takes about
/// 1 µs, a read of /proc/self/mountinfo 30 µs (20 mounts), and `ferry mount` checks twice.
fn mount_root(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx is plain data (integers), for which all zeroes is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a statx buffer the call only writes.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_TYPE, &mut st) };
    let flag = u64::try_from(libc::STATX_ATTR_MOUNT_ROOT).ok()?;
    (r == 0 && st.stx_attributes_mask & flag != 0).then_some(st.stx_attributes & flag != 0)
}

/// Whether `path` is the mountpoint of something, from /proc/self/mountinfo (stat-based
/// checks miss bind mounts and hang on dead FUSE mounts).
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    Ok(mounted_at(path)?.is_some())
}

/// What is mounted at `path` (the last mount there, the one that shows): its filesystem type
/// and source, as /proc/self/mountinfo gives them.
pub fn mounted_at(path: &Path) -> Result<Option<(String, String)>> {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = read_mountinfo().map_err(|source| Error::Io {
        what: "cannot read",
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    let want = canon.as_os_str().as_encoded_bytes();
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS"
    Ok(info
        .split(|&b| b == b'\n')
        .filter(|l| {
            l.split(|&b| b == b' ')
                .nth(4)
                .is_some_and(|mp| unescape_mountinfo(mp) == want)
        })
        .filter_map(|l| {
            let fields: Vec<&[u8]> = l.split(|&b| b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-")?;
            let text = |i: usize| {
                fields
                    .get(i)
                    .map(|f| String::from_utf8_lossy(&unescape_mountinfo(f)).into_owned())
            };
            // The source and the options follow the separator.
            Some((
                text(dash.saturating_add(1))?,
                text(dash.saturating_add(2)).unwrap_or_default(),
            ))
        })
        .next_back())
}

/// /proc/self/mountinfo, read in a few large reads: `std::fs::read` starts from its size (0
/// for a proc file) and grows the buffer from 32 bytes, a dozen read calls each time a mount
/// checks its mountpoint.
fn read_mountinfo() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut info = Vec::with_capacity(MOUNTINFO_READ);
    std::fs::File::open("/proc/self/mountinfo")?.read_to_end(&mut info)?;
    Ok(info)
}

/// The buffer mountinfo is first read into; it grows for a longer table.
const MOUNTINFO_READ: usize = 16 * 1024;

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo: the kernel's
/// mangling is the one fstab uses.
fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    crate::guest::fstab::unmangle(s)
}

pub(crate) fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

fn config(opts: &Options) -> fuser::Config {
    use fuser::MountOption as M;
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        if opts.writable { M::RW } else { M::RO },
        M::FSName(opts.fsname.clone()),
        M::Subtype("ferry".into()),
        M::NoAtime,
        M::NoDev,
        M::NoSuid,
        // The kernel checks permissions from the mode bits we report, as for a local mount.
        M::DefaultPermissions,
    ];
    if opts.allow_other {
        c.acl = fuser::SessionACL::All;
    }
    c.n_threads = Some(opts.threads.clamp(1, REQUEST_THREADS));
    c.clone_fd = true;
    c
}

/// Threads reading requests from the kernel; large file reads go to up to `Options::threads`
/// workers started on demand (`reads`). Two keep lookups and listings of one process going
/// while another's request waits on the disk.
const REQUEST_THREADS: usize = 2;

/// A mounted filesystem. Unmounts when `umount` is called or the value is dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    /// Unmounts and waits for the request threads to finish.
    pub fn umount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                log::warn!("unmount: {e}");
            }
        }
    }
}

fn session(
    fs: Arc<dyn Filesystem>,
    mountpoint: &Path,
    opts: &Options,
) -> Result<(fuser::Session<adapter::Adapter>, Readahead)> {
    check(mountpoint)?;
    fix_mmap_threshold();
    let adapter = if opts.writable {
        adapter::Adapter::writable(fs, opts.threads)
    } else {
        adapter::Adapter::new(fs, opts.threads)
    };
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let s =
        fuser::Session::new(adapter, mountpoint, &config(opts)).map_err(|source| Error::Io {
            what: "cannot mount on",
            path: mountpoint.into(),
            source,
        })?;
    Ok((s, Readahead { canon }))
}

/// The kernel's readahead window for a ferry mount, in KiB. A FUSE mount starts at 128 KiB
/// (its bdi's default; the `max_readahead` of the init reply can only lower it), so a
/// sequential read came as one 128 KiB request after another, each a round trip to the
/// daemon. With a wider window the kernel sends several requests of up to 1 MiB
/// (`max_pages`) at once, which the request threads serve side by side: the daemon's reads of
/// the image overlap the kernel's copy of the previous reply. The kernel's own readahead bounds
/// the memory, in its page cache. Measured on a loaded 2-core machine (cold 1 GiB read, best and
/// median of 5, interleaved): raw image 622/471 MiB/s with 128 KiB, 649/574 with 4 MiB, the
/// kernel's loop mount 675/584; qcow2 587/492 and 626/519.
pub const READAHEAD_KB: u32 = 4096;

/// Widens the readahead of a mount before its requests are served (`READAHEAD_KB`).
struct Readahead {
    /// The mountpoint, resolved before the mount: resolving it afterwards asks the mount.
    canon: PathBuf,
}

impl Readahead {
    /// Writes `READAHEAD_KB` to the sysfs file of the mount's bdi, named after the device
    /// /proc/self/mountinfo gives the mount (no request to the mount itself, which is not
    /// served yet). The daemon does it after the fork, before it serves: not on the path of
    /// `ferry mount` (a mountinfo read takes 30 µs), and before any file can be opened (a file
    /// keeps the window it was opened with). Best effort: only root may write the file, and a
    /// mount without it works as before.
    fn widen(self) {
        let Some(dev) = mount_device(&self.canon) else {
            log::debug!("no mountinfo entry for {}", self.canon.display());
            return;
        };
        let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
            log::debug!("cannot widen the readahead ({knob}): {e}");
        }
    }
}

/// The `MAJ:MIN` device of the last mount at `canon`, from /proc/self/mountinfo.
fn mount_device(canon: &Path) -> Option<String> {
    let info = read_mountinfo().ok()?;
    let want = canon.as_os_str().as_encoded_bytes();
    info.split(|&b| b == b'\n')
        .filter_map(|l| {
            let mut f = l.split(|&b| b == b' ');
            let dev = f.nth(2)?;
            let mp = f.nth(1)?;
            (unescape_mountinfo(mp) == want).then(|| String::from_utf8_lossy(dev).into_owned())
        })
        .next_back()
}

/// Mounts `fs` at `mountpoint` (read-only unless `opts.writable`) and serves it from
/// background threads.
pub fn spawn(fs: Arc<dyn Filesystem>, mountpoint: &Path, opts: &Options) -> Result<Mounted> {
    let (s, readahead) = session(fs, mountpoint, opts)?;
    readahead.widen();
    let bg = s.spawn().map_err(|source| Error::Io {
        what: "cannot start the request threads for",
        path: mountpoint.into(),
        source,
    })?;
    Ok(Mounted { session: Some(bg) })
}

/// The allocation size from which glibc's malloc maps fresh memory: above `adapter::MAX_IO`
/// (the read buffers each thread keeps and reuses come from the heap) and below fuser's
/// 16 MiB request buffers, one per request thread.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Fixes malloc's mmap threshold at `MMAP_THRESHOLD`. glibc raises it to the size of any mapped
/// block that is freed: after the INIT request's 16 MiB buffer, each request thread's buffer was
/// carved from the heap, and calloc zeroed the reused part, 33 page faults per thread before
/// its first request (the daemon took 171 faults to serve mount → first cat, ntfs-3g 44).
/// Other C libraries have their own allocators and no such parameter.
fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; it has no memory-safety preconditions.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } == 0 {
        log::debug!("malloc refused M_MMAP_THRESHOLD {MMAP_THRESHOLD}");
    }
}

/// A mount the kernel has accepted and whose INIT is answered, not served yet: requests wait
/// in /dev/fuse until `serve` reads them. Dropping it unmounts.
pub struct Session {
    inner: fuser::Session<adapter::Adapter>,
    readahead: Readahead,
    fs: Arc<dyn Filesystem>,
    mountpoint: PathBuf,
    writable: bool,
}

/// Mounts `fs` at `mountpoint` (read-only unless `opts.writable`) and answers the kernel's
/// INIT; `Session::serve` then serves it. Between the two a daemon can fork: the mount is
/// already usable, so `ferry mount` can return as soon as it has forked.
pub fn mount(fs: Arc<dyn Filesystem>, mountpoint: &Path, opts: &Options) -> Result<Session> {
    let (inner, readahead) = session(fs.clone(), mountpoint, opts)?;
    Ok(Session {
        inner,
        readahead,
        fs,
        mountpoint: mountpoint.into(),
        writable: opts.writable,
    })
}

impl Session {
    /// Serves requests until the filesystem is unmounted; a writable one commits what was
    /// written every `SYNC_INTERVAL` meanwhile.
    pub fn serve(self) -> Result<()> {
        let Session {
            inner,
            readahead,
            fs,
            mountpoint,
            writable,
        } = self;
        readahead.widen();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let syncer = writable.then(|| {
            std::thread::spawn(move || {
                // Until the session ends (the sender is dropped), commit what was written
                // every few seconds, as the kernel's journal commit interval does: a killed
                // daemon then loses at most that much.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(SYNC_INTERVAL)
                {
                    if let Err(e) = fs.fsync() {
                        log::error!("periodic sync: {e}");
                    }
                }
            })
        });
        let r = inner.run().map_err(|source| Error::Io {
            what: "serving",
            path: mountpoint,
            source,
        });
        drop(stop);
        if let Some(t) = syncer {
            let _ = t.join();
        }
        r
    }
}

/// How often a writable mount commits what was written when nobody asks (the kernel's
/// default ext4 commit interval).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(br"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape_mountinfo(br"/x\04"), br"/x\04");
    }
}
