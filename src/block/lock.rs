//! Image locking as qemu does it (qemu block/file-posix.c, "locking=auto"), so that ferry, qemu,
//! qemu-img, qemu-io and qemu-nbd see each other's use of an image file.
//!
//! qemu's protocol: each block permission (include/block/block-common.h `BLK_PERM_*`, bit `i`)
//! has two bytes in the image file. A user that *holds* permission `i` takes a shared
//! open-file-description lock (F_OFD_SETLK, F_RDLCK) on byte `100 + i`; a user that does *not
//! share* permission `i` with others takes one on byte `200 + i`. Then it tests, with F_OFD_GETLK
//! for an exclusive lock, that nobody else holds byte `200 + i` for each permission it wants
//! ("Failed to get \"write\" lock") and nobody else holds byte `100 + i` for each permission it
//! does not share ("Failed to get shared \"write\" lock"). All locks taken are shared ones, so
//! two readers never conflict; taking before testing means two racing writers both fail rather
//! than both succeed. OFD locks belong to the open file description, so they go away when the
//! file is closed (or its process dies), never earlier.
//!
//! Within one ferry process all users of a file share one lock holder, whose bytes are the union
//! of what they need: the process coordinates its own readers and writers (`commit
//! --into-source` reads the overlay, whose backing file is the one it writes), and only other
//! processes are tested against.
#![allow(unsafe_code)] // fcntl OFD locks, as qemu takes them; each block says why it is sound.

use super::error::{Error, Result};
use super::file::FileId;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `BLK_PERM_CONSISTENT_READ`: reads see a self-consistent disk.
const CONSISTENT_READ: u8 = 0x01;
/// `BLK_PERM_WRITE`: the visible contents may change.
const WRITE: u8 = 0x02;
/// `BLK_PERM_WRITE_UNCHANGED`: writes that keep the visible contents (qemu's copy-on-read).
const WRITE_UNCHANGED: u8 = 0x04;
/// `BLK_PERM_RESIZE`.
const RESIZE: u8 = 0x08;
/// Every permission qemu 6.2 and later knows (`BLK_PERM_ALL`); the byte of the removed
/// `GRAPH_MOD` (bit 4) is left alone, as qemu does.
const ALL: u8 = 0x0f;
/// Names as qemu's `bdrv_perm_names` prints them, by bit.
const NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];
/// First byte of the "holds permission" bytes (qemu `RAW_LOCK_PERM_BASE`; libvirt uses byte 0).
const PERM_BASE: i64 = 100;
/// First byte of the "does not share permission" bytes (qemu `RAW_LOCK_SHARED_BASE`).
const SHARED_BASE: i64 = 200;

/// How a file is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read, and let nobody change the contents meanwhile (what `qemu-io -r`, `qemu-nbd -r` and
    /// qemu's backing files take): refused while another process writes the file.
    Read,
    /// Written (and read and resized), sharing only reads: what a running qemu, `qemu-io` and
    /// `qemu-nbd` take on a writable image. Refused while anyone else reads or writes it.
    Write,
}

/// A permission set: what is held and what is not shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Perms {
    held: u8,
    unshared: u8,
}

impl Perms {
    fn of(access: Access, force_share: bool) -> Perms {
        match access {
            Access::Read if force_share => Perms {
                held: CONSISTENT_READ,
                unshared: 0,
            },
            Access::Read => Perms {
                held: CONSISTENT_READ,
                unshared: ALL & !(CONSISTENT_READ | WRITE_UNCHANGED),
            },
            Access::Write => Perms {
                held: CONSISTENT_READ | WRITE | RESIZE,
                unshared: ALL & !(CONSISTENT_READ | WRITE_UNCHANGED),
            },
        }
    }

    fn union(self, o: Perms) -> Perms {
        Perms {
            held: self.held | o.held,
            unshared: self.unshared | o.unshared,
        }
    }
}

/// `-U`/`--force-share` (qemu-img's): readers share every permission, so a file another process
/// writes can still be read (its contents may change underneath). Writers never force-share.
static FORCE_SHARE: AtomicBool = AtomicBool::new(false);

/// Turns force-share on or off for the readers opened from now on in this process.
pub fn set_force_share(on: bool) {
    FORCE_SHARE.store(on, Ordering::Relaxed);
}

/// One file's lock holder in this process.
struct Entry {
    id: FileId,
    /// A duplicate of the first user's descriptor: the open file description the bytes are
    /// locked on, alive while any user is.
    fd: File,
    /// Users of each kind: (permissions, count).
    users: Vec<(Perms, usize)>,
    /// The bytes locked now.
    locked: Perms,
}

impl Entry {
    fn wanted(&self) -> Perms {
        self.users
            .iter()
            .filter(|(_, n)| *n > 0)
            .fold(Perms::default(), |a, (p, _)| a.union(*p))
    }
}

/// Every file this process holds locks on. Few (one per layer of the chains open), so a list.
static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// A user's hold on a file's locks; dropping it gives up what only this user needed.
#[derive(Debug)]
pub struct Lock {
    id: FileId,
    perms: Perms,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let mut table = TABLE.lock();
        let Some(i) = table.iter().position(|e| e.id == self.id) else {
            return;
        };
        let e = &mut table[i];
        if let Some(u) = e.users.iter_mut().find(|(p, n)| *p == self.perms && *n > 0) {
            u.1 = u.1.saturating_sub(1);
        }
        let want = e.wanted();
        if want == Perms::default() {
            // Unlocked explicitly: the description lives on while the first user's own
            // descriptor is open.
            let _ = apply(&e.fd, e.locked, Perms::default());
            table.swap_remove(i);
        } else {
            let _ = apply(&e.fd, e.locked, want);
            e.locked = want;
        }
    }
}

/// Why taking a lock failed.
enum Failure {
    /// Another process holds a byte we test or need: (permission bit, whether it is the
    /// "shared" byte, i.e. a permission we do not share that the other holds).
    Conflict(usize, bool),
    /// The filesystem has no byte-range locks (or no OFD locks).
    Unsupported(io::Error),
    Other(io::Error),
}

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    // F_RDLCK, F_WRLCK, F_UNLCK and SEEK_SET are small constants: they fit l_type's short.
    fl.l_type = libc::c_short::try_from(kind).unwrap_or_default();
    fl.l_whence = libc::c_short::try_from(libc::SEEK_SET).unwrap_or_default();
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// The byte of permission `bit` (one of NAMES' few) in the range starting at `base`.
fn lock_byte(base: i64, bit: usize) -> i64 {
    base.saturating_add(i64::try_from(bit).unwrap_or_default())
}

/// Sets (F_RDLCK) or clears (F_UNLCK) the OFD lock on one byte.
fn set(fd: &File, kind: libc::c_int, byte: i64) -> io::Result<()> {
    let fl = flock(kind, byte);
    // SAFETY: a valid fd and a valid flock that outlives the call.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another open file description holds a lock on `byte` (an exclusive lock could not
/// be placed). Our own description's locks never count.
fn taken_by_other(fd: &File, byte: i64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, byte);
    // SAFETY: a valid fd and a valid flock the call fills in.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(fl.l_type) != libc::F_UNLCK)
}

fn classify(e: io::Error, bit: usize, shared: bool) -> Failure {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Failure::Conflict(bit, shared),
        Some(libc::ENOLCK | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => {
            Failure::Unsupported(e)
        }
        _ => Failure::Other(e),
    }
}

/// Moves the bytes locked on `fd` from `from` to `to` (locking first, then unlocking).
fn apply(fd: &File, from: Perms, to: Perms) -> std::result::Result<(), Failure> {
    for (base, have, want, shared) in [
        (PERM_BASE, from.held, to.held, false),
        (SHARED_BASE, from.unshared, to.unshared, true),
    ] {
        for bit in 0..NAMES.len() {
            let m = 1u8 << bit;
            if want & m != 0 && have & m == 0 {
                set(fd, libc::F_RDLCK, lock_byte(base, bit))
                    .map_err(|e| classify(e, bit, shared))?;
            }
        }
        for bit in 0..NAMES.len() {
            let m = 1u8 << bit;
            if have & m != 0 && want & m == 0 {
                set(fd, libc::F_UNLCK, lock_byte(base, bit))
                    .map_err(|e| classify(e, bit, shared))?;
            }
        }
    }
    Ok(())
}

/// Tests `p` against the other processes' bytes, as qemu's `raw_check_lock_bytes`.
fn check(fd: &File, p: Perms) -> std::result::Result<(), Failure> {
    for bit in 0..NAMES.len() {
        if p.held & (1 << bit) != 0 {
            let t = taken_by_other(fd, lock_byte(SHARED_BASE, bit));
            if t.map_err(|e| classify(e, bit, false))? {
                return Err(Failure::Conflict(bit, false));
            }
        }
    }
    for bit in 0..NAMES.len() {
        if p.unshared & (1 << bit) != 0 {
            let t = taken_by_other(fd, lock_byte(PERM_BASE, bit));
            if t.map_err(|e| classify(e, bit, true))? {
                return Err(Failure::Conflict(bit, true));
            }
        }
    }
    Ok(())
}

/// Takes the locks `access` needs on `file` (opened at `path`, readable: shared locks need a
/// descriptor open for reading), or fails with
/// [`Error::Locked`] when another process's use conflicts. On a filesystem without
/// byte-range locks the file is used unlocked (with a warning), as qemu's "locking=auto".
pub fn acquire(file: &File, path: &Path, access: Access) -> Result<Option<Lock>> {
    let meta = file.metadata().map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let id = (meta.dev(), meta.ino());
    let perms = Perms::of(
        access,
        access == Access::Read && FORCE_SHARE.load(Ordering::Relaxed),
    );
    let mut table = TABLE.lock();
    let fresh = !table.iter().any(|e| e.id == id);
    if fresh {
        let fd = file.try_clone().map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        table.push(Entry {
            id,
            fd,
            users: Vec::new(),
            locked: Perms::default(),
        });
    }
    let Some(i) = table.iter().position(|e| e.id == id) else {
        unreachable!("the entry was just found or added")
    };
    let e = &mut table[i];
    let before = e.locked;
    let want = before.union(perms);
    let r = apply(&e.fd, before, want).and_then(|()| check(&e.fd, perms));
    let failure = match r {
        Ok(()) => {
            e.locked = want;
            match e.users.iter_mut().find(|(p, _)| *p == perms) {
                Some(u) => u.1 = u.1.saturating_add(1),
                None => e.users.push((perms, 1)),
            }
            return Ok(Some(Lock { id, perms }));
        }
        Err(f) => f,
    };
    // Back to what the other users of the file need.
    let _ = apply(&e.fd, want, before);
    if fresh {
        table.swap_remove(i);
    }
    drop(table);
    match failure {
        Failure::Conflict(bit, shared) => Err(Error::Locked {
            path: path.to_path_buf(),
            perm: NAMES[bit],
            shared,
            writing: access == Access::Write,
        }),
        Failure::Unsupported(e) => {
            log::warn!(
                "{}: the filesystem has no byte-range locks ({e}): used without locking, so \
                 other programs using it are not detected",
                path.display()
            );
            Ok(None)
        }
        Failure::Other(source) => Err(Error::Io {
            path: path.to_path_buf(),
            what: "image lock",
            offset: PERM_BASE.unsigned_abs(),
            source,
        }),
    }
}

/// Takes the writer's locks on the existing file at `path` (opened read-only for this; the lock
/// holder keeps the description open), for a caller about to replace the file, which it must
/// not do while another process uses it. None when there is no such file.
pub fn acquire_existing(path: &Path) -> Result<Option<Lock>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    acquire(&file, path, Access::Write)
}

/// The text of [`Error::Locked`].
pub(crate) fn locked_text(path: &Path, perm: &str, shared: bool, writing: bool) -> String {
    let what = format!(
        "{}: failed to get {}\"{perm}\" lock",
        path.display(),
        if shared { "shared " } else { "" }
    );
    if writing {
        format!(
            "{what}: another process is using the image (a VM, qemu-img, qemu-nbd, a ferry \
             mount?); ferry does not write an image in use"
        )
    } else {
        format!(
            "{what}: another process is writing the image (a VM, qemu-io, qemu-nbd, a ferry \
             --rw mount?); -U/--force-share reads it anyway, at the risk of an inconsistent view"
        )
    }
}

/// The files this process holds locks on (for tests and diagnostics).
pub fn held() -> Vec<FileId> {
    TABLE.lock().iter().map(|e| e.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// The bytes another open file description sees locked, probed the way
    /// qemu probes (F_OFD_GETLK): /proc/locks was ambiguous, since it names
    /// files by device and inode and other tests lock files of their own.
    fn locked_bytes(p: &Path) -> Vec<i64> {
        let probe = File::open(p).unwrap();
        (0..512)
            .filter(|&b| taken_by_other(&probe, b).unwrap())
            .collect()
    }

    #[test]
    fn readers_share_writers_do_not_and_drop_releases() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let f = File::open(&p).unwrap();
        let r = acquire(&f, &p, Access::Read).unwrap().unwrap();
        let bytes = locked_bytes(&p);
        assert_eq!(bytes, [100, 201, 203], "qemu-io -r's bytes");
        // In-process users share one holder, whatever they are.
        let w = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let wl = acquire(&w, &p, Access::Write).unwrap().unwrap();
        let bytes = locked_bytes(&p);
        assert_eq!(bytes, [100, 101, 103, 201, 203], "qemu-io's bytes");
        drop(wl);
        let bytes = locked_bytes(&p);
        assert_eq!(bytes, [100, 201, 203]);
        drop(r);
        assert!(locked_bytes(&p).is_empty());
        assert!(!held().contains(&(f.metadata().unwrap().dev(), f.metadata().unwrap().ino())));
    }
}
