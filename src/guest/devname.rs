//! Kernel names of disks and partitions (`/dev/sda1`, `/dev/hdb`, `/dev/xvda2`,
//! `/dev/cciss/c0d0p1`, `/dev/nvme0n1p1`): which disk and partition they name. The name
//! depends on the bus the disk sat on, so it is what breaks when a guest moves hypervisor;
//! the device map resolves it by the disk's position, as libguestfs does.

use std::sync::OnceLock;

/// Disks past this index (`/dev/sdzzz`) are not real.
const MAX_DISK_INDEX: u32 = 18_278;

/// A kernel name of a disk or partition, split into the disk and the partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDev {
    /// The whole disk: `/dev/sda`, `/dev/cciss/c0d1`, `/dev/nvme0n1`.
    pub disk: String,
    /// The disk's position on its controller (`sdc` → 2), when the name says.
    pub index: Option<u32>,
    /// The partition number, empty for the whole disk.
    pub part: String,
}

/// `a` → 0, `z` → 25, `aa` → 26 (the kernel's sd naming); `None` for anything but one to
/// three lowercase letters.
pub fn letters_index(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 3 {
        return None;
    }
    // At most three digits of base 26 (bijective): below 26^3 + 26^2 + 26.
    let mut n: u32 = 0;
    for c in s.bytes() {
        let digit = c.checked_sub(b'a').filter(|d| *d < 26)?;
        n = n
            .checked_mul(26)?
            .checked_add(u32::from(digit))?
            .checked_add(1)?;
    }
    n.checked_sub(1)
}

/// 0 → `a`, 26 → `aa`.
pub fn index_letters(mut i: u32) -> String {
    let mut s = Vec::new();
    loop {
        // i % 26 < 26: one letter.
        s.push(b'a'.saturating_add(u8::try_from(i % 26).unwrap_or_default()));
        if i < 26 {
            break;
        }
        // i >= 26, so i / 26 >= 1.
        i = (i / 26).saturating_sub(1);
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII") // OK: built from ASCII only
}

impl KernelDev {
    /// Parses a device path; `None` if it is not a bus-dependent kernel name.
    pub fn parse(name: &str) -> Option<KernelDev> {
        static SD: OnceLock<regex::Regex> = OnceLock::new();
        static CCISS: OnceLock<regex::Regex> = OnceLock::new();
        static NVME: OnceLock<regex::Regex> = OnceLock::new();
        let sd = SD.get_or_init(|| {
            let re = r"^/dev/(sd|hd|xvd|vd)([a-z]{1,3})([0-9]{0,3})$";
            regex::Regex::new(re).expect("static") // OK: a constant pattern
        });
        let cciss = CCISS.get_or_init(|| {
            regex::Regex::new(r"^/dev/cciss/c([0-9]{1,3})d([0-9]{1,3})(?:p([0-9]{1,3}))?$")
                .expect("static") // OK: a constant pattern
        });
        let nvme = NVME.get_or_init(|| {
            regex::Regex::new(r"^/dev/nvme([0-9]{1,3})n([0-9]{1,3})(?:p([0-9]{1,3}))?$")
                .expect("static") // OK: a constant pattern
        });
        if let Some(c) = sd.captures(name) {
            let index = letters_index(&c[2]).filter(|i| *i < MAX_DISK_INDEX);
            return Some(KernelDev {
                disk: format!("/dev/{}{}", &c[1], &c[2]),
                index,
                part: c[3].to_string(),
            });
        }
        if let Some(c) = cciss.captures(name) {
            return Some(KernelDev {
                disk: format!("/dev/cciss/c{}d{}", &c[1], &c[2]),
                index: c[2].parse().ok(),
                part: c.get(3).map_or(String::new(), |m| m.as_str().to_string()),
            });
        }
        if let Some(c) = nvme.captures(name) {
            return Some(KernelDev {
                disk: format!("/dev/nvme{}n{}", &c[1], &c[2]),
                index: c[1].parse().ok(),
                part: c.get(3).map_or(String::new(), |m| m.as_str().to_string()),
            });
        }
        None
    }
}
