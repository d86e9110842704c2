//! `rewrite-devices`: replaces bus-dependent kernel device names (`/dev/sda1`, `/dev/hdb`,
//! `/dev/xvda2`, `/dev/cciss/c0d0p1`, `/dev/nvme0n1p1`) in fstab, crypttab, kernel command
//! lines and GRUB's device.map with names that still work after the move.
//!
//! A name with a stable equivalent in the device map (`UUID=…`) takes it; otherwise the disk
//! is renamed for the target bus, keeping its position (`sdb3` → `vdb3`), which is what
//! virt-v2v's `remap_block_devices` assumes. device.map entries name whole disks as the
//! BIOS sees them, so they are always renamed, never turned into UUIDs. Names that are not
//! kernel names (LVM paths, `/dev/mapper/…`, `/dev/md0`, `UUID=`) are left alone.

use super::facts::{DeviceMap, DiskBus};
use super::text::{lines, Lines};
use regex::bytes::Regex;
use std::sync::OnceLock;

pub use crate::guest::devname::{index_letters, letters_index, KernelDev};

/// A disk name plus a partition number, with the `p` the kernel puts after a trailing digit.
fn with_part(disk: &str, part: &str) -> String {
    if part.is_empty() {
        disk.to_string()
    } else if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{part}")
    } else {
        format!("{disk}{part}")
    }
}

/// What to do with one device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a kernel name, or already the right one.
    Keep,
    /// Replace with this, from the device map's stable names.
    Stable(String),
    /// Replace with this kernel name on the target bus (no stable name known).
    Renamed(String),
    /// A kernel name the device map does not know: left as is, with a warning.
    Unknown,
}

/// Decides the replacement for `name`; `stable` allows `UUID=`-style names (not for device.map).
pub fn outcome(map: &DeviceMap, bus: DiskBus, name: &str, stable: bool) -> Outcome {
    let Some(dev) = KernelDev::parse(name) else {
        return Outcome::Keep;
    };
    if stable {
        if let Some(s) = map.stable(name) {
            return Outcome::Stable(s.to_string());
        }
    }
    let new_disk = if map.disks.is_empty() {
        match dev.index {
            Some(i) => format!("/dev/{}{}", bus.disk_prefix(), index_letters(i)),
            None => return Outcome::Unknown,
        }
    } else {
        match map.disks.iter().find(|d| d.old == dev.disk) {
            Some(d) => d.new.clone(),
            None => return Outcome::Unknown,
        }
    };
    let new = with_part(&new_disk, &dev.part);
    if new == name {
        Outcome::Keep
    } else {
        Outcome::Renamed(new)
    }
}

/// The file formats `rewrite-devices` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// fstab(5): the first field; a CD-ROM (iso9660/udf) becomes `/dev/cdrom`.
    Fstab,
    /// crypttab(5): the second field.
    Crypttab,
    /// Kernel command lines anywhere in the file: `root=`, `resume=`, `boot=` (any case).
    Cmdline,
    /// GRUB's device.map: `(hd0) /dev/sda`, disks renamed only.
    DeviceMap,
}

impl Format {
    pub const NAMES: &'static [&'static str] = &["fstab", "crypttab", "cmdline", "device-map"];

    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "fstab" => Format::Fstab,
            "crypttab" => Format::Crypttab,
            "cmdline" => Format::Cmdline,
            "device-map" => Format::DeviceMap,
            _ => return None,
        })
    }
}

/// The result of a rewrite: new contents and what the user should know.
#[derive(Debug, Default)]
pub struct Rewrite {
    pub data: Vec<u8>,
    pub warnings: Vec<String>,
}

/// Byte range of the `n`th (0-based) whitespace-separated field of a line.
fn field(line: &[u8], n: usize) -> Option<(usize, usize)> {
    let blank = u8::is_ascii_whitespace;
    // A field starts at a non-blank byte whose predecessor is blank (or the line start).
    let start = (0..)
        .zip(line.iter().zip(std::iter::once(&b' ').chain(line)))
        .filter(|(_, (c, prev))| !blank(c) && blank(prev))
        .map(|(i, _)| i)
        .nth(n)?;
    let end = (0..)
        .zip(line)
        .skip(start)
        .find(|(_, c)| blank(c))
        .map_or(line.len(), |(i, _)| i);
    Some((start, end))
}

/// Rewrites the device names in `data` for `format`. `what` names the file in warnings.
pub fn rewrite(data: &[u8], format: Format, map: &DeviceMap, bus: DiskBus, what: &str) -> Rewrite {
    let mut warnings = Vec::new();
    let mut note = |name: &str, o: &Outcome| {
        match o {
        Outcome::Unknown => warnings.push(format!(
            "{what}: {name} is not in the device map; left as is (fix it by hand)"
        )),
        Outcome::Renamed(new) if format != Format::DeviceMap => warnings.push(format!(
            "{what}: no stable name known for {name}; renamed to {new} (give --facts with a device map for UUID= names)"
        )),
        _ => {}
    }
    };
    let data = match format {
        Format::Fstab | Format::Crypttab | Format::DeviceMap => {
            let mut out = Lines::new(data);
            for (content, _) in &mut out.lines {
                let t = &content[super::text::indent(content)..];
                if t.is_empty() || t[0] == b'#' {
                    continue;
                }
                let n = match format {
                    Format::Fstab => 0,
                    _ => 1,
                };
                let Some((s, e)) = field(content, n) else {
                    continue;
                };
                let Ok(name) = std::str::from_utf8(&content[s..e]) else {
                    continue;
                };
                let cdrom = format == Format::Fstab
                    && field(content, 2)
                        .is_some_and(|(a, b)| matches!(&content[a..b], b"iso9660" | b"udf"));
                let o = if cdrom && KernelDev::parse(name).is_some() {
                    Outcome::Stable("/dev/cdrom".into())
                } else {
                    outcome(map, bus, name, format != Format::DeviceMap)
                };
                note(name, &o);
                if let Outcome::Stable(new) | Outcome::Renamed(new) = o {
                    content.splice(s..e, new.into_bytes());
                }
            }
            out.into_bytes()
        }
        Format::Cmdline => {
            static RE: OnceLock<Regex> = OnceLock::new();
            let re = RE.get_or_init(|| {
                Regex::new(r#"(?i-u)(^|[\s"'])((?:root|resume|boot)=)(/dev/[A-Za-z0-9/_.-]+)"#)
                    .expect("static") // OK: a constant pattern
            });
            let mut out = Vec::with_capacity(data.len());
            for (content, eol) in lines(data) {
                let mut last = 0;
                for c in re.captures_iter(content) {
                    let dev = c.get(3).expect("group 3 always matches"); // OK: the pattern always has group 3
                    let Ok(name) = std::str::from_utf8(dev.as_bytes()) else {
                        continue;
                    };
                    let o = outcome(map, bus, name, true);
                    note(name, &o);
                    if let Outcome::Stable(new) | Outcome::Renamed(new) = o {
                        out.extend_from_slice(&content[last..dev.start()]);
                        out.extend_from_slice(new.as_bytes());
                        last = dev.end();
                    }
                }
                out.extend_from_slice(&content[last..]);
                out.extend_from_slice(eol);
            }
            out
        }
    };
    Rewrite { data, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::facts::{DeviceEntry, DiskRename};

    fn map() -> DeviceMap {
        DeviceMap {
            devices: vec![DeviceEntry {
                device: "/dev/sda1".into(),
                stable: "UUID=1234".into(),
                fstype: None,
                hard_coded: true,
            }],
            disks: vec![],
        }
    }

    #[test]
    fn kernel_names() {
        let k = KernelDev::parse("/dev/sdab12").unwrap();
        assert_eq!(
            (k.disk.as_str(), k.index, k.part.as_str()),
            ("/dev/sdab", Some(27), "12")
        );
        let k = KernelDev::parse("/dev/cciss/c0d1p2").unwrap();
        assert_eq!(
            (k.disk.as_str(), k.index, k.part.as_str()),
            ("/dev/cciss/c0d1", Some(1), "2")
        );
        let k = KernelDev::parse("/dev/nvme0n1p3").unwrap();
        assert_eq!(k.disk, "/dev/nvme0n1");
        for keep in [
            "/dev/VolGroup00/LogVol00",
            "/dev/mapper/vg-root",
            "/dev/md0",
            "UUID=x",
            "/dev/scd0",
            "/dev/sr0",
            "/dev/fd0",
        ] {
            assert!(KernelDev::parse(keep).is_none(), "{keep}");
        }
        for i in [0, 25, 26, 701, 702] {
            assert_eq!(letters_index(&index_letters(i)), Some(i));
        }
        for bad in ["A", "a1", "`", "{", "abcd", ""] {
            assert_eq!(letters_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields() {
        assert_eq!(field(b"  a\tbb  c", 0), Some((2, 3)));
        assert_eq!(field(b"  a\tbb  c", 1), Some((4, 6)));
        assert_eq!(field(b"  a\tbb  c", 2), Some((8, 9)));
        assert_eq!(field(b"  a\tbb  c", 3), None);
        assert_eq!(field(b"x y\r", 1), Some((2, 3)));
        assert_eq!(field(b"   ", 0), None);
        assert_eq!(field(b"", 0), None);
    }

    #[test]
    fn fstab_fields_only() {
        let data = b"# /dev/sda1 stays in a comment\n/dev/sda1\t/boot ext3 defaults 1 2\n/dev/sda2 swap swap defaults 0 0\r\n/dev/hdc /media/cdrom iso9660 noauto 0 0\n/dev/VolGroup00/LogVol00 / ext3 defaults 1 1";
        let r = rewrite(
            data,
            Format::Fstab,
            &map(),
            DiskBus::VirtioBlk,
            "/etc/fstab",
        );
        assert_eq!(
            String::from_utf8(r.data).unwrap(),
            "# /dev/sda1 stays in a comment\nUUID=1234\t/boot ext3 defaults 1 2\n/dev/vda2 swap swap defaults 0 0\r\n/dev/cdrom /media/cdrom iso9660 noauto 0 0\n/dev/VolGroup00/LogVol00 / ext3 defaults 1 1"
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    }

    #[test]
    fn cmdline_keys() {
        let data = b"  linux16 /vmlinuz root=/dev/xvda1 ro resume=/dev/xvda2 console=hvc0\nGRUB_CMDLINE_LINUX=\"RESUME=/dev/sda1\"\n";
        let r = rewrite(data, Format::Cmdline, &map(), DiskBus::VirtioBlk, "x");
        assert_eq!(
            String::from_utf8(r.data).unwrap(),
            "  linux16 /vmlinuz root=/dev/vda1 ro resume=/dev/vda2 console=hvc0\nGRUB_CMDLINE_LINUX=\"RESUME=UUID=1234\"\n"
        );
    }

    #[test]
    fn device_map_never_stable_and_explicit_disks() {
        let mut m = map();
        m.devices.push(DeviceEntry {
            device: "/dev/sda".into(),
            stable: "UUID=disk".into(),
            fstype: None,
            hard_coded: true,
        });
        m.disks.push(DiskRename {
            old: "/dev/sda".into(),
            new: "/dev/vda".into(),
        });
        let r = rewrite(
            b"(hd0) /dev/sda\n(hd1) /dev/sdb\n",
            Format::DeviceMap,
            &m,
            DiskBus::VirtioBlk,
            "x",
        );
        assert_eq!(r.data, b"(hd0) /dev/vda\n(hd1) /dev/sdb\n");
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn idempotent() {
        let data = b"/dev/sda1 / ext4 defaults 0 0\n/dev/sdb1 /data xfs defaults 0 0\n";
        let once = rewrite(data, Format::Fstab, &map(), DiskBus::VirtioBlk, "x").data;
        let twice = rewrite(&once, Format::Fstab, &map(), DiskBus::VirtioBlk, "x");
        assert_eq!(once, twice.data);
        assert!(twice.warnings.is_empty());
    }
}
