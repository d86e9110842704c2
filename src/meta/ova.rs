//! OVA packages (DSP0243 §5.3): a tar archive holding an OVF descriptor first, an optional
//! manifest (`.mf`, one `ALGO(name)= hex` line per file) and the disk images. Also accepted:
//! a directory holding the same files, or the `.ovf` file itself with its disks beside it.
//!
//! The tar is read here (POSIX ustar with pax and GNU long names, every header checked and
//! every extension bounded) rather than with a general tar crate, which reads extension
//! headers of any declared size into memory.
//!
//! Disks are not extracted: each is read in place, as the byte range its tar member holds
//! (`block::open_member`), the way virt-v2v hands qemu a `raw` window of the archive. A
//! member stored gzip-compressed (`ovf:compression="gzip"`) is reported as such, and read in
//! place too, through an index of its deflate stream (`block::gzip`), where virt-v2v
//! decompresses it to a temporary file.

use super::model::Source;
use super::ovf::{self, Ovf};
use super::Error;
use sha1::Digest;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Most members read from the archive: an OVA holds a handful of files; this bounds the
/// listing of a file that only looks like a tar.
pub const MAX_MEMBERS: usize = 10_000;
/// Largest descriptor or manifest read into memory (real ones are tens of KiB).
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

/// One regular file of the archive: where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name in the archive, without a leading `./`.
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Where a disk image of the package is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskFile {
    /// A member of the tar, read in place.
    Member { archive: PathBuf, member: Member },
    /// A file on the host (directory form, or an `.ovf` with its files beside it).
    Path(PathBuf),
}

/// A package opened and its descriptor read.
#[derive(Debug, Clone)]
pub struct Ova {
    pub path: PathBuf,
    pub ovf: Ovf,
    /// For each hard disk of `ovf.source.disks`, in order: its image and whether it is stored
    /// gzip-compressed.
    pub disks: Vec<(DiskFile, bool)>,
    /// The manifest, if the package has one: (algorithm, file name, expected hex digest).
    pub manifest: Vec<(String, String, String)>,
    members: Option<Vec<Member>>,
    /// The directory the descriptor's `href`s are relative to (inside the archive or on the
    /// host).
    base: String,
    /// The host directory of a package that is not a tar: its files are read from there.
    dir: PathBuf,
    ovf_name: String,
}

fn err(file: &Path, m: impl Into<String>) -> Error {
    Error::at(&file.display().to_string(), 0, 0, m)
}

/// A tar header block (POSIX.1-2001 ustar, with pax and GNU extensions).
const BLOCK_LEN: usize = 512;
const BLOCK: u64 = crate::bytes::wide(BLOCK_LEN);
/// Largest pax extended header or GNU long name read: real ones hold a path or two.
pub const MAX_EXT_HEADER: u64 = 64 << 10;

/// An octal number field (NUL- or space-terminated), or GNU's base-256 form for big sizes
/// (the first byte's top bit set, the rest big-endian).
fn tar_number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let t: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&t).ok()?, 8).ok()
}

/// A NUL-terminated string field.
fn tar_string(f: &[u8]) -> String {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// The `path` and `size` records of a pax extended header (`LEN KEY=VALUE\n` each).
fn pax_records(data: &[u8]) -> (Option<String>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
        let Some((rec, next)) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .and_then(|l| rest.split_at_checked(l))
        else {
            break;
        };
        // What follows the length and its space; a length that ends within them is garbage.
        let Some(rec) = rec
            .get(sp..)
            .and_then(|r| r.get(1..))
            .filter(|r| !r.is_empty())
        else {
            break;
        };
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = rec.strip_prefix(b"size=") {
            size = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
        }
        rest = next;
    }
    (path, size)
}

/// Lists the regular files of the tar at `path` (ustar, pax and GNU headers; every header's
/// checksum and every size checked against the file, extension headers bounded).
pub fn members(path: &Path) -> Result<Vec<Member>, Error> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).map_err(|e| Error::io(&path.display().to_string(), e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(&path.display().to_string(), e))?
        .len();
    let bad = |at: u64, m: String| {
        err(
            path,
            format!("not a readable tar archive: {m} (at byte {at})"),
        )
    };
    let read = |buf: &mut [u8], at: u64| {
        f.read_exact_at(buf, at)
            .map_err(|e| bad(at, format!("cannot read: {e}")))
    };
    let mut out = Vec::new();
    let mut pos = 0u64;
    let (mut next_name, mut next_size): (Option<String>, Option<u64>) = (None, None);
    let mut h = [0u8; BLOCK_LEN];
    while let Some(data) = pos.checked_add(BLOCK).filter(|&d| d <= len) {
        read(&mut h, pos)?;
        if h.iter().all(|&b| b == 0) {
            break; // the end-of-archive blocks
        }
        let stored =
            tar_number(&h[148..156]).ok_or_else(|| bad(pos, "bad header checksum field".into()))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(bad(
                pos,
                format!("header checksum {stored}, computed {sum}"),
            ));
        }
        let mut size = tar_number(&h[124..136]).ok_or_else(|| bad(pos, "bad size field".into()))?;
        if let Some(s) = next_size.take() {
            size = s;
        }
        let end = data
            .checked_add(size)
            .filter(|&e| e <= len)
            .ok_or_else(|| {
                bad(
                    pos,
                    format!("a member of {size} bytes runs past the end of the file ({len} bytes)"),
                )
            })?;
        let ext = |what: &str| -> Result<Vec<u8>, Error> {
            let n = usize::try_from(size)
                .ok()
                .filter(|_| size <= MAX_EXT_HEADER)
                .ok_or_else(|| bad(pos, format!("{what} of {size} bytes")))?;
            let mut v = vec![0u8; n];
            read(&mut v, data)?;
            Ok(v)
        };
        match h[156] {
            b'x' => {
                let (p, s) = pax_records(&ext("pax header")?);
                next_name = p.or(next_name);
                next_size = s;
            }
            b'L' => next_name = Some(tar_string(&ext("GNU long name")?)),
            b'0' | 0 | b'7' => {
                if out.len() >= MAX_MEMBERS {
                    return Err(err(
                        path,
                        format!("more than {MAX_MEMBERS} files in the archive"),
                    ));
                }
                let name = next_name.take().unwrap_or_else(|| {
                    let name = tar_string(&h[0..100]);
                    let prefix = if &h[257..262] == b"ustar" {
                        tar_string(&h[345..500])
                    } else {
                        String::new()
                    };
                    if prefix.is_empty() {
                        name
                    } else {
                        format!("{prefix}/{name}")
                    }
                });
                out.push(Member {
                    name: name.trim_start_matches("./").to_string(),
                    offset: data,
                    size,
                });
            }
            _ => {
                next_name = None;
                next_size = None;
            }
        }
        pos = end
            .checked_next_multiple_of(BLOCK)
            .ok_or_else(|| bad(pos, format!("a member ends at byte {end}, past 2^64")))?;
    }
    if out.is_empty() && pos == 0 {
        return Err(bad(0, "no tar header".into()));
    }
    Ok(out)
}

/// A name the descriptor uses, joined to the directory of the descriptor; names that climb
/// out of the package (`..`, absolute) are refused: the package is untrusted input.
fn join(base: &str, href: &str, file: &Path) -> Result<String, Error> {
    let p = Path::new(href);
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(err(
            file,
            format!("the descriptor names the file {href:?}, which is outside the package"),
        ));
    }
    let href = href.trim_start_matches("./");
    Ok(if base.is_empty() {
        href.to_string()
    } else {
        format!("{base}/{href}")
    })
}

/// A descriptor's name without its `.ovf` (any case).
fn stem(ovf_name: &str) -> &str {
    let cut = ovf_name.len().saturating_sub(".ovf".len());
    ovf_name.get(..cut).unwrap_or_default()
}

fn read_limited(mut r: impl Read, what: &Path) -> Result<Vec<u8>, Error> {
    let mut v = Vec::new();
    r.by_ref()
        .take(MAX_TEXT_BYTES.saturating_add(1))
        .read_to_end(&mut v)
        .map_err(|e| Error::io(&what.display().to_string(), e))?;
    if crate::bytes::wide(v.len()) > MAX_TEXT_BYTES {
        return Err(err(what, format!("larger than {MAX_TEXT_BYTES} bytes")));
    }
    Ok(v)
}

fn read_member(archive: &Path, m: &Member) -> Result<Vec<u8>, Error> {
    use std::os::unix::fs::FileExt;
    let name = archive.join(&m.name);
    let size = usize::try_from(m.size)
        .ok()
        .filter(|_| m.size <= MAX_TEXT_BYTES)
        .ok_or_else(|| err(&name, format!("larger than {MAX_TEXT_BYTES} bytes")))?;
    let f = File::open(archive).map_err(|e| Error::io(&archive.display().to_string(), e))?;
    let mut v = vec![0u8; size];
    f.read_exact_at(&mut v, m.offset)
        .map_err(|e| Error::io(&name.display().to_string(), e))?;
    Ok(v)
}

/// Parses a manifest: `SHA256(disk1.vmdk)= 0123…` lines (SHA1, SHA256 and SHA512; the
/// space before `=` is optional, as exporters differ).
pub fn parse_manifest(file: &str, text: &[u8]) -> Result<Vec<(String, String, String)>, Error> {
    let mut out = Vec::new();
    for (lineno, line) in (1usize..).zip(text.split(|&b| b == b'\n')) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || Error::at(file, lineno, 1, format!("not a manifest line: {line:?}"));
        let (algo, rest) = line.split_once('(').ok_or_else(bad)?;
        let (name, rest) = rest.rsplit_once(')').ok_or_else(bad)?;
        let hex = rest.trim_start().strip_prefix('=').ok_or_else(bad)?.trim();
        let algo = algo.trim().to_ascii_uppercase();
        if !matches!(algo.as_str(), "SHA1" | "SHA256" | "SHA512") {
            return Err(Error::at(
                file,
                lineno,
                1,
                format!("digest {algo} is not one ferry checks (SHA1, SHA256, SHA512)"),
            ));
        }
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        out.push((algo, name.to_string(), hex.to_ascii_lowercase()));
    }
    Ok(out)
}

/// Opens the package at `path` (an `.ova` tar, a directory, or an `.ovf` file) and reads its
/// descriptor. Nothing is hashed yet: see [`Ova::verify`].
pub fn open(path: &Path) -> Result<Ova, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(&path.display().to_string(), e))?;
    let is_ovf = |n: &str| n.to_ascii_lowercase().ends_with(".ovf");
    let (ovf_name, ovf_bytes, mf, members, base) = if meta.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| Error::io(&path.display().to_string(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let ovf_name = names
            .iter()
            .find(|n| is_ovf(n))
            .ok_or_else(|| err(path, "the directory holds no .ovf descriptor"))?
            .clone();
        let p = path.join(&ovf_name);
        let bytes = read_limited(
            File::open(&p).map_err(|e| Error::io(&p.display().to_string(), e))?,
            &p,
        )?;
        let mf = stem(&ovf_name).to_string() + ".mf";
        let mf = names.iter().find(|n| n.eq_ignore_ascii_case(&mf)).map(|n| {
            let p = path.join(n);
            File::open(&p)
                .map_err(|e| Error::io(&p.display().to_string(), e))
                .and_then(|f| read_limited(f, &p))
                .map(|b| (n.clone(), b))
        });
        (ovf_name, bytes, mf.transpose()?, None, String::new())
    } else if is_ovf(&path.to_string_lossy()) {
        let bytes = read_limited(
            File::open(path).map_err(|e| Error::io(&path.display().to_string(), e))?,
            path,
        )?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mf_path = path.with_extension("mf");
        let mf = match File::open(&mf_path) {
            Ok(f) => Some((
                mf_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                read_limited(f, &mf_path)?,
            )),
            Err(_) => None,
        };
        (name, bytes, mf, None, String::new())
    } else {
        let list = members(path)?;
        // The descriptor is the first .ovf (DSP0243 puts it first; some tools do not).
        let ovf_m = list
            .iter()
            .find(|m| is_ovf(&m.name))
            .ok_or_else(|| err(path, "the archive holds no .ovf descriptor"))?
            .clone();
        let bytes = read_member(path, &ovf_m)?;
        let base = match ovf_m.name.rfind('/') {
            Some(i) => ovf_m.name[..i].to_string(),
            None => String::new(),
        };
        let mf_name = stem(&ovf_m.name).to_string() + ".mf";
        let mf = match list.iter().find(|m| m.name.eq_ignore_ascii_case(&mf_name)) {
            Some(m) => Some((m.name.clone(), read_member(path, m)?)),
            None => None,
        };
        (ovf_m.name, bytes, mf, Some(list), base)
    };
    let label = path.join(&ovf_name).display().to_string();
    let ovf = ovf::parse(&label, &ovf_bytes)?;
    let manifest = match &mf {
        Some((name, text)) => parse_manifest(&path.join(name).display().to_string(), text)?,
        None => Vec::new(),
    };
    let dir = if meta.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let mut disks = Vec::new();
    for &f in &ovf.disk_files {
        let file = &ovf.files[f];
        let gz = match file.compression.as_deref() {
            None => false,
            Some("gzip") => true,
            Some(c) => {
                return Err(err(
                    path,
                    format!(
                        "{} is stored with compression {c:?}, which ferry does not read",
                        file.href
                    ),
                ))
            }
        };
        let name = join(&base, &file.href, path)?;
        let d = match &members {
            Some(list) => {
                let m = list.iter().find(|m| m.name == name).ok_or_else(|| {
                    err(
                        path,
                        format!("the descriptor names {name}, which the archive does not hold"),
                    )
                })?;
                DiskFile::Member {
                    archive: path.to_path_buf(),
                    member: m.clone(),
                }
            }
            None => DiskFile::Path(dir.join(&name)),
        };
        disks.push((d, gz));
    }
    let mut ova = Ova {
        path: path.to_path_buf(),
        ovf,
        disks,
        manifest,
        members,
        base,
        dir,
        ovf_name,
    };
    ova.ovf.source.input = "ova".into();
    Ok(ova)
}

impl Ova {
    /// The VM as the descriptor describes it, with each hard disk's `source` naming where its
    /// image is (`archive/member` for a member of the tar).
    pub fn source(&self) -> Source {
        let mut s = self.ovf.source.clone();
        let mut it = self.disks.iter();
        for d in s
            .disks
            .iter_mut()
            .filter(|d| d.device == super::DeviceKind::Disk && d.source.is_some())
        {
            if let Some((f, _)) = it.next() {
                d.source = Some(match f {
                    DiskFile::Member { archive, member } => {
                        archive.join(&member.name).display().to_string()
                    }
                    DiskFile::Path(p) => p.display().to_string(),
                });
            }
        }
        s
    }

    /// Checks every file the manifest lists against its digest (reading each once). Returns
    /// how many files were checked; a package without a manifest checks nothing. A mismatch
    /// or a listed file that is missing is an error naming the file and both digests.
    pub fn verify(&self) -> Result<usize, Error> {
        for (algo, name, want) in &self.manifest {
            let full = join(&self.base, name, &self.path)?;
            let got = match &self.members {
                Some(list) => {
                    let m = list.iter().find(|m| m.name == full).ok_or_else(|| {
                        err(
                            &self.path,
                            format!("the manifest lists {name}, which the archive does not hold"),
                        )
                    })?;
                    let f = File::open(&self.path)
                        .map_err(|e| Error::io(&self.path.display().to_string(), e))?;
                    hash(
                        algo,
                        ReadAt::new(f, m.offset, m.size),
                        &self.path.join(&m.name),
                    )?
                }
                None => {
                    let p = self.dir.join(&full);
                    let f = File::open(&p).map_err(|e| Error::io(&p.display().to_string(), e))?;
                    hash(algo, f, &p)?
                }
            };
            if &got != want {
                return Err(err(
                    &self.path,
                    format!(
                        "{name}: the manifest says {algo} {want}, the file has {got}: the package is damaged or was altered"
                    ),
                ));
            }
        }
        Ok(self.manifest.len())
    }

    /// The descriptor's name in the package.
    pub fn descriptor_name(&self) -> &str {
        &self.ovf_name
    }
}

/// Reads `len` bytes of a file from `offset` on, as a stream.
pub struct ReadAt {
    f: File,
    pos: u64,
    end: u64,
}

impl ReadAt {
    pub fn new(f: File, offset: u64, len: u64) -> Self {
        ReadAt {
            f,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        // pos never passes end: it moves by what a read of at most end - pos returned.
        let want = usize::try_from(self.end.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos = self.pos.saturating_add(crate::bytes::wide(n));
        Ok(n)
    }
}

fn hash(algo: &str, mut r: impl Read, what: &Path) -> Result<String, Error> {
    fn run<D: Digest>(mut d: D, r: &mut dyn Read, what: &Path) -> Result<String, Error> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| Error::io(&what.display().to_string(), e))?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        Ok(d.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
    match algo {
        "SHA1" => run(sha1::Sha1::new(), &mut r, what),
        "SHA256" => run(sha2::Sha256::new(), &mut r, what),
        _ => run(sha2::Sha512::new(), &mut r, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines() {
        let m = parse_manifest(
            "x.mf",
            b"SHA1(vm.ovf)= 0A1b\nSHA256(disk 1.vmdk) = ff00\n\n",
        )
        .unwrap();
        assert_eq!(m[0], ("SHA1".into(), "vm.ovf".into(), "0a1b".into()));
        assert_eq!(m[1], ("SHA256".into(), "disk 1.vmdk".into(), "ff00".into()));
        let e = parse_manifest("x.mf", b"SHA1(a)= 00\nMD5(b)= 11\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_manifest("x.mf", b"garbage\n").is_err());
    }

    #[test]
    fn tar_fields() {
        assert_eq!(tar_number(b"00000001750\0"), Some(0o1750));
        assert_eq!(tar_number(b"     17 \0"), Some(0o17));
        assert_eq!(tar_number(b"\0\0\0"), Some(0));
        assert_eq!(
            tar_number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(tar_number(b"9"), None);
        assert_eq!(tar_string(b"disk.vmdk\0junk"), "disk.vmdk");
        let (p, s) = pax_records(b"28 path=some/long/name.vmdk\n20 size=12345678901\n9 bad\n");
        assert_eq!(p.as_deref(), Some("some/long/name.vmdk"));
        assert_eq!(s, Some(12_345_678_901));
        assert_eq!(pax_records(b"999 path=x\n"), (None, None));
    }

    #[test]
    fn names_stay_inside_the_package() {
        let p = Path::new("x.ova");
        assert_eq!(join("", "./d.vmdk", p).unwrap(), "d.vmdk");
        assert_eq!(join("sub", "d.vmdk", p).unwrap(), "sub/d.vmdk");
        assert!(join("", "../etc/shadow", p).is_err());
        assert!(join("", "/etc/shadow", p).is_err());
    }
}
