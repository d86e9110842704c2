//! Initramfs images: what a guest's `/boot/initrd.img-*` holds, and an archive to append to it.
//!
//! The kernel's initramfs buffer is a sequence of cpio "newc" archives, each either plain or
//! compressed, separated by NUL padding (Documentation/driver-api/early-userspace/
//! buffer-format.rst). The kernel unpacks them in order and a later entry replaces an earlier
//! one of the same name. Distributions put an uncompressed early-microcode archive first and
//! the compressed main archive after it; a driver the main archive lacks can therefore be
//! added by appending a plain archive, with no need to recompress (or even decompress) what is
//! there. Listing reads gzip, zstd, xz and lz4-legacy members (the defaults of initramfs-tools,
//! dracut, mkinitcpio and SUSE's dracut, and Ubuntu 19.10–21.10's lz4); other compressions are
//! reported, not guessed at.
//!
//! A newc header is 110 ASCII bytes: the magic `070701` (or `070702` with checksums) and 13
//! fields of 8 hex digits (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
//! rdevmajor, rdevminor, namesize, check); the name follows with its NUL, then the data, each
//! padded to a multiple of 4 bytes. `TRAILER!!!` ends an archive.

use crate::bytes::wide;
use std::io::{self, Read};

/// Length of a newc header.
const HEADER: usize = 110;
/// A name longer than PATH_MAX is not one the kernel would unpack.
const MAX_NAME: usize = 4096;
/// A symlink target is read to resolve paths; PATH_MAX bounds it.
const MAX_LINK: u32 = 4096;
/// Entries listed; a distribution initramfs has a few thousand.
const MAX_ENTRIES: usize = 1 << 20;
/// Bytes walked after decompression: bounds a compression bomb. Real images unpack to
/// well under 1 GiB.
const MAX_UNPACKED: u64 = 2 << 30;
/// Memory liblzma may use for one xz member: `xz -9` needs 65 MiB, dracut's `xz -0` 1 MiB; a
/// header asking for more is refused rather than allocated.
const XZ_MEMLIMIT: u64 = 128 << 20;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("initramfs, {what} at byte {offset} of {segment}: {detail}")]
    Corrupt {
        segment: String,
        what: &'static str,
        offset: u64,
        detail: String,
    },
    #[error("initramfs: more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("initramfs: {0} compression is not read (only gzip, zstd, xz and lz4)")]
    Unsupported(Compression),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How one member of the buffer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Bzip2,
    Lz4,
    Lzo,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Compression::None => "no",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzo",
        };
        f.write_str(s)
    }
}

/// The compression of a member starting with `b` (the magics the kernel's
/// `decompress_method` knows); `None` for something else.
fn compression_of(b: &[u8]) -> Option<Compression> {
    let c = match b {
        [b'0', b'7', b'0', b'7', b'0', b'1' | b'2', ..] => Compression::None,
        [0x1f, 0x8b | 0x9e, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Xz,
        [0x5d, 0, 0, ..] => Compression::Lzma,
        [b'B', b'Z', b'h', ..] => Compression::Bzip2,
        [0x02, 0x21, 0x4c, 0x18, ..] => Compression::Lz4,
        [0x89, b'L', b'Z', b'O', ..] => Compression::Lzo,
        _ => return None,
    };
    Some(c)
}

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As stored, without a leading `./` or `/`.
    pub name: String,
    pub mode: u32,
    pub size: u32,
    /// The target, for a symlink.
    pub link: Option<String>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// What an initramfs buffer holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every entry of every member, in unpacking order.
    pub entries: Vec<Entry>,
    /// How each member is stored, in order.
    pub members: Vec<Compression>,
    /// Set when the walk stopped at a member it cannot read: entries after it are unknown.
    pub unread: Option<Compression>,
    /// Set when nothing may follow the last member: the kernel's lz4 reader (the legacy
    /// format has no end marker) takes whatever follows for another chunk and fails.
    pub closed: Option<Compression>,
}

impl Listing {
    /// The entry the kernel would leave at `name` (the last of that name).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.name == name)
    }

    /// `path` with each symlinked directory on the way replaced by its target, as the
    /// kernel's unpacking resolves it (Debian's `lib -> usr/lib`); relative to the root.
    pub fn resolve(&self, path: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut rest: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut hops = 0usize;
        while let Some(c) = rest.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                out.pop();
                continue;
            }
            out.push(c);
            let here = out.join("/");
            // Only links on the way are followed; the last component is named as given.
            if rest.is_empty() {
                break;
            }
            if let Some(target) = self.get(&here).and_then(|e| e.link.clone()) {
                hops = hops.saturating_add(1);
                if hops > crate::fs::path::MAX_SYMLINKS {
                    break;
                }
                out.pop();
                if target.starts_with('/') {
                    out.clear();
                }
                rest.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
        }
        out.join("/")
    }
}

/// Lists the members and entries of an initramfs buffer.
pub fn list(data: &[u8]) -> Result<Listing> {
    let mut l = Listing::default();
    let mut pos = 0usize;
    let mut unpacked = 0u64;
    // Each member's reader says how much of `rest` it used (at most all of it), so `pos`
    // only moves forward inside the buffer.
    while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
        if rest.first() == Some(&0) {
            pos = pos.saturating_add(1);
            continue;
        }
        let used = |left: usize| rest.len().saturating_sub(left);
        let segment = format!("member {} (byte {pos})", l.members.len());
        match compression_of(rest) {
            Some(Compression::None) => {
                l.members.push(Compression::None);
                let mut r = Counted::new(rest);
                walk(&mut r, &segment, &mut l, &mut unpacked, true)?;
                pos = pos.saturating_add(usize::try_from(r.pos).unwrap_or(rest.len()));
            }
            Some(Compression::Gzip) => {
                // One gzip member per buffer member, as the kernel's gunzip reads it; the
                // slice left after it says where the next member starts.
                l.members.push(Compression::Gzip);
                let mut inner = rest;
                let mut r = Counted::new(flate2::bufread::GzDecoder::new(&mut inner));
                walk(&mut r, &segment, &mut l, &mut unpacked, false)?;
                drop(r);
                pos = pos.saturating_add(used(inner.len()));
            }
            Some(Compression::Zstd) => {
                l.members.push(Compression::Zstd);
                let d = zstd::stream::read::Decoder::with_buffer(rest)
                    .map_err(|e| corrupt(&segment, "zstd stream", 0, e.to_string()))?
                    .single_frame();
                let mut r = Counted::new(d);
                walk(&mut r, &segment, &mut l, &mut unpacked, false)?;
                let left = r.inner.finish();
                pos = pos.saturating_add(used(left.len()));
            }
            Some(Compression::Xz) => {
                l.members.push(Compression::Xz);
                // One xz stream (not LZMA_CONCATENATED), as the kernel's unxz reads it; the
                // slice left after it says where the next member starts.
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(|e| corrupt(&segment, "xz stream", 0, e.to_string()))?;
                let mut inner = rest;
                let mut r =
                    Counted::new(liblzma::bufread::XzDecoder::new_stream(&mut inner, stream));
                walk(&mut r, &segment, &mut l, &mut unpacked, false)?;
                drop(r);
                pos = pos.saturating_add(used(inner.len()));
            }
            Some(Compression::Lz4) => {
                l.members.push(Compression::Lz4);
                let mut r = Counted::new(Lz4Legacy::new(rest));
                walk(&mut r, &segment, &mut l, &mut unpacked, false)?;
                let used = r.inner.consumed;
                if let Some(e) = r.inner.error.take() {
                    return Err(corrupt(&segment, "lz4 chunk", wide(used), e));
                }
                pos = pos.saturating_add(used);
                l.closed = Some(Compression::Lz4);
            }
            Some(other) => {
                l.members.push(other);
                l.unread = Some(other);
                break;
            }
            None => {
                return Err(corrupt(
                    "buffer",
                    "member",
                    wide(pos),
                    format!(
                        "neither a cpio archive nor a known compression ({:02x?})",
                        rest.get(..6).unwrap_or(rest)
                    ),
                ))
            }
        }
    }
    Ok(l)
}

fn corrupt(segment: &str, what: &'static str, offset: u64, detail: String) -> Error {
    Error::Corrupt {
        segment: segment.to_string(),
        what,
        offset,
        detail,
    }
}

/// A reader that counts what it has consumed, for the 4-byte alignment of newc.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, pos: 0 }
    }

    /// Fills `buf` entirely; `Ok(false)` at a clean end of stream before its first byte.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut left = &mut buf[..];
        let mut started = false;
        while !left.is_empty() {
            match self.inner.read(left) {
                Ok(0) if !started => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    left = left.get_mut(n..).unwrap_or_default();
                    started = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Bounded by MAX_UNPACKED, which the walk checks.
        self.pos = self.pos.saturating_add(wide(buf.len()));
        Ok(true)
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos = self.pos.saturating_add(copied);
        if copied < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn align(&mut self) -> io::Result<()> {
        self.skip(self.pos.next_multiple_of(4).saturating_sub(self.pos))
    }
}

/// The lz4 "legacy" stream that `lz4 -l` writes and the kernel reads (lib/decompress_unlz4.c):
/// the magic, then chunks of a 4-byte little-endian compressed length and an LZ4 block that
/// decompresses to at most 8 MiB; the magic may appear again between chunks. The stream has no
/// end marker: it ends where the input does, or here at a length no chunk can have.
struct Lz4Legacy<'a> {
    input: &'a [u8],
    consumed: usize,
    out: Vec<u8>,
    at: usize,
    /// A damaged chunk: reported after the walk (the walk sees the end of the stream).
    error: Option<String>,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
const LZ4_LEGACY_CHUNK: usize = 8 << 20;

impl<'a> Lz4Legacy<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lz4Legacy {
            input,
            consumed: 0,
            out: Vec::new(),
            at: 0,
            error: None,
        }
    }

    /// Decodes the next chunk into `out`; false at the end of the stream.
    fn next_chunk(&mut self) -> bool {
        // The worst-case size of a compressed 8 MiB chunk (LZ4_compressBound).
        const BOUND: usize = LZ4_LEGACY_CHUNK + LZ4_LEGACY_CHUNK / 255 + 16;
        loop {
            let rest = self.input.get(self.consumed..).unwrap_or_default();
            let Some((len, after)) = rest.split_first_chunk::<4>() else {
                return false;
            };
            let len = u32::from_le_bytes(*len);
            // `consumed` stays inside the input: it moves by what was split off it.
            if len == LZ4_LEGACY_MAGIC {
                self.consumed = self.consumed.saturating_add(4);
                continue;
            }
            let Some(block) = usize::try_from(len)
                .ok()
                .filter(|&l| l > 0 && l <= BOUND)
                .and_then(|l| after.get(..l))
            else {
                return false;
            };
            self.out.resize(LZ4_LEGACY_CHUNK, 0);
            match lz4_flex::block::decompress_into(block, &mut self.out) {
                Ok(n) => {
                    self.out.truncate(n);
                    self.at = 0;
                    self.consumed = self.consumed.saturating_add(4).saturating_add(block.len());
                    return true;
                }
                Err(e) => {
                    self.error = Some(e.to_string());
                    return false;
                }
            }
        }
    }
}

impl Read for Lz4Legacy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.out.len() {
            if !self.next_chunk() {
                return Ok(0);
            }
        }
        let ready = self.out.get(self.at..).unwrap_or_default();
        let n = buf.len().min(ready.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.at = self.at.saturating_add(n);
        Ok(n)
    }
}

/// Walks the archives of one member. A plain member ends after its first trailer (what
/// follows may be another member); a decompressed stream may hold several archives.
fn walk<R: Read>(
    r: &mut Counted<R>,
    segment: &str,
    l: &mut Listing,
    unpacked: &mut u64,
    plain: bool,
) -> Result<()> {
    let io_err =
        |what: &'static str, at: u64, e: io::Error| corrupt(segment, what, at, e.to_string());
    let mut header = [0u8; HEADER];
    loop {
        let at = r.pos;
        // Padding counts too: a stream of zeros must not keep the walk busy for hours.
        if at > MAX_UNPACKED {
            return Err(corrupt(
                segment,
                "archive",
                at,
                format!("unpacks to more than {MAX_UNPACKED} bytes"),
            ));
        }
        // Skip NUL padding between archives, one 4-byte word at a time as the kernel does.
        let mut first = [0u8; 4];
        if !r.fill(&mut first).map_err(|e| io_err("header", at, e))? {
            return Ok(());
        }
        if first == [0; 4] {
            continue;
        }
        header[..4].copy_from_slice(&first);
        r.fill(&mut header[4..])
            .map_err(|e| io_err("header", at, e))?;
        if !header.starts_with(b"070701") && !header.starts_with(b"070702") {
            return Err(corrupt(
                segment,
                "cpio header",
                at,
                format!(
                    "magic {:?}, expected \"070701\"",
                    String::from_utf8_lossy(&header[..6])
                ),
            ));
        }
        // The 13 fields of 8 hex digits after the 6-byte magic.
        let fields = header.get(6..).unwrap_or_default();
        let field = |i: usize| -> Result<u32> {
            let s = fields.chunks_exact(8).nth(i).unwrap_or_default();
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    corrupt(
                        segment,
                        "cpio header field",
                        at.saturating_add(wide(i.saturating_mul(8).saturating_add(6))),
                        format!("{:?} is not 8 hex digits", String::from_utf8_lossy(s)),
                    )
                })
        };
        let mode = field(1)?;
        let size = field(6)?;
        let namesize = usize::try_from(field(11)?).unwrap_or(usize::MAX);
        if namesize == 0 || namesize > MAX_NAME {
            return Err(corrupt(
                segment,
                "cpio name size",
                at.saturating_add(94),
                format!("{namesize}, expected 1..={MAX_NAME}"),
            ));
        }
        let mut name = vec![0u8; namesize];
        r.fill(&mut name).map_err(|e| io_err("cpio name", at, e))?;
        if name.pop() != Some(0) {
            return Err(corrupt(
                segment,
                "cpio name",
                at.saturating_add(wide(HEADER)),
                "not NUL-terminated".into(),
            ));
        }
        r.align().map_err(|e| io_err("cpio name padding", at, e))?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if name == TRAILER {
            if plain {
                return Ok(());
            }
            continue;
        }
        *unpacked = unpacked
            .saturating_add(u64::from(size))
            .saturating_add(wide(HEADER))
            .saturating_add(wide(namesize));
        if *unpacked > MAX_UNPACKED {
            return Err(corrupt(
                segment,
                "archive",
                at,
                format!("unpacks to more than {MAX_UNPACKED} bytes"),
            ));
        }
        let link = if mode & S_IFMT == S_IFLNK && size <= MAX_LINK {
            let mut t = vec![0u8; usize::try_from(size).unwrap_or_default()];
            r.fill(&mut t)
                .map_err(|e| io_err("symlink target", at, e))?;
            Some(String::from_utf8_lossy(&t).into_owned())
        } else {
            r.skip(u64::from(size))
                .map_err(|e| io_err("file data", at, e))?;
            None
        };
        r.align().map_err(|e| io_err("file data padding", at, e))?;
        if l.entries.len() >= MAX_ENTRIES {
            return Err(Error::TooManyEntries);
        }
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        l.entries.push(Entry {
            name,
            mode,
            size,
            link,
        });
    }
}

/// Builds plain newc archives: the appended member.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            out: Vec::new(),
            // Inode numbers only pair hard links (nlink > 1); start well away from 0.
            ino: 0x4000_0000,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB"))
        })?;
        let namesize = Some(name.len().saturating_add(1))
            .filter(|&n| n <= MAX_NAME)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        self.ino = self.ino.wrapping_add(1);
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, 2, &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, data)
    }

    /// Ends the archive with its trailer.
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        self.entry(TRAILER, 0, 1, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = Writer::new();
        for (n, d) in files {
            w.file(n, 0o644, d).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn plain_and_compressed_members_are_listed_in_order() {
        let early = archive(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = archive(&[("init", b"#!/bin/sh\n"), ("conf/modules", b"")]);
        let z = zstd::encode_all(&main[..], 3).unwrap();
        let extra = archive(&[("conf/modules", b"virtio_blk\n")]);
        let mut buf = early.clone();
        buf.extend_from_slice(&[0; 8]);
        buf.extend_from_slice(&z);
        buf.extend_from_slice(&extra);
        let l = list(&buf).unwrap();
        assert_eq!(
            l.members,
            [Compression::None, Compression::Zstd, Compression::None]
        );
        let names: Vec<_> = l.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kernel/x86/microcode/GenuineIntel.bin",
                "init",
                "conf/modules",
                "conf/modules"
            ]
        );
        assert_eq!(l.get("conf/modules").map(|e| e.size), Some(11));
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &main).unwrap();
            e.finish().unwrap()
        };
        let l = list(&gz).unwrap();
        assert_eq!(l.members, [Compression::Gzip]);
        assert_eq!(l.entries.len(), 2);
        // xz, then what ferry appends: the stream's end is found, the archive after it read.
        let mut xz = Vec::new();
        std::io::Read::read_to_end(&mut liblzma::read::XzEncoder::new(&main[..], 0), &mut xz)
            .unwrap();
        let mut buf = early.clone();
        buf.extend_from_slice(&xz);
        buf.extend_from_slice(&extra);
        let l = list(&buf).unwrap();
        assert_eq!(
            l.members,
            [Compression::None, Compression::Xz, Compression::None]
        );
        assert_eq!(l.entries.len(), 4);
        assert_eq!(l.get("conf/modules").map(|e| e.size), Some(11));
        // A block asking for a 4 GiB dictionary (its LZMA2 properties byte set to 40, the
        // block header's CRC32 redone) is refused, not allocated.
        let mut big = xz.clone();
        let hdr = 12;
        let hlen = (usize::from(big[hdr]) + 1) * 4;
        let flags = big[hdr + 1];
        assert_eq!(flags & 0xc0, 0, "no sizes in liblzma's block header");
        assert_eq!(&big[hdr + 2..hdr + 4], &[0x21, 0x01], "one LZMA2 filter");
        big[hdr + 4] = 40;
        let crc = crc32fast::hash(&big[hdr..hdr + hlen - 4]);
        big[hdr + hlen - 4..hdr + hlen].copy_from_slice(&crc.to_le_bytes());
        let e = list(&big).unwrap_err().to_string();
        assert!(e.contains("memory limit"), "{e}");
    }

    #[test]
    fn lz4_legacy_members_are_read_and_close_the_buffer() {
        let main = archive(&[("init", b"#!/bin/sh\n"), ("usr/lib/x", &[5u8; 70_000])]);
        let mut buf = archive(&[("early", b"e")]);
        buf.extend_from_slice(&LZ4_LEGACY_MAGIC.to_le_bytes());
        for chunk in main.chunks(40_000) {
            let c = lz4_flex::block::compress(chunk);
            buf.extend_from_slice(&(c.len() as u32).to_le_bytes());
            buf.extend_from_slice(&c);
        }
        let l = list(&buf).unwrap();
        assert_eq!(l.members, [Compression::None, Compression::Lz4]);
        assert_eq!(l.closed, Some(Compression::Lz4));
        assert_eq!(l.get("usr/lib/x").map(|e| e.size), Some(70_000));
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 20] ^= 0xff;
        let _ = list(&bad);
    }

    #[test]
    fn resolve_follows_directory_links() {
        let l = Listing {
            entries: vec![Entry {
                name: "lib".into(),
                mode: S_IFLNK | 0o777,
                size: 7,
                link: Some("usr/lib".into()),
            }],
            ..Listing::default()
        };
        assert_eq!(
            l.resolve("lib/modules/6.1/kernel"),
            "usr/lib/modules/6.1/kernel"
        );
        assert_eq!(l.resolve("lib"), "lib");
    }

    #[test]
    fn truncated_and_garbled_input_is_an_error_not_a_panic() {
        let a = archive(&[("etc/a", b"hello"), ("etc/b", &[7u8; 300])]);
        for cut in 0..a.len() {
            let _ = list(&a[..cut]);
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut b = a.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 32) as u8;
            }
            let _ = list(&b);
        }
        assert!(matches!(list(b"garbage!"), Err(Error::Corrupt { .. })));
    }
}
