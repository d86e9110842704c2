//! Guest inspection over trees laid out as real installs: this Debian 12 host's own files
//! (os-release, debian_version, hostname, the /bin/sh ELF), release files of older guests in
//! their shipped formats, kernels with their module trees, boot loaders and guest tools; and
//! hostile trees (symlink loops, links out of the root, huge or binary files, absurd ELF
//! headers) that must give clear results without a panic or a hang.
//!
//! Oracles: `sh` sourcing os-release (the format is shell assignments), `file` for ELF
//! headers (host binaries and crafted headers of other architectures), and otherwise the
//! verbatim input (a release file's own first line, the version it states).

use crate::common;
use crate::fixguest;

use ferry::fix::facts::{Bootloader, Facts, Hypervisor, InitSystem, Os, Version};
use ferry::fix::HostTree;
use ferry::guest::inspect::{inspect, is_root, Driver, OsInfo};
use fixguest::Guest;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(g: &Guest) -> OsInfo {
    let t0 = Instant::now();
    let info = inspect(&HostTree::new(g.root()).unwrap());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "inspection took {:?}",
        t0.elapsed()
    );
    // What --json prints reads back as the same value (fstab is printed resolved, by the
    // guest layer, not here).
    let json = serde_json::to_string(&info).unwrap();
    let back: OsInfo = serde_json::from_str(&json).unwrap();
    let mut printed = info.clone();
    printed.fstab.clear();
    assert_eq!(back, printed);
    info
}

fn v(s: &str) -> Option<Version> {
    Version::parse(s)
}

/// Values of shell variables after `sh` sources `file`: the os-release(5) oracle.
fn sh_source(file: &std::path::Path, vars: &[&str]) -> Vec<String> {
    let script = vars
        .iter()
        .map(|v| format!("printf '%s\\n' \"${v}\""))
        .collect::<Vec<_>>()
        .join("; ");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$1\" && {{ {script}; }}"))
        .arg("sh")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "sh could not source {file:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `file -b -L PATH`: (bits, little endian, machine description).
fn file_elf(path: &std::path::Path) -> (u32, bool, String) {
    let out = Command::new("file")
        .arg("-b")
        .arg("-L")
        .arg(path)
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let mut parts = s.trim().split(", ");
    let head = parts.next().unwrap();
    let machine = parts.next().unwrap_or("").to_string();
    let bits = if head.contains("64-bit") { 64 } else { 32 };
    (bits, head.contains("LSB"), machine)
}

/// `uname -m` names for what `file` says: the naming convention, not the oracle (the oracle
/// decides class, byte order and machine).
fn uname_of(bits: u32, le: bool, machine: &str) -> &'static str {
    match (machine, bits, le) {
        ("x86-64", ..) => "x86_64",
        ("Intel 80386", ..) => "i386",
        ("ARM aarch64", ..) => "aarch64",
        ("ARM", ..) => "armv7l",
        ("64-bit PowerPC or cisco 7500", _, true) => "ppc64le",
        ("64-bit PowerPC or cisco 7500", _, false) => "ppc64",
        ("PowerPC or cisco 4500", ..) => "ppc",
        ("IBM S/390", 64, _) => "s390x",
        ("UCB RISC-V", 64, _) => "riscv64",
        ("MIPS", 32, false) => "mips",
        ("MIPS", 32, true) => "mipsel",
        ("MIPS", 64, false) => "mips64",
        ("MIPS", 64, true) => "mips64el",
        ("SPARC V9", ..) => "sparc64",
        ("SPARC", ..) => "sparc",
        ("LoongArch", ..) => "loongarch64",
        ("IA-64", ..) => "ia64",
        ("PA-RISC", ..) => "hppa",
        _ => panic!("no uname name for `file`'s {machine} ({bits}-bit, le={le})"),
    }
}

/// A minimal but well-formed ELF executable header (no program headers).
fn elf_header(bits: u8, le: bool, machine: u16) -> Vec<u8> {
    let mut h = vec![
        0x7f,
        b'E',
        b'L',
        b'F',
        bits / 32,
        if le { 1 } else { 2 },
        1,
        0,
    ];
    h.resize(16, 0);
    let p16 = |h: &mut Vec<u8>, x: u16| {
        h.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() })
    };
    let p32 = |h: &mut Vec<u8>, x: u32| {
        h.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() })
    };
    let p64 = |h: &mut Vec<u8>, x: u64| {
        h.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() })
    };
    p16(&mut h, 2); // ET_EXEC
    p16(&mut h, machine);
    p32(&mut h, 1);
    if bits == 64 {
        p64(&mut h, 0x40_0000);
        p64(&mut h, 0);
        p64(&mut h, 0);
        p32(&mut h, 0);
        for x in [64, 56, 0, 64, 0, 0] {
            p16(&mut h, x);
        }
    } else {
        for x in [0x8000, 0, 0, 0] {
            p32(&mut h, x);
        }
        for x in [52, 32, 0, 40, 0, 0] {
            p16(&mut h, x);
        }
    }
    h
}

fn have_file() -> bool {
    common::have_tools(&["file"])
}

/// This host's own files in a guest tree: os-release (symlinked from /etc as Debian ships it),
/// debian_version, hostname, and the real /bin/sh → dash ELF.
#[test]
fn debian12_from_host_files() {
    let os_release = std::path::Path::new("/usr/lib/os-release");
    let Ok(text) = std::fs::read(os_release) else {
        eprintln!("SKIP: no /usr/lib/os-release on this host");
        return;
    };
    let g = Guest::new();
    g.bytes("/usr/lib/os-release", &text)
        .link("/etc/os-release", "../usr/lib/os-release")
        .dir("/usr/bin")
        .link("/bin", "usr/bin")
        .link("/usr/bin/sh", "dash")
        .bytes("/usr/bin/dash", &std::fs::read("/bin/dash").unwrap())
        .file("/etc/fstab", "# empty\n");
    let dv = std::fs::read_to_string("/etc/debian_version").ok();
    if let Some(d) = &dv {
        g.file("/etc/debian_version", d);
    }
    let host_name = std::fs::read_to_string("/etc/hostname").ok();
    if let Some(h) = &host_name {
        g.file("/etc/hostname", h);
    }
    let info = run(&g);
    let want = sh_source(os_release, &["ID", "VERSION_ID", "PRETTY_NAME"]);
    assert_eq!(info.os_type, Os::Linux);
    assert_eq!(info.distro.as_deref(), Some(want[0].as_str()));
    assert_eq!(info.product_name.as_deref(), Some(want[2].as_str()));
    // Debian's os-release has the major version; debian_version the point release.
    let full = dv
        .as_deref()
        .and_then(|d| Version::parse(d.trim()))
        .filter(|d| Some(d.major()) == v(&want[1]).map(|w| w.major()));
    let want_version = full.or(v(&want[1]));
    assert_eq!(info.version, want_version);
    assert_eq!(info.major_version, want_version.as_ref().map(|v| v.major()));
    assert_eq!(
        info.hostname.as_deref(),
        host_name.as_deref().map(str::trim)
    );
    if have_file() {
        let (bits, le, machine) = file_elf(std::path::Path::new("/bin/sh"));
        assert_eq!(info.arch.as_deref(), Some(uname_of(bits, le, &machine)));
    }
    assert_eq!(
        (
            info.package_format.as_deref(),
            info.package_management.as_deref()
        ),
        (Some("deb"), Some("apt"))
    );
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    assert!(is_root(&HostTree::new(g.root()).unwrap()));
}

/// os-release files as shipped, checked against `sh` sourcing them.
#[test]
fn os_release_files_match_the_shell() {
    let files = [
        "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\nANSI_COLOR=\"0;31\"\nCPE_NAME=\"cpe:/o:centos:centos:7\"\nHOME_URL=\"https://www.centos.org/\"\nBUG_REPORT_URL=\"https://bugs.centos.org/\"\n\nCENTOS_MANTISBT_PROJECT=\"CentOS-7\"\nCENTOS_MANTISBT_PROJECT_VERSION=\"7\"\nREDHAT_SUPPORT_PRODUCT=\"centos\"\nREDHAT_SUPPORT_PRODUCT_VERSION=\"7\"\n\n",
        "NAME=\"Ubuntu\"\nVERSION=\"20.04.6 LTS (Focal Fossa)\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 20.04.6 LTS\"\nVERSION_ID=\"20.04\"\nHOME_URL=\"https://www.ubuntu.com/\"\nVERSION_CODENAME=focal\nUBUNTU_CODENAME=focal\n",
        "NAME=\"openSUSE Leap\"\nVERSION=\"15.5\"\nID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"openSUSE Leap 15.5\"\nANSI_COLOR=\"0;32\"\nCPE_NAME=\"cpe:/o:opensuse:leap:15.5\"\n",
        "NAME=\"SLES\"\nVERSION=\"12-SP5\"\nVERSION_ID=\"12.5\"\nPRETTY_NAME=\"SUSE Linux Enterprise Server 12 SP5\"\nID=\"sles\"\nANSI_COLOR=\"0;32\"\nCPE_NAME=\"cpe:/o:suse:sles:12:sp5\"\n",
        "NAME=\"Fedora Linux\"\nVERSION=\"38 (Server Edition)\"\nID=fedora\nVERSION_ID=38\nVERSION_CODENAME=\"\"\nPLATFORM_ID=\"platform:f38\"\nPRETTY_NAME=\"Fedora Linux 38 (Server Edition)\"\nANSI_COLOR=\"0;38;2;60;110;180\"\nLOGO=fedora-logo-icon\n",
        "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME=\"Alpine Linux v3.18\"\nHOME_URL=\"https://alpinelinux.org/\"\n",
        "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\nANSI_COLOR=\"38;2;23;147;209\"\nLOGO=archlinux-logo\n",
        "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.3 (Plow)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.3 (Plow)\"\n",
        "NAME='Weird'\nID=odd\\ one\nVERSION_ID=\"1.2\"' rc'\nPRETTY_NAME=\"a \\\"quoted\\\" \\$name\"\n",
    ];
    for text in files {
        let g = Guest::new();
        g.file("/usr/lib/os-release", text)
            .link("/etc/os-release", "../usr/lib/os-release");
        let want = sh_source(
            &g.host("/usr/lib/os-release"),
            &["ID", "VERSION_ID", "PRETTY_NAME"],
        );
        let info = run(&g);
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
        assert_eq!(info.distro, nonempty(&want[0]), "{text}");
        assert_eq!(info.version, v(&want[1]), "{text}");
        // Shown as written: "20.04", not "20.4".
        if let Some(ver) = &info.version {
            assert!(want[1].starts_with(&ver.to_string()), "{ver} of {text}");
        }
        assert_eq!(info.product_name, nonempty(&want[2]), "{text}");
        assert_eq!(info.os_type, Os::Linux);
    }
}

/// Guests from before os-release: each release file in its shipped format.
#[test]
fn legacy_release_files() {
    // (files, distro, version, product name: the file's own first line where it has one)
    let rhel5 = "Red Hat Enterprise Linux Server release 5.11 (Tikanga)\n";
    let centos6 = "CentOS release 6.10 (Final)\n";
    let centos7 = "CentOS Linux release 7.9.2009 (Core)\n";
    let sles10 = "SUSE Linux Enterprise Server 10 (x86_64)\nVERSION = 10\nPATCHLEVEL = 4\n";
    let sles11 = "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n";
    let opensuse = "openSUSE 13.1 (x86_64)\nVERSION = 13.1\nCODENAME = Bottle\n# /etc/SuSE-release is deprecated and will be removed in a future service pack or release.\n# Please check /etc/os-release for details about this release.\n";
    let ubuntu = "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=10.04\nDISTRIB_CODENAME=lucid\nDISTRIB_DESCRIPTION=\"Ubuntu 10.04.4 LTS\"\n";
    let fedora = "Fedora release 38 (Thirty Eight)\n";
    let gentoo = "Gentoo Base System release 2.7\n";
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("/etc/redhat-release", rhel5)],
            "rhel",
            Some("5.11"),
            Some(rhel5.trim()),
        ),
        (
            vec![
                ("/etc/redhat-release", centos6),
                ("/etc/centos-release", centos6),
            ],
            "centos",
            Some("6.10"),
            Some(centos6.trim()),
        ),
        (
            vec![
                ("/etc/redhat-release", centos7),
                ("/etc/centos-release", centos7),
            ],
            "centos",
            Some("7.9.2009"),
            Some(centos7.trim()),
        ),
        (
            vec![("/etc/SuSE-release", sles10)],
            "sles",
            Some("10.4"),
            Some("SUSE Linux Enterprise Server 10 (x86_64)"),
        ),
        (
            vec![("/etc/SuSE-release", sles11)],
            "sles",
            Some("11.4"),
            Some("SUSE Linux Enterprise Server 11 (x86_64)"),
        ),
        (
            vec![("/etc/SuSE-release", opensuse)],
            "opensuse",
            Some("13.1"),
            Some("openSUSE 13.1 (x86_64)"),
        ),
        (
            vec![("/etc/debian_version", "5.0.10\n")],
            "debian",
            Some("5.0.10"),
            None,
        ),
        (
            vec![
                ("/etc/debian_version", "squeeze/sid\n"),
                ("/etc/lsb-release", ubuntu),
            ],
            "ubuntu",
            Some("10.04"),
            Some("Ubuntu 10.04.4 LTS"),
        ),
        (
            vec![("/etc/debian_version", "trixie/sid\n")],
            "debian",
            None,
            None,
        ),
        (
            vec![("/etc/alpine-release", "3.18.4\n")],
            "alpine",
            Some("3.18.4"),
            None,
        ),
        (vec![("/etc/arch-release", "")], "arch", None, None),
        (
            vec![("/etc/gentoo-release", gentoo)],
            "gentoo",
            Some("2.7"),
            Some(gentoo.trim()),
        ),
        (
            vec![
                ("/etc/fedora-release", fedora),
                ("/etc/redhat-release", fedora),
            ],
            "fedora",
            Some("38"),
            Some(fedora.trim()),
        ),
    ];
    for (files, distro, version, product) in cases {
        let g = Guest::new();
        for (p, t) in &files {
            g.file(p, t);
        }
        let info = run(&g);
        assert_eq!(
            (
                info.distro.as_deref(),
                info.version.clone(),
                info.product_name.as_deref()
            ),
            (Some(distro), version.and_then(v), product),
            "{files:?}"
        );
        let want = version.and_then(v);
        assert_eq!(info.major_version, want.as_ref().map(Version::major));
        assert_eq!(info.minor_version, want.as_ref().map(Version::minor));
        assert_eq!(info.os_type, Os::Linux);
    }
}

/// RHEL 5 from Xen as installed: hostname in sysconfig/network, GRUB legacy, SysV init, a
/// regular and a Xen kernel with their module trees (virtio backported as modules in the
/// regular one), rpm + yum.
#[test]
fn rhel5_xen_guest() {
    let g = Guest::new();
    let rel = "Red Hat Enterprise Linux Server release 5.11 (Tikanga)\n";
    g.file("/etc/redhat-release", rel)
        .file(
            "/etc/sysconfig/network",
            "NETWORKING=yes\nNETWORKING_IPV6=no\nHOSTNAME=rhel5.example.com\n",
        )
        .file(
            "/etc/fstab",
            "/dev/VolGroup00/LogVol00 /                       ext3    defaults        1 1\nLABEL=/boot             /boot                   ext3    defaults        1 2\ntmpfs                   /dev/shm                tmpfs   defaults        0 0\nproc                    /proc                   proc    defaults        0 0\n/dev/VolGroup00/LogVol01 swap                    swap    defaults        0 0\n",
        )
        .file("/boot/grub/grub.conf", "default=0\ntimeout=5\ntitle Red Hat Enterprise Linux Server (2.6.18-398.el5xen)\n\troot (hd0,0)\n\tkernel /vmlinuz-2.6.18-398.el5xen ro root=/dev/VolGroup00/LogVol00\n")
        .link("/boot/grub/menu.lst", "./grub.conf")
        .file("/boot/vmlinuz-2.6.18-398.el5", "kernel")
        .file("/boot/vmlinuz-2.6.18-398.el5xen", "kernel")
        .file("/lib/modules/2.6.18-398.el5/kernel/drivers/block/virtio_blk.ko", "ko")
        .file("/lib/modules/2.6.18-398.el5/kernel/drivers/net/virtio_net.ko", "ko")
        .file("/lib/modules/2.6.18-398.el5/kernel/drivers/virtio/virtio_pci.ko", "ko")
        .file("/lib/modules/2.6.18-398.el5/modules.dep", "/lib/modules/2.6.18-398.el5/kernel/drivers/block/virtio_blk.ko: /lib/modules/2.6.18-398.el5/kernel/drivers/virtio/virtio_ring.ko\n")
        .file("/lib/modules/2.6.18-398.el5xen/kernel/drivers/xen/blkfront/xenblk.ko", "ko")
        .file("/etc/inittab", "id:3:initdefault:\nsi::sysinit:/etc/rc.d/rc.sysinit\n")
        .exe("/sbin/init")
        .exe("/bin/bash")
        .exe("/usr/bin/yum")
        .dir("/var/lib/rpm");
    let info = run(&g);
    assert_eq!(info.distro.as_deref(), Some("rhel"));
    assert_eq!(info.hostname.as_deref(), Some("rhel5.example.com"));
    assert_eq!(info.init, InitSystem::Sysvinit);
    assert_eq!(info.bootloader.loader, Bootloader::Grub);
    assert_eq!(
        info.bootloader.config.as_deref(),
        Some("/boot/grub/grub.conf")
    );
    assert!(!info.bootloader.efi);
    assert_eq!(
        (
            info.package_format.as_deref(),
            info.package_management.as_deref()
        ),
        (Some("rpm"), Some("yum"))
    );
    let k: Vec<_> = info
        .kernels
        .iter()
        .map(|k| {
            (
                k.version.as_str(),
                k.vmlinuz.as_deref(),
                k.modules.as_deref(),
                [k.virtio_blk, k.virtio_net, k.virtio_scsi, k.virtio_pci],
            )
        })
        .collect();
    use Driver::*;
    assert_eq!(
        k,
        [
            (
                "2.6.18-398.el5",
                Some("/boot/vmlinuz-2.6.18-398.el5"),
                Some("/lib/modules/2.6.18-398.el5"),
                [Module, Module, Missing, Module]
            ),
            (
                "2.6.18-398.el5xen",
                Some("/boot/vmlinuz-2.6.18-398.el5xen"),
                Some("/lib/modules/2.6.18-398.el5xen"),
                [Missing, Missing, Missing, Missing]
            ),
        ]
    );
    assert_eq!(info.source, Hypervisor::Xen);
    assert_eq!(info.tools.len(), 1);
    assert_eq!(info.tools[0].path, "/boot/vmlinuz-2.6.18-398.el5xen");
    assert_eq!(info.fstab.len(), 5);
    let f = Facts::from(&info);
    let root = f.root.clone().unwrap();
    assert_eq!(root.device.as_deref(), Some("/dev/VolGroup00/LogVol00"));
    assert_eq!(root.fstype.as_deref(), Some("ext3"));
    assert_eq!((f.distro.as_str(), f.family().as_str()), ("rhel", "rhel"));
}

/// Kernel trees of newer distributions: /lib → usr/lib, compressed modules, drivers built
/// in (modules.builtin), out-of-tree copies found through modules.dep, and images named by
/// flavour (Arch's pkgbase, Alpine's `-lts`), a rescue image with no modules, and modules
/// left behind by a removed kernel.
#[test]
fn kernels_and_virtio() {
    let g = Guest::new();
    let m = "/usr/lib/modules/5.14.0-362.el9.x86_64";
    let a = "/usr/lib/modules/6.5.3-arch1-1";
    let l = "/usr/lib/modules/6.1.55-0-lts";
    g.link("/lib", "usr/lib")
        .file("/boot/vmlinuz-5.14.0-362.el9.x86_64", "k")
        .file("/boot/.vmlinuz-5.14.0-362.el9.x86_64.hmac", "h")
        .file("/boot/vmlinuz-0-rescue-4f1a", "k")
        .file(&format!("{m}/kernel/drivers/block/virtio_blk.ko.xz"), "x")
        .file(&format!("{m}/kernel/drivers/net/virtio_net.ko.zst"), "x")
        .file(&format!("{m}/extra/virtio_scsi.ko.gz"), "x")
        .file(
            &format!("{m}/modules.dep"),
            "kernel/drivers/block/virtio_blk.ko.xz:\nextra/virtio_scsi.ko.gz:\nkernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\n",
        )
        .file(
            &format!("{m}/modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
        )
        .file("/boot/vmlinuz-linux", "k")
        .file(&format!("{a}/pkgbase"), "linux\n")
        .file(&format!("{a}/kernel/drivers/block/virtio_blk.ko.zst"), "x")
        .file("/boot/vmlinuz-lts", "k")
        .file(&format!("{l}/modules.builtin"), "kernel/drivers/block/virtio_blk.ko\nkernel/drivers/net/virtio_net.ko\nkernel/drivers/scsi/virtio_scsi.ko\nkernel/drivers/virtio/virtio_pci.ko\n")
        .dir("/usr/lib/modules/4.18.0-old.el8.x86_64");
    let info = run(&g);
    use Driver::*;
    let k: Vec<_> = info
        .kernels
        .iter()
        .map(|k| {
            (
                k.version.as_str(),
                k.vmlinuz.as_deref(),
                k.modules.as_deref(),
                [k.virtio_blk, k.virtio_net, k.virtio_scsi, k.virtio_pci],
            )
        })
        .collect();
    assert_eq!(
        k,
        [
            (
                "0-rescue-4f1a",
                Some("/boot/vmlinuz-0-rescue-4f1a"),
                None,
                [Unknown; 4]
            ),
            (
                "4.18.0-old.el8.x86_64",
                None,
                Some("/usr/lib/modules/4.18.0-old.el8.x86_64"),
                [Missing; 4]
            ),
            (
                "5.14.0-362.el9.x86_64",
                Some("/boot/vmlinuz-5.14.0-362.el9.x86_64"),
                Some(m),
                // virtio_pci.ko.xz is in modules.dep but not on disk: builtin wins.
                [Module, Module, Module, Builtin]
            ),
            (
                "6.1.55-0-lts",
                Some("/boot/vmlinuz-lts"),
                Some(l),
                [Builtin; 4]
            ),
            (
                "6.5.3-arch1-1",
                Some("/boot/vmlinuz-linux"),
                Some(a),
                [Module, Missing, Missing, Missing]
            ),
        ]
    );
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
}

/// This host's own module tree, when it has one.
#[test]
fn host_kernel_modules() {
    let Some(dir) = ["/lib/modules", "/usr/lib/modules"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|r| r.filter_map(Result::ok))
        .map(|e| e.path())
        .find(|p| p.join("modules.builtin").is_file())
    else {
        eprintln!("SKIP: this host has no /lib/modules/*/modules.builtin");
        return;
    };
    let release = dir.file_name().unwrap().to_str().unwrap().to_string();
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap();
    let g = Guest::new();
    g.bytes(
        &format!("/lib/modules/{release}/modules.builtin"),
        builtin.as_bytes(),
    );
    for (name, sub) in [
        ("virtio_blk", "block"),
        ("virtio_net", "net"),
        ("virtio_scsi", "scsi"),
        ("virtio_pci", "virtio"),
    ] {
        for s in [".ko", ".ko.xz", ".ko.gz", ".ko.zst"] {
            let rel = format!("kernel/drivers/{sub}/{name}{s}");
            if dir.join(&rel).is_file() {
                g.file(&format!("/lib/modules/{release}/{rel}"), "ko");
            }
        }
    }
    let info = run(&g);
    let k = &info.kernels[0];
    let expect = |name: &str, sub: &str| {
        let file = [".ko", ".ko.xz", ".ko.gz", ".ko.zst"].iter().any(|s| {
            dir.join(format!("kernel/drivers/{sub}/{name}{s}"))
                .is_file()
        });
        if file {
            Driver::Module
        } else if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
            Driver::Builtin
        } else {
            Driver::Missing
        }
    };
    assert_eq!(k.virtio_blk, expect("virtio_blk", "block"));
    assert_eq!(k.virtio_net, expect("virtio_net", "net"));
    assert_eq!(k.virtio_scsi, expect("virtio_scsi", "scsi"));
    assert_eq!(k.virtio_pci, expect("virtio_pci", "virtio"));
}

/// Architectures: crafted headers of each, `file` as the oracle, through symlinks in the
/// guest (/bin → usr/bin, sh → busybox).
#[test]
fn elf_architectures_match_file() {
    if !have_file() {
        return;
    }
    let cases: [(u8, bool, u16); 19] = [
        (64, true, 62),
        (32, true, 3),
        (64, true, 183),
        (32, true, 40),
        (64, false, 21),
        (64, true, 21),
        (32, false, 20),
        (64, false, 22),
        (64, true, 243),
        (32, false, 8),
        (32, true, 8),
        (64, false, 8),
        (64, true, 8),
        (64, false, 43),
        (32, false, 2),
        (64, true, 258),
        (64, true, 50),
        (32, false, 15),
        (64, true, 62),
    ];
    for (bits, le, machine) in cases {
        let g = Guest::new();
        g.dir("/usr/bin")
            .link("/bin", "usr/bin")
            .bytes("/usr/bin/busybox", &elf_header(bits, le, machine))
            .link("/usr/bin/sh", "/bin/busybox");
        let (fb, fle, fm) = file_elf(&g.host("/usr/bin/busybox"));
        assert_eq!((fb, fle), (u32::from(bits), le));
        let info = run(&g);
        assert_eq!(
            info.arch.as_deref(),
            Some(uname_of(fb, fle, &fm)),
            "{bits}-bit le={le} machine {machine}: file says {fm}"
        );
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }
}

/// Damaged ELF headers on /bin/sh: a warning naming the file, and the next probe used.
#[test]
fn absurd_elf_headers() {
    let good = elf_header(64, true, 183);
    let mut bad_class = good.clone();
    bad_class[4] = 9;
    let mut huge_phoff = good.clone();
    huge_phoff[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    huge_phoff[56] = 3;
    let mut unknown = good.clone();
    unknown[18] = 0xfe;
    unknown[19] = 0xfe;
    let cases: [(&[u8], &str); 5] = [
        (&good[..30], "truncated"),
        (&bad_class, "EI_CLASS 9"),
        (&huge_phoff, "past the file"),
        (&unknown, "unknown machine 65278"),
        (b"\x7fEL", ""),
    ];
    for (sh, msg) in cases {
        for with_ls in [false, true] {
            let g = Guest::new();
            g.bytes("/bin/sh", sh);
            if with_ls {
                g.bytes("/usr/bin/ls", &elf_header(32, true, 40));
            }
            let info = run(&g);
            assert_eq!(info.arch.as_deref(), with_ls.then_some("armv7l"), "{msg}");
            if msg.is_empty() {
                assert!(info.warnings.is_empty(), "{:?}", info.warnings);
            } else {
                assert_eq!(info.warnings.len(), 1, "{:?}", info.warnings);
                assert!(
                    info.warnings[0].starts_with("/bin/sh: ") && info.warnings[0].contains(msg),
                    "{:?}",
                    info.warnings
                );
            }
        }
    }
}

/// Symlink loops and links out of the root in release files; oversized files.
#[test]
fn hostile_release_files() {
    // A loop: warned, and the older release file still read.
    let g = Guest::new();
    g.link("/etc/os-release", "os-release.d/x")
        .link("/etc/os-release.d/x", "/etc/os-release")
        .file("/etc/debian_version", "5.0.10\n");
    let info = run(&g);
    assert_eq!(info.distro.as_deref(), Some("debian"));
    assert!(
        info.warnings
            .iter()
            .any(|w| w.starts_with("/etc/os-release: ") && w.contains("symbolic links")),
        "{:?}",
        info.warnings
    );

    // A link climbing out of the root resolves to the guest's own file, never the host's.
    let g = Guest::new();
    g.link("/etc/os-release", "../../../../etc/shadow")
        .file("/etc/shadow", "ID=guestshadow\nVERSION_ID=1.5\n");
    let info = run(&g);
    assert_eq!(info.distro.as_deref(), Some("guestshadow"));
    assert_eq!(info.version, v("1.5"));
    let g = Guest::new();
    g.link("/etc/os-release", "../../../../etc/passwd")
        .link("/usr/lib/os-release", "/../../../etc/hostname");
    let info = run(&g);
    assert_eq!(info.distro, None);
    assert_eq!(info.os_type, Os::Unknown);

    // Too large to be a release file; a directory where a file should be.
    let g = Guest::new();
    let mut big = "ID=fedora\n".to_string();
    big.push_str(&"#".repeat(200_000));
    g.file("/etc/os-release", &big).dir("/etc/hostname");
    let info = run(&g);
    assert_eq!(info.distro, None);
    assert!(info
        .warnings
        .iter()
        .any(|w| w.starts_with("/etc/os-release: ") && w.contains("larger than")));
    assert!(info
        .warnings
        .iter()
        .any(|w| w == "/etc/hostname: not a regular file"));

    // Binary junk as release files: no panic, lossy text, warned.
    let g = Guest::new();
    let junk: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    g.bytes("/etc/redhat-release", &junk)
        .bytes("/etc/hostname", &junk);
    let info = run(&g);
    assert!(info.warnings.iter().any(|w| w.contains("not UTF-8")));
}

/// fstab of 10^5 lines and of binary junk: the entry cap, warnings with line numbers.
#[test]
fn hostile_fstab() {
    let g = Guest::new();
    let mut big = String::from("UUID=0d1e2f3a / ext4 defaults 1 1\n");
    for i in 1..100_000 {
        big.push_str(&format!("/dev/b{i} /s{i} xfs defaults 0 2\n"));
    }
    g.file("/etc/fstab", &big);
    let t0 = Instant::now();
    let info = run(&g);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(info.fstab.len(), ferry::guest::fstab::MAX_ENTRIES);
    assert_eq!(
        info.warnings,
        ["/etc/fstab: line 10001: more than 10000 entries; the rest of the file is ignored"]
    );
    assert_eq!(
        Facts::from(&info).root.unwrap().uuid.as_deref(),
        Some("0d1e2f3a")
    );

    let g = Guest::new();
    let mut junk: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    junk.extend_from_slice(b"\nLABEL=root\t/\text4\tdefaults\t0\t1\n");
    g.bytes("/etc/fstab", &junk);
    let info = run(&g);
    assert!(info
        .fstab
        .iter()
        .any(|e| e.spec == "LABEL=root" && e.file == "/"));
    assert!(info.warnings.len() <= ferry::guest::inspect::MAX_WARNINGS + 1);
    assert!(info
        .warnings
        .iter()
        .all(|w| w.starts_with("/etc/fstab: line ") || w.contains("more warnings")));
}

/// Directory listing caps: a /boot with thousands of entries, a /lib/modules loop.
#[test]
fn huge_and_looping_directories() {
    let g = Guest::new();
    for i in 0..5000 {
        g.file(&format!("/boot/f{i:05}"), "");
    }
    g.link("/lib", "lib2").link("/lib2", "lib");
    let info = run(&g);
    assert!(info.kernels.is_empty());
    assert!(info
        .warnings
        .iter()
        .any(|w| w.starts_with("/boot: 5000 entries")));
    assert!(info
        .warnings
        .iter()
        .any(|w| w.starts_with("/lib/modules: ") && w.contains("symbolic links")));
}

/// Boot loaders: where each distribution keeps its configuration.
#[test]
fn boot_loaders() {
    let cases: [(&[&str], Bootloader, Option<&str>, bool); 8] = [
        (
            &[
                "/boot/grub2/grub.cfg",
                "/boot/efi/EFI/fedora/grub.cfg",
                "/boot/efi/EFI/fedora/shimx64.efi",
            ],
            Bootloader::Grub2,
            Some("/boot/grub2/grub.cfg"),
            true,
        ),
        (
            &[
                "/boot/efi/EFI/redhat/grub.cfg",
                "/boot/efi/EFI/redhat/grubx64.efi",
            ],
            Bootloader::Grub2,
            Some("/boot/efi/EFI/redhat/grub.cfg"),
            true,
        ),
        (
            &["/boot/grub/grub.cfg"],
            Bootloader::Grub2,
            Some("/boot/grub/grub.cfg"),
            false,
        ),
        (
            &["/boot/grub/menu.lst"],
            Bootloader::Grub,
            Some("/boot/grub/menu.lst"),
            false,
        ),
        (
            &[
                "/boot/efi/EFI/redhat/grub.conf",
                "/boot/efi/EFI/redhat/grub.efi",
            ],
            Bootloader::Grub,
            Some("/boot/efi/EFI/redhat/grub.conf"),
            true,
        ),
        (
            &["/boot/extlinux.conf"],
            Bootloader::Extlinux,
            Some("/boot/extlinux.conf"),
            false,
        ),
        (
            &[
                "/efi/loader/loader.conf",
                "/efi/loader/entries/arch.conf",
                "/efi/EFI/systemd/systemd-bootx64.efi",
            ],
            Bootloader::SystemdBoot,
            Some("/efi/loader/loader.conf"),
            true,
        ),
        (&[], Bootloader::Unknown, None, false),
    ];
    for (files, loader, config, efi) in cases {
        let g = Guest::new();
        for f in files {
            g.file(f, "x");
        }
        let info = run(&g);
        assert_eq!(
            (
                info.bootloader.loader,
                info.bootloader.config.as_deref(),
                info.bootloader.efi
            ),
            (loader, config, efi),
            "{files:?}"
        );
    }
    // An ESP in fstab but not mounted in this tree still says UEFI.
    let g = Guest::new();
    g.file("/boot/grub/grub.cfg", "x").file(
        "/etc/fstab",
        "UUID=1 / ext4 defaults 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n",
    );
    assert!(run(&g).bootloader.efi);
}

/// Guest tools and the source hypervisor they point to; init systems.
#[test]
fn tools_and_init() {
    let g = Guest::new();
    g.exe("/usr/bin/vmtoolsd")
        .exe("/usr/sbin/hv_kvp_daemon")
        .dir("/opt/VBoxGuestAdditions-6.1.38")
        .exe("/usr/lib/systemd/systemd")
        .link("/sbin/init", "../usr/lib/systemd/systemd");
    let info = run(&g);
    let names: Vec<(&str, Hypervisor, &str)> = info
        .tools
        .iter()
        .map(|t| (t.name.as_str(), t.hypervisor, t.path.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("open-vm-tools", Hypervisor::Vmware, "/usr/bin/vmtoolsd"),
            (
                "hyperv-daemons",
                Hypervisor::Hyperv,
                "/usr/sbin/hv_kvp_daemon"
            ),
            (
                "virtualbox-additions",
                Hypervisor::Virtualbox,
                "/opt/VBoxGuestAdditions-6.1.38"
            ),
        ]
    );
    assert_eq!(info.source, Hypervisor::Vmware);
    assert_eq!(info.init, InitSystem::Systemd);

    let g = Guest::new();
    g.exe("/usr/sbin/xe-daemon")
        .exe("/usr/sbin/hv_kvp_daemon")
        .file("/etc/fstab", "/dev/xvda1 / ext4 defaults 1 1\n")
        .exe("/sbin/initctl")
        .file("/etc/init/rc-sysinit.conf", "start on filesystem\n");
    let info = run(&g);
    assert_eq!(info.source, Hypervisor::Xen);
    assert!(info
        .tools
        .iter()
        .any(|t| t.name == "xen-disk-names" && t.path == "/etc/fstab:1"));
    assert_eq!(info.init, InitSystem::Upstart);

    let g = Guest::new();
    g.exe("/sbin/openrc").link("/sbin/init", "/bin/busybox");
    assert_eq!(run(&g).init, InitSystem::Openrc);
}

/// Package managers by database and program, and by release where a tree has neither.
#[test]
fn package_managers() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str, &'a str);
    let cases: [Case; 8] = [
        (
            &[(
                "/etc/redhat-release",
                "Red Hat Enterprise Linux AS release 4 (Nahant Update 9)\n",
            )],
            &[],
            "rpm",
            "up2date",
        ),
        (
            &[(
                "/etc/redhat-release",
                "CentOS Linux release 7.9.2009 (Core)\n",
            )],
            &["/var/lib/rpm/Packages"],
            "rpm",
            "yum",
        ),
        (
            &[("/etc/os-release", "ID=rhel\nVERSION_ID=8.9\n")],
            &[],
            "rpm",
            "dnf",
        ),
        (
            &[("/etc/os-release", "ID=fedora\nVERSION_ID=38\n")],
            &["/usr/bin/dnf5"],
            "rpm",
            "dnf",
        ),
        (
            &[(
                "/etc/SuSE-release",
                "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
            )],
            &["/usr/bin/zypper"],
            "rpm",
            "zypper",
        ),
        (
            &[("/etc/os-release", "ID=alpine\n")],
            &["/lib/apk/db/installed"],
            "apk",
            "apk",
        ),
        (
            &[("/etc/arch-release", "")],
            &["/var/lib/pacman/local/ALPM_DB_VERSION"],
            "pacman",
            "pacman",
        ),
        (
            &[("/etc/gentoo-release", "Gentoo Base System release 2.7\n")],
            &["/var/db/pkg/sys-apps/x"],
            "ebuild",
            "portage",
        ),
    ];
    for (files, extra, format, mgr) in cases {
        let g = Guest::new();
        for (p, t) in files {
            g.file(p, t);
        }
        for p in extra {
            g.file(p, "");
        }
        let info = run(&g);
        assert_eq!(
            (
                info.package_format.as_deref(),
                info.package_management.as_deref()
            ),
            (Some(format), Some(mgr)),
            "{files:?}"
        );
    }
}

/// Windows is recognised by its system directory in any letter case.
#[test]
fn windows_and_roots() {
    let g = Guest::new();
    g.dir("/WINDOWS/system32/config").dir("/Program Files");
    let tree = HostTree::new(g.root()).unwrap();
    assert!(is_root(&tree));
    let info = run(&g);
    assert_eq!(info.os_type, Os::Windows);
    assert_eq!(info.systemroot.as_deref(), Some("/WINDOWS"));
    assert_eq!(Facts::from(&info).os, Os::Windows);
    // The registry is read now (tests/integration/windows.rs); a tree without hives is simply
    // a Windows root with nothing more known, not "registry not read".
    assert!(
        info.warnings.iter().all(|w| !w.contains("not read")),
        "{:?}",
        info.warnings
    );

    let g = Guest::new();
    g.dir("/etc").dir("/home/user");
    assert!(!is_root(&HostTree::new(g.root()).unwrap()));
    g.link("/bin", "usr/bin").dir("/usr/bin");
    assert!(is_root(&HostTree::new(g.root()).unwrap()));
    let g = Guest::new();
    g.file("/Windows", "not a directory");
    assert!(!is_root(&HostTree::new(g.root()).unwrap()));
    assert_eq!(run(&g).os_type, Os::Unknown);
}
