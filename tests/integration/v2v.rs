//! `ferry v2v` end to end: guests built with the real tools, described by a .vmx, an xl
//! .cfg or nothing (`-i disk`), converted into an output directory. The oracles: `qemu-img
//! check` and `qemu-img info` on the outputs, the kernel mounting the converted root
//! filesystem and reading the fixed files, `e2fsck -fn`, `virt-xml-validate` and `virsh
//! define` on the domain XML. Sources are hashed before and after; after a signal at any
//! stage the output directory holds exactly what it held before.

use crate::common;

use common::guest::{self, debian_root, mkfs, put, Fs, Guest};
use common::kernel::{self, KernelMount};
use common::{qemu_img, run_ferry, sfdisk_image, write_into, Unchanged};
use ferry::meta::libvirt;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Whether this machine can build guests and loop-mount them; says why not (or fails in CI).
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = common::have_tools(&[
        "mkfs.ext4",
        "mkfs.ext3",
        "e2fsck",
        "mkswap",
        "sfdisk",
        "losetup",
        "qemu-img",
    ]);
    if root && tools {
        return true;
    }
    assert!(
        !kernel::required(),
        "cannot run the v2v tests (root: {root}, tools: {tools}) and FERRY_REQUIRE_FUSE=1"
    );
    eprintln!("SKIP: v2v tests need root (loop mounts) and e2fsprogs, util-linux, qemu-img");
    false
}

/// The files of a directory (names), to compare before and after.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A Debian 12-like guest as VMware would have it: one disk, `/dev/sda1` (ext4, /) and
/// `/dev/sda2` (swap) named by kernel name in fstab and on GRUB's command line, virtio
/// drivers as modules, 6 MiB of file data (so the copy has several chunks).
fn vmware_debian(dir: &Path) -> Guest {
    vmware_debian_with(dir, &guest::initrd())
}

/// [`vmware_debian`] with `initrd` as its initramfs image.
fn vmware_debian_with(dir: &Path, initrd: &[u8]) -> Guest {
    let root = dir.join("trees/root");
    debian_root(
        &root,
        "/dev/sda1\t/\text4\terrors=remount-ro\t0 1\n/dev/sda2\tnone\tswap\tsw\t0 0\n",
    );
    put(&root, "/boot/vmlinuz-6.1.0-13-amd64", "kernel\n");
    put(&root, "/boot/initrd.img-6.1.0-13-amd64", initrd);
    put(
        &root,
        "/boot/grub/grub.cfg",
        "menuentry 'Debian' {\n\tlinux /boot/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet\n\tinitrd /boot/initrd.img-6.1.0-13-amd64\n}\n",
    );
    put(&root, "/srv/blob.bin", common::pseudo_random(7, 6 << 20));
    let disk = dir.join("deb.img");
    let size = 128 * MIB;
    sfdisk_image(
        &disk,
        size,
        "label: dos\nstart=2048, size=196608, type=83\nstart=198656, type=82\n",
    );
    let r = (2048 * 512, 196608 * 512);
    let s = (198656 * 512, size - 198656 * 512);
    let (ru, su) = (
        "e0000000-0000-4000-8000-000000000001",
        "e0000000-0000-4000-8000-000000000002",
    );
    let fsimg = dir.join("fs.img");
    mkfs(&fsimg, "ext4", r.1, ru, None, Some(&root), &[]);
    write_into(&disk, r.0, &fsimg);
    mkfs(&fsimg, "swap", s.1, su, None, None, &[]);
    write_into(&disk, s.0, &fsimg);
    std::fs::remove_file(&fsimg).unwrap();
    let vmdk = dir.join("deb.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicSparse",
        disk.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
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
        images: vec![vmdk],
        raw: vec![disk],
        filesystems: vec![
            fs("/dev/sda1", "ext4", ru, Some("/"), r),
            fs("/dev/sda2", "swap", su, None, s),
        ],
        vg: None,
    }
}

/// The converted root filesystem of the VMware guest (in `raw`) passes `e2fsck -fn`, and
/// everything but the fixed files reads as in the source: its data file, byte for byte.
fn clean_with_data_intact(raw: &Path, rootfs: &Fs, tmp: &Path) {
    e2fsck_range(raw, rootfs.offset, rootfs.size, tmp);
    let m = KernelMount::range(raw, rootfs.offset, rootfs.size, &tmp.join("k2"), "ro").unwrap();
    assert_eq!(
        std::fs::read(m.path().join("srv/blob.bin")).unwrap(),
        common::pseudo_random(7, 6 << 20)
    );
    m.unmount().unwrap();
}

/// The .vmx of the VMware guest, its disk beside it.
fn write_vmx(dir: &Path, vmdk_name: &str) -> PathBuf {
    let vmx = dir.join("deb12-web.vmx");
    std::fs::write(
        &vmx,
        format!(
            ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"14\"\n\
             displayName = \"deb12-web\"\nguestOS = \"debian11-64\"\nmemsize = \"2048\"\n\
             numvcpus = \"2\"\ncpuid.coresPerSocket = \"2\"\n\
             uuid.bios = \"56 4d 9b ef 11 22 33 44-55 66 77 88 99 aa bb cc\"\n\
             scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"lsilogic\"\n\
             scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{vmdk_name}\"\n\
             scsi0:0.deviceType = \"scsi-hardDisk\"\n\
             ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"e1000\"\n\
             ethernet0.networkName = \"VM Network\"\nethernet0.addressType = \"static\"\n\
             ethernet0.address = \"00:50:56:01:02:03\"\n"
        ),
    )
    .unwrap();
    vmx
}

/// `e2fsck -fn` of the byte range of `image`, copied out: it must be clean.
fn e2fsck_range(image: &Path, off: u64, len: u64, tmp: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).unwrap();
    let part = tmp.join("fsck-part.img");
    let out = std::fs::File::create(&part).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], off + pos).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            out.write_all_at(&buf[..n], pos).unwrap();
        }
        pos += n as u64;
    }
    out.set_len(len).unwrap();
    drop(out);
    let o = Command::new(common::tool("e2fsck").unwrap())
        .arg("-fn")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(part).unwrap();
}

/// `virt-xml-validate FILE domain` and `virsh -c test:///default define FILE`, when installed
/// (a loud skip otherwise, a failure under FERRY_REQUIRE_FUSE=1).
fn validate_xml(xml: &Path) {
    if !common::have_tools(&["virt-xml-validate", "virsh", "xmllint"]) {
        return;
    }
    let v = Command::new("virt-xml-validate")
        .arg(xml)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "virt-xml-validate: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let d = Command::new("virsh")
        .args(["-q", "-c", "test:///default", "define"])
        .arg(xml)
        .output()
        .unwrap();
    assert!(
        d.status.success(),
        "virsh define: {}",
        String::from_utf8_lossy(&d.stderr)
    );
}

/// The domain XML names the guest's OS by its libosinfo ID where the host's osinfo-db knows
/// the short ID `ferry inspect` gives (the database's own files, searched with grep, are the
/// oracle), and names none where it does not (a release newer than the database, or no
/// database, as on CI).
fn check_libosinfo(xml: &Path, image: &Path) {
    let j = common::ferry_json(&["inspect", "--json", image.to_str().unwrap()]);
    let short = j["roots"][0]["osinfo"].as_str().map(str::to_string);
    let expected = short.as_ref().and_then(|s| {
        let out = Command::new("grep")
            .args([
                "-rl",
                &format!("<short-id>{s}</short-id>"),
                "/usr/share/osinfo/os",
            ])
            .output()
            .ok()?;
        let file = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .to_string();
        let text = std::fs::read_to_string(file).ok()?;
        let start = text.find("<os id=\"")? + "<os id=\"".len();
        let len = text[start..].find('"')?;
        Some(text[start..start + len].to_string())
    });
    let x = std::fs::read_to_string(xml).unwrap();
    match &expected {
        Some(id) => assert!(
            x.contains(&format!("<libosinfo:os id=\"{id}\"/>")),
            "{short:?} is {id} in osinfo-db: {x}"
        ),
        None => assert!(!x.contains("libosinfo:os"), "{short:?}: {x}"),
    }
    eprintln!("libosinfo: {short:?} -> {expected:?}");
}

/// Runs ferry, which must succeed; its stdout.
fn ferry_ok<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> String {
    let o = Command::new(common::ferry_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ferry {:?} failed: {}\n{}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The kernel's view of a file in the root filesystem `fs` of the raw image `raw`.
fn kernel_read(raw: &Path, fs: &Fs, files: &[&str], tmp: &Path) -> Vec<String> {
    let m = KernelMount::range(raw, fs.offset, fs.size, &tmp.join("kmnt"), "ro")
        .unwrap_or_else(|e| panic!("kernel mount of the converted root: {e}"));
    let out = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(m.path().join(f.trim_start_matches('/')))
                .unwrap_or_else(|e| panic!("{f}: {e}"))
        })
        .collect();
    m.unmount().unwrap();
    out
}

#[test]
fn a_vmx_guest_becomes_a_kvm_guest_the_kernel_reads() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = vmware_debian(tmp.path());
    let vmx = write_vmx(tmp.path(), "deb.vmdk");
    let _same = Unchanged::new(&[g.images[0].as_path(), vmx.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "was here before\n").unwrap();

    let report = ferry_ok(
        &[
            "v2v",
            "-i",
            "vmx",
            vmx.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--network",
            "VM Network:default",
            "--json",
        ],
        &[],
    );
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(r["name"], "deb12-web");
    assert_eq!(r["guest"]["os"], "linux");
    assert_eq!(r["guest"]["source_hypervisor"], "vmware");
    assert_eq!(r["disk_bus"], "virtio", "{report}");
    assert_eq!(r["nic_model"], "virtio");
    let applied: Vec<&str> = r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["status"] == "applied")
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(applied.contains(&"fstab-devices"), "{applied:?}");
    assert!(applied.contains(&"grub2-devices"), "{applied:?}");

    // Exactly the disk and the XML were added; no temporary file is left.
    let disk = out.join("deb12-web-sda.qcow2");
    let xml = out.join("deb12-web.xml");
    assert_eq!(
        listing(&out),
        ["keep.txt", "deb12-web-sda.qcow2", "deb12-web.xml"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        r["disks"][0]["output"],
        disk.canonicalize().unwrap().to_str().unwrap()
    );
    let check = qemu_img(&["check", disk.to_str().unwrap()]);
    assert!(check.contains("No errors were found"), "{check}");
    let info: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--output=json",
        disk.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 128 * MIB);
    assert!(info.get("backing-filename").is_none(), "{info}");

    // The XML: the converted disk on virtio, the source's MAC on virtio-net.
    let text = std::fs::read_to_string(&xml).unwrap();
    let d = libvirt::parse("out.xml", text.as_bytes()).unwrap();
    assert_eq!(d.name.as_deref(), Some("deb12-web"));
    assert_eq!(d.memory_bytes, Some(2 << 30));
    assert_eq!(d.vcpus, Some(2));
    assert_eq!(
        d.disks[0].source.as_deref(),
        disk.canonicalize().unwrap().to_str()
    );
    assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
    assert_eq!(d.disks[0].target.as_deref(), Some("vda"));
    assert_eq!(d.nics[0].mac.as_deref(), Some("00:50:56:01:02:03"));
    assert_eq!(d.nics[0].model.as_deref(), Some("virtio"));
    assert_eq!(d.nics[0].network.as_deref(), Some("default"));
    validate_xml(&xml);
    check_libosinfo(&xml, &g.images[0]);

    // The kernel mounts the converted root and reads the fixed files; e2fsck finds it clean.
    let raw = tmp.path().join("converted.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        disk.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let rootfs = g.fs("/dev/sda1");
    let swap = g.fs("/dev/sda2");
    let [fstab, grub, blob] = kernel_read(
        &raw,
        rootfs,
        &["/etc/fstab", "/boot/grub/grub.cfg", "/etc/hostname"],
        tmp.path(),
    )
    .try_into()
    .unwrap();
    assert!(fstab.contains(&format!("UUID={}", rootfs.uuid)), "{fstab}");
    assert!(fstab.contains(&format!("UUID={}", swap.uuid)), "{fstab}");
    assert!(
        !fstab.contains("/dev/sda") && !fstab.contains("/dev/xvd"),
        "{fstab}"
    );
    assert!(
        grub.contains(&format!("root=UUID={}", rootfs.uuid)),
        "{grub}"
    );
    assert_eq!(blob, "installer-guest\n");
    clean_with_data_intact(&raw, rootfs, tmp.path());

    // The converted guest, read back through its own domain XML, needs nothing more.
    let again: serde_json::Value = serde_json::from_str(&ferry_ok(
        &[
            "v2v",
            "-i",
            "libvirt",
            xml.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(again["changed_paths"], 0, "{again}");
    assert_eq!(again["disk_bus"], "virtio");
    assert_eq!(again["disks"][0]["source_format"], "qcow2");
}

#[test]
fn two_disks_convert_in_order_preallocated() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::two_disks(tmp.path(), "qcow2");
    let (a, b) = (&g.images[0], &g.images[1]);
    let _same = Unchanged::new(&[a.as_path(), b.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let r: serde_json::Value = serde_json::from_str(&ferry_ok(
        &[
            "v2v",
            "-i",
            "disk",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-oa",
            "preallocated",
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(r["name"], "alpine-root");
    assert_eq!(r["disk_bus"], "virtio");
    let outs = [
        out.join("alpine-root-sda.qcow2"),
        out.join("alpine-root-sdb.qcow2"),
    ];
    for (i, o) in outs.iter().enumerate() {
        let check = qemu_img(&["check", o.to_str().unwrap()]);
        assert!(
            check.contains("No errors were found") && check.contains("100.00% allocated"),
            "{check}"
        );
        let info: serde_json::Value =
            serde_json::from_str(&qemu_img(&["info", "--output=json", o.to_str().unwrap()]))
                .unwrap();
        let vsize = info["virtual-size"].as_u64().unwrap();
        assert_eq!(vsize, std::fs::metadata(&g.raw[i]).unwrap().len());
        assert!(info["actual-size"].as_u64().unwrap() >= vsize, "{info}");
        assert_eq!(r["disks"][i]["target"], ["vda", "vdb"][i]);
    }
    let xml = out.join("alpine-root.xml");
    let d = libvirt::parse("x", &std::fs::read(&xml).unwrap()).unwrap();
    let sources: Vec<_> = d.disks.iter().map(|x| x.source.clone().unwrap()).collect();
    assert_eq!(
        sources,
        outs.iter()
            .map(|o| o.canonicalize().unwrap().display().to_string())
            .collect::<Vec<_>>()
    );
    validate_xml(&xml);
    // /home on the second disk is named by UUID now; the kernel reads it from the first.
    let raw = tmp.path().join("root.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        outs[0].to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let rootfs = g.fs("/dev/sda");
    let [fstab] = kernel_read(&raw, rootfs, &["/etc/fstab"], tmp.path())
        .try_into()
        .unwrap();
    let home = g.fs("/dev/sdb1");
    assert!(fstab.contains(&format!("UUID={}", home.uuid)), "{fstab}");
    assert!(!fstab.contains("/dev/sdb1"), "{fstab}");
    e2fsck_range(&raw, rootfs.offset, rootfs.size, tmp.path());
}

#[test]
fn a_xen_pv_guest_without_virtio_falls_back_to_sata_and_e1000() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::xen_with_default_kernel(tmp.path(), "raw");
    let img = g.images[0].canonicalize().unwrap();
    let cfg = tmp.path().join("sles11.cfg");
    std::fs::write(
        &cfg,
        format!(
            "# xl config of a PV guest\nname = \"sles11-pv\"\nmemory = 1024\nvcpus = 1\n\
             bootloader = \"pygrub\"\n\
             disk = [ 'format=raw, vdev=xvda, access=rw, target={}' ]\n\
             vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]\n",
            img.display()
        ),
    )
    .unwrap();
    let _same = Unchanged::new(&[img.as_path(), cfg.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let stdout = ferry_ok(
        &[
            "v2v",
            "-i",
            "xen",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-of",
            "raw",
            "-oa",
            "preallocated",
            "--bridge",
            "xenbr0:br0",
            "--machine-readable",
        ],
        &[],
    );
    // Every stdout line is one JSON object; the stages come in order, the result last.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let stages: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "stage")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    let order = [
        "Opening the source",
        "Inspecting the guest",
        "Fixing the guest for KVM",
        "Finding the free space",
        "Copying disk 1/1",
        "Creating the domain XML",
        "Finishing off",
    ];
    assert_eq!(stages.len(), order.len(), "{stages:?}");
    for (s, o) in stages.iter().zip(order) {
        assert!(s.starts_with(o), "{stages:?}");
    }
    assert!(lines
        .iter()
        .any(|l| l["type"] == "progress" && l["percent"] == 100));
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "warning")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("virtio-blk") && w.contains("sata")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("e1000")), "{warnings:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "result");
    let r = &last["report"];
    assert_eq!(r["disk_bus"], "sata");
    assert_eq!(r["nic_model"], "e1000");
    assert_eq!(r["guest"]["source_hypervisor"], "xen");

    // -of raw -oa preallocated, as qemu-img sees it: raw, every block allocated.
    let disk = out.join("sles11-pv-sda.raw");
    let info: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--output=json",
        disk.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["format"], "raw");
    let vsize = std::fs::metadata(&img).unwrap().len();
    assert_eq!(info["virtual-size"], vsize);
    assert!(
        info["actual-size"].as_u64().unwrap() >= vsize,
        "preallocated: {info}"
    );
    let xml = out.join("sles11-pv.xml");
    let d = libvirt::parse("x", &std::fs::read(&xml).unwrap()).unwrap();
    assert_eq!(d.disks[0].target.as_deref(), Some("sda"));
    assert_eq!(d.disks[0].bus, Some(ferry::meta::Bus::Sata));
    assert_eq!(d.disks[0].format.as_deref(), Some("raw"));
    assert_eq!(d.nics[0].model.as_deref(), Some("e1000"));
    assert_eq!(d.nics[0].bridge.as_deref(), Some("br0"));
    assert_eq!(d.nics[0].mac.as_deref(), Some("00:16:3e:00:00:01"));
    validate_xml(&xml);
    check_libosinfo(&xml, &img);

    // The kernel reads the converted root straight from the raw output.
    let rootfs = g.fs("/dev/sda1");
    let [fstab, inittab, menu] = kernel_read(
        &disk,
        rootfs,
        &["/etc/fstab", "/etc/inittab", "/boot/grub/menu.lst"],
        tmp.path(),
    )
    .try_into()
    .unwrap();
    assert!(fstab.contains(&format!("UUID={}", rootfs.uuid)), "{fstab}");
    assert!(
        !fstab.contains("/dev/xvda") && !fstab.contains("/dev/sda"),
        "{fstab}"
    );
    assert!(
        inittab.contains("ttyS0") && !inittab.contains(" hvc0"),
        "{inittab}"
    );
    assert!(
        !menu.contains("console=hvc0") && !menu.contains("/dev/xvda"),
        "{menu}"
    );
    e2fsck_range(&disk, rootfs.offset, rootfs.size, tmp.path());
}

#[test]
fn disk_input_dry_run_writes_nothing_then_a_profile_converts() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::xen_with_default_kernel(tmp.path(), "qcow2");
    let img = g.images[0].clone();
    let _same = Unchanged::new(&[img.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let before = listing(&out);

    let plan = ferry_ok(
        &[
            "v2v",
            "-i",
            "disk",
            img.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
            "-on",
            "renamed",
        ],
        &[],
    );
    assert_eq!(listing(&out), before, "a dry run wrote into -o DIR");
    assert!(plan.contains("<name>renamed</name>"), "{plan}");
    assert!(plan.contains("renamed-sda.qcow2"), "{plan}");
    assert!(
        plan.contains("-/dev/xvda1") && plan.contains("+UUID=c0000000-0000-4000-8000-000000000001"),
        "{plan}"
    );
    assert!(plan.contains("would fix"), "{plan}");
    let j: serde_json::Value = serde_json::from_str(&ferry_ok(
        &[
            "v2v",
            "-i",
            "disk",
            img.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["name"], "xen", "named after the image");
    assert!(j["diff"].as_str().unwrap().contains("+UUID="));
    assert!(j["domain_xml"].as_str().unwrap().contains("<domain"));
    assert_eq!(j["disks"][0]["bytes_written"], serde_json::Value::Null);
    assert_eq!(listing(&out), before);

    // A profile gives the output directory, the format and the bus.
    let prof = tmp.path().join("site.toml");
    std::fs::write(
        &prof,
        format!(
            "output_dir = \"{}\"\nformat = \"raw\"\ndisk_bus = \"ide\"\nmachine = \"pc\"\n",
            out.display()
        ),
    )
    .unwrap();
    ferry_ok(
        &[
            "v2v",
            "-i",
            "disk",
            img.to_str().unwrap(),
            "--profile",
            prof.to_str().unwrap(),
            "-q",
        ],
        &[],
    );
    assert_eq!(
        listing(&out),
        ["keep.txt", "xen-sda.raw", "xen.xml"]
            .map(String::from)
            .into()
    );
    let d = libvirt::parse("x", &std::fs::read(out.join("xen.xml")).unwrap()).unwrap();
    assert_eq!(d.disks[0].bus, Some(ferry::meta::Bus::Ide));
    assert_eq!(d.disks[0].target.as_deref(), Some("hda"));
    validate_xml(&out.join("xen.xml"));
    let raw = out.join("xen-sda.raw");
    let [fstab] = kernel_read(&raw, g.fs("/dev/sda1"), &["/etc/fstab"], tmp.path())
        .try_into()
        .unwrap();
    assert!(!fstab.contains("/dev/xvda"), "{fstab}");

    // Outputs are never replaced: a second run stops before writing anything.
    let sum = common::sha256_file(&raw);
    let o = run_ferry(&[
        "v2v",
        "-i",
        "disk",
        img.to_str().unwrap(),
        "--profile",
        prof.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(common::sha256_file(&raw), sum);
    assert_eq!(listing(&out).len(), 3);

    // A missing disk is named.
    let o = run_ferry(&["v2v", "-i", "disk", "/nonexistent/x.img", "--dry-run"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.img"));
}

/// Which machine-readable line a signal is sent at.
type Trigger<'a> = &'a dyn Fn(&serde_json::Value) -> bool;

/// Runs ferry with `args` (machine-readable) and sends `sig` once a line matches `trigger`
/// (after `scratch_check`); its exit status and every line it printed.
fn interrupt_at(
    args: &[&str],
    trigger: Trigger,
    sig: i32,
    scratch_check: &dyn Fn(),
) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
    let mut child = Command::new(common::ferry_bin())
        .args(args)
        .env(ferry::v2v::TEST_DELAY_ENV, "150")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut sent = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
                if !sent && trigger(&v) {
                    scratch_check();
                    // SAFETY: sending a signal to our own child.
                    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
                    sent = true;
                }
                seen.push(v);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ferry v2v did not finish within 30 s; saw {seen:?}");
            }
        }
    }
    reader.join().unwrap();
    assert!(sent, "the trigger never came: {seen:?}");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferry v2v did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, seen)
}

#[test]
fn signals_at_any_stage_leave_the_output_directory_as_it_was() {
    if !can_run() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let g = vmware_debian(tmp.path());
    let vmx = write_vmx(tmp.path(), "deb.vmdk");
    let _same = Unchanged::new(&[g.images[0].as_path(), vmx.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let before = listing(&out);
    let args = [
        "v2v",
        "-i",
        "vmx",
        vmx.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--machine-readable",
    ];
    let stage = |prefix: &'static str| {
        move |v: &serde_json::Value| {
            v["type"] == "stage" && v["message"].as_str().unwrap().starts_with(prefix)
        }
    };
    let no_check = || {};
    // In the middle of the copy, the partial output is there in the scratch directory.
    let mid_copy = || {
        let partial: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".ferry-v2v-")
            })
            .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
            .collect();
        assert!(
            partial.iter().any(|p| p.ends_with("deb12-web-sda.qcow2")),
            "no partial output while copying: {partial:?}"
        );
    };
    let copying = |v: &serde_json::Value| v["type"] == "progress" && v["done"].as_u64() > Some(0);
    let rounds: [(i32, Trigger, &dyn Fn()); 6] = [
        (libc::SIGINT, &copying, &mid_copy),
        (libc::SIGTERM, &stage("Inspecting"), &no_check),
        (libc::SIGINT, &stage("Fixing"), &no_check),
        (libc::SIGTERM, &stage("Finding the free space"), &no_check),
        (libc::SIGTERM, &stage("Creating the domain XML"), &no_check),
        (libc::SIGHUP, &stage("Finishing off"), &no_check),
    ];
    for (sig, trigger, check) in rounds {
        let (status, seen) = interrupt_at(&args, trigger, sig, check);
        assert_eq!(
            status.code(),
            Some(128 + sig),
            "signal {sig}: {status:?} (signal {:?}); saw {seen:?}",
            status.signal()
        );
        let last = seen.last().unwrap();
        assert_eq!(last["type"], "error", "{seen:?}");
        assert!(
            last["message"].as_str().unwrap().contains("interrupted"),
            "{last}"
        );
        assert_eq!(listing(&out), before, "after signal {sig}");
    }
    // Uninterrupted, the same run completes.
    let o = run_ferry(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(listing(&out).len(), 3);
}

#[test]
fn machine_readable_alone_lists_features_and_help_documents_it() {
    let o = run_ferry(&["v2v", "--machine-readable"]);
    assert!(o.status.success());
    let f = String::from_utf8(o.stdout).unwrap();
    for feat in ["ferry-v2v", "input:vmx", "input:disk", "output-format:raw"] {
        assert!(f.lines().any(|l| l == feat), "{f}");
    }
    let h = run_ferry(&["v2v", "--help"]);
    let help = String::from_utf8(h.stdout).unwrap();
    assert!(help.contains("{\"type\":\"progress\""), "{help}");
    assert!(help.contains("-of"), "{help}");
    let o = run_ferry(&["v2v", "-i", "vmx"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("description file"));
}

/// An OVF descriptor for the VMware guest, its one disk being `href` (gzip-stored if `gz`).
fn write_ovf(path: &Path, href: &str, gz: bool) {
    let comp = if gz { r#" ovf:compression="gzip""# } else { "" };
    std::fs::write(
        path,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="{href}" ovf:id="file1"{comp}/></References>
  <DiskSection><Info>Disks</Info><Disk ovf:capacity="128" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="deb12-ova">
    <Info>A virtual machine</Info>
    <Name>deb12-ova</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1536</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:0a:0b:0c</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
        ),
    )
    .unwrap();
}

/// `SHA256(name)= hex` for each file of `dir`, as VMware writes an OVA's manifest.
fn write_manifest(dir: &Path, mf: &str, files: &[&str]) {
    let text: String = files
        .iter()
        .map(|f| format!("SHA256({f})= {}\n", common::sha256_file(&dir.join(f))))
        .collect();
    std::fs::write(dir.join(mf), text).unwrap();
}

/// Packs `files` of `dir` (in order: the descriptor first) into the tar `ova`.
fn tar(dir: &Path, ova: &Path, files: &[&str]) {
    let st = Command::new("tar")
        .args(["--format=ustar", "-cf", ova.to_str().unwrap(), "-C"])
        .arg(dir)
        .args(files)
        .status()
        .unwrap();
    assert!(st.success());
}

/// An OVA (the VMware guest as a streamOptimized VMDK, its descriptor and a SHA256
/// manifest, in a tar) converts with its disk read inside the tar: nothing is extracted,
/// the OVA is unchanged, the fixed guest reads back through the kernel. The same guest with
/// its disk gzip-stored converts too. A manifest that does not match stops the conversion
/// before anything is written; qemu-img reads the overlay ferry makes over a tar member.
#[test]
fn an_ova_converts_with_its_disk_read_inside_the_tar() {
    if !can_run() || !common::have_tools(&["tar", "gzip"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = vmware_debian(tmp.path());
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        g.raw[0].to_str().unwrap(),
        pkg.join("disk1.vmdk").to_str().unwrap(),
    ]);
    write_ovf(&pkg.join("deb12-ova.ovf"), "disk1.vmdk", false);
    write_manifest(&pkg, "deb12-ova.mf", &["deb12-ova.ovf", "disk1.vmdk"]);
    let ova = tmp.path().join("deb12.ova");
    tar(&pkg, &ova, &["deb12-ova.ovf", "deb12-ova.mf", "disk1.vmdk"]);
    let _same = Unchanged::new(&[ova.as_path()]);

    // The description, with the disk named inside the archive.
    let src: serde_json::Value = serde_json::from_str(&ferry_ok(
        &[
            "v2v",
            "-i",
            "ova",
            ova.to_str().unwrap(),
            "--print-source",
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(src["name"], "deb12-ova");
    assert_eq!(src["memory_bytes"], 1536u64 << 20);
    assert_eq!(src["vcpus"], 2);
    assert_eq!(src["firmware"], "bios");
    assert_eq!(src["hypervisor"], "vmware");
    assert_eq!(src["disks"][0]["bus"], "scsi");
    assert_eq!(src["disks"][0]["target"], "sda");
    assert_eq!(
        src["disks"][0]["source"],
        ova.join("disk1.vmdk").to_str().unwrap()
    );
    assert_eq!(src["nics"][0]["mac"], "00:50:56:0a:0b:0c");
    assert_eq!(src["nics"][0]["model"], "e1000");
    assert_eq!(src["nics"][0]["network"], "VM Network");

    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let report: serde_json::Value = serde_json::from_str(&ferry_ok(
        &[
            "v2v",
            "-i",
            "ova",
            ova.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(report["name"], "deb12-ova");
    assert_eq!(report["input"], "ova");
    assert_eq!(report["guest"]["source_hypervisor"], "vmware");
    assert_eq!(report["disks"][0]["source_format"], "vmdk");
    assert_eq!(
        listing(&out),
        ["deb12-ova-sda.qcow2", "deb12-ova.xml"]
            .map(String::from)
            .into()
    );
    let disk = out.join("deb12-ova-sda.qcow2");
    let check = qemu_img(&["check", disk.to_str().unwrap()]);
    assert!(check.contains("No errors were found"), "{check}");
    validate_xml(&out.join("deb12-ova.xml"));
    let raw = tmp.path().join("converted.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        disk.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let rootfs = g.fs("/dev/sda1");
    let [fstab] = kernel_read(&raw, rootfs, &["/etc/fstab"], tmp.path())
        .try_into()
        .unwrap();
    assert!(fstab.contains(&format!("UUID={}", rootfs.uuid)), "{fstab}");
    assert!(!fstab.contains("/dev/sda"), "{fstab}");
    clean_with_data_intact(&raw, rootfs, tmp.path());

    // qemu-img reads an overlay over the tar member (the json: backing name) as the VMDK.
    let members = ferry::meta::ova::members(&ova).unwrap();
    let m = members.iter().find(|m| m.name == "disk1.vmdk").unwrap();
    let ov = tmp.path().join("member-overlay.qcow2");
    drop(
        ferry::block::overlay::create_over_member(
            &ova, &m.name, m.offset, m.size, None, false, &ov,
        )
        .unwrap(),
    );
    let cmp = Command::new("qemu-img")
        .args(["compare", "-q", ov.to_str().unwrap()])
        .arg(pkg.join("disk1.vmdk"))
        .status()
        .unwrap();
    assert!(
        cmp.success(),
        "qemu-img compare: the overlay differs from the disk"
    );

    // The tar reader against GNU tar's own listing, in its three formats, with a member name
    // longer than ustar's 100 bytes (pax `path`, GNU `L`, or ustar's prefix field).
    let long = format!("{}/disk1.vmdk", "d".repeat(120));
    std::fs::create_dir_all(pkg.join(long.rsplit_once('/').unwrap().0)).unwrap();
    std::fs::copy(pkg.join("deb12-ova.ovf"), pkg.join(&long)).unwrap();
    for fmt in ["pax", "gnu", "ustar"] {
        let t = tmp.path().join(format!("{fmt}.tar"));
        let st = Command::new("tar")
            .args([&format!("--format={fmt}"), "-cf", t.to_str().unwrap(), "-C"])
            .arg(&pkg)
            .args(["deb12-ova.ovf", &long])
            .status()
            .unwrap();
        assert!(st.success());
        let got: Vec<(String, u64)> = ferry::meta::ova::members(&t)
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.size))
            .collect();
        let size = std::fs::metadata(pkg.join("deb12-ova.ovf")).unwrap().len();
        assert_eq!(
            got,
            vec![("deb12-ova.ovf".to_string(), size), (long.clone(), size)],
            "{fmt}"
        );
        let bytes = std::fs::read(&t).unwrap();
        for m in ferry::meta::ova::members(&t).unwrap() {
            let data = &bytes[m.offset as usize..(m.offset + m.size) as usize];
            assert_eq!(
                data,
                std::fs::read(pkg.join("deb12-ova.ovf")).unwrap(),
                "{fmt}"
            );
        }
    }

    // Truncated and garbled packages: an error naming the archive, never a panic.
    let whole = std::fs::read(&ova).unwrap();
    let cut = tmp.path().join("cut.ova");
    let mut cuts: Vec<usize> = vec![0, 100, 511, 512, 1024, 2048, 4096];
    cuts.extend((1..8).map(|i| whole.len() * i / 8));
    for n in cuts {
        std::fs::write(&cut, &whole[..n]).unwrap();
        if let Ok(p) = ferry::meta::ova::open(&cut) {
            let _ = p.source();
            let _ = p.verify();
        }
    }
    for m in common::mutants(&whole[..8192], &[], 40, 8192) {
        let mut g = m.clone();
        g.extend_from_slice(&whole[8192..]);
        std::fs::write(&cut, &g).unwrap();
        if let Ok(p) = ferry::meta::ova::open(&cut) {
            let _ = p.source();
        }
    }

    // A manifest that does not match: refused before anything is written.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(pkg.join("deb12-ova.ovf"), bad.join("deb12-ova.ovf")).unwrap();
    std::fs::copy(pkg.join("disk1.vmdk"), bad.join("disk1.vmdk")).unwrap();
    std::fs::write(
        bad.join("deb12-ova.mf"),
        format!("SHA256(disk1.vmdk)= {}\n", "0".repeat(64)),
    )
    .unwrap();
    let bad_ova = tmp.path().join("bad.ova");
    tar(
        &bad,
        &bad_ova,
        &["deb12-ova.ovf", "deb12-ova.mf", "disk1.vmdk"],
    );
    let out2 = tmp.path().join("out2");
    std::fs::create_dir(&out2).unwrap();
    let o = run_ferry(&[
        "v2v",
        "-i",
        "ova",
        bad_ova.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("disk1.vmdk") && err.contains("manifest"),
        "{err}"
    );
    assert!(listing(&out2).is_empty(), "{:?}", listing(&out2));

    // The disk stored gzip-compressed: read in place through an index, in a dry run too (the
    // copy and the inspection read the stream inside the tar; nothing is decompressed to
    // disk).
    let gzd = tmp.path().join("gz");
    std::fs::create_dir(&gzd).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} > {}",
            pkg.join("disk1.vmdk").display(),
            gzd.join("disk1.vmdk.gz").display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    write_ovf(&gzd.join("deb12-ova.ovf"), "disk1.vmdk.gz", true);
    let gz_ova = tmp.path().join("gz.ova");
    tar(&gzd, &gz_ova, &["deb12-ova.ovf", "disk1.vmdk.gz"]);
    let out3 = tmp.path().join("out3");
    std::fs::create_dir(&out3).unwrap();
    let gz_hash = common::sha256_file(&gz_ova);
    let plan = ferry_ok(
        &["v2v", "--dry-run", "-i", "ova", gz_ova.to_str().unwrap()],
        &[],
    );
    assert!(
        plan.contains("/dev/sda1") || plan.contains("fstab"),
        "{plan}"
    );
    ferry_ok(
        &[
            "v2v",
            "-i",
            "ova",
            gz_ova.to_str().unwrap(),
            "-o",
            out3.to_str().unwrap(),
            "-on",
            "gz",
        ],
        &[],
    );
    assert_eq!(
        listing(&out3),
        ["gz-sda.qcow2", "gz.xml"].map(String::from).into()
    );
    let raw3 = tmp.path().join("gz.raw");
    let d3 = out3.join("gz-sda.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        d3.to_str().unwrap(),
        raw3.to_str().unwrap(),
    ]);
    let [fstab3] = kernel_read(&raw3, rootfs, &["/etc/fstab"], tmp.path())
        .try_into()
        .unwrap();
    assert_eq!(fstab3, fstab);
    assert_eq!(common::sha256_file(&gz_ova), gz_hash, "the OVA changed");
}

/// contrib/boottest.sh: Debian 12 guests built with debootstrap in the shapes a move leaves
/// (a VMware guest from a SATA host with no virtio in its initramfs; a Xen PV guest on
/// /dev/xvda1 with its console on hvc0), converted by `ferry v2v` and booted with qemu under
/// TCG on virtio: each must reach a login prompt with a DHCP address, and must not without
/// ferry's fixes. Ignored by default: it needs root, network access once, and 10–20 minutes.
#[test]
#[ignore = "boots real guests under TCG for 10-20 minutes: cargo test -- --ignored"]
fn converted_guests_boot_under_qemu() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/boottest.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", script.display());
}

/// A guest whose initramfs ferry cannot read (legacy lzma: ferry reads gzip, zstd, xz and
/// lz4) cannot get virtio_blk before its root is mounted: its disks go on SATA, with a warning
/// that says why, and the image is left as it was.
#[test]
fn an_unreadable_initramfs_keeps_the_disks_off_virtio() {
    if !can_run() || !common::have_tools(&["xz"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let xz = run_capture("xz", &["-c", "--format=lzma"], &guest::initrd());
    let g = vmware_debian_with(tmp.path(), &xz);
    let vmx = write_vmx(tmp.path(), "deb.vmdk");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = Command::new(common::ferry_bin())
        .args(["v2v", "-i", "vmx"])
        .arg(&vmx)
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["disk_bus"], "sata", "{r}");
    let warned = String::from_utf8_lossy(&o.stderr).into_owned() + &r.to_string();
    assert!(
        warned.contains("lzma-compressed, which ferry cannot add drivers to"),
        "{warned}"
    );
    // The converted disk still holds the same initramfs.
    let raw = tmp.path().join("conv.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        out.join("deb12-web-sda.qcow2").to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let got = Command::new(common::ferry_bin())
        .args([
            "cat",
            raw.to_str().unwrap(),
            "/boot/initrd.img-6.1.0-13-amd64",
        ])
        .output()
        .unwrap();
    assert!(got.status.success());
    assert_eq!(got.stdout, xz, "the initramfs must be left as it was");
    drop(g);
}

/// Runs `tool args` with `input` on stdin; its stdout.
fn run_capture(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{tool} failed");
    o.stdout
}

/// The 1 KiB blocks of `data` (the granularity of the smallest ext4 blocks), to find them in
/// an image whatever block size holds them.
fn blocks_of(data: &[u8]) -> std::collections::HashSet<&[u8]> {
    data.chunks_exact(1024).collect()
}

/// How many 1 KiB blocks of `image` are among `needles`.
fn count_blocks_in(image: &Path, needles: &std::collections::HashSet<&[u8]>) -> usize {
    use std::io::Read;
    let mut f = std::fs::File::open(image).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let got = f.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        assert_eq!(got % 1024, 0, "short read of {}", image.display());
        n += buf[..got]
            .chunks_exact(1024)
            .filter(|b| needles.contains(b))
            .count();
    }
    n
}

/// The kernel's view of every filesystem of `g` laid out from `raw`, times left out (the fixes
/// stamp the files they edit with the time of the run).
fn layout_without_times(g: &Guest, raw: &Path, at: &Path) -> common::kernel::Snapshot {
    let mut view = Guest {
        raw: vec![raw.to_path_buf()],
        images: Vec::new(),
        filesystems: g.filesystems.clone(),
        vg: g.vg.clone(),
    };
    view.filesystems.retain(|f| f.disk == 0);
    let m = view.kernel_mount(at, &[]);
    let mut s = kernel::walk(at);
    drop(m);
    for e in s.values_mut() {
        e.atime = (0, 0);
        e.mtime = (0, 0);
        e.ctime = (0, 0);
    }
    s
}

/// `xfs_repair -n` of the XFS at `off` (`len` bytes) of `image`, which must be clean.
fn xfs_repair_range(image: &Path, off: u64, len: u64, tmp: &Path) {
    let part = tmp.join("repair-part.img");
    common::run(Command::new("dd").args([
        &format!("if={}", image.display()),
        &format!("of={}", part.display()),
        "bs=1M",
        &format!("skip={off}"),
        &format!("count={len}"),
        "iflag=skip_bytes,count_bytes",
        "conv=sparse",
        "status=none",
    ]));
    let o = Command::new(common::tool("xfs_repair").unwrap())
        .args(["-n", "-f"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "xfs_repair -n: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_file(&part);
}

/// Free space is left out of the copy: files written and deleted in the LVM root (ext4) and
/// in /srv (XFS), and the slots of the swap LV, hold data in the source, and none of it
/// reaches the output, while every filesystem reads as with `--no-trim` (the kernel walking
/// both), ext4 stays clean for e2fsck and XFS for xfs_repair.
#[test]
fn free_space_of_the_guests_filesystems_is_not_copied() {
    if !can_run() || !common::lvm::have_lvm_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::installer(tmp.path(), "raw");
    let raw = &g.raw[0];
    let vg = g.vg.clone().unwrap();
    let root = g.fs(&format!("/dev/{vg}/root"));
    let swap = g.fs(&format!("/dev/{vg}/swap"));
    let srv = g.fs(&format!("/dev/{vg}/srv"));
    assert_eq!(srv.fstype, "xfs");
    // A file the guest wrote and deleted, in the ext4 root and in the XFS /srv: its blocks
    // are free but still hold it.
    let gone = common::pseudo_random(31, 24 << 20);
    let gone_xfs = common::pseudo_random(33, 16 << 20);
    for (fs, data) in [(root, &gone), (srv, &gone_xfs)] {
        let m = KernelMount::range(raw, fs.offset, fs.size, &tmp.path().join("rw"), "").unwrap();
        std::fs::write(m.path().join("gone.bin"), data).unwrap();
        common::sh("sync");
        std::fs::remove_file(m.path().join("gone.bin")).unwrap();
        m.unmount().unwrap();
    }
    // Pages a process swapped out once.
    let swapped = common::pseudo_random(32, 4 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(raw).unwrap();
        f.write_all_at(&swapped, swap.offset + (1 << 20)).unwrap();
    }
    let needles = blocks_of(&gone);
    let xfs_needles = blocks_of(&gone_xfs);
    let swap_needles = blocks_of(&swapped);
    assert!(count_blocks_in(raw, &needles) > needles.len() / 2);
    assert!(count_blocks_in(raw, &xfs_needles) > xfs_needles.len() / 2);
    let _same = Unchanged::new(&[raw.as_path()]);

    let mut outs = Vec::new();
    for extra in [None, Some("--no-trim")] {
        let out = tmp
            .path()
            .join(if extra.is_some() { "whole" } else { "out" });
        std::fs::create_dir(&out).unwrap();
        let mut args = vec![
            "v2v",
            "-i",
            "disk",
            raw.to_str().unwrap(),
            "-on",
            "inst",
            "-o",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        let r: serde_json::Value = serde_json::from_str(&ferry_ok(&args, &[])).unwrap();
        let disk = out.join("inst-sda.qcow2");
        let check = qemu_img(&["check", disk.to_str().unwrap()]);
        assert!(check.contains("No errors were found"), "{check}");
        let conv = tmp.path().join(format!("{}.raw", out.display()));
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            disk.to_str().unwrap(),
            conv.to_str().unwrap(),
        ]);
        outs.push((r, conv));
    }
    let (r, trimmed) = &outs[0];
    let (whole_r, whole) = &outs[1];

    // What the report says was left out, volume by volume.
    let trim = r["trim"].as_array().unwrap();
    let of = |dev: &str| {
        trim.iter()
            .find(|v| v["device"] == dev)
            .unwrap_or_else(|| panic!("{dev} not in {trim:?}"))
    };
    let root_free = of(&root.device)["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(root_free >= gone.len() as u64, "{r}");
    assert_eq!(
        of(&swap.device)["bytes"].as_u64(),
        Some(swap.size - 4096),
        "{r}"
    );
    assert!(of("/dev/sda1")["bytes"].as_u64().unwrap() > 0, "{r}");
    let srv_free = of(&srv.device)["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(srv_free >= gone_xfs.len() as u64, "{r}");
    let total: u64 = trim.iter().filter_map(|v| v["bytes"].as_u64()).sum();
    assert_eq!(r["disks"][0]["bytes_trimmed"].as_u64(), Some(total));
    assert!(whole_r["trim"].as_array().unwrap().is_empty());
    assert!(whole_r["disks"][0]["bytes_trimmed"].is_null());
    let written = |r: &serde_json::Value| r["disks"][0]["bytes_written"].as_u64().unwrap();
    assert!(
        written(r) + (gone.len() + gone_xfs.len() + swapped.len()) as u64 <= written(whole_r),
        "{} vs {}",
        written(r),
        written(whole_r)
    );

    // None of the deleted file or the swapped pages is in the output; all of it is with
    // --no-trim.
    assert_eq!(count_blocks_in(trimmed, &needles), 0);
    assert_eq!(count_blocks_in(trimmed, &xfs_needles), 0);
    assert_eq!(count_blocks_in(trimmed, &swap_needles), 0);
    assert!(count_blocks_in(whole, &needles) > needles.len() / 2);
    assert!(count_blocks_in(whole, &xfs_needles) > xfs_needles.len() / 2);
    assert_eq!(count_blocks_in(whole, &swap_needles), swap_needles.len());

    // Every filesystem reads the same from both outputs; ext4 is clean; the swap header
    // (its UUID) is kept.
    let a = layout_without_times(&g, trimmed, &tmp.path().join("ka"));
    let b = layout_without_times(&g, whole, &tmp.path().join("kb"));
    common::kernel::assert_same(&b, &a, "trimmed output against --no-trim");
    for f in g.filesystems.iter().filter(|f| f.fstype == "ext4") {
        e2fsck_range(trimmed, f.offset, f.size, tmp.path());
    }
    xfs_repair_range(trimmed, srv.offset, srv.size, tmp.path());
    let page = |img: &Path| {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; 4096];
        std::fs::File::open(img)
            .unwrap()
            .read_exact_at(&mut b, swap.offset)
            .unwrap();
        b
    };
    assert_eq!(page(trimmed), page(raw));
    assert!(page(raw).ends_with(b"SWAPSPACE2"));
}

/// A guest with only Xen PV kernels (SLES 11's `-xen`) cannot boot on KVM: `ferry v2v` refuses
/// it as virt-v2v does, naming the kernels and what to do, and leaves the output directory
/// empty; `inspect` marks those kernels `xen_pv_only` (and a RHEL 5 regular kernel not).
#[test]
fn guests_with_only_xen_pv_kernels_are_refused() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::xen(&tmp.path().join("xen"), "raw");
    let raw = &g.raw[0];
    let _same = Unchanged::new(&[raw.as_path()]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for extra in [None, Some("--dry-run")] {
        let mut args = vec!["v2v", "-i", "disk", raw.to_str().unwrap()];
        args.extend(["-o", out.to_str().unwrap()]);
        args.extend(extra);
        let o = run_ferry(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains(
                "only Xen paravirtual kernels are installed in this guest (3.0.101-63-xen)"
            ) && err.contains("zypper in kernel-default"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{extra:?}");
    }
    let kernels = |img: &Path| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&ferry_ok(
            &["inspect", "--json", img.to_str().unwrap()],
            &[],
        ))
        .unwrap();
        v["roots"][0]["kernels"].clone()
    };
    let k = kernels(raw);
    assert_eq!(k[0]["version"], "3.0.101-63-xen", "{k}");
    assert_eq!(k[0]["xen_pv_only"], true, "{k}");
    let rhel = guest::rhel5(&tmp.path().join("rhel5"), "raw");
    let k = kernels(&rhel.raw[0]);
    assert_eq!(k[0]["version"], "2.6.18-398.el5", "{k}");
    assert_eq!(k[0]["xen_pv_only"], false, "{k}");
}
