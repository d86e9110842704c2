//! Whole guests: `ferry inspect` against the truth of guests built like real installs
//! (tests/common/guest.rs), and `ferry mount`/`ls`/`cat` of the guest's own layout against the
//! kernel mounting the same filesystems at the same mountpoints.

use crate::common;

use common::guest::{self, Guest};
use common::kernel::{self, FerryMount, Snapshot};
use common::{ferry_json, run_ferry, Unchanged};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

/// Whether this machine can build guests and mount them; says why not (or fails in CI).
pub(crate) fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    let tools = common::have_tools(&[
        "mkfs.ext4",
        "mkfs.xfs",
        "mkswap",
        "sfdisk",
        "lvm",
        "losetup",
    ]);
    if root && fuse && tools {
        return true;
    }
    let why = format!("root: {root}, /dev/fuse: {fuse}, mkfs/lvm tools: {tools}");
    assert!(
        !kernel::required(),
        "cannot run guest tests ({why}) and FERRY_REQUIRE_FUSE=1"
    );
    eprintln!("SKIP: guest tests need root, /dev/fuse, e2fsprogs, xfsprogs, lvm2 ({why})");
    false
}

pub(crate) fn inspect(g: &Guest) -> Value {
    let mut args: Vec<&OsStr> = vec![OsStr::new("inspect"), OsStr::new("--json")];
    args.extend(g.images.iter().map(|p| p.as_os_str()));
    ferry_json(&args)
}

/// Inode numbers as the guest's own filesystems have them: ferry puts the index of the
/// filesystem in the top byte (unique under one FUSE mount); the kernel gives each mount its
/// own st_dev instead. FUSE calls the root 1 whatever it is.
pub(crate) fn local_inodes(mut s: Snapshot) -> Snapshot {
    for e in s.values_mut() {
        e.ino &= (1 << 56) - 1;
    }
    s.get_mut(&b""[..]).expect("root").ino = 0;
    s
}

/// Mounts the guest with ferry and with the kernel and compares every path; `skip` are the
/// filesystems ferry shows as empty directories (unreadable), left out of both walks.
/// Returns the facts the mount published for `ferry fix`, checked to be gone after umount.
pub(crate) fn mount_matches_kernel(g: &Guest, tmp: &Path, skip: &[&str]) -> Value {
    let kmnt = tmp.join("kernel");
    let fmnt = tmp.join("ferry");
    let _k = g.kernel_mount(&kmnt, skip);
    let args: Vec<&OsStr> = g.images.iter().map(|p| p.as_os_str()).collect();
    let f = FerryMount::new(&args, &fmnt).unwrap_or_else(|e| panic!("ferry mount: {e}"));
    let mut kernel_view = local_inodes(kernel::walk(&kmnt));
    let mut ours = local_inodes(kernel::walk(&fmnt));
    for dev in skip {
        let mp = g.fs(dev).mountpoint.clone().unwrap();
        let rel = mp.trim_start_matches('/').as_bytes().to_vec();
        let e = ours
            .get(&rel)
            .unwrap_or_else(|| panic!("{mp} missing in ferry's tree"));
        assert_eq!(
            e.mode, 0o40555,
            "{mp}: an unreadable filesystem is an empty read-only dir"
        );
        assert_eq!(
            std::fs::read_dir(fmnt.join(&mp[1..])).unwrap().count(),
            0,
            "{mp} is empty"
        );
        for s in [&mut kernel_view, &mut ours] {
            s.retain(|p, _| p != &rel && !p.starts_with(&[&rel[..], b"/"].concat()));
        }
    }
    kernel::assert_same(&kernel_view, &ours, "guest tree");
    // Each mountpoint reports its own filesystem's numbers.
    for f in g.layout() {
        if skip.contains(&f.device.as_str()) {
            continue;
        }
        let mp = f.mountpoint.as_deref().unwrap().trim_start_matches('/');
        let (k, o) = (statvfs(&kmnt.join(mp)), statvfs(&fmnt.join(mp)));
        assert_eq!(k, o, "statvfs of /{mp} ({})", f.device);
    }
    let published = ferry::fix::facts::published_path(&fmnt);
    let text = std::fs::read_to_string(&published)
        .unwrap_or_else(|e| panic!("facts at {}: {e}", published.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    drop(f);
    assert!(!published.exists(), "facts left behind after umount");
    eprintln!("{} paths agree with the kernel's mounts", kernel_view.len());
    doc["facts"].clone()
}

/// The stable name the device map gives the guest's own name for a device.
fn stable<'a>(facts: &'a Value, device: &str) -> Option<&'a str> {
    facts["devices"]["devices"]
        .as_array()?
        .iter()
        .find(|d| d["device"] == device)?["stable"]
        .as_str()
}

pub(crate) fn statvfs(p: &Path) -> [u64; 5] {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and a zeroed out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c.as_ptr(), &mut s) },
        0,
        "statvfs {}",
        p.display()
    );
    [s.f_bsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files]
}

/// The fstab lines of the only root, by line number.
pub(crate) fn fstab_line(root: &Value, line: u64) -> &Value {
    root["fstab"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["line"] == line)
        .unwrap_or_else(|| panic!("no fstab line {line} in {root:#}"))
}

pub(crate) fn only_root(v: &Value) -> &Value {
    let roots = v["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{v:#}");
    &roots[0]
}

/// `(mountpoint, device)` pairs of the root's layout.
pub(crate) fn layout_of(root: &Value) -> Vec<(String, String)> {
    root["mountpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["mountpoint"].as_str().unwrap().into(),
                p["device"].as_str().unwrap().into(),
            )
        })
        .collect()
}

pub(crate) fn expected_layout(g: &Guest) -> Vec<(String, String)> {
    g.layout()
        .iter()
        .map(|f| (f.mountpoint.clone().unwrap(), f.device.clone()))
        .collect()
}

/// Every filesystem of the guest is listed with the type, UUID and label it was made with.
pub(crate) fn check_filesystems(v: &Value, g: &Guest) {
    let listed = v["filesystems"].as_array().unwrap();
    for f in &g.filesystems {
        let l = listed
            .iter()
            .find(|l| l["device"] == f.device.as_str())
            .unwrap_or_else(|| panic!("{} not listed: {v:#}", f.device));
        assert_eq!(l["fstype"], f.fstype, "{}", f.device);
        assert_eq!(l["uuid"], f.uuid.as_str(), "{}", f.device);
        assert_eq!(l["label"].as_str(), f.label.as_deref(), "{}", f.device);
        let readable = matches!(f.fstype, "ext2" | "ext3" | "ext4" | "xfs" | "ntfs");
        if f.fstype != "swap" {
            assert_eq!(l["readable"], readable, "{}", f.device);
        }
    }
}

/// `key=value` of an os-release file, unquoted.
fn os_release(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches('"').to_string())
    })
}

/// This host's architecture, as `uname -m` names it: the guests' binaries are copies of its.
pub(crate) fn host_arch() -> String {
    common::run(std::process::Command::new("uname").arg("-m"))
        .trim()
        .to_string()
}

pub(crate) fn lines_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn installer_layout_on_gpt_and_lvm() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::installer(tmp.path(), "qcow2");
    let vg = g.vg.clone().unwrap();
    let unchanged = Unchanged::new(&g.images.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let v = inspect(&g);
    check_filesystems(&v, &g);
    let r = only_root(&v);
    assert_eq!(r["root"], format!("/dev/{vg}/root"));
    let host = std::fs::read_to_string("/etc/os-release").unwrap();
    assert_eq!(r["type"], "linux");
    assert_eq!(r["distro"].as_str(), os_release(&host, "ID").as_deref());
    // os-release says "12"; debian_version has the point release, as virt-inspector reports.
    let point = std::fs::read_to_string("/etc/debian_version").unwrap();
    assert_eq!(r["version"].as_str(), Some(point.trim()));
    assert_eq!(
        Some(r["major_version"].to_string()),
        os_release(&host, "VERSION_ID")
    );
    assert_eq!(
        r["product_name"].as_str(),
        os_release(&host, "PRETTY_NAME").as_deref()
    );
    assert_eq!(r["hostname"], "installer-guest");
    // /bin/sh is this host's dash, reached through /bin -> usr/bin.
    assert_eq!(r["arch"].as_str(), Some(host_arch().as_str()));
    assert_eq!(
        (
            r["package_format"].as_str(),
            r["package_management"].as_str()
        ),
        (Some("deb"), Some("apt"))
    );
    assert_eq!(r["init"], "systemd");
    // GRUB 2's configuration is on /boot, the kernel's modules under /usr/lib on the root LV.
    assert_eq!(r["bootloader"]["loader"], "grub2");
    assert_eq!(r["bootloader"]["config"], "/boot/grub/grub.cfg");
    let k = &r["kernels"];
    assert_eq!(k.as_array().map(Vec::len), Some(1), "{k:#}");
    assert_eq!(k[0]["version"], "6.1.0-13-amd64");
    assert_eq!(k[0]["vmlinuz"], "/boot/vmlinuz-6.1.0-13-amd64");
    assert_eq!(
        (
            k[0]["virtio_blk"].as_str(),
            k[0]["virtio_net"].as_str(),
            k[0]["virtio_scsi"].as_str()
        ),
        (Some("module"), Some("module"), Some("builtin"))
    );
    assert_eq!(layout_of(r), expected_layout(&g));
    // fstab, line by line: what each names and how.
    let expect = [
        (4, Some(format!("/dev/{vg}/root")), None),
        (5, Some("/dev/sda1".into()), None),
        (6, Some(format!("/dev/{vg}/var")), None),
        (7, Some(format!("/dev/{vg}/swap")), Some("swap")),
        (8, Some(format!("/dev/{vg}/srv")), None),
        (9, Some(format!("/dev/{vg}/data")), None),
        (10, None, Some("not a local filesystem")),
        (11, None, Some("not a local filesystem")),
    ];
    for (line, device, ignored) in expect {
        let l = fstab_line(r, line);
        if let Some(d) = device {
            assert_eq!(l["device"], d.as_str(), "line {line}: {l:#}");
        }
        assert_eq!(l["ignored"].as_str(), ignored, "line {line}: {l:#}");
        assert_eq!(l["hard_coded"], false, "line {line}: {l:#}");
    }
    assert_eq!(
        fstab_line(r, 9)["mountpoint"],
        "/mnt/my data",
        "octal escape"
    );
    let cd = fstab_line(r, 12);
    assert!(
        cd["device"].is_null() && cd["problem"].is_string(),
        "{cd:#}"
    );
    let problems = r["problems"].to_string();
    assert!(
        !problems.contains("shown as an empty directory"),
        "XFS /srv is readable now: {problems}"
    );

    // The tree: /var/log/messages is on its own LV, kernels on /boot.
    let img = g.images[0].to_str().unwrap();
    let msg = lines_ok(&run_ferry(&["cat", img, "/var/log/messages"]));
    assert_eq!(
        msg,
        "Nov 23 10:00:00 installer-guest kernel: hello\n".repeat(200)
    );
    let boot = lines_ok(&run_ferry(&["ls", img, "/boot"]));
    assert_eq!(boot, "config-6.1.0-13-amd64\ngrub\ninitrd.img-6.1.0-13-amd64\nlost+found\nvmlinuz-6.1.0-13-amd64\n");
    let data = lines_ok(&run_ferry(&["cat", img, "/mnt/my data/README"]));
    assert_eq!(data, "data volume\n");
    // One filesystem alone, by name, as before.
    let alone = lines_ok(&run_ferry(&["ls", &format!("{img}:/dev/{vg}/var"), "/"]));
    assert_eq!(alone, "lib\nlog\nlost+found\n");
    // /srv is XFS, read like the others.
    let page = lines_ok(&run_ferry(&["cat", img, "/srv/current/index.html"]));
    assert_eq!(page, "<h1>served from XFS</h1>\n");
    let srv = lines_ok(&run_ferry(&["ls", img, "/srv"]));
    assert_eq!(srv, "current\nspool\nwww\n");

    mount_matches_kernel(&g, tmp.path(), &[]);
    drop(unchanged);
}

#[test]
fn old_and_xen_guests_resolve_hard_coded_names() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // RHEL 5 under VMware: /dev/hda1 is our sda1.
    let d = tmp.path().join("rhel5");
    std::fs::create_dir_all(&d).unwrap();
    let g = guest::rhel5(&d, "vmdk");
    let unchanged = Unchanged::new(&[&g.images[0]]);
    let v = inspect(&g);
    check_filesystems(&v, &g);
    let r = only_root(&v);
    assert_eq!(r["root"], "/dev/sda2");
    assert_eq!(r["naming"], "hd");
    assert_eq!(layout_of(r), expected_layout(&g));
    let hda1 = fstab_line(r, 1);
    assert_eq!(hda1["device"], "/dev/sda1");
    assert_eq!(hda1["hard_coded"], true);
    assert_eq!(fstab_line(r, 2)["device"], "/dev/sda2");
    assert_eq!(fstab_line(r, 2)["by"], "label");
    assert_eq!(fstab_line(r, 7)["device"], "/dev/sda3");
    assert_eq!(r["distro"], "rhel");
    assert_eq!(
        r["product_name"],
        "Red Hat Enterprise Linux Server release 5.11 (Tikanga)"
    );
    assert_eq!(
        (r["major_version"].as_u64(), r["minor_version"].as_u64()),
        (Some(5), Some(11))
    );
    assert_eq!(r["hostname"], "rhel5.example.com");
    assert_eq!(r["init"], "sysvinit");
    assert_eq!(r["package_management"], "yum");
    // GRUB legacy's grub.conf is on /boot (sda1), reached through menu.lst -> ./grub.conf.
    assert_eq!(r["bootloader"]["loader"], "grub");
    assert_eq!(r["bootloader"]["config"], "/boot/grub/grub.conf");
    let k = &r["kernels"][0];
    assert_eq!(k["version"], "2.6.18-398.el5");
    assert_eq!(k["virtio_blk"], "missing", "{k:#}");
    assert_eq!(r["source"], "vmware");
    let facts = mount_matches_kernel(&g, &d, &[]);
    // What fixers rewrite: the guest's names for its partitions, and what survives the move.
    for (name, ours) in [
        ("/dev/hda1", "/dev/sda1"),
        ("/dev/hda2", "/dev/sda2"),
        ("/dev/hda3", "/dev/sda3"),
    ] {
        let uuid = format!("UUID={}", g.fs(ours).uuid);
        assert_eq!(
            stable(&facts, name),
            Some(uuid.as_str()),
            "{name}: {facts:#}"
        );
    }
    assert_eq!(facts["root"]["spec"], "LABEL=/");
    assert_eq!(facts["root"]["uuid"], g.fs("/dev/sda2").uuid.as_str());
    assert_eq!(facts["distro"], "rhel");
    drop(unchanged);

    // SLES 11 on Xen: /dev/xvda1 is our sda1; no separate /boot.
    let d = tmp.path().join("xen");
    std::fs::create_dir_all(&d).unwrap();
    let g = guest::xen(&d, "raw");
    let v = inspect(&g);
    check_filesystems(&v, &g);
    let r = only_root(&v);
    assert_eq!(r["root"], "/dev/sda1");
    assert_eq!(r["naming"], "xvd");
    assert_eq!(
        (
            r["distro"].as_str(),
            r["major_version"].as_u64(),
            r["minor_version"].as_u64()
        ),
        (Some("sles"), Some(11), Some(4))
    );
    assert_eq!(r["hostname"], "sles11xen.example.com");
    assert_eq!(r["package_management"], "zypper");
    assert_eq!(r["source"], "xen");
    assert_eq!(r["kernels"][0]["version"], "3.0.101-63-xen");
    let l = fstab_line(r, 1);
    assert_eq!(
        (l["device"].as_str(), l["hard_coded"].as_bool()),
        (Some("/dev/sda1"), Some(true))
    );
    assert_eq!(fstab_line(r, 2)["device"], "/dev/sda2");
    assert_eq!(layout_of(r), expected_layout(&g));
    let facts = mount_matches_kernel(&g, &d, &[]);
    let uuid = format!("UUID={}", g.fs("/dev/sda1").uuid);
    assert_eq!(
        stable(&facts, "/dev/xvda1"),
        Some(uuid.as_str()),
        "{facts:#}"
    );
    assert_eq!(facts["source"], "xen");
    // `ferry fix` on the mount finds those facts and plans the rewrite of the Xen names.
    let mnt = d.join("fix");
    let _m = FerryMount::new(&[g.images[0].as_os_str()], &mnt).unwrap();
    let o = run_ferry(&["fix", "--dry-run", mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "changes pending");
    let plan = String::from_utf8(o.stdout).unwrap();
    let ru = &g.fs("/dev/sda1").uuid;
    assert!(
        plan.contains("-/dev/xvda1           /") && plan.contains(&format!("+UUID={ru}")),
        "{plan}"
    );
}

#[test]
fn two_disk_guest_and_a_symlink_across_the_mountpoint() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = guest::two_disks(tmp.path(), "qcow2");
    let unchanged = Unchanged::new(&[&g.images[0], &g.images[1]]);
    let v = inspect(&g);
    check_filesystems(&v, &g);
    let r = only_root(&v);
    assert_eq!(r["root"], "/dev/sda");
    assert_eq!(r["distro"], "alpine");
    assert_eq!(r["version"], "3.18.4");
    assert_eq!(r["init"], "openrc");
    assert_eq!(r["package_management"], "apk");
    assert_eq!(r["bootloader"]["loader"], "extlinux");
    assert_eq!(r["hostname"], "alpine-guest");
    assert_eq!(layout_of(r), expected_layout(&g));
    let home = fstab_line(r, 2);
    assert_eq!(
        (home["device"].as_str(), home["hard_coded"].as_bool()),
        (Some("/dev/sdb1"), Some(true))
    );
    // /etc/motd -> ../home/user/motd.txt, which is on the second disk.
    let (a, b) = (g.images[0].to_str().unwrap(), g.images[1].to_str().unwrap());
    let motd = lines_ok(&run_ferry(&["cat", "-a", a, "-a", b, "/etc/motd"]));
    assert_eq!(motd, "Welcome to the second disk.\n");
    // Without the second disk, /home is missing: said, and the rest still shows.
    let v1 = ferry_json(&["inspect", "--json", a]);
    let r1 = only_root(&v1);
    assert!(fstab_line(r1, 2)["device"].is_null());
    assert!(r1["problems"].to_string().contains("/dev/sdb1"), "{r1:#}");
    assert_eq!(
        layout_of(r1),
        vec![("/".to_string(), "/dev/sda".to_string())]
    );
    mount_matches_kernel(&g, tmp.path(), &[]);
    drop(unchanged);
}

#[test]
fn choosing_roots_and_layouts_by_hand() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let rhel = guest::rhel5(&d1, "raw");
    let xen = guest::xen(&d2, "qcow2");
    let (a, b) = (
        rhel.images[0].to_str().unwrap(),
        xen.images[0].to_str().unwrap(),
    );
    // Two operating systems: listed, and mount asks which.
    let v = ferry_json(&["inspect", "--json", a, b]);
    let roots: Vec<&str> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["root"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["/dev/sda2", "/dev/sdb1"]);
    // The Xen guest's fstab says /dev/xvda1 is /, which is now the other guest's /boot.
    let xr = &v["roots"][1];
    assert!(
        xr["problems"]
            .to_string()
            .contains("mounts /dev/sda1 at /, but this root is /dev/sdb1"),
        "{xr:#}"
    );
    let mnt = tmp.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run_ferry(&["mount", a, b, mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--root") && err.contains("/dev/sdb1"),
        "{err}"
    );
    let hosts = lines_ok(&run_ferry(&[
        "cat",
        "-a",
        a,
        "-a",
        b,
        "--root",
        "/dev/sdb1",
        "/etc/HOSTNAME",
    ]));
    assert_eq!(hosts, "sles11xen.example.com\n");
    let out = run_ferry(&[
        "cat",
        "-a",
        a,
        "-a",
        b,
        "--root",
        "/dev/sdb9",
        "/etc/HOSTNAME",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("roots: /dev/sda2, /dev/sdb1"));

    // -m by hand: the Xen root with the RHEL /boot on top of its /boot.
    {
        let _f = FerryMount::new(
            &[
                a.as_ref(),
                b.as_ref(),
                "-m".as_ref(),
                "/dev/sdb1".as_ref(),
                "-m".as_ref(),
                "/dev/sda1:/boot".as_ref(),
            ],
            &mnt,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(mnt.join("etc/HOSTNAME")).unwrap(),
            "sles11xen.example.com\n"
        );
        assert!(mnt.join("boot/vmlinuz-2.6.18-398.el5").exists());
        assert!(
            !mnt.join("boot/vmlinuz-3.0.101-63-xen").exists(),
            "hidden under the mount"
        );
    }
    for (args, want) in [
        (
            vec!["-m", "/dev/sda1:/boot"],
            "no filesystem is mounted at /",
        ),
        (vec!["-m", "/dev/sdz1"], "no device /dev/sdz1"),
        (
            vec!["-m", "/dev/sdb1", "-m", "/dev/sda1:/nowhere"],
            "/dev/sda1 at /nowhere",
        ),
        (
            vec!["-m", "/dev/sdb1", "-m", "/dev/sda1:/etc/HOSTNAME"],
            "not a directory",
        ),
    ] {
        let mut all = vec!["mount", a, b];
        all.extend(&args);
        all.push(mnt.to_str().unwrap());
        let out = run_ferry(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

/// A whole-disk ext4 root whose configuration is hostile: junk and `lines` more lines in fstab,
/// mountpoints on a file, through a symlink loop, relative, and the root filesystem mounted
/// again inside itself; os-release a symlink loop; /bin/sh an absurd ELF header.
fn hostile_root(dir: &Path, lines: usize) -> std::path::PathBuf {
    let root = dir.join(format!("root{lines}"));
    let u = "e0000000-0000-4000-8000-000000000001";
    let mut fstab = format!(
        "UUID={u} / ext4 defaults 0 1\nUUID={u} /mnt/again ext4 defaults 0 0\n\
         UUID={u} /etc/passwd ext4 defaults 0 0\nUUID={u} /loop/x ext4 defaults 0 0\n\
         UUID={u} relative/path ext4 defaults 0 0\n"
    )
    .into_bytes();
    fstab.extend_from_slice(b"\x00\xff\xfe\x7fELF junk \x01\x02\n\xff\xff\xff\xff\n");
    for i in 0..lines {
        fstab.extend_from_slice(format!("UUID={u} /mnt/n{i} ext4 defaults 0 0\n").as_bytes());
    }
    guest::put(&root, "/etc/fstab", &fstab);
    guest::put(&root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    guest::symlink(&root, "/etc/os-release", "os-release");
    guest::symlink(&root, "/loop", "/loop");
    let mut elf = b"\x7fELF\x09\x09\x09".to_vec();
    elf.resize(64, 0xff);
    guest::put(&root, "/bin/sh", &elf);
    guest::mkdir(&root, "/mnt/again");
    let img = dir.join(format!("hostile{lines}.img"));
    guest::mkfs(&img, "ext4", 32 << 20, u, None, Some(&root), &[]);
    img
}

/// `ferry inspect --json`, with a deadline: bad input must not hang it. The output is large,
/// so it goes to a file (a pipe nobody reads would block it).
fn inspect_bounded(img: &Path) -> Value {
    let out = img.with_extension("json");
    let mut child = std::process::Command::new(common::ferry_bin())
        .args(["inspect", "--json"])
        .arg(img)
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > kernel::DEADLINE {
            let _ = child.kill();
            panic!(
                "ferry inspect {} did not finish in {:?}",
                img.display(),
                kernel::DEADLINE
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success());
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// Inspection of hostile configuration finishes with the problems named, and the tree still
/// mounts; an fstab of 10^5 lines (over the 1 MiB read limit) is refused with one message.
#[test]
fn hostile_configuration_gives_problems_not_hangs() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = hostile_root(tmp.path(), 5_000);
    let unchanged = Unchanged::new(&[&img]);
    let v = inspect_bounded(&img);
    let r = only_root(&v);
    assert_eq!(r["root"], "/dev/sda");
    let problems = r["problems"].to_string();
    for want in ["at /etc/passwd", "at /loop/x", "at /mnt/n4999"] {
        assert!(problems.contains(want), "{want} not in {problems}");
    }
    let mps: Vec<String> = layout_of(r).into_iter().map(|(m, _)| m).collect();
    assert!(mps.contains(&"/mnt/again".to_string()), "{mps:?}");
    assert!(!mps.iter().any(|m| m.contains("relative")), "{mps:?}");
    // The root mounted inside itself is one more level, not a recursion.
    let s = img.to_str().unwrap();
    let again = lines_ok(&run_ferry(&["ls", s, "/mnt/again/mnt/again"]));
    assert_eq!(again, "");
    let passwd = lines_ok(&run_ferry(&["cat", s, "/mnt/again/etc/passwd"]));
    assert_eq!(passwd, "root:x:0:0::/root:/bin/sh\n");
    drop(unchanged);

    let big = hostile_root(tmp.path(), 100_000);
    let v = inspect_bounded(&big);
    let r = only_root(&v);
    assert!(
        r["problems"]
            .to_string()
            .contains("/etc/fstab: 7189258 bytes, larger than the 4194304 bytes"),
        "{r:#}"
    );
    assert_eq!(
        layout_of(r),
        vec![("/".to_string(), "/dev/sda".to_string())]
    );
}

/// NTFS volumes are read: one that mkntfs made with a `\Windows\System32` written through
/// ntfs-3g is a Windows root whose tree `ferry ls`/`cat` read; a data volume (no `\Windows`)
/// is readable and no root, even the corpus one Windows formatted, whose boot code loads
/// BOOTMGR; its listing is what ntfsls (ntfs-3g's tool) lists.
#[test]
fn windows_ntfs_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    if common::have_tools(&["mkntfs", "ntfs-3g"]) && std::path::Path::new("/dev/fuse").exists() {
        let img = tmp.path().join("win.ntfs");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        common::run(
            std::process::Command::new("mkntfs")
                .args(["-q", "-F", "-f", "-L", "data"])
                .arg(&img),
        );
        let s = img.to_str().unwrap();
        let v = ferry_json(&["inspect", "--json", s]);
        assert_eq!(v["roots"].as_array().map(Vec::len), Some(0), "{v:#}");
        assert_eq!(v["filesystems"][0]["fstype"], "ntfs");
        assert_eq!(v["filesystems"][0]["readable"], true);
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        common::run(std::process::Command::new("ntfs-3g").arg(&img).arg(&mnt));
        let guard = Ntfs3gMount(mnt.clone());
        std::fs::create_dir_all(mnt.join("Windows/System32/config")).unwrap();
        std::fs::write(mnt.join("Windows/System32/config/SOFTWARE"), b"regf").unwrap();
        drop(guard);
        let v = ferry_json(&["inspect", "--json", s]);
        let r = only_root(&v);
        assert_eq!(
            (r["type"].as_str(), r["systemroot"].as_str()),
            (Some("windows"), Some("/Windows")),
            "{r:#}"
        );
        let ls = lines_ok(&run_ferry(&["ls", s, "/Windows/System32/config"]));
        assert_eq!(ls, "SOFTWARE\n");
        let cat = lines_ok(&run_ferry(&["cat", s, "/Windows/System32/config/SOFTWARE"]));
        assert_eq!(cat, "regf");
    } else {
        assert!(
            !kernel::required(),
            "mkntfs/ntfs-3g or /dev/fuse missing and FERRY_REQUIRE_FUSE=1"
        );
        eprintln!("SKIP: mkntfs/ntfs-3g (ntfs-3g package) or /dev/fuse missing");
    }
    let Some(corpus) = common::corpus() else {
        eprintln!("SKIP: ../shared/corpus is absent");
        return;
    };
    // A raw NTFS volume cut from a VHD: its VHD footer is still there, so the format is given.
    let img = common::unpack(&corpus.join("dissect.ntfs/ntfs.bin.gz"), tmp.path());
    let s = img.to_str().unwrap();
    let v = ferry_json(&["inspect", "--json", "-f", "raw", s]);
    assert_eq!(v["roots"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["filesystems"][0]["readable"], true, "{v:#}");
    if common::have_tools(&["ntfsls"]) {
        let theirs = common::run(std::process::Command::new("ntfsls").arg(&img));
        assert_eq!(lines_ok(&run_ferry(&["ls", "-f", "raw", s, "/"])), theirs);
    }
}

/// An ntfs-3g mount, unmounted on drop; the drop returns once the daemon (which writes the
/// volume back as it exits) is gone, or after 10 s.
struct Ntfs3gMount(std::path::PathBuf);

impl Drop for Ntfs3gMount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = kernel::run_bounded(std::process::Command::new("umount").arg(&self.0));
            if ok.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let needle = self.0.to_string_lossy().into_owned();
        for _ in 0..200 {
            let busy = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
                std::fs::read_to_string(p.path().join("cmdline"))
                    .is_ok_and(|c| c.starts_with("ntfs-3g") && c.contains(&needle))
            });
            if !busy {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
