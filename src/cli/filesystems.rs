//! `ferry filesystems`: the guest's volumes as a table (like virt-filesystems --long).

use super::{open, JsonOut};
use anyhow::{Context, Result};
use ferry::block::Format;
use ferry::volume;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct FilesystemsArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Image format of every image (raw, qcow2, vmdk); probed from content if absent.
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Also list disks, partitions, PVs, unrecognised volumes and free space.
    #[arg(long)]
    pub all: bool,
    /// JSON: every field of every volume.
    #[command(flatten)]
    pub json: JsonOut,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

pub(crate) fn filesystems(a: FilesystemsArgs) -> Result<()> {
    let (format, all, json) = (a.format, a.all, a.json.on());
    let disks = a
        .images
        .iter()
        .map(|p| open(p, format).with_context(|| format!("opening {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let vols: Vec<volume::Volume> = volume::discover(&disks)?
        .into_iter()
        .filter(|v| all || v.content.as_ref().is_some_and(|c| c.is_filesystem_like()))
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &vols)?;
        writeln!(out)?;
    } else {
        let rows: Vec<[String; 8]> = vols.iter().map(|v| volume_row(v, all)).collect();
        let header = [
            "Name", "Type", "VFS-type", "Label", "UUID", "Size", "Parent", "Details",
        ]
        .map(String::from);
        write_columns(&mut out, std::iter::once(&header).chain(rows.iter()))?;
    }
    for v in &vols {
        for w in &v.warnings {
            eprintln!("ferry: warning: {w}");
        }
        if let Some(e) = &v.error {
            eprintln!("ferry: {}: {e}", v.name);
        }
    }
    Ok(())
}

/// One row of `ferry filesystems`: the kind of volume under --all, "filesystem" otherwise.
fn volume_row(v: &volume::Volume, all: bool) -> [String; 8] {
    use volume::VolumeKind as K;
    let kind = if !all {
        "filesystem"
    } else {
        match v.kind {
            K::Disk => "device",
            K::Partition if v.pv.is_some() => "pv",
            K::Partition => "partition",
            K::ExtendedPartition => "extended",
            K::LogicalVolume => "lv",
            K::Free => "free",
        }
    };
    let c = v.content.as_ref();
    let or_dash = |s: Option<&String>| s.cloned().unwrap_or_else(|| "-".into());
    let mut details = Vec::new();
    if let Some(t) = &v.table {
        details.push(format!(
            "{} sector={} id={}",
            t.kind.as_str(),
            t.sector_size,
            t.id
        ));
    }
    if let Some(p) = &v.partition {
        let name = p
            .type_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        details.push(format!(
            "{} #{} type={}{name}",
            p.table.as_str(),
            p.number,
            p.type_id
        ));
        if let Some(n) = &p.name {
            details.push(format!("name={n:?}"));
        }
        if let Some(u) = &p.uuid {
            details.push(format!("partuuid={u}"));
        }
    }
    if let Some(l) = &v.lvm {
        details.push(format!(
            "vg={} lv={} segments={}",
            l.vg,
            l.lv,
            l.segment_types.join(",")
        ));
        if let Some(p) = &l.problem {
            details.push(format!("unreadable: {p}"));
        }
    }
    if let Some(pv) = &v.pv {
        details.push(format!(
            "pv={} vg={}",
            pv.uuid,
            pv.vg.as_deref().unwrap_or("-")
        ));
    }
    if v.error.is_some() {
        details.push("unreadable table (see below)".into());
    }
    [
        v.name.clone(),
        kind.into(),
        c.map_or_else(|| "unknown".into(), |c| c.fstype.clone()),
        or_dash(c.and_then(|c| c.label.as_ref())),
        or_dash(c.and_then(|c| c.uuid.as_ref())),
        v.size.to_string(),
        or_dash(v.parent.as_ref()),
        details.join(" "),
    ]
}

/// Writes rows as left-aligned columns separated by two spaces.
fn write_columns<'a>(
    out: &mut impl Write,
    rows: impl Iterator<Item = &'a [String; 8]> + Clone,
) -> std::io::Result<()> {
    let mut width = [0usize; 8];
    for r in rows.clone() {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, (w, c)) in width.iter().zip(r).enumerate() {
            if i == r.len().saturating_sub(1) {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
