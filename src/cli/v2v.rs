//! `ferry v2v`: the arguments (with virt-v2v's `-os`, `-of`, `-oa`, `-on` spellings), the
//! profile merged in, and what is printed: stage lines, warnings, a progress bar or
//! machine-readable lines, and the final report. The work is in `ferry::v2v::run`.

use ferry::fix::engine::{Plan, Status};
use ferry::meta::{libvirt, Bus, InputKind, Source};
use ferry::v2v::profile::{self, Profile};
use ferry::v2v::{
    Allocation, Conversion, Error, Event, Input, Options, OutputFormat, Result, Sink,
};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The `--machine-readable` format, shown by `ferry v2v --help`.
pub(crate) const MACHINE_READABLE_HELP: &str = "\
Machine-readable output (--machine-readable), modelled on virt-v2v's:
  On its own, `ferry v2v --machine-readable` prints what this binary supports, one feature
  a line (ferry-v2v, input:vmx, input:xen, input:libvirt, input:ova, input:disk, output:local,
  output-format:qcow2, output-format:raw, output-allocation:sparse,
  output-allocation:preallocated, convert:linux, convert:windows) and exits 0.
  With a conversion, stdout carries one JSON object a line, and nothing else; each has
  \"type\" and \"elapsed\" (seconds since the start):
    {\"type\":\"stage\",\"elapsed\":0.1,\"message\":\"Opening the source x.vmx\"}
    {\"type\":\"warning\",\"elapsed\":0.4,\"message\":\"...\"}
    {\"type\":\"progress\",\"elapsed\":1.2,\"disk\":1,\"disks\":2,\"done\":BYTES,\"total\":BYTES,\"percent\":42}
    {\"type\":\"result\",\"elapsed\":3.0,\"report\":{...the --json report...}}   (the last line on success)
    {\"type\":\"error\",\"elapsed\":0.5,\"message\":\"...\"}                    (the last line on failure)
  Stages, in order: Opening the source, Checking the N files the manifest lists (an OVA with
  a manifest), Decompressing disk N (gzip-stored OVA disks), Inspecting the guest, Fixing the
  guest for KVM (Planning... with --dry-run), Copying disk N/M to PATH (one per disk), Creating the domain
  XML, Finishing off. Progress comes by whole percents. The error is also written to stderr.
  Exit status: 0 done, 1 failed, 128+N killed by signal N (SIGINT 130, SIGTERM 143); after a
  failure or a signal the output directory holds only what it held before.";

/// Move a VM to KVM: read its description (or bare disks), copy and fix its disks into
/// -o DIR, and write its libvirt domain XML there (like `virt-v2v -o local`).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(after_help = MACHINE_READABLE_HELP)]
pub(crate) struct V2vArgs {
    /// Kind of source: vmx, xen (xl or xm .cfg), libvirt (domain XML), ova (an .ova tar, a
    /// directory with an .ovf, or the .ovf; disks are read inside the tar, the manifest is
    /// checked), or disk (the guest's disk images, no description: named after the first).
    #[arg(short = 'i', long = "input", value_name = "KIND")]
    pub input: Option<String>,
    /// The description file; with -i disk, the guest's disk images in order.
    #[arg(value_name = "FILE | IMAGE...")]
    pub files: Vec<PathBuf>,
    /// VMware datastore mapping NAME=DIR (`[NAME] path` is DIR/path); repeatable.
    #[arg(long = "datastore", value_name = "NAME=DIR")]
    pub datastores: Vec<String>,
    /// The output directory (also `-os DIR`): the disks go there as NAME-sda.qcow2... and the
    /// domain XML as NAME.xml. It must exist; nothing in it is ever replaced.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Format of the output disks (also `-of`): qcow2 (default) or raw.
    #[arg(long = "output-format", value_name = "FMT")]
    pub format: Option<String>,
    /// Allocation of the output disks (also `-oa`): sparse (default) or preallocated.
    #[arg(long = "output-allocation", value_name = "ALLOC")]
    pub allocation: Option<String>,
    /// The target guest's name (also `-on`), instead of the source's.
    #[arg(long = "output-name", value_name = "NAME")]
    pub name: Option<String>,
    /// A profile: a TOML file, or NAME for ~/.config/ferry/profiles/NAME.toml (output_dir,
    /// format, allocation, machine, disk_bus, nic_model, [networks], [bridges]); options
    /// given here win.
    #[arg(long, value_name = "NAME | FILE")]
    pub profile: Option<String>,
    /// The operating system to convert when the disks hold several (the device of its /).
    #[arg(long, value_name = "DEVICE")]
    pub root: Option<String>,
    /// Machine type of the target: q35 (default) or pc.
    #[arg(long)]
    pub machine: Option<String>,
    /// Bus of the target's disks: auto (default: virtio when the guest has the driver, else
    /// SATA, IDE on pc), virtio, sata or ide.
    #[arg(long)]
    pub disk_bus: Option<String>,
    /// Model of the target's NICs: auto (default: virtio when the guest has the driver, else
    /// e1000), virtio or e1000.
    #[arg(long)]
    pub nic_model: Option<String>,
    /// Network mapping SRC:DST (a source network or VMware networkName to a libvirt network);
    /// repeatable. Unmapped NICs go to the network `default`.
    #[arg(long = "network", value_name = "SRC:DST")]
    pub networks: Vec<String>,
    /// Bridge mapping SRC:DST (a source bridge to a host bridge); repeatable.
    #[arg(long = "bridge", value_name = "SRC:DST")]
    pub bridges: Vec<String>,
    /// Show the plan (disks, outputs, the domain XML) and the fixes as a diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the parsed source VM and stop.
    #[arg(long)]
    pub print_source: bool,
    /// Print the libvirt domain XML for the source's own disks and stop (nothing converted).
    #[arg(long)]
    pub print_xml: bool,
    /// Print the report (or with --print-source the source) as JSON on stdout; stage lines go
    /// to stderr.
    #[arg(long)]
    pub json: bool,
    /// JSON lines on stdout a wrapper can parse (see below); alone, the features supported.
    #[arg(long)]
    pub machine_readable: bool,
    /// The global -q: no stage lines or progress bar (the report still).
    #[arg(skip)]
    pub quiet: bool,
    /// Copy workers, 1 to 256 (default: one per core, at least 2).
    #[arg(long, default_value_t = 0, value_parser = threads_arg)]
    pub threads: usize,
    /// Copy the free space of the guest's filesystems and swap too. By default it is left out
    /// (read as zeros), as virt-v2v's fstrim does, where a filesystem's maps can be trusted.
    #[arg(long)]
    pub no_trim: bool,
}

/// Copy workers beyond this only cost memory; a typo must not exhaust the host.
const MAX_THREADS: usize = 256;

fn threads_arg(v: &str) -> std::result::Result<usize, String> {
    let n: usize = v.parse().map_err(|e| format!("{e}"))?;
    if n > MAX_THREADS {
        return Err(format!("at most {MAX_THREADS} threads"));
    }
    Ok(n)
}

/// virt-v2v's single-dash output options, and ferry's long names for them.
const VIRT_V2V_SPELLINGS: [(&str, &str); 4] = [
    ("-os", "--output-dir"),
    ("-of", "--output-format"),
    ("-oa", "--output-allocation"),
    ("-on", "--output-name"),
];

/// Rewrites virt-v2v's `-os`, `-of`, `-oa`, `-on` (also `-of=raw`) in the arguments of
/// `ferry v2v` to ferry's long options, which the argument parser knows (it reads `-of` as
/// `-o f`). Other commands' arguments, and everything after `--`, stay as they are. The global
/// options (`-q`, `-v`) take no value, so the command is the first argument that is no option.
pub(crate) fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let command = args
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .find(|a| a.is_none_or(|a| !a.starts_with('-')));
    if command != Some(Some("v2v")) {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for a in args {
        if rest {
            out.push(a);
            continue;
        }
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        let (flag, value) = match s.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (s, None),
        };
        match VIRT_V2V_SPELLINGS.iter().find(|(short, _)| *short == flag) {
            Some((_, long)) => out.push(match value {
                Some(v) => OsString::from(format!("{long}={v}")),
                None => OsString::from(*long),
            }),
            None => out.push(a),
        }
    }
    out
}

fn split_pair(s: &str, sep: char, what: &str) -> Result<(String, String)> {
    match s.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(Error::Usage(format!("{what} '{s}' is not SRC{sep}DST"))),
    }
}

fn parse_input(a: &V2vArgs) -> Result<Input> {
    let Some(kind) = a.input.as_deref() else {
        return Err(Error::Usage(
            "give the source with -i KIND FILE (vmx, xen, libvirt, ova) or -i disk IMAGE...".into(),
        ));
    };
    if kind == "disk" {
        if a.files.is_empty() {
            return Err(Error::Usage("-i disk needs the guest's disk images".into()));
        }
        if !a.datastores.is_empty() {
            return Err(Error::Usage("--datastore is for -i vmx".into()));
        }
        return Ok(Input::Disks(a.files.clone()));
    }
    let kind: InputKind = kind.parse().map_err(|e: String| {
        Error::Usage(format!("{e}, or disk for disk images with no description"))
    })?;
    let file = match a.files.as_slice() {
        [f] => f.clone(),
        [] => {
            return Err(Error::Usage(
                "give the description file after -i KIND".into(),
            ))
        }
        _ => {
            return Err(Error::Usage(
                "one description file only (several disk images go with -i disk)".into(),
            ))
        }
    };
    let datastores = a
        .datastores
        .iter()
        .map(|d| split_pair(d, '=', "--datastore").map(|(n, p)| (n, PathBuf::from(p))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Input::Description {
        kind,
        file,
        datastores,
    })
}

fn parse_machine(m: &str) -> Result<libvirt::Machine> {
    match m {
        "q35" => Ok(libvirt::Machine::Q35),
        "pc" => Ok(libvirt::Machine::Pc),
        m => Err(Error::Usage(format!("--machine {m}: expected q35 or pc"))),
    }
}

fn parse_bus(b: &str) -> Result<Option<Bus>> {
    match b {
        "auto" => Ok(None),
        "virtio" => Ok(Some(Bus::Virtio)),
        "sata" => Ok(Some(Bus::Sata)),
        "ide" => Ok(Some(Bus::Ide)),
        b => Err(Error::Usage(format!(
            "--disk-bus {b}: expected auto, virtio, sata or ide"
        ))),
    }
}

fn parse_nic(m: &str) -> Result<Option<String>> {
    match m {
        "auto" => Ok(None),
        "virtio" | "e1000" => Ok(Some(m.to_string())),
        m => Err(Error::Usage(format!(
            "--nic-model {m}: expected auto, virtio or e1000"
        ))),
    }
}

/// The command line over the profile over the defaults.
pub(crate) fn options(a: &V2vArgs, p: &Profile) -> Result<Options> {
    let pick = |cli: &Option<String>, prof: &Option<String>| cli.clone().or_else(|| prof.clone());
    let mut networks: Vec<(String, String)> = a
        .networks
        .iter()
        .map(|n| split_pair(n, ':', "--network"))
        .collect::<Result<_>>()?;
    networks.extend(p.networks.iter().map(|(s, d)| (s.clone(), d.clone())));
    let mut bridges: Vec<(String, String)> = a
        .bridges
        .iter()
        .map(|n| split_pair(n, ':', "--bridge"))
        .collect::<Result<_>>()?;
    bridges.extend(p.bridges.iter().map(|(s, d)| (s.clone(), d.clone())));
    Ok(Options {
        input: parse_input(a)?,
        output_dir: a.output_dir.clone().or_else(|| p.output_dir.clone()),
        format: match pick(&a.format, &p.format) {
            Some(f) => f.parse().map_err(Error::Usage)?,
            None => OutputFormat::default(),
        },
        allocation: match pick(&a.allocation, &p.allocation) {
            Some(f) => f.parse().map_err(Error::Usage)?,
            None => Allocation::default(),
        },
        name: a.name.clone(),
        root: a.root.clone(),
        machine: parse_machine(&pick(&a.machine, &p.machine).unwrap_or_else(|| "q35".into()))?,
        disk_bus: parse_bus(&pick(&a.disk_bus, &p.disk_bus).unwrap_or_else(|| "auto".into()))?,
        nic_model: parse_nic(&pick(&a.nic_model, &p.nic_model).unwrap_or_else(|| "auto".into()))?,
        networks,
        bridges,
        dry_run: a.dry_run,
        threads: a.threads,
        progress_bar: !a.quiet && !a.machine_readable,
        keep_free: a.no_trim,
    })
}

/// Features for `--machine-readable` on its own.
const FEATURES: &[&str] = &[
    "ferry-v2v",
    "input:vmx",
    "input:xen",
    "input:libvirt",
    "input:ova",
    "input:disk",
    "output:local",
    "output-format:qcow2",
    "output-format:raw",
    "output-allocation:sparse",
    "output-allocation:preallocated",
    "convert:linux",
    "convert:windows",
];

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Voice {
    /// `[   1.2] Stage` on stdout (stderr with --json), warnings on stderr.
    Human { to_stderr: bool, quiet: bool },
    /// JSON lines on stdout.
    Machine,
}

fn emit_json(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A reader that went away must not stop the conversion halfway: its output is ignored.
    let _ = serde_json::to_writer(&mut out, &v);
    let _ = writeln!(out);
    let _ = out.flush();
}

fn sink(voice: Voice, start: Instant) -> Sink {
    Arc::new(move |e: &Event<'_>| {
        let t = start.elapsed().as_secs_f64();
        let t3 = (t * 1000.0).round() / 1000.0;
        match (voice, *e) {
            (Voice::Machine, Event::Stage(m)) => emit_json(serde_json::json!({
                "type": "stage", "elapsed": t3, "message": m
            })),
            (Voice::Machine, Event::Warning(m)) => emit_json(serde_json::json!({
                "type": "warning", "elapsed": t3, "message": m
            })),
            (
                Voice::Machine,
                Event::Progress {
                    disk,
                    disks,
                    done,
                    total,
                },
            ) => emit_json(serde_json::json!({
                "type": "progress", "elapsed": t3, "disk": disk, "disks": disks,
                "done": done, "total": total,
                "percent": u128::from(done).saturating_mul(100).checked_div(u128::from(total)).map_or(100, |p| p.min(100)),
            })),
            (Voice::Human { quiet: true, .. }, Event::Stage(_)) => {}
            (Voice::Human { to_stderr, .. }, Event::Stage(m)) => {
                let line = format!("[{t:6.1}] {m}");
                if to_stderr {
                    eprintln!("{line}");
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            (Voice::Human { .. }, Event::Warning(m)) => eprintln!("ferry: warning: {m}"),
            (Voice::Human { .. }, Event::Progress { .. }) => {}
        }
    })
}

/// Runs `ferry v2v`.
pub(crate) fn run(a: V2vArgs) -> Result<()> {
    let start = Instant::now();
    if a.machine_readable && a.input.is_none() && a.files.is_empty() {
        let mut out = std::io::stdout().lock();
        for f in FEATURES {
            writeln!(out, "{f}").map_err(stdout_err)?;
        }
        return Ok(());
    }
    if a.print_source || a.print_xml {
        return print_only(&a);
    }
    let prof = match &a.profile {
        Some(p) => profile::load(p)?,
        None => Profile::default(),
    };
    let opts = options(&a, &prof)?;
    let voice = if a.machine_readable {
        Voice::Machine
    } else {
        Voice::Human {
            to_stderr: a.json,
            quiet: a.quiet,
        }
    };
    // From here a Ctrl-C or kill is noted, and the run stops at its next step and cleans up.
    ferry::convert::interrupt::catch();
    match ferry::v2v::run(&opts, sink(voice, start)) {
        Ok(c) => print_report(&c, voice, a.json).map_err(stdout_err),
        Err(e) => {
            if voice == Voice::Machine {
                emit_json(serde_json::json!({
                    "type": "error",
                    "elapsed": (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                    "message": e.to_string(),
                }));
            }
            Err(e)
        }
    }
}

fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("(stdout)"),
        what: "cannot write",
        source: e,
    }
}

/// `--print-source` and `--print-xml`: the description only.
fn print_only(a: &V2vArgs) -> Result<()> {
    let io = stdout_err;
    let src = ferry::v2v::read_source(&parse_input(a)?)?;
    let mut out = std::io::stdout().lock();
    if a.print_source {
        if a.json {
            serde_json::to_writer_pretty(&mut out, &src).map_err(|e| io(e.into()))?;
            writeln!(out).map_err(io)?;
        } else {
            print_source(&mut out, &src).map_err(io)?;
        }
        return Ok(());
    }
    let prof = match &a.profile {
        Some(p) => profile::load(p)?,
        None => Profile::default(),
    };
    let o = options(a, &prof)?;
    let target = libvirt::Target {
        machine: o.machine,
        disk_bus: o.disk_bus.unwrap_or(Bus::Virtio),
        nic_model: o.nic_model.unwrap_or_else(|| "virtio".into()),
        networks: o.networks,
        bridges: o.bridges,
        ..libvirt::Target::default()
    };
    let xml = libvirt::write_domain(&src, &target).map_err(Error::Usage)?;
    out.write_all(xml.as_bytes()).map_err(io)
}

fn print_source(out: &mut impl Write, s: &Source) -> std::io::Result<()> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "input:    {}", s.input)?;
    writeln!(out, "name:     {}", opt(&s.name))?;
    writeln!(out, "uuid:     {}", opt(&s.uuid))?;
    writeln!(
        out,
        "memory:   {}",
        s.memory_bytes
            .map_or("-".into(), |m| format!("{} MiB", m >> 20))
    )?;
    writeln!(
        out,
        "vcpus:    {}",
        s.vcpus.map_or("-".into(), |v| v.to_string())
    )?;
    writeln!(
        out,
        "firmware: {}",
        s.firmware
            .map_or("-".into(), |f| format!("{f:?}").to_lowercase())
    )?;
    for d in &s.disks {
        writeln!(
            out,
            "disk:     {} {:?} on {} ({}) format {}",
            opt(&d.target),
            d.device,
            d.bus.map_or("-", |b| b.as_str()),
            opt(&d.source),
            opt(&d.format)
        )?;
    }
    for n in &s.nics {
        writeln!(
            out,
            "nic:      {} model {} network {} bridge {}",
            opt(&n.mac),
            opt(&n.model),
            opt(&n.network),
            opt(&n.bridge)
        )?;
    }
    Ok(())
}

fn print_report(c: &Conversion, voice: Voice, json: bool) -> std::io::Result<()> {
    let r = &c.report;
    if voice == Voice::Machine {
        emit_json(serde_json::json!({
            "type": "result",
            "elapsed": (r.seconds * 1000.0).round() / 1000.0,
            "report": r,
        }));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, r)?;
        return writeln!(out);
    }
    let g = &r.guest;
    let what = g
        .product_name
        .clone()
        .or_else(|| g.distro.clone())
        .unwrap_or_else(|| "unknown operating system".into());
    writeln!(out)?;
    writeln!(
        out,
        "Guest:    {what} ({}{}), root {}, from {}",
        g.os,
        g.arch
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default(),
        g.root,
        g.source_hypervisor
    )?;
    writeln!(
        out,
        "Target:   {} machine, disks on {}, NICs {}",
        r.machine, r.disk_bus, r.nic_model
    )?;
    if r.dry_run {
        writeln!(out, "Plan (dry run: nothing is written):")?;
        for d in &r.disks {
            writeln!(
                out,
                "  {} ({}, {}) -> {} as {} ({}, {})",
                d.source,
                d.source_format,
                super::human_size(d.virtual_size, 1),
                d.output,
                d.target,
                d.format.as_str(),
                d.allocation.as_str()
            )?;
        }
        writeln!(out, "  domain XML -> {}", r.xml)?;
        if let Some(x) = &r.domain_xml {
            writeln!(out, "\nThe domain XML:")?;
            out.write_all(x.as_bytes())?;
        }
        if let Some(d) = r.diff.as_deref().filter(|d| !d.is_empty()) {
            writeln!(out, "\nThe fixes:")?;
            out.write_all(d.as_bytes())?;
        }
    }
    writeln!(out, "\nFixes:")?;
    let shown = Plan {
        rules: c
            .plan
            .rules
            .iter()
            .filter(|x| x.status != Status::Skipped)
            .cloned()
            .collect(),
        changes: c.plan.changes.clone(),
    };
    super::fix::write_report(&mut out, &shown, r.dry_run)?;
    if !r.warnings.is_empty() {
        writeln!(out, "\nWarnings:")?;
        for w in &r.warnings {
            writeln!(out, "  {w}")?;
        }
    }
    if !r.dry_run {
        writeln!(out, "\nOutputs:")?;
        for d in &r.disks {
            writeln!(
                out,
                "  {}  ({} {}, {} virtual, {} written; {} on the guest, from {})",
                d.output,
                d.format.as_str(),
                d.allocation.as_str(),
                super::human_size(d.virtual_size, 1),
                super::human_size(d.bytes_written.unwrap_or(0), 1),
                d.target,
                d.source
            )?;
        }
        writeln!(out, "  {}  (libvirt domain: virsh define {})", r.xml, r.xml)?;
        if !r.trim.is_empty() {
            writeln!(out, "\nFree space left out of the copy:")?;
            for v in &r.trim {
                match (v.bytes, &v.reason) {
                    (Some(b), _) => writeln!(
                        out,
                        "  {} ({}): {}",
                        v.device,
                        v.fstype,
                        super::human_size(b, 1)
                    )?,
                    (None, Some(why)) => {
                        writeln!(out, "  {} ({}): copied whole: {why}", v.device, v.fstype)?
                    }
                    (None, None) => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn virt_v2v_spellings_become_long_options() {
        assert_eq!(
            normalize_args(os(&[
                "ferry",
                "v2v",
                "-i",
                "disk",
                "x.img",
                "-os",
                "/o",
                "-of",
                "raw",
                "-oa=sparse",
                "-on",
                "n",
                "--",
                "-of"
            ])),
            os(&[
                "ferry",
                "v2v",
                "-i",
                "disk",
                "x.img",
                "--output-dir",
                "/o",
                "--output-format",
                "raw",
                "--output-allocation=sparse",
                "--output-name",
                "n",
                "--",
                "-of"
            ])
        );
        let other = os(&["ferry", "convert", "-of", "x"]);
        assert_eq!(normalize_args(other.clone()), other);
        // Global options before the command.
        assert_eq!(
            normalize_args(os(&["ferry", "-q", "-vv", "v2v", "-on", "n"])),
            os(&["ferry", "-q", "-vv", "v2v", "--output-name", "n"])
        );
        let other = os(&["ferry", "-q", "convert", "-on", "x"]);
        assert_eq!(normalize_args(other.clone()), other);
    }

    #[test]
    fn the_command_line_wins_over_the_profile() {
        let a = V2vArgs {
            input: Some("disk".into()),
            files: vec![PathBuf::from("a.img")],
            format: Some("raw".into()),
            networks: vec!["lan:br-lan".into()],
            ..V2vArgs::default()
        };
        let p = Profile {
            output_dir: Some(PathBuf::from("/srv")),
            format: Some("qcow2".into()),
            allocation: Some("preallocated".into()),
            disk_bus: Some("sata".into()),
            networks: [("lan".to_string(), "default".to_string())].into(),
            ..Profile::default()
        };
        let o = options(&a, &p).unwrap();
        assert_eq!(o.format, OutputFormat::Raw);
        assert_eq!(o.allocation, Allocation::Preallocated);
        assert_eq!(o.output_dir.as_deref(), Some(std::path::Path::new("/srv")));
        assert_eq!(o.disk_bus, Some(Bus::Sata));
        assert_eq!(o.nic_model, None);
        assert_eq!(o.networks[0], ("lan".into(), "br-lan".into()));
        assert_eq!(o.networks.len(), 2);
    }

    #[test]
    fn meta_kinds_parse() {
        let a = V2vArgs {
            input: Some("vmx".into()),
            files: vec![PathBuf::from("a.vmx"), PathBuf::from("b.vmx")],
            ..V2vArgs::default()
        };
        assert!(parse_input(&a).is_err());
    }
}
