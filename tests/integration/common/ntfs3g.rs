//! ntfs-3g mounts for tests that use it as the NTFS oracle or to fill NTFS images.

use super::kernel;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An ntfs-3g mount, unmounted on drop (retried while busy, then lazily).
pub(crate) struct Ntfs3g(pub PathBuf);

impl Ntfs3g {
    pub(crate) fn mount(img: &Path, mnt: &Path, opts: &str) -> Ntfs3g {
        Self::mount_with(img, mnt, opts, &[])
    }

    /// `mount` with a clock set to `at` ("@2019-06-01 12:00:00") through libfaketime
    /// (`faketime_lib`), so that the times ntfs-3g writes are that date's.
    pub(crate) fn mount_at(img: &Path, mnt: &Path, opts: &str, lib: &Path, at: &str) -> Ntfs3g {
        let preload = lib.as_os_str().to_str().unwrap();
        Self::mount_with(img, mnt, opts, &[("LD_PRELOAD", preload), ("FAKETIME", at)])
    }

    fn mount_with(img: &Path, mnt: &Path, opts: &str, env: &[(&str, &str)]) -> Ntfs3g {
        std::fs::create_dir_all(mnt).unwrap();
        // ntfs-3g daemonizes once mounted; its stdio goes nowhere so nothing waits on it.
        let status = Command::new("timeout")
            .envs(env.iter().copied())
            .arg("60")
            .arg("ntfs-3g")
            .arg("-o")
            .arg(opts)
            .arg(img)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "ntfs-3g -o {opts} {}: {status}",
            img.display()
        );
        Ntfs3g(mnt.to_path_buf())
    }
}

impl Drop for Ntfs3g {
    fn drop(&mut self) {
        for _ in 0..50 {
            if kernel::run_bounded(Command::new("umount").arg(&self.0)).is_ok() {
                // The daemon flushes and exits after the unmount; give it a moment.
                wait_unmounted(&self.0);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// libfaketime's preload library (Debian's libfaketime package), if installed. The
/// `faketime` wrapper itself is not used: it waits for the daemon ntfs-3g forks.
pub(crate) fn faketime_lib() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// Waits (bounded) until no ntfs-3g process still holds the mount's image: ntfs-3g writes
/// the volume back after umount returns.
fn wait_unmounted(mnt: &Path) {
    let needle = mnt.as_os_str().as_bytes().to_vec();
    for _ in 0..100 {
        let busy = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| c.starts_with(b"ntfs-3g") && c.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        });
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
