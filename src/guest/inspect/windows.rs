//! Windows guests from their registry, as virt-inspector describes them: SOFTWARE's
//! `Microsoft\Windows NT\CurrentVersion` (product, version, build, edition, installation
//! type), SYSTEM's current control set (computer name, virtio driver services), its
//! `MountedDevices` (drive letters) and the machine field of ntoskrnl.exe's PE header; the
//! DriverStore's virtio packages; and where the boot manager's BCD store lies ([`bcd_store`],
//! run by the guest over every volume, since the ESP has no drive letter). Dirty hives get
//! their transaction logs applied in memory (`crate::regf::log`).

use super::{find_ci, Ctx, OsInfo};
use crate::bytes::{try_le16, try_le32};
use crate::fs::files::{FileTree, Kind};
use crate::guest::facts::Version;
use crate::regf::{Hive, LogFile};
use serde::{Deserialize, Serialize};

/// Real SOFTWARE hives reach a few hundred MiB; larger is not a hive to hold in memory.
const MAX_HIVE: u64 = 512 << 20;

/// DOS header, PE signature and COFF machine field all lie in the first KiB or so.
const PE_HEAD: usize = 4096;

/// The virtio drivers virt-v2v installs, by service name.
const VIRTIO_SERVICES: &[&str] = &["viostor", "vioscsi", "netkvm"];

/// One drive letter from `MountedDevices`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriveLetter {
    /// `C:`.
    pub letter: String,
    /// The GPT partition GUID (lowercase, dashed), for a GPT disk.
    pub gpt_partition: Option<String>,
    /// The MBR disk signature (`0x1234abcd`) and the partition's byte offset on the disk.
    pub mbr_signature: Option<String>,
    pub mbr_offset: Option<u64>,
    /// Our name for the partition it names (`/dev/sda2`), when one of the disks holds it
    /// (filled in by the guest, which knows the volumes; see `devmap::drive_letter`).
    pub device: Option<String>,
}

/// A driver service in the current control set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    /// Its `Start` value (0 boot, 1 system, 2 automatic, 3 manual, 4 disabled).
    pub start: Option<u32>,
}

/// A driver package in the DriverStore: evidence that a driver was installed (by pnputil or
/// the virtio-win installer), whether or not its service exists yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverPackage {
    /// The service its INF installs (`viostor`).
    pub service: String,
    /// The package directory, as spelled on disk (`viostor.inf_amd64_5f1b…`).
    pub package: String,
    /// Its guest path.
    pub path: String,
}

/// What the registry adds to [`OsInfo`] for a Windows guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowsInfo {
    pub build: Option<String>,
    pub edition: Option<String>,
    /// `Client`, `Server`, `Server Core`.
    pub installation_type: Option<String>,
    /// `ControlSet001`.
    pub current_control_set: Option<String>,
    pub drive_letters: Vec<DriveLetter>,
    /// The virtio driver services in the current control set, with their start type.
    pub virtio_drivers: Vec<Service>,
    /// The virtio driver packages in `System32\DriverStore\FileRepository`.
    pub driver_packages: Vec<DriverPackage>,
    /// SOFTWARE or SYSTEM was not written back cleanly and no transaction log brought it up
    /// to date: what is reported is what its primary file says.
    pub dirty_hives: Vec<String>,
    /// Dirty hives whose transaction logs were applied in memory, with what each log gave
    /// (`SYSTEM: /Windows/System32/config/SYSTEM.LOG1: entries 7-9`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered_hives: Vec<String>,
}

/// The transaction logs Windows 8.1 and later (and Vista's dual logging) keep beside a hive,
/// in the order recovery tries them. `NAME.LOG` (XP's single log) is not read: the dual
/// scheme leaves it as an unused artifact (specification, "Multiple transaction log files").
const LOG_SUFFIXES: &[&str] = &["LOG1", "LOG2"];

/// Reads the hive at `<root>\System32\config\<name>`, with its transaction logs
/// (`<name>.LOG1`, `<name>.LOG2`, any letter case as NTFS matches them) applied in memory
/// when it is dirty.
fn hive(cx: &Ctx, root: &str, name: &str, w: &mut WindowsInfo) -> Option<Hive> {
    let sys32 = find_ci(cx, root, "system32")?;
    let config = find_ci(cx, &sys32, "config")?;
    let path = find_ci(cx, &config, name)?;
    let data = cx.read(&path, MAX_HIVE)?;
    let logs: Vec<LogFile> = LOG_SUFFIXES
        .iter()
        .filter_map(|s| find_ci(cx, &config, &format!("{name}.{s}")))
        .filter_map(|p| cx.read(&p, MAX_HIVE).map(|data| LogFile { name: p, data }))
        .collect();
    let label = name.to_uppercase();
    match Hive::open_with_logs(data, &logs) {
        Ok(h) => {
            for warning in &h.recovery.warnings {
                cx.warn(warning.clone());
            }
            for a in &h.recovery.applied {
                w.recovered_hives.push(format!("{label}: {a}"));
            }
            if h.dirty() {
                w.dirty_hives.push(label);
                cx.warn(format!(
                    "{path}: hive is dirty (sequence numbers differ) and no transaction log brought it up to date; read as its primary file says"
                ));
            }
            Some(h)
        }
        Err(e) => {
            cx.warn(format!("{path}: {e}"));
            None
        }
    }
}

fn string(cx: &Ctx, h: &Hive, key: &str, value: &str) -> Option<String> {
    match h.value(key, value) {
        Ok(v) => v.and_then(|v| v.string()),
        Err(e) => {
            cx.warn(format!("registry {key}\\{value}: {e}"));
            None
        }
    }
}

fn number(cx: &Ctx, h: &Hive, key: &str, value: &str) -> Option<u64> {
    match h.value(key, value) {
        Ok(v) => v.and_then(|v| v.number()),
        Err(e) => {
            cx.warn(format!("registry {key}\\{value}: {e}"));
            None
        }
    }
}

/// The virtio packages in `<root>\System32\DriverStore\FileRepository`: directories named
/// `<inf>.inf_<arch>_<hash>`, one per staged driver package (Windows Vista and later).
fn driver_packages(cx: &Ctx, root: &str) -> Vec<DriverPackage> {
    let Some(repo) = find_ci(cx, root, "system32")
        .and_then(|s| find_ci(cx, &s, "driverstore"))
        .and_then(|d| find_ci(cx, &d, "filerepository"))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in cx.list(&repo) {
        let lower = name.to_ascii_lowercase();
        for s in VIRTIO_SERVICES {
            if lower.starts_with(&format!("{s}.inf_")) {
                let path = crate::fs::files::child(&repo, &name);
                if cx.is_dir(&path) {
                    out.push(DriverPackage {
                        service: s.to_string(),
                        package: name.clone(),
                        path,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.service, &a.package).cmp(&(&b.service, &b.package)));
    out
}

/// Where the Windows Boot Manager's store (BCD, itself a regf hive) lies on one volume:
/// `EFI\Microsoft\Boot\BCD` (an EFI system partition: UEFI) or `Boot\BCD` (the system or
/// "System Reserved" volume: BIOS). Returns its path on the volume and whether it is UEFI's.
pub fn bcd_store(tree: &dyn FileTree) -> Option<(String, bool)> {
    let cx = Ctx::new(tree);
    let walk = |parts: &[&str]| {
        parts
            .iter()
            .try_fold("/".to_string(), |dir, p| find_ci(&cx, &dir, p))
            .filter(|p| cx.kind(p) == Some(Kind::File))
    };
    if let Some(p) = walk(&["efi", "microsoft", "boot", "bcd"]) {
        return Some((p, true));
    }
    walk(&["boot", "bcd"]).map(|p| (p, false))
}

/// The architecture from a PE file's COFF machine field.
pub fn pe_arch(head: &[u8]) -> Option<&'static str> {
    if head.get(..2) != Some(b"MZ".as_slice()) {
        return None;
    }
    let pe = usize::try_from(try_le32(head, 0x3c)?).ok()?;
    let (sig, coff) = head.get(pe..)?.split_first_chunk::<4>()?;
    if sig != b"PE\0\0" {
        return None;
    }
    Some(match try_le16(coff, 0)? {
        0x014c => "i386",
        0x8664 => "x86_64",
        0xaa64 => "aarch64",
        0x01c4 => "armv7l",
        0x0200 => "ia64",
        _ => return None,
    })
}

/// `MountedDevices` data: `DMIO:ID:` + a GPT partition GUID, or an MBR disk signature and
/// the partition's byte offset.
fn drive_letter(letter: &str, d: &[u8]) -> Option<DriveLetter> {
    let mut dl = DriveLetter {
        letter: letter.to_string(),
        ..DriveLetter::default()
    };
    if d.len() == 24 && &d[..8] == b"DMIO:ID:" {
        let g = &d[8..];
        dl.gpt_partition = Some(format!(
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        ));
    } else if d.len() == 12 {
        dl.mbr_signature = Some(format!(
            "0x{:08x}",
            u32::from_le_bytes([d[0], d[1], d[2], d[3]])
        ));
        dl.mbr_offset = Some(u64::from_le_bytes(d[4..12].try_into().ok()?));
    } else {
        return None;
    }
    Some(dl)
}

/// Fills `info` from the registry of the Windows system root `root` (`/Windows`).
pub(crate) fn inspect(cx: &Ctx, root: &str, info: &mut OsInfo) {
    let mut w = WindowsInfo::default();
    if let Some(sw) = hive(cx, root, "software", &mut w) {
        let cv = "\\Microsoft\\Windows NT\\CurrentVersion";
        info.product_name = string(cx, &sw, cv, "ProductName");
        let major = number(cx, &sw, cv, "CurrentMajorVersionNumber");
        let minor = number(cx, &sw, cv, "CurrentMinorVersionNumber");
        // DWORDs; a larger (QWORD) number is not a Windows version.
        let dword = |n: Option<u64>| n.and_then(|n| u32::try_from(n).ok());
        let version = match dword(major) {
            Some(m) => Some(Version::from_parts(vec![m, dword(minor).unwrap_or(0)])),
            None => string(cx, &sw, cv, "CurrentVersion").and_then(|s| Version::parse(&s)),
        };
        info.major_version = version.as_ref().map(Version::major);
        info.minor_version = version.as_ref().map(Version::minor);
        info.version = version;
        w.build = string(cx, &sw, cv, "CurrentBuildNumber")
            .or_else(|| string(cx, &sw, cv, "CurrentBuild"));
        w.edition = string(cx, &sw, cv, "EditionID");
        w.installation_type = string(cx, &sw, cv, "InstallationType");
    }
    if let Some(sys) = hive(cx, root, "system", &mut w) {
        if let Some(n) = number(cx, &sys, "\\Select", "Current") {
            let cs = format!("ControlSet{n:03}");
            // The DNS host name as typed (what libguestfs reports), else the NetBIOS name.
            info.hostname = string(
                cx,
                &sys,
                &format!("\\{cs}\\Services\\Tcpip\\Parameters"),
                "Hostname",
            )
            .filter(|h| !h.is_empty())
            .or_else(|| {
                string(
                    cx,
                    &sys,
                    &format!("\\{cs}\\Control\\ComputerName\\ComputerName"),
                    "ComputerName",
                )
            });
            for s in VIRTIO_SERVICES {
                match sys.key(&format!("\\{cs}\\Services\\{s}")) {
                    Ok(Some(_)) => w.virtio_drivers.push(Service {
                        name: s.to_string(),
                        start: number(cx, &sys, &format!("\\{cs}\\Services\\{s}"), "Start")
                            .and_then(|n| u32::try_from(n).ok()),
                    }),
                    Ok(None) => {}
                    Err(e) => cx.warn(format!("registry {cs}\\Services\\{s}: {e}")),
                }
            }
            w.current_control_set = Some(cs);
        }
        match sys.key("\\MountedDevices") {
            Ok(Some(k)) => match k.values() {
                Ok(vs) => {
                    for v in vs {
                        if let Some(l) = v.name.strip_prefix("\\DosDevices\\") {
                            w.drive_letters.extend(drive_letter(l, &v.data));
                        }
                    }
                }
                Err(e) => cx.warn(format!("registry MountedDevices: {e}")),
            },
            Ok(None) => {}
            Err(e) => cx.warn(format!("registry MountedDevices: {e}")),
        }
    }
    let kernel = find_ci(cx, root, "system32").and_then(|s| find_ci(cx, &s, "ntoskrnl.exe"));
    if let Some((head, _)) = kernel.as_ref().and_then(|k| cx.read_head(k, PE_HEAD)) {
        info.arch = pe_arch(&head).map(str::to_string);
        if info.arch.is_none() {
            cx.warn(format!(
                "{}: no PE header with a known machine type",
                kernel.unwrap_or_default()
            ));
        }
    }
    w.driver_packages = driver_packages(cx, root);
    w.drive_letters.sort_by(|a, b| a.letter.cmp(&b.letter));
    info.windows = Some(w);
}
