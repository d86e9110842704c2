//! Profiles: the target choices a site makes once (where the disks go, their format and
//! allocation, how the source's networks map to the host's), kept in a TOML file and named on
//! the command line with `--profile NAME` (`~/.config/ferry/profiles/NAME.toml`, or
//! `$XDG_CONFIG_HOME/ferry/profiles/NAME.toml`) or `--profile FILE`. Options given on the
//! command line win over the profile; mappings given there are tried before the profile's.
//!
//! ```toml
//! output_dir = "/var/lib/libvirt/images"   # relative paths: from the current directory
//! format = "qcow2"                         # qcow2 | raw
//! allocation = "sparse"                    # sparse | preallocated
//! machine = "q35"                          # q35 | pc
//! disk_bus = "auto"                        # auto | virtio | sata | ide
//! nic_model = "auto"                       # auto | virtio | e1000
//! [networks]
//! "VM Network" = "default"
//! [bridges]
//! xenbr0 = "br0"
//! ```

use super::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A profile is a few lines; this bounds what a wrong path makes us read.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub output_dir: Option<PathBuf>,
    pub format: Option<String>,
    pub allocation: Option<String>,
    pub machine: Option<String>,
    pub disk_bus: Option<String>,
    pub nic_model: Option<String>,
    /// Source network → libvirt network.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// Source bridge → host bridge.
    #[serde(default)]
    pub bridges: BTreeMap<String, String>,
}

/// The directory of named profiles.
pub fn profiles_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferry").join("profiles"))
}

/// The file `--profile` means: a path when it names one (it has a `/` or ends in `.toml`), a
/// name in [`profiles_dir`] otherwise.
pub fn locate(arg: &str) -> Result<PathBuf> {
    if arg.contains('/') || arg.ends_with(".toml") {
        return Ok(PathBuf::from(arg));
    }
    let valid = !arg.is_empty()
        && !arg.starts_with('.')
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(Error::Profile {
            file: arg.into(),
            message: "a profile name has letters, digits, '.', '_' and '-' only".into(),
        });
    }
    let dir = profiles_dir().ok_or_else(|| Error::Profile {
        file: arg.into(),
        message: "neither HOME nor XDG_CONFIG_HOME is set: give the profile's path".into(),
    })?;
    Ok(dir.join(format!("{arg}.toml")))
}

/// Reads and checks the profile `arg` names.
pub fn load(arg: &str) -> Result<Profile> {
    let path = locate(arg)?;
    read(&path)
}

/// Reads and checks the profile at `path`.
pub fn read(path: &Path) -> Result<Profile> {
    let file = path.display().to_string();
    let err = |message: String| Error::Profile {
        file: file.clone(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(err(format!(
            "{} bytes, more than the {MAX_PROFILE_BYTES} a profile may have",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let p: Profile = toml::from_str(&text).map_err(|e| err(e.to_string().trim().to_string()))?;
    for (key, value, allowed) in [
        ("format", &p.format, &["qcow2", "raw"][..]),
        ("allocation", &p.allocation, &["sparse", "preallocated"][..]),
        ("machine", &p.machine, &["q35", "pc"][..]),
        (
            "disk_bus",
            &p.disk_bus,
            &["auto", "virtio", "sata", "ide"][..],
        ),
        ("nic_model", &p.nic_model, &["auto", "virtio", "e1000"][..]),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !allowed.contains(v)) {
            return Err(err(format!(
                "{key} = {v:?}: expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    for (what, map) in [("networks", &p.networks), ("bridges", &p.bridges)] {
        if map.iter().any(|(k, v)| k.is_empty() || v.is_empty()) {
            return Err(err(format!("[{what}]: empty names cannot be mapped")));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("site.toml");
        std::fs::write(
            &f,
            "output_dir = \"/srv/vms\"\nformat = \"raw\"\nallocation = \"preallocated\"\n\
             [networks]\n\"VM Network\" = \"default\"\n[bridges]\nxenbr0 = \"br0\"\n",
        )
        .unwrap();
        let p = read(&f).unwrap();
        assert_eq!(p.output_dir.as_deref(), Some(Path::new("/srv/vms")));
        assert_eq!(p.format.as_deref(), Some("raw"));
        assert_eq!(
            p.networks.get("VM Network").map(String::as_str),
            Some("default")
        );
        assert_eq!(p.bridges.get("xenbr0").map(String::as_str), Some("br0"));

        std::fs::write(&f, "format = \"vmdk\"\n").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("format") && e.contains("qcow2"), "{e}");
        std::fs::write(&f, "outptu_dir = \"/x\"\n").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("outptu_dir"), "{e}");
        assert!(locate("../x").unwrap().ends_with("../x"));
        assert!(locate("bad name").is_err());
        assert!(locate("site")
            .unwrap()
            .ends_with("ferry/profiles/site.toml"));
    }
}
