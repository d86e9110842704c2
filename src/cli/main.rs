//! The `ferry` command line: one small function per subcommand; the work is in the library.

mod cmath;
mod convert;
mod diff;
mod doc;
mod files;
mod filesystems;
mod fix;
mod forensics;
mod image;
mod inspect;
mod mount;
mod v2v;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use ferry::block::{self, BlockDevice, Format};
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
    /// Only errors on stderr (no warnings). RUST_LOG=ferry=LEVEL overrides -q and -v.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More on stderr: -v what ferry does, -vv debugging detail.
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe an image and its whole backing chain (like `qemu-img info --backing-chain`).
    /// The JSON is qemu-img's (its keys and nesting): the image alone, or with --backing-chain
    /// an array of every layer, as `qemu-img info --output=json [--backing-chain]`.
    Info(Lazy<image::InfoArgs>),
    /// Show what each range of the virtual disk holds (like `qemu-img map`); the JSON is
    /// what `qemu-img map --output=json` prints.
    Map(Lazy<image::MapArgs>),
    /// Write the image out in another format (sparse: holes and zeros are not written).
    Convert(Lazy<convert::ConvertArgs>),
    /// Write the merged view of an overlay and its source chain to a new image (both stay as
    /// they are), or with --into-source the overlay's own data back into its raw/qcow2 source.
    Commit(Lazy<convert::CommitArgs>),
    /// Copy-on-write overlays: a qcow2 image whose backing file is the (untouched) source.
    Overlay(Lazy<convert::OverlayArgs>),
    /// List the guest's filesystems, swap and logical volumes (like `virt-filesystems --long`).
    /// Disks are named /dev/sda, /dev/sdb, ... in the order given.
    Filesystems(Lazy<filesystems::FilesystemsArgs>),
    /// Find the operating systems on a guest's disks: distro, version, kernels, boot loader,
    /// fstab with each line resolved, and the guest's mount layout (like virt-inspector).
    Inspect(Lazy<inspect::InspectArgs>),
    /// Mount a guest with FUSE (no root needed), laid out as its own fstab says (/boot,
    /// /var... on their own volumes): read-only, or with --rw editable through a qcow2 overlay
    /// per disk (the images themselves are never written). Runs in the background and returns
    /// once the mount is ready; `ferry umount` stops it and flushes every write first.
    Mount(Lazy<mount::MountArgs>),
    /// Unmount what `ferry mount` mounted; returns when its daemon has exited.
    Umount(Lazy<mount::UmountArgs>),
    /// List a directory of a guest filesystem, without mounting (like virt-ls).
    Ls(Lazy<files::LsArgs>),
    /// Print a file of a guest filesystem to stdout, without mounting (like virt-cat).
    Cat(Lazy<files::CatArgs>),
    /// Fix a guest tree so it boots on KVM (rules in fixers/; `--dry-run` shows a diff).
    Fix(Lazy<fix::FixArgs>),
    /// Move a VM to KVM (like virt-v2v -o local): read its .vmx, Xen .cfg or libvirt XML (or
    /// bare disks), copy and fix its disks into -o DIR, and write its libvirt domain XML.
    V2v(Lazy<v2v::V2vArgs>),
    /// Hash each virtual disk's content (as `qemu-img convert -O raw IMG - | sha256sum`), or
    /// with --files every regular file of the guest (a `sha256sum -c` manifest). Only reads.
    Hash(Lazy<forensics::HashArgs>),
    /// A body file (The Sleuth Kit 3.x format, for `mactime -b`) of every path of the guest's
    /// tree, across its mountpoints, as `fls -r -m /` writes one. Only reads.
    Timeline(Lazy<forensics::TimelineArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `ferry completions bash > /etc/bash_completion.d/ferry`.
    Completions(Lazy<doc::CompletionsArgs>),
    /// Write the manual pages (ferry.1 and one per command, ferry-mount.1...), e.g.
    /// `ferry man --dir /usr/local/share/man/man1`; without --dir, ferry.1 on stdout.
    Man(Lazy<doc::ManArgs>),
    /// What changed between an overlay and its backing chain, or between two images of one
    /// guest (like virt-diff): `+` added, `-` removed, `=` modified (with what), `>` renamed.
    /// Only reads.
    Diff(Lazy<diff::DiffArgs>),
}

/// A subcommand's arguments, added to its `Command` only when that subcommand is parsed
/// (clap's `Command::defer`). The derive otherwise builds the arguments of every subcommand
/// at each start: 0.35 ms and about 70 page faults before `ferry mount` could begin, a tenth
/// of a whole mount (measured).
struct Lazy<T>(T);

thread_local! {
    /// Set while the whole command is built for completions and man pages, which list every
    /// subcommand (nested ones too) with its arguments in the order the derive adds them.
    static EAGER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The whole command line, every subcommand's arguments built.
fn whole_command() -> clap::Command {
    EAGER.set(true);
    let cmd = Cli::command();
    EAGER.set(false);
    cmd
}

/// Runs `add` on `cmd` now, or when the subcommand is parsed.
fn augment(cmd: clap::Command, add: fn(clap::Command) -> clap::Command) -> clap::Command {
    if EAGER.get() {
        return add(cmd);
    }
    cmd.defer(add)
}

impl<T: clap::Args> clap::Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        augment(cmd, |c| keep_about(c, T::augment_args))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        augment(cmd, |c| keep_about(c, T::augment_args_for_update))
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

/// Runs `add` on `cmd` and gives it back the descriptions it had: run deferred, `add` comes
/// after the derive has set the subcommand's own description, which the one of its arguments'
/// struct must not replace.
fn keep_about(cmd: clap::Command, add: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long = cmd.get_long_about().cloned();
    let mut cmd = add(cmd);
    if let Some(a) = about {
        cmd = cmd.about(a);
    }
    if let Some(l) = long {
        cmd = cmd.long_about(l);
    }
    cmd
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Lazy)
    }
    fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl Cmd {
    /// `-U/--force-share`: this command's readers share every permission (`block::lock`).
    fn force_share(&self) -> bool {
        match self {
            Cmd::Info(Lazy(a)) => a.force_share,
            Cmd::Map(Lazy(a)) => a.force_share,
            Cmd::Convert(Lazy(a)) => a.force_share,
            Cmd::Commit(Lazy(a)) => a.force_share,
            Cmd::Filesystems(Lazy(a)) => a.force_share,
            Cmd::Inspect(Lazy(a)) => a.force_share,
            Cmd::Ls(Lazy(a)) => a.view.force_share,
            Cmd::Cat(Lazy(a)) => a.view.force_share,
            Cmd::Mount(Lazy(a)) => a.force_share,
            Cmd::Hash(Lazy(a)) => a.force_share,
            Cmd::Timeline(Lazy(a)) => a.force_share,
            Cmd::Diff(Lazy(a)) => a.force_share,
            Cmd::Overlay(_)
            | Cmd::Umount(_)
            | Cmd::Fix(_)
            | Cmd::V2v(_)
            | Cmd::Completions(_)
            | Cmd::Man(_) => false,
        }
    }
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

impl JsonOut {
    fn on(self) -> bool {
        self.json || self.output == Some(OutputFormat::Json)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Human,
    Json,
}

/// How `ls`/`cat` find the guest.
#[derive(clap::Args)]
struct ViewArgs {
    /// A disk of the guest (repeatable, in order), as virt-ls/virt-cat take them: then
    /// every other argument is a guest path.
    #[arg(short = 'a', long = "add", value_name = "IMAGE")]
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
    // virt-v2v's `-of raw` style options are rewritten to long ones first.
    let cli = Cli::parse_from(v2v::normalize_args(std::env::args_os().collect()));
    init_log(cli.quiet, cli.verbose);
    block::lock::set_force_share(cli.cmd.force_share());
    let r = match cli.cmd {
        Cmd::Info(Lazy(a)) => image::info(a),
        Cmd::Map(Lazy(a)) => image::map(a),
        Cmd::Convert(Lazy(a)) => convert::convert(a),
        Cmd::Commit(Lazy(a)) => convert::commit(a),
        Cmd::Overlay(Lazy(a)) => convert::overlay(a),
        Cmd::Filesystems(Lazy(a)) => filesystems::filesystems(a),
        Cmd::Inspect(Lazy(a)) => inspect::inspect(a),
        Cmd::Mount(Lazy(a)) => mount::mount(a),
        Cmd::Umount(Lazy(a)) => mount::umount(a),
        Cmd::Ls(Lazy(a)) => files::ls(a),
        Cmd::Cat(Lazy(a)) => files::cat(a),
        Cmd::Hash(Lazy(a)) => forensics::hash(&a),
        Cmd::Timeline(Lazy(a)) => forensics::timeline(&a),
        Cmd::Diff(Lazy(a)) => diff::diff(a),
        Cmd::Fix(Lazy(a)) => fix::run(a),
        Cmd::V2v(Lazy(mut a)) => {
            a.quiet = cli.quiet;
            v2v::run(a).map_err(Into::into)
        }
        Cmd::Completions(Lazy(a)) => doc::completions(a, whole_command()),
        Cmd::Man(Lazy(a)) => doc::man(a, whole_command()),
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
                (
                    Some(
                        ferry::convert::Error::Interrupted(sig)
                        | ferry::convert::Error::InterruptedInPlace(sig),
                    ),
                    _,
                ) => Some(*sig),
                (_, Some(ferry::v2v::Error::Interrupted(sig))) => Some(*sig),
                _ => None,
            });
        std::process::exit(signal.map_or(1, |s| s.saturating_add(128)));
    }
}

/// stderr carries `ferry: warning: ...` lines (the same style as the commands' own
/// messages), warnings and errors by default; `-q` errors only, `-v` info, `-vv` debug with
/// the module; RUST_LOG, when set, decides instead.
fn init_log(quiet: bool, verbose: u8) {
    use std::io::Write;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    // fuser unmounts again when its session ends, after `ferry umount` or our signal thread
    // did (the only way a session ends while mounted is an error, which we report): its
    // "Failed to umount filesystem: Invalid argument" warning would follow every unmount.
    let filter = format!("{level},fuser::session=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format(|buf, r| match r.level() {
            log::Level::Error => writeln!(buf, "ferry: error: {}", r.args()),
            log::Level::Warn => writeln!(buf, "ferry: warning: {}", r.args()),
            log::Level::Info => writeln!(buf, "ferry: {}", r.args()),
            _ => writeln!(buf, "ferry: {}: {}", r.target(), r.args()),
        })
        .init();
}

/// `n` bytes in binary units with `decimals` places, qemu-img style ("1.5 GiB"; whole
/// numbers lose their zeros, bytes stay exact).
// Display arithmetic: f64 has no From<u64>, and the unit index stays below UNITS.len().
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)]
fn human_size(n: u64, decimals: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        return format!("{n} B");
    }
    let zeros = format!(".{} ", "0".repeat(decimals));
    format!("{v:.decimals$} {}", UNITS[u]).replace(&zeros, " ")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (unique short flags across global and command options,
    /// valid defaults, conflicts naming real arguments).
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        whole_command().debug_assert();
    }

    /// The subcommands whose arguments are added when parsed describe themselves, in help, as
    /// the ones built at once for man pages do; and a deferred one is parsed.
    #[test]
    fn deferred_subcommands_are_the_derived_ones() {
        let mut lazy = Cli::command();
        let mut whole = whole_command();
        let names: Vec<String> = whole
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert!(names.len() > 10, "{names:?}");
        for name in &names {
            let help = |cmd: &mut clap::Command| {
                let sub = cmd.find_subcommand_mut(name).expect(name);
                sub.build();
                sub.render_long_help().to_string()
            };
            let (l, w) = (help(&mut lazy), help(&mut whole));
            assert_eq!(l, w, "{name}");
            assert!(w.contains("--help"), "{name}: {w}");
        }
        let cli = Cli::try_parse_from(["ferry", "-q", "umount", "--lazy", "/mnt"]).unwrap();
        assert!(cli.quiet);
        assert!(
            matches!(cli.cmd, Cmd::Umount(Lazy(ref a)) if a.lazy && a.mountpoint.as_os_str() == "/mnt")
        );
    }
}
