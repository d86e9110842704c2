//! A small detector that fills [`Facts`] from the files of a guest tree: os-release (and the
//! older release files), the init system, the boot loader, hints of the source hypervisor,
//! and the root filesystem from fstab. It reads a handful of small files and never fails:
//! what it cannot tell stays unknown. Guest inspection (issue 5) replaces it with facts taken
//! from the disks themselves (filesystem UUIDs, the real disk order); until then `--facts`
//! supplies what a directory cannot show, such as the device map.

use super::facts::{Bootloader, Facts, Hypervisor, InitSystem, Os, Root, Version};
use super::tree::{FileTree, Kind};

/// Release files are a few hundred bytes; anything bigger is not one.
const MAX_RELEASE: u64 = 64 * 1024;
const MAX_FSTAB: u64 = 1 << 20;

fn read(tree: &dyn FileTree, path: &str, limit: u64) -> Option<String> {
    let p = tree.resolve(path).ok()?;
    let data = tree.read(&p, limit).ok()?;
    Some(String::from_utf8_lossy(&data).into_owned())
}

fn kind(tree: &dyn FileTree, path: &str) -> Option<Kind> {
    let p = tree.resolve(path).ok()?;
    tree.lstat(&p).ok().flatten().map(|m| m.kind)
}

fn exists(tree: &dyn FileTree, path: &str) -> bool {
    kind(tree, path).is_some()
}

fn any_named(tree: &dyn FileTree, dir: &str, pred: impl Fn(&str) -> bool) -> bool {
    tree.list(dir)
        .map(|names| names.iter().any(|n| pred(n)))
        .unwrap_or(false)
}

/// `KEY=value` pairs of an os-release file, unquoted.
fn os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Distro and version from the pre-os-release files (RHEL ≤ 6, SLES ≤ 11, Debian ≤ 6).
fn legacy_release(tree: &dyn FileTree) -> Option<(String, Option<Version>)> {
    if let Some(t) = read(tree, "/etc/redhat-release", MAX_RELEASE) {
        let lower = t.to_lowercase();
        let distro = if lower.contains("centos") {
            "centos"
        } else if lower.contains("scientific") {
            "scientificlinux"
        } else if lower.contains("fedora") {
            "fedora"
        } else if lower.contains("oracle") {
            "ol"
        } else {
            "rhel"
        };
        let version = lower
            .split("release")
            .nth(1)
            .and_then(|r| Version::parse(r.trim()));
        return Some((distro.into(), version));
    }
    if let Some(t) = read(tree, "/etc/SuSE-release", MAX_RELEASE) {
        let kv: Vec<(String, String)> = t
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |k: &str| kv.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let distro = if t.to_lowercase().contains("opensuse") {
            "opensuse"
        } else {
            "sles"
        };
        let version = get("VERSION").map(|v| match get("PATCHLEVEL") {
            Some(p) => format!("{v}.{p}"),
            None => v,
        });
        return Some((distro.into(), version.and_then(|v| Version::parse(&v))));
    }
    if let Some(t) = read(tree, "/etc/alpine-release", MAX_RELEASE) {
        return Some(("alpine".into(), Version::parse(&t)));
    }
    if let Some(t) = read(tree, "/etc/lsb-release", MAX_RELEASE) {
        let kv = os_release(&t);
        let get = |k: &str| kv.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        if let Some(id) = get("DISTRIB_ID") {
            return Some((
                id.to_lowercase(),
                get("DISTRIB_RELEASE").and_then(|v| Version::parse(&v)),
            ));
        }
    }
    if let Some(t) = read(tree, "/etc/debian_version", MAX_RELEASE) {
        return Some(("debian".into(), Version::parse(&t)));
    }
    None
}

fn init_system(tree: &dyn FileTree) -> InitSystem {
    let init_target = tree
        .resolve("/sbin/init")
        .ok()
        .filter(|_| exists(tree, "/sbin/init"));
    if init_target
        .as_deref()
        .is_some_and(|t| t.contains("systemd"))
    {
        return InitSystem::Systemd;
    }
    if exists(tree, "/sbin/openrc")
        || exists(tree, "/sbin/openrc-run")
        || kind(tree, "/etc/runlevels") == Some(Kind::Dir)
    {
        return InitSystem::Openrc;
    }
    if exists(tree, "/sbin/initctl")
        && kind(tree, "/etc/init") == Some(Kind::Dir)
        && !exists(tree, "/etc/inittab")
    {
        return InitSystem::Upstart;
    }
    if exists(tree, "/etc/inittab") {
        return InitSystem::Sysvinit;
    }
    if exists(tree, "/lib/systemd/systemd") || exists(tree, "/usr/lib/systemd/systemd") {
        return InitSystem::Systemd;
    }
    InitSystem::Unknown
}

fn bootloader(tree: &dyn FileTree) -> Bootloader {
    let efi_grub2 = tree
        .list("/boot/efi/EFI")
        .map(|vendors| {
            vendors
                .iter()
                .any(|v| exists(tree, &format!("/boot/efi/EFI/{v}/grub.cfg")))
        })
        .unwrap_or(false);
    if exists(tree, "/boot/grub2/grub.cfg") || exists(tree, "/boot/grub/grub.cfg") || efi_grub2 {
        Bootloader::Grub2
    } else if exists(tree, "/boot/grub/menu.lst") || exists(tree, "/boot/grub/grub.conf") {
        Bootloader::Grub
    } else if exists(tree, "/boot/extlinux/extlinux.conf")
        || exists(tree, "/boot/extlinux.conf")
        || exists(tree, "/boot/syslinux/syslinux.cfg")
    {
        Bootloader::Extlinux
    } else {
        Bootloader::Unknown
    }
}

fn source(tree: &dyn FileTree) -> Hypervisor {
    let vmware = [
        "/etc/vmware-tools",
        "/usr/bin/vmtoolsd",
        "/usr/sbin/vmtoolsd",
        "/usr/bin/vmware-uninstall-tools.pl",
    ];
    if vmware.iter().any(|p| exists(tree, p)) {
        return Hypervisor::Vmware;
    }
    let xen_kernel = any_named(tree, "/boot", |n| {
        n.starts_with("vmlinuz-") && n.contains("xen")
    });
    let xen_disks = read(tree, "/etc/fstab", MAX_FSTAB).is_some_and(|t| t.contains("/dev/xvd"));
    if xen_kernel || xen_disks || exists(tree, "/usr/sbin/xe-daemon") {
        return Hypervisor::Xen;
    }
    if ["/usr/sbin/hv_kvp_daemon", "/usr/sbin/hypervkvpd"]
        .iter()
        .any(|p| exists(tree, p))
    {
        return Hypervisor::Hyperv;
    }
    if exists(tree, "/usr/sbin/VBoxService")
        || any_named(tree, "/opt", |n| n.starts_with("VBoxGuestAdditions"))
    {
        return Hypervisor::Virtualbox;
    }
    Hypervisor::Unknown
}

/// The root filesystem's fstab entry.
fn root(tree: &dyn FileTree) -> Option<Root> {
    let text = read(tree, "/etc/fstab", MAX_FSTAB)?;
    let line = text.lines().find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 2 && !f[0].starts_with('#') && f[1] == "/"
    })?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let spec = f[0].to_string();
    let mut r = Root {
        spec: spec.clone(),
        fstype: f.get(2).map(|s| s.to_string()),
        ..Root::default()
    };
    if let Some(u) = spec.strip_prefix("UUID=") {
        r.uuid = Some(u.trim_matches('"').to_string());
    } else if let Some(l) = spec.strip_prefix("LABEL=") {
        r.label = Some(l.trim_matches('"').to_string());
    } else if spec.starts_with('/') {
        r.device = Some(spec);
    }
    Some(r)
}

/// Facts read from the tree itself.
pub fn detect(tree: &dyn FileTree) -> Facts {
    let mut f = Facts::default();
    let release = read(tree, "/etc/os-release", MAX_RELEASE)
        .or_else(|| read(tree, "/usr/lib/os-release", MAX_RELEASE));
    if let Some(t) = release {
        let kv = os_release(&t);
        let get = |k: &str| kv.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        f.distro = get("ID").unwrap_or_default().to_lowercase();
        f.version = get("VERSION_ID").and_then(|v| Version::parse(&v));
    }
    if f.distro.is_empty() {
        if let Some((d, v)) = legacy_release(tree) {
            f.distro = d;
            f.version = v;
        }
    } else if f.version.is_none() && f.distro == "debian" {
        // Debian testing has no VERSION_ID; debian_version has at least the codename.
        f.version = read(tree, "/etc/debian_version", MAX_RELEASE).and_then(|t| Version::parse(&t));
    }
    if !f.distro.is_empty() || exists(tree, "/etc/fstab") || exists(tree, "/bin/sh") {
        f.os = Os::Linux;
    }
    if exists(tree, "/Windows/System32") || exists(tree, "/WINDOWS/system32") {
        f.os = Os::Windows;
    }
    f.init = init_system(tree);
    f.bootloader = bootloader(tree);
    f.source = source(tree);
    f.root = root(tree);
    f.complete();
    f
}
