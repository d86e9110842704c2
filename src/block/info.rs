//! What a layer says about itself for `ferry info`: `LayerInfo`, a report with JSON values,
//! kept out of `BlockDevice` (which is only I/O) in a trait of its own that every device also
//! implements, and `describe`, which adds the table scan (`allocated`).

use super::{BlockDevice, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One layer of a chain described for `ferry info` (the fields of `qemu-img info`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerInfo {
    pub filename: PathBuf,
    pub format: String,
    /// qcow2 "v2"/"v3"; VMDK createType.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    pub virtual_size: u64,
    /// Bytes the layer's files occupy on the host (st_blocks).
    pub disk_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Bytes of the virtual disk this layer itself maps (data or preallocated zeros).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated: Option<u64>,
    /// The backing/parent reference as written in the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// The path it resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_format: Option<String>,
    /// Every host file that holds this layer's data (VMDK extents).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PathBuf>,
    /// Format-specific fields, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub specific: Vec<(String, serde_json::Value)>,
    /// Things a careful user should know (CID mismatch, dirty bit, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The image says it was not closed cleanly (the qcow2 dirty bit): qemu's "dirty-flag".
    pub dirty: bool,
    /// qemu-img's "format-specific" object, `{"type": FORMAT, "data": {...}}` with qemu's keys
    /// (and ferry-only ones under names qemu does not use); None where qemu-img prints none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_specific: Option<serde_json::Value>,
}

impl LayerInfo {
    /// The layer as `qemu-img info --output=json` describes it (qapi ImageInfo: kebab-case
    /// keys, "format-specific" as type and data), so scripts written for qemu-img read it;
    /// then ferry's own "allocated", "files" and "warnings", names qemu does not use. qemu's
    /// "children" (the protocol layer under the format) is left out.
    pub fn qemu_json(&self) -> serde_json::Value {
        use serde_json::{json, Value};
        let path = |p: &Path| Value::from(p.to_string_lossy().into_owned());
        let mut o = serde_json::Map::new();
        o.insert("virtual-size".into(), json!(self.virtual_size));
        o.insert("filename".into(), path(&self.filename));
        o.insert("format".into(), json!(self.format));
        o.insert("actual-size".into(), json!(self.disk_size));
        if let Some(c) = self.cluster_size {
            o.insert("cluster-size".into(), json!(c));
        }
        if let Some(s) = &self.qemu_specific {
            o.insert("format-specific".into(), s.clone());
        }
        if let Some(b) = &self.backing_filename {
            o.insert("backing-filename".into(), json!(b));
        }
        if let Some(b) = &self.full_backing_filename {
            o.insert("full-backing-filename".into(), path(b));
        }
        if let Some(f) = &self.backing_format {
            o.insert("backing-filename-format".into(), json!(f));
        }
        o.insert("dirty-flag".into(), json!(self.dirty));
        if let Some(a) = self.allocated {
            o.insert("allocated".into(), json!(a));
        }
        if !self.files.is_empty() {
            let files: Vec<Value> = self.files.iter().map(|f| path(f)).collect();
            o.insert("files".into(), Value::Array(files));
        }
        if !self.warnings.is_empty() {
            o.insert("warnings".into(), json!(self.warnings));
        }
        Value::Object(o)
    }
}

/// The layer's own description. `BlockDevice` requires it, so any layer of a chain answers.
pub trait Describe {
    /// This layer alone, for `ferry info` and callers that need its files. Cheap: reads no
    /// tables (`allocated` is left None; see `describe`).
    fn info(&self) -> Result<LayerInfo>;

    /// Bytes of the virtual disk this layer itself maps. Scans the image's tables.
    fn allocated(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// `info()` with `allocated` filled in: the full description `ferry info` prints.
pub fn describe(layer: &dyn BlockDevice) -> Result<LayerInfo> {
    let mut i = layer.info()?;
    i.allocated = layer.allocated()?;
    Ok(i)
}
