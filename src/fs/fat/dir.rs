//! Directory entries: 32-byte 8.3 entries, the VFAT long-name slots before them, and the names
//! both give, decoded as the Linux kernel's vfat driver shows them with its Debian defaults
//! (`codepage=437`, `utf8`, `shortname=mixed`): long names from UTF-16 to UTF-8, 8.3 names
//! from code page 437 with the Windows NT lower-case flags honoured.

use crate::bytes::{le16, le32};

pub(crate) const ENTRY: usize = 32;

pub(crate) const ATTR_RO: u8 = 0x01;
pub(crate) const ATTR_VOLUME: u8 = 0x08;
pub(crate) const ATTR_DIR: u8 = 0x10;
/// A long-name slot: read-only, hidden, system and volume together.
const ATTR_LFN: u8 = 0x0F;
/// First name byte of a removed entry.
const DELETED: u8 = 0xE5;
/// First name byte standing for 0xE5 (which marks removed entries).
const REALLY_E5: u8 = 0x05;
/// The NT flags (byte 12): base name and extension stored upper case, shown lower case.
const CASE_LOWER_BASE: u8 = 0x08;
const CASE_LOWER_EXT: u8 = 0x10;
/// UTF-16 units in one long-name slot, and the most slots a name may have (255 units).
const LFN_UNITS: usize = 13;
const LFN_MAX_SLOTS: usize = 20;
/// Marks the slot that comes first on disk (holding the end of the name).
const LFN_LAST: u8 = 0x40;

/// The fields of an 8.3 entry ferry uses, with the name it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Byte offset of the 8.3 entry on the volume (what the inode number is made from).
    pub(crate) pos: u64,
    /// The long name if a valid one precedes the entry, else the 8.3 name (UTF-8).
    pub(crate) name: Vec<u8>,
    /// The 8.3 name as shown (the alias a lookup also finds).
    pub(crate) short: Vec<u8>,
    pub(crate) raw: Raw,
    /// "." or ".." (kept for the subdirectory count, never listed as children).
    pub(crate) dot: bool,
}

/// The entry's own fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) attr: u8,
    pub(crate) first_cluster: u32,
    pub(crate) size: u32,
    pub(crate) ctime_cs: u8,
    pub(crate) ctime: u16,
    pub(crate) cdate: u16,
    pub(crate) adate: u16,
    pub(crate) mtime: u16,
    pub(crate) mdate: u16,
}

impl Raw {
    pub(crate) fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }
}

/// A directory's entries in disk order, with what the kernel counts from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) entries: Vec<Entry>,
    /// Entries with the directory attribute, "." and ".." included: the kernel's
    /// `fat_subdirs`, which becomes the link count.
    pub(crate) subdirs: u32,
    /// The volume-label entry's 11 bytes (only meaningful in the root directory).
    pub(crate) label: Option<[u8; 11]>,
}

/// The long name being gathered: its checksum, the next slot number expected (counting down
/// to 1) and the UTF-16 units so far.
struct Lfn {
    checksum: u8,
    next: usize,
    units: Vec<u16>,
}

/// The 8.3 name's checksum that its long-name slots carry.
fn checksum(name: &[u8]) -> u8 {
    name.iter()
        .fold(0u8, |s, &c| (s >> 1).wrapping_add(s << 7).wrapping_add(c))
}

fn lfn_units(slot: &[u8]) -> impl Iterator<Item = u16> + '_ {
    (1..11)
        .step_by(2)
        .chain((14..26).step_by(2))
        .chain((28..32).step_by(2))
        .map(move |at| le16(slot, at))
}

/// Parses the directory `data` (whole entries), where entry `i` lies at volume byte `pos(i)`.
/// As the kernel's readdir does, every slot up to the end of the directory is looked at: a
/// free slot (first byte 0 or 0xE5) is skipped, not taken as the end.
pub(crate) fn parse(data: &[u8], fat32: bool, pos: impl Fn(usize) -> u64) -> Parsed {
    let mut out = Parsed::default();
    let mut lfn: Option<Lfn> = None;
    for (i, e) in data.chunks_exact(ENTRY).enumerate() {
        let first = e[0];
        if first == 0 || first == DELETED {
            lfn = None;
            continue;
        }
        let attr = e[11];
        if attr == ATTR_LFN {
            let id = first & !LFN_LAST;
            let slots = usize::from(id);
            if first & LFN_LAST != 0 {
                // 1..=LFN_MAX_SLOTS slots: the products and differences below are small.
                lfn = (1..=LFN_MAX_SLOTS).contains(&slots).then(|| {
                    let mut units = vec![0u16; slots.saturating_mul(LFN_UNITS)];
                    // The last slot (first on disk) holds the name's last units.
                    if let Some(part) = units.chunks_exact_mut(LFN_UNITS).last() {
                        for (d, u) in part.iter_mut().zip(lfn_units(e)) {
                            *d = u;
                        }
                    }
                    Lfn {
                        checksum: e[13],
                        next: slots.saturating_sub(1),
                        units,
                    }
                });
            } else {
                lfn = lfn
                    .take()
                    .filter(|l| l.next == slots && slots > 0 && l.checksum == e[13]);
                // slots == next > 0 (the filter), below the slots the first entry counted.
                if let Some(l) = &mut lfn {
                    let part = l
                        .units
                        .chunks_exact_mut(LFN_UNITS)
                        .nth(slots.saturating_sub(1));
                    for (d, u) in part.into_iter().flatten().zip(lfn_units(e)) {
                        *d = u;
                    }
                    l.next = l.next.saturating_sub(1);
                }
            }
            continue;
        }
        let pending = lfn.take();
        let name11 = &e[..11];
        if attr & ATTR_VOLUME != 0 {
            out.label.get_or_insert_with(|| {
                let mut l = [0u8; 11];
                l.copy_from_slice(name11);
                l
            });
            continue;
        }
        let mut first_cluster = u32::from(le16(e, 26));
        if fat32 {
            first_cluster |= u32::from(le16(e, 20)) << 16;
        }
        let raw = Raw {
            attr,
            first_cluster,
            size: le32(e, 28),
            ctime_cs: e[13],
            ctime: le16(e, 14),
            cdate: le16(e, 16),
            adate: le16(e, 18),
            mtime: le16(e, 22),
            mdate: le16(e, 24),
        };
        if raw.is_dir() {
            out.subdirs = out.subdirs.saturating_add(1);
        }
        let dot = name11 == b".          " || name11 == b"..         ";
        let short = short_name(name11, e[12]);
        let long = pending
            .filter(|l| l.next == 0 && l.checksum == checksum(name11))
            .map(|l| utf16_to_utf8(&l.units))
            .filter(|n| !n.is_empty());
        out.entries.push(Entry {
            pos: pos(i),
            name: long.unwrap_or_else(|| short.clone()),
            short,
            raw,
            dot,
        });
    }
    out
}

/// UTF-16 units up to the first 0 as UTF-8; unpaired surrogates are left out, as the kernel's
/// `utf16s_to_utf8s` leaves them out.
fn utf16_to_utf8(units: &[u16]) -> Vec<u8> {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    let s: String = char::decode_utf16(units[..end].iter().copied())
        .filter_map(|c| c.ok())
        .collect();
    s.into_bytes()
}

/// Code page 437, bytes 0x80..=0xFF (the kernel's nls_cp437).
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐\
└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// nls_cp437's lower-case map: ASCII and the eight accented capitals it has lower cases for.
fn cp437_lower(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b.to_ascii_lowercase(),
        0x80 => 0x87,
        0x8E => 0x84,
        0x8F => 0x86,
        0x90 => 0x82,
        0x92 => 0x91,
        0x99 => 0x94,
        0x9A => 0x81,
        0xA5 => 0xA4,
        _ => b,
    }
}

fn push_cp437(out: &mut String, b: u8) {
    match b.checked_sub(0x80) {
        None => out.push(char::from(b)),
        Some(high) => {
            if let Some(c) = CP437_HIGH.chars().nth(usize::from(high)) {
                out.push(c);
            }
        }
    }
}

/// The 8.3 name as the kernel's `fat_parse_short` shows it: the base up to a NUL or its last
/// non-blank, "." and the extension when the extension's first byte is not blank, each part
/// lower-cased when its NT case flag (byte 12) says so.
pub(crate) fn short_name(name11: &[u8], lcase: u8) -> Vec<u8> {
    let part = |bytes: &[u8], lower: bool| -> String {
        let mut out = String::new();
        let mut keep = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == 0 {
                break;
            }
            let b = if i == 0 && b == REALLY_E5 && bytes.len() == 8 {
                DELETED
            } else {
                b
            };
            push_cp437(&mut out, if lower { cp437_lower(b) } else { b });
            if b != b' ' {
                keep = out.len();
            }
        }
        out.truncate(keep);
        out
    };
    let mut s = part(&name11[..8], lcase & CASE_LOWER_BASE != 0);
    if name11[8] != b' ' {
        s.push('.');
        s.push_str(&part(&name11[8..11], lcase & CASE_LOWER_EXT != 0));
    }
    s.into_bytes()
}

/// Whether `a` and `b` are the same name to a vfat lookup: equal but for ASCII case (the
/// kernel folds case through its I/O character set, ASCII by default, byte by byte).
pub(crate) fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    fn sfn(name: &[u8; 11], attr: u8, lcase: u8) -> Vec<u8> {
        let mut e = vec![0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e[12] = lcase;
        e
    }

    fn lfn(order: u8, sum: u8, units: &[u16]) -> Vec<u8> {
        let mut e = vec![0u8; 32];
        e[0] = order;
        e[11] = ATTR_LFN;
        e[13] = sum;
        let offs = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (k, at) in offs.enumerate() {
            let u = units
                .get(k)
                .copied()
                .unwrap_or(if k == units.len() { 0 } else { 0xFFFF });
            e[at..at + 2].copy_from_slice(&u.to_le_bytes());
        }
        e
    }

    #[test]
    fn fat_short_names_as_the_kernel_shows_them() {
        assert_eq!(short_name(b"README  TXT", 0), b"README.TXT");
        assert_eq!(short_name(b"README  TXT", CASE_LOWER_BASE), b"readme.TXT");
        assert_eq!(short_name(b"README  TXT", 0x18), b"readme.txt");
        assert_eq!(short_name(b"NOEXT      ", 0), b"NOEXT");
        // 0x05 stands for 0xE5, which is σ in code page 437.
        assert_eq!(short_name(b"\x05BC     D  ", 0), "σBC.D".as_bytes());
        assert_eq!(short_name(b"\x80X      \x8e  ", 0x18), "çx.ä".as_bytes());
        assert_eq!(short_name(b"A B     C D", 0), b"A B.C D");
    }

    #[test]
    fn fat_long_names_need_their_checksum_and_every_slot() {
        let name = b"LONGFI~1TXT";
        let sum = checksum(name);
        let units: Vec<u16> = "A long file name.txt".encode_utf16().collect();
        let mut dir = lfn(0x42, sum, &units[13..]);
        dir.extend(lfn(0x01, sum, &units[..13]));
        dir.extend(sfn(name, 0x20, 0));
        let p = parse(&dir, false, |i| 1000 + 32 * i as u64);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].name, b"A long file name.txt");
        assert_eq!(p.entries[0].short, b"LONGFI~1.TXT");
        assert_eq!(p.entries[0].pos, 1064);
        // A wrong checksum, or a missing slot, leaves the 8.3 name.
        let mut bad = lfn(0x42, sum ^ 1, &units[13..]);
        bad.extend(lfn(0x01, sum ^ 1, &units[..13]));
        bad.extend(sfn(name, 0x20, 0));
        assert_eq!(parse(&bad, false, |_| 0).entries[0].name, b"LONGFI~1.TXT");
        let mut gap = lfn(0x42, sum, &units[13..]);
        gap.extend(sfn(name, 0x20, 0));
        assert_eq!(parse(&gap, false, |_| 0).entries[0].name, b"LONGFI~1.TXT");
    }

    #[test]
    fn fat_free_slots_volume_labels_and_dots() {
        let mut dir = sfn(b"VOLUME     ", ATTR_VOLUME, 0);
        dir.extend(sfn(b".          ", ATTR_DIR, 0));
        dir.extend(sfn(b"..         ", ATTR_DIR, 0));
        dir.extend(sfn(b"\xe5ONE    TXT", 0x20, 0));
        dir.extend(vec![0u8; 32]);
        dir.extend(sfn(b"SUB        ", ATTR_DIR, 0));
        let p = parse(&dir, false, |_| 0);
        assert_eq!(p.label, Some(*b"VOLUME     "));
        assert_eq!(p.subdirs, 3);
        let names: Vec<_> = p.entries.iter().map(|e| (e.name.clone(), e.dot)).collect();
        assert_eq!(
            names,
            [
                (b".".to_vec(), true),
                (b"..".to_vec(), true),
                (b"SUB".to_vec(), false)
            ]
        );
    }

    #[test]
    fn fat_utf16_names() {
        let units: Vec<u16> = "Ünï€😀".encode_utf16().chain([0xD800, 0x41, 0]).collect();
        assert_eq!(utf16_to_utf8(&units), "Ünï€😀A".as_bytes());
        assert!(same_name(b"ReadMe.TXT", b"readme.txt"));
        assert!(!same_name("Ä".as_bytes(), "ä".as_bytes()));
    }
}
