//! `ferry diff`: what changed between an overlay and its backing chain, or between two images
//! of one guest (like virt-diff), path by path; `--unified` adds text diffs.

use super::{open, JsonOut};
use anyhow::{bail, Context, Result};
use ferry::block::{BlockDevice, Format};
use ferry::forensics::diff::{self, Change, Kind};
use ferry::fs::{FileType, Filesystem};
use ferry::guest::{changed, Guest, View};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Text files larger than this are reported, not diffed line by line.
const MAX_UNIFIED: u64 = 4 << 20;

#[derive(clap::Args)]
pub(crate) struct DiffArgs {
    /// An overlay (compared with its backing chain), or the old image of the guest.
    pub old: PathBuf,
    /// The new image of the guest (absent: OLD is an overlay, and its backing is the old).
    pub new: Option<PathBuf>,
    /// The operating system to compare when the disks hold several: the device of its /.
    #[arg(long)]
    pub root: Option<String>,
    /// Show a `diff -u` of each modified text file (up to 4 MiB).
    #[arg(short = 'u', long)]
    pub unified: bool,
    /// Compare the bytes of every file, not only of those whose size or times differ.
    #[arg(long)]
    pub content: bool,
    /// Report access-time changes too.
    #[arg(long)]
    pub atime: bool,
    #[command(flatten)]
    pub json: JsonOut,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Read the images even while another process writes them (qemu-img's -U).
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Walk both whole trees even for an overlay (the check of the fast path, and timing).
    #[arg(long, hide = true)]
    pub full_walk: bool,
}

/// The guest on `disk` and its tree, as `ls` shows it.
fn tree(disk: &Arc<dyn BlockDevice>, root: Option<&str>) -> Result<(Guest, View)> {
    let guest = Guest::open(std::slice::from_ref(disk))?;
    let view = guest.view(&[], root)?;
    Ok((guest, view))
}

pub(crate) fn diff(a: DiffArgs) -> Result<()> {
    // Only an overlay over its own backing differs from it exactly where its clusters are.
    let overlay = a.new.is_none();
    let (old_dev, new_dev) = match &a.new {
        Some(new) => (
            open(&a.old, a.format).with_context(|| format!("opening {}", a.old.display()))?,
            open(new, a.format).with_context(|| format!("opening {}", new.display()))?,
        ),
        None => {
            let top =
                open(&a.old, a.format).with_context(|| format!("opening {}", a.old.display()))?;
            let Some(base) = top.backing().cloned() else {
                bail!(
                    "{} has no backing file: give it and the image to compare it with",
                    a.old.display()
                );
            };
            (base, top)
        }
    };
    let (old_guest, old_view) = tree(&old_dev, a.root.as_deref()).context("the old guest")?;
    let (new_guest, new_view) = tree(&new_dev, a.root.as_deref()).context("the new guest")?;
    let (old, new) = (old_view.fs.clone(), new_view.fs.clone());
    let opts = diff::Options {
        content: a.content,
        atime: a.atime,
    };
    // `--content` reads every file, whatever the inodes say: the whole walk.
    let changed = if overlay && !a.content && !a.full_walk {
        let side = |disk, guest, view| changed::Side { disk, guest, view };
        match changed::changed_inodes(
            &side(&old_dev, &old_guest, &old_view),
            &side(&new_dev, &new_guest, &new_view),
        ) {
            Ok(c) => {
                log::info!(
                    "comparing the {} inodes the overlay may have changed",
                    c.len()
                );
                Some(c)
            }
            Err(why) => {
                log::info!("comparing the whole trees: {why}");
                None
            }
        }
    } else {
        None
    };
    let (changes, errors) = match &changed {
        Some(c) => diff::diff_changed(old.as_ref(), new.as_ref(), c, opts),
        None => diff::diff(old.as_ref(), new.as_ref(), opts),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json.on() {
        serde_json::to_writer_pretty(&mut out, &changes)?;
        writeln!(out)?;
    } else {
        for c in &changes {
            write_change(&mut out, c)?;
            if a.unified && c.what.contains(&"content") {
                write_unified(&mut out, old.as_ref(), new.as_ref(), c)?;
            }
        }
    }
    out.flush()?;
    for e in &errors {
        eprintln!("ferry: {e}");
    }
    if !errors.is_empty() {
        bail!(
            "{} paths could not be compared (the rest is listed)",
            errors.len()
        );
    }
    Ok(())
}

fn write_change(out: &mut impl Write, c: &Change) -> std::io::Result<()> {
    let p = String::from_utf8_lossy(&c.path);
    let what = if c.what.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.what.join(", "))
    };
    match c.kind {
        Kind::Added => writeln!(out, "+ {p}"),
        Kind::Removed => writeln!(out, "- {p}"),
        Kind::Modified => writeln!(out, "= {p}{what}"),
        Kind::Renamed => {
            let from = String::from_utf8_lossy(c.from.as_deref().unwrap_or_default());
            writeln!(out, "> {from} -> {p}{what}")
        }
    }
}

/// The `diff -u` of a modified file, when both versions are text of a readable size.
fn write_unified(
    out: &mut impl Write,
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    c: &Change,
) -> Result<()> {
    let (Some(a), Some(b)) = (&c.old, &c.new) else {
        return Ok(());
    };
    if a.kind != FileType::RegularFile || a.size > MAX_UNIFIED || b.size > MAX_UNIFIED {
        return Ok(());
    }
    let x = read_all(old, a.ino, a.size)?;
    let y = read_all(new, b.ino, b.size)?;
    if x.contains(&0) || y.contains(&0) {
        return Ok(());
    }
    let from = c.from.as_deref().unwrap_or(&c.path);
    writeln!(out, "--- a{}", String::from_utf8_lossy(from))?;
    writeln!(out, "+++ b{}", String::from_utf8_lossy(&c.path))?;
    out.write_all(ferry::fix::diff::unified(&x, &y, 3).as_bytes())?;
    Ok(())
}

fn read_all(fs: &dyn Filesystem, ino: u64, size: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(size)?];
    let mut off = 0;
    while off < buf.len() {
        let n = fs.read(ino, u64::try_from(off)?, &mut buf[off..])?;
        if n == 0 {
            break;
        }
        off = off.saturating_add(n).min(buf.len());
    }
    buf.truncate(off);
    Ok(buf)
}
