//! The VMDK text descriptor (VMware "Virtual Disk Format 5.0", section "The Descriptor File"):
//! `key=value` lines (header and `ddb.*` disk database), extent lines, comments. It is either a
//! small file of its own or embedded in the first sectors of a monolithic sparse extent.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while1};
use nom::character::complete::{digit1, space0, space1};
use nom::combinator::{all_consuming, map_res, opt};
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

/// Largest descriptor read: VMware writes a few hundred bytes (20 sectors reserved when embedded);
/// anything bigger is not a descriptor, and refusing it bounds the memory a hostile file costs.
pub(crate) const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;
/// Most extent lines: VMware's 2 GiB split gives 1024 lines per 2 TiB, so 10^4 covers a 20 TiB
/// split disk, and the bound caps the files and tables one descriptor can make us open.
pub(crate) const MAX_EXTENTS: usize = 10_000;
/// A parentCID of all ones means "no parent".
pub(crate) const CID_NONE: u32 = 0xffff_ffff;

/// Access mode of an extent line. ferry only reads, so all three are read alike. The variants
/// are the spec's RW, RDONLY and NOACCESS.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

/// The extent types of section "Extent Descriptions".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentType {
    Sparse,
    Flat,
    Zero,
    Vmfs,
    VmfsSparse,
    VmfsRdm,
    SeSparse,
}

impl ExtentType {
    pub fn name(self) -> &'static str {
        match self {
            ExtentType::Sparse => "SPARSE",
            ExtentType::Flat => "FLAT",
            ExtentType::Zero => "ZERO",
            ExtentType::Vmfs => "VMFS",
            ExtentType::VmfsSparse => "VMFSSPARSE",
            ExtentType::VmfsRdm => "VMFSRDM",
            ExtentType::SeSparse => "SESPARSE",
        }
    }
}

/// One extent line: `RW 4192256 SPARSE "disk-s001.vmdk"` or `RW 2048 FLAT "disk-flat.vmdk" 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    pub kind: ExtentType,
    pub file: Option<String>,
    /// Start of the extent in `file`, in sectors (FLAT/VMFS only).
    pub offset: u64,
}

/// A parsed descriptor. Unknown keys are kept in `other` so `info` can show them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub version: Option<u32>,
    pub cid: Option<u32>,
    /// None when absent or `ffffffff`.
    pub parent_cid: Option<u32>,
    pub create_type: Option<String>,
    pub parent_file_name_hint: Option<String>,
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` keys (geometry, adapterType, virtualHWVersion, uuid), in file order.
    pub ddb: Vec<(String, String)>,
    pub other: Vec<(String, String)>,
}

/// Why a descriptor was refused, with the byte offset of the offending line in the descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub offset: usize,
    pub detail: String,
}

impl Descriptor {
    /// Parses descriptor text. Stops at the first NUL (embedded descriptors are padded with
    /// zeros); accepts LF and CRLF line ends; non-UTF-8 bytes (descriptors say
    /// `encoding="windows-1252"`) are replaced rather than refused.
    pub fn parse(bytes: &[u8]) -> Result<Descriptor, Error> {
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(n) => &bytes[..n],
            None => bytes,
        };
        if bytes.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error {
                offset: 0,
                detail: format!(
                    "descriptor is {} bytes, more than the {MAX_DESCRIPTOR_BYTES} ferry accepts",
                    bytes.len()
                ),
            });
        }
        let text = String::from_utf8_lossy(bytes);
        let mut d = Descriptor::default();
        let mut line_start = 0usize;
        for raw in text.split('\n') {
            let offset = line_start;
            line_start = line_start.saturating_add(raw.len()).saturating_add(1);
            let line = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: String| Error { offset, detail };
            if let Ok((_, e)) = extent_line(line) {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(err(format!("more than {MAX_EXTENTS} extent lines")));
                }
                d.extents.push(e);
                continue;
            }
            if looks_like_extent(line) {
                return Err(err(format!("invalid extent line '{}'", shorten(line))));
            }
            let (key, value) = match key_value(line) {
                Ok((_, kv)) => kv,
                Err(_) => return Err(err(format!("not a descriptor line: '{}'", shorten(line)))),
            };
            d.set(key, value).map_err(err)?;
        }
        Ok(d)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let hex = |v: &str| {
            u32::from_str_radix(v, 16)
                .map_err(|_| format!("{key} '{}' is not a hex number", shorten(v)))
        };
        match key {
            "version" => {
                self.version = Some(
                    value
                        .parse()
                        .map_err(|_| format!("version '{}' is not a number", shorten(value)))?,
                )
            }
            "CID" => self.cid = Some(hex(value)?),
            "parentCID" => {
                let v = hex(value)?;
                self.parent_cid = (v != CID_NONE).then_some(v);
            }
            "createType" => self.create_type = Some(value.to_string()),
            "parentFileNameHint" => self.parent_file_name_hint = Some(value.to_string()),
            k if k.starts_with("ddb.") => self.ddb.push((k.to_string(), value.to_string())),
            k => self.other.push((k.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// The value of disk database key `ddb.<name>`.
    pub fn ddb(&self, name: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.strip_prefix("ddb.") == Some(name))
            .map(|(_, v)| v.as_str())
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

fn looks_like_extent(line: &str) -> bool {
    ["RW ", "RDONLY ", "NOACCESS "]
        .iter()
        .any(|p| line.starts_with(p))
}

fn quoted(i: &str) -> IResult<&str, &str> {
    delimited(tag("\""), take_till(|c| c == '"'), tag("\"")).parse(i)
}

fn number(i: &str) -> IResult<&str, u64> {
    map_res(digit1, str::parse::<u64>).parse(i)
}

fn extent_line(i: &str) -> IResult<&str, ExtentLine> {
    let access = alt((
        tag("RW").map(|_| Access::ReadWrite),
        tag("RDONLY").map(|_| Access::ReadOnly),
        tag("NOACCESS").map(|_| Access::NoAccess),
    ));
    let kind = alt((
        tag("SPARSE").map(|_| ExtentType::Sparse),
        tag("FLAT").map(|_| ExtentType::Flat),
        tag("ZERO").map(|_| ExtentType::Zero),
        tag("VMFSSPARSE").map(|_| ExtentType::VmfsSparse),
        tag("VMFSRDM").map(|_| ExtentType::VmfsRdm),
        tag("VMFSRAW").map(|_| ExtentType::VmfsRdm),
        tag("VMFS").map(|_| ExtentType::Vmfs),
        tag("SESPARSE").map(|_| ExtentType::SeSparse),
    ));
    all_consuming((
        access,
        preceded(space1, number),
        preceded(space1, kind),
        opt(preceded(space1, quoted)),
        opt(preceded(space1, number)),
        space0,
    ))
    .map(|(access, sectors, kind, file, offset, _)| ExtentLine {
        access,
        sectors,
        kind,
        file: file.map(str::to_string),
        offset: offset.unwrap_or(0),
    })
    .parse(i)
}

fn key_value(i: &str) -> IResult<&str, (&str, &str)> {
    let key = take_while1(|c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let value = alt((
        all_consuming(delimited(space0, quoted, space0)),
        all_consuming(take_till(|_| false)).map(str::trim),
    ));
    (key, delimited(space0, tag("="), space0), value)
        .map(|(k, _, v)| (k, v))
        .parse(i)
}

/// True if `head` (the first bytes of a file) is a VMDK text descriptor: the usual header comment,
/// or a `createType=` line among the first lines of plain text.
pub(crate) fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(&head[..head.len().min(1024)]) {
        Ok(t) => t,
        Err(e) => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(t) => t,
            Err(_) => return false,
        },
    };
    if text.trim_start().starts_with("# Disk DescriptorFile") {
        return true;
    }
    text.lines().take(32).any(|l| {
        l.trim_start()
            .to_ascii_lowercase()
            .starts_with("createtype")
    }) && text
        .lines()
        .take(32)
        .any(|l| l.trim_start().starts_with("version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_descriptor() {
        let text = "# Disk DescriptorFile\r\nversion=1\r\nCID=12ab34cd\r\nparentCID=ffffffff\r\n\
            createType=\"twoGbMaxExtentSparse\"\r\n\r\n# Extent description\r\n\
            RW 4192256 SPARSE \"d-s001.vmdk\"\r\nRDONLY 100 FLAT \"d f.vmdk\" 7\r\nNOACCESS 5 ZERO\r\n\
            ddb.adapterType = \"ide\"\r\nddb.geometry.cylinders = \"16383\"\r\n";
        let d = Descriptor::parse(text.as_bytes()).unwrap();
        assert_eq!(d.version, Some(1));
        assert_eq!(d.cid, Some(0x12ab_34cd));
        assert_eq!(d.parent_cid, None);
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[1].file.as_deref(), Some("d f.vmdk"));
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.ddb("adapterType"), Some("ide"));
    }

    #[test]
    fn refuses_garbage_and_bad_extents() {
        assert!(Descriptor::parse(b"version=1\nhello world\n").is_err());
        assert!(Descriptor::parse(b"RW 10 BOGUS \"x\"\n").is_err());
        assert!(Descriptor::parse(b"RW -1 FLAT \"x\" 0\n").is_err());
        assert!(Descriptor::parse(b"CID=xyz\n").is_err());
        let many = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        let e = Descriptor::parse(many.as_bytes()).unwrap_err();
        assert!(e.detail.contains("extent lines"));
    }
}
