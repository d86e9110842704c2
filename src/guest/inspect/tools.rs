//! What is installed: the package manager, the init system, and the guest tools of the
//! hypervisor the guest ran on (which also tell where it comes from).

use super::{Ctx, GuestTool, Kernel, OsInfo};
use crate::fs::files::Kind;
use crate::guest::facts::{family_of, Hypervisor, InitSystem};
use crate::guest::fstab::Entry;

/// Package format and manager, by the package database and the manager's program, falling
/// back on the distribution's release when a tree lacks them (the version decides between
/// Red Hat's up2date, yum and dnf).
pub(super) fn packages(cx: &Ctx, info: &OsInfo) -> (Option<String>, Option<String>) {
    let s = |x: &str| Some(x.to_string());
    let has = |paths: &[&str]| paths.iter().any(|p| cx.exists(p));
    let distro = info.distro.as_deref().unwrap_or("");
    let family = family_of(distro);
    let major = info.major_version.unwrap_or(0);
    if has(&["/var/lib/rpm", "/usr/lib/sysimage/rpm"]) || matches!(family, "rhel" | "suse") {
        let mgr = if has(&["/usr/bin/zypper"]) || family == "suse" {
            "zypper"
        } else if has(&["/usr/bin/dnf", "/usr/bin/dnf-3", "/usr/bin/dnf5"]) {
            "dnf"
        } else if has(&["/usr/bin/yum"]) {
            "yum"
        } else if has(&["/usr/sbin/up2date"]) {
            "up2date"
        } else if distro == "fedora" {
            if major >= 22 {
                "dnf"
            } else {
                "yum"
            }
        } else if family == "rhel" && major >= 8 {
            "dnf"
        } else if family == "rhel" && (major >= 5 || major == 0) {
            "yum"
        } else if family == "rhel" {
            "up2date"
        } else {
            return (s("rpm"), None);
        };
        return (s("rpm"), s(mgr));
    }
    if has(&["/var/lib/dpkg/status"]) || family == "debian" {
        return (s("deb"), s("apt"));
    }
    if has(&["/lib/apk/db/installed", "/etc/apk/world"]) || family == "alpine" {
        return (s("apk"), s("apk"));
    }
    if has(&["/var/lib/pacman"]) || family == "arch" {
        return (s("pacman"), s("pacman"));
    }
    if has(&["/var/db/pkg"]) || distro == "gentoo" {
        return (s("ebuild"), s("portage"));
    }
    (None, None)
}

/// What runs as PID 1. /sbin/init pointing at systemd decides; OpenRC has its runlevels;
/// upstart has /sbin/initctl and job files in /etc/init but no inittab; an inittab means
/// SysV init; systemd installed without the /sbin/init link comes last.
pub(super) fn init_system(cx: &Ctx) -> InitSystem {
    if cx.exists("/sbin/init")
        && cx
            .resolve("/sbin/init")
            .is_some_and(|t| t.contains("systemd"))
    {
        return InitSystem::Systemd;
    }
    if cx.exists("/sbin/openrc")
        || cx.exists("/sbin/openrc-run")
        || cx.kind("/etc/runlevels") == Some(Kind::Dir)
    {
        return InitSystem::Openrc;
    }
    if cx.exists("/sbin/initctl") && cx.is_dir("/etc/init") && !cx.exists("/etc/inittab") {
        return InitSystem::Upstart;
    }
    if cx.exists("/etc/inittab") {
        return InitSystem::Sysvinit;
    }
    if cx.exists("/lib/systemd/systemd") || cx.exists("/usr/lib/systemd/systemd") {
        return InitSystem::Systemd;
    }
    InitSystem::Unknown
}

/// Files that show a hypervisor's guest tools: (tool, hypervisor, path).
const TOOL_FILES: &[(&str, Hypervisor, &str)] = &[
    ("vmware-tools", Hypervisor::Vmware, "/etc/vmware-tools"),
    (
        "vmware-tools",
        Hypervisor::Vmware,
        "/usr/bin/vmware-uninstall-tools.pl",
    ),
    ("vmware-tools", Hypervisor::Vmware, "/usr/lib/vmware-tools"),
    ("open-vm-tools", Hypervisor::Vmware, "/usr/bin/vmtoolsd"),
    ("open-vm-tools", Hypervisor::Vmware, "/usr/sbin/vmtoolsd"),
    ("xe-guest-utilities", Hypervisor::Xen, "/usr/sbin/xe-daemon"),
    (
        "xe-guest-utilities",
        Hypervisor::Xen,
        "/usr/sbin/xe-linux-distribution",
    ),
    (
        "hyperv-daemons",
        Hypervisor::Hyperv,
        "/usr/sbin/hv_kvp_daemon",
    ),
    ("hyperv-daemons", Hypervisor::Hyperv, "/usr/sbin/hypervkvpd"),
    (
        "hyperv-daemons",
        Hypervisor::Hyperv,
        "/usr/sbin/hv_vss_daemon",
    ),
    (
        "virtualbox-additions",
        Hypervisor::Virtualbox,
        "/usr/sbin/VBoxService",
    ),
    (
        "virtualbox-additions",
        Hypervisor::Virtualbox,
        "/usr/bin/VBoxClient",
    ),
];

/// Guest tools found, one entry per tool (the first file that shows it). Xen guests are also
/// recognised by a Xen kernel (`vmlinuz-*xen*`) or by `/dev/xvd*` names in fstab.
pub(super) fn guest_tools(cx: &Ctx, kernels: &[Kernel], fstab: &[Entry]) -> Vec<GuestTool> {
    let mut out: Vec<GuestTool> = Vec::new();
    let mut add = |name: &str, hypervisor, path: String| {
        if !out.iter().any(|t| t.name == name) {
            out.push(GuestTool {
                name: name.into(),
                hypervisor,
                path,
            });
        }
    };
    for (name, hv, path) in TOOL_FILES {
        if cx.exists(path) {
            add(name, *hv, path.to_string());
        }
    }
    for n in cx.list("/opt") {
        if n.starts_with("VBoxGuestAdditions") {
            add(
                "virtualbox-additions",
                Hypervisor::Virtualbox,
                format!("/opt/{n}"),
            );
        }
    }
    for k in kernels {
        if let Some(img) = k.vmlinuz.as_deref().filter(|_| k.version.contains("xen")) {
            add("xen-kernel", Hypervisor::Xen, img.to_string());
        }
    }
    if let Some(e) = fstab.iter().find(|e| e.spec.starts_with("/dev/xvd")) {
        add(
            "xen-disk-names",
            Hypervisor::Xen,
            format!("/etc/fstab:{}", e.line),
        );
    }
    out
}

/// The source hypervisor: VMware tools first (they are removed before any other move),
/// then Xen, Hyper-V, VirtualBox.
pub(super) fn source(tools: &[GuestTool]) -> Hypervisor {
    [
        Hypervisor::Vmware,
        Hypervisor::Xen,
        Hypervisor::Hyperv,
        Hypervisor::Virtualbox,
    ]
    .into_iter()
    .find(|h| tools.iter().any(|t| t.hypervisor == *h))
    .unwrap_or(Hypervisor::Unknown)
}
