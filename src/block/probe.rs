//! Format detection by content, never by file name: a `.img` may be qcow2 and a `.vmdk` may be a
//! text descriptor. Formats we recognise but do not read are refused by name rather than shown as
//! raw garbage.

use super::error::{Error, Result};
use super::file::ImageFile;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            other => Err(format!(
                "unknown image format '{other}' (expected raw, qcow2 or vmdk)"
            )),
        }
    }
}

/// Magic numbers of formats we do not read, so that such an image is refused by name.
const FOREIGN: &[(&[u8], usize, &str)] = &[
    (b"conectix", 0, "VHD (Hyper-V / Virtual PC)"),
    (b"vhdxfile", 0, "VHDX (Hyper-V)"),
    (b"<<< ", 0, "VDI (VirtualBox)"),
    (b"WithoutFreeSpace", 0, "Parallels"),
    (b"WithouFreSpacExt", 0, "Parallels"),
    (b"Bochs Virtual HD Image", 0, "Bochs"),
    (b"QED\0", 0, "QED"),
    (b"LUKS\xba\xbe", 0, "LUKS-encrypted image"),
    (b"#!/bin/sh\n#V2.0 Format", 0, "cloop"),
];

/// Decides the format of `file` from its first bytes.
pub(crate) fn probe(file: &ImageFile) -> Result<Format> {
    let mut head = vec![0u8; usize::try_from(file.len()).map_or(4096, |l| l.min(4096))];
    file.read_exact_at(&mut head, 0, "format probe")?;
    if head.starts_with(b"QFI\xfb") {
        if head.len() >= 8 && u32::from_be_bytes([head[4], head[5], head[6], head[7]]) == 1 {
            return Err(Error::unsupported(
                file.path(),
                "qcow version 1 images are not supported",
            ));
        }
        return Ok(Format::Qcow2);
    }
    if head.starts_with(b"KDMV")
        || head.starts_with(b"COWD")
        || head.starts_with(&super::vmdk::SESPARSE_MAGIC_BYTES)
    {
        return Ok(Format::Vmdk);
    }
    if super::vmdk::descriptor::looks_like_descriptor(&head) {
        return Ok(Format::Vmdk);
    }
    for (magic, at, name) in FOREIGN {
        if head.get(*at..).is_some_and(|h| h.starts_with(magic)) {
            return Err(Error::unsupported(
                file.path(),
                format!("this is a {name} image, which ferry does not read; convert it with qemu-img first"),
            ));
        }
    }
    // VHD keeps its "conectix" cookie in the footer (fixed VHDs have no header copy).
    if let Some(foot_at) = file.len().checked_sub(512) {
        let mut foot = [0u8; 8];
        file.read_exact_at(&mut foot, foot_at, "format probe")?;
        if &foot == b"conectix" {
            return Err(Error::unsupported(
                file.path(),
                "this is a VHD (Hyper-V / Virtual PC) image, which ferry does not read; convert it with qemu-img first",
            ));
        }
    }
    Ok(Format::Raw)
}
