//! The facts rules are evaluated against: what the guest is (OS, distro, version, init
//! system, boot loader), where it comes from and goes to, and the device map.
//!
//! Plain data, owned by the guest layer because inspection produces it (`From<&OsInfo>`,
//! [`super::Guest::facts`]); the fix layer consumes it (`fix::facts` re-exports it and adds
//! loading from files), `--facts FILE` overrides any field, and a ferry mount publishes it next
//! to the mountpoint ([`published_path`]).
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

/// Defines a closed set of names: serde, `FromStr` for rule conditions, and the list of
/// names for error messages.
macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }
        impl $name {
            /// Every accepted spelling, for error messages.
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(format!("unknown value `{s}`, expected one of: {}", Self::NAMES.join(", "))),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(
    /// The guest's operating system type.
    Os {
        #[default]
        Unknown = "unknown",
        Linux = "linux",
        Windows = "windows",
    }
);

names!(
    /// What runs as PID 1, which decides how services are disabled and firstboot installed.
    InitSystem {
        #[default]
        Unknown = "unknown",
        Systemd = "systemd",
        Sysvinit = "sysvinit",
        Upstart = "upstart",
        Openrc = "openrc",
    }
);

names!(
    /// The installed boot loader.
    Bootloader {
        #[default]
        Unknown = "unknown",
        /// GRUB 2 (grub.cfg).
        Grub2 = "grub2",
        /// GRUB legacy (menu.lst / grub.conf).
        Grub = "grub",
        Extlinux = "extlinux",
        /// systemd-boot (loader/entries on the EFI system partition or /boot).
        SystemdBoot = "systemd-boot",
        /// Windows Boot Manager (a BCD store: `\Boot\BCD` for BIOS, `\EFI\Microsoft\Boot\BCD`
        /// on the EFI system partition for UEFI).
        Bootmgr = "bootmgr",
        None = "none",
    }
);

names!(
    /// The hypervisor (or hardware) the guest ran on before.
    Hypervisor {
        #[default]
        Unknown = "unknown",
        Vmware = "vmware",
        Xen = "xen",
        Hyperv = "hyperv",
        Virtualbox = "virtualbox",
        Kvm = "kvm",
        Physical = "physical",
    }
);

names!(
    /// Where the guest is going.
    Target {
        #[default]
        Kvm = "kvm",
    }
);

names!(
    /// The disk bus on the target, which decides the kernel names of the disks there.
    DiskBus {
        #[default]
        VirtioBlk = "virtio-blk",
        VirtioScsi = "virtio-scsi",
        Sata = "sata",
        Ide = "ide",
    }
);

impl DiskBus {
    /// The kernel name prefix of a disk on this bus (`vda`, `sda`).
    pub fn disk_prefix(self) -> &'static str {
        match self {
            DiskBus::VirtioBlk => "vd",
            DiskBus::VirtioScsi | DiskBus::Sata | DiskBus::Ide => "sd",
        }
    }
}

/// A dotted version ("7.9.2009", "22.04"); compared numerically, missing parts as 0, and
/// shown as the distribution wrote it ("22.04", not "22.4").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    parts: Vec<u32>,
    text: String,
}

/// Versions longer than this are not versions.
const MAX_VERSION_PARTS: usize = 8;

impl Version {
    /// Parses the leading `N[.N]...` of `s`; `None` if it does not start with a digit.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = Vec::new();
        let mut text = Vec::new();
        for p in s.trim().split('.') {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            let whole = digits.len() == p.len();
            text.push(digits);
            if !whole || parts.len() == MAX_VERSION_PARTS {
                break;
            }
        }
        (!parts.is_empty()).then(|| Version {
            parts,
            text: text.join("."),
        })
    }

    /// A version from its numbers (the registry gives Windows' as numbers).
    pub fn from_parts(parts: Vec<u32>) -> Version {
        let text = parts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".");
        Version { parts, text }
    }

    /// The numbers, major first.
    pub fn parts(&self) -> &[u32] {
        &self.parts
    }

    pub fn major(&self) -> u32 {
        self.parts.first().copied().unwrap_or(0)
    }

    pub fn minor(&self) -> u32 {
        self.parts.get(1).copied().unwrap_or(0)
    }

    /// Numeric comparison where a missing part counts as 0 ("7" == "7.0").
    pub fn cmp_to(&self, other: &Version) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad version `{s}`")))
    }
}

/// The root filesystem as the guest's fstab names it, with what is known of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Root {
    /// The fstab spec (`UUID=…`, `/dev/sda1`, `/dev/VolGroup00/LogVol00`).
    pub spec: String,
    pub device: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub fstype: Option<String>,
}

/// One block device of the guest: the kernel name the guest's configuration uses and the
/// name that keeps working when the disk moves to another bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// As the source guest names it: `/dev/sda1`, `/dev/xvda2`, `/dev/cciss/c0d0p1`.
    pub device: String,
    /// `UUID=…`, `LABEL=…`, `PARTUUID=…`, or an LVM path.
    pub stable: String,
    #[serde(default)]
    pub fstype: Option<String>,
    /// Whether `device` is a bus-dependent kernel name (so any use of it must be rewritten);
    /// computed on load (whatever a file says), shown in `--json` output.
    #[serde(default)]
    pub hard_coded: bool,
}

/// A whole disk renamed by the move (`/dev/sda` → `/dev/vda`), in disk order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRename {
    pub old: String,
    pub new: String,
}

/// Old device names → stable names, and old disk names → new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceMap {
    pub devices: Vec<DeviceEntry>,
    /// Explicit disk renames. When empty, a disk keeps its letter and takes the target bus's
    /// prefix (`sdb`/`hdb`/`xvdb` → `vdb`), as virt-v2v assumes disks keep their order.
    pub disks: Vec<DiskRename>,
}

impl DeviceMap {
    /// Fills the computed fields.
    pub fn normalize(&mut self) {
        for d in &mut self.devices {
            d.hard_coded = super::devname::KernelDev::parse(&d.device).is_some();
        }
    }

    /// The stable name recorded for `device`.
    pub fn stable(&self, device: &str) -> Option<&str> {
        self.devices
            .iter()
            .find(|d| d.device == device)
            .map(|d| d.stable.as_str())
    }
}

/// Everything rules can test or put into templates. A key no field takes is an error when
/// read (a misspelt `--facts` key must not be silently ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Facts {
    pub os: Os,
    /// The os-release `ID` (`rhel`, `centos`, `debian`, `ubuntu`, `sles`, `alpine`, …).
    pub distro: String,
    /// `rhel`, `suse`, `debian`, `alpine`, `arch`…; derived from `distro` when absent.
    pub family: Option<String>,
    pub version: Option<Version>,
    pub init: InitSystem,
    pub bootloader: Bootloader,
    pub source: Hypervisor,
    pub target: Target,
    pub target_bus: DiskBus,
    pub arch: Option<String>,
    pub root: Option<Root>,
    pub devices: DeviceMap,
    /// Every bootable kernel of this Linux guest is a Xen PV-only build (inspection's
    /// `OsInfo::only_xen_pv_kernels`): it cannot boot on KVM until a regular one is installed.
    pub xen_pv_only: bool,
}

/// The distro family of an os-release ID (and of the older names inspection tools use).
pub fn family_of(distro: &str) -> &'static str {
    match distro {
        "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "oraclelinux"
        | "scientific" | "scientificlinux" | "circle" | "redhat-based" | "cloudlinux" | "amzn"
        | "eurolinux" => "rhel",
        "sles"
        | "sled"
        | "sles_sap"
        | "opensuse"
        | "opensuse-leap"
        | "opensuse-tumbleweed"
        | "suse"
        | "suse-based" => "suse",
        "debian" | "ubuntu" | "linuxmint" | "kali" | "kalilinux" | "raspbian" | "devuan" => {
            "debian"
        }
        "alpine" => "alpine",
        "arch" | "archlinux" | "manjaro" => "arch",
        "altlinux" => "alt",
        _ => "unknown",
    }
}

impl Facts {
    /// The family, given or derived from the distro.
    pub fn family(&self) -> String {
        self.family
            .clone()
            .unwrap_or_else(|| family_of(&self.distro).to_string())
    }

    /// Overlays a JSON object of facts on `self`.
    pub fn merge_value(self, overlay: serde_json::Value) -> std::result::Result<Facts, String> {
        let mut base = serde_json::to_value(&self).map_err(|e| e.to_string())?;
        merge_json(&mut base, overlay);
        let mut f: Facts = serde_json::from_value(base).map_err(|e| e.to_string())?;
        f.complete();
        Ok(f)
    }

    /// Fills what follows from other facts: the device map's computed fields, and the root
    /// filesystem's UUID or label when fstab names it by a device the map knows.
    pub fn complete(&mut self) {
        self.devices.normalize();
        if let Some(r) = self.root.as_mut() {
            if let Some(s) = r.device.as_deref().and_then(|d| self.devices.stable(d)) {
                if let Some(u) = s.strip_prefix("UUID=") {
                    r.uuid.get_or_insert_with(|| u.to_string());
                } else if let Some(l) = s.strip_prefix("LABEL=") {
                    r.label.get_or_insert_with(|| l.to_string());
                }
            }
        }
    }
}

/// Objects merge key by key; anything else replaces.
fn merge_json(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge_json(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Where a ferry mount publishes the facts of the guest it mounts, so that
/// `ferry fix MOUNTPOINT` finds them: `$FERRY_RUNTIME_DIR` (default `/run/ferry`), then
/// `mounts/`, then the canonical mountpoint with `/` written as `-` and `-` as `\x2d` (as
/// systemd escapes unit names). The file holds `{"mountpoint": PATH, "facts": {...}}`.
pub fn published_path(mountpoint: &Path) -> PathBuf {
    let base = std::env::var_os("FERRY_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ferry"));
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let s = canon.to_string_lossy();
    let mut name = String::new();
    for c in s.trim_matches('/').chars() {
        match c {
            '/' => name.push('-'),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => name.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    name.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    if name.is_empty() {
        name.push('-');
    }
    base.join("mounts").join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("7.9.2009").parts(), [7, 9, 2009]);
        assert_eq!(v("22.04").to_string(), "22.04");
        assert_eq!(v("22.04").minor(), 4);
        assert_eq!(v("12-SP5").parts(), [12]);
        assert_eq!(v("12-SP5").to_string(), "12");
        assert_eq!(v("20.04").cmp_to(&v("20.4")), Ordering::Equal);
        assert_eq!(v("7").cmp_to(&v("7.0.0")), Ordering::Equal);
        assert_eq!(v("5.11").cmp_to(&v("6")), Ordering::Less);
        assert!(Version::parse("squeeze/sid").is_none());
        assert!(Version::parse("99999999999999").is_none());
    }

    #[test]
    fn merge_keeps_unnamed_fields() {
        let f = Facts {
            distro: "rhel".into(),
            init: InitSystem::Systemd,
            ..Facts::default()
        };
        let g = f
            .merge_value(serde_json::json!({"devices": {"devices": [
                {"device": "/dev/sda1", "stable": "UUID=x"}]}}))
            .unwrap();
        assert_eq!(g.distro, "rhel");
        assert_eq!(g.init, InitSystem::Systemd);
        assert_eq!(g.devices.stable("/dev/sda1"), Some("UUID=x"));
        assert!(g.devices.devices[0].hard_coded);
        assert!(Facts::default()
            .merge_value(serde_json::json!({"init": "systemdd"}))
            .is_err());
        let e = Facts::default()
            .merge_value(serde_json::json!({"distr": "rhel"}))
            .unwrap_err();
        assert!(e.contains("distr"), "{e}");
        let e = Facts::default()
            .merge_value(serde_json::json!({"root": {"uuuid": "x"}}))
            .unwrap_err();
        assert!(e.contains("uuuid"), "{e}");
    }

    #[test]
    fn published_names_escape() {
        std::env::set_var("FERRY_RUNTIME_DIR", "/nonexistent-ferry");
        let p = published_path(Path::new("/mnt/my-guest"));
        assert_eq!(
            p,
            Path::new("/nonexistent-ferry/mounts/mnt-my\\x2dguest.json")
        );
    }
}
