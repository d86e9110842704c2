//! The common model of a source VM: what every input parser fills and the libvirt writer
//! reads. `None` (JSON `null`) is what the source does not say; no parser invents a default.

use serde::Serialize;

/// A parse error with where it happened. Lines and columns count from 1 (columns in bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Error {
    pub fn at(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
    pub fn io(file: &str, e: std::io::Error) -> Self {
        Self::at(file, 0, 0, format!("cannot read: {e}"))
    }
    /// An error at a byte offset of `text`, turned into line and column.
    pub fn at_byte(file: &str, text: &[u8], offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, offset);
        Self::at(file, line, column, message)
    }
}

/// Line and column (from 1) of byte `offset` in `text` (clamped to its end).
pub fn line_col(text: &[u8], offset: usize) -> (usize, usize) {
    let upto = &text[..offset.min(text.len())];
    // Both counts are at most the text's length (≤ isize::MAX): adding 1 cannot saturate.
    let line = upto
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_add(1);
    let last = upto.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    (line, last.len().saturating_add(1))
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for Error {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Efi,
}

/// The bus a disk hangs on, as libvirt names it in `<target bus=...>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Ide,
    Scsi,
    Sata,
    Nvme,
    Virtio,
    Xen,
    Fdc,
    Usb,
}

impl Bus {
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Scsi => "scsi",
            Bus::Sata => "sata",
            Bus::Nvme => "nvme",
            Bus::Virtio => "virtio",
            Bus::Xen => "xen",
            Bus::Fdc => "fdc",
            Bus::Usb => "usb",
        }
    }
    pub fn from_libvirt(s: &str) -> Option<Bus> {
        Some(match s {
            "ide" => Bus::Ide,
            "scsi" => Bus::Scsi,
            "sata" => Bus::Sata,
            "nvme" => Bus::Nvme,
            "virtio" => Bus::Virtio,
            "xen" => Bus::Xen,
            "fdc" => Bus::Fdc,
            "usb" => Bus::Usb,
            _ => return None,
        })
    }
}

/// What a disk slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Disk,
    Cdrom,
    Floppy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Disk {
    /// The backing file or block device, resolved where the parser can (VMX datastore paths).
    pub source: Option<String>,
    /// Image format when the source says it (raw, qcow2, vmdk, ...).
    pub format: Option<String>,
    pub bus: Option<Bus>,
    /// The guest-visible name (`sda`, `hda`, `xvda`, `fda`).
    pub target: Option<String>,
    pub device: DeviceKind,
    pub readonly: bool,
    /// The controller model on the source (VMware lsilogic, pvscsi, ...).
    pub controller_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Nic {
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// The emulated model (e1000, vmxnet3, virtio, rtl8139, ...).
    pub model: Option<String>,
    /// A named network (libvirt `<source network=...>`, VMware networkName).
    pub network: Option<String>,
    /// A host bridge (Xen `bridge=`, libvirt `<source bridge=...>`).
    pub bridge: Option<String>,
}

/// Xen paravirtual boot: either a bootloader in dom0 or a kernel given directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct PvBoot {
    pub bootloader: Option<String>,
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    pub cmdline: Option<String>,
}

/// What a source description says about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Source {
    /// Which input format this came from (vmx, xen-xl, xen-xm, libvirt).
    pub input: String,
    /// The hypervisor the guest ran on, as the description tells it: `vmware` for a .vmx,
    /// `xen` for an xl/xm .cfg, a libvirt domain's `type` (kvm, qemu, xen, vmware, hyperv…).
    pub hypervisor: Option<String>,
    pub name: Option<String>,
    /// Lower-case canonical `8-4-4-4-12` form.
    pub uuid: Option<String>,
    /// The most memory the guest may have (libvirt `<memory>`).
    pub memory_bytes: Option<u64>,
    /// The memory at boot when the source sets it apart (Xen `memory` below `maxmem`).
    pub current_memory_bytes: Option<u64>,
    pub vcpus: Option<u32>,
    pub sockets: Option<u32>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub firmware: Option<Firmware>,
    /// The source's guest OS label (VMware guestOS).
    pub guest_os: Option<String>,
    /// Free text (VMware annotation, libvirt description).
    pub description: Option<String>,
    /// Xen PV boot, `None` for HVM guests.
    pub pv: Option<PvBoot>,
    /// Whether the source has a graphical console, and which (vnc, sdl, spice).
    pub graphics: Option<String>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
}

/// Canonical UUID text from 32 hex digits with any of the separators sources use (VMware
/// writes `56 4d 9b ef ... a9-58 ...`, Xen and libvirt the dashed form). `None` if not a UUID.
pub fn canonical_uuid(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '\t'))
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Canonical MAC text (`aa:bb:cc:dd:ee:ff`, lower case) or `None`.
pub fn canonical_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        assert_eq!(
            canonical_uuid("50 11 5e 16 9b dc 49 d7-f1 71 53 c4 d7 f9 17 10").as_deref(),
            Some("50115e16-9bdc-49d7-f171-53c4d7f91710")
        );
        assert_eq!(canonical_uuid("50 11"), None);
        assert_eq!(canonical_uuid("zz115e169bdc49d7f17153c4d7f91710"), None);
    }

    #[test]
    fn positions() {
        assert_eq!(line_col(b"ab\ncd", 4), (2, 2));
        assert_eq!(line_col(b"ab", 99), (1, 3));
    }
}
