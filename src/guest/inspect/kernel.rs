//! Installed kernels: images in /boot and module trees in /lib/modules, paired by release,
//! and whether each kernel has the virtio drivers a KVM guest boots with.
//!
//! Module files sit at fixed places in the kernel tree (`kernel/drivers/block/virtio_blk.ko`,
//! compressed as `.xz`, `.gz` or `.zst` by newer distributions); drivers built into the image
//! are listed in `modules.builtin` (Linux ≥ 2.6.33); out-of-tree copies (`updates/`,
//! `extra/`) are found through `modules.dep`, which depmod writes for every module.

use super::{Ctx, Driver, Kernel};

/// More kernels than any guest keeps installed.
const MAX_KERNELS: usize = 64;
/// modules.builtin is ~20 KiB and modules.dep ~0.5 MiB on a distribution kernel; the caps
/// bound what a hostile guest with many kernels makes inspection read.
const MAX_BUILTIN: u64 = 1 << 20;
const MAX_DEP: u64 = 4 << 20;
/// Small text files of the module tree (`pkgbase`).
const MAX_SMALL: u64 = 4096;

const SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.gz", ".ko.zst"];

/// The drivers looked for: module name and its directory in the kernel tree.
const DRIVERS: [(&str, &str); 4] = [
    ("virtio_blk", "kernel/drivers/block"),
    ("virtio_net", "kernel/drivers/net"),
    ("virtio_scsi", "kernel/drivers/scsi"),
    ("virtio_pci", "kernel/drivers/virtio"),
];

/// The module name of a path in modules.dep / modules.builtin (`…/virtio_blk.ko.xz`).
fn module_name(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    SUFFIXES.iter().rev().find_map(|s| base.strip_suffix(s))
}

/// Availability of each of [`DRIVERS`] in the module tree `dir`.
fn drivers(cx: &Ctx, dir: &str) -> [Driver; 4] {
    let mut found = [Driver::Missing; 4];
    for (i, (name, sub)) in DRIVERS.iter().enumerate() {
        if SUFFIXES
            .iter()
            .any(|s| cx.exists(&format!("{dir}/{sub}/{name}{s}")))
        {
            found[i] = Driver::Module;
        }
    }
    if let Some(t) = cx.read_text(&format!("{dir}/modules.builtin"), MAX_BUILTIN) {
        for name in t.lines().filter_map(module_name) {
            if let Some(i) = DRIVERS.iter().position(|(n, _)| *n == name) {
                if found[i] == Driver::Missing {
                    found[i] = Driver::Builtin;
                }
            }
        }
    }
    if found.contains(&Driver::Missing) {
        if let Some(t) = cx.read_text(&format!("{dir}/modules.dep"), MAX_DEP) {
            for path in t.lines().filter_map(|l| l.split_once(':').map(|(p, _)| p)) {
                let Some(name) = module_name(path) else {
                    continue;
                };
                if let Some(i) = DRIVERS.iter().position(|(n, _)| *n == name) {
                    let full = if path.starts_with('/') {
                        path.to_string()
                    } else {
                        format!("{dir}/{path}")
                    };
                    if found[i] == Driver::Missing && cx.exists(&full) {
                        found[i] = Driver::Module;
                    }
                }
            }
        }
    }
    found
}

/// Kernel images in /boot: `vmlinuz-RELEASE` (and `vmlinux-` on some ports), without
/// Fedora's hidden `.vmlinuz-*.hmac` files.
fn images(cx: &Ctx) -> Vec<(String, String)> {
    cx.list("/boot")
        .into_iter()
        .filter_map(|n| {
            let v = n
                .strip_prefix("vmlinuz-")
                .or_else(|| n.strip_prefix("vmlinux-"))?;
            (!v.is_empty() && !n.ends_with(".hmac")).then(|| (v.to_string(), format!("/boot/{n}")))
        })
        .collect()
}

/// Module trees: the directories of /lib/modules (through the /lib → usr/lib link where
/// there is one).
fn module_dirs(cx: &Ctx) -> Vec<(String, String)> {
    let Some(base) = cx.resolve("/lib/modules") else {
        return Vec::new();
    };
    cx.list(&base)
        .into_iter()
        .map(|n| (n.clone(), format!("{base}/{n}")))
        .filter(|(_, p)| cx.is_dir(p))
        .collect()
}

/// The installed kernels, images paired with module trees by release. An image named by its
/// flavour rather than its release (Arch's `vmlinuz-linux`, Alpine's `vmlinuz-lts`) is paired
/// with the one module tree whose `pkgbase` names it or whose release ends in `-FLAVOUR`.
pub(super) fn kernels(cx: &Ctx) -> Vec<Kernel> {
    let mut imgs = images(cx);
    let mut dirs = module_dirs(cx);
    let found = imgs.len().saturating_add(dirs.len());
    if found > MAX_KERNELS {
        cx.warn(format!(
            "{found} kernel images and module trees; only {MAX_KERNELS} looked at"
        ));
        imgs.truncate(MAX_KERNELS);
        dirs.truncate(MAX_KERNELS.saturating_sub(imgs.len()));
    }
    let mut out: Vec<Kernel> = Vec::new();
    let mut unpaired_imgs = Vec::new();
    for (v, path) in imgs {
        if let Some(i) = dirs.iter().position(|(d, _)| *d == v) {
            let (_, dir) = dirs.remove(i);
            out.push(Kernel {
                version: v,
                vmlinuz: Some(path),
                modules: Some(dir),
                ..Kernel::default()
            });
        } else {
            unpaired_imgs.push((v, path));
        }
    }
    for (flavour, path) in unpaired_imgs {
        let matching: Vec<usize> = dirs
            .iter()
            .enumerate()
            .filter(|(_, (d, p))| {
                let pkgbase = cx
                    .read_text(&format!("{p}/pkgbase"), MAX_SMALL)
                    .map(|t| t.trim().to_string());
                pkgbase.as_deref() == Some(flavour.as_str()) || d.ends_with(&format!("-{flavour}"))
            })
            .map(|(i, _)| i)
            .collect();
        if let [i] = matching[..] {
            let (d, dir) = dirs.remove(i);
            out.push(Kernel {
                version: d,
                vmlinuz: Some(path),
                modules: Some(dir),
                ..Kernel::default()
            });
        } else {
            out.push(Kernel {
                version: flavour,
                vmlinuz: Some(path),
                ..Kernel::default()
            });
        }
    }
    for (d, dir) in dirs {
        out.push(Kernel {
            version: d,
            modules: Some(dir),
            ..Kernel::default()
        });
    }
    for k in &mut out {
        if let Some(dir) = &k.modules {
            [k.virtio_blk, k.virtio_net, k.virtio_scsi, k.virtio_pci] = drivers(cx, dir);
        }
        k.xen_pv_only = xen_pv_only(cx, &k.version);
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// Whether kernel `version` is built to run only as a Xen PV guest (the pre-pvops "xenified"
/// kernels: CONFIG_X86_XEN / CONFIG_X86_64_XEN in `/boot/config-VERSION`). Without a config
/// file, by the releases those kernels carry: RHEL 5's `…el5xen`, SUSE's `…-xen`. Debian's
/// `-xen-amd64` flavour is a pvops kernel that boots anywhere, and is not one.
fn xen_pv_only(cx: &Ctx, version: &str) -> bool {
    match cx.read_text(&format!("/boot/config-{version}"), MAX_CONFIG) {
        Some(config) => config
            .lines()
            .any(|l| matches!(l.trim(), "CONFIG_X86_XEN=y" | "CONFIG_X86_64_XEN=y")),
        None => version.ends_with("el5xen") || version.ends_with("-xen"),
    }
}

/// A kernel config is 100-250 KiB.
const MAX_CONFIG: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            Some("virtio_blk")
        );
        assert_eq!(module_name("virtio_net.ko"), Some("virtio_net"));
        assert_eq!(module_name("kernel/drivers/net/virtio_net.o"), None);
    }
}
