//! Source VM descriptions (issue 15, the metadata half): what a VMware `.vmx`, a Xen xl/xm
//! `.cfg` or a libvirt domain XML says about a guest, read into one model ([`Source`]), and
//! the libvirt domain XML for KVM written from that model.
//!
//! This layer sits beside `convert`: it may use the lower layers; `v2v` and the CLI use it.
//! Every parser reports errors with their position (file, line, column), because these files
//! are written by hand as often as by tools.

pub mod libvirt;
pub mod model;
pub mod ova;
pub mod ovf;
pub mod vmx;
pub mod xen;

pub use model::{Bus, DeviceKind, Disk, Error, Firmware, Nic, PvBoot, Source};

use std::path::Path;

/// Which parser reads a source description (`ferry v2v -i KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Vmx,
    Xen,
    Libvirt,
    /// An OVA (tar), a directory with an .ovf, or the .ovf itself.
    Ova,
}

impl std::str::FromStr for InputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vmx" => Ok(Self::Vmx),
            "xen" => Ok(Self::Xen),
            "libvirt" => Ok(Self::Libvirt),
            "ova" | "ovf" => Ok(Self::Ova),
            other => Err(format!(
                "input kind '{other}' is not supported (known: vmx, xen, libvirt, ova)"
            )),
        }
    }
}

/// Largest description file read: real ones are a few KiB; this bounds memory on a wrong path.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Read a description file of the given kind. VMX file names are resolved against the .vmx's
/// directory and the datastore map (`[NAME] path` → `DIR/path`).
pub fn read_file(
    kind: InputKind,
    path: &Path,
    datastores: &[(String, std::path::PathBuf)],
) -> Result<Source, Error> {
    match kind {
        InputKind::Vmx => {
            let (file, bytes) = read_text(path)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let resolver = vmx::PathResolver {
                vmx_dir: dir.to_path_buf(),
                datastores: datastores.to_vec(),
            };
            vmx::parse(&file, &bytes, &|name| resolver.resolve(name))
        }
        InputKind::Xen => {
            let (file, bytes) = read_text(path)?;
            xen::parse(&file, &bytes)
        }
        InputKind::Libvirt => {
            let (file, bytes) = read_text(path)?;
            libvirt::parse(&file, &bytes)
        }
        InputKind::Ova => Ok(ova::open(path)?.source()),
    }
}

/// A description file's name (for messages) and bytes, refused past `MAX_FILE_BYTES`.
fn read_text(path: &Path) -> Result<(String, Vec<u8>), Error> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(&file, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::at(
            &file,
            1,
            1,
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} a description may have",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(&file, e))?;
    Ok((file, bytes))
}
