//! `ferry v2v` (issue 15): one command from a VMware .vmx, a Xen xl/xm .cfg, a libvirt domain
//! XML or bare disk images to a KVM guest: its disks converted and fixed, and its libvirt
//! domain XML.
//!
//! The pipeline, as virt-v2v's (`virt-v2v -o local`), all in process:
//! 1. the description is read (`meta`) and the source disks opened read-only, each under a
//!    copy-on-write overlay (`block::overlay`) in a temporary directory inside the output
//!    directory, so the source never changes;
//! 2. the guest is inspected (`guest`), and the disk bus and NIC model chosen by what its
//!    kernels can drive: virtio where it has the drivers, SATA (IDE on the `pc` machine) and
//!    e1000 otherwise, with a warning, as virt-v2v falls back;
//! 3. the fix rules run on the overlays (`fix::image::Session`) with the facts of inspection
//!    and the source hypervisor the description names;
//! 4. each overlay's merged view is copied (`convert`) to `DIR/NAME-sdX.qcow2|raw` under the
//!    temporary directory, the domain XML written beside them, and only when everything
//!    succeeded are they linked to their final names. A signal (SIGINT, SIGTERM, SIGHUP) is
//!    noted (`convert::interrupt`) and stops the run at its next step; the temporary directory
//!    goes with every failure, so the output directory holds only what it held before.

#![allow(unsafe_code)] // posix_fallocate of preallocated outputs; each block says why it is sound.

mod osinfo_db;
pub mod profile;

use crate::block::trim::Trimmed;
use crate::block::{self, overlay, BlockDevice, Format};
use crate::convert::{self, interrupt, progress::Observer};
use crate::fix;
use crate::fix::engine::{Plan, RuleReport, Selection};
use crate::fix::image::Session;
use crate::guest::facts::{DiskBus, Hypervisor, Os};
use crate::guest::files::FsFiles;
use crate::guest::inspect::OsInfo;
use crate::guest::unused::{self, Unused, VolumeUnused};
use crate::meta::{self, libvirt, ova, Bus, DeviceKind, Disk, InputKind, Source};
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Meta(#[from] meta::Error),
    #[error(transparent)]
    Block(#[from] block::Error),
    #[error(transparent)]
    Fix(#[from] fix::Error),
    #[error(transparent)]
    Volume(#[from] crate::volume::Error),
    #[error(transparent)]
    Convert(convert::Error),
    /// Options that do not go together, or a source that cannot be converted as it is.
    #[error("{0}")]
    Usage(String),
    /// A hard disk the description names is not there.
    #[error("disk {target} of {file}: {} does not exist{hint}", .path.display())]
    MissingDisk {
        target: String,
        file: String,
        path: PathBuf,
        hint: &'static str,
    },
    /// An output that would replace a file already in the output directory.
    #[error("{}: already exists; remove it, or name the guest otherwise with -on NAME", .0.display())]
    Exists(PathBuf),
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    /// A signal asked the run to stop; everything it had written is removed.
    #[error("interrupted by {}: the output directory holds only what it held before", interrupt::name(*.0))]
    Interrupted(i32),
    #[error("profile {file}: {message}")]
    Profile { file: String, message: String },
}

impl From<convert::Error> for Error {
    fn from(e: convert::Error) -> Self {
        match e {
            convert::Error::Interrupted(sig) => Error::Interrupted(sig),
            e => Error::Convert(e),
        }
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Where the guest comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A description file and the datastore map for VMware's `[NAME] path` names.
    Description {
        kind: InputKind,
        file: PathBuf,
        datastores: Vec<(String, PathBuf)>,
    },
    /// Disk images with no description (`-i disk`): the guest is named after the first.
    Disks(Vec<PathBuf>),
}

/// `-of`: the output disks' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Qcow2,
    Raw,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Raw => "raw",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "qcow2" => Ok(OutputFormat::Qcow2),
            "raw" => Ok(OutputFormat::Raw),
            o => Err(format!("output format '{o}': expected qcow2 or raw")),
        }
    }
}

/// `-oa`: sparse outputs hold only the data; preallocated ones have every block of the
/// virtual disk reserved on the host (qemu's `preallocation=falloc`), so the guest can never
/// meet a full host filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    #[default]
    Sparse,
    Preallocated,
}

impl Allocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Sparse => "sparse",
            Allocation::Preallocated => "preallocated",
        }
    }
}

impl std::str::FromStr for Allocation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sparse" => Ok(Allocation::Sparse),
            "preallocated" => Ok(Allocation::Preallocated),
            o => Err(format!(
                "output allocation '{o}': expected sparse or preallocated"
            )),
        }
    }
}

/// Everything a run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub input: Input,
    /// Required unless `dry_run`.
    pub output_dir: Option<PathBuf>,
    pub format: OutputFormat,
    pub allocation: Allocation,
    /// The target guest's name (`-on`), instead of the source's.
    pub name: Option<String>,
    /// The operating system to convert when the disks hold several (the device of its /).
    pub root: Option<String>,
    pub machine: libvirt::Machine,
    /// The disks' bus; `None`: virtio when the guest can drive it, else SATA (IDE on `pc`).
    pub disk_bus: Option<Bus>,
    /// The NICs' model; `None`: virtio when the guest can drive it, else e1000.
    pub nic_model: Option<String>,
    pub networks: Vec<(String, String)>,
    pub bridges: Vec<(String, String)>,
    /// Plan only: inspect, show the fixes as a diff and the XML, write nothing.
    pub dry_run: bool,
    /// Copy workers (0: the copy's default).
    pub threads: usize,
    /// A progress bar on a terminal during the copy.
    pub progress_bar: bool,
    /// Copy the space the guest's filesystems mark free too (`--no-trim`): by default it is
    /// left out, as virt-v2v's fstrim does.
    pub keep_free: bool,
}

/// What a run tells while it works.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A stage begins.
    Stage(&'a str),
    Warning(&'a str),
    /// `done` of `total` bytes of disk `disk` (from 1) of `disks` copied or skipped.
    Progress {
        disk: usize,
        disks: usize,
        done: u64,
        total: u64,
    },
}

/// Receives the events, from the copy's worker threads too.
pub type Sink = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Test hook: milliseconds to wait after each stage begins and after each chunk the copy
/// finishes, so that a test can send a signal at a chosen stage or in the middle of a copy.
/// Waiting is cut short by a signal.
pub const TEST_DELAY_ENV: &str = "FERRY_V2V_TEST_DELAY_MS";
/// The longest test delay honoured.
const MAX_TEST_DELAY: Duration = Duration::from_secs(10);

/// The longest guest name: the disk files are `NAME-sdX.qcow2` in a directory, and most host
/// filesystems take 255 bytes a name.
pub const MAX_NAME: usize = 200;

/// The inspected guest, in brief.
#[derive(Debug, Clone, Serialize, Default)]
pub struct GuestSummary {
    pub os: String,
    pub distro: Option<String>,
    pub product_name: Option<String>,
    pub version: Option<String>,
    /// libosinfo's short ID (`win2k22`, `rhel9.4`), as virt-inspector names the guest.
    pub osinfo: Option<String>,
    pub arch: Option<String>,
    /// The device of its `/`.
    pub root: String,
    /// The hypervisor the fixes were made for leaving (description, else inspection).
    pub source_hypervisor: String,
    /// Whether some installed kernel (Windows: driver) handles virtio-blk and virtio-net.
    pub virtio_blk: bool,
    pub virtio_net: bool,
}

/// One converted disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// The source image and its format as read.
    pub source: String,
    pub source_format: String,
    /// The name the source gave the disk (`sda`, `xvda`), when it did.
    pub source_target: Option<String>,
    /// The disk's name on the target (`vda`, `sda`).
    pub target: String,
    pub output: String,
    pub format: OutputFormat,
    pub allocation: Allocation,
    pub virtual_size: u64,
    /// Bytes the copy wrote (null in a dry run).
    pub bytes_written: Option<u64>,
    /// Bytes free in the guest's filesystems and swap, left out of the copy (null in a dry
    /// run or with `--no-trim`).
    pub bytes_trimmed: Option<u64>,
}

/// What a run did (or, in a dry run, would do): `ferry v2v --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    /// `vmx`, `xen`, `libvirt` or `disk`.
    pub input: String,
    /// The description file (null for `-i disk`).
    pub source_file: Option<String>,
    pub dry_run: bool,
    pub guest: GuestSummary,
    pub machine: &'static str,
    pub disk_bus: &'static str,
    pub nic_model: String,
    pub disks: Vec<DiskReport>,
    /// The domain XML's path (where it is, or would be, written).
    pub xml: String,
    /// Every rule: applied (`applied`), nothing to do (`unchanged`), or `skipped` and why.
    pub rules: Vec<RuleReport>,
    /// Guest paths the fixes change.
    pub changed_paths: usize,
    /// Each filesystem and swap area: the bytes it left out of the copy, or why it was copied
    /// whole (empty in a dry run or with `--no-trim`).
    pub trim: Vec<VolumeUnused>,
    pub warnings: Vec<String>,
    /// Dry run: the fixes as a unified diff, and the domain XML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_xml: Option<String>,
    pub seconds: f64,
}

/// The report and the fix plan (for the human report of the rules).
pub struct Conversion {
    pub report: Report,
    pub plan: Plan,
}

/// A signal received so far, as an error.
fn check_interrupt() -> Result<()> {
    match interrupt::pending() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

/// Waits `d` in short steps, returning early when a signal arrives.
fn pause(d: Duration) {
    // None: later than the clock can say, so only a signal ends the wait.
    let end = Instant::now().checked_add(d);
    while interrupt::pending().is_none() {
        let left = end.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

fn test_delay() -> Duration {
    std::env::var(TEST_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or_default()
        .min(MAX_TEST_DELAY)
}

/// A run's voice: stages and warnings to the sink, warnings kept for the report.
struct Voice {
    sink: Sink,
    warnings: Vec<String>,
    delay: Duration,
}

impl Voice {
    fn stage(&self, s: &str) -> Result<()> {
        check_interrupt()?;
        (self.sink)(&Event::Stage(s));
        if !self.delay.is_zero() {
            pause(self.delay);
            check_interrupt()?;
        }
        Ok(())
    }

    fn warn(&mut self, w: String) {
        (self.sink)(&Event::Warning(&w));
        self.warnings.push(w);
    }
}

/// The temporary directory of a run inside the output directory: overlays and outputs under
/// their temporary names. Removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(out_dir: &Path) -> Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = out_dir.join(format!(".ferry-v2v-{}-{nanos:09}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(io_err(&p, "cannot create the temporary directory"))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!("{}: cannot remove: {e}", self.0.display());
        }
    }
}

/// The position of a guest disk name in its bus's order (`sda` 0, `xvdb` 1, `hdaa` 26).
fn target_index(t: &str) -> Option<u32> {
    let letters = ["xvd", "vd", "sd", "hd"]
        .iter()
        .find_map(|p| t.strip_prefix(p))?;
    // Bijective base 26 (a..z, then aa..zz), as the kernel names disks.
    crate::guest::devname::letters_index(letters)
}

/// Reads the description, or makes one for bare disk images.
pub fn read_source(input: &Input) -> Result<Source> {
    match input {
        Input::Description {
            kind,
            file,
            datastores,
        } => Ok(meta::read_file(*kind, file, datastores)?),
        Input::Disks(images) => {
            let first = images
                .first()
                .ok_or_else(|| Error::Usage("-i disk needs at least one disk image".into()))?;
            let name = first.file_stem().map(|s| s.to_string_lossy().into_owned());
            let mut disks = Vec::new();
            for p in images {
                if !p.is_file() {
                    return Err(Error::Usage(format!("{}: no such disk image", p.display())));
                }
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                // Probed by content: with no description, nothing else can tell.
                let format = block::open(&abs)?.info()?.format;
                disks.push(Disk {
                    source: Some(abs.display().to_string()),
                    format: Some(format),
                    device: DeviceKind::Disk,
                    ..Disk::default()
                });
            }
            Ok(Source {
                input: "disk".into(),
                name,
                disks,
                ..Source::default()
            })
        }
    }
}

/// The guest name, checked: it names files in the output directory.
fn check_name(name: &str) -> Result<()> {
    let bad = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME {
        Some("is too long")
    } else if name.starts_with('.') {
        Some("starts with a dot")
    } else if name.contains(['/', '\0']) || name.chars().any(char::is_control) {
        Some("holds a '/' or a control character")
    } else {
        None
    };
    match bad {
        Some(why) => Err(Error::Usage(format!(
            "the guest name {name:?} {why}: give another with -on NAME"
        ))),
        None => Ok(()),
    }
}

/// The hypervisor a description names, as the fix rules know them.
fn hypervisor_of(src: &Source) -> Option<Hypervisor> {
    Some(match src.hypervisor.as_deref()? {
        "vmware" => Hypervisor::Vmware,
        "xen" => Hypervisor::Xen,
        "hyperv" => Hypervisor::Hyperv,
        "vbox" | "virtualbox" => Hypervisor::Virtualbox,
        "kvm" | "qemu" => Hypervisor::Kvm,
        _ => return None,
    })
}

/// A Linux guest whose every kernel is a Xen PV-only build cannot boot on KVM, whatever is
/// fixed: refused, as virt-v2v refuses it ("only Xen kernels are installed in this guest").
fn refuse_xen_pv_only(os: &OsInfo) -> Result<()> {
    if os.only_xen_pv_kernels() {
        let versions: Vec<&str> = os.booting_kernels().map(|k| k.version.as_str()).collect();
        return Err(Error::Usage(format!(
            "only Xen paravirtual kernels are installed in this guest ({}): they do not boot on \
             KVM. Install a regular kernel in the guest first (RHEL 5: `yum install kernel`; \
             SLES: `zypper in kernel-default`), make it the boot loader's default, then convert \
             again",
            versions.join(", ")
        )));
    }
    Ok(())
}

/// Whether the guest can drive virtio-blk and virtio-net, and what told: some installed kernel
/// with the module or built in (Linux, as virt-v2v checks), the viostor and netkvm services
/// (Windows).
fn virtio_support(os: &OsInfo) -> (bool, bool, String) {
    match os.os_type {
        Os::Linux => {
            let blk = os.kernels.iter().any(|k| k.virtio_blk.available());
            let net = os.kernels.iter().any(|k| k.virtio_net.available());
            let why = if os.kernels.iter().all(|k| k.modules.is_none()) {
                "no kernel module tree found in /lib/modules".to_string()
            } else {
                let versions: Vec<&str> = os.kernels.iter().map(|k| k.version.as_str()).collect();
                format!("kernels {}", versions.join(", "))
            };
            (blk, net, why)
        }
        Os::Windows => {
            let has = |n: &str| {
                os.windows
                    .as_ref()
                    .is_some_and(|w| w.virtio_drivers.iter().any(|s| s.name == n))
            };
            (
                has("viostor"),
                has("netkvm"),
                "the Windows driver services".into(),
            )
        }
        Os::Unknown => (false, false, "an unknown operating system".into()),
    }
}

/// One hard disk of the source, in target order.
struct SourceDisk {
    path: PathBuf,
    /// Where the image is inside an OVA's tar (read in place), when it is a member.
    member: Option<(PathBuf, ova::Member)>,
    /// Stored gzip-compressed in the package: read through an index (`block::open_member`).
    gzip: bool,
    /// The format the description forces (raw only: a raw disk is never probed, as its first
    /// bytes belong to the guest).
    forced: Option<Format>,
    stated: Option<String>,
    target: Option<String>,
}

/// The source's hard disks in the guest's order, each found on the host.
fn source_disks(src: &Source, file: &str, pkg: Option<&ova::Ova>) -> Result<Vec<SourceDisk>> {
    // An OVA's disks by the `source` its description gives them.
    let named = pkg.map(|p| p.source());
    let in_pkg = |s: &str| {
        let mut hard = named
            .as_ref()?
            .disks
            .iter()
            .filter(|d| d.device == DeviceKind::Disk && d.source.is_some());
        let i = hard.position(|d| d.source.as_deref() == Some(s))?;
        pkg?.disks.get(i).cloned()
    };
    let mut disks: Vec<&Disk> = src
        .disks
        .iter()
        .filter(|d| d.device == DeviceKind::Disk)
        .collect();
    if disks.is_empty() {
        return Err(Error::Usage(format!(
            "{file}: the source VM has no hard disk to convert"
        )));
    }
    // The guest names its disks in bus order; the device map of inspection assumes the disks
    // come in that order.
    if disks
        .iter()
        .all(|d| d.target.as_deref().and_then(target_index).is_some())
    {
        disks.sort_by_key(|d| d.target.as_deref().and_then(target_index));
    }
    let mut out = Vec::new();
    for (i, d) in (0u32..).zip(disks.iter()) {
        let target = d
            .target
            .clone()
            .unwrap_or_else(|| meta::vmx::index_to_name("disk", i));
        let Some(s) = d.source.as_deref().filter(|s| !s.is_empty()) else {
            return Err(Error::Usage(format!(
                "disk {target} of {file} has no source file"
            )));
        };
        let path = std::path::absolute(s).unwrap_or_else(|_| PathBuf::from(s));
        let (member, gzip) = match in_pkg(s) {
            Some((ova::DiskFile::Member { archive, member }, gz)) => (Some((archive, member)), gz),
            Some((ova::DiskFile::Path(_), gz)) => (None, gz),
            None => (None, false),
        };
        if member.is_none() && !path.exists() {
            let hint = if src.input == "vmx" {
                " (map its datastore with --datastore NAME=DIR, or put it beside the .vmx)"
            } else {
                ""
            };
            return Err(Error::MissingDisk {
                target,
                file: file.to_string(),
                path,
                hint,
            });
        }
        out.push(SourceDisk {
            path,
            member,
            gzip,
            forced: (d.format.as_deref() == Some("raw")).then_some(Format::Raw),
            stated: d.format.clone(),
            target: d.target.clone(),
        });
    }
    Ok(out)
}

fn bus_name(b: Bus) -> &'static str {
    match b {
        Bus::Sata => "sata",
        Bus::Ide => "ide",
        _ => "virtio",
    }
}

/// Reserves every block of `path` on the host (the data stays).
fn preallocate(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path, "cannot open to preallocate"))?;
    let len = f.metadata().map_err(io_err(path, "cannot stat"))?.len();
    let len = libc::off_t::try_from(len)
        .map_err(|_| Error::Usage(format!("{}: too large to preallocate", path.display())))?;
    // SAFETY: a valid open descriptor and a range inside the file.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if r != 0 {
        return Err(Error::Io {
            path: path.to_path_buf(),
            what: "cannot preallocate",
            source: io::Error::from_raw_os_error(r),
        });
    }
    f.sync_all().map_err(io_err(path, "cannot flush"))
}

/// Gives the finished `tmp` its final name `dst`, never replacing a file there: a hard link
/// (fails if `dst` exists), or a rename after a check where the filesystem has no links.
fn publish(tmp: &Path, dst: &Path) -> Result<()> {
    match std::fs::hard_link(tmp, dst) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists(dst.into())),
        Err(_) => {
            if std::fs::symlink_metadata(dst).is_ok() {
                return Err(Error::Exists(dst.into()));
            }
            std::fs::rename(tmp, dst).map_err(io_err(dst, "cannot move the output into place"))
        }
    }
}

/// The output directory, checked and made absolute (the XML names the disks by absolute
/// paths).
fn output_dir(opts: &Options) -> Result<PathBuf> {
    let dir = match &opts.output_dir {
        Some(d) => d.clone(),
        None if opts.dry_run => PathBuf::from("."),
        None => {
            return Err(Error::Usage(
                "give the output directory with -o DIR (or use --dry-run)".into(),
            ))
        }
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "-o {}: not a directory (create it first)",
            dir.display()
        )));
    }
    std::fs::canonicalize(&dir).map_err(io_err(&dir, "cannot resolve the output directory"))
}

/// Runs the conversion. Call `convert::interrupt::catch` first (before any thread starts) for
/// signals to stop it cleanly.
pub fn run(opts: &Options, sink: Sink) -> Result<Conversion> {
    let start = Instant::now();
    let mut voice = Voice {
        sink,
        warnings: Vec::new(),
        delay: test_delay(),
    };
    let (input, source_file) = input_names(&opts.input);
    voice.stage(&format!(
        "Opening the source {}",
        source_file.as_deref().unwrap_or("disks")
    ))?;
    let (pkg, src) = open_source(opts, &voice)?;
    let label = source_file.clone().unwrap_or_else(|| "-i disk".into());
    let name = opts
        .name
        .clone()
        .or_else(|| src.name.clone())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{label}: the source VM has no name: give one with -on NAME"
            ))
        })?;
    check_name(&name)?;
    let disks = source_disks(&src, &label, pkg.as_ref())?;
    let outputs = Outputs::new(opts, &name, disks.len())?;

    // Read-only sources, each under an overlay in the scratch directory (a dry run reads the
    // sources themselves and creates nothing).
    let scratch = if opts.dry_run {
        None
    } else {
        Some(Scratch::create(&outputs.dir)?)
    };
    let opened = open_disks(&disks, scratch.as_ref(), &mut voice)?;

    voice.stage("Inspecting the guest")?;
    let session = Session::open(&opened.devices, opts.root.as_deref(), !opts.dry_run)?;
    for n in session.notes.clone() {
        voice.warn(n);
    }
    let os = session.report()?.os.clone();
    refuse_xen_pv_only(&os)?;
    let mut facts = session.facts()?;
    let (mut virtio_blk, virtio_net, mut why) = virtio_support(&os);
    if virtio_blk && os.os_type == Os::Linux {
        let tree = session.tree()?;
        if let Some(w) = fix::initramfs::blocks_virtio(&FsFiles::new(&tree), &os) {
            virtio_blk = false;
            why = w;
        }
    }
    let disk_bus = choose_disk_bus(opts, virtio_blk, &why, &mut voice);
    let nic_model = choose_nic_model(opts, &src, virtio_net, &why, &mut voice);
    facts.target_bus = match disk_bus {
        Bus::Sata => DiskBus::Sata,
        Bus::Ide => DiskBus::Ide,
        Bus::Scsi => DiskBus::VirtioScsi,
        _ => DiskBus::VirtioBlk,
    };
    if let Some(h) = hypervisor_of(&src).filter(|h| *h != Hypervisor::Kvm) {
        facts.source = h;
    }
    let guest = GuestSummary {
        os: os.os_type.as_str().to_string(),
        distro: os.distro.clone(),
        product_name: os.product_name.clone(),
        version: os.version.as_ref().map(|v| v.to_string()),
        osinfo: os.osinfo.clone(),
        arch: os.arch.clone(),
        root: session.root().to_string(),
        source_hypervisor: facts.source.as_str().to_string(),
        virtio_blk,
        virtio_net,
    };

    voice.stage(if opts.dry_run {
        "Planning the fixes for KVM"
    } else {
        "Fixing the guest for KVM"
    })?;
    let rules = fix::standard::rules()?;
    let plan = session.fix(&facts, &rules, &Selection::default(), !opts.dry_run)?;
    drop(session);
    for r in &plan.rules {
        for w in &r.warnings {
            voice.warn(format!("{}: {w}", r.name));
        }
    }
    let fixed = opened.finish()?;
    let copy = DiskCopy {
        opts,
        voice: &voice,
        disks: &disks,
        fixed: &fixed,
        outputs: &outputs,
        disk_bus,
    };
    let unused = match &scratch {
        Some(_) if !opts.keep_free => Some(find_unused(&fixed, &voice)?),
        _ => None,
    };
    let reports = copy.all(scratch.as_ref(), unused.as_ref())?;

    voice.stage("Creating the domain XML")?;
    let libosinfo = os.osinfo.as_deref().and_then(osinfo_db::os_id);
    let xml = domain_xml(
        opts,
        &src,
        &name,
        &outputs.disks,
        disk_bus,
        &nic_model,
        libosinfo,
    )?;
    if let Some(s) = &scratch {
        publish_all(s, &outputs, &name, &xml, &voice)?;
    }
    drop(scratch);

    let report = Report {
        name,
        input: input.to_string(),
        source_file,
        dry_run: opts.dry_run,
        guest,
        machine: match opts.machine {
            libvirt::Machine::Q35 => "q35",
            libvirt::Machine::Pc => "pc",
        },
        disk_bus: bus_name(disk_bus),
        nic_model,
        disks: reports,
        xml: outputs.xml.display().to_string(),
        rules: plan.rules.clone(),
        changed_paths: plan.changes.len(),
        trim: unused.map(|u| u.volumes).unwrap_or_default(),
        warnings: voice.warnings,
        diff: opts.dry_run.then(|| plan.diff()),
        domain_xml: opts.dry_run.then_some(xml),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Conversion { report, plan })
}

/// What `-i` was, for the report: the input kind and the description file, if any.
fn input_names(input: &Input) -> (&'static str, Option<String>) {
    match input {
        Input::Description { kind, file, .. } => (
            match kind {
                InputKind::Vmx => "vmx",
                InputKind::Xen => "xen",
                InputKind::Libvirt => "libvirt",
                InputKind::Ova => "ova",
            },
            Some(file.display().to_string()),
        ),
        Input::Disks(_) => ("disk", None),
    }
}

/// The source's description, and the OVA package it came in when it did (kept open: the
/// disks are read from inside it), its manifest checked first.
fn open_source(opts: &Options, voice: &Voice) -> Result<(Option<ova::Ova>, Source)> {
    let pkg = match &opts.input {
        Input::Description {
            kind: InputKind::Ova,
            file,
            ..
        } => Some(ova::open(file)?),
        _ => None,
    };
    let src = match &pkg {
        Some(p) => p.source(),
        None => read_source(&opts.input)?,
    };
    if let Some(p) = pkg.as_ref().filter(|p| !p.manifest.is_empty()) {
        voice.stage(&format!(
            "Checking the {} files the manifest lists",
            p.manifest.len()
        ))?;
        p.verify()?;
    }
    Ok((pkg, src))
}

/// The final names of everything the run writes, in the output directory.
struct Outputs {
    dir: PathBuf,
    /// `NAME-sdX.EXT`, one per source disk.
    disks: Vec<PathBuf>,
    /// `NAME.xml`.
    xml: PathBuf,
}

impl Outputs {
    /// The names; none may exist yet, as the run never replaces a file.
    fn new(opts: &Options, name: &str, n: usize) -> Result<Outputs> {
        let dir = output_dir(opts)?;
        let ext = opts.format.as_str();
        let disks: Vec<PathBuf> = (0u32..)
            .take(n)
            .map(|i| {
                dir.join(format!(
                    "{name}-{}.{ext}",
                    meta::vmx::index_to_name("sd", i)
                ))
            })
            .collect();
        let xml = dir.join(format!("{name}.xml"));
        for p in disks.iter().chain([&xml]) {
            if std::fs::symlink_metadata(p).is_ok() {
                return Err(Error::Exists(p.clone()));
            }
        }
        Ok(Outputs { dir, disks, xml })
    }
}

impl SourceDisk {
    /// Where the disk is read in place: its tar member, or for a gzip-stored file of a
    /// directory package the whole file (archive, name, offset, size).
    fn window(&self) -> Result<Option<(PathBuf, String, u64, u64)>> {
        if let Some((archive, m)) = &self.member {
            return Ok(Some((archive.clone(), m.name.clone(), m.offset, m.size)));
        }
        if !self.gzip {
            return Ok(None);
        }
        let len = std::fs::metadata(&self.path)
            .map_err(io_err(&self.path, "cannot stat"))?
            .len();
        let name = self.path.file_name().unwrap_or_default();
        Ok(Some((
            self.path.clone(),
            name.to_string_lossy().into_owned(),
            0,
            len,
        )))
    }
}

/// The source disks, opened for inspection and fixing.
struct Opened {
    /// What the guest is read through: the overlays, or the sources themselves in a dry run.
    devices: Vec<Arc<dyn BlockDevice>>,
    /// Each overlay and its file (none in a dry run).
    overlays: Vec<(Arc<overlay::Overlay>, PathBuf)>,
    /// Each source's format, as read.
    formats: Vec<String>,
}

/// Opens each source disk read-only and, unless this is a dry run, puts a copy-on-write
/// overlay over it in the scratch directory; a format that differs from what the
/// description states is read as found, with a warning.
fn open_disks(
    disks: &[SourceDisk],
    scratch: Option<&Scratch>,
    voice: &mut Voice,
) -> Result<Opened> {
    let mut opened = Opened {
        devices: Vec::new(),
        overlays: Vec::new(),
        formats: Vec::new(),
    };
    for ((i, d), number) in disks.iter().enumerate().zip(1usize..) {
        check_interrupt()?;
        if d.gzip {
            voice.stage(&format!("Indexing compressed disk {number}"))?;
        }
        let window = d.window()?;
        let src_dev = match &window {
            Some((archive, name, offset, size)) => {
                block::open_member(archive, name, *offset, *size, d.forced, d.gzip)?
            }
            None => block::open_as(&d.path, d.forced)?,
        };
        let fmt = src_dev.info()?.format;
        if let Some(s) = d.stated.as_deref().filter(|s| *s != fmt) {
            voice.warn(format!(
                "disk {}: the description says {s}, the file {} is {fmt}: read as {fmt}",
                d.target.as_deref().unwrap_or("?"),
                d.path.display()
            ));
        }
        opened.formats.push(fmt);
        match scratch {
            None => opened.devices.push(src_dev),
            Some(s) => {
                drop(src_dev);
                let ov_path = s.0.join(format!("disk{i}-overlay.qcow2"));
                let ov = match &window {
                    Some((archive, name, offset, size)) => overlay::create_over_member(
                        archive, name, *offset, *size, d.forced, d.gzip, &ov_path,
                    )?,
                    None => overlay::create_as(&d.path, d.forced, &ov_path)?,
                };
                let ov = Arc::new(ov);
                opened.devices.push(ov.clone());
                opened.overlays.push((ov, ov_path));
            }
        }
    }
    Ok(opened)
}

/// The disks once fixed: what copying needs of them.
struct Fixed {
    formats: Vec<String>,
    sizes: Vec<u64>,
    /// The overlay files, finished and flushed (none in a dry run).
    overlays: Vec<PathBuf>,
}

impl Opened {
    /// Closes the devices and finishes the overlays, so their files can be reopened to copy.
    fn finish(self) -> Result<Fixed> {
        let sizes: Vec<u64> = self.devices.iter().map(|d| d.len()).collect();
        drop(self.devices);
        let mut overlays = Vec::new();
        for (ov, path) in self.overlays {
            ov.finish()?;
            ov.flush()?;
            overlays.push(path);
        }
        Ok(Fixed {
            formats: self.formats,
            sizes,
            overlays,
        })
    }
}

/// The target's disk bus: as asked, else virtio when the guest can drive it and the machine's
/// fallback (SATA on q35, IDE on pc) otherwise, with a warning when the guest lacks the driver.
fn choose_disk_bus(opts: &Options, virtio_blk: bool, why: &str, voice: &mut Voice) -> Bus {
    let fallback_bus = match opts.machine {
        libvirt::Machine::Pc => Bus::Ide,
        libvirt::Machine::Q35 => Bus::Sata,
    };
    match opts.disk_bus {
        Some(b) => {
            if b == Bus::Virtio && !virtio_blk {
                voice.warn(format!(
                    "--disk-bus virtio, but the guest has no virtio-blk driver ({why}): it may not find its disks"
                ));
            }
            b
        }
        None if virtio_blk => Bus::Virtio,
        None => {
            voice.warn(format!(
                "the guest has no virtio-blk driver ({why}): its disks go on {}, which is slower; install the virtio drivers and move them to virtio later",
                bus_name(fallback_bus)
            ));
            fallback_bus
        }
    }
}

/// The target's NIC model: as asked, else virtio when the guest can drive it and e1000
/// otherwise; the warnings only matter when the source has network cards.
fn choose_nic_model(
    opts: &Options,
    src: &Source,
    virtio_net: bool,
    why: &str,
    voice: &mut Voice,
) -> String {
    match &opts.nic_model {
        Some(m) => {
            if m == "virtio" && !virtio_net && !src.nics.is_empty() {
                voice.warn(format!(
                    "--nic-model virtio, but the guest has no virtio-net driver ({why}): it may have no network"
                ));
            }
            m.clone()
        }
        None if virtio_net => "virtio".to_string(),
        None => {
            if !src.nics.is_empty() {
                voice.warn(format!(
                    "the guest has no virtio-net driver ({why}): its network cards are e1000"
                ));
            }
            "e1000".to_string()
        }
    }
}

/// Copying the fixed disks to their outputs.
/// The space on the fixed guest's disks that holds nothing it will read (see
/// `guest::unused`): what the copy leaves out.
fn find_unused(fixed: &Fixed, voice: &Voice) -> Result<Unused> {
    voice.stage("Finding the free space of the guest's filesystems")?;
    let disks = fixed
        .overlays
        .iter()
        .map(|p| block::open(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let u = unused::unused(&disks)?;
    for v in &u.volumes {
        if let Some(why) = &v.reason {
            log::info!("{} ({}): copied whole: {why}", v.device, v.fstype);
        }
    }
    Ok(u)
}

struct DiskCopy<'a> {
    opts: &'a Options,
    voice: &'a Voice,
    disks: &'a [SourceDisk],
    fixed: &'a Fixed,
    outputs: &'a Outputs,
    disk_bus: Bus,
}

impl DiskCopy<'_> {
    /// Reports every disk and, unless this is a dry run, copies each overlay's merged view
    /// into the scratch directory under its output's name.
    fn all(&self, scratch: Option<&Scratch>, unused: Option<&Unused>) -> Result<Vec<DiskReport>> {
        let mut reports = Vec::new();
        let n = self.disks.len();
        for ((i, d), (index, number)) in self.disks.iter().enumerate().zip((0u32..).zip(1usize..)) {
            let target = meta::vmx::index_to_name(
                match self.disk_bus {
                    Bus::Sata | Bus::Scsi => "sd",
                    Bus::Ide => "hd",
                    _ => "vd",
                },
                index,
            );
            let output = &self.outputs.disks[i];
            let mut r = DiskReport {
                source: d.path.display().to_string(),
                source_format: self.fixed.formats[i].clone(),
                source_target: d.target.clone(),
                target,
                output: output.display().to_string(),
                format: self.opts.format,
                allocation: self.opts.allocation,
                virtual_size: self.fixed.sizes[i],
                bytes_written: None,
                bytes_trimmed: None,
            };
            if let Some(s) = scratch {
                self.voice.stage(&format!(
                    "Copying disk {number}/{n} to {}",
                    output.display()
                ))?;
                let mut src = block::open(&self.fixed.overlays[i])?;
                if let Some(u) = unused {
                    let t = Trimmed::new(src, u.disks[i].clone())?;
                    r.bytes_trimmed = Some(t.trimmed_bytes());
                    src = Arc::new(t);
                }
                let tmp_out = s.0.join(output.file_name().unwrap_or_default());
                let stats = copy_disk(self.opts, self.voice, &src, &tmp_out, number, n)?;
                r.bytes_written = Some(stats.bytes_written);
            }
            reports.push(r);
        }
        Ok(reports)
    }
}

/// The target's libvirt domain: the source's, with the converted disks in place of its hard
/// disks (its CD-ROMs and floppies kept) and the chosen bus and NIC model.
fn domain_xml(
    opts: &Options,
    src: &Source,
    name: &str,
    outputs: &[PathBuf],
    disk_bus: Bus,
    nic_model: &str,
    libosinfo: Option<String>,
) -> Result<String> {
    let mut target_src = src.clone();
    target_src.name = Some(name.to_string());
    target_src.disks = outputs
        .iter()
        .map(|o| Disk {
            source: Some(o.display().to_string()),
            format: Some(opts.format.as_str().to_string()),
            device: DeviceKind::Disk,
            ..Disk::default()
        })
        .chain(
            src.disks
                .iter()
                .filter(|d| d.device != DeviceKind::Disk)
                .cloned(),
        )
        .collect();
    let target = libvirt::Target {
        machine: opts.machine,
        disk_bus,
        nic_model: nic_model.to_string(),
        networks: opts.networks.clone(),
        bridges: opts.bridges.clone(),
        libosinfo,
        ..libvirt::Target::default()
    };
    libvirt::write_domain(&target_src, &target).map_err(Error::Usage)
}

/// Writes the domain XML beside the copied disks in the scratch directory, then gives each
/// its final name; a failure removes the names already given, so the output directory holds
/// only what it held before.
fn publish_all(s: &Scratch, outputs: &Outputs, name: &str, xml: &str, voice: &Voice) -> Result<()> {
    let tmp_xml = s.0.join(format!("{name}.xml"));
    write_synced(&tmp_xml, xml.as_bytes())?;
    voice.stage("Finishing off")?;
    let mut done: Vec<&Path> = Vec::new();
    for dst in outputs.disks.iter().chain([&outputs.xml]) {
        let tmp = s.0.join(dst.file_name().unwrap_or_default());
        if let Err(e) = publish(&tmp, dst) {
            for p in done {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        done.push(dst);
    }
    if let Ok(d) = std::fs::File::open(&outputs.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `data` to a new file `path` and syncs it.
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path, "cannot create"))?;
    f.write_all(data).map_err(io_err(path, "write failed"))?;
    f.sync_all().map_err(io_err(path, "cannot flush"))
}

/// Copies one overlay's merged view to `dst` in the chosen format and allocation, telling the
/// sink its progress by whole percents.
fn copy_disk(
    opts: &Options,
    voice: &Voice,
    src: &Arc<dyn BlockDevice>,
    dst: &Path,
    disk: usize,
    disks: usize,
) -> Result<convert::Stats> {
    let total = src.len();
    let done = Arc::new(AtomicU64::new(0));
    let shown = Arc::new(AtomicU64::new(u64::MAX));
    let sink = voice.sink.clone();
    let delay = voice.delay;
    let report = move |n: u64| {
        let d = done
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n)
            .min(total);
        // d ≤ total: at most 100 (0 for an empty disk, where d is 0 too).
        let pct = u128::from(d)
            .saturating_mul(100)
            .checked_div(u128::from(total))
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0);
        let last = shown.swap(pct, Ordering::Relaxed);
        if last != pct {
            sink(&Event::Progress {
                disk,
                disks,
                done: d,
                total,
            });
        }
        if !delay.is_zero() {
            pause(delay);
        }
    };
    report(0);
    let copts = convert::Options {
        threads: opts.threads,
        progress: opts.progress_bar,
        sync: true,
        observer: Some(Observer(Arc::new(report))),
        // A fresh name in the scratch directory: nothing to replace.
        overwrite: false,
        sparse: None,
    };
    let prealloc = opts.allocation == Allocation::Preallocated;
    let stats = match opts.format {
        OutputFormat::Qcow2 => {
            let q = convert::Qcow2Options {
                preallocate_metadata: prealloc,
                ..Default::default()
            };
            convert::to_qcow2(src, dst, &q, &copts)?
        }
        OutputFormat::Raw => convert::to_raw(src, dst, &copts)?,
    };
    if prealloc {
        preallocate(dst)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_sort_in_bus_order() {
        assert_eq!(target_index("sda"), Some(0));
        assert_eq!(target_index("xvdb"), Some(1));
        assert_eq!(target_index("vdz"), Some(25));
        assert_eq!(target_index("hdaa"), Some(26));
        assert_eq!(target_index("sdab"), Some(27));
        assert_eq!(target_index("nvme0n1"), None);
        assert_eq!(target_index("sd"), None);
        assert_eq!(target_index("sdA"), None);
        for i in [0u32, 1, 25, 26, 27, 701, 702, 1000] {
            assert_eq!(target_index(&meta::vmx::index_to_name("sd", i)), Some(i));
        }
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        assert!(check_name("web-01").is_ok());
        for bad in ["", ".hidden", "a/b", "a\nb", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
