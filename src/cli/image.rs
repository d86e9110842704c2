//! `ferry info` and `ferry map`: an image and its chain, as qemu-img shows them.

use super::{human_size, open, JsonOut};
use anyhow::Result;
use ferry::block::{self, ExtentKind, Format, LayerInfo};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct InfoArgs {
    pub image: PathBuf,
    /// Image format of the top layer (raw, qcow2, vmdk); probed from content if absent.
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    #[command(flatten)]
    pub json: JsonOut,
    /// With JSON: every layer of the chain, as an array (the text always shows them all).
    #[arg(long)]
    pub backing_chain: bool,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

#[derive(clap::Args)]
pub(crate) struct MapArgs {
    pub image: PathBuf,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    #[command(flatten)]
    pub json: JsonOut,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

pub(crate) fn info(a: InfoArgs) -> Result<()> {
    let (json, backing_chain) = (a.json.on(), a.backing_chain);
    let dev = open(&a.image, a.format)?;
    let layers: Vec<LayerInfo> = block::chain(&dev)
        .iter()
        .map(|l| block::describe(l.as_ref()))
        .collect::<Result<_, _>>()?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut v: Vec<serde_json::Value> = layers.iter().map(LayerInfo::qemu_json).collect();
        if backing_chain {
            serde_json::to_writer_pretty(&mut out, &v)?;
        } else {
            serde_json::to_writer_pretty(&mut out, &v.swap_remove(0))?;
        }
        writeln!(out)?;
        return Ok(());
    }
    for (i, l) in layers.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        write_layer(&mut out, l)?;
    }
    Ok(())
}

fn write_layer(out: &mut impl Write, l: &LayerInfo) -> std::io::Result<()> {
    writeln!(out, "image: {}", l.filename.display())?;
    match &l.subformat {
        Some(s) => writeln!(out, "file format: {} ({s})", l.format)?,
        None => writeln!(out, "file format: {}", l.format)?,
    }
    writeln!(
        out,
        "virtual size: {} ({} bytes)",
        human_size(l.virtual_size, 3),
        l.virtual_size
    )?;
    writeln!(out, "disk size: {}", human_size(l.disk_size, 3))?;
    if let Some(c) = l.cluster_size {
        writeln!(out, "cluster_size: {c}")?;
    }
    if let Some(a) = l.allocated {
        writeln!(out, "allocated: {} ({a} bytes)", human_size(a, 3))?;
    }
    if let Some(b) = &l.backing_filename {
        match &l.full_backing_filename {
            Some(full) => writeln!(out, "backing file: {b} (actual path: {})", full.display())?,
            None => writeln!(out, "backing file: {b}")?,
        }
    }
    if let Some(f) = &l.backing_format {
        writeln!(out, "backing file format: {f}")?;
    }
    if l.files.len() > 1 {
        writeln!(out, "files:")?;
        for f in &l.files {
            writeln!(out, "    {}", f.display())?;
        }
    }
    if !l.specific.is_empty() {
        writeln!(out, "Format specific information:")?;
        for (k, v) in &l.specific {
            match v {
                serde_json::Value::String(s) => writeln!(out, "    {k}: {s}")?,
                other => writeln!(out, "    {k}: {other}")?,
            }
        }
    }
    for w in &l.warnings {
        writeln!(out, "warning: {w}")?;
    }
    Ok(())
}

pub(crate) fn map(a: MapArgs) -> Result<()> {
    let json = a.json.on();
    let dev = open(&a.image, a.format)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    if json {
        write!(out, "[")?;
    } else {
        writeln!(
            out,
            "{:<20}{:<20}{:<7}{:<6}{:<20}",
            "Offset", "Length", "Kind", "Depth", "Mapped to"
        )?;
    }
    block::for_each_extent(dev.as_ref(), 0, dev.len(), |e| -> Result<()> {
        if json {
            // Field for field what `qemu-img map --output=json` prints, so scripts can switch.
            let (present, zero, data) = match e.kind {
                ExtentKind::Data => (true, false, true),
                ExtentKind::Zero => (true, true, false),
                ExtentKind::Hole => (false, true, false),
            };
            let offset = e
                .host_offset
                .map(|o| format!(", \"offset\": {o}"))
                .unwrap_or_default();
            write!(
                out,
                "{}{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {present}, \"zero\": {zero}, \"data\": {data}, \"compressed\": {}{offset}}}",
                if first { "" } else { ",\n" },
                e.offset, e.length, e.depth, e.compressed
            )?;
        } else {
            let kind = match e.kind {
                ExtentKind::Data if e.compressed => "data*",
                ExtentKind::Data => "data",
                ExtentKind::Zero => "zero",
                ExtentKind::Hole => "hole",
            };
            let host = e.host_offset.map(|o| format!("{o:#x}")).unwrap_or_default();
            writeln!(
                out,
                "{:<#20x}{:<#20x}{kind:<7}{:<6}{host}",
                e.offset, e.length, e.depth
            )?;
        }
        first = false;
        Ok(())
    })?;
    if json {
        writeln!(out, "]")?;
    }
    out.flush()?;
    Ok(())
}
