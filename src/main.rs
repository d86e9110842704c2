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
enum OverlayCmd {
    /// Create an empty overlay over SRC (any chain ferry reads; SRC is only ever read). qemu can
    /// use the overlay as it is: the backing file name is relative when possible, with its format.
    Create { src: PathBuf, overlay: PathBuf },
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe an image and its whole backing chain (like `qemu-img info --backing-chain`).
    /// The JSON is qemu-img's (its keys and nesting): the image alone, or with --backing-chain
    /// an array of every layer, as `qemu-img info --output=json [--backing-chain]`.
    Info {
        image: PathBuf,
        /// Image format of the top layer (raw, qcow2, vmdk); probed from content if absent.
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        #[command(flatten)]
        json: JsonOut,
        /// With JSON: every layer of the chain, as an array (the text always shows them all).
        #[arg(long)]
        backing_chain: bool,
        /// Read the image even while another process writes it (qemu-img's -U): what is read
        /// may be inconsistent. Without it an image in use by a writer is refused.
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
    },
    /// Show what each range of the virtual disk holds (like `qemu-img map`); the JSON is
    /// what `qemu-img map --output=json` prints.
    Map {
        image: PathBuf,
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        #[command(flatten)]
        json: JsonOut,
        /// Read the image even while another process writes it (qemu-img's -U): what is read
        /// may be inconsistent. Without it an image in use by a writer is refused.
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
    },
    /// Write the image out in another format (sparse: holes and zeros are not written).
    Convert {
        src: PathBuf,
        /// Output format (raw, qcow2, vmdk).
        #[arg(short = 'O', long = "output-format")]
        output_format: String,
        dst: PathBuf,
        /// Target options, comma-separated: compression=zlib|zstd (compress every cluster),
        /// cluster_size=64k, compat=0.10|1.1, preallocation=off|metadata, lazy_refcounts=on|off
        /// (qcow2); subformat=monolithicSparse|streamOptimized|
        /// monolithicFlat, adapter_type=ide|lsilogic|buslogic|legacyESX|pvscsi, hwversion=N (vmdk).
        #[arg(short = 'o', long = "options")]
        options: Option<String>,
        /// Compress (qcow2, zlib unless -o compression=zstd), like `qemu-img convert -c`.
        #[arg(short = 'c', long)]
        compress: bool,
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        /// Show a progress bar (on a terminal).
        #[arg(short = 'p', long)]
        progress: bool,
        /// Worker threads, 1 to 256 (default: one per core, at least 4).
        #[arg(long, default_value_t = 0, value_parser = threads_arg)]
        threads: usize,
        /// JSON: a summary (bytes read, written, skipped, seconds).
        #[command(flatten)]
        json: JsonOut,
        /// fsync the output before exiting (like `conv=fsync`); off by default, as in qemu-img.
        #[arg(long)]
        sync: bool,
        /// Replace DST if it exists (refused otherwise: qemu-img's silent overwrite is not the
        /// model here).
        #[arg(long)]
        overwrite: bool,
        /// Read the source even while another process writes it (qemu-img's -U): what is read
        /// may be inconsistent. Without it an image in use by a writer is refused.
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
    },
    /// Write the merged view of an overlay and its source chain to a new image (both stay as
    /// they are), or with --into-source the overlay's own data back into its raw/qcow2 source.
    Commit {
        overlay: PathBuf,
        /// Output format (raw, qcow2).
        #[arg(
            short = 'O',
            long = "output-format",
            required_unless_present = "into_source"
        )]
        output_format: Option<String>,
        #[arg(
            required_unless_present = "into_source",
            conflicts_with = "into_source"
        )]
        dst: Option<PathBuf>,
        /// Write the overlay's data into its source image (which is changed!).
        #[arg(long)]
        into_source: bool,
        /// Do not ask before writing into the source (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Target options, as for convert.
        #[arg(short = 'o', long = "options")]
        options: Option<String>,
        /// Replace DST if it exists (refused otherwise).
        #[arg(long, conflicts_with = "into_source")]
        overwrite: bool,
        #[command(flatten)]
        json: JsonOut,
        /// Read the overlay and its chain even while another process writes them (qemu-img's
        /// -U); not with --into-source.
        #[arg(short = 'U', long = "force-share", conflicts_with = "into_source")]
        force_share: bool,
    },
    /// Copy-on-write overlays: a qcow2 image whose backing file is the (untouched) source.
    Overlay {
        #[command(subcommand)]
        cmd: OverlayCmd,
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
        /// JSON: every field of every volume.
        #[command(flatten)]
        json: JsonOut,
        /// Read the image even while another process writes it (qemu-img's -U): what is read
        /// may be inconsistent. Without it an image in use by a writer is refused.
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
    },
    /// Find the operating systems on a guest's disks: distro, version, kernels, boot loader,
    /// fstab with each line resolved, and the guest's mount layout (like virt-inspector).
    Inspect {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(short = 'f', long = "format")]
        format: Option<Format>,
        #[command(flatten)]
        json: JsonOut,
        /// Print the facts `ferry fix` would use for the operating system (JSON, what
        /// `ferry fix --facts FILE` takes: edit it and pass it back).
        #[arg(long, conflicts_with_all = ["json", "output"])]
        facts: bool,
        /// With --facts: the operating system to describe when the disks hold several (the
        /// device of its /).
        #[arg(long, requires = "facts")]
        root: Option<String>,
        /// Read the image even while another process writes it (qemu-img's -U): what is read
        /// may be inconsistent. Without it an image in use by a writer is refused.
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
    },
    /// Mount a guest with FUSE (no root needed), laid out as its own fstab says (/boot,
    /// /var... on their own volumes): read-only, or with --rw editable through a qcow2 overlay
    /// per disk (the images themselves are never written). Runs in the background and returns
    /// once the mount is ready; `ferry umount` stops it and flushes every write first.
    Mount(MountArgs),
    /// Unmount what `ferry mount` mounted; returns when its daemon has exited.
    Umount {
        mountpoint: PathBuf,
        /// Detach now even if files under it are open (umount -l).
        #[arg(short = 'l', long)]
        lazy: bool,
    },
    /// List a directory of a guest filesystem, without mounting (like virt-ls).
    Ls {
        /// IMAGE (the guest's whole tree), or IMAGE:DEVICE for one filesystem (a name
        /// `ferry filesystems` prints).
        source: String,
        #[arg(default_value = "/")]
        path: String,
        /// Long listing: mode, links, uid, gid, size, mtime, name (-> target).
        #[arg(short = 'l')]
        long: bool,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Print a file of a guest filesystem to stdout, without mounting (like virt-cat).
    Cat {
        /// IMAGE (the guest's whole tree), or IMAGE:DEVICE for one filesystem (a name
        /// `ferry filesystems` prints).
        source: String,
        path: String,
        #[command(flatten)]
        view: ViewArgs,
    },
    /// Fix a guest tree so it boots on KVM (rules in fixers/; `--dry-run` shows a diff).
    Fix(ferry::fix::cli::FixArgs),
    /// Move a VM to KVM (like virt-v2v -o local): read its .vmx, Xen .cfg or libvirt XML (or
    /// bare disks), copy and fix its disks into -o DIR, and write its libvirt domain XML.
    V2v(ferry::v2v::cli::V2vArgs),
    /// Hash each virtual disk's content (as `qemu-img convert -O raw IMG - | sha256sum`), or
    /// with --files every regular file of the guest (a `sha256sum -c` manifest). Only reads.
    Hash(HashArgs),
    /// A body file (The Sleuth Kit 3.x format, for `mactime -b`) of every path of the guest's
    /// tree, across its mountpoints, as `fls -r -m /` writes one. Only reads.
    Timeline(TimelineArgs),
}

/// `--json`, or qemu-img's spelling of it, `--output=json` (`--output=human`: the text).
#[derive(clap::Args, Clone, Copy, Debug)]
struct JsonOut {
    /// Print JSON (also spelt `--output=json`, as qemu-img).
    #[arg(long)]
    json: bool,
    /// Output format, as qemu-img's --output: human (the default) or json.
    #[arg(long = "output", value_name = "FORMAT", value_enum)]
    output: Option<OutputFormat>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Human,
    Json,
}

impl JsonOut {
    fn on(self) -> bool {
        self.json || self.output == Some(OutputFormat::Json)
    }
}

/// How `ls`/`cat` find the guest.
#[derive(clap::Args)]
struct ViewArgs {
    /// Another disk of the same guest (repeatable), after the first.
    #[arg(short = 'a', long = "add")]
    add: Vec<PathBuf>,
    /// The operating system to show when the disks hold several: the device of its /.
    #[arg(long)]
    root: Option<String>,
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
}

#[derive(clap::Args)]
struct MountArgs {
    /// The guest's disk images, then the mountpoint.
    #[arg(required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Mount DEVICE (as `ferry filesystems` names it: /dev/sda1, /dev/VG/LV) at MOUNTPOINT
    /// (default /) instead of the guest's own layout; repeatable, like guestmount's -m.
    #[arg(short = 'm', long = "mount", value_name = "DEVICE[:MOUNTPOINT]")]
    mounts: Vec<String>,
    /// The operating system to mount when the disks hold several: the device of its /.
    #[arg(long)]
    root: Option<String>,
    /// Inspect and mount the guest's layout (the default; for guestmount compatibility).
    #[arg(short = 'i', long = "inspector")]
    inspector: bool,
    /// Read-only (the default; accepted for guestmount compatibility).
    #[arg(long, conflicts_with = "rw")]
    ro: bool,
    /// Writable: every write goes to a qcow2 overlay over each image (NAME-overlay.qcow2
    /// beside it, continued if it exists), never to the image. An image that is itself an
    /// overlay (a qcow2 with a backing file) is written in place.
    #[arg(short = 'w', long)]
    rw: bool,
    /// The overlay of the image in the same position (repeatable, in image order), instead
    /// of NAME-overlay.qcow2; implies --rw.
    #[arg(long, value_name = "PATH")]
    overlay: Vec<PathBuf>,
    /// Stay in the foreground (Ctrl-C unmounts); `--no-fork` as in guestmount.
    #[arg(long, visible_alias = "no-fork")]
    foreground: bool,
    /// The images' format (raw, qcow2, vmdk), as qemu-img's -f; probed from content otherwise.
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// Let other users see the mount (non-root needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Threads serving requests, 1 to 256.
    #[arg(long, default_value_t = 4, value_parser = threads_arg)]
    threads: usize,
    /// Where the background daemon writes its log (default: nowhere).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Read-only: serve the images even while another process writes them (qemu-img's -U);
    /// what is read may be inconsistent.
    #[arg(short = 'U', long = "force-share", conflicts_with_all = ["rw", "overlay"])]
    force_share: bool,
    /// Internal: this process is the daemon started by `ferry mount`.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

impl Cmd {
    /// `-U/--force-share`: this command's readers share every permission (`block::lock`).
    fn force_share(&self) -> bool {
        match self {
            Cmd::Info { force_share, .. }
            | Cmd::Map { force_share, .. }
            | Cmd::Convert { force_share, .. }
            | Cmd::Commit { force_share, .. }
            | Cmd::Filesystems { force_share, .. }
            | Cmd::Inspect { force_share, .. } => *force_share,
            Cmd::Ls { view, .. } | Cmd::Cat { view, .. } => view.force_share,
            Cmd::Mount(a) => a.force_share,
            Cmd::Hash(a) => a.force_share,
            Cmd::Timeline(a) => a.force_share,
            Cmd::Overlay { .. } | Cmd::Umount { .. } | Cmd::Fix(_) | Cmd::V2v(_) => false,
        }
    }
}

/// Threads a command may start: more than this only costs memory (each has a stack and, in
/// convert, a chunk buffer) on any machine ferry runs on, and a typo must not exhaust the host.
const MAX_THREADS: usize = 256;

/// `--threads N`: 0 (convert: the default) up to [`MAX_THREADS`].
fn threads_arg(v: &str) -> std::result::Result<usize, String> {
    let n: usize = v.parse().map_err(|e| format!("{e}"))?;
    if n > MAX_THREADS {
        return Err(format!("at most {MAX_THREADS} threads"));
    }
    Ok(n)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    // virt-v2v's `-of raw` style options are rewritten to long ones first.
    let cli = Cli::parse_from(ferry::v2v::cli::normalize_args(
        std::env::args_os().collect(),
    ));
    block::lock::set_force_share(cli.cmd.force_share());
    let r = match cli.cmd {
        Cmd::Info {
            image,
            format,
            json,
            backing_chain,
            ..
        } => info(image, format, json.on(), backing_chain),
        Cmd::Map {
            image,
            format,
            json,
            ..
        } => map(image, format, json.on()),
        Cmd::Convert {
            src,
            output_format,
            dst,
            options,
            compress,
            format,
            progress,
            threads,
            json,
            sync,
            overwrite,
            ..
        } => {
            let opts = ferry::convert::Options {
                threads,
                progress,
                sync,
                overwrite,
                ..Default::default()
            };
            let target = ConvertTarget {
                format: output_format,
                options,
                compress,
            };
            convert(src, &target, dst, format, &opts, json.on())
        }
        Cmd::Commit {
            overlay,
            into_source: true,
            yes,
            json,
            ..
        } => commit_into_source(&overlay, yes, json.on()),
        Cmd::Commit {
            overlay,
            output_format,
            dst,
            options,
            json,
            overwrite,
            ..
        } => {
            let (Some(output_format), Some(dst)) = (output_format, dst) else {
                unreachable!("clap requires -O and DST without --into-source")
            };
            let target = ConvertTarget {
                format: output_format,
                options,
                compress: false,
            };
            let opts = ferry::convert::Options {
                threads: 0,
                progress: true,
                sync: false,
                overwrite,
                ..Default::default()
            };
            convert(overlay, &target, dst, None, &opts, json.on())
        }
        Cmd::Overlay {
            cmd: OverlayCmd::Create { src, overlay },
        } => overlay_create(&src, &overlay),
        Cmd::Filesystems {
            images,
            format,
            all,
            json,
            ..
        } => filesystems(&images, format, all, json.on()),
        Cmd::Inspect {
            images,
            format,
            json,
            facts,
            root,
            ..
        } => inspect(&images, format, json.on(), facts.then_some(root)),
        Cmd::Mount(args) => mount(args),
        Cmd::Umount { mountpoint, lazy } => {
            ferry::mount::daemon::umount(&mountpoint, lazy).map_err(Into::into)
        }
        Cmd::Ls {
            source,
            path,
            long,
            view,
        } => ls(&source, &path, long, &view),
        Cmd::Cat { source, path, view } => cat(&source, &path, &view),
        Cmd::Hash(args) => forensics_cli::hash(&args),
        Cmd::Timeline(args) => forensics_cli::timeline(&args),
        Cmd::Fix(args) => match ferry::fix::cli::run(args) {
            // A dry run with changes pending: the diff is printed, the status says so.
            Ok(ferry::fix::cli::Outcome::Pending) => std::process::exit(2),
            Ok(ferry::fix::cli::Outcome::Done) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Cmd::V2v(args) => ferry::v2v::cli::run(args).map_err(Into::into),
    };
    if let Err(e) = r {
        // The reader of our output went away (`ferry map | head`): nothing left to say.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("ferry: {}", error_text(&e));
        // Interrupted: the shell's status for death by that signal (130 for SIGINT).
        let signal = e
            .chain()
            .find_map(|c| match (c.downcast_ref(), c.downcast_ref()) {
                (Some(ferry::convert::Error::Interrupted(sig)), _) => Some(*sig),
                (_, Some(ferry::v2v::Error::Interrupted(sig))) => Some(*sig),
                _ => None,
            });
        std::process::exit(signal.map_or(1, |s| 128 + s));
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

fn info(image: PathBuf, format: Option<Format>, json: bool, backing_chain: bool) -> Result<()> {
    let dev = open(&image, format)?;
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

/// What `convert`/`commit` write: `-O`, `-o` and `-c`.
struct ConvertTarget {
    format: String,
    options: Option<String>,
    compress: bool,
}

/// A size with an optional k/M suffix (as qemu-img's `cluster_size=64k`).
fn parse_size(v: &str) -> Result<u64> {
    let (num, mul) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .with_context(|| format!("bad size '{v}'"))
}

fn qcow2_options(t: &ConvertTarget) -> Result<ferry::convert::Qcow2Options> {
    use ferry::block::qcow2::header::Compression;
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
    use ferry::block::vmdk::writer::{Subformat, ADAPTER_TYPES};
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

fn convert(
    src: PathBuf,
    target: &ConvertTarget,
    dst: PathBuf,
    format: Option<Format>,
    opts: &ferry::convert::Options,
    json: bool,
) -> Result<()> {
    if !matches!(target.format.as_str(), "raw" | "qcow2" | "vmdk") {
        bail!(
            "output format '{}' is not supported: only -O raw, qcow2 and vmdk",
            target.format
        );
    }
    let dev = open(&src, format)?;
    // From here a Ctrl-C or kill stops the copy at its next chunk and removes the output.
    ferry::convert::interrupt::catch();
    let ctx = || format!("converting {} to {}", src.display(), dst.display());
    let stats = match target.format.as_str() {
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

fn mount(args: MountArgs) -> Result<()> {
    use ferry::mount::{self, daemon};
    let (mountpoint, images) = match args.paths.split_last() {
        Some((m, i)) if !i.is_empty() => (m, i),
        _ => bail!("give the image(s), then the mountpoint"),
    };
    // Checked here too so that the common mistakes get their message before anything starts.
    mount::check(mountpoint)?;
    if !args.foreground && !args.daemon_child {
        let exe = std::env::current_exe().context("cannot find the ferry executable")?;
        let mut child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        child_args.push("--daemon-child".into());
        return match daemon::spawn_and_wait(&exe, &child_args) {
            Ok(_) => Ok(()),
            // The daemon has already said why on our stderr.
            Err(mount::Error::Daemon(_)) => std::process::exit(1),
            Err(e) => Err(e.into()),
        };
    }
    let writable = args.rw || !args.overlay.is_empty();
    let mut edits = None;
    let disks = if writable {
        let e = ferry::block::overlay::EditSet::open(images, &args.overlay)?;
        let disks = e.disks();
        edits = Some(e);
        disks
    } else {
        images
            .iter()
            .map(|p| open(p, args.format).with_context(|| format!("opening {}", p.display())))
            .collect::<Result<Vec<_>>>()?
    };
    let mut guest = ferry::guest::Guest::open(&disks)?;
    let mut view = guest_view(&guest, &args.mounts, args.root.as_deref())?;
    if writable {
        let devices = view.devices.clone();
        drop(view);
        let notes = guest.make_writable(&devices);
        if notes.len() == devices.len() {
            bail!(
                "nothing in this guest can be written:\n  {}",
                notes.join("\n  ")
            );
        }
        for n in &notes {
            eprintln!("ferry: {n}");
        }
        view = guest_view(&guest, &args.mounts, args.root.as_deref())?;
        if let Some(e) = edits.as_mut() {
            for line in e.keep() {
                eprintln!("ferry: {line}");
            }
        }
    }
    log::info!("mounting {} at {}", view.device, mountpoint.display());
    let opts = mount::Options {
        fsname: format!(
            "{}:{}",
            std::fs::canonicalize(&images[0])
                .unwrap_or_else(|_| images[0].clone())
                .display(),
            view.device
        ),
        threads: args.threads,
        allow_other: args.allow_other,
        writable,
    };
    daemon::unmount_on_signal(mountpoint);
    let _pid = daemon::PidFile::create(mountpoint)?;
    let log_file = args.log.clone();
    let child = args.daemon_child;
    let published = view
        .facts
        .as_ref()
        .and_then(|f| publish_facts(mountpoint, f));
    let r = mount::run(view.fs, mountpoint, &opts, move || {
        if child {
            if let Err(e) = daemon::detach(log_file.as_deref()) {
                log::warn!("cannot detach: {e}");
            }
        }
    });
    if let Some(p) = published {
        let _ = std::fs::remove_file(p);
    }
    r?;
    if let Some(e) = edits {
        e.finish().context("completing the overlays")?;
    }
    Ok(())
}

/// Writes the facts of the mounted guest where `ferry fix MOUNTPOINT` looks for them; the
/// path, or None when that place is not writable (a non-root user without FERRY_RUNTIME_DIR).
fn publish_facts(
    mountpoint: &std::path::Path,
    facts: &ferry::fix::facts::Facts,
) -> Option<PathBuf> {
    let path = ferry::fix::facts::published_path(mountpoint);
    let canon = std::fs::canonicalize(mountpoint).ok()?;
    let doc = serde_json::json!({"mountpoint": canon, "facts": facts});
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
    };
    match write() {
        Ok(()) => Some(path),
        Err(e) => {
            log::info!(
                "not publishing the guest's facts at {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// What `mount`, `ls` and `cat` show of a guest.
struct View {
    fs: Arc<dyn ferry::fs::Filesystem>,
    /// The device at /, for messages and the mount's source name.
    device: String,
    /// Every device in the view.
    devices: Vec<String>,
    /// The facts of the operating system shown, when one is.
    facts: Option<ferry::fix::facts::Facts>,
}

/// The guest's own layout (or the root `root`), or the filesystems `mounts` names
/// (`DEVICE[:MOUNTPOINT]`); a guest with no operating system but a single filesystem shows it.
fn guest_view(guest: &ferry::guest::Guest, mounts: &[String], root: Option<&str>) -> Result<View> {
    use ferry::guest::Error;
    if !mounts.is_empty() {
        let layout: Vec<(String, String)> = mounts
            .iter()
            .map(|m| match m.split_once(':') {
                Some((d, p)) => (d.to_string(), p.to_string()),
                None => (m.clone(), "/".to_string()),
            })
            .collect();
        let tree = guest.tree_of(&layout)?;
        let devices = tree.mounts().map(|m| m.device.clone()).collect();
        let device = tree
            .mounts()
            .next()
            .map(|m| m.device.clone())
            .unwrap_or_default();
        let facts = guest
            .inspection
            .roots
            .iter()
            .find(|r| r.root == device)
            .map(|r| guest.facts(r));
        return Ok(View {
            fs: Arc::new(tree),
            device,
            devices,
            facts,
        });
    }
    match guest.tree(root) {
        Ok((tree, r)) => Ok(View {
            devices: tree.mounts().map(|m| m.device.clone()).collect(),
            fs: Arc::new(tree),
            device: r.root.clone(),
            facts: Some(guest.facts(r)),
        }),
        Err(Error::NoRoot) => {
            let (device, fs) = guest.only_filesystem()?;
            Ok(View {
                fs,
                devices: vec![device.clone()],
                device,
                facts: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// `facts`: print the facts of one root (the one given, or the only one) instead.
fn inspect(
    images: &[PathBuf],
    format: Option<Format>,
    json: bool,
    facts: Option<Option<String>>,
) -> Result<()> {
    let disks = images
        .iter()
        .map(|p| open(p, format).with_context(|| format!("opening {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let guest = ferry::guest::Guest::open(&disks)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(root) = facts {
        let (_, r) = guest.tree(root.as_deref())?;
        serde_json::to_writer_pretty(&mut out, &guest.facts(r))?;
        writeln!(out)?;
    } else if json {
        serde_json::to_writer_pretty(&mut out, &guest.inspection)?;
        writeln!(out)?;
    } else {
        ferry::guest::report::write_text(&mut out, &guest.inspection)?;
    }
    out.flush()?;
    Ok(())
}

/// `IMAGE` (the guest's tree) or `IMAGE:DEVICE` (one filesystem), plus the disks `--add`
/// names. A path that exists as given is an image, so image names with colons work.
fn open_source(source: &str, view: &ViewArgs) -> Result<Arc<dyn ferry::fs::Filesystem>> {
    let (image, device) = match source.rsplit_once(':') {
        Some((img, dev)) if !std::path::Path::new(source).exists() => (img, Some(dev)),
        _ => (source, None),
    };
    let mut disks = vec![open(std::path::Path::new(image), view.format)
        .with_context(|| format!("opening {image}"))?];
    for p in &view.add {
        disks.push(open(p, view.format).with_context(|| format!("opening {}", p.display()))?);
    }
    let guest = ferry::guest::Guest::open(&disks)?;
    let mounts: Vec<String> = device.map(String::from).into_iter().collect();
    Ok(guest_view(&guest, &mounts, view.root.as_deref())?.fs)
}

fn resolve(fs: &dyn ferry::fs::Filesystem, path: &str, follow: bool) -> Result<ferry::fs::Attr> {
    ferry::fs::path::resolve(fs, path.as_bytes(), follow).with_context(|| path.to_string())
}

fn cat(source: &str, path: &str, view: &ViewArgs) -> Result<()> {
    let fs = open_source(source, view)?;
    let a = resolve(fs.as_ref(), path, true)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = fs
            .read(a.ino, off, &mut buf)
            .with_context(|| path.to_string())?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    out.flush()?;
    Ok(())
}

fn ls(source: &str, path: &str, long: bool, view: &ViewArgs) -> Result<()> {
    use ferry::fs::FileType;
    let fs = open_source(source, view)?;
    // Like ls(1): `ls -l link` describes the link itself, `ls link` lists where it points.
    let a = resolve(fs.as_ref(), path, !long)?;
    let a = if long && a.kind == FileType::Symlink && path.ends_with('/') {
        resolve(fs.as_ref(), path, true)?
    } else {
        a
    };
    let mut entries: Vec<(Vec<u8>, u64)> = if a.kind == FileType::Directory {
        ferry::fs::path::list(fs.as_ref(), a.ino)
            .with_context(|| path.to_string())?
            .into_iter()
            .map(|e| (e.name, e.ino))
            .collect()
    } else {
        vec![(path.as_bytes().to_vec(), a.ino)]
    };
    entries.sort();
    let mut out = std::io::stdout().lock();
    for (name, ino) in entries {
        if long {
            match fs.getattr(ino) {
                Ok(attr) => {
                    let target = if attr.kind == FileType::Symlink {
                        fs.readlink(ino).ok()
                    } else {
                        None
                    };
                    writeln!(out, "{}", long_line(&attr, &name, target.as_deref()))?;
                }
                Err(e) => eprintln!("ferry: {}: {e}", String::from_utf8_lossy(&name)),
            }
        } else {
            out.write_all(&name)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// One `ls -l` line with numeric owners and a UTC ISO time (scripts compare these).
fn long_line(a: &ferry::fs::Attr, name: &[u8], target: Option<&[u8]>) -> String {
    use ferry::fs::FileType;
    let t = match a.kind {
        FileType::RegularFile => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::NamedPipe => 'p',
        FileType::Socket => 's',
    };
    let m = a.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    let mode: String = [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect();
    let size = if matches!(a.kind, FileType::CharDevice | FileType::BlockDevice) {
        format!("{}, {}", libc::major(a.rdev), libc::minor(a.rdev))
    } else {
        a.size.to_string()
    };
    let mut line = format!(
        "{mode} {} {} {} {size} {} {}",
        a.nlink,
        a.uid,
        a.gid,
        iso_time(a.mtime.secs),
        String::from_utf8_lossy(name)
    );
    if let Some(t) = target {
        line.push_str(" -> ");
        line.push_str(&String::from_utf8_lossy(t));
    }
    line
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC (civil-from-days, proleptic Gregorian).
fn iso_time(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---- forensics (issue 18): `ferry hash`, `ferry timeline` ------------------------------------

#[derive(clap::Args)]
struct HashArgs {
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// sha256, sha1 or md5.
    #[arg(long, default_value = "sha256")]
    algo: ferry::forensics::Algo,
    /// A manifest of the guest's regular files (paths relative to its /; the IMAGEs are the
    /// disks of one guest) instead of the disks' digests.
    #[arg(long, conflicts_with_all = ["json", "output"])]
    files: bool,
    /// With --files: the operating system to hash when the disks hold several (its / device).
    #[arg(long, requires = "files")]
    root: Option<String>,
    #[command(flatten)]
    json: JsonOut,
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
}

#[derive(clap::Args)]
struct TimelineArgs {
    /// The guest's disk images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The operating system to list when the disks hold several: the device of its /.
    #[arg(long)]
    root: Option<String>,
    /// Fill the first column with each regular file's digest (md5, sha1 or sha256).
    #[arg(long)]
    hash: Option<ferry::forensics::Algo>,
    #[arg(short = 'f', long = "format")]
    format: Option<Format>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    force_share: bool,
}

mod forensics_cli {
    use super::*;

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
        let view = guest_view(&guest, &[], root)?;
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

    pub fn hash(a: &HashArgs) -> Result<()> {
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

    pub fn timeline(a: &TimelineArgs) -> Result<()> {
        let (fs, composed) = guest_fs(&a.images, a.format, a.root.as_deref())?;
        let opts = ferry::forensics::bodyfile::Options {
            hash: a.hash,
            local_inodes: composed,
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let errors = ferry::forensics::bodyfile::write(fs.as_ref(), opts, &mut out)?;
        out.flush()?;
        report(&errors)
    }
}
