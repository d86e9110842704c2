//! The copy-on-write overlay: a qcow2 image whose backing file is the source. Reads fall through
//! to the source where the overlay holds nothing; writes go to the overlay only. The source chain
//! is always opened read-only (`block::open`), whatever the overlay is opened as.

use super::error::{Error, Result};
use super::qcow2::writer::{CreateOptions, Qcow2Writer};
use std::path::{Component, Path, PathBuf};

/// An overlay is a read-write qcow2 image with a backing file.
pub type Overlay = Qcow2Writer;

/// The backing file name to record in `overlay` for `source`: relative to the overlay's
/// directory when they share more than the root (so the pair can be moved together, as qemu
/// resolves relative names against the overlay's directory), absolute otherwise.
pub fn backing_name(source: &Path, overlay: &Path) -> Result<String> {
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| Error::Open {
            path: p.to_path_buf(),
            source,
        })
    };
    let src = canon(source)?;
    let dir = match overlay.parent() {
        Some(d) if !d.as_os_str().is_empty() => canon(d)?,
        _ => canon(Path::new("."))?,
    };
    let a: Vec<Component> = dir.components().collect();
    let b: Vec<Component> = src.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let name: PathBuf = if common <= 1 {
        src.clone()
    } else {
        let mut p = PathBuf::new();
        for _ in common..a.len() {
            p.push("..");
        }
        for c in &b[common..] {
            p.push(c);
        }
        p
    };
    name.to_str().map(str::to_string).ok_or_else(|| {
        Error::unsupported(
            source,
            "the source path is not valid UTF-8, qcow2 cannot record it",
        )
    })
}

/// Creates an empty overlay at `overlay` over `source` (any format ferry reads, with its chain)
/// and opens it read-write. Refuses to replace an existing file.
pub fn create(source: &Path, overlay: &Path) -> Result<Overlay> {
    let src = super::open(source)?;
    if overlay.exists() {
        return Err(Error::unsupported(
            overlay,
            "already exists; remove it first or choose another name for the overlay",
        ));
    }
    let fmt = src.info()?.format;
    let opts = CreateOptions {
        size: src.len(),
        backing: Some((backing_name(source, overlay)?, fmt)),
        ..Default::default()
    };
    drop(src);
    Qcow2Writer::create(overlay, &opts)
}

/// Opens an existing overlay (ferry's or `qemu-img create -b`'s) read-write.
pub fn open(overlay: &Path) -> Result<Overlay> {
    Qcow2Writer::open(overlay)
}
