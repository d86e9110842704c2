//! Guest disk images that look like real installs, built with the real tools (sfdisk, mkfs.*,
//! mkswap, lvm2 on loop devices, qemu-img), each with the truth a test checks inspection
//! against: which filesystem is where, what the guest's files say.
//!
//! Every filesystem is made from a host directory (`mkfs.ext4 -d`), written into the raw disk
//! at its offset, and the raw disks are kept so the kernel can mount the same layout (each
//! filesystem through its own loop device at its byte range) as the oracle.

use super::kernel::KernelMount;
use super::lvm::{lvm, restore_with_lvs, seg, vg_name, write_lv, Loops, LvSpec, PvPlace};
use super::{qemu_img, run, sfdisk_image, write_into};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One filesystem of a built guest.
#[derive(Debug, Clone)]
pub(crate) struct Fs {
    /// Our name for its device (`/dev/sda1`, `/dev/VG/LV`).
    pub device: String,
    /// blkid's TYPE.
    pub fstype: &'static str,
    pub uuid: String,
    pub label: Option<String>,
    /// Where the guest mounts it ("/", "/boot"; None for swap and unmounted ones).
    pub mountpoint: Option<String>,
    /// Which raw disk holds it, and the byte range.
    pub disk: usize,
    pub offset: u64,
    pub size: u64,
}

/// A guest: its disks (raw, for the kernel; in their test format, for ferry) and its truth.
pub(crate) struct Guest {
    pub raw: Vec<PathBuf>,
    pub images: Vec<PathBuf>,
    pub filesystems: Vec<Fs>,
    /// The VG name (LVM guests), which appears in fstab.
    pub vg: Option<String>,
}

impl Guest {
    /// The filesystems the guest mounts, parents first (the order `mount -a` would use).
    pub(crate) fn layout(&self) -> Vec<&Fs> {
        let mut l: Vec<&Fs> = self
            .filesystems
            .iter()
            .filter(|f| f.mountpoint.is_some())
            .collect();
        l.sort_by_key(|f| {
            let m = f.mountpoint.as_deref().unwrap_or("/");
            (m != "/", m.matches('/').count())
        });
        l
    }

    pub(crate) fn fs(&self, device: &str) -> &Fs {
        self.filesystems
            .iter()
            .find(|f| f.device == device)
            .unwrap_or_else(|| panic!("no {device} in the guest"))
    }

    /// Mounts the guest's layout with the kernel under `at`, read-only; the filesystems in
    /// `skip` (not readable by ferry yet) are left out. Unmounted in reverse order on drop.
    pub(crate) fn kernel_mount(&self, at: &Path, skip: &[&str]) -> KernelLayout {
        let mut mounts = Vec::new();
        for f in self.layout() {
            if skip.contains(&f.device.as_str()) {
                continue;
            }
            let mp = f.mountpoint.as_deref().unwrap_or("/");
            let dir = at.join(mp.trim_start_matches('/'));
            let m = KernelMount::range(&self.raw[f.disk], f.offset, f.size, &dir, "ro")
                .unwrap_or_else(|e| panic!("kernel mount of {} at {mp}: {e}", f.device));
            mounts.push(m);
        }
        KernelLayout(mounts)
    }
}

/// Kernel mounts of a guest's layout, unmounted children first.
pub(crate) struct KernelLayout(Vec<KernelMount>);

impl Drop for KernelLayout {
    fn drop(&mut self) {
        while let Some(m) = self.0.pop() {
            drop(m);
        }
    }
}

/// Writes a file (and its parents) under a host directory holding a guest tree.
pub(crate) fn put(root: &Path, path: &str, data: impl AsRef<[u8]>) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
}

pub(crate) fn mkdir(root: &Path, path: &str) {
    std::fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

pub(crate) fn symlink(root: &Path, path: &str, target: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

/// Copies a host binary into the guest (a real ELF header for architecture detection).
pub(crate) fn copy_host(root: &Path, path: &str, host: &str) {
    put(root, path, std::fs::read(host).unwrap());
}

/// Makes a filesystem image of `size` bytes from `files` (None: empty).
pub(crate) fn mkfs(
    out: &Path,
    fstype: &str,
    size: u64,
    uuid: &str,
    label: Option<&str>,
    files: Option<&Path>,
    extra: &[&str],
) {
    let f = std::fs::File::create(out).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut c = match fstype {
        "ext2" | "ext3" | "ext4" => {
            let mut c = Command::new(format!("mkfs.{fstype}"));
            c.args(["-q", "-F", "-U", uuid]).args(extra);
            if let Some(l) = label {
                c.args(["-L", l]);
            }
            if let Some(d) = files {
                c.arg("-d").arg(d);
            }
            c
        }
        "xfs" => {
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f", "-m", &format!("uuid={uuid}")]);
            if let Some(l) = label {
                c.args(["-L", l]);
            }
            if let Some(d) = files {
                let proto = out.with_extension("proto");
                xfs_protofile(d, &proto);
                c.arg("-p").arg(proto);
            }
            c
        }
        "swap" => {
            let mut c = Command::new("mkswap");
            c.args(["-U", uuid]);
            if let Some(l) = label {
                c.args(["-L", l]);
            }
            c
        }
        other => panic!("mkfs {other}"),
    };
    run(c.arg(out));
}

/// Writes a mkfs.xfs prototype file (mkfs.xfs(8) "-p") describing the tree at `src`: files,
/// directories, symlinks, devices and FIFOs with their modes and owners. What a prototype
/// cannot say is left out: sockets, hard links (each name becomes its own inode), names or
/// targets with white space, and the sticky bit.
pub(crate) fn xfs_protofile(src: &Path, out: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn dir(at: &Path, text: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(at).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if name.contains(char::is_whitespace) {
                continue;
            }
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            let mode = m.mode();
            let perm = format!(
                "{}{}{:03o} {} {}",
                if mode & 0o4000 != 0 { 'u' } else { '-' },
                if mode & 0o2000 != 0 { 'g' } else { '-' },
                mode & 0o777,
                m.uid(),
                m.gid()
            );
            let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            let word = |p: &Path| {
                p.to_str()
                    .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                    .map(String::from)
            };
            let line = if t.is_dir() {
                text.push_str(&format!("{name} d{perm}\n"));
                dir(&path, text);
                text.push_str("$\n");
                continue;
            } else if t.is_file() {
                word(&path).map(|p| format!("-{perm} {p}"))
            } else if t.is_symlink() {
                word(&std::fs::read_link(&path).unwrap()).map(|p| format!("l{perm} {p}"))
            } else if t.is_char_device() {
                Some(format!("c{perm} {major} {minor}"))
            } else if t.is_block_device() {
                Some(format!("b{perm} {major} {minor}"))
            } else if t.is_fifo() {
                Some(format!("p{perm}"))
            } else {
                None
            };
            if let Some(line) = line {
                text.push_str(&format!("{name} {line}\n"));
            }
        }
    }
    let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
    dir(src, &mut text);
    text.push_str("$\n");
    std::fs::write(out, text).unwrap();
}

fn wrap(raw: &Path, fmt: &str) -> PathBuf {
    if fmt == "raw" {
        let p = raw.with_extension("disk.raw");
        std::fs::copy(raw, &p).unwrap();
        return p;
    }
    let p = raw.with_extension(fmt);
    let mut args = vec!["convert", "-q", "-O", fmt];
    if fmt == "vmdk" {
        args.extend(["-o", "subformat=monolithicSparse"]);
    }
    let (r, d) = (raw.to_str().unwrap(), p.to_str().unwrap());
    args.extend([r, d]);
    qemu_img(&args);
    p
}

const MIB: u64 = 1 << 20;

/// A Debian-12-like root tree: merged /usr, systemd, dpkg, a kernel with virtio_blk and
/// virtio_net as modules and virtio_scsi built in, GRUB 2. /var and /boot are separate.
/// A minimal initramfs: one plain cpio "newc" archive holding `/init`, written field by field
/// as the format says (not by ferry's writer, which reads it back in the tests).
pub(crate) fn initrd() -> Vec<u8> {
    let mut out = Vec::new();
    for (name, mode, data) in [
        ("init", 0o100_755u32, &b"#!/bin/sh\n"[..]),
        ("TRAILER!!!", 0, &b""[..]),
    ] {
        let namesize = name.len() + 1;
        let h = format!(
            "070701{:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            1, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

pub(crate) fn debian_root(root: &Path, fstab: &str) {
    put(
        root,
        "/etc/os-release",
        std::fs::read("/etc/os-release").unwrap(),
    );
    put(
        root,
        "/etc/debian_version",
        std::fs::read("/etc/debian_version").unwrap(),
    );
    put(root, "/etc/hostname", "installer-guest\n");
    put(root, "/etc/fstab", fstab);
    copy_host(root, "/usr/bin/dash", "/usr/bin/dash");
    copy_host(root, "/usr/bin/ls", "/usr/bin/ls");
    symlink(root, "/usr/bin/sh", "dash");
    symlink(root, "/bin", "usr/bin");
    symlink(root, "/sbin", "usr/sbin");
    symlink(root, "/lib", "usr/lib");
    put(root, "/usr/lib/systemd/systemd", "not really systemd\n");
    symlink(root, "/usr/sbin/init", "../lib/systemd/systemd");
    put(root, "/usr/bin/apt-get", "apt\n");
    put(root, "/usr/bin/dpkg", "dpkg\n");
    let k = "/usr/lib/modules/6.1.0-13-amd64";
    put(
        root,
        &format!("{k}/kernel/drivers/block/virtio_blk.ko.xz"),
        "xz",
    );
    put(
        root,
        &format!("{k}/kernel/drivers/net/virtio_net.ko.xz"),
        "xz",
    );
    put(
        root,
        &format!("{k}/modules.builtin"),
        "kernel/drivers/scsi/virtio_scsi.ko\nkernel/fs/ext4/ext4.ko\n",
    );
    put(
        root,
        "/etc/default/grub",
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
    );
    for d in [
        "/boot",
        "/var",
        "/srv",
        "/mnt/my data",
        "/proc",
        "/tmp",
        "/home",
    ] {
        mkdir(root, d);
    }
}

/// The GPT + LVM installer layout: /boot on sda1 (ext4), an LVM PV on sda2 holding root,
/// var (ext4), swap, srv (XFS, filled from a prototype file) and data (ext4, `noauto`, at a
/// mountpoint with a space). fstab names them every way an installer does.
pub(crate) fn installer(dir: &Path, fmt: &str) -> Guest {
    let vg = vg_name("inst");
    let boot_uuid = "0b0b0b0b-1111-4222-8333-444455556666";
    let uuids = [
        ("root", "a0000000-0000-4000-8000-000000000001"),
        ("var", "a0000000-0000-4000-8000-000000000002"),
        ("swap", "a0000000-0000-4000-8000-000000000003"),
        ("srv", "a0000000-0000-4000-8000-000000000004"),
        ("data", "a0000000-0000-4000-8000-000000000005"),
    ];
    let fstab = format!(
        "# /etc/fstab: static file system information.\n\
         #\n\
         # <file system> <mount point>   <type>  <options>       <dump>  <pass>\n\
         /dev/mapper/{vg}-root /               ext4    errors=remount-ro 0       1\n\
         UUID={boot_uuid} /boot           ext4    defaults        0       2\n\
         /dev/{vg}/var\t/var\text4\tdefaults,nodev\t0\t2\n\
         /dev/mapper/{vg}-swap none            swap    sw              0       0\n\
         /dev/disk/by-id/dm-name-{vg}-srv /srv xfs defaults 0 0\n\
         LABEL=data /mnt/my\\040data ext4 noauto,nofail 0 0\n\
         proc /proc proc defaults 0 0\n\
         tmpfs /tmp tmpfs defaults 0 0\n\
         /dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\n"
    );
    let t = dir.join("trees");
    let root = t.join("root");
    debian_root(&root, &fstab);
    let boot = t.join("boot");
    put(&boot, "/vmlinuz-6.1.0-13-amd64", "kernel image\n");
    put(&boot, "/initrd.img-6.1.0-13-amd64", initrd());
    put(&boot, "/config-6.1.0-13-amd64", "CONFIG_VIRTIO=y\n");
    put(
        &boot,
        "/grub/grub.cfg",
        format!("menuentry 'Debian' {{\n  linux /vmlinuz-6.1.0-13-amd64 root=/dev/mapper/{vg}-root ro quiet\n}}\n"),
    );
    let var = t.join("var");
    put(
        &var,
        "/log/messages",
        "Nov 23 10:00:00 installer-guest kernel: hello\n".repeat(200),
    );
    put(
        &var,
        "/lib/dpkg/status",
        "Package: dash\nStatus: install ok installed\n",
    );
    let data = t.join("data");
    put(&data, "/README", "data volume\n");
    let srv = t.join("srv");
    put(&srv, "/www/index.html", "<h1>served from XFS</h1>\n");
    put(&srv, "/www/big.bin", "0123456789abcdef".repeat(40000));
    symlink(&srv, "/current", "www");
    for i in 0..300 {
        put(&srv, &format!("/spool/job-{i:04}"), format!("job {i}\n"));
    }

    // Disk: 1 MiB gap, sda1 64 MiB /boot, sda2 the PV (the rest of 768 MiB).
    let disk = dir.join("installer.img");
    let size = 768 * MIB;
    sfdisk_image(
        &disk,
        size,
        "label: gpt\nstart=2048, size=131072, type=L, name=boot\nstart=133120, type=V, name=lvm\n",
    );
    let (p1_off, p1_len) = (2048 * 512, 131072 * 512);
    let p2_off = 133120 * 512;
    // GPT keeps 33 sectors at the end for its backup.
    let p2_len = size - p2_off - 33 * 512;
    let fsimg = dir.join("fs.img");
    mkfs(
        &fsimg,
        "ext4",
        p1_len,
        boot_uuid,
        Some("boot"),
        Some(&boot),
        &[],
    );
    write_into(&disk, p1_off, &fsimg);

    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&disk, p2_off, Some(p2_len));
    lvm("pvcreate", &["-ff", "-y", &dev]);
    lvm("vgcreate", &["-s", "4m", &vg, &dev]);
    let pe_start: u64 = lvm(
        "pvs",
        &[
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "-o",
            "pe_start",
            &dev,
        ],
    )
    .trim()
    .parse()
    .unwrap();
    // Extents: root 32 (128 MiB), var 16, swap 8, srv 76 (304 MiB: XFS needs 300), data 4.
    let sizes = [
        ("root", 32u64),
        ("var", 16),
        ("swap", 8),
        ("srv", 76),
        ("data", 4),
    ];
    let mut lvs = Vec::new();
    let mut pe = 0;
    for (name, n) in sizes {
        lvs.push(LvSpec {
            name,
            segs: vec![seg(0, n, 0, pe)],
        });
        pe += n;
    }
    restore_with_lvs(dir, &vg, &lvs);
    loops.detach();
    let places = [PvPlace {
        file: disk.clone(),
        data_start: p2_off + pe_start,
    }];
    let mut filesystems = vec![Fs {
        device: "/dev/sda1".into(),
        fstype: "ext4",
        uuid: boot_uuid.into(),
        label: Some("boot".into()),
        mountpoint: Some("/boot".into()),
        disk: 0,
        offset: p1_off,
        size: p1_len,
    }];
    let mut first = 0;
    for (l, (name, n)) in lvs.iter().zip(sizes) {
        let uuid = uuids.iter().find(|u| u.0 == name).unwrap().1;
        let len = n * 4 * MIB;
        let (fstype, label, files, mp): (&str, Option<&str>, Option<&Path>, Option<&str>) =
            match name {
                "root" => ("ext4", None, Some(&root), Some("/")),
                "var" => ("ext4", None, Some(&var), Some("/var")),
                "swap" => ("swap", None, None, None),
                "srv" => ("xfs", None, Some(&srv), Some("/srv")),
                _ => ("ext4", Some("data"), Some(&data), Some("/mnt/my data")),
            };
        mkfs(&fsimg, fstype, len, uuid, label, files, &[]);
        write_lv(&places, 4 * MIB, l, &std::fs::read(&fsimg).unwrap());
        filesystems.push(Fs {
            device: format!("/dev/{vg}/{name}"),
            fstype,
            uuid: uuid.into(),
            label: label.map(String::from),
            mountpoint: mp.map(String::from),
            disk: 0,
            offset: p2_off + pe_start + first * 4 * MIB,
            size: len,
        });
        first += n;
    }
    std::fs::remove_file(&fsimg).unwrap();
    Guest {
        images: vec![wrap(&disk, fmt)],
        raw: vec![disk],
        filesystems,
        vg: Some(vg),
    }
}

/// A RHEL-5-like VMware guest on an MBR disk, as its installer left it: /boot on hda1
/// (ext3 with 1 KiB blocks and 128-byte inodes), / labelled "/", swap on hda3; sysvinit,
/// GRUB legacy, rpm/yum, VMware tools; no os-release.
pub(crate) fn rhel5(dir: &Path, fmt: &str) -> Guest {
    let fstab = "/dev/hda1               /boot                   ext3    defaults        1 2\n\
                 LABEL=/                 /                       ext3    defaults        1 1\n\
                 tmpfs                   /dev/shm                tmpfs   defaults        0 0\n\
                 devpts                  /dev/pts                devpts  gid=5,mode=620  0 0\n\
                 sysfs                   /sys                    sysfs   defaults        0 0\n\
                 proc                    /proc                   proc    defaults        0 0\n\
                 LABEL=SWAP-hda3         swap                    swap    defaults        0 0\n";
    let t = dir.join("trees");
    let root = t.join("root");
    put(&root, "/etc/fstab", fstab);
    put(
        &root,
        "/etc/redhat-release",
        "Red Hat Enterprise Linux Server release 5.11 (Tikanga)\n",
    );
    put(
        &root,
        "/etc/sysconfig/network",
        "NETWORKING=yes\nNETWORKING_IPV6=no\nHOSTNAME=rhel5.example.com\n",
    );
    put(
        &root,
        "/etc/inittab",
        "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\n",
    );
    copy_host(&root, "/bin/bash", "/usr/bin/dash");
    symlink(&root, "/bin/sh", "bash");
    put(&root, "/sbin/init", "sysvinit\n");
    put(&root, "/var/lib/rpm/Packages", "rpmdb\n");
    put(&root, "/usr/bin/yum", "#!/usr/bin/python\n");
    put(&root, "/etc/vmware-tools/tools.conf", "\n");
    put(&root, "/usr/bin/vmware-toolbox-cmd", "vmware\n");
    symlink(&root, "/etc/grub.conf", "../boot/grub/grub.conf");
    put(
        &root,
        "/lib/modules/2.6.18-398.el5/kernel/drivers/scsi/mptspi.ko",
        "ko",
    );
    mkdir(&root, "/boot");
    let boot = t.join("boot");
    put(&boot, "/vmlinuz-2.6.18-398.el5", "kernel\n");
    put(&boot, "/initrd-2.6.18-398.el5.img", initrd());
    put(
        &boot,
        "/grub/grub.conf",
        "default=0\ntimeout=5\ntitle Red Hat Enterprise Linux Server (2.6.18-398.el5)\n\troot (hd0,0)\n\tkernel /vmlinuz-2.6.18-398.el5 ro root=LABEL=/\n\tinitrd /initrd-2.6.18-398.el5.img\n",
    );
    symlink(&boot, "/grub/menu.lst", "./grub.conf");

    let disk = dir.join("rhel5.img");
    let size = 256 * MIB;
    sfdisk_image(
        &disk,
        size,
        "label: dos\nstart=63, size=65520, type=83, bootable\nstart=65583, size=393120, type=83\nstart=458703, type=82\n",
    );
    let parts = [
        (63u64, 65520u64),
        (65583, 393120),
        (458703, size / 512 - 458703),
    ];
    let specs = [
        (
            "/dev/sda1",
            "ext3",
            "b5000000-0000-4000-8000-000000000001",
            Some("/boot"),
            Some(&boot),
            Some("/boot"),
            &["-b", "1024", "-I", "128"][..],
        ),
        (
            "/dev/sda2",
            "ext3",
            "b5000000-0000-4000-8000-000000000002",
            Some("/"),
            Some(&root),
            Some("/"),
            &["-I", "128"][..],
        ),
        (
            "/dev/sda3",
            "swap",
            "b5000000-0000-4000-8000-000000000003",
            Some("SWAP-hda3"),
            None,
            None,
            &[][..],
        ),
    ];
    let fsimg = dir.join("fs.img");
    let mut filesystems = Vec::new();
    for ((device, fstype, uuid, label, files, mp, extra), (start, len)) in
        specs.into_iter().zip(parts)
    {
        mkfs(
            &fsimg,
            fstype,
            len * 512,
            uuid,
            label,
            files.map(|p| p.as_path()),
            extra,
        );
        write_into(&disk, start * 512, &fsimg);
        filesystems.push(Fs {
            device: device.into(),
            fstype,
            uuid: uuid.into(),
            label: label.map(String::from),
            mountpoint: mp.map(String::from),
            disk: 0,
            offset: start * 512,
            size: len * 512,
        });
    }
    std::fs::remove_file(&fsimg).unwrap();
    Guest {
        images: vec![wrap(&disk, fmt)],
        raw: vec![disk],
        filesystems,
        vg: None,
    }
}

/// A SLES 11 SP4 paravirtual Xen guest: `/dev/xvda1` and `/dev/xvda2` in fstab, a -xen
/// kernel, the console on hvc0.
pub(crate) fn xen(dir: &Path, fmt: &str) -> Guest {
    xen_with(dir, fmt, false)
}

/// The same guest prepared for a move as SUSE advises: `kernel-default` installed beside
/// `kernel-xen` and first in the boot menu (a guest with only the -xen kernel cannot boot on
/// KVM, and `ferry v2v` refuses it). The default kernel's module tree has no virtio driver.
pub(crate) fn xen_with_default_kernel(dir: &Path, fmt: &str) -> Guest {
    xen_with(dir, fmt, true)
}

fn xen_with(dir: &Path, fmt: &str, default_kernel: bool) -> Guest {
    let fstab = "/dev/xvda1           /                    ext3       acl,user_xattr        1 1\n\
                 /dev/xvda2           swap                 swap       defaults              0 0\n\
                 proc                 /proc                proc       defaults              0 0\n\
                 sysfs                /sys                 sysfs      noauto                0 0\n\
                 debugfs              /sys/kernel/debug    debugfs    noauto                0 0\n\
                 devpts               /dev/pts             devpts     mode=0620,gid=5       0 0\n";
    let root = dir.join("trees/root");
    put(&root, "/etc/fstab", fstab);
    put(
        &root,
        "/etc/SuSE-release",
        "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
    );
    put(&root, "/etc/HOSTNAME", "sles11xen.example.com\n");
    put(
        &root,
        "/etc/inittab",
        "id:3:initdefault:\nx0:12345:respawn:/sbin/agetty -L 9600 hvc0 xterm\n",
    );
    copy_host(&root, "/bin/bash", "/usr/bin/dash");
    symlink(&root, "/bin/sh", "bash");
    put(&root, "/sbin/init", "sysvinit\n");
    put(&root, "/var/lib/rpm/Packages", "rpmdb\n");
    put(&root, "/usr/bin/zypper", "zypper\n");
    put(&root, "/boot/vmlinuz-3.0.101-63-xen", "kernel\n");
    put(&root, "/boot/initrd-3.0.101-63-xen", initrd());
    let mut menu = String::from("default 0\n");
    if default_kernel {
        put(&root, "/boot/vmlinuz-3.0.101-63-default", "kernel\n");
        put(&root, "/boot/initrd-3.0.101-63-default", initrd());
        put(
            &root,
            "/lib/modules/3.0.101-63-default/kernel/drivers/ata/ahci.ko",
            "ko",
        );
        menu.push_str(
            "title SLES 11 SP4 (default)\n    root (hd0,0)\n    kernel /boot/vmlinuz-3.0.101-63-default root=/dev/xvda1 console=hvc0\n",
        );
    }
    menu.push_str(
        "title SLES 11 SP4\n    root (hd0,0)\n    kernel /boot/vmlinuz-3.0.101-63-xen root=/dev/xvda1 console=hvc0\n",
    );
    put(&root, "/boot/grub/menu.lst", menu);
    put(
        &root,
        "/lib/modules/3.0.101-63-xen/kernel/drivers/xen/xen-blkfront.ko",
        "ko",
    );

    let disk = dir.join("xen.img");
    let size = 192 * MIB;
    sfdisk_image(
        &disk,
        size,
        "label: dos\nstart=2048, size=327680, type=83\nstart=329728, type=82\n",
    );
    let fsimg = dir.join("fs.img");
    let r = (2048 * 512, 327680 * 512);
    let s = (329728 * 512, size - 329728 * 512);
    let (ru, su) = (
        "c0000000-0000-4000-8000-000000000001",
        "c0000000-0000-4000-8000-000000000002",
    );
    mkfs(&fsimg, "ext3", r.1, ru, None, Some(&root), &[]);
    write_into(&disk, r.0, &fsimg);
    mkfs(&fsimg, "swap", s.1, su, None, None, &[]);
    write_into(&disk, s.0, &fsimg);
    std::fs::remove_file(&fsimg).unwrap();
    let fs = |device: &str, fstype, uuid: &str, mp: Option<&str>, (offset, size): (u64, u64)| Fs {
        device: device.into(),
        fstype,
        uuid: uuid.into(),
        label: None,
        mountpoint: mp.map(String::from),
        disk: 0,
        offset,
        size,
    };
    Guest {
        images: vec![wrap(&disk, fmt)],
        raw: vec![disk],
        filesystems: vec![
            fs("/dev/sda1", "ext3", ru, Some("/"), r),
            fs("/dev/sda2", "swap", su, None, s),
        ],
        vg: None,
    }
}

/// An Alpine guest on two disks: the first a filesystem with no partition table (root,
/// OpenRC, extlinux), the second partitioned with /home on sdb1, named `/dev/sdb1` in fstab.
/// /etc/motd is a symlink into /home, across the mountpoint.
pub(crate) fn two_disks(dir: &Path, fmt: &str) -> Guest {
    let ru = "d0000000-0000-4000-8000-000000000001";
    let hu = "d0000000-0000-4000-8000-000000000002";
    let fstab = format!("UUID={ru}\t/\text4\trw,relatime 0 1\n/dev/sdb1\t/home\text4\trw,relatime 0 2\n/dev/cdrom\t/media/cdrom\tiso9660\tnoauto,ro 0 0\n");
    let root = dir.join("trees/root");
    put(&root, "/etc/fstab", fstab);
    put(&root, "/etc/alpine-release", "3.18.4\n");
    put(
        &root,
        "/etc/os-release",
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME=\"Alpine Linux v3.18\"\nHOME_URL=\"https://alpinelinux.org/\"\n",
    );
    put(&root, "/etc/hostname", "alpine-guest\n");
    copy_host(&root, "/bin/busybox", "/usr/bin/dash");
    symlink(&root, "/bin/sh", "/bin/busybox");
    put(&root, "/sbin/openrc", "openrc\n");
    symlink(&root, "/sbin/init", "/bin/busybox");
    mkdir(&root, "/etc/runlevels/default");
    put(&root, "/etc/apk/world", "alpine-base\n");
    put(&root, "/sbin/apk", "apk\n");
    put(&root, "/boot/vmlinuz-lts", "kernel\n");
    put(&root, "/boot/initramfs-lts", initrd());
    put(
        &root,
        "/boot/extlinux.conf",
        "DEFAULT lts\nLABEL lts\n  LINUX vmlinuz-lts\n  INITRD initramfs-lts\n",
    );
    put(
        &root,
        "/lib/modules/6.1.55-0-lts/kernel/drivers/block/virtio_blk.ko.gz",
        "gz",
    );
    put(
        &root,
        "/lib/modules/6.1.55-0-lts/kernel/drivers/net/virtio_net.ko.gz",
        "gz",
    );
    put(
        &root,
        "/lib/modules/6.1.55-0-lts/kernel/drivers/scsi/virtio_scsi.ko.gz",
        "gz",
    );
    symlink(&root, "/etc/motd", "../home/user/motd.txt");
    mkdir(&root, "/home");
    mkdir(&root, "/media/cdrom");
    let home = dir.join("trees/home");
    put(&home, "/user/motd.txt", "Welcome to the second disk.\n");
    put(&home, "/user/.profile", "export PS1='$ '\n");

    let d1 = dir.join("alpine-root.img");
    mkfs(&d1, "ext4", 96 * MIB, ru, None, Some(&root), &[]);
    let d2 = dir.join("alpine-home.img");
    let size = 64 * MIB;
    sfdisk_image(&d2, size, "label: dos\nstart=2048, type=83\n");
    let fsimg = dir.join("fs.img");
    let h = (2048 * 512, size - 2048 * 512);
    mkfs(&fsimg, "ext4", h.1, hu, None, Some(&home), &[]);
    write_into(&d2, h.0, &fsimg);
    std::fs::remove_file(&fsimg).unwrap();
    Guest {
        images: vec![wrap(&d1, fmt), wrap(&d2, fmt)],
        raw: vec![d1, d2],
        filesystems: vec![
            Fs {
                device: "/dev/sda".into(),
                fstype: "ext4",
                uuid: ru.into(),
                label: None,
                mountpoint: Some("/".into()),
                disk: 0,
                offset: 0,
                size: 96 * MIB,
            },
            Fs {
                device: "/dev/sdb1".into(),
                fstype: "ext4",
                uuid: hu.into(),
                label: None,
                mountpoint: Some("/home".into()),
                disk: 1,
                offset: h.0,
                size: h.1,
            },
        ],
        vg: None,
    }
}

/// The RHEL 8 guest's kernel release.
pub(crate) const RHEL8_KERNEL: &str = "4.18.0-513.el8.x86_64";
/// Its machine id, which names its BLS entries.
pub(crate) const RHEL8_MACHINE_ID: &str = "3f5c2a7d9e8b4c1a8d6e0f2b4a6c8e0d";

/// A RHEL 8.9 guest as Anaconda lays it out on a UEFI-less KVM install: GPT with XFS /boot on
/// sda1 and an LVM PV on sda2 whose VG holds XFS `root` and `var`; usr-merged, systemd, dnf,
/// grub2 with BLS entries in /boot/loader/entries. Every filesystem is made empty by
/// mkfs.xfs and filled through a kernel loop mount (so it has what a running system writes:
/// nanosecond times, xattrs in several namespaces, hard links, a FIFO, a sparse file), then
/// written into the disk where the partition table and the LVM metadata put it.
pub(crate) fn rhel8(dir: &Path, fmt: &str) -> Guest {
    use super::kernel::KernelMount;
    let vg = vg_name("rhel");
    let k = RHEL8_KERNEL;
    let mid = RHEL8_MACHINE_ID;
    let boot_uuid = "8b000000-0000-4000-8000-000000000001";
    let root_uuid = "8b000000-0000-4000-8000-000000000002";
    let var_uuid = "8b000000-0000-4000-8000-000000000003";
    let fstab = format!(
        "\n#\n# /etc/fstab\n# Created by anaconda on Thu Oct 12 09:14:07 2023\n#\n\
         # Accessible filesystems, by reference, are maintained under '/dev/disk/'.\n\
         # See man pages fstab(5), findfs(8), mount(8) and/or blkid(8) for more info.\n#\n\
         /dev/mapper/{vg}-root   /                       xfs     defaults        0 0\n\
         UUID={boot_uuid} /boot                   xfs     defaults        0 0\n\
         /dev/mapper/{vg}-var    /var                    xfs     defaults        0 0\n"
    );
    let fill_root = |r: &Path| {
        put(
            r,
            "/etc/redhat-release",
            "Red Hat Enterprise Linux release 8.9 (Ootpa)\n",
        );
        symlink(r, "/etc/system-release", "redhat-release");
        put(
            r,
            "/etc/os-release",
            "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"8.9 (Ootpa)\"\nID=\"rhel\"\n\
             ID_LIKE=\"fedora\"\nVERSION_ID=\"8.9\"\nPLATFORM_ID=\"platform:el8\"\n\
             PRETTY_NAME=\"Red Hat Enterprise Linux 8.9 (Ootpa)\"\nANSI_COLOR=\"0;31\"\n\
             CPE_NAME=\"cpe:/o:redhat:enterprise_linux:8::baseos\"\n\
             HOME_URL=\"https://www.redhat.com/\"\n",
        );
        put(r, "/etc/hostname", "rhel8.example.com\n");
        put(r, "/etc/machine-id", format!("{mid}\n"));
        put(r, "/etc/fstab", &fstab);
        put(
            r,
            "/etc/default/grub",
            format!(
                "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n\
                 GRUB_CMDLINE_LINUX=\"crashkernel=auto resume=/dev/mapper/{vg}-swap rd.lvm.lv={vg}/root\"\n\
                 GRUB_ENABLE_BLSCFG=true\n"
            ),
        );
        symlink(r, "/etc/grub2.cfg", "../boot/grub2/grub.cfg");
        symlink(r, "/bin", "usr/bin");
        symlink(r, "/sbin", "usr/sbin");
        symlink(r, "/lib", "usr/lib");
        symlink(r, "/lib64", "usr/lib64");
        copy_host(r, "/usr/bin/bash", "/usr/bin/dash");
        symlink(r, "/usr/bin/sh", "bash");
        put(r, "/usr/lib/systemd/systemd", "not really systemd\n");
        symlink(r, "/usr/sbin/init", "../lib/systemd/systemd");
        put(r, "/usr/bin/rpm", "rpm\n");
        put(r, "/usr/bin/dnf-3", "#!/usr/libexec/platform-python\n");
        symlink(r, "/usr/bin/dnf", "dnf-3");
        symlink(r, "/usr/bin/yum", "dnf-3");
        let m = format!("/usr/lib/modules/{k}");
        put(
            r,
            &format!("{m}/kernel/drivers/block/virtio_blk.ko.xz"),
            "xz",
        );
        put(r, &format!("{m}/kernel/drivers/net/virtio_net.ko.xz"), "xz");
        put(
            r,
            &format!("{m}/kernel/drivers/scsi/virtio_scsi.ko.xz"),
            "xz",
        );
        put(
            r,
            &format!("{m}/modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
        );
        symlink(r, &format!("{m}/vmlinuz"), &format!("/boot/vmlinuz-{k}"));
        for d in [
            "/boot", "/var", "/proc", "/sys", "/dev", "/run", "/tmp", "/home",
        ] {
            mkdir(r, d);
        }
    };
    let fill_boot = |b: &Path| {
        put(b, &format!("/vmlinuz-{k}"), "kernel image\n".repeat(1000));
        put(b, &format!("/.vmlinuz-{k}.hmac"), "hmac\n");
        put(
            b,
            &format!("/initramfs-{k}.img"),
            "initramfs\n".repeat(3000),
        );
        put(b, &format!("/config-{k}"), "CONFIG_VIRTIO=y\n");
        put(b, &format!("/System.map-{k}"), "ffffffff81000000 T _text\n");
        put(
            b,
            "/grub2/grub.cfg",
            "### BEGIN /etc/grub.d/10_linux ###\ninsmod part_gpt\ninsmod xfs\n\
             set root='hd0,gpt1'\ninsmod blscfg\nblscfg\n### END /etc/grub.d/10_linux ###\n",
        );
        // grubenv is a 1 KiB block padded with '#'.
        let mut env = format!(
            "# GRUB Environment Block\nsaved_entry={mid}-{k}\n\
             kernelopts=root=/dev/mapper/{vg}-root ro crashkernel=auto rd.lvm.lv={vg}/root\n\
             boot_success=0\n"
        );
        env += &"#".repeat(1024 - env.len());
        put(b, "/grub2/grubenv", env);
        put(
            b,
            &format!("/loader/entries/{mid}-{k}.conf"),
            format!(
                "title Red Hat Enterprise Linux ({k}) 8.9 (Ootpa)\nversion {k}\n\
                 linux /vmlinuz-{k}\ninitrd /initramfs-{k}.img $tuned_initrd\n\
                 options $kernelopts $tuned_params\nid rhel-20231012000000-{k}\n\
                 grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n"
            ),
        );
        put(
            b,
            &format!("/loader/entries/{mid}-0-rescue.conf"),
            format!(
                "title Red Hat Enterprise Linux (0-rescue-{mid}) 8.9 (Ootpa)\nversion 0-rescue-{mid}\n\
                 linux /vmlinuz-0-rescue-{mid}\ninitrd /initramfs-0-rescue-{mid}.img\n\
                 options $kernelopts\nid rhel-20231012000000-0-rescue\ngrub_users $grub_users\n\
                 grub_arg --unrestricted\ngrub_class kernel\n"
            ),
        );
        mkdir(b, "/efi/EFI/redhat");
    };
    let fill_var = |v: &Path| {
        put(
            v,
            "/log/messages",
            "Oct 12 09:20:01 rhel8 systemd[1]: Started Session 1 of user root.\n".repeat(300),
        );
        put(v, "/lib/rpm/Packages", "rpmdb\n".repeat(5000));
        put(v, "/lib/rpm/.rpm.lock", "");
        put(v, "/spool/mail/alice", "From root\n");
        mkdir(v, "/tmp");
        mkdir(v, "/log/audit");
        mkdir(v, "/cache/dnf");
        for i in 0..200 {
            put(
                v,
                &format!("/cache/dnf/pkg-{i:03}.rpm"),
                format!("pkg {i}\n"),
            );
        }
    };
    // The parts no builder helper makes: owners, a hard link, a FIFO, a sparse file, a long
    // symlink, set-id and sticky bits, and xattrs in the user, trusted and security
    // namespaces (SELinux labels, as every RHEL file has) plus a POSIX ACL.
    let extras = |at: &Path, which: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = |s: &str| at.join(s);
        match which {
            "root" => {
                std::fs::create_dir_all(p("home/alice")).unwrap();
                put(at, "/home/alice/.bashrc", "# .bashrc\n");
                run(Command::new("chown")
                    .args(["-R", "1000:1000"])
                    .arg(p("home/alice")));
                std::fs::hard_link(p("usr/bin/rpm"), p("usr/bin/rpmquery")).unwrap();
                run(Command::new("mkfifo").arg(p("run/initctl")));
                run(Command::new("mknod")
                    .arg(p("dev/null"))
                    .args(["c", "1", "3"]));
                std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777))
                    .unwrap();
                put(at, "/usr/bin/passwd", "suid\n");
                std::fs::set_permissions(
                    p("usr/bin/passwd"),
                    std::fs::Permissions::from_mode(0o4755),
                )
                .unwrap();
                symlink(at, "/usr/share/long-link", &"deep/".repeat(120));
                run(Command::new("setfacl")
                    .args(["-m", "u:1000:rx"])
                    .arg(p("etc/fstab")));
            }
            "var" => {
                let f = std::fs::File::create(p("lib/rpm/__db.001")).unwrap();
                f.set_len(64 << 20).unwrap();
                use std::os::unix::fs::FileExt;
                f.write_all_at(b"middle", 32 << 20).unwrap();
                std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777))
                    .unwrap();
                run(Command::new("chown")
                    .args(["1000:12"])
                    .arg(p("spool/mail/alice")));
            }
            _ => {}
        }
        let targets: &[(&str, &str, &str)] = match which {
            "root" => &[
                (
                    "etc/fstab",
                    "security.selinux",
                    "system_u:object_r:etc_t:s0",
                ),
                ("bin", "security.selinux", "system_u:object_r:bin_t:s0"),
                ("etc/hostname", "user.origin", "anaconda"),
                ("usr/bin/passwd", "trusted.overlay.opaque", "y"),
            ],
            "boot" => &[
                (
                    "grub2/grub.cfg",
                    "security.selinux",
                    "system_u:object_r:boot_t:s0",
                ),
                ("loader/entries", "user.origin", "kernel-install"),
            ],
            _ => &[
                (
                    "log/messages",
                    "security.selinux",
                    "system_u:object_r:var_log_t:s0",
                ),
                ("lib/rpm", "user.origin", "rpm"),
            ],
        };
        for (path, name, value) in targets {
            run(Command::new("setfattr")
                .args(["-h", "-n", name, "-v", value])
                .arg(p(path)));
        }
        // A value too big for the inode: the root directory's attribute fork becomes a leaf
        // block.
        run(Command::new("setfattr")
            .args(["-n", "user.big", "-v", &"x".repeat(3000)])
            .arg(at));
    };

    // Disk: sda1 /boot (304 MiB: mkfs.xfs wants 300), sda2 the PV, 1 GiB in all.
    let disk = dir.join("rhel8.img");
    let size = 1024 * MIB;
    let p1 = (2048u64, 622592u64);
    let p2_start = p1.0 + p1.1;
    sfdisk_image(
        &disk,
        size,
        &format!(
            "label: gpt\nstart={}, size={}, type=L, name=boot\nstart={p2_start}, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=lvm\n",
            p1.0, p1.1
        ),
    );
    let (p1_off, p1_len) = (p1.0 * 512, p1.1 * 512);
    let p2_off = p2_start * 512;
    let p2_len = size - p2_off - 33 * 512;

    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&disk, p2_off, Some(p2_len));
    lvm("pvcreate", &["-ff", "-y", &dev]);
    lvm("vgcreate", &["-s", "4m", &vg, &dev]);
    let pe_start: u64 = lvm(
        "pvs",
        &[
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "-o",
            "pe_start",
            &dev,
        ],
    )
    .trim()
    .parse()
    .unwrap();
    // 76 extents each (304 MiB), var after root.
    let lvs = vec![
        LvSpec {
            name: "root",
            segs: vec![seg(0, 76, 0, 0)],
        },
        LvSpec {
            name: "var",
            segs: vec![seg(0, 76, 0, 76)],
        },
    ];
    restore_with_lvs(dir, &vg, &lvs);
    loops.detach();
    let places = [PvPlace {
        file: disk.clone(),
        data_start: p2_off + pe_start,
    }];

    let fsimg = dir.join("fs.img");
    let mnt = dir.join("fill");
    let mut filesystems = Vec::new();
    type Filler<'a> = &'a dyn Fn(&Path);
    let specs: [(&str, &str, Option<&str>, Filler); 3] = [
        ("boot", boot_uuid, Some("/boot"), &fill_boot),
        ("root", root_uuid, Some("/"), &fill_root),
        ("var", var_uuid, Some("/var"), &fill_var),
    ];
    for (name, uuid, mp, fill) in specs {
        let len = if name == "boot" { p1_len } else { 76 * 4 * MIB };
        mkfs(&fsimg, "xfs", len, uuid, None, None, &[]);
        let m = KernelMount::new(&fsimg, &mnt, "")
            .unwrap_or_else(|e| panic!("kernel mount of the new {name} XFS: {e}"));
        fill(&mnt);
        extras(&mnt, name);
        m.unmount().unwrap();
        let (device, offset) = if name == "boot" {
            write_into(&disk, p1_off, &fsimg);
            ("/dev/sda1".to_string(), p1_off)
        } else {
            let l = lvs.iter().find(|l| l.name == name).unwrap();
            write_lv(&places, 4 * MIB, l, &std::fs::read(&fsimg).unwrap());
            let first = l.segs[0].stripes[0].1;
            (
                format!("/dev/{vg}/{name}"),
                p2_off + pe_start + first * 4 * MIB,
            )
        };
        filesystems.push(Fs {
            device,
            fstype: "xfs",
            uuid: uuid.into(),
            label: None,
            mountpoint: mp.map(String::from),
            disk: 0,
            offset,
            size: len,
        });
    }
    std::fs::remove_file(&fsimg).unwrap();
    Guest {
        images: vec![wrap(&disk, fmt)],
        raw: vec![disk],
        filesystems,
        vg: Some(vg),
    }
}
