//! VMware `.vmx` files: one `key = "value"` per line, keys case-insensitive, values quoted
//! with `|XX` hex escapes for bytes that cannot appear raw (`|22` is a quote, `|7C` a bar).
//! A device is there only when its `NAME.present` is true, and a false `present` hides the
//! whole subtree (`scsi0.present = "FALSE"` hides `scsi0:0.*` too).
//!
//! Sources: VMware's "Virtual Machine Configuration File" notes and libvirt's `src/vmx/vmx.c`,
//! whose test data (`tests/vmx2xmldata`) is the oracle of this module's tests.

use super::model::{canonical_mac, canonical_uuid, Bus, DeviceKind, Disk, Firmware, Nic, Source};
use super::Error;
use std::collections::HashMap;
use std::path::PathBuf;

/// Most lines a .vmx may have: real ones have a few hundred; this bounds work on garbage.
pub const MAX_LINES: usize = 100_000;
/// SCSI and SATA controllers VMware offers (scsi0..3, sata0..3, nvme0..3); IDE has two buses.
const MAX_CONTROLLERS: u32 = 4;
/// Units per SCSI controller (0..64 on pvscsi, 7 being the controller itself), SATA (0..29),
/// NVMe (0..14).
const SCSI_UNITS: u32 = 65;
const SATA_UNITS: u32 = 30;
const NVME_UNITS: u32 = 15;
/// Network cards VMware allows (ethernet0..9).
const MAX_ETHERNET: u32 = 10;
/// Floppy drives (floppy0, floppy1).
const MAX_FLOPPY: u32 = 2;

/// One `key = value` with where its value starts.
#[derive(Debug, Clone)]
struct Entry {
    value: String,
    line: usize,
    column: usize,
}

/// The parsed key/value lines, keys folded to lower case.
pub struct Vmx {
    file: String,
    entries: HashMap<String, Entry>,
}

/// Maps a VMX `fileName` to the path ferry opens: `Ok(None)` when the file cannot be located
/// (an unmapped datastore), `Err` for a name that is not valid at all.
pub type Resolve<'a> = dyn Fn(&str) -> Result<Option<String>, String> + 'a;

/// The resolver `ferry v2v` uses: names relative to the .vmx's directory, datastore paths
/// (`[ds] dir/file` and `/vmfs/volumes/ds/dir/file`) through the `--datastore` map, or next
/// to the .vmx when the datastore is not mapped and the file is there.
pub struct PathResolver {
    pub vmx_dir: PathBuf,
    pub datastores: Vec<(String, PathBuf)>,
}

impl PathResolver {
    pub fn resolve(&self, name: &str) -> Result<Option<String>, String> {
        let datastore_path = if let Some(rest) = name.strip_prefix('[') {
            let (ds, path) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{name}': '[' without ']'"))?;
            Some((ds.to_string(), path.trim_start().to_string()))
        } else if let Some(rest) = name.strip_prefix("/vmfs/volumes/") {
            rest.split_once('/')
                .map(|(ds, p)| (ds.to_string(), p.to_string()))
        } else {
            None
        };
        if let Some((ds, path)) = datastore_path {
            if let Some((_, dir)) = self.datastores.iter().find(|(n, _)| *n == ds) {
                return Ok(Some(dir.join(&path).display().to_string()));
            }
            let base = path.rsplit('/').next().unwrap_or(&path);
            let beside = self.vmx_dir.join(base);
            return Ok(beside.exists().then(|| beside.display().to_string()));
        }
        if name.starts_with('/') {
            return Ok(Some(name.to_string()));
        }
        Ok(Some(self.vmx_dir.join(name).display().to_string()))
    }
}

/// Undo the `|XX` escapes of a value (VMware writes `|22` for `"`, `|7C` for `|`).
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'|' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                rest = tail.get(2..).unwrap_or_default();
                continue;
            }
        }
        out.push(b);
        rest = tail;
    }
    out
}

impl Vmx {
    /// Split the file into entries. Errors name the line and column.
    pub fn parse(file: &str, text: &[u8]) -> Result<Vmx, Error> {
        let mut entries = HashMap::new();
        for (lineno, line) in (1usize..).zip(text.split(|&b| b == b'\n')) {
            if lineno > MAX_LINES {
                return Err(Error::at(
                    file,
                    lineno,
                    1,
                    format!("more than {MAX_LINES} lines"),
                ));
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // The column (from 1) where `part`, a tail of `line`, starts: at most the line's
            // length plus one, so neither step can saturate.
            let col = |part: &[u8]| line.len().saturating_sub(part.len()).saturating_add(1);
            let body = line.trim_ascii_start();
            if body.is_empty() || body[0] == b'#' {
                continue;
            }
            let eq = body
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| Error::at(file, lineno, col(body), "expected 'key = \"value\"'"))?;
            let (key, after) = body.split_at(eq);
            let key = std::str::from_utf8(key)
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
                .ok_or_else(|| Error::at(file, lineno, col(body), "invalid key"))?
                .to_ascii_lowercase();
            let v = after[1..].trim_ascii_start();
            let vcol = col(v);
            let raw: &[u8] = if let Some(q) = v.strip_prefix(b"\"") {
                let end = q.iter().position(|&b| b == b'"').ok_or_else(|| {
                    Error::at(file, lineno, vcol, format!("{key}: no closing quote"))
                })?;
                let (quoted, rest) = q.split_at(end);
                let rest = &rest[1..];
                if rest.iter().any(|b| !b.is_ascii_whitespace())
                    && !rest.trim_ascii_start().starts_with(b"#")
                {
                    return Err(Error::at(
                        file,
                        lineno,
                        col(rest),
                        format!("{key}: text after the closing quote"),
                    ));
                }
                quoted
            } else {
                v.trim_ascii_end()
            };
            let value = String::from_utf8_lossy(&unescape(raw)).into_owned();
            entries.insert(
                key,
                Entry {
                    value,
                    line: lineno,
                    column: vcol,
                },
            );
        }
        Ok(Vmx {
            file: file.to_string(),
            entries,
        })
    }

    /// The value of `key` (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .get(&key.to_ascii_lowercase())
            .map(|e| e.value.as_str())
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> Error {
        match self.entries.get(&key.to_ascii_lowercase()) {
            Some(e) => Error::at(&self.file, e.line, e.column, format!("{key}: {message}")),
            None => Error::at(&self.file, 0, 0, format!("{key}: {message}")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(self.err(key, format!("expected TRUE or FALSE, found '{v}'"))),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.trim().parse::<u64>().map(Some).map_err(|_| {
                    self.err(key, format!("expected an unsigned integer, found '{v}'"))
                })
            }
        }
    }

    /// `NAME.present` is true (absent means absent).
    fn present(&self, prefix: &str) -> Result<bool, Error> {
        Ok(self.bool(&format!("{prefix}.present"))? == Some(true))
    }
}

/// libvirt's disk naming: `sd` + a, b, ..., z, aa, ab, ... for an index from 0.
pub fn index_to_name(prefix: &str, mut idx: u32) -> String {
    const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    let mut letters = Vec::new();
    loop {
        letters.extend(usize::try_from(idx % 26).ok().and_then(|r| LETTERS.get(r)));
        // Bijective base 26: the next digit is idx / 26 - 1, and there is none below 26.
        match (idx / 26).checked_sub(1) {
            Some(next) => idx = next,
            None => break,
        }
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

/// Parse a .vmx into the model. `resolve` maps each `fileName` to a path.
pub fn parse(file: &str, text: &[u8], resolve: &Resolve) -> Result<Source, Error> {
    let vmx = Vmx::parse(file, text)?;
    let mut src = Source {
        input: "vmx".into(),
        hypervisor: Some("vmware".into()),
        ..Source::default()
    };
    src.name = vmx.get("displayName").map(str::to_string);
    if let Some(u) = vmx.get("uuid.bios") {
        src.uuid =
            Some(canonical_uuid(u).ok_or_else(|| vmx.err("uuid.bios", "not a 16-byte UUID"))?);
    }
    if let Some(mib) = vmx.uint("memsize")? {
        src.memory_bytes = Some(
            mib.checked_mul(1 << 20)
                .ok_or_else(|| vmx.err("memsize", "too large"))?,
        );
    }
    if let Some(n) = vmx.uint("numvcpus")? {
        let n = u32::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| vmx.err("numvcpus", "expected 1 or more"))?;
        src.vcpus = Some(n);
    }
    if let Some(cores) = vmx.uint("cpuid.coresPerSocket")? {
        let vcpus = src.vcpus.unwrap_or(1);
        let cores = u32::try_from(cores)
            .ok()
            .filter(|&c| vcpus.checked_rem(c) == Some(0))
            .ok_or_else(|| {
                vmx.err(
                    "cpuid.coresPerSocket",
                    format!("must divide numvcpus ({vcpus})"),
                )
            })?;
        src.sockets = vcpus.checked_div(cores);
        src.cores = Some(cores);
        src.threads = Some(1);
    }
    src.firmware = match vmx.get("firmware") {
        None => None,
        Some(f) if f.eq_ignore_ascii_case("efi") => Some(Firmware::Efi),
        Some(f) if f.eq_ignore_ascii_case("bios") => Some(Firmware::Bios),
        Some(f) => return Err(vmx.err("firmware", format!("expected bios or efi, found '{f}'"))),
    };
    src.guest_os = vmx.get("guestOS").map(str::to_string);
    src.description = vmx
        .get("annotation")
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    if vmx.present("RemoteDisplay.vnc")? {
        src.graphics = Some("vnc".into());
    }
    parse_disks(&vmx, resolve, &mut src)?;
    for n in 0..MAX_ETHERNET {
        if let Some(nic) = parse_ethernet(&vmx, n)? {
            src.nics.push(nic);
        }
    }
    Ok(src)
}

/// A device slot a .vmx may fill: key prefix, bus, target name, controller model.
type Slot = (String, Bus, String, Option<String>);

/// The slots of the controllers present.
// The indices come from the small constants above (at most 4 controllers × 65 units).
#[allow(clippy::arithmetic_side_effects)]
fn slots(vmx: &Vmx) -> Result<Vec<Slot>, Error> {
    let mut slots = Vec::new();
    for c in 0..MAX_CONTROLLERS {
        let ctl = format!("scsi{c}");
        if vmx.present(&ctl)? {
            let model = vmx.get(&format!("{ctl}.virtualDev")).map(str::to_string);
            for u in (0..SCSI_UNITS).filter(|&u| u != 7) {
                let idx = c * 15 + if u > 7 { u - 1 } else { u };
                slots.push((
                    format!("{ctl}:{u}"),
                    Bus::Scsi,
                    index_to_name("sd", idx),
                    model.clone(),
                ));
            }
        }
    }
    for b in 0..2u32 {
        for u in 0..2u32 {
            slots.push((
                format!("ide{b}:{u}"),
                Bus::Ide,
                index_to_name("hd", b * 2 + u),
                None,
            ));
        }
    }
    for c in 0..MAX_CONTROLLERS {
        let ctl = format!("sata{c}");
        if vmx.present(&ctl)? {
            for u in 0..SATA_UNITS {
                slots.push((
                    format!("{ctl}:{u}"),
                    Bus::Sata,
                    index_to_name("sd", c * 30 + u),
                    None,
                ));
            }
        }
    }
    for c in 0..MAX_CONTROLLERS {
        let ctl = format!("nvme{c}");
        if vmx.present(&ctl)? {
            for u in 0..NVME_UNITS {
                slots.push((
                    format!("{ctl}:{u}"),
                    Bus::Nvme,
                    format!("nvme{c}n{}", u + 1),
                    None,
                ));
            }
        }
    }
    Ok(slots)
}

fn parse_disks(vmx: &Vmx, resolve: &Resolve, src: &mut Source) -> Result<(), Error> {
    // Hard disks first, then CD-ROMs, then floppies, as libvirt lists them.
    let slots = slots(vmx)?;
    let mut disks = Vec::new();
    let mut cdroms = Vec::new();
    for (slot, bus, target, model) in slots {
        // A client device is the CD-ROM of the machine running the console, not of the host:
        // nothing to move (libvirt skips it too).
        if !vmx.present(&slot)? || vmx.bool(&format!("{slot}.clientDevice"))? == Some(true) {
            continue;
        }
        let dtype_key = format!("{slot}.deviceType");
        let name_key = format!("{slot}.fileName");
        let dtype = vmx.get(&dtype_key).map(str::to_ascii_lowercase);
        let name = vmx.get(&name_key).unwrap_or("");
        let lname = name.to_ascii_lowercase();
        let kind = match dtype.as_deref() {
            Some("scsi-harddisk" | "disk" | "ata-harddisk" | "scsi-nonpersistent") => {
                DeviceKind::Disk
            }
            Some("cdrom-image" | "cdrom-raw" | "atapi-cdrom" | "scsi-passthru") => {
                DeviceKind::Cdrom
            }
            Some(other) => {
                return Err(vmx.err(&dtype_key, format!("unknown device type '{other}'")))
            }
            None if lname.ends_with(".vmdk") => DeviceKind::Disk,
            None if lname.ends_with(".iso") || name == "emptyBackingString" => DeviceKind::Cdrom,
            None => {
                return Err(vmx.err(
                    &name_key,
                    format!("cannot tell a disk from a CD-ROM by '{name}' without a deviceType"),
                ))
            }
        };
        let raw_device = matches!(
            dtype.as_deref(),
            Some("cdrom-raw" | "atapi-cdrom" | "scsi-passthru")
        );
        let source = if name.is_empty()
            || name == "emptyBackingString"
            || (raw_device && lname == "auto detect")
        {
            None
        } else if raw_device {
            Some(name.to_string())
        } else {
            let r = resolve(name).map_err(|e| vmx.err(&name_key, e))?;
            if r.is_none() && kind == DeviceKind::Disk {
                return Err(vmx.err(
                    &name_key,
                    format!("cannot locate '{name}' (map its datastore with --datastore NAME=DIR)"),
                ));
            }
            r
        };
        if kind == DeviceKind::Disk && source.is_none() {
            return Err(vmx.err(&name_key, "a hard disk without a file"));
        }
        let disk = Disk {
            format: (kind == DeviceKind::Disk).then(|| "vmdk".to_string()),
            source,
            bus: Some(bus),
            target: Some(target),
            device: kind,
            readonly: kind == DeviceKind::Cdrom,
            controller_model: model,
        };
        match kind {
            DeviceKind::Disk => disks.push(disk),
            _ => cdroms.push(disk),
        }
    }
    src.disks.extend(disks);
    src.disks.extend(cdroms);
    for n in 0..MAX_FLOPPY {
        let slot = format!("floppy{n}");
        if !vmx.present(&slot)? || vmx.bool(&format!("{slot}.clientDevice"))? == Some(true) {
            continue;
        }
        let name_key = format!("{slot}.fileName");
        let raw_device = vmx
            .get(&format!("{slot}.fileType"))
            .is_some_and(|t| t.eq_ignore_ascii_case("device"));
        let source = match vmx.get(&name_key).filter(|n| !n.is_empty()) {
            None => None,
            Some(n) if raw_device => Some(n.to_string()),
            Some(n) => resolve(n).map_err(|e| vmx.err(&name_key, e))?,
        };
        src.disks.push(Disk {
            source,
            bus: Some(Bus::Fdc),
            target: Some(index_to_name("fd", n)),
            device: DeviceKind::Floppy,
            ..Disk::default()
        });
    }
    Ok(())
}

fn parse_ethernet(vmx: &Vmx, n: u32) -> Result<Option<Nic>, Error> {
    let p = format!("ethernet{n}");
    if !vmx.present(&p)? {
        return Ok(None);
    }
    let key = |k: &str| format!("{p}.{k}");
    let address_type = vmx.get(&key("addressType")).map(str::to_ascii_lowercase);
    let mac_key = match address_type.as_deref() {
        Some("static") => key("address"),
        Some("generated" | "vpx") | None => key("generatedAddress"),
        Some(other) => {
            return Err(vmx.err(
                &key("addressType"),
                format!("expected generated, static or vpx, found '{other}'"),
            ))
        }
    };
    let mac = match vmx.get(&mac_key).or_else(|| vmx.get(&key("address"))) {
        None => None,
        Some(m) => Some(canonical_mac(m).ok_or_else(|| vmx.err(&mac_key, "not a MAC address"))?),
    };
    let dev = vmx.get(&key("virtualDev")).map(str::to_ascii_lowercase);
    let model = match dev.as_deref() {
        Some("vmxnet") if vmx.get(&key("features")) == Some("15") => Some("vmxnet2".to_string()),
        Some(d @ ("vlance" | "vmxnet" | "vmxnet3" | "e1000" | "e1000e")) => Some(d.to_string()),
        Some(other) => {
            return Err(vmx.err(
                &key("virtualDev"),
                format!("unknown network device '{other}'"),
            ))
        }
        None => None,
    };
    let connection = vmx
        .get(&key("connectionType"))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "bridged".into());
    let network = vmx.get(&key("networkName")).map(str::to_string);
    let bridge = match connection.as_str() {
        "bridged" | "custom" => network.clone(),
        _ => None,
    };
    Ok(Some(Nic {
        mac,
        model,
        network,
        bridge,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(b"a|22b|7C"), b"a\"b|");
        assert_eq!(unescape(b"|7c|"), b"||");
        assert_eq!(unescape(b"x|2"), b"x|2");
        assert_eq!(unescape(b"|zz|"), b"|zz|");
    }

    fn plain(name: &str) -> Result<Option<String>, String> {
        Ok(Some(name.to_string()))
    }

    #[test]
    fn escapes_case_and_hidden_subtrees() {
        let text = b"DisplayName = \"a|22b|7Cc\"\nSCSI0.present = \"FALSE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"x.vmdk\"\n";
        let s = parse("t.vmx", text, &plain).unwrap();
        assert_eq!(s.name.as_deref(), Some("a\"b|c"));
        assert!(
            s.disks.is_empty(),
            "scsi0 is not present, so neither is scsi0:0"
        );
    }

    #[test]
    fn datastore_paths_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("beside.vmdk"), b"").unwrap();
        let r = PathResolver {
            vmx_dir: dir.path().to_path_buf(),
            datastores: vec![("ds1".into(), "/srv/ds1".into())],
        };
        assert_eq!(
            r.resolve("[ds1] vm/a.vmdk").unwrap().as_deref(),
            Some("/srv/ds1/vm/a.vmdk")
        );
        assert_eq!(
            r.resolve("/vmfs/volumes/ds1/vm/a.vmdk").unwrap().as_deref(),
            Some("/srv/ds1/vm/a.vmdk")
        );
        let beside = dir.path().join("beside.vmdk").display().to_string();
        assert_eq!(r.resolve("[other] vm/beside.vmdk").unwrap(), Some(beside));
        assert_eq!(r.resolve("[other] vm/absent.vmdk").unwrap(), None);
        assert!(r.resolve("[broken vm/a.vmdk").is_err());
        let rel = dir.path().join("x.vmdk").display().to_string();
        assert_eq!(r.resolve("x.vmdk").unwrap(), Some(rel));
    }

    #[test]
    fn names() {
        assert_eq!(index_to_name("sd", 0), "sda");
        assert_eq!(index_to_name("sd", 25), "sdz");
        assert_eq!(index_to_name("sd", 26), "sdaa");
        assert_eq!(index_to_name("sd", 45), "sdat");
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("t.vmx", b"a = \"1\"\nmemsize = \"lots\"\n", &plain).unwrap_err();
        assert_eq!((e.line, e.column), (2, 11), "{e}");
        let e = parse("t.vmx", b"\n  novalue\n", &plain).unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        let e = parse("t.vmx", b"k = \"open\n", &plain).unwrap_err();
        assert_eq!(e.line, 1);
    }
}
