//! The copy-on-write overlay: a qcow2 image whose backing file is the source. Reads fall through
//! to the source where the overlay holds nothing; writes go to the overlay only. The source chain
//! is always opened read-only (`block::open`), whatever the overlay is opened as.

use super::error::{Error, Result};
use super::qcow2::writer::{CreateOptions, Qcow2Writer};
use super::BlockDevice;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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
    create_as(source, None, overlay)
}

/// [`create`] with the source's format given (probed when `None`), as `qemu-img create -F`:
/// a source a description calls raw stays raw whatever its first bytes look like.
pub fn create_as(source: &Path, format: Option<super::Format>, overlay: &Path) -> Result<Overlay> {
    let src = super::open_as(source, format)?;
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

/// Creates an empty overlay at `overlay` over the image stored in place as the `size` bytes
/// at `offset` of `archive` (a disk inside an OVA). Its backing file is named as qemu names
/// such a window (`json:{"file": {"driver": "raw", "offset": …}}`, see `JsonWindow`), with
/// the archive's absolute path, so qemu-img reads the overlay as ferry does (except over a
/// `gzip` window, which qemu has no driver for).
pub fn create_over_member(
    archive: &Path,
    name: &str,
    offset: u64,
    size: u64,
    format: Option<super::Format>,
    gzip: bool,
    overlay: &Path,
) -> Result<Overlay> {
    let src = super::open_member(archive, name, offset, size, format, gzip)?;
    if overlay.exists() {
        return Err(Error::unsupported(
            overlay,
            "already exists; remove it first or choose another name for the overlay",
        ));
    }
    let abs = std::fs::canonicalize(archive).map_err(|source| Error::Open {
        path: archive.to_path_buf(),
        source,
    })?;
    let filename = abs.to_str().ok_or_else(|| {
        Error::unsupported(
            archive,
            "the path is not valid UTF-8, qcow2 cannot record it",
        )
    })?;
    let window = super::JsonWindow {
        filename: filename.to_string(),
        offset,
        size,
        gzip,
    };
    let opts = CreateOptions {
        size: src.len(),
        backing: Some((format!("json:{}", window.to_json()), src.info()?.format)),
        ..Default::default()
    };
    drop(src);
    Qcow2Writer::create(overlay, &opts)
}

/// Opens an existing overlay (ferry's or `qemu-img create -b`'s) read-write.
pub fn open(overlay: &Path) -> Result<Overlay> {
    Qcow2Writer::open(overlay)
}

/// How [`for_edit`] came to its overlay, for the line a user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The image itself is an overlay (a qcow2 with a backing file): edited in place.
    InPlace,
    /// A new overlay was created over the image.
    Created,
    /// An overlay made earlier over the same image, continued.
    Continued,
}

/// The writable device an edit of `image` goes to, and the overlay's path.
pub struct Edit {
    pub overlay: Arc<Overlay>,
    pub path: PathBuf,
    pub origin: Origin,
}

/// The default overlay of `image`: `NAME-overlay.qcow2` beside it (`vm.vmdk` →
/// `vm-overlay.qcow2`).
pub fn default_path(image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    image.with_file_name(format!("{stem}-overlay.qcow2"))
}

/// Whether the qcow2 at `overlay` has `image` (the same host file) as its backing file.
fn backs_onto(overlay: &Path, image: &Path) -> Result<bool> {
    let top = super::open(overlay)?;
    let Some(backing) = top.info()?.full_backing_filename else {
        return Ok(false);
    };
    let id = |p: &Path| {
        std::fs::metadata(p).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    Ok(matches!((id(&backing), id(image)), (Ok(a), Ok(b)) if a == b))
}

/// The overlay that edits of `image` go to; `image` (and its chain) is only ever opened
/// read-only. With `overlay` given, that file: continued when it already backs onto `image`,
/// created when it does not exist, refused otherwise. Without it, an `image` that is itself an
/// overlay (a qcow2 with a backing file) is written in place, so edits continue across mounts;
/// any other image gets [`default_path`], continued or created as above.
pub fn for_edit(image: &Path, overlay: Option<&Path>) -> Result<Edit> {
    let path = match overlay {
        Some(p) => p.to_path_buf(),
        None => {
            let top = super::open(image)?;
            let info = top.info()?;
            if info.format == "qcow2" && info.backing_filename.is_some() {
                drop(top);
                return Ok(Edit {
                    overlay: Arc::new(open(image)?),
                    path: image.to_path_buf(),
                    origin: Origin::InPlace,
                });
            }
            default_path(image)
        }
    };
    if path.exists() {
        if !backs_onto(&path, image)? {
            return Err(Error::unsupported(
                &path,
                format!(
                    "exists and is not an overlay of {}; remove it or choose another --overlay",
                    image.display()
                ),
            ));
        }
        return Ok(Edit {
            overlay: Arc::new(open(&path)?),
            path,
            origin: Origin::Continued,
        });
    }
    Ok(Edit {
        overlay: Arc::new(create(image, &path)?),
        path,
        origin: Origin::Created,
    })
}

/// The overlays of one guest's disks, one per image, in image order. Overlays this set created
/// are removed again when it is dropped before [`EditSet::keep`]: a command that fails before
/// writing anything leaves no file behind.
pub struct EditSet {
    edits: Vec<(PathBuf, Edit)>,
    kept: bool,
}

impl EditSet {
    /// Opens or creates the overlay of each image (see [`for_edit`]); `overlays` name them by
    /// position, the rest take their default.
    pub fn open(images: &[PathBuf], overlays: &[PathBuf]) -> Result<EditSet> {
        let mut set = EditSet {
            edits: Vec::new(),
            kept: false,
        };
        if overlays.len() > images.len() {
            return Err(Error::unsupported(
                &overlays[images.len()],
                format!(
                    "{} overlays for {} images: give at most one overlay per image",
                    overlays.len(),
                    images.len()
                ),
            ));
        }
        for (i, image) in images.iter().enumerate() {
            let e = for_edit(image, overlays.get(i).map(PathBuf::as_path))?;
            set.edits.push((image.clone(), e));
        }
        Ok(set)
    }

    /// The overlays as the guest's disks.
    pub fn disks(&self) -> Vec<Arc<dyn BlockDevice>> {
        self.edits
            .iter()
            .map(|(_, e)| -> Arc<dyn BlockDevice> { e.overlay.clone() })
            .collect()
    }

    /// Keeps the overlays from here on; one line per image saying where its writes go.
    pub fn keep(&mut self) -> Vec<String> {
        self.kept = true;
        self.edits
            .iter()
            .map(|(image, e)| {
                let how = match e.origin {
                    Origin::InPlace => "the image is an overlay: written in place".to_string(),
                    Origin::Created => format!("new overlay of {}", image.display()),
                    Origin::Continued => format!("continuing the overlay of {}", image.display()),
                };
                format!("writes go to {} ({how})", e.path.display())
            })
            .collect()
    }

    /// The overlays' paths, in image order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.edits.iter().map(|(_, e)| e.path.as_path())
    }

    /// Completes every overlay (whole clusters) and syncs it to the host disk.
    pub fn finish(mut self) -> Result<()> {
        self.kept = true;
        for (_, e) in &self.edits {
            e.overlay.finish()?;
            e.overlay.flush()?;
        }
        Ok(())
    }
}

impl Drop for EditSet {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for (_, e) in &self.edits {
            if e.origin == Origin::Created {
                let _ = std::fs::remove_file(&e.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> PathBuf {
        let p = dir.join("vm.img");
        let mut data = vec![0u8; 1 << 20];
        data[4096..4100].copy_from_slice(b"SRC!");
        std::fs::write(&p, &data).unwrap();
        p
    }

    #[test]
    fn default_overlay_is_created_then_continued() {
        let d = tempfile::tempdir().unwrap();
        let src = source(d.path());
        let before = std::fs::read(&src).unwrap();
        let e = for_edit(&src, None).unwrap();
        assert_eq!(e.origin, Origin::Created);
        assert_eq!(e.path, d.path().join("vm-overlay.qcow2"));
        e.overlay.write_at(b"EDIT", 4096).unwrap();
        drop(e);
        let e = for_edit(&src, None).unwrap();
        assert_eq!(e.origin, Origin::Continued);
        let mut b = [0u8; 4];
        e.overlay.read_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"EDIT");
        // The overlay given as the image is written in place.
        let o = e.path.clone();
        drop(e);
        let e = for_edit(&o, None).unwrap();
        assert_eq!((e.origin, e.path.as_path()), (Origin::InPlace, o.as_path()));
        assert_eq!(std::fs::read(&src).unwrap(), before);
    }

    #[test]
    fn an_unrelated_file_is_never_taken_as_the_overlay() {
        let d = tempfile::tempdir().unwrap();
        let src = source(d.path());
        let other = d.path().join("other.img");
        std::fs::write(&other, vec![1u8; 65536]).unwrap();
        let e = for_edit(&src, Some(&other)).err().unwrap();
        assert!(e.to_string().contains("not an overlay of"), "{e}");
        assert_eq!(std::fs::read(&other).unwrap(), vec![1u8; 65536]);
        // An overlay of another image is refused too.
        let elsewhere = d.path().join("b.img");
        std::fs::copy(&src, &elsewhere).unwrap();
        let ob = d.path().join("b.qcow2");
        drop(create(&elsewhere, &ob).unwrap());
        assert!(for_edit(&src, Some(&ob)).is_err());
    }

    #[test]
    fn an_edit_set_dropped_before_keep_removes_what_it_created() {
        let d = tempfile::tempdir().unwrap();
        let src = source(d.path());
        let set = EditSet::open(std::slice::from_ref(&src), &[]).unwrap();
        let path = set.paths().next().unwrap().to_path_buf();
        assert!(path.exists());
        drop(set);
        assert!(!path.exists());
        let mut set = EditSet::open(std::slice::from_ref(&src), &[]).unwrap();
        assert_eq!(set.keep().len(), 1);
        set.finish().unwrap();
        assert!(path.exists());
        // A continued overlay is never removed.
        drop(EditSet::open(std::slice::from_ref(&src), &[]).unwrap());
        assert!(path.exists());
    }
}
