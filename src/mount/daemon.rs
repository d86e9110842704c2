//! Running a mount in the background and stopping it again.
//!
//! `ferry mount` (without `-f`) forks itself (or, if it already runs threads, starts itself
//! again with `--daemon-child`) as a daemon in its own session;
//! the daemon says "ready" on its stdout once the kernel has the mount, and only then does the
//! command return, so `ferry mount … && ls MNT` always works. Each daemon leaves a pid file
//! named after its mountpoint, which is how `ferry umount` knows whom to wait for.
#![allow(unsafe_code)] // fork, setsid and dup2 of the daemon; each block says why it is sound.

use super::{mounted_at, which, Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the daemon prints on its stdout when the mount is up.
pub const READY: &str = "ferry-mount-ready";

/// How long `ferry umount` waits for the daemon to exit after the unmount.
pub const EXIT_WAIT: Duration = Duration::from_secs(30);

fn runtime_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/ferry");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("ferry"),
        _ => std::env::temp_dir().join(format!("ferry-{uid}")),
    }
}

/// The pid file of the daemon serving `mountpoint` (named by a hash of the canonical path, as
/// paths can be longer than a file name).
pub fn pid_file(mountpoint: &Path) -> PathBuf {
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    // FNV-1a: stable across builds, unlike std's hasher.
    let h = canon
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    runtime_dir().join(format!("{h:016x}.pid"))
}

/// Records this process as the daemon of `mountpoint`; the file goes away when the value drops.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(mountpoint: &Path) -> Result<Self> {
        let path = pid_file(mountpoint);
        let io = |source| Error::Io {
            what: "cannot write pid file",
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
        let text = format!("{}\n{}\n", std::process::id(), canon.display());
        std::fs::write(&path, text).map_err(io)?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether this process runs a single thread, from /proc/self/task (false when unknown).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Forks the daemon off this process and, in the parent, waits until it says the mount is
/// ready. The daemon gets the descriptors `spawn_and_wait` gives it (stdin /dev/null, stdout
/// a pipe to us, stderr ours) and a session of its own, and goes on to open the images and
/// mount. Without an exec it skips a second program start (loader, relocations, argument
/// parsing): a few milliseconds of every `ferry mount`. A process that already runs threads
/// is not forked (a lock another thread held would stay held in the child): the caller then
/// uses `spawn_and_wait`.
pub fn fork_and_wait(mountpoint: &Path) -> Result<Forked> {
    if !single_threaded() {
        return Ok(Forked::NotForked);
    }
    let io = |what: &'static str| Error::Io {
        what,
        path: mountpoint.into(),
        source: std::io::Error::last_os_error(),
    };
    let devnull = std::fs::File::open("/dev/null").map_err(|source| Error::Io {
        what: "cannot open",
        path: "/dev/null".into(),
        source,
    })?;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("cannot make a pipe to the mount daemon of"));
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: this process runs one thread (checked above), so no lock is held by a thread
    // the child would lack; the child only continues this thread's program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io("cannot fork the mount daemon of"));
    }
    use std::os::fd::AsRawFd;
    if pid == 0 {
        drop(read_end);
        for (from, to) in [(devnull.as_raw_fd(), 0), (write_end.as_raw_fd(), 1)] {
            // SAFETY: dup2 onto the standard descriptors, from descriptors we own.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(io("cannot set up the descriptors of the mount daemon of"));
            }
        }
        // SAFETY: setsid has no preconditions; the daemon leaves our session so that a
        // terminal hangup or Ctrl-C does not take the mount down.
        unsafe { libc::setsid() };
        return Ok(Forked::Daemon);
    }
    drop(write_end);
    if wait_ready(std::fs::File::from(read_end)) {
        return Ok(Forked::Ready(u32::try_from(pid).unwrap_or_default()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Err(Error::Daemon(format!(
        "it exited ({}) before mounting",
        std::process::ExitStatus::from_raw(status)
    )))
}

/// What `fork_and_wait` did.
pub enum Forked {
    /// In `ferry mount`: the daemon (this pid) has the mount ready.
    Ready(u32),
    /// In the daemon: go on and mount.
    Daemon,
    /// Nothing: the process runs threads and cannot be forked safely.
    NotForked,
}

/// Reads the daemon's stdout until it says the mount is ready (true) or closes it (false).
fn wait_ready(out: impl std::io::Read) -> bool {
    BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l == READY)
}

/// Starts `exe args…` (the same command with `-f` added) as a daemon and waits until it says
/// the mount is ready. Its stderr stays ours until then, so every message about opening the
/// image reaches the user; it then detaches.
pub fn spawn_and_wait(exe: &Path, args: &[std::ffi::OsString]) -> Result<u32> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: setsid is async-signal-safe; the daemon leaves our session so that a terminal
    // hangup or Ctrl-C does not take the mount down.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        what: "cannot start",
        path: exe.into(),
        source,
    })?;
    let pid = child.id();
    if child.stdout.take().is_some_and(wait_ready) {
        return Ok(pid);
    }
    let status = child.wait().map_err(|source| Error::Io {
        what: "cannot wait for",
        path: exe.into(),
        source,
    })?;
    Err(Error::Daemon(format!(
        "it exited ({status}) before mounting"
    )))
}

/// Called by the daemon once mounted: tells the waiting parent, then points stdout and stderr
/// at `log` (or /dev/null), since the terminal they were on may go away.
pub fn detach(log: Option<&Path>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}")?;
    out.flush()?;
    let target = match log {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?,
        None => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    use std::os::fd::AsRawFd;
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors, with a descriptor we own.
        if unsafe { libc::dup2(target.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (so in every thread started after it) and
/// starts a thread that unmounts `mountpoint` when one arrives: the session then ends cleanly
/// instead of leaving a dead mount ("Transport endpoint is not connected") behind.
pub fn unmount_on_signal(mountpoint: &Path) {
    // SAFETY: plain sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialised signal set.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        log::info!("signal {sig}: unmounting {}", mp.display());
        if let Err(e) = unmount(&mp, false) {
            log::warn!("{e}");
        }
    });
}

/// Detaches the mount at `mountpoint`: umount2 when we may, fusermount3 otherwise.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).map_err(|_| Error::Io {
        what: "bad path",
        path: mountpoint.into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EBUSY) => return Err(Error::Busy(mountpoint.into())),
        Some(libc::EPERM) => {}
        _ => {
            return Err(Error::Io {
                what: "cannot unmount",
                path: mountpoint.into(),
                source: err,
            })
        }
    }
    let prog = which("fusermount3").ok_or(Error::NoFusermount)?;
    let mut cmd = Command::new(prog);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(mountpoint).output().map_err(|source| Error::Io {
        what: "cannot run fusermount3 for",
        path: mountpoint.into(),
        source,
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        if msg.contains("busy") {
            return Err(Error::Busy(mountpoint.into()));
        }
        return Err(Error::Daemon(format!("fusermount3 -u: {}", msg.trim())));
    }
    Ok(())
}

/// The pid recorded for `mountpoint`, if its process is still a running ferry.
fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(mountpoint)).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether `pid` is a live process running ferry (not a recycled pid, not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    stat.contains("(ferry)") && state != Some("Z")
}

/// `ferry umount`: unmounts and returns once the daemon serving the mount has exited.
/// Only ferry's own mounts are unmounted: one whose daemon is alive (its pid file names a
/// running ferry), or a FUSE mount whose source ferry wrote (`IMAGE:DEVICE`; its daemon died).
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let Some((fstype, source)) = mounted_at(mountpoint)? else {
        return Err(Error::NotMounted(mountpoint.into()));
    };
    let pid = daemon_pid(mountpoint);
    let fuse = fstype == "fuse" || fstype == "fuse.ferry";
    if !(fuse && (pid.is_some() || fstype == "fuse.ferry" || source.contains(":/dev/"))) {
        return Err(Error::NotOurs {
            path: mountpoint.into(),
            fstype,
            from: source,
        });
    }
    unmount(mountpoint, lazy)?;
    if let Some(pid) = pid {
        let start = Instant::now();
        while alive(pid) {
            if start.elapsed() > EXIT_WAIT {
                return Err(Error::Daemon(format!(
                    "unmounted, but process {pid} did not exit within {} s",
                    EXIT_WAIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}
