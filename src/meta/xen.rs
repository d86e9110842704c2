//! Xen guest configuration files, both `xl` (libxlutil's cfg syntax) and the older `xm` ones
//! (a Python subset): `name = value` statements where a value is a string (single, double or
//! triple quoted), an integer or a `[ ... ]` list that may span lines; `#` comments; `;` or a
//! newline ends a statement and a backslash before the newline continues it.
//!
//! Sources: xen.git `docs/man/xl.cfg.5.pod.in`, `docs/misc/xl-disk-configuration.txt`,
//! `docs/misc/xl-network-configuration.markdown`, and libvirt's `src/libxl/xen_xl.c` and
//! `src/libxl/xen_xm.c`, whose test data is the oracle of this module's tests.

use super::model::{
    canonical_mac, canonical_uuid, Bus, DeviceKind, Disk, Firmware, Nic, PvBoot, Source,
};
use super::Error;
use std::collections::HashMap;

/// Most statements a cfg may hold; real ones have tens.
pub const MAX_STATEMENTS: usize = 10_000;
/// Most items in one list (disks, vifs): Xen itself allows a few hundred devices.
pub const MAX_LIST_ITEMS: usize = 4096;
/// Deepest list nesting (`vnuma = [ [ ... ] ]` has two levels); bounds the recursion.
pub const MAX_NESTING: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<(Value, usize)>),
}

/// A setting and the byte offset of its value.
#[derive(Debug, Clone)]
struct Setting {
    value: Value,
    offset: usize,
}

struct Lexer<'a> {
    file: &'a str,
    text: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, msg: impl Into<String>) -> Error {
        Error::at_byte(self.file, self.text, at, msg)
    }

    /// The text from the cursor on.
    fn rest(&self) -> &'a [u8] {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.rest().first().copied()
    }

    /// Moves the cursor `n` bytes on. Callers step over bytes they have seen, so `pos` stays
    /// within the text (at most `isize::MAX` long) and the sum cannot saturate.
    fn bump(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }

    /// Skip blanks, comments and continuations; with `newlines`, line ends too.
    fn skip(&mut self, newlines: bool) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.bump(1),
                b'\n' if newlines => self.bump(1),
                b'\\' if self.rest().starts_with(b"\\\n") => self.bump(2),
                b'\\' if self.rest().starts_with(b"\\\r\n") => self.bump(3),
                b'#' => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.bump(1);
                    }
                }
                _ => break,
            }
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            self.bump(1);
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into())
    }

    fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let q = self.text[self.pos];
        let triple = self.rest().starts_with(&[q, q, q]);
        self.bump(if triple { 3 } else { 1 });
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err(start, "string without its closing quote"));
            };
            if triple {
                if self.rest().starts_with(&[q, q, q]) {
                    self.bump(3);
                    break;
                }
            } else if b == q {
                self.bump(1);
                break;
            } else if b == b'\n' {
                return Err(self.err(start, "string without its closing quote on its line"));
            }
            if b == b'\\' {
                let Some(&e) = self.rest().get(1) else {
                    return Err(self.err(self.pos, "backslash at the end of the file"));
                };
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'\\' | b'"' | b'\'' => out.push(e),
                    b'\n' => {}
                    other => out.extend_from_slice(&[b'\\', other]),
                }
                self.bump(2);
                continue;
            }
            out.push(b);
            self.bump(1);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let start = self.pos;
        match self.peek() {
            Some(b'"' | b'\'') => self.string().map(Value::Str),
            Some(b'[') if depth < MAX_NESTING => {
                self.bump(1);
                let mut items = Vec::new();
                loop {
                    self.skip(true);
                    if self.peek() == Some(b']') {
                        self.bump(1);
                        break;
                    }
                    if items.len() >= MAX_LIST_ITEMS {
                        return Err(
                            self.err(self.pos, format!("more than {MAX_LIST_ITEMS} list items"))
                        );
                    }
                    let at = self.pos;
                    // depth < MAX_NESTING (the match guard), so this cannot saturate.
                    items.push((self.value(depth.saturating_add(1))?, at));
                    self.skip(true);
                    match self.peek() {
                        Some(b',') => self.bump(1),
                        Some(b']') => {}
                        _ => return Err(self.err(self.pos, "expected ',' or ']' in a list")),
                    }
                }
                Ok(Value::List(items))
            }
            Some(b'[') => {
                Err(self.err(start, format!("lists nested more than {MAX_NESTING} deep")))
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => {
                self.bump(1);
                while self.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
                    self.bump(1);
                }
                let t = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or("");
                let n = if let Some(h) = t.strip_prefix("0x") {
                    i64::from_str_radix(h, 16).ok()
                } else {
                    t.parse().ok()
                };
                n.map(Value::Int)
                    .ok_or_else(|| self.err(start, format!("'{t}' is not a number")))
            }
            _ => match self.ident() {
                // Python's booleans, which xm files use.
                Some(w) if w == "True" => Ok(Value::Int(1)),
                Some(w) if w == "False" => Ok(Value::Int(0)),
                _ => Err(self.err(start, "expected a string, a number or a list")),
            },
        }
    }
}

/// Parse the statements of a cfg file into name → value (the last one wins, as in xl).
fn settings(file: &str, text: &[u8]) -> Result<HashMap<String, Setting>, Error> {
    let mut lx = Lexer { file, text, pos: 0 };
    let mut out = HashMap::new();
    let mut count = 0usize;
    loop {
        lx.skip(true);
        while lx.peek() == Some(b';') {
            lx.bump(1);
            lx.skip(true);
        }
        if lx.peek().is_none() {
            break;
        }
        // count ≤ MAX_STATEMENTS before this step (checked below), so it cannot saturate.
        count = count.saturating_add(1);
        if count > MAX_STATEMENTS {
            return Err(lx.err(lx.pos, format!("more than {MAX_STATEMENTS} statements")));
        }
        let at = lx.pos;
        let name = lx
            .ident()
            .ok_or_else(|| lx.err(at, "expected a setting name"))?;
        lx.skip(false);
        if lx.peek() != Some(b'=') {
            return Err(lx.err(lx.pos, format!("expected '=' after '{name}'")));
        }
        lx.bump(1);
        lx.skip(false);
        let offset = lx.pos;
        let value = lx.value(0)?;
        lx.skip(false);
        match lx.peek() {
            None | Some(b'\n' | b';') => {}
            Some(_) => {
                return Err(lx.err(
                    lx.pos,
                    format!("unexpected text after the value of '{name}'"),
                ))
            }
        }
        out.insert(name, Setting { value, offset });
    }
    Ok(out)
}

struct Cfg<'a> {
    file: &'a str,
    text: &'a [u8],
    map: HashMap<String, Setting>,
}

impl Cfg<'_> {
    fn err(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        let off = self.map.get(key).map_or(0, |s| s.offset);
        Error::at_byte(self.file, self.text, off, format!("{key}: {msg}"))
    }
    fn str(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.map.get(key).map(|s| &s.value) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(key, "expected a string")),
        }
    }
    fn int(&self, key: &str) -> Result<Option<u64>, Error> {
        match self.map.get(key).map(|s| &s.value) {
            None => Ok(None),
            Some(Value::Int(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| self.err(key, "must not be negative")),
            Some(Value::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.err(key, format!("expected a number, found '{s}'"))),
            Some(Value::List(_)) => Err(self.err(key, "expected a number, found a list")),
        }
    }
    /// A list of strings with each item's byte offset (a lone string counts as a list of one).
    fn list(&self, key: &str) -> Result<Vec<(String, usize)>, Error> {
        match self.map.get(key) {
            None => Ok(Vec::new()),
            Some(Setting {
                value: Value::Str(s),
                offset,
            }) => Ok(vec![(s.clone(), *offset)]),
            Some(Setting {
                value: Value::List(items),
                ..
            }) => items
                .iter()
                .map(|(v, at)| match v {
                    Value::Str(s) => Ok((s.clone(), *at)),
                    _ => Err(Error::at_byte(
                        self.file,
                        self.text,
                        *at,
                        format!("{key}: items must be strings"),
                    )),
                })
                .collect(),
            Some(_) => Err(self.err(key, "expected a list of strings")),
        }
    }
}

/// Bus of a Xen virtual device name, as libvirt reads it: `xvd*` (and every disk of a PV
/// guest) on the Xen bus, `sd*` on SCSI, `hd*` on IDE.
fn bus_of(vdev: &str, hvm: bool) -> Bus {
    if vdev.starts_with("xvd") || !hvm {
        Bus::Xen
    } else if vdev.starts_with("sd") {
        Bus::Scsi
    } else {
        Bus::Ide
    }
}

const FORMATS: &[&str] = &["raw", "qcow", "qcow2", "vhd", "qed"];

/// One `disk=` item, positional (`[target,][format,]vdev[:cdrom],access`) or key=value
/// (xl-disk-configuration.txt); `target=` takes the rest of the item, commas included.
fn parse_disk(spec: &str, hvm: bool) -> Result<Disk, String> {
    let mut positional: Vec<String> = Vec::new();
    let mut d = Disk::default();
    let mut rest = spec;
    let mut access = None;
    loop {
        let (tok, more) = if rest.starts_with("target=") {
            (rest, None)
        } else {
            match rest.split_once(',') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            }
        };
        let tok = tok.trim();
        match tok.split_once('=') {
            Some(("target", v)) => d.source = Some(v.to_string()),
            Some(("format", v)) => d.format = Some(v.to_string()),
            Some(("vdev", v)) => d.target = Some(v.to_string()),
            Some(("access", v)) => access = Some(v.to_string()),
            Some(("devtype", v)) => {
                if v == "cdrom" {
                    d.device = DeviceKind::Cdrom
                }
            }
            Some(("cdrom", _)) => d.device = DeviceKind::Cdrom,
            Some((
                "backendtype" | "backend" | "script" | "discard" | "no-discard" | "direct-io-safe"
                | "trusted" | "untrusted" | "specification" | "colo-host" | "colo-port"
                | "colo-export" | "active-disk" | "hidden-disk",
                _,
            )) => {}
            Some((k, _)) => return Err(format!("unknown disk parameter '{k}'")),
            None => positional.push(tok.to_string()),
        }
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
    // Empty trailing positions (`path,,hdb,,`) say nothing.
    while positional.len() > 4 && positional.last().is_some_and(|p| p.is_empty()) {
        positional.pop();
    }
    let mut pos = positional.into_iter();
    let n = pos.len();
    let (target, format, vdev, acc) = match n {
        0 => (None, None, None, None),
        1 => (None, None, pos.next(), None),
        2 => (None, None, pos.next(), pos.next()),
        3 => (pos.next(), None, pos.next(), pos.next()),
        4 => (pos.next(), pos.next(), pos.next(), pos.next()),
        _ => return Err(format!("{n} positional parameters, at most 4 are known")),
    };
    if let Some(t) = target.filter(|t| !t.is_empty()) {
        // Legacy prefixes: phy:, file:, tap:aio:, tap:qcow2:, tap2:tapdisk:aio:, qcow2: ...
        let mut t = t.as_str();
        while let Some((p, r)) = t.split_once(':') {
            match p {
                "phy" | "file" | "tap" | "tap2" | "tapdisk" | "aio" => t = r,
                f if FORMATS.contains(&f) => {
                    d.format.get_or_insert_with(|| f.to_string());
                    t = r;
                }
                _ => break,
            }
        }
        d.source = Some(t.to_string());
    }
    if let Some(f) = format.filter(|f| !f.is_empty()) {
        if !FORMATS.contains(&f.as_str()) {
            return Err(format!("unknown disk format '{f}'"));
        }
        d.format = Some(f);
    }
    if let Some(v) = vdev.filter(|v| !v.is_empty()) {
        match v.split_once(':') {
            Some((v, "cdrom")) => {
                d.device = DeviceKind::Cdrom;
                d.target = Some(v.to_string());
            }
            Some((_, kind)) => return Err(format!("unknown device kind ':{kind}'")),
            None => d.target = Some(v),
        }
    }
    if let Some(a) = acc.filter(|a| !a.is_empty()) {
        access = Some(a);
    }
    d.readonly = match access.as_deref() {
        None | Some("w" | "rw" | "w!") => false,
        Some("r" | "ro") => true,
        Some(a) => return Err(format!("unknown access '{a}' (r, ro, w, rw)")),
    };
    let Some(vdev) = d.target.clone() else {
        return Err("no virtual device (vdev) named".into());
    };
    d.bus = Some(bus_of(&vdev, hvm));
    Ok(d)
}

/// One `vif=` item: comma-separated key=value pairs.
fn parse_vif(spec: &str) -> Result<Nic, String> {
    let mut nic = Nic::default();
    let mut kind = None;
    let mut script = None;
    for tok in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (k, v) = tok
            .split_once('=')
            .ok_or_else(|| format!("'{tok}' is not key=value"))?;
        match k {
            "mac" => {
                nic.mac =
                    Some(canonical_mac(v).ok_or_else(|| format!("'{v}' is not a MAC address"))?)
            }
            "bridge" => nic.bridge = Some(v.to_string()),
            "model" => nic.model = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            "script" => script = Some(v.to_string()),
            _ => {}
        }
    }
    // A PV interface (type=vif, the old name netfront) is Xen's netfront model.
    if nic.model.is_none() && matches!(kind.as_deref(), Some("vif" | "netfront")) {
        nic.model = Some("netfront".into());
    }
    // Open vSwitch writes the VLAN into the bridge name: `br.TAG` or `br:TAG1:TAG2` (trunk).
    if script.as_deref().is_some_and(|s| s.contains("openvswitch")) {
        if let Some(b) = &mut nic.bridge {
            if let Some(i) = b.find(['.', ':']) {
                b.truncate(i);
            }
        }
    }
    Ok(nic)
}

/// Parse an xl or xm configuration into the model.
pub fn parse(file: &str, text: &[u8]) -> Result<Source, Error> {
    let cfg = Cfg {
        file,
        text,
        map: settings(file, text)?,
    };
    let mut src = Source {
        input: "xen".into(),
        hypervisor: Some("xen".into()),
        ..Source::default()
    };
    src.name = cfg.str("name")?.map(str::to_string);
    if let Some(u) = cfg.str("uuid")? {
        src.uuid = Some(canonical_uuid(u).ok_or_else(|| cfg.err("uuid", "not a UUID"))?);
    }
    let mib = |key: &str| -> Result<Option<u64>, Error> {
        cfg.int(key)?
            .map(|m| {
                m.checked_mul(1 << 20)
                    .ok_or_else(|| cfg.err(key, "too large"))
            })
            .transpose()
    };
    let memory = mib("memory")?;
    let maxmem = mib("maxmem")?;
    src.memory_bytes = match (memory, maxmem) {
        (Some(m), Some(x)) => Some(m.max(x)),
        (m, x) => m.or(x),
    };
    src.current_memory_bytes = memory;
    let vcpus = cfg.int("vcpus")?;
    let maxvcpus = cfg.int("maxvcpus")?;
    if let Some(n) = maxvcpus.or(vcpus) {
        src.vcpus = Some(u32::try_from(n).map_err(|_| cfg.err("vcpus", "too large"))?);
    }
    let builder = cfg.str("builder")?;
    let type_ = cfg.str("type")?;
    let kernel = cfg.str("kernel")?;
    let hvm = builder == Some("hvm")
        || type_ == Some("hvm")
        || kernel.is_some_and(|k| k.ends_with("/hvmloader"));
    if hvm {
        src.firmware = Some(match cfg.str("bios")? {
            Some("ovmf") => Firmware::Efi,
            _ => Firmware::Bios,
        });
    } else {
        src.pv = Some(PvBoot {
            bootloader: cfg.str("bootloader")?.map(str::to_string),
            kernel: kernel.map(str::to_string),
            ramdisk: cfg.str("ramdisk")?.map(str::to_string),
            cmdline: match (cfg.str("cmdline")?, cfg.str("root")?, cfg.str("extra")?) {
                (Some(c), _, _) => Some(c.to_string()),
                (None, Some(r), Some(e)) => Some(format!("root={r} {e}")),
                (None, Some(r), None) => Some(format!("root={r}")),
                (None, None, e) => e.map(str::to_string),
            },
        });
    }
    for (spec, at) in cfg.list("disk")? {
        let d = parse_disk(&spec, hvm)
            .map_err(|e| Error::at_byte(file, text, at, format!("disk '{spec}': {e}")))?;
        src.disks.push(d);
    }
    for (spec, at) in cfg.list("vif")? {
        let n = parse_vif(&spec)
            .map_err(|e| Error::at_byte(file, text, at, format!("vif '{spec}': {e}")))?;
        src.nics.push(n);
    }
    if cfg.int("vnc")? == Some(1) {
        src.graphics = Some("vnc".into());
    } else if cfg.int("sdl")? == Some(1) {
        src.graphics = Some("sdl".into());
    }
    for (spec, _) in cfg.list("vfb")? {
        if spec
            .split(',')
            .any(|t| t.trim() == "type=vnc" || t.trim() == "vnc=1")
        {
            src.graphics = Some("vnc".into());
        }
    }
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        let t = b"# c\nname = 'a' ; memory = 0x10\ndisk = [ \"phy:/dev/vg/lv,xvda,w\",\n  '''file:/x,hdc:cdrom,r''', ]\nextra = \"a \\\nb\"\n";
        let s = parse("x.cfg", t).unwrap();
        assert_eq!(s.name.as_deref(), Some("a"));
        assert_eq!(s.memory_bytes, Some(16 << 20));
        assert_eq!(s.disks.len(), 2);
        assert_eq!(s.disks[0].source.as_deref(), Some("/dev/vg/lv"));
        assert_eq!(s.disks[1].device, DeviceKind::Cdrom);
        assert_eq!(s.pv.unwrap().cmdline.as_deref(), Some("a b"));
    }

    #[test]
    fn disk_forms() {
        let d = parse_disk("format=raw,vdev=hda,access=rw,target=/a,b", true).unwrap();
        assert_eq!(d.source.as_deref(), Some("/a,b"));
        assert_eq!(d.bus, Some(Bus::Ide));
        let d = parse_disk("tap:qcow2:/img,xvda,w", false).unwrap();
        assert_eq!(
            (d.source.as_deref(), d.format.as_deref()),
            (Some("/img"), Some("qcow2"))
        );
        assert!(parse_disk("/a,raw,xvda,w,bogus=1", true).is_err());
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("x.cfg", b"name = 'a'\nmemory = [1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = parse("x.cfg", b"name = 'a'\n  vcpus = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 11), "{e}");
        let e = parse("x.cfg", b"disk = [ 'phy:/a,xvda,q' ]").unwrap_err();
        assert_eq!((e.line, e.column), (1, 10), "{e}");
    }
}
