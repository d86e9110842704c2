//! OS detection over a guest's whole tree, in the manner of virt-inspector: what the
//! operating system is, its release, hostname, architecture, package manager, init system,
//! installed kernels and their virtio drivers, boot loader and the guest tools of the
//! hypervisor it came from.
//!
//! The tree is untrusted: every read has a size limit, every directory listing a length cap,
//! every path is resolved chroot-style inside the guest (at most 40 symlinks, `..` stops at
//! the root). Nothing here fails: what cannot be told stays unknown and anything odd (a
//! symlink loop, an oversized file, a damaged ELF header) becomes a line of
//! [`OsInfo::warnings`].

pub mod boot;
pub mod elf;
pub mod kernel;
mod osinfo;
pub mod release;
pub mod tools;
pub mod windows;

use super::fstab::{self, Spec};
use crate::fs::files;
use crate::fs::files::{FileTree, Kind};
use crate::guest::facts::{Bootloader, Facts, Hypervisor, InitSystem, Os, Root, Version};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Names taken from one directory listing; a guest directory longer than this is not one
/// inspection needs to see whole.
pub const MAX_LIST: usize = 4096;

/// Warnings kept; past this they are counted.
pub const MAX_WARNINGS: usize = 200;

/// An fstab is a few kilobytes; 4 MiB leaves room for the entry cap to be what stops a
/// hostile one.
pub const MAX_FSTAB: u64 = 4 << 20;

/// Small identity files (hostname, sysconfig/network).
const MAX_SMALL: u64 = 64 * 1024;

/// The guest's boot loader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Boot {
    pub loader: Bootloader,
    /// The canonical guest path of its configuration (`/boot/grub2/grub.cfg`).
    pub config: Option<String>,
    /// Whether the guest boots by UEFI (an EFI system partition with a boot loader, or one
    /// in fstab).
    pub efi: bool,
    /// The volume holding `config` when it is not in the guest's tree: a Windows guest's EFI
    /// system partition or "System Reserved" partition has no drive letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Boot Loader Specification entries (`loader/entries/*.conf`): the menu of grub2 with
    /// blscfg (Fedora, RHEL/CentOS 8+) and of systemd-boot, whose grub.cfg names no kernel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<BootEntry>,
}

/// One Boot Loader Specification entry, as its keys say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootEntry {
    /// The entry file, canonical (`/boot/loader/entries/<machine-id>-<release>.conf`).
    pub path: String,
    pub title: Option<String>,
    /// The kernel release (`version`).
    pub version: Option<String>,
    /// `linux` as written: a path on the filesystem holding the entries.
    pub linux: Option<String>,
    /// The guest path of the kernel image that `linux` names, where it exists.
    pub kernel: Option<String>,
    /// `initrd` lines, grub variables (`$tuned_initrd`) left out.
    pub initrd: Vec<String>,
    /// `options`, as written (grub2 expands `$kernelopts` from grubenv).
    pub options: Option<String>,
    /// Whether this is the entry booted by default: grubenv's `saved_entry` for grub2,
    /// loader.conf's `default` for systemd-boot.
    pub default: bool,
}

/// Whether a kernel can use a driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// No modules directory to look in.
    #[default]
    Unknown,
    /// A module file (`.ko`, `.ko.xz`, `.ko.gz`, `.ko.zst`).
    Module,
    /// Built into the kernel (listed in modules.builtin).
    Builtin,
    Missing,
}

impl Driver {
    pub fn available(self) -> bool {
        matches!(self, Driver::Module | Driver::Builtin)
    }
}

/// One installed kernel: a /boot image and its /lib/modules directory, paired by version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kernel {
    /// The kernel release (`uname -r`): the modules directory's name, else the image's suffix.
    pub version: String,
    /// The image (`/boot/vmlinuz-…`).
    pub vmlinuz: Option<String>,
    /// The modules directory (`/lib/modules/…`, canonical).
    pub modules: Option<String>,
    pub virtio_blk: Driver,
    pub virtio_net: Driver,
    pub virtio_scsi: Driver,
    pub virtio_pci: Driver,
    /// A "xenified" kernel that runs only as a Xen paravirtual guest (its config has
    /// CONFIG_X86_XEN or CONFIG_X86_64_XEN, as virt-v2v checks; without a config, RHEL 5's
    /// `el5xen` and SUSE's `-xen` releases): it does not boot on KVM at all.
    pub xen_pv_only: bool,
}

/// Guest tools of a hypervisor (or other evidence of it), found by one of their files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTool {
    /// `vmware-tools`, `open-vm-tools`, `xe-guest-utilities`, `hyperv-daemons`,
    /// `virtualbox-additions`; for Xen also `xen-kernel` and `xen-disk-names` (fstab).
    pub name: String,
    pub hypervisor: Hypervisor,
    /// The guest path that showed it (`/etc/fstab:LINE` for disk names).
    pub path: String,
}

/// What inspection found in one root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsInfo {
    #[serde(rename = "type")]
    pub os_type: Os,
    /// os-release `ID` style: `rhel`, `centos`, `debian`, `ubuntu`, `sles`, `opensuse-leap`…
    pub distro: Option<String>,
    pub product_name: Option<String>,
    pub version: Option<Version>,
    pub major_version: Option<u32>,
    pub minor_version: Option<u32>,
    /// libosinfo's short ID (`debian12`, `win2k22`), named as virt-inspector names it.
    pub osinfo: Option<String>,
    pub hostname: Option<String>,
    /// `x86_64`, `i386`, `aarch64`, `armv7l`, `ppc64le`, `s390x`, `riscv64`…
    pub arch: Option<String>,
    /// `rpm`, `deb`, `apk`, `pacman`, `ebuild`.
    pub package_format: Option<String>,
    /// `dnf`, `yum`, `up2date`, `zypper`, `apt`, `apk`, `pacman`, `portage`.
    pub package_management: Option<String>,
    pub init: InitSystem,
    pub kernels: Vec<Kernel>,
    pub bootloader: Boot,
    pub tools: Vec<GuestTool>,
    /// The hypervisor the guest was last set up for, from its tools, kernels and device names.
    pub source: Hypervisor,
    /// Windows: the system root directory as spelled on disk (`/Windows`).
    pub systemroot: Option<String>,
    /// Windows: what the registry tells (build, edition, drive letters, virtio drivers).
    pub windows: Option<windows::WindowsInfo>,
    /// /etc/fstab's entries (its warnings are in `warnings`, prefixed with the path). Not in
    /// the JSON: `ferry inspect` shows each line resolved to its device instead.
    #[serde(skip_serializing, default)]
    pub fstab: Vec<fstab::Entry>,
    pub warnings: Vec<String>,
}

impl OsInfo {
    /// The kernels that can boot: those with a /boot image (a modules directory alone is
    /// not one).
    pub fn booting_kernels(&self) -> impl Iterator<Item = &Kernel> {
        self.kernels.iter().filter(|k| k.vmlinuz.is_some())
    }

    /// A Linux guest with at least one bootable kernel, all of them Xen PV-only builds: it
    /// cannot start on KVM whatever is fixed (virt-v2v: "only Xen kernels are installed").
    pub fn only_xen_pv_kernels(&self) -> bool {
        self.os_type == Os::Linux
            && self.booting_kernels().next().is_some()
            && self.booting_kernels().all(|k| k.xen_pv_only)
    }
}

/// Inspection's view of the tree: bounded, never-failing reads that turn trouble into
/// warnings.
pub(crate) struct Ctx<'a> {
    tree: &'a dyn FileTree,
    warnings: RefCell<Vec<String>>,
    dropped: RefCell<usize>,
}

impl<'a> Ctx<'a> {
    fn new(tree: &'a dyn FileTree) -> Self {
        Ctx {
            tree,
            warnings: RefCell::new(Vec::new()),
            dropped: RefCell::new(0),
        }
    }

    pub(crate) fn warn(&self, w: String) {
        let mut ws = self.warnings.borrow_mut();
        if ws.contains(&w) {
            return;
        }
        if ws.len() < MAX_WARNINGS {
            ws.push(w);
        } else {
            let mut d = self.dropped.borrow_mut();
            *d = d.saturating_add(1);
        }
    }

    fn finish(self) -> Vec<String> {
        let mut ws = self.warnings.into_inner();
        let n = self.dropped.into_inner();
        if n > 0 {
            ws.push(format!("{n} more warnings not shown"));
        }
        ws
    }

    /// Warns about `e` met on `path`, naming `path` first (once: most errors name it).
    fn error(&self, path: &str, e: files::Error) {
        let msg = e.to_string();
        if msg.starts_with(&format!("{path}: ")) {
            self.warn(msg);
        } else {
            self.warn(format!("{path}: {msg}"));
        }
    }

    /// The canonical path of `path` (all symlinks followed inside the guest).
    pub(crate) fn resolve(&self, path: &str) -> Option<String> {
        match self.tree.resolve(path) {
            Ok(p) => Some(p),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// What `path` is after following symlinks; `None` if missing (or dangling).
    pub(crate) fn kind(&self, path: &str) -> Option<Kind> {
        let p = self.resolve(path)?;
        match self.tree.lstat(&p) {
            Ok(m) => m.map(|m| m.kind),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    pub(crate) fn exists(&self, path: &str) -> bool {
        self.kind(path).is_some()
    }

    pub(crate) fn is_dir(&self, path: &str) -> bool {
        self.kind(path) == Some(Kind::Dir)
    }

    /// The bytes of the regular file `path` (symlinks followed), at most `limit`.
    pub(crate) fn read(&self, path: &str, limit: u64) -> Option<Vec<u8>> {
        let p = self.resolve(path)?;
        match self.tree.lstat(&p) {
            Ok(None) => return None,
            Ok(Some(m)) if m.kind != Kind::File => {
                self.warn(format!("{path}: not a regular file"));
                return None;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                self.error(path, e);
                return None;
            }
        }
        match self.tree.read(&p, limit) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// Like [`Ctx::read`], as text (invalid UTF-8 replaced, with a warning).
    pub(crate) fn read_text(&self, path: &str, limit: u64) -> Option<String> {
        let d = self.read(path, limit)?;
        Some(match String::from_utf8(d) {
            Ok(s) => s,
            Err(e) => {
                self.warn(format!("{path}: not UTF-8; invalid bytes replaced"));
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        })
    }

    /// The first `len` bytes of the regular file `path` and its size.
    pub(crate) fn read_head(&self, path: &str, len: usize) -> Option<(Vec<u8>, u64)> {
        let p = self.resolve(path)?;
        let size = match self.tree.lstat(&p) {
            Ok(Some(m)) if m.kind == Kind::File => m.size,
            Ok(_) => return None,
            Err(e) => {
                self.error(path, e);
                return None;
            }
        };
        match self.tree.read_head(&p, len) {
            Ok(d) => Some((d, size)),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// Names in the directory `path` (empty if it is not one), at most [`MAX_LIST`].
    pub(crate) fn list(&self, path: &str) -> Vec<String> {
        if !self.is_dir(path) {
            return Vec::new();
        }
        match self.tree.list(path) {
            Ok(mut names) => {
                if names.len() > MAX_LIST {
                    self.warn(format!(
                        "{path}: {} entries, only the first {MAX_LIST} looked at",
                        names.len()
                    ));
                    names.truncate(MAX_LIST);
                }
                names
            }
            Err(e) => {
                self.error(path, e);
                Vec::new()
            }
        }
    }
}

/// `dir`'s entry named `name` in any letter case (Windows paths), as spelled on disk.
fn find_ci(cx: &Ctx, dir: &str, name: &str) -> Option<String> {
    cx.list(dir)
        .into_iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(|n| crate::fs::files::child(dir, &n))
}

/// The Windows system root (`/Windows` containing `System32`, any case).
fn windows_root(cx: &Ctx) -> Option<String> {
    let root = find_ci(cx, "/", "windows").filter(|p| cx.is_dir(p))?;
    let sys32 = find_ci(cx, &root, "system32")?;
    cx.is_dir(&sys32).then_some(root)
}

/// Cheap test of whether `tree` looks like an operating system's root: a Linux `/etc` with
/// `/bin`, `/usr/bin` or `/sbin`, or a Windows system directory.
pub fn is_root(tree: &dyn FileTree) -> bool {
    let cx = Ctx::new(tree);
    (cx.is_dir("/etc") && ["/bin", "/usr/bin", "/sbin"].iter().any(|p| cx.is_dir(p)))
        || windows_root(&cx).is_some()
}

/// The host name: /etc/hostname (Debian, systemd), /etc/HOSTNAME (SUSE), `HOSTNAME=` in
/// /etc/sysconfig/network (RHEL ≤ 6), `hostname=` in /etc/conf.d/hostname (Gentoo, OpenRC).
fn hostname(cx: &Ctx) -> Option<String> {
    let first_word = |t: String| {
        t.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
    };
    for p in ["/etc/hostname", "/etc/HOSTNAME"] {
        if let Some(h) = cx.read_text(p, MAX_SMALL).and_then(first_word) {
            return Some(h);
        }
    }
    for (p, key) in [
        ("/etc/sysconfig/network", "HOSTNAME"),
        ("/etc/conf.d/hostname", "hostname"),
    ] {
        if let Some(t) = cx.read_text(p, MAX_SMALL) {
            let kv = release::assignments(&t);
            if let Some((_, v)) = kv.iter().rev().find(|(k, v)| k == key && !v.is_empty()) {
                return Some(v.clone());
            }
        }
    }
    None
}

/// Programs nearly every Linux guest has, whose ELF header tells the architecture.
const ARCH_PROBES: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/usr/bin/bash",
    "/bin/ls",
    "/usr/bin/ls",
    "/bin/busybox",
    "/sbin/init",
    "/usr/bin/env",
];

/// The architecture of the first probe program with a usable ELF header.
fn arch(cx: &Ctx) -> Option<String> {
    for p in ARCH_PROBES {
        let Some((head, size)) = cx.read_head(p, elf::HEADER_LEN) else {
            continue;
        };
        match elf::Header::parse(&head, Some(size)).and_then(|h| h.arch()) {
            Ok(a) => return Some(a.to_string()),
            // A script (/bin/sh on some systems) is no evidence either way.
            Err(elf::Error::NotElf) => {}
            Err(e) => cx.warn(format!("{p}: {e}")),
        }
    }
    None
}

/// Reads and parses /etc/fstab; its warnings go to the context.
fn read_fstab(cx: &Ctx) -> Vec<fstab::Entry> {
    let Some(data) = cx.read("/etc/fstab", MAX_FSTAB) else {
        return Vec::new();
    };
    let f = fstab::parse(&data);
    for w in f.warnings {
        cx.warn(format!("/etc/fstab: {w}"));
    }
    f.entries
}

/// Inspects the guest tree. Never fails; see the module documentation.
pub fn inspect(tree: &dyn FileTree) -> OsInfo {
    let cx = Ctx::new(tree);
    let mut info = OsInfo::default();
    if let Some(root) = windows_root(&cx) {
        info.os_type = Os::Windows;
        info.distro = Some("windows".into());
        windows::inspect(&cx, &root, &mut info);
        info.osinfo = osinfo::short_id(&info);
        info.systemroot = Some(root);
        info.warnings = cx.finish();
        return info;
    }
    let rel = release::detect(&cx);
    info.distro = rel.distro;
    info.product_name = rel.product_name;
    info.major_version = rel.version.as_ref().map(Version::major);
    info.minor_version = rel.version.as_ref().map(Version::minor);
    info.version = rel.version;
    info.fstab = read_fstab(&cx);
    if info.distro.is_some()
        || !info.fstab.is_empty()
        || cx.exists("/etc/fstab")
        || cx.exists("/bin/sh")
        || (cx.is_dir("/etc") && ["/bin", "/usr/bin", "/sbin"].iter().any(|p| cx.is_dir(p)))
    {
        info.os_type = Os::Linux;
    }
    info.osinfo = osinfo::short_id(&info);
    info.hostname = hostname(&cx);
    info.arch = arch(&cx);
    (info.package_format, info.package_management) = tools::packages(&cx, &info);
    info.init = tools::init_system(&cx);
    info.kernels = kernel::kernels(&cx);
    info.bootloader = boot::detect(&cx, &info.fstab);
    info.tools = tools::guest_tools(&cx, &info.kernels, &info.fstab);
    info.source = tools::source(&info.tools);
    info.warnings = cx.finish();
    info
}

impl From<&OsInfo> for Facts {
    /// The OS part of the facts rules are evaluated against; the device map and target are
    /// left at their defaults.
    fn from(i: &OsInfo) -> Facts {
        let root = i.fstab.iter().rev().find(|e| e.file == "/" && !e.is_swap());
        let root = root.map(|e| {
            let mut r = Root {
                spec: e.spec.clone(),
                fstype: Some(e.vfstype.clone()),
                ..Root::default()
            };
            match e.source() {
                Spec::Uuid(u) => r.uuid = Some(u),
                Spec::Label(l) => r.label = Some(l),
                Spec::Path(p) => r.device = Some(p),
                Spec::PartUuid(_) | Spec::PartLabel(_) | Spec::Other(_) => {}
            }
            r
        });
        let mut f = Facts {
            os: i.os_type,
            distro: i.distro.clone().unwrap_or_default(),
            version: i.version.clone(),
            init: i.init,
            bootloader: i.bootloader.loader,
            source: i.source,
            arch: i.arch.clone(),
            root,
            xen_pv_only: i.only_xen_pv_kernels(),
            ..Facts::default()
        };
        f.complete();
        f
    }
}
