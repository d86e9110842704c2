//! /etc/fstab, read the way util-linux's libmount reads it (fstab(5); libmount
//! `mnt_parse_table_line`): blank lines and lines whose first non-blank character is `#` are
//! skipped; fields are separated by spaces and tabs; each field has `\ooo` octal escapes
//! decoded (`\040` is a space); source, mountpoint and type are required, options, freq and
//! passno optional (0 when absent); anything after passno is ignored; one trailing `\r` is
//! dropped. A line libmount would refuse is skipped with a warning naming it, never a failure:
//! a guest's fstab is untrusted input and one bad line must not hide the others.

use serde::{Deserialize, Serialize};

/// More entries than any real fstab has; past this the rest is ignored (with a warning), so
/// a huge or hostile file costs bounded memory.
pub const MAX_ENTRIES: usize = 10_000;

/// Warnings kept per file; the rest are counted in one last warning.
pub const MAX_WARNINGS: usize = 100;

/// One mount line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    /// The source (fs_spec): a device, `UUID=…`, a remote share, `none`…
    pub spec: String,
    /// The mountpoint (fs_file), or `swap`/`none` for swap.
    pub file: String,
    /// The filesystem type (fs_vfstype).
    pub vfstype: String,
    /// The options (fs_mntops), split at commas outside double quotes; empty items dropped.
    pub options: Vec<String>,
    pub freq: u32,
    pub passno: u32,
}

/// A parsed fstab: the entries in file order and what was wrong with the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fstab {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

/// Filesystem types that have no device: kernel and memory filesystems.
const VIRTUAL_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "ramfs",
    "devpts",
    "devtmpfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "hugetlbfs",
    "mqueue",
    "pstore",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "efivarfs",
    "bpf",
    "autofs",
    "rpc_pipefs",
    "nfsd",
    "usbfs",
    "usbdevfs",
    "selinuxfs",
    "xenfs",
    "none",
];

/// Filesystem types whose source is on another machine.
const NETWORK_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smbfs",
    "smb3",
    "ncpfs",
    "afs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "sshfs",
    "9p",
    "davfs",
    "lustre",
];

impl Entry {
    pub fn is_swap(&self) -> bool {
        self.vfstype == "swap"
    }

    /// A bind mount (`bind`/`rbind`): its source is a directory of the tree, not a device.
    pub fn is_bind(&self) -> bool {
        self.options.iter().any(|o| o == "bind" || o == "rbind")
    }

    /// Not mounted at boot.
    pub fn is_noauto(&self) -> bool {
        self.options.iter().any(|o| o == "noauto")
    }

    /// A kernel or memory filesystem (proc, sysfs, tmpfs, cgroup…): nothing on a disk.
    pub fn is_virtual(&self) -> bool {
        let t = self.vfstype.as_str();
        VIRTUAL_TYPES.contains(&t) || t.starts_with("cgroup") || self.spec == "none"
    }

    /// A remote filesystem (NFS, CIFS…), by its type or by the shape of its source
    /// (`host:/path`, `//server/share`).
    pub fn is_network(&self) -> bool {
        let t = self.vfstype.as_str();
        if NETWORK_TYPES.contains(&t) {
            return true;
        }
        let s = self.spec.as_str();
        s.starts_with("//")
            || (!s.starts_with('/')
                && !s.contains('=')
                && s.split_once(":/").is_some_and(|(host, _)| !host.is_empty()))
    }

    /// A filesystem on one of the guest's own block devices: what a device map resolves and
    /// a guest tree mounts.
    pub fn is_local(&self) -> bool {
        !self.is_swap() && !self.is_bind() && !self.is_virtual() && !self.is_network()
    }

    /// The source as a [`Spec`].
    pub fn source(&self) -> Spec {
        Spec::parse(&self.spec)
    }
}

/// Decodes libmount's mangling: `\` and three octal digits is one byte (the value taken
/// modulo 256, as C's char conversion does); any other backslash stays.
pub fn unmangle(field: &[u8]) -> Vec<u8> {
    let oct = |b: u8| b.checked_sub(b'0').filter(|d| *d < 8);
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'\\' {
            if let Some(&[a, b, c]) = tail.first_chunk::<3>() {
                if let (Some(a), Some(b), Some(c)) = (oct(a), oct(b), oct(c)) {
                    // Three octal digits: up to 0o777; the byte is the value modulo 256.
                    out.push(a.wrapping_shl(6) | b << 3 | c);
                    rest = tail.get(3..).unwrap_or_default();
                    continue;
                }
            }
        }
        out.push(first);
        rest = tail;
    }
    out
}

/// Splits fs_mntops at commas that are not inside double quotes (`context="a,b"` is one).
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A freq or passno field: a decimal number (strtol's optional sign accepted), as libmount.
fn number(field: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What is wrong with one line, for the warning.
enum Error {
    MissingField(&'static str),
    BadNumber(&'static str, String),
}

struct Warnings {
    list: Vec<String>,
    dropped: usize,
}

impl Warnings {
    fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("{} more warnings not shown", self.dropped));
        }
        self.list
    }
}

fn text(field: &[u8], line: usize, what: &str, warnings: &mut Warnings) -> String {
    let raw = unmangle(field);
    match String::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!(
                "line {line}: {what} is not UTF-8; invalid bytes replaced"
            ));
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    }
}

fn parse_line(fields: &[&[u8]], line: usize, warnings: &mut Warnings) -> Result<Entry, Error> {
    let need = |i: usize, name| fields.get(i).copied().ok_or(Error::MissingField(name));
    let spec = need(0, "source")?;
    let file = need(1, "mountpoint")?;
    let vfstype = need(2, "filesystem type")?;
    let num = |i: usize, name| match fields.get(i) {
        None => Ok(0),
        Some(f) => number(f).ok_or_else(|| {
            Error::BadNumber(name, String::from_utf8_lossy(f).chars().take(40).collect())
        }),
    };
    let freq = num(4, "freq")?;
    let passno = num(5, "passno")?;
    let options = fields
        .get(3)
        .map(|o| split_options(&text(o, line, "options", warnings)))
        .unwrap_or_default();
    Ok(Entry {
        line,
        spec: text(spec, line, "source", warnings),
        file: text(file, line, "mountpoint", warnings),
        vfstype: text(vfstype, line, "filesystem type", warnings),
        options,
        freq,
        passno,
    })
}

/// Parses an fstab. Never fails: lines that cannot be read are warnings naming their number.
pub fn parse(data: &[u8]) -> Fstab {
    let mut entries = Vec::new();
    let mut warnings = Warnings {
        list: Vec::new(),
        dropped: 0,
    };
    for (line, raw) in (1usize..).zip(data.split(|b| *b == b'\n')) {
        let mut l = raw.strip_suffix(b"\r").unwrap_or(raw);
        // libmount reads C strings: a NUL ends the line.
        if let Some(nul) = l.iter().position(|b| *b == 0) {
            warnings.push(format!(
                "line {line}: NUL byte at column {}; the rest of the line is ignored",
                nul.saturating_add(1)
            ));
            l = &l[..nul];
        }
        let fields: Vec<&[u8]> = l
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|f| !f.is_empty())
            .collect();
        match fields.first() {
            None => continue,
            Some(f) if f.starts_with(b"#") => continue,
            Some(_) => {}
        }
        if entries.len() == MAX_ENTRIES {
            warnings.push(format!(
                "line {line}: more than {MAX_ENTRIES} entries; the rest of the file is ignored"
            ));
            break;
        }
        match parse_line(&fields, line, &mut warnings) {
            Ok(e) => entries.push(e),
            Err(Error::MissingField(name)) => {
                warnings.push(format!("line {line}: no {name} field; line ignored"))
            }
            Err(Error::BadNumber(name, v)) => warnings.push(format!(
                "line {line}: {name} `{v}` is not a number; line ignored"
            )),
        }
    }
    Fstab {
        entries,
        warnings: warnings.finish(),
    }
}

impl Fstab {
    /// The entry mounted at `/` (the last one, as mount(8) would use).
    pub fn root(&self) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.file == "/" && !e.is_swap())
    }
}

/// A filesystem source as the guest names it, reduced to what identifies the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Spec {
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// Another device path (`/dev/sda1`, `/dev/mapper/vg-root`, `/dev/disk/by-id/…`).
    Path(String),
    /// Anything else: `none`, `tmpfs`, `server:/export`, an unknown `TAG=value`.
    Other(String),
}

/// Decodes udev's `\xNN` escapes in /dev/disk/by-* link names (udev encodes `/`, space and
/// other unsafe bytes that way: `by-label/my\x2fdisk`). Malformed escapes stay as written.
pub fn udev_unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if let Some((b"x", after)) = tail.split_first_chunk::<1>().filter(|_| first == b'\\') {
            let hex = after.get(..2).and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                rest = after.get(2..).unwrap_or_default();
                continue;
            }
        }
        out.push(first);
        rest = tail;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Spec {
    /// Classifies an fstab source. Tags follow libblkid's `blkid_parse_tag_string`: the value
    /// may be in double or single quotes (everything up to the last matching quote); a tag
    /// with an unclosed quote is not a tag.
    pub fn parse(s: &str) -> Spec {
        if let Some((tag, value)) = s.split_once('=') {
            let value = match value.chars().next() {
                Some(q @ ('"' | '\'')) => value
                    .get(1..)
                    .and_then(|v| v.rfind(q).and_then(|end| v.get(..end))),
                _ => Some(value),
            };
            if let Some(v) = value {
                let v = v.to_string();
                match tag {
                    "UUID" => return Spec::Uuid(v),
                    "LABEL" => return Spec::Label(v),
                    "PARTUUID" => return Spec::PartUuid(v),
                    "PARTLABEL" => return Spec::PartLabel(v),
                    _ => {}
                }
            }
        }
        if let Some(rest) = s.strip_prefix("/dev/disk/") {
            let (dir, name) = rest.split_once('/').unwrap_or((rest, ""));
            if !name.is_empty() && !name.contains('/') {
                let v = udev_unescape(name);
                match dir {
                    "by-uuid" => return Spec::Uuid(v),
                    "by-label" => return Spec::Label(v),
                    "by-partuuid" => return Spec::PartUuid(v),
                    "by-partlabel" => return Spec::PartLabel(v),
                    _ => {}
                }
            }
        }
        if s.starts_with("/dev/") {
            Spec::Path(s.to_string())
        } else {
            Spec::Other(s.to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_libmount() {
        assert_eq!(unmangle(br"/mnt/my\040disk"), b"/mnt/my disk");
        assert_eq!(unmangle(br"a\011b\134c"), b"a\tb\\c");
        // Not three octal digits: kept as written.
        assert_eq!(unmangle(br"a\04"), br"a\04");
        assert_eq!(unmangle(br"a\089"), br"a\089");
        // \777 is 511, truncated to a byte as C does.
        assert_eq!(unmangle(br"\777"), [0xff]);
    }

    #[test]
    fn lines_fields_and_defaults() {
        let f = parse(
            b"# comment\n\n   \t# indented comment\r\nUUID=1 / ext4 defaults 1 1\r\n\
              /dev/sdb1\t/mnt/a\\040b\txfs\n\
              tmpfs /tmp tmpfs rw,,nosuid\n\
              LABEL=x /x ext4 defaults 0\n\
              /dev/sdc1 /y\n\
              /dev/sdd1 /z ext4 defaults one 2\n\
              /dev/sde1 /w ext4 context=\"a,b\",ro 0 2 extra\n",
        );
        let e = &f.entries;
        assert_eq!(e.len(), 5, "{f:?}");
        assert_eq!(
            e[0],
            Entry {
                line: 4,
                spec: "UUID=1".into(),
                file: "/".into(),
                vfstype: "ext4".into(),
                options: vec!["defaults".into()],
                freq: 1,
                passno: 1
            }
        );
        assert_eq!((e[1].file.as_str(), e[1].options.len()), ("/mnt/a b", 0));
        assert_eq!(e[2].options, ["rw", "nosuid"]);
        assert_eq!((e[3].freq, e[3].passno), (0, 0));
        assert_eq!(e[4].options, ["context=\"a,b\"", "ro"]);
        assert_eq!(e[4].line, 10);
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[0].starts_with("line 8:"));
        assert!(f.warnings[1].starts_with("line 9:") && f.warnings[1].contains("freq"));
    }

    #[test]
    fn kinds() {
        let f = parse(
            b"proc /proc proc defaults 0 0\n/dev/sda2 none swap sw 0 0\n\
              /srv/a /b none bind 0 0\nserver:/export /n nfs defaults 0 0\n\
              //srv/share /s cifs guest 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
              /dev/sr0 /media/cdrom iso9660 noauto,ro 0 0\nUUID=a /h ext4 defaults 0 2\n",
        );
        let k: Vec<(bool, bool, bool, bool, bool, bool)> = f
            .entries
            .iter()
            .map(|e| {
                (
                    e.is_swap(),
                    e.is_bind(),
                    e.is_noauto(),
                    e.is_virtual(),
                    e.is_network(),
                    e.is_local(),
                )
            })
            .collect();
        assert_eq!(
            k,
            [
                (false, false, false, true, false, false),
                (true, false, false, false, false, false),
                (false, true, false, true, false, false),
                (false, false, false, false, true, false),
                (false, false, false, false, true, false),
                (false, false, false, true, false, false),
                (false, false, true, false, false, true),
                (false, false, false, false, false, true),
            ]
        );
    }

    #[test]
    fn specs() {
        use Spec::*;
        let cases = [
            ("UUID=0d1e-2f3a", Uuid("0d1e-2f3a".into())),
            ("UUID=\"0d1e\"", Uuid("0d1e".into())),
            ("LABEL='my root'", Label("my root".into())),
            ("LABEL=\"unclosed", Other("LABEL=\"unclosed".into())),
            ("PARTUUID=5e1f-01", PartUuid("5e1f-01".into())),
            ("PARTLABEL=EFI", PartLabel("EFI".into())),
            ("/dev/disk/by-uuid/abcd", Uuid("abcd".into())),
            (
                "/dev/disk/by-label/my\\x2fdisk\\x20x",
                Label("my/disk x".into()),
            ),
            ("/dev/disk/by-partuuid/5e1f-01", PartUuid("5e1f-01".into())),
            ("/dev/disk/by-partlabel/root", PartLabel("root".into())),
            (
                "/dev/disk/by-id/ata-X-part1",
                Path("/dev/disk/by-id/ata-X-part1".into()),
            ),
            (
                "/dev/VolGroup00/LogVol00",
                Path("/dev/VolGroup00/LogVol00".into()),
            ),
            ("uuid=abcd", Other("uuid=abcd".into())),
            ("ID=x", Other("ID=x".into())),
            ("tmpfs", Other("tmpfs".into())),
        ];
        for (s, want) in cases {
            assert_eq!(Spec::parse(s), want, "{s}");
        }
    }

    #[test]
    fn junk_and_caps() {
        let mut big = Vec::new();
        for i in 0..100_000 {
            big.extend_from_slice(format!("/dev/sda{i} /m{i} ext4 defaults 0 0\n").as_bytes());
        }
        let f = parse(&big);
        assert_eq!(f.entries.len(), MAX_ENTRIES);
        assert_eq!(f.warnings.len(), 1);
        assert!(f.warnings[0].starts_with("line 10001:"));

        let junk: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let f = parse(&junk);
        assert!(f.warnings.len() <= MAX_WARNINGS + 1);

        let f = parse(b"/dev/\xffx / ext4 defaults 0 0\n/dev/a\0junk /b ext4\n");
        assert_eq!(f.entries[0].spec, "/dev/\u{fffd}x");
        assert!(f.warnings[0].contains("line 1") && f.warnings[0].contains("UTF-8"));
        assert!(f.warnings[1].contains("line 2") && f.warnings[1].contains("NUL"));
        assert_eq!(f.entries.len(), 1);
    }
}
