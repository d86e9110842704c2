//! `ferry commit OVERLAY --into-source`: writes what the overlay itself holds (its data and zero
//! clusters, not what it reads through) back into its backing file, a raw or qcow2 image opened
//! read-write for this only. VMDK sources are refused: ferry does not write VMDK in place.

use super::{Error, Result, Stats};
use crate::block::{self, BlockDevice, ExtentKind, Qcow2Writer};
use crate::bytes::{upto, wide};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes copied per read/write.
const CHUNK: usize = 4 << 20;

/// The source an overlay would be committed into: its path and format.
pub fn source_of(overlay: &Path) -> Result<(PathBuf, String)> {
    let top = block::open(overlay)?;
    let Some(b) = top.backing() else {
        return Err(Error::Commit(format!(
            "{} has no backing file: there is nothing to commit into",
            overlay.display()
        )));
    };
    let i = b.info()?;
    Ok((i.filename, i.format))
}

/// Writes the overlay's own data into its source. The overlay is left as it is (it now reads
/// the same as its source where it held data).
pub fn into_source(overlay: &Path) -> Result<Stats> {
    let start = Instant::now();
    let top = block::open(overlay)?;
    let (src_path, fmt) = source_of(overlay)?;
    let write_err = |what: &'static str| {
        let p = src_path.clone();
        move |source| Error::Output {
            path: p,
            what,
            source,
        }
    };
    enum Dst {
        Raw(std::fs::File),
        Qcow2(Box<Qcow2Writer>),
    }
    let mut _lock = None;
    let dst = match fmt.as_str() {
        "raw" => {
            // Readable too: the shared locks of qemu's protocol need it.
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&src_path)
                .map_err(write_err("cannot open the source for writing"))?;
            _lock = block::lock::acquire(&f, &src_path, block::lock::Access::Write)?;
            Dst::Raw(f)
        }
        "qcow2" => Dst::Qcow2(Box::new(Qcow2Writer::open(&src_path)?)),
        other => {
            return Err(Error::Commit(format!(
                "the source {} is {other}: ferry commits only into raw or qcow2 sources; \
                 use `ferry commit -O FMT DST` to write a new image instead",
                src_path.display()
            )))
        }
    };
    let size = top.len();
    let mut buf = vec![0u8; CHUNK];
    let zeros = vec![0u8; CHUNK];
    let (mut read, mut written) = (0u64, 0u64);
    block::for_each_extent(top.as_ref(), 0, size, |e| -> Result<()> {
        if e.depth != 0 || e.kind == ExtentKind::Hole {
            return Ok(());
        }
        let mut off = e.offset;
        while off < e.end() {
            let n = upto(e.end().saturating_sub(off), CHUNK);
            // Counts and offsets below stay inside the device's u64 size.
            let data = if e.kind == ExtentKind::Data {
                top.read_at(&mut buf[..n], off)?;
                read = read.saturating_add(wide(n));
                &buf[..n]
            } else {
                &zeros[..n]
            };
            match &dst {
                Dst::Raw(f) => f
                    .write_all_at(data, off)
                    .map_err(write_err("write failed"))?,
                Dst::Qcow2(w) => w.write_at(data, off)?,
            }
            written = written.saturating_add(wide(n));
            off = off.saturating_add(wide(n));
        }
        Ok(())
    })?;
    match &dst {
        Dst::Raw(f) => f.sync_all().map_err(write_err("cannot flush"))?,
        Dst::Qcow2(w) => w.flush()?,
    }
    Ok(Stats {
        virtual_size: size,
        bytes_read: read,
        bytes_written: written,
        bytes_skipped: size.saturating_sub(written),
        seconds: start.elapsed().as_secs_f64(),
    })
}
