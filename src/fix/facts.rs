//! The facts rules are evaluated against. The data types belong to the guest layer, which
//! fills them from inspection ([`crate::guest::facts`], re-exported here); this module adds what
//! only the fix engine needs: template keys and loading a facts file or the facts a mount
//! published.

pub use crate::guest::facts::*;

use super::error::{Error, Result};
use std::path::Path;

/// Template keys a rule may use as `{{key}}`.
pub const TEMPLATE_KEYS: &[&str] = &[
    "os",
    "distro",
    "family",
    "version",
    "major",
    "minor",
    "init",
    "bootloader",
    "source",
    "target",
    "target_bus",
    "disk_prefix",
    "arch",
    "root.spec",
    "root.device",
    "root.uuid",
    "root.label",
    "root.fstype",
];

/// The value of a template key; `None` when the fact is not known.
pub fn template_value(facts: &Facts, key: &str) -> Option<String> {
    let root = facts.root.as_ref();
    let known = |s: &str| (!s.is_empty() && s != "unknown").then(|| s.to_string());
    match key {
        "os" => known(facts.os.as_str()),
        "distro" => known(&facts.distro),
        "family" => known(&facts.family()),
        "version" => facts.version.as_ref().map(Version::to_string),
        "major" => facts.version.as_ref().map(|v| v.major().to_string()),
        "minor" => facts.version.as_ref().map(|v| v.minor().to_string()),
        "init" => known(facts.init.as_str()),
        "bootloader" => known(facts.bootloader.as_str()),
        "source" => known(facts.source.as_str()),
        "target" => Some(facts.target.as_str().to_string()),
        "target_bus" => Some(facts.target_bus.as_str().to_string()),
        "disk_prefix" => Some(facts.target_bus.disk_prefix().to_string()),
        "arch" => facts.arch.clone(),
        "root.spec" => root.and_then(|r| known(&r.spec)),
        "root.device" => root.and_then(|r| r.device.clone()),
        "root.uuid" => root.and_then(|r| r.uuid.clone()),
        "root.label" => root.and_then(|r| r.label.clone()),
        "root.fstype" => root.and_then(|r| r.fstype.clone()),
        _ => None,
    }
}

/// Overlays the fields present in a facts file (JSON, or TOML when the name ends in
/// `.toml`) on `self`: a file may give only the device map and keep the detected distro.
pub fn merge_file(facts: Facts, path: &Path) -> Result<Facts> {
    let file = path.display().to_string();
    let err = |message: String| Error::Facts {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let overlay: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        serde_json::to_value(v).map_err(|e| err(e.to_string()))?
    } else {
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))?
    };
    if !overlay.is_object() {
        return Err(err("expected an object of facts".into()));
    }
    facts.merge_value(overlay).map_err(err)
}

/// The facts a ferry mount published for `mountpoint`, if any (and if they name it).
pub fn load_published(mountpoint: &Path) -> Result<Option<serde_json::Value>> {
    let path = published_path(mountpoint);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Facts {
                file: path.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Facts {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    if v.get("mountpoint").and_then(|m| m.as_str()) != Some(&*canon.to_string_lossy()) {
        return Ok(None);
    }
    Ok(v.get("facts").cloned())
}

/// Writes the facts of a mounted guest where `ferry fix MOUNTPOINT` looks for them
/// ([`published_path`]); the path, or None when that place is not writable (a non-root user
/// without FERRY_RUNTIME_DIR), which only costs `ferry fix` the inspection's facts.
pub fn publish(mountpoint: &Path, facts: &Facts) -> Option<std::path::PathBuf> {
    let path = published_path(mountpoint);
    let canon = std::fs::canonicalize(mountpoint).ok()?;
    let doc = serde_json::json!({"mountpoint": canon, "facts": facts});
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
    };
    match write() {
        Ok(()) => Some(path),
        Err(e) => {
            log::info!(
                "not publishing the guest's facts at {}: {e}",
                path.display()
            );
            None
        }
    }
}
