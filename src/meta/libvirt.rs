//! libvirt domain XML, both ways: a domain as `virsh dumpxml` prints it (Xen, VMware or KVM
//! sources) read into the model, and the domain XML for the KVM target written from it.
//!
//! Reading builds a small element tree with quick-xml (so every error has a byte position)
//! and picks the fields the model holds; writing goes through quick-xml's writer, which
//! escapes every attribute and text. Source: https://libvirt.org/formatdomain.html.

use super::model::{
    canonical_mac, canonical_uuid, Bus, DeviceKind, Disk, Firmware, Nic, PvBoot, Source,
};
use super::Error;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer, XmlVersion};
use serde::Serialize;

/// Deepest element nesting read: domain XML is about 6 deep; this bounds the stack.
pub const MAX_DEPTH: usize = 64;
/// Most elements read: a domain has tens to hundreds.
pub const MAX_ELEMENTS: usize = 100_000;

/// One element of the tree, with the byte offset of its start tag.
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
    pub offset: usize,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

fn element_from(file: &str, text: &[u8], e: &BytesStart, offset: usize) -> Result<Element, Error> {
    let err = |m: String| Error::at_byte(file, text, offset, m);
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|x| err(format!("<{name}>: bad attribute: {x}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|x| err(format!("<{name} {key}>: {x}")))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        offset,
        ..Element::default()
    })
}

/// Parse an XML document into its root element.
pub fn parse_tree(file: &str, text: &[u8]) -> Result<Element, Error> {
    let mut reader = Reader::from_reader(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut count = 0usize;
    loop {
        let offset = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let ev = reader.read_event().map_err(|e| {
            let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
            Error::at_byte(file, text, at, format!("XML: {e}"))
        })?;
        let err = |m: String| Error::at_byte(file, text, offset, m);
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) if root.is_none() => {
                // count ≤ MAX_ELEMENTS before this step (checked below): no saturation.
                count = count.saturating_add(1);
                if count > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                    return Err(err(format!(
                        "more than {MAX_ELEMENTS} elements or {MAX_DEPTH} levels"
                    )));
                }
                let el = element_from(file, text, e, offset)?;
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::Start(_) | Event::Empty(_) => {
                return Err(err("a second root element".into()));
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| err("end tag without a start".into()))?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    let s = t.xml10_content().map_err(|e| err(format!("text: {e}")))?;
                    p.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let s = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| err(format!("character reference: {e}")))?
                        .map(String::from)
                } else {
                    let name = r.decode().map_err(|e| err(format!("entity: {e}")))?;
                    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)
                };
                let s = s.ok_or_else(|| err("unknown entity".into()))?;
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::at_byte(
            file,
            text,
            text.len(),
            format!("<{}> is not closed", stack.last().map_or("", |e| &e.name)),
        ));
    }
    root.ok_or_else(|| Error::at(file, 1, 1, "no root element"))
}

/// Bytes in one `unit` of libvirt's scaled integers (formatdomain.html#memory-allocation).
fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "m" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "g" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "t" | "TiB" => 1 << 40,
        _ => return None,
    })
}

/// Read a libvirt domain XML into the model.
pub fn parse(file: &str, text: &[u8]) -> Result<Source, Error> {
    let root = parse_tree(file, text)?;
    let err = |e: &Element, m: String| Error::at_byte(file, text, e.offset, m);
    if root.name != "domain" {
        return Err(err(&root, format!("root is <{}>, not <domain>", root.name)));
    }
    let mut src = Source {
        input: "libvirt".into(),
        hypervisor: root.attr("type").map(str::to_string),
        ..Source::default()
    };
    src.name = root.text_of("name").map(str::to_string);
    if let Some(u) = root.child("uuid") {
        src.uuid = Some(canonical_uuid(u.text.trim()).ok_or_else(|| err(u, "not a UUID".into()))?);
    }
    let mem = |name: &str| -> Result<Option<u64>, Error> {
        let Some(m) = root.child(name) else {
            return Ok(None);
        };
        let unit = unit_bytes(m.attr("unit").unwrap_or("KiB"))
            .ok_or_else(|| err(m, format!("<{name}>: unknown unit")))?;
        let n: u64 = m
            .text
            .trim()
            .parse()
            .map_err(|_| err(m, format!("<{name}>: not a number")))?;
        n.checked_mul(unit)
            .map(Some)
            .ok_or_else(|| err(m, format!("<{name}>: too large")))
    };
    src.memory_bytes = mem("memory")?;
    src.current_memory_bytes = mem("currentMemory")?.filter(|c| Some(*c) != src.memory_bytes);
    if let Some(v) = root.child("vcpu") {
        src.vcpus = Some(
            v.text
                .trim()
                .parse()
                .map_err(|_| err(v, "<vcpu>: not a number".into()))?,
        );
    }
    if let Some(t) = root.child("cpu").and_then(|c| c.child("topology")) {
        let n = |a: &str| -> Result<Option<u32>, Error> {
            t.attr(a)
                .map(|v| {
                    v.parse()
                        .map_err(|_| err(t, format!("<topology {a}>: not a number")))
                })
                .transpose()
        };
        src.sockets = n("sockets")?;
        src.cores = n("cores")?;
        src.threads = n("threads")?;
    }
    src.description = root.text_of("description").map(str::to_string);
    if let Some(os) = root.child("os") {
        let ty = os.text_of("type").unwrap_or("");
        let loader = os.child("loader");
        let efi = os.attr("firmware") == Some("efi")
            || loader.is_some_and(|l| {
                l.attr("type") == Some("pflash")
                    || l.text.contains("OVMF")
                    || l.text.contains("ovmf")
            });
        if ty == "hvm" {
            src.firmware = Some(if efi { Firmware::Efi } else { Firmware::Bios });
        } else if ty == "linux" || ty == "xen" || ty == "xenpvh" {
            src.pv = Some(PvBoot {
                bootloader: root.text_of("bootloader").map(str::to_string),
                kernel: os.text_of("kernel").map(str::to_string),
                ramdisk: os.text_of("initrd").map(str::to_string),
                cmdline: os.text_of("cmdline").map(str::to_string),
            });
        }
    }
    let hvm = src.pv.is_none();
    if let Some(devices) = root.child("devices") {
        for d in devices.all("disk") {
            let device = match d.attr("device").unwrap_or("disk") {
                "disk" | "lun" => DeviceKind::Disk,
                "cdrom" => DeviceKind::Cdrom,
                "floppy" => DeviceKind::Floppy,
                other => return Err(err(d, format!("<disk device='{other}'> is not known"))),
            };
            let source = d.child("source").and_then(|s| {
                s.attr("file")
                    .or(s.attr("dev"))
                    .or(s.attr("volume"))
                    .or(s.attr("name"))
                    .map(str::to_string)
            });
            let target = d.child("target");
            let dev = target.and_then(|t| t.attr("dev")).map(str::to_string);
            let bus = match target.and_then(|t| t.attr("bus")) {
                Some(b) => Some(
                    Bus::from_libvirt(b)
                        .ok_or_else(|| err(d, format!("bus '{b}' is not known")))?,
                ),
                // libvirt's default: by the device name's prefix.
                None => dev.as_deref().map(|v| {
                    if v.starts_with("xvd") || !hvm {
                        Bus::Xen
                    } else if v.starts_with("vd") {
                        Bus::Virtio
                    } else if v.starts_with("sd") {
                        Bus::Scsi
                    } else if v.starts_with("fd") {
                        Bus::Fdc
                    } else {
                        Bus::Ide
                    }
                }),
            };
            src.disks.push(Disk {
                source,
                format: d
                    .child("driver")
                    .and_then(|x| x.attr("type"))
                    .map(str::to_string),
                bus,
                target: dev,
                device,
                readonly: d.child("readonly").is_some(),
                controller_model: None,
            });
        }
        for i in devices.all("interface") {
            let mac = match i.child("mac").and_then(|m| m.attr("address")) {
                Some(m) => Some(
                    canonical_mac(m)
                        .ok_or_else(|| err(i, format!("'{m}' is not a MAC address")))?,
                ),
                None => None,
            };
            let s = i.child("source");
            src.nics.push(Nic {
                mac,
                model: i
                    .child("model")
                    .and_then(|m| m.attr("type"))
                    .map(str::to_string),
                network: s.and_then(|s| s.attr("network")).map(str::to_string),
                bridge: s.and_then(|s| s.attr("bridge")).map(str::to_string),
            });
        }
        src.graphics = devices
            .child("graphics")
            .and_then(|g| g.attr("type"))
            .map(str::to_string);
    }
    Ok(src)
}

/// The machine type of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Machine {
    Q35,
    Pc,
}

/// Choices for the target domain that the source does not make.
#[derive(Debug, Clone)]
pub struct Target {
    pub machine: Machine,
    /// Bus for hard disks: virtio (default), sata or ide for guests without virtio drivers.
    pub disk_bus: Bus,
    /// NIC model: virtio (default) or e1000.
    pub nic_model: String,
    /// `SRC:DST` network and bridge mappings; a NIC whose source is not mapped goes to
    /// `default_network`.
    pub networks: Vec<(String, String)>,
    pub bridges: Vec<(String, String)>,
    pub default_network: String,
    /// Used when the source does not say.
    pub default_memory_bytes: u64,
    pub default_vcpus: u32,
    /// The guest OS's libosinfo ID (`http://microsoft.com/win/2k22`), recorded in
    /// `<metadata>` as virt-v2v and virt-install do, so that libvirt tools know the OS.
    pub libosinfo: Option<String>,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            machine: Machine::Q35,
            disk_bus: Bus::Virtio,
            nic_model: "virtio".into(),
            networks: Vec::new(),
            bridges: Vec::new(),
            default_network: "default".into(),
            default_memory_bytes: 1 << 30,
            libosinfo: None,
            default_vcpus: 1,
        }
    }
}

/// Where Debian's `ovmf` package installs the firmware (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Namespace of libosinfo's element in `<metadata>` (libosinfo's libvirt domain schema).
const LIBOSINFO_NS: &str = "http://libosinfo.org/xmlns/libvirt/domain/1.0";
/// Namespace of ferry's element in `<metadata>` (libvirt needs one per application).
pub const METADATA_NS: &str = "https://ferry.invalid/xmlns/v2v/1";

struct Out {
    w: Writer<Vec<u8>>,
}

impl Out {
    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut s = BytesStart::new(name);
        for a in attrs {
            s.push_attribute(*a);
        }
        self.put(Event::Start(s));
    }
    fn put(&mut self, e: Event) {
        // OK: writing into a Vec cannot fail.
        self.w.write_event(e).expect("writing to a Vec"); // OK: a Vec never fails
    }
    fn close(&mut self, name: &str) {
        self.put(Event::End(BytesEnd::new(name)));
    }
    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut s = BytesStart::new(name);
        for a in attrs {
            s.push_attribute(*a);
        }
        self.put(Event::Empty(s));
    }
    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        self.put(Event::Text(BytesText::new(text)));
        self.close(name);
    }
}

fn map_name<'a>(map: &'a [(String, String)], name: &str) -> Option<&'a str> {
    map.iter().find(|(s, _)| s == name).map(|(_, d)| d.as_str())
}

/// Write the KVM domain XML for `src` with the target's choices. Fails when the source has no
/// name (libvirt requires one) or a hard disk's source is not an absolute path (a datastore
/// path that was not mapped, a network disk): the caller puts the converted files there.
/// A CD-ROM whose image is not an absolute path becomes an empty drive.
pub fn write_domain(src: &Source, t: &Target) -> Result<String, String> {
    let name = src
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or("the source VM has no name; give one")?;
    let mut o = Out {
        w: Writer::new_with_indent(Vec::new(), b' ', 2),
    };
    o.open("domain", &[("type", "kvm")]);
    o.text("name", &[], name);
    if let Some(u) = &src.uuid {
        o.text("uuid", &[], u);
    }
    if let Some(d) = &src.description {
        o.text("description", &[], d);
    }
    o.open("metadata", &[]);
    o.open("ferry:source", &[("xmlns:ferry", METADATA_NS)]);
    o.text("ferry:input", &[], &src.input);
    if let Some(g) = &src.guest_os {
        o.text("ferry:guest-os", &[], g);
    }
    if let Some(d) = &src.description {
        o.text("ferry:description", &[], d);
    }
    o.close("ferry:source");
    if let Some(id) = &t.libosinfo {
        o.open("libosinfo:libosinfo", &[("xmlns:libosinfo", LIBOSINFO_NS)]);
        o.empty("libosinfo:os", &[("id", id)]);
        o.close("libosinfo:libosinfo");
    }
    o.close("metadata");
    let kib = src
        .memory_bytes
        .unwrap_or(t.default_memory_bytes)
        .div_ceil(1024)
        .to_string();
    o.text("memory", &[("unit", "KiB")], &kib);
    let cur = src
        .current_memory_bytes
        .map_or(kib.clone(), |c| c.div_ceil(1024).to_string());
    o.text("currentMemory", &[("unit", "KiB")], &cur);
    let vcpus = src.vcpus.unwrap_or(t.default_vcpus).max(1);
    o.text("vcpu", &[("placement", "static")], &vcpus.to_string());
    let efi = src.firmware == Some(Firmware::Efi);
    let machine = match t.machine {
        Machine::Q35 => "q35",
        Machine::Pc => "pc",
    };
    o.open("os", &[]);
    o.text("type", &[("arch", "x86_64"), ("machine", machine)], "hvm");
    if efi {
        o.text(
            "loader",
            &[("readonly", "yes"), ("type", "pflash")],
            OVMF_CODE,
        );
        let nvram = format!("/var/lib/libvirt/qemu/nvram/{name}_VARS.fd");
        o.text("nvram", &[("template", OVMF_VARS)], &nvram);
    }
    o.empty("boot", &[("dev", "hd")]);
    o.close("os");
    o.open("features", &[]);
    o.empty("acpi", &[]);
    o.empty("apic", &[]);
    o.close("features");
    o.open("cpu", &[("mode", "host-model")]);
    if let (Some(s), Some(c)) = (src.sockets, src.cores) {
        let th = src.threads.unwrap_or(1);
        if s.checked_mul(c).and_then(|x| x.checked_mul(th)) == Some(vcpus) {
            let (s, c, th) = (s.to_string(), c.to_string(), th.to_string());
            o.empty(
                "topology",
                &[
                    ("sockets", &s),
                    ("dies", "1"),
                    ("cores", &c),
                    ("threads", &th),
                ],
            );
        }
    }
    o.close("cpu");
    o.empty("clock", &[("offset", "utc")]);
    o.text("on_poweroff", &[], "destroy");
    o.text("on_reboot", &[], "restart");
    o.text("on_crash", &[], "restart");
    o.open("devices", &[]);
    let (prefix, bus) = match t.disk_bus {
        Bus::Sata => ("sd", "sata"),
        Bus::Ide => ("hd", "ide"),
        _ => ("vd", "virtio"),
    };
    let mut n = 0u32;
    for d in src.disks.iter().filter(|d| d.device == DeviceKind::Disk) {
        let dev = super::vmx::index_to_name(prefix, n);
        // One per disk of the model, which every parser bounds far below u32::MAX.
        n = n.saturating_add(1);
        let src_path = d.source.as_deref().unwrap_or("");
        if !src_path.starts_with('/') {
            return Err(format!(
                "disk {}: source '{src_path}' is not an absolute path",
                d.target.as_deref().unwrap_or("?")
            ));
        }
        let block = src_path.starts_with("/dev/");
        o.open(
            "disk",
            &[
                ("type", if block { "block" } else { "file" }),
                ("device", "disk"),
            ],
        );
        let fmt = d.format.as_deref().unwrap_or("raw");
        o.empty("driver", &[("name", "qemu"), ("type", fmt)]);
        if !src_path.is_empty() {
            o.empty("source", &[(if block { "dev" } else { "file" }, src_path)]);
        }
        o.empty("target", &[("dev", &dev), ("bus", bus)]);
        o.close("disk");
    }
    // CD-ROMs stay, on the bus the machine has (SATA on q35, IDE on pc), after the disks.
    let (cd_prefix, cd_bus) = match t.machine {
        Machine::Q35 => ("sd", "sata"),
        Machine::Pc => ("hd", "ide"),
    };
    let first = if cd_prefix == prefix { n } else { 0 };
    let cdroms = src.disks.iter().filter(|d| d.device == DeviceKind::Cdrom);
    for (m, d) in (first..).zip(cdroms) {
        let dev = super::vmx::index_to_name(cd_prefix, m);
        o.open("disk", &[("type", "file"), ("device", "cdrom")]);
        o.empty("driver", &[("name", "qemu"), ("type", "raw")]);
        if let Some(s) = d.source.as_deref().filter(|s| s.starts_with('/')) {
            o.empty("source", &[("file", s)]);
        }
        o.empty("target", &[("dev", &dev), ("bus", cd_bus)]);
        o.empty("readonly", &[]);
        o.close("disk");
    }
    for nic in &src.nics {
        let bridge = nic.bridge.as_deref().and_then(|b| map_name(&t.bridges, b));
        let network = nic
            .network
            .as_deref()
            .and_then(|b| map_name(&t.networks, b));
        let (kind, attr, value) = match (bridge, network) {
            (Some(b), _) => ("bridge", "bridge", b),
            (None, Some(n)) => ("network", "network", n),
            (None, None) => ("network", "network", t.default_network.as_str()),
        };
        o.open("interface", &[("type", kind)]);
        if let Some(mac) = &nic.mac {
            o.empty("mac", &[("address", mac)]);
        }
        o.empty("source", &[(attr, value)]);
        o.empty("model", &[("type", &t.nic_model)]);
        o.close("interface");
    }
    o.open("serial", &[("type", "pty")]);
    o.empty("target", &[("port", "0")]);
    o.close("serial");
    o.open("console", &[("type", "pty")]);
    o.empty("target", &[("type", "serial"), ("port", "0")]);
    o.close("console");
    o.open("channel", &[("type", "unix")]);
    o.empty(
        "target",
        &[("type", "virtio"), ("name", "org.qemu.guest_agent.0")],
    );
    o.close("channel");
    o.empty("input", &[("type", "tablet"), ("bus", "usb")]);
    o.empty(
        "graphics",
        &[
            ("type", "vnc"),
            ("autoport", "yes"),
            ("listen", "127.0.0.1"),
        ],
    );
    o.open("video", &[]);
    o.empty(
        "model",
        &[("type", "vga"), ("heads", "1"), ("primary", "yes")],
    );
    o.close("video");
    o.open("rng", &[("model", "virtio")]);
    o.text("backend", &[("model", "random")], "/dev/urandom");
    o.close("rng");
    o.close("devices");
    o.close("domain");
    let bytes = o.w.into_inner();
    let mut out = String::from_utf8(bytes).expect("from &str only"); // OK: every byte written came from a &str, so the whole is UTF-8
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_escaping() {
        let src = Source {
            input: "vmx".into(),
            name: Some("a<b>&\"c'".into()),
            memory_bytes: Some(2 << 30),
            vcpus: Some(4),
            sockets: Some(2),
            cores: Some(2),
            firmware: Some(Firmware::Efi),
            description: Some("x < y & z".into()),
            disks: vec![Disk {
                source: Some("/v/a b&.qcow2".into()),
                format: Some("qcow2".into()),
                ..Disk::default()
            }],
            nics: vec![Nic {
                mac: Some("00:50:56:11:22:33".into()),
                network: Some("VM Network".into()),
                ..Nic::default()
            }],
            ..Source::default()
        };
        let xml = write_domain(&src, &Target::default()).unwrap();
        let back = parse("out.xml", xml.as_bytes()).unwrap();
        assert_eq!(back.name, src.name);
        assert_eq!(back.description, src.description);
        assert_eq!(back.memory_bytes, src.memory_bytes);
        assert_eq!(back.firmware, Some(Firmware::Efi));
        assert_eq!(back.disks[0].source, src.disks[0].source);
        assert_eq!(back.disks[0].target.as_deref(), Some("vda"));
        assert_eq!(back.nics[0].mac, src.nics[0].mac);
        assert_eq!(back.nics[0].network.as_deref(), Some("default"));
    }

    #[test]
    fn relative_disk_sources_are_refused() {
        let src = Source {
            name: Some("g".into()),
            disks: vec![Disk {
                source: Some("[ds] g/g.vmdk".into()),
                ..Disk::default()
            }],
            ..Source::default()
        };
        let e = write_domain(&src, &Target::default()).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("d.xml", b"<domain>\n  <name>x</nam>\n</domain>").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse(
            "d.xml",
            b"<domain>\n <memory unit='parsec'>1</memory></domain>",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (2, 2), "{e}");
        assert!(parse("d.xml", b"<domain><name>x</name>").is_err());
    }
}
