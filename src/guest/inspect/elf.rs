//! The ELF file header (System V gABI, "ELF Header"), read for one thing: the architecture
//! a guest's programs are built for. Only the identification bytes, `e_machine` and the
//! program header table's placement are used; the placement is checked so that a header
//! pointing past its own file is reported as damaged rather than trusted.

use crate::bytes::{be16, be32, be64, le16, le32, le64};

/// Bytes of the header inspection reads: the whole 64-bit header.
pub const HEADER_LEN: usize = 64;

const MAGIC: &[u8; 4] = b"\x7fELF";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not an ELF file (no \\x7fELF magic at offset 0)")]
    NotElf,
    #[error("ELF header truncated: {len} bytes, the {class}-bit header needs {need}")]
    Truncated { len: usize, class: u8, need: usize },
    #[error("ELF header: bad EI_CLASS {0} at offset 4 (1 or 2 expected)")]
    BadClass(u8),
    #[error("ELF header: bad EI_DATA {0} at offset 5 (1 or 2 expected)")]
    BadData(u8),
    #[error(
        "ELF header: program headers at offset {phoff} ({phnum} × {phentsize} bytes) end past the file's {size} bytes"
    )]
    PhdrOutOfFile {
        phoff: u64,
        phnum: u16,
        phentsize: u16,
        size: u64,
    },
    #[error("ELF header: unknown machine {machine} (e_machine at offset 18)")]
    UnknownMachine { machine: u16 },
}

/// The fields of an ELF header that inspection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 32 or 64.
    pub bits: u8,
    pub little_endian: bool,
    pub machine: u16,
    pub phoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
}

impl Header {
    /// Parses the header at the start of `data`; with the file's `size`, checks that the
    /// program header table lies inside the file.
    pub fn parse(data: &[u8], size: Option<u64>) -> Result<Header, Error> {
        if data.len() < 6 || &data[..4] != MAGIC {
            return Err(Error::NotElf);
        }
        let bits = match data[4] {
            1 => 32,
            2 => 64,
            c => return Err(Error::BadClass(c)),
        };
        let little_endian = match data[5] {
            1 => true,
            2 => false,
            d => return Err(Error::BadData(d)),
        };
        let need = if bits == 64 { 64 } else { 52 };
        if data.len() < need {
            return Err(Error::Truncated {
                len: data.len(),
                class: bits,
                need,
            });
        }
        // Fields inside the `need` bytes checked above.
        let u16_at = |o: usize| {
            if little_endian {
                le16(data, o)
            } else {
                be16(data, o)
            }
        };
        let u32_at = |o: usize| {
            if little_endian {
                le32(data, o)
            } else {
                be32(data, o)
            }
        };
        let u64_at = |o: usize| {
            if little_endian {
                le64(data, o)
            } else {
                be64(data, o)
            }
        };
        let (phoff, phentsize, phnum) = if bits == 64 {
            (u64_at(32), u16_at(54), u16_at(56))
        } else {
            (u64::from(u32_at(28)), u16_at(42), u16_at(44))
        };
        let h = Header {
            bits,
            little_endian,
            machine: u16_at(18),
            phoff,
            phentsize,
            phnum,
        };
        if let Some(size) = size {
            let end = u64::from(phnum)
                .checked_mul(u64::from(phentsize))
                .and_then(|n| n.checked_add(phoff));
            if phnum > 0 && end.is_none_or(|e| e > size) {
                return Err(Error::PhdrOutOfFile {
                    phoff,
                    phnum,
                    phentsize,
                    size,
                });
            }
        }
        Ok(h)
    }

    /// The architecture in the names `uname -m` and virt-inspector use.
    pub fn arch(&self) -> Result<&'static str, Error> {
        let (b64, le) = (self.bits == 64, self.little_endian);
        Ok(match self.machine {
            2 => "sparc",
            3 | 6 => "i386",
            8 => match (b64, le) {
                (false, false) => "mips",
                (false, true) => "mipsel",
                (true, false) => "mips64",
                (true, true) => "mips64el",
            },
            15 => "hppa",
            20 => "ppc",
            21 if le => "ppc64le",
            21 => "ppc64",
            22 if b64 => "s390x",
            22 => "s390",
            40 => "armv7l",
            43 => "sparc64",
            50 => "ia64",
            62 => "x86_64",
            183 => "aarch64",
            243 if b64 => "riscv64",
            243 => "riscv32",
            258 => "loongarch64",
            0x9026 => "alpha",
            machine => return Err(Error::UnknownMachine { machine }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header64(machine: u16, le: bool) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(MAGIC);
        h[4] = 2;
        h[5] = if le { 1 } else { 2 };
        h[6] = 1;
        let m = if le {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(Header::parse(b"#!/bin/sh\n", None), Err(Error::NotElf));
        let mut h = header64(62, true);
        assert!(matches!(
            Header::parse(&h[..40], None),
            Err(Error::Truncated { len: 40, .. })
        ));
        h[4] = 7;
        assert_eq!(Header::parse(&h, None), Err(Error::BadClass(7)));
        let mut h = header64(62, true);
        h[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        h[56] = 9;
        h[54] = 56;
        assert!(matches!(
            Header::parse(&h, Some(4096)),
            Err(Error::PhdrOutOfFile { .. })
        ));
        let h = Header::parse(&header64(0x1234, false), None).unwrap();
        assert_eq!(h.arch(), Err(Error::UnknownMachine { machine: 0x1234 }));
    }
}
