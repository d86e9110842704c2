//! Running a mount in the background and stopping it again.
//!
//! `ferry mount` (without `-f`) opens the images and mounts in the foreground, so every
//! message about them reaches the user, and forks the daemon only once the kernel has the mount
//! and its INIT is answered: the command then exits at once, and `ferry mount … && ls MNT`
//! always works (the request waits in /dev/fuse until the daemon reads it). This is what
//! ntfs-3g and libfuse's `fuse_daemonize` after `fuse_mount` do; forking first and waiting for a
//! "ready" line cost a pipe round trip and the copy-on-write faults of a child doing all the
//! work. A process that runs threads is not forked (a lock another thread held would stay held
//! in the child): `ferry mount` then starts itself again with `--daemon-child`, which says
//! "ready" on its stdout once mounted. Each daemon leaves a pid file named after its
//! mountpoint, which is how `ferry umount` knows whom to wait for.
#![allow(unsafe_code)] // fork, setsid and dup2 of the daemon; each block says why it is sound.

use super::{mounted_at, which, Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
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

/// The daemon's entry under the runtime directory for `mountpoint`; the file goes away when
/// the value drops, if it was written.
pub struct PidFile {
    path: PathBuf,
    canon: PathBuf,
    written: bool,
}

impl PidFile {
    /// Names the pid file of `mountpoint`. Called before mounting: once mounted, resolving
    /// the mountpoint would ask the mount itself, which is not served yet.
    pub fn new(mountpoint: &Path) -> Self {
        PidFile {
            path: pid_file(mountpoint),
            canon: std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into()),
            written: false,
        }
    }

    /// Records `pid` as the daemon of the mountpoint.
    pub fn write(&mut self, pid: u32) -> Result<()> {
        let io = |source| Error::Io {
            what: "cannot write pid file",
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = format!("{pid}\n{}\n", self.canon.display());
        std::fs::write(&self.path, text).map_err(io)?;
        self.written = true;
        Ok(())
    }

    /// Takes over a pid file another process (the forking command) writes for us, so that it
    /// is removed when this value drops.
    pub fn adopt(&mut self) {
        self.written = true;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How long `fork_daemon` waits for threads that were joined to leave /proc/self/task: the
/// kernel wakes the joiner before it removes the task.
const THREAD_EXIT_WAIT: Duration = Duration::from_millis(50);

/// Whether this process runs a single thread, from /proc/self/task (false when unknown),
/// allowing threads that were just joined `THREAD_EXIT_WAIT` to be gone.
pub fn single_threaded() -> bool {
    let once = || std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
    let start = Instant::now();
    loop {
        if once() {
            return true;
        }
        if start.elapsed() > THREAD_EXIT_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Which side of `fork_daemon` this is.
pub enum Fork {
    /// The command: the daemon (this pid) serves the mount; exit without running destructors
    /// (they would unmount), with `std::process::exit`.
    Parent(u32),
    /// The daemon: in a session of its own, stdin /dev/null, stdout and stderr to `log` (or
    /// /dev/null, as the terminal they were on may go away). Go on and serve.
    Daemon,
}

/// Forks the daemon of a mount that is up. Refused (`None`) when the process runs threads.
pub fn fork_daemon(log: Option<&Path>) -> Result<Option<Fork>> {
    if !single_threaded() {
        return Ok(None);
    }
    let io = |what: &'static str, path: &Path| Error::Io {
        what,
        path: path.into(),
        source: std::io::Error::last_os_error(),
    };
    let devnull = Path::new("/dev/null");
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(devnull)
        .map_err(|source| Error::Io {
            what: "cannot open",
            path: devnull.into(),
            source,
        })?;
    let out = match log {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|source| Error::Io {
                what: "cannot open the log",
                path: p.into(),
                source,
            })?,
        None => null.try_clone().map_err(|source| Error::Io {
            what: "cannot open",
            path: devnull.into(),
            source,
        })?,
    };
    let _ = std::io::stdout().flush();
    // SAFETY: this process runs one thread (checked above), so no lock is held by a thread
    // the child would lack; the child only continues this thread's program.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io("cannot fork the mount daemon for", Path::new("/")));
    }
    if pid > 0 {
        return Ok(Some(Fork::Parent(u32::try_from(pid).unwrap_or_default())));
    }
    use std::os::fd::AsRawFd;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (out.as_raw_fd(), 1),
        (out.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 onto the standard descriptors, from descriptors we own.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io(
                "cannot set up the descriptors of the mount daemon",
                devnull,
            ));
        }
    }
    // SAFETY: setsid has no preconditions; the daemon leaves our session so that a terminal
    // hangup or Ctrl-C does not take the mount down.
    unsafe { libc::setsid() };
    Ok(Some(Fork::Daemon))
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
