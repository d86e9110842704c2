//! `ferry convert`, `ferry commit` and `ferry overlay create`: images written out.

use super::{open, threads_arg, JsonOut};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ferry::block::{self, BlockDevice, Format};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub(crate) struct ConvertArgs {
    pub src: PathBuf,
    /// Output format (raw, qcow2, vmdk).
    #[arg(short = 'O', long = "output-format")]
    pub output_format: String,
    pub dst: PathBuf,
    /// Target options, comma-separated: compression=zlib|zstd (compress every cluster),
    /// cluster_size=64k, compat=0.10|1.1, preallocation=off|metadata, lazy_refcounts=on|off
    /// (qcow2); subformat=monolithicSparse|streamOptimized|
    /// monolithicFlat, adapter_type=ide|lsilogic|buslogic|legacyESX|pvscsi, hwversion=N (vmdk).
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// Compress (qcow2, zlib unless -o compression=zstd), like `qemu-img convert -c`.
    #[arg(short = 'c', long)]
    pub compress: bool,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    /// Show progress: a bar on a terminal (stderr), and qemu-img's `(NN.NN/100%)` lines
    /// when stdout is not a terminal.
    #[arg(short = 'p', long)]
    pub progress: bool,
    /// Write into the existing image DST instead of creating it (qemu-img's -n): it must be a
    /// raw or qcow2 image (as -O says) at least as large as the source; the source's zeros are
    /// written as zeros, anything past the source's size is left alone. No --overwrite needed;
    /// the image is locked for writing while it is written. With -c (qcow2): clusters are
    /// compressed with the image's compression type where it holds no data yet (qemu-img
    /// fails on the others; ferry writes those plain).
    #[arg(short = 'n', conflicts_with_all = ["options", "overwrite"])]
    pub no_create: bool,
    /// Sparse threshold (qemu-img's -S): a run of zeros is left unallocated only when it
    /// covers an aligned block of SIZE bytes (a multiple of 512, with k/M/G suffixes; default
    /// 4k); 0 writes everything, the source's holes too (fully allocated).
    #[arg(short = 'S', value_parser = sparse_arg)]
    pub sparse: Option<u64>,
    /// Worker threads, 1 to 256 (default: one per core, at least 2).
    #[arg(long, default_value_t = 0, value_parser = threads_arg)]
    pub threads: usize,
    /// JSON: a summary (bytes read, written, skipped, seconds).
    #[command(flatten)]
    pub json: JsonOut,
    /// fsync the output before exiting (like `conv=fsync`); off by default, as in qemu-img.
    #[arg(long)]
    pub sync: bool,
    /// Replace DST if it exists (refused otherwise: qemu-img's silent overwrite is not the
    /// model here).
    #[arg(long)]
    pub overwrite: bool,
    /// Read the source even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

#[derive(clap::Args)]
pub(crate) struct CommitArgs {
    pub overlay: PathBuf,
    /// Output format (raw, qcow2).
    #[arg(
        short = 'O',
        long = "output-format",
        required_unless_present = "into_source"
    )]
    pub output_format: Option<String>,
    #[arg(
        required_unless_present = "into_source",
        conflicts_with = "into_source"
    )]
    pub dst: Option<PathBuf>,
    /// Write the overlay's data into its source image (which is changed!).
    #[arg(long)]
    pub into_source: bool,
    /// Do not ask before writing into the source (needed when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Target options, as for convert.
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// Replace DST if it exists (refused otherwise).
    #[arg(long, conflicts_with = "into_source")]
    pub overwrite: bool,
    #[command(flatten)]
    pub json: JsonOut,
    /// Read the overlay and its chain even while another process writes them (qemu-img's
    /// -U); not with --into-source.
    #[arg(short = 'U', long = "force-share", conflicts_with = "into_source")]
    pub force_share: bool,
}

#[derive(clap::Args)]
pub(crate) struct OverlayArgs {
    #[command(subcommand)]
    pub cmd: OverlayCmd,
}

#[derive(Subcommand)]
pub(crate) enum OverlayCmd {
    /// Create an empty overlay over SRC (any chain ferry reads; SRC is only ever read). qemu can
    /// use the overlay as it is: the backing file name is relative when possible, with its format.
    Create { src: PathBuf, overlay: PathBuf },
}

/// What `convert`/`commit` write: `-O`, `-o` and `-c`.
struct ConvertTarget {
    format: String,
    options: Option<String>,
    compress: bool,
    /// `-n`: write into the existing image instead of creating it.
    no_create: bool,
}

/// `-S`: a size in bytes, a multiple of 512 (qemu-img refuses others), at most 2 GiB.
fn sparse_arg(v: &str) -> std::result::Result<u64, String> {
    let n = parse_size(v).map_err(|e| e.to_string())?;
    if n % 512 != 0 || n > 1 << 31 {
        return Err(format!(
            "'{v}': the sparse threshold must be a multiple of 512 up to 2G"
        ));
    }
    Ok(n)
}

/// A size with an optional k/M/G suffix (as qemu-img's `cluster_size=64k`, `-S 4k`).
fn parse_size(v: &str) -> Result<u64> {
    let (num, mul) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        Some((i, 'b' | 'B')) => (&v[..i], 1),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .with_context(|| format!("bad size '{v}'"))
}

fn qcow2_options(t: &ConvertTarget) -> Result<ferry::convert::Qcow2Options> {
    use ferry::block::Compression;
    let mut q = ferry::convert::Qcow2Options::default();
    if t.compress {
        q.compression = Some(Compression::Zlib);
    }
    for kv in t
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match (k, v) {
            ("compression" | "compression_type", "zlib") => q.compression = Some(Compression::Zlib),
            ("compression" | "compression_type", "zstd") => q.compression = Some(Compression::Zstd),
            ("cluster_size", v) => q.cluster_size = parse_size(v)?,
            ("compat", "0.10" | "v2") => q.compat_v2 = true,
            ("compat", "1.1" | "v3") => q.compat_v2 = false,
            ("preallocation", "off") => q.preallocate_metadata = false,
            ("preallocation", "metadata") => q.preallocate_metadata = true,
            ("preallocation", _) => bail!("preallocation={v} is not supported (only off and metadata)"),
            ("lazy_refcounts", "on") => q.lazy_refcounts = true,
            ("lazy_refcounts", "off") => q.lazy_refcounts = false,
            _ => bail!("unknown qcow2 option '{kv}' (known: compression=zlib|zstd, cluster_size=SIZE, compat=0.10|1.1, preallocation=off|metadata, lazy_refcounts=on|off)"),
        }
    }
    if q.preallocate_metadata && q.compression.is_some() {
        bail!("compression and preallocation=metadata exclude each other (as in qemu-img)");
    }
    if q.compat_v2 && q.lazy_refcounts {
        bail!("lazy_refcounts=on needs compat=1.1 (qcow2 v3)");
    }
    if q.compat_v2 && q.compression == Some(Compression::Zstd) {
        bail!("zstd compression needs compat=1.1 (qcow2 v3)");
    }
    Ok(q)
}

fn vmdk_options(t: &ConvertTarget) -> Result<ferry::convert::VmdkOptions> {
    use ferry::block::{VmdkSubformat as Subformat, VMDK_ADAPTER_TYPES as ADAPTER_TYPES};
    let mut v = ferry::convert::VmdkOptions::default();
    for kv in t
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "subformat" => {
                v.subformat = Subformat::parse(val).with_context(|| {
                    format!("unknown vmdk subformat '{val}' (known: monolithicSparse, streamOptimized, monolithicFlat)")
                })?
            }
            "adapter_type" if ADAPTER_TYPES.contains(&val) => v.adapter_type = val.into(),
            "hwversion" => {
                v.hw_version = val
                    .parse()
                    .with_context(|| format!("bad hwversion '{val}'"))?
            }
            _ => bail!("unknown vmdk option '{kv}' (known: subformat=monolithicSparse|streamOptimized|monolithicFlat, adapter_type={}, hwversion=N)", ADAPTER_TYPES.join("|")),
        }
    }
    if t.compress && v.subformat != Subformat::StreamOptimized {
        bail!("-c with -O vmdk needs subformat=streamOptimized (the only compressed VMDK)");
    }
    Ok(v)
}

fn write_image(
    src: PathBuf,
    target: &ConvertTarget,
    dst: PathBuf,
    format: Option<Format>,
    opts: &ferry::convert::Options,
    json: bool,
    qemu_lines: bool,
) -> Result<()> {
    let mut opts = opts.clone();
    if !matches!(target.format.as_str(), "raw" | "qcow2" | "vmdk") {
        bail!(
            "output format '{}' is not supported: only -O raw, qcow2 and vmdk",
            target.format
        );
    }
    let dev = open(&src, format)?;
    // convert's `-p` with stdout not a terminal (not with --json, which owns stdout):
    // qemu-img's lines, for wrappers that read them.
    if qemu_lines && !json && !std::io::stdout().is_terminal() {
        opts.observer = Some(qemu_progress(dev.len()));
    }
    let opts = &opts;
    // From here a Ctrl-C or kill stops the copy at its next chunk and removes the output.
    ferry::convert::interrupt::catch();
    let ctx = || format!("converting {} to {}", src.display(), dst.display());
    let stats = match target.format.as_str() {
        f if target.no_create => {
            ferry::convert::into_existing(&dev, &dst, f, target.compress, opts).with_context(ctx)?
        }
        "raw" => {
            if target.options.is_some() || target.compress {
                bail!("-O raw takes no options");
            }
            ferry::convert::to_raw(&dev, &dst, opts).with_context(ctx)?
        }
        "qcow2" => {
            let q = qcow2_options(target)?;
            ferry::convert::to_qcow2(&dev, &dst, &q, opts).with_context(ctx)?
        }
        "vmdk" => {
            let v = vmdk_options(target)?;
            ferry::convert::to_vmdk(&dev, &dst, &v, opts).with_context(ctx)?
        }
        other => bail!("output format '{other}' is not supported"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    }
    Ok(())
}

fn commit_into_source(overlay: &std::path::Path, yes: bool, json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let (src, fmt) = ferry::convert::commit::source_of(overlay)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "this writes {} into its source {} ({fmt}); pass --yes to confirm",
                overlay.display(),
                src.display()
            );
        }
        eprint!(
            "Write the data of {} into {} ({fmt})? This changes the source. [y/N] ",
            overlay.display(),
            src.display()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not committed");
        }
    }
    let stats = ferry::convert::commit::into_source(overlay)
        .with_context(|| format!("committing {} into {}", overlay.display(), src.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    }
    Ok(())
}

fn overlay_create(src: &std::path::Path, overlay: &std::path::Path) -> Result<()> {
    let ov = block::overlay::create(src, overlay)
        .with_context(|| format!("creating an overlay over {}", src.display()))?;
    ov.flush()?;
    Ok(())
}

/// `-p` when stdout is not a terminal: what qemu-img prints there, `    (NN.NN/100%)` and a
/// carriage return whenever the progress grew by at least one percent since the last line
/// (qemu's `qemu_progress_init(.., 1.0)`), a newline at the end, so that wrappers written for
/// qemu-img read ferry the same way.
fn qemu_progress(total: u64) -> ferry::convert::progress::Observer {
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = Arc::new(AtomicU64::new(0));
    // In hundredths of a percent, under one lock, so that workers finishing out of order never
    // print a smaller number after a bigger one.
    let shown = Arc::new(std::sync::Mutex::new(0u64));
    print!("    (0.00/100%)\r");
    let _ = std::io::stdout().flush();
    ferry::convert::progress::Observer(Arc::new(move |n| {
        let now = done.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        let pct = (u128::from(now.min(total)) * 10_000)
            .checked_div(u128::from(total))
            .map_or(10_000, |p| u64::try_from(p).unwrap_or(10_000));
        let mut last = shown.lock().unwrap_or_else(|e| e.into_inner());
        if pct >= last.saturating_add(100) || (pct == 10_000 && *last < 10_000) {
            *last = pct;
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "    ({}.{:02}/100%)\r", pct / 100, pct % 100);
            if pct == 10_000 {
                let _ = writeln!(out);
            }
            let _ = out.flush();
        }
    }))
}

pub(crate) fn convert(a: ConvertArgs) -> Result<()> {
    let opts = ferry::convert::Options {
        threads: a.threads,
        progress: a.progress,
        sync: a.sync,
        overwrite: a.overwrite,
        sparse: a.sparse,
        ..Default::default()
    };
    let target = ConvertTarget {
        format: a.output_format,
        options: a.options,
        compress: a.compress,
        no_create: a.no_create,
    };
    write_image(
        a.src,
        &target,
        a.dst,
        a.format,
        &opts,
        a.json.on(),
        a.progress,
    )
}

pub(crate) fn commit(a: CommitArgs) -> Result<()> {
    if a.into_source {
        return commit_into_source(&a.overlay, a.yes, a.json.on());
    }
    let (Some(output_format), Some(dst)) = (a.output_format, a.dst) else {
        bail!("give -O FORMAT and DST, or --into-source")
    };
    let target = ConvertTarget {
        format: output_format,
        options: a.options,
        compress: false,
        no_create: false,
    };
    let opts = ferry::convert::Options {
        threads: 0,
        progress: true,
        sync: false,
        overwrite: a.overwrite,
        ..Default::default()
    };
    write_image(a.overlay, &target, dst, None, &opts, a.json.on(), false)
}

pub(crate) fn overlay(a: OverlayArgs) -> Result<()> {
    match a.cmd {
        OverlayCmd::Create { src, overlay } => overlay_create(&src, &overlay),
    }
}
