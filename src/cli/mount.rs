//! `ferry mount` and `ferry umount`.

use super::{open, threads_arg};
use anyhow::{bail, Context, Result};
use ferry::block::Format;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct MountArgs {
    /// The guest's disk images, then the mountpoint.
    #[arg(required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Mount DEVICE (as `ferry filesystems` names it: /dev/sda1, /dev/VG/LV) at MOUNTPOINT
    /// (default /) instead of the guest's own layout; repeatable, like guestmount's -m.
    /// OPTIONS: `ro` keeps that filesystem read-only in a --rw mount, `rw` and `defaults` are
    /// accepted, others are ignored with a warning; FSTYPE, if given, must be what the
    /// device holds.
    #[arg(
        short = 'm',
        long = "mount",
        value_name = "DEVICE[:MOUNTPOINT[:OPTIONS[:FSTYPE]]]"
    )]
    pub mounts: Vec<String>,
    /// The operating system to mount when the disks hold several: the device of its /.
    #[arg(long)]
    pub root: Option<String>,
    /// Inspect and mount the guest's layout (the default; for guestmount compatibility).
    #[arg(short = 'i', long = "inspector")]
    pub inspector: bool,
    /// Read-only (the default; accepted for guestmount compatibility).
    #[arg(long, conflicts_with = "rw")]
    pub ro: bool,
    /// Writable: every write goes to a qcow2 overlay over each image (NAME-overlay.qcow2
    /// beside it, continued if it exists), never to the image. An image that is itself an
    /// overlay (a qcow2 with a backing file) is written in place.
    #[arg(short = 'w', long)]
    pub rw: bool,
    /// The overlay of the image in the same position (repeatable, in image order), instead
    /// of NAME-overlay.qcow2; implies --rw.
    #[arg(long, value_name = "PATH")]
    pub overlay: Vec<PathBuf>,
    /// Stay in the foreground (Ctrl-C unmounts); `--no-fork` as in guestmount.
    #[arg(long, visible_alias = "no-fork")]
    pub foreground: bool,
    /// The images' format (raw, qcow2, vmdk), as qemu-img's -f; probed from content otherwise.
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Let other users see the mount (non-root needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// A disk of the guest (repeatable, in order), as guestmount's -a; the positional images
    /// follow them.
    #[arg(short = 'a', long = "add", value_name = "IMAGE")]
    pub add: Vec<PathBuf>,
    /// Mount options, comma-separated, as guestmount passes them to FUSE: allow_other, ro,
    /// rw, and default_permissions (always on: the kernel checks the guest's modes).
    #[arg(short = 'o', long = "option", value_name = "OPTION[,OPTION]")]
    pub options: Vec<String>,
    /// Write the daemon's process id here once the mount is ready (removed at unmount).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Threads answering large file reads side by side, 1 to 256 (started when reads need
    /// them; two more read the kernel's requests).
    #[arg(long, default_value_t = 4, value_parser = threads_arg)]
    pub threads: usize,
    /// Where the background daemon writes its log (default: nowhere).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Read-only: serve the images even while another process writes them (qemu-img's -U);
    /// what is read may be inconsistent.
    #[arg(short = 'U', long = "force-share", conflicts_with_all = ["rw", "overlay"])]
    pub force_share: bool,
    /// Internal: this process is the daemon started by `ferry mount`.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

#[derive(clap::Args)]
pub(crate) struct UmountArgs {
    pub mountpoint: PathBuf,
    /// Detach now even if files under it are open (umount -l).
    #[arg(short = 'l', long)]
    pub lazy: bool,
}

/// `-o` options: (allow_other, ro, rw) asked for.
fn fuse_options(opts: &[String]) -> Result<(bool, bool, bool)> {
    let (mut allow_other, mut ro, mut rw) = (false, false, false);
    for o in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        match o {
            "allow_other" => allow_other = true,
            "ro" => ro = true,
            "rw" => rw = true,
            "default_permissions" => {}
            _ => bail!(
                "mount option `{o}` is not supported (known: allow_other, ro, rw, \
                 default_permissions)"
            ),
        }
    }
    if ro && rw {
        bail!("-o ro and -o rw exclude each other");
    }
    Ok((allow_other, ro, rw))
}

pub(crate) fn mount(mut args: MountArgs) -> Result<()> {
    use ferry::mount::{self, daemon};
    let (allow_other, ro, rw) = fuse_options(&args.options)?;
    if ro && (args.rw || !args.overlay.is_empty()) {
        bail!("-o ro and --rw exclude each other");
    }
    args.allow_other |= allow_other;
    args.rw |= rw;
    let Some((mountpoint, positional)) = args.paths.split_last() else {
        bail!("give the image(s), then the mountpoint");
    };
    let images: Vec<PathBuf> = args.add.iter().chain(positional).cloned().collect();
    if images.is_empty() {
        bail!("give the image(s) (or -a IMAGE), then the mountpoint");
    }
    let images = images.as_slice();
    // Checked here too so that the common mistakes get their message before anything starts.
    mount::check(mountpoint)?;
    // In the background, the daemon is forked once mounted (`daemon`); a process that already
    // runs threads cannot fork safely and starts itself again instead.
    let fork = !args.foreground && !args.daemon_child;
    if fork && !daemon::single_threaded() {
        return respawn();
    }
    let writable = args.rw || !args.overlay.is_empty();
    let mut edits = None;
    let disks = if writable {
        let e = ferry::block::overlay::EditSet::open(images, &args.overlay)?;
        let disks = e.disks();
        edits = Some(e);
        disks
    } else {
        images
            .iter()
            .map(|p| open(p, args.format).with_context(|| format!("opening {}", p.display())))
            .collect::<Result<Vec<_>>>()?
    };
    let mut guest = ferry::guest::Guest::open(&disks)?;
    let specs = args
        .mounts
        .iter()
        .map(|m| MountSpec::parse(m))
        .collect::<Result<Vec<_>>>()?;
    for m in &specs {
        m.check_fstype(&guest)?;
    }
    let layout: Vec<String> = specs.iter().map(|m| m.layout()).collect();
    let mut view = guest.view(&layout, args.root.as_deref())?;
    if writable {
        let devices: Vec<String> = view
            .devices
            .iter()
            .filter(|d| !specs.iter().any(|m| &m.device == *d && m.read_only))
            .cloned()
            .collect();
        if devices.is_empty() {
            bail!("--rw, but every filesystem of the mount is given with -m as ro");
        }
        drop(view);
        let notes = guest.make_writable(&devices);
        if notes.len() == devices.len() {
            bail!(
                "nothing in this guest can be written:\n  {}",
                notes.join("\n  ")
            );
        }
        for n in &notes {
            eprintln!("ferry: {n}");
        }
        view = guest.view(&layout, args.root.as_deref())?;
        if let Some(e) = edits.as_mut() {
            for line in e.keep() {
                eprintln!("ferry: {line}");
            }
        }
    }
    log::info!("mounting {} at {}", view.device, mountpoint.display());
    let opts = mount::Options {
        fsname: format!(
            "{}:{}",
            std::fs::canonicalize(&images[0])
                .unwrap_or_else(|_| images[0].clone())
                .display(),
            view.device
        ),
        threads: args.threads,
        allow_other: args.allow_other,
        writable,
    };
    // Absolute: the daemon leaves the working directory when it detaches.
    let user_pid = match &args.pid_file {
        Some(p) => Some(std::path::absolute(p).context("the --pid-file path")?),
        None => None,
    };
    // Named before mounting: resolving the mountpoint afterwards would ask the mount itself.
    let mut pid_file = daemon::PidFile::new(mountpoint);
    let published = view
        .facts
        .as_ref()
        .and_then(|f| ferry::fix::facts::publish(mountpoint, f));
    let write_pids = |pid_file: &mut daemon::PidFile, pid: u32| -> Result<()> {
        pid_file.write(pid)?;
        // Before `ferry mount` returns, so the file is there when it does.
        if let Some(p) = &user_pid {
            std::fs::write(p, format!("{pid}\n"))
                .with_context(|| format!("cannot write the pid file {}", p.display()))?;
        }
        Ok(())
    };
    let session = mount::mount(view.fs, mountpoint, &opts)?;
    if fork {
        match daemon::fork_daemon(args.log.as_deref())? {
            Some(daemon::Fork::Parent(pid)) => {
                if let Err(e) = write_pids(&mut pid_file, pid) {
                    log::warn!("{e:#}");
                }
                // Exits without running destructors: the daemon now owns the mount, the
                // images and the overlays (dropping the session here would unmount it).
                std::process::exit(0);
            }
            // The command wrote it, and exits; the daemon removes it when it ends.
            Some(daemon::Fork::Daemon) => pid_file.adopt(),
            None => {
                // Threads appeared while opening the guest: the daemon cannot be forked, so
                // unmount, let go of the images and start one that opens everything itself.
                drop(session);
                if let Some(p) = published {
                    let _ = std::fs::remove_file(p);
                }
                drop(guest);
                drop(edits);
                return respawn();
            }
        }
    } else {
        if let Err(e) = write_pids(&mut pid_file, std::process::id()) {
            log::warn!("{e:#}");
        }
        if args.daemon_child {
            if let Err(e) = daemon::detach(args.log.as_deref()) {
                log::warn!("cannot detach: {e}");
            }
        }
    }
    log::debug!("serving {}", mountpoint.display());
    daemon::unmount_on_signal(mountpoint);
    let r = session.serve();
    if let Some(p) = published {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = &user_pid {
        let _ = std::fs::remove_file(p);
    }
    drop(pid_file);
    r?;
    if let Some(e) = edits {
        e.finish().context("completing the overlays")?;
    }
    Ok(())
}

/// Starts `ferry mount … --daemon-child`, which opens and mounts everything itself, and waits
/// until it says the mount is ready: for a process that cannot fork safely.
fn respawn() -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the ferry executable")?;
    let mut child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    child_args.push("--daemon-child".into());
    match ferry::mount::daemon::spawn_and_wait(&exe, &child_args) {
        Ok(_) => Ok(()),
        // The daemon has already said why on our stderr.
        Err(ferry::mount::Error::Daemon(_)) => std::process::exit(1),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn umount(a: UmountArgs) -> Result<()> {
    ferry::mount::daemon::umount(&a.mountpoint, a.lazy).map_err(Into::into)
}

/// One `-m` argument, as guestmount takes it: `DEVICE[:MOUNTPOINT[:OPTIONS[:FSTYPE]]]`.
#[derive(Debug, PartialEq, Eq)]
struct MountSpec {
    device: String,
    mountpoint: String,
    read_only: bool,
    fstype: Option<String>,
}

impl MountSpec {
    fn parse(s: &str) -> Result<MountSpec> {
        let mut parts = s.splitn(4, ':');
        let device = parts.next().unwrap_or_default().to_string();
        if device.is_empty() {
            bail!("-m {s}: no device before the first ':'");
        }
        let mountpoint = match parts.next() {
            None | Some("") => "/".to_string(),
            Some(m) if m.starts_with('/') => m.to_string(),
            Some(m) => bail!("-m {s}: the mountpoint {m:?} is not an absolute path"),
        };
        let mut read_only = false;
        for o in parts.next().unwrap_or_default().split(',') {
            match o {
                "" | "rw" | "defaults" => {}
                "ro" => read_only = true,
                other => log::warn!("-m {s}: mount option {other:?} ignored"),
            }
        }
        let fstype = parts.next().filter(|t| !t.is_empty()).map(str::to_string);
        Ok(MountSpec {
            device,
            mountpoint,
            read_only,
            fstype,
        })
    }

    /// The `DEVICE:MOUNTPOINT` form the guest's view takes.
    fn layout(&self) -> String {
        format!("{}:{}", self.device, self.mountpoint)
    }

    /// A filesystem type given with -m must be the one the device holds (as mount -t would
    /// fail on another).
    fn check_fstype(&self, guest: &ferry::guest::Guest) -> Result<()> {
        let Some(want) = &self.fstype else {
            return Ok(());
        };
        let found = guest
            .inspection
            .filesystems
            .iter()
            .find(|f| f.device == self.device)
            .map(|f| f.fstype.as_str());
        match found {
            Some(f) if f == want || (want.starts_with("ext") && f.starts_with("ext")) => Ok(()),
            Some(f) => bail!("-m {}: {} holds {f}, not {want}", self.device, self.device),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MountSpec;

    #[test]
    fn guestmount_style_mount_specs() {
        let m = MountSpec::parse("/dev/sda1").unwrap();
        assert_eq!((m.mountpoint.as_str(), m.read_only), ("/", false));
        let m = MountSpec::parse("/dev/sda1:/:ro").unwrap();
        assert_eq!(
            (m.device.as_str(), m.mountpoint.as_str(), m.read_only),
            ("/dev/sda1", "/", true)
        );
        let m = MountSpec::parse("/dev/vg/lv:/var:rw,noatime:xfs").unwrap();
        assert_eq!(m.mountpoint, "/var");
        assert!(!m.read_only);
        assert_eq!(m.fstype.as_deref(), Some("xfs"));
        assert_eq!(m.layout(), "/dev/vg/lv:/var");
        assert!(MountSpec::parse(":/").is_err());
        assert!(MountSpec::parse("/dev/sda1:var").is_err());
    }
}
