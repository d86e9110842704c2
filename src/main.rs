//! The `ferry` command line: one small function per subcommand; the work is in the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry::block::{self, BlockDevice, ExtentKind, Format, LayerInfo};
use ferry::volume;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Open, inspect and convert virtual machine disk images, in userspace"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe an image and its whole backing chain (like `qemu-img info --backing-chain`).
    Info {
        image: PathBuf,
        /// Image format of the top layer (raw, qcow2, vmdk); probed from content if absent.
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        #[arg(long)]
        json: bool,
    },
    /// Show what each range of the virtual disk holds (like `qemu-img map`).
    Map {
        image: PathBuf,
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        /// qemu-img map --output=json compatible output.
        #[arg(long)]
        json: bool,
    },
    /// Write the image out in another format (sparse: holes and zeros are not written).
    Convert {
        src: PathBuf,
        /// Output format (raw).
        #[arg(short = 'O', long = "output-format")]
        output_format: String,
        dst: PathBuf,
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        /// Show a progress bar (on a terminal).
        #[arg(short = 'p', long)]
        progress: bool,
        /// Worker threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print a JSON summary (bytes read, written, skipped, seconds).
        #[arg(long)]
        json: bool,
        /// fsync the output before exiting (like `conv=fsync`); off by default, as in qemu-img.
        #[arg(long)]
        sync: bool,
    },
    /// List the guest's filesystems, swap and logical volumes (like `virt-filesystems --long`).
    /// Disks are named /dev/sda, /dev/sdb, ... in the order given.
    Filesystems {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Image format of every image (raw, qcow2, vmdk); probed from content if absent.
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        /// Also list disks, partitions, PVs, unrecognised volumes and free space.
        #[arg(long)]
        all: bool,
        /// Print every field of every volume as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fix a guest tree so it boots on KVM (rules in fixers/; `--dry-run` shows a diff).
    Fix(ferry::fix::cli::FixArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info {
            image,
            format,
            json,
        } => info(image, format, json),
        Cmd::Map {
            image,
            format,
            json,
        } => map(image, format, json),
        Cmd::Convert {
            src,
            output_format,
            dst,
            format,
            progress,
            threads,
            json,
            sync,
        } => {
            let opts = ferry::convert::Options {
                threads,
                progress,
                sync,
            };
            convert(src, &output_format, dst, format, &opts, json)
        }
        Cmd::Filesystems {
            images,
            format,
            all,
            json,
        } => filesystems(&images, format, all, json),
        Cmd::Fix(args) => ferry::fix::cli::run(args).map_err(Into::into),
    };
    if let Err(e) = r {
        eprintln!("ferry: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause whose text the message before it
/// already includes (our errors name their I/O cause themselves).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn open(image: &std::path::Path, format: Option<Format>) -> Result<Arc<dyn BlockDevice>> {
    Ok(block::open_as(image, format)?)
}

fn info(image: PathBuf, format: Option<Format>, json: bool) -> Result<()> {
    let dev = open(&image, format)?;
    let layers: Vec<LayerInfo> = block::chain(&dev)
        .iter()
        .map(|l| block::describe(l.as_ref()))
        .collect::<Result<_, _>>()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &layers)?;
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

fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u]).replace(".000 ", " ")
    }
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
        human(l.virtual_size),
        l.virtual_size
    )?;
    writeln!(out, "disk size: {}", human(l.disk_size))?;
    if let Some(c) = l.cluster_size {
        writeln!(out, "cluster_size: {c}")?;
    }
    if let Some(a) = l.allocated {
        writeln!(out, "allocated: {} ({a} bytes)", human(a))?;
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

fn map(image: PathBuf, format: Option<Format>, json: bool) -> Result<()> {
    let dev = open(&image, format)?;
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

fn convert(
    src: PathBuf,
    output_format: &str,
    dst: PathBuf,
    format: Option<Format>,
    opts: &ferry::convert::Options,
    json: bool,
) -> Result<()> {
    if output_format != "raw" {
        bail!("output format '{output_format}' is not supported yet: only -O raw (qcow2 and vmdk writers come later)");
    }
    let dev = open(&src, format)?;
    let stats = ferry::convert::to_raw(&dev, &dst, opts)
        .with_context(|| format!("converting {} to {}", src.display(), dst.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    }
    Ok(())
}

fn filesystems(images: &[PathBuf], format: Option<Format>, all: bool, json: bool) -> Result<()> {
    let disks = images
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
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
