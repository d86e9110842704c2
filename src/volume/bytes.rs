//! Text fields of partition tables and volume signatures (GUIDs, UUIDs, labels); the integer
//! fields are read with `crate::bytes`, whose out-of-range reads give zero as these give "".

use crate::bytes::{le16, le32};

/// `len` bytes at `at`, or an empty slice when the buffer is shorter.
pub(crate) fn field(b: &[u8], at: usize, len: usize) -> &[u8] {
    b.get(at..at.saturating_add(len)).unwrap_or(&[])
}

/// A GUID as UEFI stores it (first three fields little-endian, the last eight bytes in order),
/// formatted lowercase as blkid and /dev/disk/by-partuuid show it.
pub(crate) fn guid(b: &[u8]) -> String {
    if b.len() < 16 {
        return String::new();
    }
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// 16 bytes in order as a UUID string (the byte order Linux filesystems and libuuid use).
pub(crate) fn uuid(b: &[u8]) -> String {
    if b.len() < 16 {
        return String::new();
    }
    let h: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A NUL-padded byte string as text (labels): up to the first NUL, lossy UTF-8, trailing
/// spaces kept as the tools keep them.
pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// UTF-16LE up to the first NUL (GPT partition names, NTFS labels). Unpaired surrogates become
/// U+FFFD; U+FFFF padding (erased flash, some tools' "no name") ends the string.
pub(crate) fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0 && u != 0xffff)
        .collect();
    String::from_utf16_lossy(&units)
}

/// `Some(s)` unless `s` is empty.
pub(crate) fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}
