//! `ferry hash` and `ferry timeline` (issue 18): digests and a body file, only reading.

use super::{open, JsonOut};
use anyhow::{Context, Result};
use ferry::block::Format;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub(crate) struct HashArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// sha256, sha1 or md5.
    #[arg(long, default_value = "sha256")]
    pub algo: ferry::forensics::Algo,
    /// A manifest of the guest's regular files (paths relative to its /; the IMAGEs are the
    /// disks of one guest) instead of the disks' digests.
    #[arg(long, conflicts_with_all = ["json", "output"])]
    pub files: bool,
    /// With --files: the operating system to hash when the disks hold several (its / device).
    #[arg(long, requires = "files")]
    pub root: Option<String>,
    #[command(flatten)]
    pub json: JsonOut,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

#[derive(clap::Args)]
pub(crate) struct TimelineArgs {
    /// The guest's disk images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The operating system to list when the disks hold several: the device of its /.
    #[arg(long)]
    pub root: Option<String>,
    /// Fill the first column with each regular file's digest (md5, sha1 or sha256).
    #[arg(long)]
    pub hash: Option<ferry::forensics::Algo>,
    /// JSON Lines instead of a body file: one object a path (seconds as numbers with their
    /// fraction, and the nanoseconds apart), as Timesketch and jq take them.
    #[arg(long)]
    pub json: bool,
    /// Also every filesystem outside the operating system's layout (other partitions, other
    /// roots, data disks), its paths prefixed with its device: `/dev/sdb1:/path`.
    #[arg(long)]
    pub all_filesystems: bool,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

/// The guest the IMAGEs make up, as `ls`/`cat` show it; whether it is a composed tree.
fn guest_fs(
    images: &[PathBuf],
    format: Option<Format>,
    root: Option<&str>,
) -> Result<(Arc<dyn ferry::fs::Filesystem>, bool)> {
    let disks = images
        .iter()
        .map(|p| open(p, format).with_context(|| format!("opening {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let guest = ferry::guest::Guest::open(&disks)?;
    let view = guest.view(&[], root)?;
    // Facts exist exactly when an operating system was found and composed as a Tree.
    Ok((view.fs, view.facts.is_some()))
}

fn report(errors: &[String]) -> Result<()> {
    for e in errors {
        eprintln!("ferry: {e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} paths could not be read (the rest is listed)",
            errors.len()
        )
    }
}

pub(crate) fn hash(a: &HashArgs) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.files {
        let (fs, _) = guest_fs(&a.images, a.format, a.root.as_deref())?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let errors =
            ferry::forensics::digest::write_manifest(fs.as_ref(), a.algo, threads, &mut out)?;
        out.flush()?;
        return report(&errors);
    }
    let mut rows = Vec::new();
    for p in &a.images {
        let dev = open(p, a.format).with_context(|| format!("opening {}", p.display()))?;
        let d = ferry::forensics::digest::hash_device(dev.as_ref(), a.algo)
            .with_context(|| format!("hashing {}", p.display()))?;
        if a.json.on() {
            rows.push(serde_json::json!({
                "image": p, "algo": a.algo.name(), "size": dev.len(), "digest": d,
            }));
        } else {
            let path = p.as_os_str().as_encoded_bytes();
            out.write_all(&ferry::forensics::digest::sum_line(&d, path))?;
        }
    }
    if a.json.on() {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn timeline(a: &TimelineArgs) -> Result<()> {
    use ferry::forensics::bodyfile;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut errors = Vec::new();
    let opts = bodyfile::Options {
        hash: a.hash,
        json: a.json,
        ..Default::default()
    };
    if !a.all_filesystems {
        let (fs, composed) = guest_fs(&a.images, a.format, a.root.as_deref())?;
        let opts = bodyfile::Options {
            local_inodes: composed,
            ..opts
        };
        errors = bodyfile::write(fs.as_ref(), opts, &mut out)?;
    } else {
        let disks = a
            .images
            .iter()
            .map(|p| open(p, a.format).with_context(|| format!("opening {}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        let guest = ferry::guest::Guest::open(&disks)?;
        // The operating system's tree first, as the guest sees it; a guest without one (or
        // with several and no --root) has only its filesystems one by one.
        let mut done = Vec::new();
        match guest.view(&[], a.root.as_deref()) {
            Ok(view) => {
                let opts = bodyfile::Options {
                    local_inodes: view.facts.is_some(),
                    ..opts
                };
                errors.extend(bodyfile::write(view.fs.as_ref(), opts, &mut out)?);
                done = view.devices;
            }
            Err(e) => log::info!("no single operating system tree ({e}): filesystems one by one"),
        }
        for f in &guest.inspection.filesystems {
            if done.contains(&f.device) {
                continue;
            }
            if f.fstype == "swap" {
                continue;
            }
            if !f.readable {
                // Said, but not a failure of the timeline: nothing of it can be listed.
                log::warn!(
                    "{}: {} not listed: {}",
                    f.device,
                    f.fstype,
                    f.problem.as_deref().unwrap_or("ferry cannot read it")
                );
                continue;
            }
            match guest.view(std::slice::from_ref(&f.device), None) {
                Ok(view) => {
                    let prefix = format!("{}:", f.device);
                    let opts = bodyfile::Options {
                        prefix: prefix.as_bytes(),
                        local_inodes: true,
                        ..opts
                    };
                    errors.extend(bodyfile::write(view.fs.as_ref(), opts, &mut out)?);
                }
                Err(e) => errors.push(format!("{}: {e}", f.device)),
            }
        }
    }
    out.flush()?;
    report(&errors)
}
