//! A RHEL 8 guest as Anaconda installs it (GPT, XFS /boot, LVM with XFS / and /var, qcow2):
//! `ferry inspect --json` field by field against what the guest was built with, and `ferry
//! mount` against the kernel mounting the same three filesystems at /, /boot and /var.

use crate::common;
use crate::guest::{
    can_run, check_filesystems, expected_layout, fstab_line, host_arch, inspect, layout_of,
    lines_ok, mount_matches_kernel, only_root,
};

use common::guest::{self, RHEL8_KERNEL, RHEL8_MACHINE_ID};
use common::kernel::FerryMount;
use common::{run_ferry, Unchanged};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// path → attribute name → value (hex), from `getfattr -R -P -h -d -m - -e hex` run at a
/// mount's root: the kernel's and ferry's FUSE views are read the same way.
fn xattrs(mnt: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = common::run(
        Command::new("getfattr")
            .args(["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."])
            .current_dir(mnt),
    );
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            cur = p.to_string();
        } else if let Some((name, value)) = line.split_once('=') {
            all.entry(cur.clone())
                .or_default()
                .insert(name.to_string(), value.to_string());
        }
    }
    all
}

#[test]
fn rhel8_guest_on_gpt_lvm_and_xfs() {
    if !can_run() || !common::have_tools(&["getfattr", "setfattr", "setfacl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::rhel8(tmp.path(), "qcow2");
    let vg = g.vg.clone().unwrap();
    let unchanged = Unchanged::new(&[&g.images[0]]);
    let v = inspect(&g);
    check_filesystems(&v, &g);
    let r = only_root(&v);
    assert_eq!(r["root"], format!("/dev/{vg}/root"));
    assert_eq!(r["type"], "linux");
    assert_eq!(r["distro"], "rhel");
    assert_eq!(r["version"], "8.9");
    assert_eq!(
        (r["major_version"].as_u64(), r["minor_version"].as_u64()),
        (Some(8), Some(9))
    );
    assert_eq!(r["product_name"], "Red Hat Enterprise Linux 8.9 (Ootpa)");
    assert_eq!(r["hostname"], "rhel8.example.com");
    assert_eq!(r["arch"].as_str(), Some(host_arch().as_str()));
    assert_eq!(r["package_format"], "rpm");
    assert_eq!(r["package_management"], "dnf");
    assert_eq!(r["init"], "systemd");
    assert_eq!(layout_of(r), expected_layout(&g));
    // fstab: the LVs by their /dev/mapper names, /boot by UUID, each to its own device.
    for (line, spec, device, mp) in [
        (
            9,
            format!("/dev/mapper/{vg}-root"),
            format!("/dev/{vg}/root"),
            "/",
        ),
        (
            10,
            format!("UUID={}", g.fs("/dev/sda1").uuid),
            "/dev/sda1".into(),
            "/boot",
        ),
        (
            11,
            format!("/dev/mapper/{vg}-var"),
            format!("/dev/{vg}/var"),
            "/var",
        ),
    ] {
        let l = fstab_line(r, line);
        assert_eq!(
            (
                l["spec"].as_str(),
                l["device"].as_str(),
                l["mountpoint"].as_str()
            ),
            (Some(spec.as_str()), Some(device.as_str()), Some(mp)),
            "fstab line {line}: {l:#}"
        );
        assert_eq!(l["fstype"], "xfs", "line {line}");
        assert_eq!(l["hard_coded"], false, "line {line}");
        assert!(l["ignored"].is_null() && l["problem"].is_null(), "{l:#}");
    }
    assert_eq!(r["fstab"].as_array().unwrap().len(), 3, "{:#}", r["fstab"]);
    assert_eq!(r["problems"], serde_json::json!([]), "{:#}", r["problems"]);
    // The kernel: its image on /boot (XFS partition), its modules under /usr/lib on the root
    // LV through the /lib -> usr/lib link; the .hmac file is not a kernel.
    let k = &r["kernels"];
    assert_eq!(k.as_array().map(Vec::len), Some(1), "{k:#}");
    assert_eq!(k[0]["version"], RHEL8_KERNEL);
    assert_eq!(k[0]["vmlinuz"], format!("/boot/vmlinuz-{RHEL8_KERNEL}"));
    assert_eq!(k[0]["modules"], format!("/usr/lib/modules/{RHEL8_KERNEL}"));
    for (d, how) in [
        ("virtio_blk", "module"),
        ("virtio_net", "module"),
        ("virtio_scsi", "module"),
        ("virtio_pci", "builtin"),
    ] {
        assert_eq!(k[0][d], how, "{d}");
    }
    // grub2 with blscfg: the menu is the BLS entries, the default is grubenv's saved_entry.
    let b = &r["bootloader"];
    assert_eq!(b["loader"], "grub2");
    assert_eq!(b["config"], "/boot/grub2/grub.cfg");
    assert_eq!(b["efi"], false);
    let entries = b["entries"].as_array().unwrap_or_else(|| panic!("{b:#}"));
    assert_eq!(entries.len(), 2, "{b:#}");
    let mid = RHEL8_MACHINE_ID;
    let rescue = &entries[0];
    assert_eq!(
        rescue["path"],
        format!("/boot/loader/entries/{mid}-0-rescue.conf")
    );
    assert_eq!(rescue["version"], format!("0-rescue-{mid}"));
    assert_eq!(rescue["default"], false);
    assert!(rescue["kernel"].is_null(), "no rescue image: {rescue:#}");
    let e = &entries[1];
    assert_eq!(
        e["path"],
        format!("/boot/loader/entries/{mid}-{RHEL8_KERNEL}.conf")
    );
    assert_eq!(
        e["title"],
        format!("Red Hat Enterprise Linux ({RHEL8_KERNEL}) 8.9 (Ootpa)")
    );
    assert_eq!(e["version"], RHEL8_KERNEL);
    assert_eq!(e["linux"], format!("/vmlinuz-{RHEL8_KERNEL}"));
    assert_eq!(e["kernel"], format!("/boot/vmlinuz-{RHEL8_KERNEL}"));
    assert_eq!(
        e["initrd"],
        serde_json::json!([format!("/initramfs-{RHEL8_KERNEL}.img")])
    );
    assert_eq!(e["options"], "$kernelopts $tuned_params");
    assert_eq!(e["default"], true);

    // ls/cat across the three filesystems.
    let img = g.images[0].to_str().unwrap();
    let rel = lines_ok(&run_ferry(&["cat", img, "/etc/redhat-release"]));
    assert_eq!(rel, "Red Hat Enterprise Linux release 8.9 (Ootpa)\n");
    let boot = lines_ok(&run_ferry(&["ls", img, "/boot/loader/entries"]));
    assert_eq!(
        boot,
        format!("{mid}-0-rescue.conf\n{mid}-{RHEL8_KERNEL}.conf\n")
    );
    let msgs = lines_ok(&run_ferry(&["cat", img, "/var/log/messages"]));
    assert_eq!(msgs.lines().count(), 300);

    // Every path of the FUSE mount against the kernel's mounts of the three filesystems laid
    // out at /, /boot and /var; statvfs of each mountpoint.
    mount_matches_kernel(&g, tmp.path(), &[]);
    // Extended attributes of every path (SELinux labels, user., trusted., the ACL, a leaf
    // attribute fork), read the same way from both mounts.
    let kmnt = tmp.path().join("kx");
    let fmnt = tmp.path().join("fx");
    let _k = g.kernel_mount(&kmnt, &[]);
    let f = FerryMount::new(&[g.images[0].as_os_str()], &fmnt)
        .unwrap_or_else(|e| panic!("ferry mount: {e}"));
    let (kx, fx) = (xattrs(&kmnt), xattrs(&fmnt));
    assert!(
        kx.len() >= 10 && kx.contains_key("etc/fstab") && kx.contains_key("boot/loader/entries"),
        "the oracle saw the attributes set: {kx:#?}"
    );
    assert_eq!(fx, kx, "extended attributes: ferry (left) vs kernel");
    drop(f);
    drop(unchanged);
}
