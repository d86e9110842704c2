//! OVF descriptors (DMTF DSP0243, "Open Virtualization Format Specification" 1.x/2.x), as
//! VMware, VirtualBox and others export them inside an OVA: the first (only) VirtualSystem's
//! name, memory, CPUs, firmware, disks and network cards, read into the model.
//!
//! Hardware is a list of `Item`s told apart by their CIM `ResourceType` (DSP1041/CIM_
//! ResourceAllocationSettingData: 3 processor, 4 memory, 5 IDE controller, 6 SCSI
//! controller, 10 Ethernet, 14 floppy, 15/16 CD/DVD, 17 disk, 20 other storage (SATA/AHCI)).
//! A disk item names `ovf:/disk/ID` in the DiskSection, which names a file in References by
//! id. Element and attribute names are matched by local name, as exporters differ in their
//! namespace prefixes.

use super::libvirt::{parse_tree, Element};
use super::model::{canonical_mac, canonical_uuid, Bus, DeviceKind, Disk, Firmware, Nic, Source};
use super::vmx::index_to_name;
use super::Error;

/// One file the descriptor references (its `References/File`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfFile {
    pub id: String,
    /// The file's name, relative to the descriptor.
    pub href: String,
    pub size: Option<u64>,
    /// `ovf:compression` ("gzip"), when the file is stored compressed.
    pub compression: Option<String>,
}

/// What an OVF descriptor says: the VM, and for each of its disks (in the order of
/// `source.disks`, cdroms and floppies excluded) the referenced file.
#[derive(Debug, Clone)]
pub struct Ovf {
    pub source: Source,
    pub files: Vec<OvfFile>,
    /// For each hard disk of `source.disks` (in order), the index in `files` of its image.
    pub disk_files: Vec<usize>,
}

/// The local part of a qualified XML name (`rasd:ResourceType` → `ResourceType`).
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children.iter().find(|c| local(&c.name) == name)
}

fn children<'a>(e: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
    e.children.iter().filter(move |c| local(&c.name) == name)
}

fn attr<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| local(k) == name)
        .map(|(_, v)| v.as_str())
}

fn text<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    child(e, name)
        .map(|c| c.text.trim())
        .filter(|t| !t.is_empty())
}

/// Bytes per unit of a CIM programmatic unit (DSP0004 annex C: `byte * 2^20`), or of the
/// older names exporters still write (`MegaBytes`, `KB`). `None` for anything else.
fn unit_bytes(unit: &str) -> Option<u64> {
    let u: String = unit.chars().filter(|c| !c.is_whitespace()).collect();
    let u = u.to_ascii_lowercase();
    if let Some(rest) = u.strip_prefix("byte*2^") {
        let p: u32 = rest.parse().ok()?;
        return 1u64.checked_shl(p).filter(|_| p < 63);
    }
    if let Some(rest) = u.strip_prefix("byte*10^") {
        let p: u32 = rest.parse().ok()?;
        return 10u64.checked_pow(p);
    }
    Some(match u.as_str() {
        "byte" | "bytes" | "b" => 1,
        "kilobytes" | "kb" | "kib" => 1 << 10,
        "megabytes" | "mb" | "mib" => 1 << 20,
        "gigabytes" | "gb" | "gib" => 1 << 30,
        _ => return None,
    })
}

/// Parses an OVF descriptor. `file` names it in errors.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Ovf, Error> {
    let root = parse_tree(file, bytes)?;
    let err = |e: &Element, m: String| Error::at_byte(file, bytes, e.offset, m);
    if local(&root.name) != "Envelope" {
        return Err(err(
            &root,
            format!("the root element is <{}>, not an OVF <Envelope>", root.name),
        ));
    }
    // References: the files, by id.
    let mut files = Vec::new();
    if let Some(refs) = child(&root, "References") {
        for f in children(refs, "File") {
            let id = attr(f, "id").ok_or_else(|| err(f, "<File> has no ovf:id".into()))?;
            let href = attr(f, "href").ok_or_else(|| err(f, "<File> has no ovf:href".into()))?;
            files.push(OvfFile {
                id: id.to_string(),
                href: href.to_string(),
                size: attr(f, "size").and_then(|s| s.trim().parse().ok()),
                compression: attr(f, "compression")
                    .filter(|c| !c.is_empty() && *c != "identity")
                    .map(str::to_string),
            });
        }
    }
    // DiskSection: disk id -> file index.
    let mut disk_ids: Vec<(String, usize)> = Vec::new();
    if let Some(ds) = child(&root, "DiskSection") {
        for d in children(ds, "Disk") {
            let id = attr(d, "diskId").ok_or_else(|| err(d, "<Disk> has no ovf:diskId".into()))?;
            let Some(fref) = attr(d, "fileRef") else {
                // A disk with no file is a new, empty disk the importer creates: nothing to copy.
                continue;
            };
            let idx = files.iter().position(|f| f.id == fref).ok_or_else(|| {
                err(
                    d,
                    format!("<Disk {id}> names file {fref:?}, which References does not list"),
                )
            })?;
            disk_ids.push((id.to_string(), idx));
        }
    }
    let systems: Vec<&Element> = children(&root, "VirtualSystem").collect();
    let vs = match systems.as_slice() {
        [one] => *one,
        [] => {
            let what = if child(&root, "VirtualSystemCollection").is_some() {
                "a VirtualSystemCollection (several VMs in one OVF), which ferry does not convert"
            } else {
                "no VirtualSystem"
            };
            return Err(err(&root, format!("the descriptor holds {what}")));
        }
        _ => {
            return Err(err(
                systems[1],
                "the descriptor holds several VirtualSystems; ferry converts one VM at a time"
                    .into(),
            ))
        }
    };
    let mut src = Source {
        input: "ova".into(),
        name: text(vs, "Name")
            .or_else(|| attr(vs, "id"))
            .map(str::to_string),
        ..Source::default()
    };
    if let Some(os) = child(vs, "OperatingSystemSection") {
        src.guest_os = attr(os, "osType")
            .or_else(|| text(os, "Description"))
            .map(str::to_string);
    }
    src.description = child(vs, "AnnotationSection")
        .and_then(|a| text(a, "Annotation"))
        .map(str::to_string);
    let hw = child(vs, "VirtualHardwareSection")
        .ok_or_else(|| err(vs, "the VirtualSystem has no VirtualHardwareSection".into()))?;
    let system_type = child(hw, "System").and_then(|s| text(s, "VirtualSystemType"));
    let vmware_ns = root.attrs.iter().any(|(k, _)| k == "xmlns:vmw");
    src.hypervisor = match system_type {
        Some(t) if t.split([' ', ',']).any(|t| t.starts_with("vmx-")) => Some("vmware".into()),
        Some(t) if t.starts_with("virtualbox-") => Some("virtualbox".into()),
        _ if vmware_ns => Some("vmware".into()),
        _ => None,
    };
    // VMware's extra configuration (`vmw:Config key= value=`) and ExtraConfig.
    let vmw_config = |key: &str| {
        hw.children
            .iter()
            .filter(|c| matches!(local(&c.name), "Config" | "ExtraConfig"))
            .find(|c| attr(c, "key") == Some(key))
            .and_then(|c| attr(c, "value"))
    };
    src.firmware = match vmw_config("firmware") {
        Some("efi") => Some(Firmware::Efi),
        Some("bios") => Some(Firmware::Bios),
        _ => None,
    };
    src.uuid = vmw_config("uuid.bios")
        .or_else(|| {
            child(vs, "Machine")
                .and_then(|m| attr(m, "uuid"))
                .map(|u| u.trim_matches(['{', '}']))
        })
        .and_then(canonical_uuid);

    let items: Vec<&Element> = children(hw, "Item")
        .chain(children(hw, "StorageItem"))
        .chain(children(hw, "EthernetPortItem"))
        .collect();
    let rtype = |i: &Element| text(i, "ResourceType").and_then(|t| t.parse::<u32>().ok());
    let quantity = |i: &Element| -> Result<Option<u64>, Error> {
        match text(i, "VirtualQuantity") {
            None => Ok(None),
            Some(q) => q
                .parse::<u64>()
                .map(Some)
                .map_err(|_| err(i, format!("VirtualQuantity {q:?} is not a number"))),
        }
    };
    for i in &items {
        match rtype(i) {
            Some(3) => {
                src.vcpus = quantity(i)?.and_then(|q| u32::try_from(q).ok());
                if let Some(c) = text(i, "CoresPerSocket").and_then(|c| c.parse::<u32>().ok()) {
                    src.cores = Some(c);
                }
            }
            Some(4) => {
                if let Some(q) = quantity(i)? {
                    // No unit: megabytes, as VMware writes memory and virt-v2v reads it.
                    let unit = match text(i, "AllocationUnits") {
                        None => 1 << 20,
                        Some(u) => unit_bytes(u).ok_or_else(|| {
                            err(
                                i,
                                format!("memory AllocationUnits {u:?} is not a unit ferry knows"),
                            )
                        })?,
                    };
                    let bytes = q
                        .checked_mul(unit)
                        .ok_or_else(|| err(i, "the memory size overflows".into()))?;
                    src.memory_bytes = Some(bytes);
                }
            }
            _ => {}
        }
    }
    if let (Some(v), Some(c)) = (src.vcpus, src.cores) {
        if v.checked_rem(c) == Some(0) {
            src.sockets = v.checked_div(c);
            src.threads = Some(1);
        }
    }

    // Controllers by InstanceID: (bus, address, model).
    let controllers: Vec<(&str, Bus, u32, Option<String>)> = items
        .iter()
        .filter_map(|i| {
            let bus = match (rtype(i)?, text(i, "ResourceSubType")) {
                (5, _) => Bus::Ide,
                (6, _) => Bus::Scsi,
                (20, Some(s)) if s.to_ascii_lowercase().contains("nvme") => Bus::Nvme,
                (20, _) => Bus::Sata,
                _ => return None,
            };
            let addr = text(i, "Address").and_then(|a| a.parse().ok()).unwrap_or(0);
            let model = text(i, "ResourceSubType").map(str::to_ascii_lowercase);
            Some((text(i, "InstanceID")?, bus, addr, model))
        })
        .collect();
    let mut disks: Vec<(u32, Disk, Option<usize>)> = Vec::new();
    let mut floppies = 0u32;
    for i in &items {
        let kind = match rtype(i) {
            Some(17) => DeviceKind::Disk,
            Some(15 | 16) => DeviceKind::Cdrom,
            Some(14) => DeviceKind::Floppy,
            _ => continue,
        };
        let parent = text(i, "Parent").and_then(|p| controllers.iter().find(|c| c.0 == p));
        let unit: u32 = text(i, "AddressOnParent")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        // Address and AddressOnParent are the package's numbers: their index may overflow.
        let slot = |addr: u32, per: u32| addr.checked_mul(per).and_then(|a| a.checked_add(unit));
        let (bus, index) = match (kind, parent) {
            (DeviceKind::Floppy, _) => {
                let n = floppies;
                // One per <Item>, and the elements are far fewer than u32::MAX.
                floppies = floppies.saturating_add(1);
                (Bus::Fdc, Some(n))
            }
            (_, Some(&(_, Bus::Ide, addr, _))) => (Bus::Ide, slot(addr, 2)),
            (_, Some(&(_, bus @ (Bus::Sata | Bus::Nvme), addr, _))) => (bus, slot(addr, 30)),
            (_, Some(&(_, bus, addr, _))) => (bus, slot(addr, 15)),
            (_, None) => (Bus::Scsi, Some(unit)),
        };
        let index = index.ok_or_else(|| {
            err(
                i,
                format!(
                    "AddressOnParent {unit} and its controller's Address overflow a target index"
                ),
            )
        })?;
        let prefix = match bus {
            Bus::Ide => "hd",
            Bus::Fdc => "fd",
            Bus::Nvme => "nvme",
            _ => "sd",
        };
        let file = if kind == DeviceKind::Disk {
            let host = text(i, "HostResource")
                .ok_or_else(|| err(i, "a disk <Item> has no HostResource".into()))?;
            let id = host
                .strip_prefix("ovf:")
                .unwrap_or(host)
                .trim_start_matches('/')
                .strip_prefix("disk/")
                .ok_or_else(|| err(i, format!("HostResource {host:?} is not ovf:/disk/ID")))?;
            let f = disk_ids
                .iter()
                .find(|(d, _)| d == id)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    err(
                        i,
                        format!("HostResource names disk {id:?}, which DiskSection does not list"),
                    )
                })?;
            Some(f)
        } else {
            None
        };
        let disk = Disk {
            source: file.map(|f| files[f].href.clone()),
            format: file.map(|_| "vmdk".to_string()),
            bus: Some(bus),
            target: Some(index_to_name(prefix, index)),
            device: kind,
            readonly: kind == DeviceKind::Cdrom,
            controller_model: parent.and_then(|p| p.3.clone()),
        };
        let order = match kind {
            DeviceKind::Disk => 0,
            DeviceKind::Cdrom => 1,
            DeviceKind::Floppy => 2,
        };
        disks.push((order, disk, file));
    }
    // Hard disks first, then CD-ROMs, then floppies, as libvirt lists them.
    disks.sort_by_key(|(o, _, _)| *o);
    let disk_files = disks.iter().filter_map(|(_, _, f)| *f).collect();
    src.disks = disks.into_iter().map(|(_, d, _)| d).collect();

    for i in &items {
        if rtype(i) != Some(10) {
            continue;
        }
        let mac = text(i, "Address").and_then(canonical_mac);
        src.nics.push(Nic {
            mac,
            model: text(i, "ResourceSubType").map(str::to_ascii_lowercase),
            network: text(i, "Connection").map(str::to_string),
            bridge: None,
        });
    }
    Ok(Ovf {
        source: src,
        files,
        disk_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(unit_bytes("byte * 2^20"), Some(1 << 20));
        assert_eq!(unit_bytes("byte*2^30"), Some(1 << 30));
        assert_eq!(unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(unit_bytes("byte * 10^3"), Some(1000));
        assert_eq!(unit_bytes("byte * 2^64"), None);
        assert_eq!(unit_bytes("hertz * 10^6"), None);
    }

    /// One IDE disk on controller address 0, unit 1, and a NIC.
    const SMALL: &[u8] = br#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="r" xmlns:vssd="v">
 <References><File ovf:href="d.vmdk" ovf:id="f1" ovf:size="100"/></References>
 <DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="1"/></DiskSection>
 <VirtualSystem ovf:id="vm">
  <VirtualHardwareSection>
   <System><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
   <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity><rasd:CoresPerSocket>2</rasd:CoresPerSocket></Item>
   <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
   <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
   <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
   <Item><rasd:Address>00:50:56:AA:BB:CC</rasd:Address><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
  </VirtualHardwareSection>
 </VirtualSystem>
</Envelope>"#;

    #[test]
    fn a_small_descriptor() {
        let o = parse("t.ovf", SMALL).unwrap();
        let s = &o.source;
        assert_eq!(s.name.as_deref(), Some("vm"));
        assert_eq!(s.hypervisor.as_deref(), Some("vmware"));
        assert_eq!(s.memory_bytes, Some(2 << 30));
        assert_eq!((s.vcpus, s.sockets, s.cores), (Some(4), Some(2), Some(2)));
        assert_eq!(s.disks.len(), 1);
        assert_eq!(s.disks[0].target.as_deref(), Some("hdb"));
        assert_eq!(s.disks[0].bus, Some(Bus::Ide));
        assert_eq!(s.disks[0].source.as_deref(), Some("d.vmdk"));
        assert_eq!(o.disk_files, vec![0]);
        assert_eq!(s.nics[0].mac.as_deref(), Some("00:50:56:aa:bb:cc"));
        assert_eq!(s.nics[0].model.as_deref(), Some("vmxnet3"));
        assert_eq!(s.nics[0].network.as_deref(), Some("VM Network"));
    }

    /// Controller address × units per controller + unit used to wrap (a panic in debug
    /// builds, a wrong target name in release); now an error at the disk's <Item>.
    #[test]
    fn a_huge_controller_address_is_an_error() {
        let x = String::from_utf8_lossy(SMALL)
            .replace("<rasd:Address>0<", "<rasd:Address>4000000000<")
            .into_bytes();
        let e = parse("t.ovf", &x).unwrap_err();
        assert!(e.message.contains("overflow a target index"), "{e}");
        let x = String::from_utf8_lossy(SMALL)
            .replace("<rasd:Address>0<", "<rasd:Address>1<")
            .replace(
                "<rasd:AddressOnParent>1<",
                "<rasd:AddressOnParent>4294967295<",
            )
            .into_bytes();
        let e = parse("t.ovf", &x).unwrap_err();
        assert!(e.message.contains("overflow a target index"), "{e}");
    }

    #[test]
    fn broken_references_are_errors_with_a_position() {
        let x =
            br#"<Envelope><DiskSection><Disk diskId="d" fileRef="nope"/></DiskSection></Envelope>"#;
        let e = parse("t.ovf", x).unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
        assert_eq!(e.line, 1);
        let e = parse("t.ovf", b"<domain/>").unwrap_err();
        assert!(e.message.contains("Envelope"), "{e}");
    }
}
