//! The `initramfs-add-modules` action: drivers a guest's initramfs lacks (virtio_blk on a guest
//! built on VMware or Xen with `MODULES=dep`/`list` or dracut's host-only mode), added by
//! appending a plain cpio archive that holds the module files from the guest's own
//! `/lib/modules/RELEASE` and that tree's depmod indexes.
//!
//! virt-v2v rebuilds the initramfs by running the guest's update-initramfs/dracut inside its
//! appliance; ferry runs no guest code, and does not need to: the kernel unpacks every archive
//! of the buffer in order and a later entry replaces an earlier one
//! (Documentation/driver-api/early-userspace/buffer-format.rst). The modules and the full
//! indexes (`modules.dep.bin`, `modules.alias.bin`, ... as depmod wrote them for the whole
//! kernel) go in the new archive, so udev in the initramfs loads virtio_pci and virtio_blk by
//! their aliases as it would on a host that had them. The rule that uses this also schedules
//! a rebuild at first boot, after which the guest's own tool owns the image again.

use crate::fs::files::{FileTree, Kind};
use crate::guest::initramfs::{self, Listing};
use crate::guest::inspect::{Driver, OsInfo};

/// An initramfs larger than this is not edited: distribution images are 10–150 MiB.
pub const MAX_IMAGE: u64 = 512 << 20;
/// modules.dep of a distribution kernel is ~0.5 MiB; the .bin indexes up to a few MiB.
const MAX_INDEX: u64 = 16 << 20;
/// A kernel module file (the largest in-tree ones are a few MiB; amdgpu ~20 MiB).
const MAX_MODULE: u64 = 64 << 20;
/// The depmod outputs copied with the modules: udev and modprobe read the `.bin` ones.
const INDEXES: &[&str] = &[
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.builtin.modinfo",
    "modules.devname",
    "modules.order",
];

/// The kernel release an initramfs file is for, from its name: Debian's `initrd.img-R`,
/// Red Hat's `initramfs-R.img` (not the `-kdump` one), SUSE's `initrd-R`.
pub fn release_of(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    let r = base
        .strip_prefix("initrd.img-")
        .or_else(|| base.strip_prefix("initramfs-")?.strip_suffix(".img"))
        .or_else(|| base.strip_prefix("initrd-"))?;
    (!r.is_empty() && !r.ends_with("kdump") && !r.contains('/')).then_some(r)
}

/// What the action did to one image.
#[derive(Debug)]
pub enum Outcome {
    /// Every wanted module the kernel has is in the image (or built in).
    Present,
    /// The new content of the image, and the modules (with dependencies) appended.
    Appended { data: Vec<u8>, modules: Vec<String> },
    /// Left as is, and why (a warning for the report).
    Skipped(String),
}

/// Access to the guest's files for [`add_modules`]: `read(path, limit)` of a regular file,
/// `None` when it does not exist.
pub type Reader<'a> = dyn FnMut(&str, u64) -> Option<Vec<u8>> + 'a;

/// The module name of a modules.dep path (`kernel/drivers/block/virtio_blk.ko.xz`).
fn module_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base)
}

/// Same-named modules: depmod and modprobe treat `-` and `_` alike.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

/// Plans the addition of `wanted` modules to the initramfs `image` (at guest path `path`) of
/// the kernel whose module tree is the guest directory `moddir`.
pub fn add_modules(
    path: &str,
    image: &[u8],
    moddir: &str,
    wanted: &[String],
    read: &mut Reader<'_>,
) -> Outcome {
    let listing = match initramfs::list(image) {
        Ok(l) => l,
        Err(e) => return Outcome::Skipped(format!("{path}: {e}; left as is")),
    };
    if let Some(c) = listing.unread {
        return Outcome::Skipped(format!(
            "{path}: a {c}-compressed archive, which ferry does not read; left as is (the rebuild at first boot needs a guest that boots)"
        ));
    }
    let closed = listing.closed;
    let Some(dep) = read(&format!("{moddir}/modules.dep"), MAX_INDEX) else {
        return Outcome::Skipped(format!(
            "{path}: {moddir}/modules.dep is missing; left as is"
        ));
    };
    let dep = String::from_utf8_lossy(&dep);
    let builtin = read(&format!("{moddir}/modules.builtin"), MAX_INDEX)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let release = moddir.rsplit('/').next().unwrap_or(moddir);
    let inside = listing.resolve(&format!("lib/modules/{release}"));
    // Each wanted module with its dependencies (modules.dep lists them all, deepest last).
    let mut files: Vec<String> = Vec::new();
    for w in wanted {
        if builtin.lines().any(|l| same(module_name(l), w)) {
            continue;
        }
        let Some((m, deps)) = dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(m, _)| same(module_name(m), w))
        else {
            continue;
        };
        for f in std::iter::once(m).chain(deps.split_whitespace()) {
            if !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
    }
    let missing: Vec<&String> = files
        .iter()
        .filter(|f| {
            let at = if f.starts_with('/') {
                listing.resolve(f.trim_start_matches('/'))
            } else {
                listing.resolve(&format!("{inside}/{f}"))
            };
            listing.get(&at).is_none()
        })
        .collect();
    if missing.is_empty() {
        return Outcome::Present;
    }
    if let Some(c) = closed {
        return Outcome::Skipped(format!(
            "{path}: its last archive is {c}-compressed, after which the kernel reads no further archive; left as is"
        ));
    }
    match archive(&listing, &inside, moddir, &missing, read) {
        Ok(extra) => {
            // A capacity hint: the image, the new members and up to 3 bytes of padding.
            let mut data =
                Vec::with_capacity(image.len().saturating_add(extra.len()).saturating_add(4));
            data.extend_from_slice(image);
            // A plain archive must start on a 4-byte boundary; NULs between members are skipped.
            while data.len() % 4 != 0 {
                data.push(0);
            }
            data.extend_from_slice(&extra);
            Outcome::Appended {
                data,
                modules: missing.iter().map(|f| module_name(f).to_string()).collect(),
            }
        }
        Err(why) => Outcome::Skipped(format!("{path}: {why}; left as is")),
    }
}

/// The appended archive: missing directories, the module files and the indexes.
fn archive(
    listing: &Listing,
    inside: &str,
    moddir: &str,
    missing: &[&String],
    read: &mut Reader<'_>,
) -> Result<Vec<u8>, String> {
    let mut w = initramfs::Writer::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut want_dir = |w: &mut initramfs::Writer, file: &str| -> Result<(), String> {
        let mut parts: Vec<&str> = file.split('/').collect();
        parts.pop();
        for i in 1..=parts.len() {
            let d = parts[..i].join("/");
            if listing.get(&d).is_none() && !dirs.contains(&d) {
                w.dir(&d).map_err(|e| e.to_string())?;
                dirs.push(d);
            }
        }
        Ok(())
    };
    for f in missing {
        let (guest, name) = if f.starts_with('/') {
            (f.to_string(), listing.resolve(f.trim_start_matches('/')))
        } else {
            (format!("{moddir}/{f}"), format!("{inside}/{f}"))
        };
        let data = read(&guest, MAX_MODULE).ok_or_else(|| format!("{guest} is missing"))?;
        want_dir(&mut w, &name)?;
        w.file(&name, 0o644, &data).map_err(|e| e.to_string())?;
    }
    for idx in INDEXES {
        if let Some(data) = read(&format!("{moddir}/{idx}"), MAX_INDEX) {
            let name = format!("{inside}/{idx}");
            want_dir(&mut w, &name)?;
            w.file(&name, 0o644, &data).map_err(|e| e.to_string())?;
        }
    }
    w.finish().map_err(|e| e.to_string())
}

/// Why no kernel of the guest could load virtio_blk before its root is mounted on KVM, if that
/// is so: every kernel that has virtio_blk only as a module comes with an initramfs that ferry
/// cannot read, and so cannot add the module to. `None` when a kernel has the driver built in,
/// has a readable initramfs (the fix appends the driver), or has no initramfs to look at.
pub fn blocks_virtio(tree: &dyn FileTree, os: &OsInfo) -> Option<String> {
    let mut why = Vec::new();
    for k in os.kernels.iter().filter(|k| k.virtio_blk.available()) {
        if k.virtio_blk == Driver::Builtin {
            return None;
        }
        let v = &k.version;
        let names = [
            format!("/boot/initrd.img-{v}"),
            format!("/boot/initramfs-{v}.img"),
            format!("/boot/initrd-{v}"),
        ];
        let path = names
            .into_iter()
            .find(|p| matches!(tree.lstat(p), Ok(Some(m)) if m.kind == Kind::File))?;
        match tree.read(&path, MAX_IMAGE).map(|d| initramfs::list(&d)) {
            Ok(Ok(l)) => match l.unread {
                None => return None,
                Some(c) => why.push(format!(
                    "{path} is {c}-compressed, which ferry cannot add drivers to"
                )),
            },
            Ok(Err(e)) => why.push(format!("{path}: {e}")),
            Err(e) => why.push(format!("{path}: {e}")),
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn releases_from_the_names_distributions_use() {
        assert_eq!(
            release_of("/boot/initrd.img-6.1.0-50-amd64"),
            Some("6.1.0-50-amd64")
        );
        assert_eq!(
            release_of("/boot/initramfs-4.18.0-553.el8.x86_64.img"),
            Some("4.18.0-553.el8.x86_64")
        );
        assert_eq!(
            release_of("/boot/initramfs-4.18.0-553.el8.x86_64kdump.img"),
            None
        );
        assert_eq!(
            release_of("/boot/initrd-5.14.21-default"),
            Some("5.14.21-default")
        );
        assert_eq!(release_of("/boot/vmlinuz-6.1"), None);
    }

    fn guest() -> HashMap<String, Vec<u8>> {
        let d = "/usr/lib/modules/6.1";
        let mut g = HashMap::new();
        g.insert(
            format!("{d}/modules.dep"),
            b"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko:\nkernel/fs/ext4/ext4.ko:\n".to_vec(),
        );
        g.insert(
            format!("{d}/modules.builtin"),
            b"kernel/drivers/virtio/virtio_pci.ko\n".to_vec(),
        );
        g.insert(format!("{d}/modules.alias.bin"), b"ALIAS".to_vec());
        for m in ["block/virtio_blk", "virtio/virtio_ring", "virtio/virtio"] {
            g.insert(format!("{d}/kernel/drivers/{m}.ko"), m.as_bytes().to_vec());
        }
        g
    }

    #[test]
    fn missing_modules_are_appended_through_the_images_own_links() {
        let g = guest();
        let mut read = |p: &str, _: u64| g.get(p).cloned();
        let mut w = initramfs::Writer::new();
        w.dir("usr").unwrap();
        w.dir("usr/lib").unwrap();
        w.dir("usr/lib/modules").unwrap();
        w.dir("usr/lib/modules/6.1").unwrap();
        w.file("usr/lib/modules/6.1/modules.dep", 0o644, b"")
            .unwrap();
        let base = w.finish().unwrap();
        let base = {
            // `lib -> usr/lib` as a merged-/usr initramfs has it: a symlink entry written by
            // hand (mode 0120777), in an archive of its own.
            let mut b = base;
            let name = b"lib\0";
            let mut h = format!(
                "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
                1, 0o120_777, 0, 0, 1, 0, 7, 0, 0, 0, 0, name.len(), 0
            )
            .into_bytes();
            h.extend_from_slice(name);
            while h.len() % 4 != 0 {
                h.push(0);
            }
            h.extend_from_slice(b"usr/lib\0");
            let mut t = initramfs::Writer::new().finish().unwrap();
            h.append(&mut t);
            b.extend_from_slice(&h);
            b
        };
        let wanted = ["virtio_pci".to_string(), "virtio-blk".to_string()];
        let out = add_modules(
            "/boot/initrd.img-6.1",
            &base,
            "/usr/lib/modules/6.1",
            &wanted,
            &mut read,
        );
        let Outcome::Appended { data, modules } = out else {
            panic!("expected an append, got {out:?}");
        };
        assert_eq!(modules, ["virtio_blk", "virtio_ring", "virtio"]);
        assert!(data.starts_with(&base));
        let l = initramfs::list(&data).unwrap();
        let f = l
            .get("usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko")
            .unwrap();
        assert_eq!(usize::try_from(f.size), Ok("block/virtio_blk".len()));
        assert!(l
            .get("usr/lib/modules/6.1/kernel/drivers/block")
            .unwrap()
            .is_dir());
        assert!(l.get("usr/lib/modules/6.1/modules.alias.bin").is_some());
        assert!(l
            .get("lib/modules/6.1/kernel/drivers/block/virtio_blk.ko")
            .is_none());
        // Idempotent: the appended image needs nothing more.
        let again = add_modules(
            "/boot/initrd.img-6.1",
            &data,
            "/usr/lib/modules/6.1",
            &wanted,
            &mut read,
        );
        assert!(matches!(again, Outcome::Present), "{again:?}");
    }

    #[test]
    fn unreadable_compression_is_left_alone() {
        let g = guest();
        let mut read = |p: &str, _: u64| g.get(p).cloned();
        // bzip2, which the kernel reads and ferry does not.
        let bz = *b"BZh91AY&SY";
        let out = add_modules(
            "/boot/i",
            &bz,
            "/usr/lib/modules/6.1",
            &["virtio_blk".into()],
            &mut read,
        );
        assert!(
            matches!(out, Outcome::Skipped(ref w) if w.contains("bzip2")),
            "{out:?}"
        );
    }
}
