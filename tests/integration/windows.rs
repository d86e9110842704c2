//! Registry hives and Windows inspection, against hivex (`hivexregedit --export`, `hivexget`)
//! on the corpus hives and on a Windows-shaped guest built here.

use crate::common;
use common::kernel::{self, Snapshot};
use common::ntfs3g::Ntfs3g;
use common::regflog;
use ferry::regf::Hive;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// (key path, value name, type, data) for every value, and every key path with an empty
/// name and type `u32::MAX` (so that keys without values count too).
pub(crate) type Listing = BTreeSet<(String, String, u32, Vec<u8>)>;

fn ours(path: &Path) -> Listing {
    listing(&Hive::open(std::fs::read(path).unwrap()).unwrap())
}

/// Every key and value of an open hive.
pub(crate) fn listing(hive: &Hive) -> Listing {
    let mut out = Listing::new();
    hive.walk(&mut |p, k| {
        out.insert((p.to_string(), String::new(), u32::MAX, Vec::new()));
        for v in k.values()? {
            out.insert((p.to_string(), v.name, v.kind, v.data));
        }
        Ok(())
    })
    .unwrap();
    out
}

fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        // hivexregedit prints Latin-1 names as their bytes.
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The listing `hivexregedit --export` gives (its .reg text parsed).
pub(crate) fn theirs(path: &Path) -> Listing {
    let out = std::process::Command::new("hivexregedit")
        .arg("--export")
        .arg(path)
        .arg("\\")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit failed on {}",
        path.display()
    );
    let mut lines: Vec<String> = Vec::new();
    let mut cont = false;
    for raw in out.stdout.split(|&b| b == b'\n') {
        let l = text(raw);
        if cont {
            let last = lines.last_mut().unwrap();
            last.push_str(l.trim_start());
        } else {
            lines.push(l.clone());
        }
        cont = l.ends_with('\\') && !l.starts_with('[');
        if cont {
            lines.last_mut().unwrap().pop();
        }
    }
    let mut set = Listing::new();
    let mut key = String::new();
    for l in lines {
        if l.starts_with('[') && l.ends_with(']') {
            key = l[1..l.len() - 1].to_string();
            set.insert((key.clone(), String::new(), u32::MAX, Vec::new()));
            continue;
        }
        let (name, data) = if let Some(d) = l.strip_prefix("@=") {
            (String::new(), d.to_string())
        } else if let Some(r) = l.strip_prefix('"') {
            // The name ends at the first unescaped quote followed by '='.
            let mut end = None;
            let b = r.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b'"' && b.get(i + 1) == Some(&b'=') {
                    end = Some(i);
                    break;
                }
                i += 1;
            }
            let e = end.unwrap_or_else(|| panic!("unparsed .reg line {l:?}"));
            (unescape(&r[..e]), r[e + 2..].to_string())
        } else {
            continue;
        };
        let (kind, bytes) = if let Some(h) = data.strip_prefix("dword:") {
            (
                4,
                u32::from_str_radix(h, 16).unwrap().to_le_bytes().to_vec(),
            )
        } else if let Some(rest) = data.strip_prefix("hex(") {
            let (t, hex) = rest.split_once("):").unwrap();
            (u32::from_str_radix(t, 16).unwrap(), hex_bytes(hex))
        } else if let Some(hex) = data.strip_prefix("hex:") {
            (3, hex_bytes(hex))
        } else {
            panic!("unparsed .reg data {data:?}");
        };
        set.insert((key.clone(), name, kind, bytes));
    }
    set
}

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| u8::from_str_radix(x.trim(), 16).unwrap())
        .collect()
}

fn assert_same_listing(path: &Path) {
    let a = ours(path);
    let b = theirs(path);
    let only_ours: Vec<_> = a.difference(&b).take(5).collect();
    let only_theirs: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{}: ferry only {only_ours:?}\nhivex only {only_theirs:?}",
        path.display()
    );
    assert!(
        a.len() > 1 || path.ends_with("minimal"),
        "{}: nothing listed",
        path.display()
    );
    eprintln!("{}: {} keys and values agree", path.display(), a.len());
}

pub(crate) fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    common::run_tool("hivexget", &[hive.to_str().unwrap(), key, value])
        .trim_end_matches('\n')
        .to_string()
}

#[test]
fn corpus_hives_list_as_hivex_lists_them() {
    // FERRY_CORPUS points at the corpus from a worktree where ../shared is absent.
    let Some(corpus) = std::env::var_os("FERRY_CORPUS")
        .map(std::path::PathBuf::from)
        .or_else(common::corpus)
    else {
        return;
    };
    if !common::have_tools(&["hivexregedit", "hivexget"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for name in ["minimal", "special", "rlenvalue_test_hive"] {
        assert_same_listing(&corpus.join("hivex-images").join(name));
    }
    let system = common::unpack(&corpus.join("dissect.regf/SYSTEM.gz"), tmp.path());
    let before = common::sha256_file(&system);
    assert_same_listing(&system);
    let hive = Hive::open(std::fs::read(&system).unwrap()).unwrap();
    let current = hive.value("\\Select", "Current").unwrap().unwrap();
    assert_eq!(
        current.number().unwrap().to_string(),
        hivexget(&system, "\\Select", "Current")
    );
    let cs = format!("\\ControlSet{:03}", current.number().unwrap());
    for (key, value) in [
        (
            format!("{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName",
        ),
        (format!("{cs}\\Services\\Tcpip\\Parameters"), "Hostname"),
        (format!("{cs}\\Control"), "SystemBootDevice"),
    ] {
        let oracle = hivexget(&system, &key, value);
        // Case-insensitive lookup, as Windows does.
        let got = hive
            .value(&key.to_uppercase(), &value.to_lowercase())
            .unwrap()
            .unwrap_or_else(|| panic!("{key} {value} missing"));
        assert_eq!(got.string().unwrap(), oracle, "{key} {value}");
    }
    assert_eq!(before, common::sha256_file(&system));
}

const SOFTWARE_REG: &str = "Windows Registry Editor Version 5.00\n\n[\\Microsoft]\n\n\
    [\\Microsoft\\Windows NT]\n\n[\\Microsoft\\Windows NT\\CurrentVersion]\n\
    \"ProductName\"=\"Windows Server 2022 Standard\"\n\"CurrentMajorVersionNumber\"=dword:0000000a\n\
    \"CurrentMinorVersionNumber\"=dword:00000000\n\"CurrentBuildNumber\"=\"20348\"\n\
    \"EditionID\"=\"ServerStandard\"\n\"InstallationType\"=\"Server\"\n";

/// The SYSTEM hive's older state on the MBR guest (dirty, brought up to date by its log).
const STALE_SYSTEM_REG: &str = "Windows Registry Editor Version 5.00\n\n[\\Select]\n\
    \"Current\"=dword:00000002\n\n[\\ControlSet002]\n\n[\\ControlSet002\\Control]\n\n\
    [\\ControlSet002\\Control\\ComputerName]\n\n[\\ControlSet002\\Control\\ComputerName\\ComputerName]\n\
    \"ComputerName\"=\"WIN-STALE\"\n\n";

/// Driver packages in C:'s DriverStore (vioscsi has a package but no service).
const DRIVER_PACKAGES: [&str; 3] = [
    "netkvm.inf_amd64_0f1e2d3c4b5a6978",
    "viostor.inf_amd64_5f1b9a3c2d4e6f70",
    "vioscsi.inf_amd64_8899aabbccddeeff",
];

const SYSTEM_REG: &str = "Windows Registry Editor Version 5.00\n\n[\\Select]\n\
    \"Current\"=dword:00000002\n\n[\\ControlSet002]\n\n[\\ControlSet002\\Control]\n\n\
    [\\ControlSet002\\Control\\ComputerName]\n\n[\\ControlSet002\\Control\\ComputerName\\ComputerName]\n\
    \"ComputerName\"=\"WIN-FERRY\"\n\n[\\ControlSet002\\Services]\n\n\
    [\\ControlSet002\\Services\\Tcpip]\n\n[\\ControlSet002\\Services\\Tcpip\\Parameters]\n\
    \"Hostname\"=\"win-ferry\"\n\n\
    [\\ControlSet002\\Services\\viostor]\n\"Start\"=dword:00000000\n\n\
    [\\ControlSet002\\Services\\netkvm]\n\"Start\"=dword:00000003\n\n";

/// The GPT partition GUIDs of C: and D:, and one of a disk the guest saw once (E:).
const C_GUID: &str = "3d1c2b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const D_GUID: &str = "9a8b7c6d-5e4f-4321-8765-43210fedcba9";
const E_GUID: &str = "11111111-2222-4333-8444-555555555555";
/// The MBR disk signature, and another disk's (E:).
const MBR_SIG: u32 = 0x1ee7_c0de;
const OTHER_SIG: u32 = 0x0bad_f00d;
const C_START: u64 = 1 << 20;
const C_SIZE: u64 = 64 << 20;
const D_START: u64 = C_START + C_SIZE;
const D_SIZE: u64 = 32 << 20;
const ESP_START: u64 = D_START + D_SIZE;
const ESP_SIZE: u64 = 16 << 20;

/// A GUID's on-disk bytes (the first three fields little-endian), as GPT and
/// `MountedDevices` store it.
fn guid_bytes(g: &str) -> Vec<u8> {
    let h: Vec<u8> = hex_bytes(
        &g.replace('-', "")
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut b = Vec::new();
    b.extend(h[..4].iter().rev());
    b.extend(h[4..6].iter().rev());
    b.extend(h[6..8].iter().rev());
    b.extend(&h[8..]);
    b
}

fn reg_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `MountedDevices` as Windows writes it for this disk: C: and D: on it, E: on a disk not
/// given, a CD-ROM letter (its device path, not a partition) and a volume GUID entry.
fn mounted_devices(label: &str) -> String {
    let (c, d, e) = if label == "gpt" {
        let dmio = |g: &str| [b"DMIO:ID:".to_vec(), guid_bytes(g)].concat();
        (dmio(C_GUID), dmio(D_GUID), dmio(E_GUID))
    } else {
        let mbr =
            |sig: u32, off: u64| [sig.to_le_bytes().to_vec(), off.to_le_bytes().to_vec()].concat();
        (
            mbr(MBR_SIG, C_START),
            mbr(MBR_SIG, D_START),
            mbr(OTHER_SIG, C_START),
        )
    };
    let cdrom: Vec<u8> =
        "\\??\\IDE#CdRomQEMU_DVD-ROM#5&1&0&1.0.0#{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
    format!(
        "[\\MountedDevices]\n\"\\\\DosDevices\\\\C:\"=hex:{}\n\"\\\\DosDevices\\\\D:\"=hex:{}\n\
         \"\\\\DosDevices\\\\E:\"=hex:{}\n\"\\\\DosDevices\\\\F:\"=hex:{}\n\
         \"\\\\??\\\\Volume{{{E_GUID}}}\"=hex:{}\n",
        reg_hex(&c),
        reg_hex(&d),
        reg_hex(&e),
        reg_hex(&cdrom),
        reg_hex(&d),
    )
}

/// A Windows-shaped disk built here.
struct WinGuest {
    disk: std::path::PathBuf,
    /// Host copies of the hives written into C:\Windows\System32\config.
    software: std::path::PathBuf,
    system: std::path::PathBuf,
    /// D:'s partition as its own file (what the oracle mounts).
    d_volume: std::path::PathBuf,
}

/// An NTFS volume of `size` bytes made by mkntfs (for a partition at `start`), filled by `fill`
/// through a read-write ntfs-3g mount.
fn ntfs_volume(path: &Path, size: u64, start: u64, label: &str, fill: impl FnOnce(&Path)) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    common::run_tool(
        "mkntfs",
        &[
            "-q",
            "-F",
            "-f",
            "-L",
            label,
            "-p",
            &(start / 512).to_string(),
            path.to_str().unwrap(),
        ],
    );
    let mnt = path.with_extension("mnt");
    let m = Ntfs3g::mount(path, &mnt, "rw");
    fill(&m.0);
}

/// A GPT (`label` "gpt") or MBR ("dos") disk holding C: (NTFS: `\Windows\System32\config`
/// with SOFTWARE and SYSTEM hives merged by hivexregedit into copies of hivex's `minimal`,
/// a PE ntoskrnl.exe) and D: (NTFS with a few files), and a SYSTEM hive whose
/// MountedDevices gives both letters as Windows would for that table.
fn windows_guest(d: &Path, corpus: &Path, label: &str) -> WinGuest {
    let minimal = corpus.join("hivex-images/minimal");
    let sys_reg = format!("{SYSTEM_REG}{}", mounted_devices(label));
    let software = d.join(format!("{label}-SOFTWARE"));
    let system = d.join(format!("{label}-SYSTEM"));
    let merge = |hive: &Path, reg: &str, prefix: &str| {
        let reg_file = hive.with_extension("reg");
        std::fs::write(&reg_file, reg).unwrap();
        common::run_tool(
            "hivexregedit",
            &[
                "--merge",
                hive.to_str().unwrap(),
                "--prefix",
                prefix,
                reg_file.to_str().unwrap(),
            ],
        );
    };
    std::fs::copy(&minimal, &software).unwrap();
    merge(&software, SOFTWARE_REG, "HKEY_LOCAL_MACHINE\\SOFTWARE");
    // On the MBR guest SYSTEM is dirty: its primary file holds an older state (another
    // computer name, no services, no MountedDevices) and SYSTEM.LOG1 (new format) the
    // change to the hive the oracle reads; inspection must apply it.
    let stale = d.join(format!("{label}-SYSTEM-stale"));
    std::fs::copy(&minimal, &stale).unwrap();
    merge(&stale, STALE_SYSTEM_REG, "HKEY_LOCAL_MACHINE\\SYSTEM");
    std::fs::copy(&stale, &system).unwrap();
    merge(&system, &sys_reg, "HKEY_LOCAL_MACHINE\\SYSTEM");
    let (system_primary, system_log) = if label == "dos" {
        let mut a = std::fs::read(&stale).unwrap();
        let b = std::fs::read(&system).unwrap();
        regflog::mark_dirty(&mut a);
        let entry = regflog::Entry {
            seq: regflog::seqs(&a).0,
            hbins_len: regflog::hbins_len(&b),
            pages: regflog::dirty_pages(&a, &b, 4096),
        };
        let log = regflog::new_log(&a, &[entry]);
        (a, Some(log))
    } else {
        (std::fs::read(&system).unwrap(), None)
    };
    let c_volume = d.join(format!("{label}-c.ntfs"));
    ntfs_volume(&c_volume, C_SIZE, C_START, "System", |m| {
        // Letter case as Windows spells it, not as ferry looks it up.
        let config = m.join("WINDOWS/system32/Config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::copy(&software, config.join("SOFTWARE")).unwrap();
        std::fs::write(config.join("system"), &system_primary).unwrap();
        if let Some(log) = &system_log {
            std::fs::write(config.join("system.LOG1"), log).unwrap();
            std::fs::write(config.join("SYSTEM.LOG2"), b"").unwrap();
            // BIOS: the boot manager's store on the system volume.
            std::fs::create_dir_all(m.join("Boot")).unwrap();
            std::fs::copy(&minimal, m.join("Boot/BCD")).unwrap();
        }
        std::fs::write(m.join("WINDOWS/system32/ntoskrnl.exe"), pe_x86_64()).unwrap();
        std::fs::write(m.join("WINDOWS/system32/cmd.exe"), pe_x86_64()).unwrap();
        let repo = m.join("WINDOWS/system32/DriverStore/FileRepository");
        for pkg in DRIVER_PACKAGES
            .iter()
            .chain(["usbstor.inf_amd64_1a2b3c4d5e6f7a8b"].iter())
        {
            std::fs::create_dir_all(repo.join(pkg)).unwrap();
            std::fs::write(repo.join(pkg).join("driver.sys"), pe_x86_64()).unwrap();
        }
        std::fs::create_dir_all(m.join("Users/Public")).unwrap();
    });
    let d_volume = d.join(format!("{label}-d.ntfs"));
    ntfs_volume(&d_volume, D_SIZE, D_START, "Data", |m| {
        std::fs::create_dir_all(m.join("Shares/deep/er")).unwrap();
        std::fs::write(m.join("readme.txt"), b"the D: drive\r\n").unwrap();
        std::fs::write(m.join("empty"), b"").unwrap();
        std::fs::write(m.join("Shares/big.bin"), common::pseudo_random(14, 300_000)).unwrap();
        std::fs::write(m.join("Shares/deep/er/note.txt"), b"deep").unwrap();
        std::fs::write(m.join("Shares/d\u{e9}j\u{e0} vu.txt"), "unicode name").unwrap();
        for i in 0..200 {
            std::fs::write(m.join(format!("Shares/deep/f{i:03}")), i.to_string()).unwrap();
        }
    });
    let disk = d.join(format!("{label}.raw"));
    let script = if label == "gpt" {
        format!(
            "label: gpt\nstart={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid={C_GUID}\n\
             start={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid={D_GUID}\n\
             start={}, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
            C_START / 512,
            C_SIZE / 512,
            D_START / 512,
            D_SIZE / 512,
            ESP_START / 512,
            ESP_SIZE / 512
        )
    } else {
        format!(
            "label: dos\nlabel-id: {MBR_SIG:#010x}\nstart={}, size={}, type=7, bootable\n\
             start={}, size={}, type=7\n",
            C_START / 512,
            C_SIZE / 512,
            D_START / 512,
            D_SIZE / 512
        )
    };
    common::sfdisk_image(&disk, ESP_START + ESP_SIZE + (2 << 20), &script);
    if label == "gpt" {
        // UEFI: an EFI system partition (FAT, which ferry does not read).
        let esp = d.join(format!("{label}-esp.vfat"));
        std::fs::File::create(&esp)
            .unwrap()
            .set_len(ESP_SIZE)
            .unwrap();
        common::run_tool("mkfs.vfat", &["-n", "SYSTEM", esp.to_str().unwrap()]);
        common::write_into(&disk, ESP_START, &esp);
    }
    common::write_into(&disk, C_START, &c_volume);
    common::write_into(&disk, D_START, &d_volume);
    WinGuest {
        disk,
        software,
        system,
        d_volume,
    }
}

/// The smallest PE32+ image (x86-64, console subsystem) that `file` names as such: what
/// libguestfs needs to take `System32\\cmd.exe` for a Windows system's architecture.
fn pe_x86_64() -> Vec<u8> {
    let mut pe = vec![0u8; 1024];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    // COFF: the size of the optional header, and "executable, large-address aware".
    pe[0x94..0x96].copy_from_slice(&0xf0u16.to_le_bytes());
    pe[0x96..0x98].copy_from_slice(&0x22u16.to_le_bytes());
    // Optional header: PE32+ magic, console subsystem.
    pe[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
    pe[0xdc..0xde].copy_from_slice(&3u16.to_le_bytes());
    pe
}

/// `MountedDevices` as hivexget lists it: `\DosDevices\X:` → its data.
fn hivex_letters(system: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = common::run_tool("hivexget", &[system.to_str().unwrap(), "\\MountedDevices"]);
    let mut m = BTreeMap::new();
    for l in out.lines() {
        let Some((name, data)) = l.split_once("\"=hex(3):") else {
            continue;
        };
        if let Some(letter) = name.strip_prefix("\"\\\\DosDevices\\\\") {
            m.insert(letter.to_string(), hex_bytes(data));
        }
    }
    m
}

/// The corpus (for hivex's `minimal` hive) when it and the Windows tools are here.
fn windows_corpus() -> Option<std::path::PathBuf> {
    let corpus = std::env::var_os("FERRY_CORPUS")
        .map(std::path::PathBuf::from)
        .or_else(common::corpus)?;
    have_windows_tools().then_some(corpus)
}

/// Whether ntfs-3g, mkntfs, hivex and FUSE are here; a SKIP (or, under
/// FERRY_REQUIRE_FUSE=1, a failure) when not.
fn have_windows_tools() -> bool {
    let ok = common::have_tools(&[
        "hivexregedit",
        "hivexget",
        "mkntfs",
        "ntfs-3g",
        "sfdisk",
        "mkfs.vfat",
    ]) && Path::new("/dev/fuse").exists()
        && common::sh("id -u").trim() == "0";
    if !ok {
        assert!(
            !kernel::required(),
            "hivex, mkntfs, ntfs-3g, sfdisk, /dev/fuse and root are needed (FERRY_REQUIRE_FUSE=1)"
        );
        eprintln!("SKIP: needs hivex, mkntfs, ntfs-3g, sfdisk, /dev/fuse and root");
    }
    ok
}

/// A Windows-shaped guest on a GPT and on an MBR disk: `ferry inspect --json` says what
/// hivexget reads from its hives, maps C: and D: to their partitions (E:, a disk not given,
/// and the CD-ROM stay unmapped without a complaint), and lays them out as `/` and `/D:`;
/// `ferry mount` shows D: under `/D:` as ntfs-3g shows that partition.
#[test]
fn windows_guest_inspects_as_its_hives_say() {
    let Some(corpus) = windows_corpus() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for label in ["gpt", "dos"] {
        let g = windows_guest(tmp.path(), &corpus, label);
        let before = common::sha256_file(&g.disk);
        let j = common::ferry_json(&["inspect", "--json", g.disk.to_str().unwrap()]);
        assert_eq!(
            before,
            common::sha256_file(&g.disk),
            "{label}: inspect wrote"
        );
        check_registry_facts(&j, &g, label);
        check_drivers_and_boot(&j, label);
        check_drive_letters(&j, &g, label);
        check_mount(&g, tmp.path(), label);
        assert_eq!(before, common::sha256_file(&g.disk), "{label}: mount wrote");
    }
}

/// The GPT guest as libguestfs's virt-inspector (its appliance under TCG here) sees it: the
/// fields both tools report agree (type, distro, arch, product, variant, version, osinfo,
/// system root, control set, host name, drive letters, the root's filesystem). Where ferry
/// says more, virt-inspector says nothing: the MBR guest's dirty SYSTEM hive, whose log ferry
/// applies and libguestfs ignores, is left out. Runs where libguestfs-tools is installed;
/// otherwise a SKIP (CI does not install the appliance).
#[test]
fn windows_guest_inspects_as_virt_inspector_does() {
    let Some(corpus) = windows_corpus() else {
        return;
    };
    if common::tool("virt-inspector").is_none() {
        eprintln!("SKIP: virt-inspector (libguestfs-tools) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = windows_guest(tmp.path(), &corpus, "gpt");
    let disk = g.disk.to_str().unwrap();
    let j = common::ferry_json(&["inspect", "--json", disk]);
    let out = std::process::Command::new("virt-inspector")
        .args(["--format=raw", "-a", disk])
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virt-inspector: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = xml.find(&open)? + open.len();
        let end = start + xml[start..].find(&format!("</{name}>"))?;
        Some(xml[start..end].to_string())
    };
    let r = &j["roots"][0];
    let w = &r["windows"];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    for (theirs, ours) in [
        ("root", &r["root"]),
        ("name", &r["type"]),
        ("distro", &r["distro"]),
        ("arch", &r["arch"]),
        ("product_name", &r["product_name"]),
        ("product_variant", &w["installation_type"]),
        ("major_version", &r["major_version"]),
        ("minor_version", &r["minor_version"]),
        ("osinfo", &r["osinfo"]),
        ("windows_systemroot", &r["systemroot"]),
        ("windows_current_control_set", &w["current_control_set"]),
        ("hostname", &r["hostname"]),
    ] {
        assert_eq!(text(ours), tag(theirs), "{theirs}: {xml}");
    }
    // Drive letters: virt-inspector lists those whose partition is on the disks given.
    let theirs: BTreeMap<String, String> = xml
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("<drive_mapping name=\"")?;
            let (letter, rest) = rest.split_once("\">")?;
            let dev = rest.strip_suffix("</drive_mapping>")?;
            Some((format!("{letter}:"), dev.to_string()))
        })
        .collect();
    let ours: BTreeMap<String, String> = w["drive_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| Some((text(&l["letter"])?, text(&l["device"])?)))
        .collect();
    assert_eq!(ours, theirs, "{xml}");
    assert_eq!(theirs.len(), 2, "{xml}");
    // The root's filesystem: type, label and UUID (the volume serial).
    let fs = j["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["device"] == r["root"])
        .unwrap();
    assert_eq!(text(&fs["fstype"]), tag("type"), "{xml}");
    assert_eq!(text(&fs["label"]), tag("label"), "{xml}");
    assert_eq!(text(&fs["uuid"]), tag("uuid"), "{xml}");
}

fn check_registry_facts(j: &serde_json::Value, g: &WinGuest, label: &str) {
    let r = &j["roots"][0];
    let (sw, sys) = (&g.software, &g.system);
    let cv = "\\Microsoft\\Windows NT\\CurrentVersion";
    assert_eq!(j["roots"].as_array().unwrap().len(), 1, "{label}: {j}");
    assert_eq!(r["root"], "/dev/sda1", "{label}");
    assert_eq!(r["type"], "windows");
    assert_eq!(r["distro"], "windows");
    assert_eq!(r["arch"], "x86_64");
    assert_eq!(r["product_name"], hivexget(sw, cv, "ProductName"));
    assert_eq!(
        r["major_version"].to_string(),
        hivexget(sw, cv, "CurrentMajorVersionNumber")
    );
    assert_eq!(
        r["minor_version"].to_string(),
        hivexget(sw, cv, "CurrentMinorVersionNumber")
    );
    let w = &r["windows"];
    assert_eq!(w["build"], hivexget(sw, cv, "CurrentBuildNumber"));
    assert_eq!(w["edition"], hivexget(sw, cv, "EditionID"));
    assert_eq!(w["installation_type"], hivexget(sw, cv, "InstallationType"));
    let cur = hivexget(sys, "\\Select", "Current");
    let cs = format!("ControlSet{:03}", cur.parse::<u32>().unwrap());
    assert_eq!(w["current_control_set"], cs);
    // The DNS name as typed (Tcpip's Hostname, as libguestfs reads it), not the NetBIOS
    // name in capitals.
    assert_eq!(
        r["hostname"],
        hivexget(
            sys,
            &format!("\\{cs}\\Services\\Tcpip\\Parameters"),
            "Hostname"
        )
    );
    assert_ne!(
        r["hostname"],
        hivexget(
            sys,
            &format!("\\{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName"
        )
    );
    assert_eq!(r["osinfo"], "win2k22", "{label}");
    for svc in ["viostor", "netkvm"] {
        let drv = w["virtio_drivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == svc)
            .unwrap_or_else(|| panic!("{svc} missing: {w}"));
        assert_eq!(
            drv["start"].to_string(),
            hivexget(sys, &format!("\\{cs}\\Services\\{svc}"), "Start"),
            "{svc}"
        );
    }
}

/// The DriverStore's virtio packages as written through ntfs-3g, and the boot manager: BIOS
/// `\\Boot\\BCD` on C: for the MBR guest, UEFI from the ESP for the GPT one. The MBR
/// guest's SYSTEM was dirty: its log was applied (check_registry_facts saw the new hive).
fn check_drivers_and_boot(j: &serde_json::Value, label: &str) {
    let r = &j["roots"][0];
    let w = &r["windows"];
    let mut want: Vec<(String, String)> = DRIVER_PACKAGES
        .iter()
        .map(|p| (p.split('.').next().unwrap().to_string(), p.to_string()))
        .collect();
    want.sort();
    let got: Vec<(String, String)> = w["driver_packages"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: no driver_packages: {w}"))
        .iter()
        .map(|p| {
            let pkg = p["package"].as_str().unwrap().to_string();
            assert_eq!(
                p["path"],
                format!("/WINDOWS/system32/DriverStore/FileRepository/{pkg}"),
                "{label}"
            );
            (p["service"].as_str().unwrap().to_string(), pkg)
        })
        .collect();
    assert_eq!(got, want, "{label}");
    let b = &r["bootloader"];
    assert_eq!(b["loader"], "bootmgr", "{label}: {b}");
    if label == "dos" {
        assert_eq!(b["efi"], false, "{label}: {b}");
        assert_eq!(b["config"], "/Boot/BCD", "{label}: {b}");
        let rec = w["recovered_hives"].as_array().unwrap();
        assert_eq!(rec.len(), 1, "{label}: {w}");
        let line = rec[0].as_str().unwrap();
        assert!(
            line.starts_with("SYSTEM: /WINDOWS/system32/Config/system.LOG1: entries "),
            "{line}"
        );
        assert_eq!(w["dirty_hives"].as_array().unwrap().len(), 0, "{w}");
    } else {
        assert_eq!(b["efi"], true, "{label}: {b}");
        assert_eq!(b["device"], "/dev/sda3", "{label}: {b}");
        assert!(w.get("recovered_hives").is_none(), "{w}");
    }
}

/// The GUID (dashed, lowercase) in a GPT `MountedDevices` value.
fn guid_text(b: &[u8]) -> String {
    let le = |r: std::ops::Range<usize>| {
        b[r].iter()
            .rev()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let be =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        le(0..4),
        le(4..6),
        le(6..8),
        be(8..10),
        be(10..16)
    )
}

fn check_drive_letters(j: &serde_json::Value, g: &WinGuest, label: &str) {
    let r = &j["roots"][0];
    let letters = r["windows"]["drive_letters"].as_array().unwrap();
    let hivex = hivex_letters(&g.system);
    // Every letter of a partition (12 or 24 bytes) is listed; the CD-ROM's device path is not.
    let ours: Vec<&str> = letters
        .iter()
        .map(|l| l["letter"].as_str().unwrap())
        .collect();
    let theirs: Vec<&str> = hivex
        .iter()
        .filter(|(_, d)| d.len() == 12 || (d.len() == 24 && d.starts_with(b"DMIO:ID:")))
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(ours, theirs, "{label}");
    assert_eq!(ours, ["C:", "D:", "E:"], "{label}");
    let where_is = |b: &[u8]| -> Option<&str> {
        // The partitions of the disk built, by what Windows keys them with.
        if label == "gpt" {
            match guid_text(&b[8..]).as_str() {
                C_GUID => Some("/dev/sda1"),
                D_GUID => Some("/dev/sda2"),
                _ => None,
            }
        } else {
            let sig = u32::from_le_bytes(b[..4].try_into().unwrap());
            let off = u64::from_le_bytes(b[4..12].try_into().unwrap());
            match (sig, off) {
                (MBR_SIG, C_START) => Some("/dev/sda1"),
                (MBR_SIG, D_START) => Some("/dev/sda2"),
                _ => None,
            }
        }
    };
    for l in letters {
        let data = &hivex[l["letter"].as_str().unwrap()];
        if label == "gpt" {
            assert_eq!(l["gpt_partition"], guid_text(&data[8..]), "{l}");
        } else {
            let sig = u32::from_le_bytes(data[..4].try_into().unwrap());
            assert_eq!(l["mbr_signature"], format!("{sig:#010x}"), "{l}");
            assert_eq!(
                l["mbr_offset"],
                u64::from_le_bytes(data[4..12].try_into().unwrap()),
                "{l}"
            );
        }
        assert_eq!(l["device"].as_str(), where_is(data), "{label}: {l}");
    }
    // virt-inspector's mountpoints, C: → /dev/sda1 and D: → /dev/sda2, as the tree.
    assert_eq!(
        r["mountpoints"],
        serde_json::json!([
            {"mountpoint": "/", "device": "/dev/sda1", "drive": "C:"},
            {"mountpoint": "/D:", "device": "/dev/sda2", "drive": "D:"},
        ]),
        "{label}"
    );
    // The letters of disks not given are no problem.
    assert!(
        r["problems"].as_array().unwrap().is_empty(),
        "{label}: {}",
        r["problems"]
    );
}

/// `ferry mount` of the guest: `/` is C: (its kernel image as written), `/D:` is D: as
/// ntfs-3g shows that partition's bytes, path for path (type, size, times, sha256...).
fn check_mount(g: &WinGuest, dir: &Path, label: &str) {
    let d_bytes = dir.join(format!("{label}-d.part"));
    common::run_tool(
        "dd",
        &[
            &format!("if={}", g.disk.display()),
            &format!("of={}", d_bytes.display()),
            "bs=1M",
            &format!("skip={}", D_START >> 20),
            &format!("count={}", D_SIZE >> 20),
            "status=none",
        ],
    );
    assert_eq!(
        common::sha256_file(&d_bytes),
        common::sha256_file(&g.d_volume),
        "{label}: D: on the disk"
    );
    let oracle = Ntfs3g::mount(&d_bytes, &dir.join(format!("{label}-d.ro")), "ro");
    let mut theirs = kernel::walk(&oracle.0);
    drop(oracle);
    let fmnt = dir.join(format!("{label}-ferry"));
    let f = kernel::FerryMount::new(&[g.disk.as_os_str()], &fmnt).expect("ferry mount");
    let top: BTreeSet<String> = std::fs::read_dir(&fmnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let kernel_image = std::fs::read(fmnt.join("WINDOWS/system32/ntoskrnl.exe"));
    let mut ours = kernel::walk(&fmnt.join("D:"));
    drop(f);
    // The MBR guest's C: also holds the BIOS boot manager's `\\Boot`.
    let bios: &[&str] = if label == "dos" { &["Boot"] } else { &[] };
    assert_eq!(
        top,
        ["D:", "Users", "WINDOWS"]
            .iter()
            .chain(bios)
            .map(|s| s.to_string())
            .collect(),
        "{label}: / of the mount"
    );
    assert_eq!(kernel_image.unwrap(), pe_x86_64(), "{label}");
    normalize(&mut theirs);
    normalize(&mut ours);
    assert!(
        ours.contains_key(&b"Shares/deep/er/note.txt"[..]),
        "{label}"
    );
    kernel::assert_same(&theirs, &ours, &format!("{label}: /D: against ntfs-3g"));
}

/// Inode numbers differ by the tree's top byte, and each mount numbers its root its own way.
fn normalize(s: &mut Snapshot) {
    for e in s.values_mut() {
        e.ino &= (1 << 56) - 1;
    }
    if let Some(root) = s.get_mut(&b""[..]) {
        root.ino = 0;
    }
}
