//! Layer 4: the guest as a whole. [`Guest::open`] finds the filesystems on the guest's volumes,
//! recognises each operating system's root among them ([`inspect`]), reads its fstab
//! ([`fstab`]) and resolves every line to a volume ([`devmap`]), and composes the filesystems
//! at their mountpoints into one [`tree::Tree`], as the guest itself would mount them.

pub mod changed;
pub mod devmap;
pub mod devname;
pub mod facts;
pub mod files;
pub mod fstab;
pub mod initramfs;
pub mod inspect;
pub mod report;
pub mod tree;
pub mod unused;

use crate::block::BlockDevice;
use crate::fs::files::FileTree;
use crate::fs::{self, Filesystem};
use crate::guest::facts::{DeviceEntry, Facts, Hypervisor, Root};
use crate::volume::{self, content::Usage, Volume};
use devmap::{Naming, Resolution};
use files::FsFiles;
use inspect::OsInfo;
use serde::Serialize;
use std::sync::Arc;
use tree::{Mount, Placeholder, Tree};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error("no filesystem found on the image(s) (see `ferry filesystems --all`)")]
    NoFilesystem,
    #[error("several filesystems: choose one with -m DEVICE ({})", .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("no device {name} (filesystems: {})", .available.join(", "))]
    NoSuchDevice {
        name: String,
        available: Vec<String>,
    },
    #[error("no operating system found on the image(s); choose filesystems with -m DEVICE[:MOUNTPOINT] (see `ferry filesystems`)")]
    NoRoot,
    #[error("several operating systems: choose one with --root DEVICE ({})", .0.join(", "))]
    SeveralRoots(Vec<String>),
    #[error("no operating system has its root on {name} (roots: {})", .roots.join(", "))]
    NoSuchRoot { name: String, roots: Vec<String> },
    #[error("mountpoint {0:?} is not an absolute path")]
    BadMountpoint(String),
    #[error("no filesystem is mounted at /: give one with -m DEVICE (or DEVICE:/)")]
    NoSlash,
    #[error("{device}: {source}")]
    Fs {
        device: String,
        #[source]
        source: fs::Error,
    },
}

/// Whether `v` answers to `name`: its device name or an alias, with or without `/dev/`.
fn named(v: &Volume, name: &str) -> bool {
    let full = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/dev/{name}")
    };
    v.name == full || v.aliases.contains(&full)
}

/// A filesystem of the guest as `ferry inspect` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct FsReport {
    pub device: String,
    pub fstype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub size: u64,
    /// Whether ferry can read its files.
    pub readable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One line of the guest's fstab with what it resolved to.
#[derive(Debug, Clone, Serialize)]
pub struct FstabLine {
    pub line: usize,
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Why the line takes no part in the mounted tree ("swap", "not a local filesystem",
    /// "bind mount"), when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

/// A filesystem at its place in the guest's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub mountpoint: String,
    pub device: String,
    /// Windows: the drive letter the guest gives it (`C:`), as virt-inspector lists a
    /// Windows guest's mountpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drive: Option<String>,
    /// The fstab line's mount options (empty for `/` and the Windows drives): vfat's owner
    /// and permission options change what its files show (`Guest::mount_of`).
    #[serde(skip)]
    pub options: Vec<String>,
}

/// One operating system found on the guest's disks.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    /// The device holding its `/`.
    pub root: String,
    #[serde(flatten)]
    pub os: OsInfo,
    /// How the guest names its disks (from the kernel names its configuration uses).
    pub naming: Option<Naming>,
    pub fstab: Vec<FstabLine>,
    /// The guest's tree: `/` and what fstab mounts under it, parents first.
    pub mountpoints: Vec<Placement>,
    /// Problems met while reading the root's configuration or building its tree.
    pub problems: Vec<String>,
}

/// What `ferry inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub filesystems: Vec<FsReport>,
    pub roots: Vec<RootReport>,
}

/// What `mount`, `ls` and `cat` show of a guest ([`Guest::view`]).
pub struct View {
    pub fs: Arc<dyn Filesystem>,
    /// The device at /, for messages and the mount's source name.
    pub device: String,
    /// Every device in the view.
    pub devices: Vec<String>,
    /// The facts of the operating system shown, when one is (a composed tree).
    pub facts: Option<Facts>,
    /// How `fs` is composed (`Tree::shape`); one filesystem shown alone is one entry, at
    /// index 0, whose inode numbers are the tree's.
    pub shape: tree::Shape,
}

/// The EFI system partition's GPT type GUID and MBR type (as the tables' readers spell them).
const ESP_GPT_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const ESP_MBR_TYPE: &str = "ef";

/// A guest: its volumes, its filesystems opened, and what inspection found.
pub struct Guest {
    pub volumes: Vec<Volume>,
    /// Each filesystem by device name; `Placeholder`s for those ferry cannot read.
    opened: Vec<(String, Arc<dyn Filesystem>)>,
    pub inspection: Inspection,
}

/// Windows' boot code in an NTFS boot sector names its loader: BOOTMGR (Vista and later)
/// or NTLDR (NT to XP/2003). A readable NTFS is inspected from its tree (\Windows); this is
/// how a Windows system volume whose NTFS cannot be read (damaged) is still recognised.
fn windows_loader(dev: &dyn BlockDevice) -> Option<&'static str> {
    let mut vbr = vec![0u8; 8192];
    dev.read_at(&mut vbr, 0).ok()?;
    if &vbr[3..11] != b"NTFS    " {
        return None;
    }
    let has = |s: &[u8]| vbr.windows(s.len()).any(|w| w == s);
    let utf16 = |s: &str| -> Vec<u8> { s.bytes().flat_map(|b| [b, 0]).collect() };
    if has(b"BOOTMGR") || has(&utf16("BOOTMGR")) {
        Some("BOOTMGR")
    } else if has(b"NTLDR") || has(&utf16("NTLDR")) {
        Some("NTLDR")
    } else {
        None
    }
}

/// A guest path as fstab gives it, made canonical: one `/` between components, none at
/// the end; None if it is not absolute.
fn mountpoint_path(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

impl Guest {
    /// Finds the guest's volumes and filesystems and inspects every root among them.
    pub fn open(disks: &[Arc<dyn BlockDevice>]) -> Result<Guest> {
        let volumes = volume::discover(disks)?;
        let mut opened = Vec::new();
        let mut filesystems = Vec::new();
        for v in &volumes {
            let Some(c) = v.content.as_ref().filter(|c| c.is_filesystem_like()) else {
                continue;
            };
            let mut report = FsReport {
                device: v.name.clone(),
                fstype: c.fstype.clone(),
                uuid: c.uuid.clone(),
                label: c.label.clone(),
                size: v.size,
                readable: false,
                problem: None,
            };
            if !matches!(c.usage, Usage::Filesystem) {
                // Swap and encrypted volumes: listed, never mounted.
                if c.fstype != "swap" {
                    report.problem = Some(format!("{}: encrypted", c.fstype));
                }
                filesystems.push(report);
                continue;
            }
            let fs: Arc<dyn Filesystem> = match v.dev.as_ref().map(|d| fs::open(d.clone())) {
                Some(Ok(fs)) => {
                    report.readable = true;
                    Arc::from(fs)
                }
                Some(Err(e)) => {
                    report.problem = Some(e.on_device(&v.name).to_string());
                    Arc::new(Placeholder::new("unreadable"))
                }
                None => {
                    report.problem =
                        Some(v.error.clone().unwrap_or_else(|| "cannot be read".into()));
                    Arc::new(Placeholder::new("unreadable"))
                }
            };
            opened.push((v.name.clone(), fs));
            filesystems.push(report);
        }
        let mut guest = Guest {
            volumes,
            opened,
            inspection: Inspection {
                filesystems,
                roots: Vec::new(),
            },
        };
        let mut roots = Vec::new();
        for report in &guest.inspection.filesystems {
            if let Some(fs) = guest.fs_of(&report.device).filter(|_| report.readable) {
                let fs = fs.clone();
                if inspect::is_root(&FsFiles::new(fs.as_ref())) {
                    roots.push(guest.inspect_root(&report.device, fs.as_ref()));
                }
            } else if report.fstype == "ntfs" {
                if let Some(r) = guest.windows_root(&report.device) {
                    roots.push(r);
                }
            }
        }
        guest.inspection.roots = roots;
        Ok(guest)
    }

    /// Reopens the filesystems named in `devices` for writing, on their volumes' devices
    /// (writable when the disks are overlays). A filesystem that cannot be written keeps its
    /// read-only instance, so its objects answer EROFS; the reasons come back, one a device.
    /// Trees built afterwards ([`Guest::tree`], [`Guest::tree_of`]) hold the writable ones.
    pub fn make_writable(&mut self, devices: &[String]) -> Vec<String> {
        let mut notes = Vec::new();
        for (name, fs) in &mut self.opened {
            if !devices.contains(name) {
                continue;
            }
            let readable = self
                .inspection
                .filesystems
                .iter()
                .any(|f| &f.device == name && f.readable);
            let dev = self
                .volumes
                .iter()
                .find(|v| &v.name == name)
                .and_then(|v| v.dev.clone());
            match dev.filter(|_| readable).map(fs::open_writable) {
                Some(Ok(w)) => *fs = Arc::from(w),
                Some(Err(e)) => notes.push(format!("{name}: stays read-only: {e}")),
                None => notes.push(format!("{name}: stays read-only: ferry cannot read it")),
            }
        }
        notes
    }

    fn windows_root(&self, device: &str) -> Option<RootReport> {
        let v = self.volumes.iter().find(|v| v.name == device)?;
        let label = v.content.as_ref().and_then(|c| c.label.as_deref());
        // The small partition Windows boots from holds the same boot code.
        if matches!(label, Some("System Reserved" | "Recovery")) {
            return None;
        }
        let loader = windows_loader(v.dev.as_deref()?)?;
        let os = OsInfo {
            os_type: crate::guest::facts::Os::Windows,
            distro: Some("windows".into()),
            ..OsInfo::default()
        };
        Some(RootReport {
            root: device.into(),
            os,
            naming: None,
            fstab: Vec::new(),
            mountpoints: vec![Placement {
                mountpoint: "/".into(),
                device: device.into(),
                drive: None,
                options: Vec::new(),
            }],
            problems: vec![format!(
                "a Windows system volume (its boot code loads {loader}); ferry cannot read this \
                 NTFS, so the version and the rest are not inspected"
            )],
        })
    }

    /// Reads the root's fstab, resolves it, builds its tree and inspects the OS in it.
    fn inspect_root(&self, device: &str, fs: &dyn Filesystem) -> RootReport {
        let mut problems = Vec::new();
        // Read from the root alone: the layout it gives is what the tree is built from.
        // Problems with the file itself are reported by the inspection of the tree.
        let files = FsFiles::new(fs);
        let table = files
            .resolve("/etc/fstab")
            .and_then(|p| files.read(&p, inspect::MAX_FSTAB))
            .map(|d| fstab::parse(&d))
            .unwrap_or_default();
        let mut lines = Vec::new();
        let mut places: Vec<Placement> = Vec::new();
        for e in &table.entries {
            let resolution = devmap::resolve(&e.spec, &self.volumes);
            let ignored = if e.is_swap() {
                Some("swap")
            } else if e.is_bind() {
                Some("bind mount")
            } else if e.is_network() {
                Some("network filesystem")
            } else if !e.is_local() {
                Some("not a local filesystem")
            } else {
                None
            };
            let mut line = FstabLine {
                line: e.line,
                spec: e.spec.clone(),
                mountpoint: e.file.clone(),
                fstype: e.vfstype.clone(),
                options: e.options.clone(),
                resolution,
                ignored: ignored.map(String::from),
            };
            if line.ignored.is_none() {
                match (mountpoint_path(&e.file), &line.resolution.device) {
                    (None, _) => line.ignored = Some("mountpoint is not an absolute path".into()),
                    (_, None) => {
                        problems.push(format!(
                            "/etc/fstab line {}: {} not found: {}",
                            e.line,
                            e.spec,
                            line.resolution.problem.as_deref().unwrap_or("unknown")
                        ));
                    }
                    (Some(mp), Some(dev)) if mp == "/" => {
                        if dev != device {
                            problems.push(format!(
                                "/etc/fstab line {} mounts {dev} at /, but this root is {device}",
                                e.line
                            ));
                        }
                    }
                    (Some(mp), Some(dev)) => {
                        if !self.opened.iter().any(|(d, _)| d == dev) {
                            problems.push(format!(
                                "/etc/fstab line {}: {dev} holds no filesystem",
                                e.line
                            ));
                        } else {
                            places.retain(|p| p.mountpoint != mp);
                            places.push(Placement {
                                mountpoint: mp,
                                device: dev.clone(),
                                drive: None,
                                options: e.options.clone(),
                            });
                        }
                    }
                }
            }
            lines.push(line);
        }
        places.sort_by_key(|p| {
            p.mountpoint
                .matches('/')
                .count()
                .saturating_sub(usize::from(p.mountpoint == "/"))
        });
        places.insert(
            0,
            Placement {
                mountpoint: "/".into(),
                device: device.into(),
                drive: None,
                options: Vec::new(),
            },
        );
        let naming = devmap::Naming::detect(table.entries.iter().map(|e| e.spec.as_str()));
        let (tree, tree_problems) = self.build(&places);
        problems.extend(tree_problems);
        let mut os = inspect::inspect(&FsFiles::new(&tree));
        problems.append(&mut os.warnings);
        if let Some(w) = os.windows.as_mut() {
            if self.drive_letters(device, w, &mut places, &mut problems) {
                let (_, tree_problems) = self.build(&places);
                problems.extend(tree_problems);
            }
        }
        if os.windows.is_some() {
            os.bootloader = self.windows_boot(device, &places);
        }
        RootReport {
            root: device.into(),
            os,
            naming,
            fstab: lines,
            mountpoints: places,
            problems,
        }
    }

    /// Resolves the Windows root's drive letters to our devices and lays them out, as
    /// Windows' fstab: the letter of the system volume names `/`, every other letter whose
    /// partition holds a filesystem becomes the top-level directory `/D:` (a name the system
    /// volume cannot have, ':' being forbidden in Windows file names, and the one
    /// virt-inspector reports). Letters for disks not given are left unresolved: a CD-ROM or
    /// a USB stick the guest once saw is no problem. Returns whether it placed any.
    fn drive_letters(
        &self,
        root: &str,
        w: &mut inspect::windows::WindowsInfo,
        places: &mut Vec<Placement>,
        problems: &mut Vec<String>,
    ) -> bool {
        let mut placed = false;
        for dl in &mut w.drive_letters {
            let found = devmap::drive_letter(dl, &self.volumes);
            let Some(v) = found.first() else { continue };
            if found.len() > 1 {
                problems.push(format!(
                    "MountedDevices {}: {} partitions match ({}); took the first",
                    dl.letter,
                    found.len(),
                    found
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            dl.device = Some(v.name.clone());
            if v.name == root {
                if let Some(p) = places.iter_mut().find(|p| p.mountpoint == "/") {
                    p.drive.get_or_insert_with(|| dl.letter.clone());
                }
                continue;
            }
            let taken = places.iter().any(|p| p.device == v.name);
            let valid = dl.letter.len() == 2
                && dl.letter.as_bytes()[0].is_ascii_alphabetic()
                && dl.letter.ends_with(':');
            if taken || !valid || self.fs_of(&v.name).is_none() {
                continue;
            }
            places.push(Placement {
                mountpoint: format!("/{}", dl.letter),
                device: v.name.clone(),
                drive: Some(dl.letter.clone()),
                options: Vec::new(),
            });
            placed = true;
        }
        placed
    }

    /// A Windows guest's boot manager: the BCD store on any of its volumes (the root's
    /// first). UEFI wins over BIOS: a readable `\EFI\Microsoft\Boot\BCD`, else an EFI
    /// system partition (by its GPT type, or MBR type 0xef), whose FAT filesystem ferry does
    /// not read: Windows boots from a GPT disk only by UEFI, and then from the ESP's store
    /// (reported with the ESP as `device` and no `config`: the store was not read). Else a
    /// BIOS `\Boot\BCD` on the system or "System Reserved" volume. A store outside the tree
    /// is named by its volume in `device`.
    fn windows_boot(&self, root: &str, places: &[Placement]) -> inspect::Boot {
        let mut found: Vec<(&str, String, bool)> = Vec::new();
        let order = self
            .opened
            .iter()
            .filter(|(d, _)| d == root)
            .chain(self.opened.iter().filter(|(d, _)| d != root));
        for (dev, fs) in order {
            if let Some((path, efi)) = inspect::windows::bcd_store(&FsFiles::new(fs.as_ref())) {
                found.push((dev, path, efi));
            }
        }
        let uefi = found.iter().find(|f| f.2).cloned();
        let esp = self.volumes.iter().find(|v| {
            v.partition.as_ref().is_some_and(|p| {
                p.type_id.eq_ignore_ascii_case(ESP_GPT_TYPE) || p.type_id == ESP_MBR_TYPE
            })
        });
        if let (None, Some(esp)) = (&uefi, esp) {
            return inspect::Boot {
                loader: facts::Bootloader::Bootmgr,
                config: None,
                efi: true,
                entries: Vec::new(),
                device: Some(esp.name.clone()),
            };
        }
        let Some((dev, path, efi)) = uefi.or_else(|| found.first().cloned()) else {
            return inspect::Boot::default();
        };
        let placed = places.iter().find(|p| p.device == dev);
        let (config, device) = match placed {
            Some(p) if p.mountpoint == "/" => (path, None),
            Some(p) => (format!("{}{path}", p.mountpoint), None),
            None => (path, Some(dev.to_string())),
        };
        inspect::Boot {
            loader: facts::Bootloader::Bootmgr,
            config: Some(config),
            efi,
            entries: Vec::new(),
            device,
        }
    }

    /// The filesystem opened on `device` (a volume name, as `View::shape` gives it).
    pub fn filesystem(&self, device: &str) -> Option<Arc<dyn Filesystem>> {
        self.fs_of(device).cloned()
    }

    fn fs_of(&self, device: &str) -> Option<&Arc<dyn Filesystem>> {
        self.opened
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, fs)| fs)
    }

    /// Builds the tree for `places` (the first at `/`); what cannot be mounted is left out
    /// and reported.
    fn build(&self, places: &[Placement]) -> (Tree, Vec<String>) {
        let mut problems = Vec::new();
        let mut tree = Tree::new(self.mount_of(&places[0]));
        for p in &places[1..] {
            problems.extend(self.unreadable_note(p));
            let placed = if p.drive.is_some() {
                tree.attach(self.mount_of(p))
            } else {
                tree.mount(self.mount_of(p))
            };
            if let Err(e) = placed {
                problems.push(format!(
                    "cannot mount {} at {}: {e}",
                    p.device, p.mountpoint
                ));
            }
        }
        (tree, problems)
    }

    /// The tree of the root on `root` (or of the only root), as the guest's fstab lays it out.
    pub fn tree(&self, root: Option<&str>) -> Result<(Tree, &RootReport)> {
        let roots = &self.inspection.roots;
        let r = match root {
            Some(name) => roots
                .iter()
                .find(|r| self.same_device(&r.root, name))
                .ok_or_else(|| Error::NoSuchRoot {
                    name: name.into(),
                    roots: roots.iter().map(|r| r.root.clone()).collect(),
                })?,
            None => match roots.as_slice() {
                [] => return Err(Error::NoRoot),
                [r] => r,
                _ => {
                    return Err(Error::SeveralRoots(
                        roots.iter().map(|r| r.root.clone()).collect(),
                    ))
                }
            },
        };
        let (tree, problems) = self.build(&r.mountpoints);
        for p in problems {
            log::warn!("{p}");
        }
        Ok((tree, r))
    }

    /// A tree laid out by hand: `(device, mountpoint)` pairs; one must be `/`.
    pub fn tree_of(&self, layout: &[(String, String)]) -> Result<Tree> {
        let mut places = Vec::new();
        for (dev, mp) in layout {
            let v = self
                .volumes
                .iter()
                .find(|v| named(v, dev))
                .filter(|v| self.fs_of(&v.name).is_some())
                .ok_or_else(|| Error::NoSuchDevice {
                    name: dev.clone(),
                    available: self.opened.iter().map(|(d, _)| d.clone()).collect(),
                })?;
            let mountpoint = mountpoint_path(mp).ok_or_else(|| Error::BadMountpoint(mp.clone()))?;
            places.retain(|p: &Placement| p.mountpoint != mountpoint);
            places.push(Placement {
                mountpoint,
                device: v.name.clone(),
                drive: None,
                options: Vec::new(),
            });
        }
        places.sort_by_key(|p| (p.mountpoint != "/", p.mountpoint.matches('/').count()));
        if places.first().is_none_or(|p| p.mountpoint != "/") {
            return Err(Error::NoSlash);
        }
        let mut tree = Tree::new(self.mount_of(&places[0]));
        for p in &places[1..] {
            if let Some(n) = self.unreadable_note(p) {
                log::warn!("{n}");
            }
            tree.mount(self.mount_of(p)).map_err(|source| Error::Fs {
                device: format!("{} at {}", p.device, p.mountpoint),
                source,
            })?;
        }
        Ok(tree)
    }

    fn mount_of(&self, p: &Placement) -> Mount {
        Mount {
            device: p.device.clone(),
            mountpoint: p.mountpoint.clone(),
            fs: self
                .with_options(p)
                .or_else(|| self.fs_of(&p.device).cloned())
                .unwrap_or_else(|| Arc::new(Placeholder::new("unreadable"))),
        }
    }

    /// A vfat volume opened again with its fstab line's owner and permission options
    /// (`umask=0077` on every Fedora/RHEL/Debian ESP), as the kernel would mount it; None
    /// when the line has none that change anything, or the volume is not a readable vfat.
    fn with_options(&self, p: &Placement) -> Option<Arc<dyn Filesystem>> {
        let vfat = self
            .inspection
            .filesystems
            .iter()
            .any(|f| f.device == p.device && f.fstype == "vfat" && f.readable);
        if !vfat || p.options.is_empty() {
            return None;
        }
        let opts = fs::fat::Options::from_fstab(&p.options.join(","));
        if opts == fs::fat::Options::default() {
            return None;
        }
        let dev = self
            .volumes
            .iter()
            .find(|v| v.name == p.device)?
            .dev
            .clone()?;
        match fs::fat::Fat::open_with(dev, opts) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                log::warn!("{}: {e}", p.device);
                None
            }
        }
    }

    /// The log line for a filesystem shown as an empty directory.
    fn unreadable_note(&self, p: &Placement) -> Option<String> {
        let r = self
            .inspection
            .filesystems
            .iter()
            .find(|f| f.device == p.device && !f.readable)?;
        Some(format!(
            "{} ({}) at {} is shown as an empty directory: {}",
            p.device,
            r.fstype,
            p.mountpoint,
            r.problem.as_deref().unwrap_or("not readable")
        ))
    }

    /// What `mount`, `ls` and `cat` show: the guest's own layout (of the root `root` when
    /// the disks hold several), or the filesystems `mounts` names (`DEVICE[:MOUNTPOINT]`,
    /// guestmount's `-m`); a guest with no operating system but a single filesystem shows it.
    pub fn view(&self, mounts: &[String], root: Option<&str>) -> Result<View> {
        if !mounts.is_empty() {
            let layout: Vec<(String, String)> = mounts
                .iter()
                .map(|m| match m.split_once(':') {
                    Some((d, p)) => (d.to_string(), p.to_string()),
                    None => (m.clone(), "/".to_string()),
                })
                .collect();
            let tree = self.tree_of(&layout)?;
            let shape = tree.shape();
            let devices = tree.mounts().map(|m| m.device.clone()).collect();
            let device = tree
                .mounts()
                .next()
                .map(|m| m.device.clone())
                .unwrap_or_default();
            let facts = self
                .inspection
                .roots
                .iter()
                .find(|r| r.root == device)
                .map(|r| self.facts(r));
            return Ok(View {
                fs: Arc::new(tree),
                device,
                devices,
                facts,
                shape,
            });
        }
        match self.tree(root) {
            Ok((tree, r)) => Ok(View {
                devices: tree.mounts().map(|m| m.device.clone()).collect(),
                shape: tree.shape(),
                fs: Arc::new(tree),
                device: r.root.clone(),
                facts: Some(self.facts(r)),
            }),
            Err(Error::NoRoot) => {
                let (device, fs) = self.only_filesystem()?;
                Ok(View {
                    fs,
                    shape: vec![(device.clone(), "/".into(), None)],
                    devices: vec![device.clone()],
                    device,
                    facts: None,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The guest's only filesystem (for a data disk with no operating system on it).
    pub fn only_filesystem(&self) -> Result<(String, Arc<dyn Filesystem>)> {
        match self.opened.as_slice() {
            [] => Err(Error::NoFilesystem),
            [(d, fs)] => {
                if let Some(r) = self
                    .inspection
                    .filesystems
                    .iter()
                    .find(|f| &f.device == d && !f.readable)
                {
                    return Err(Error::Fs {
                        device: d.clone(),
                        source: fs::Error::Unsupported(r.problem.clone().unwrap_or_default()),
                    });
                }
                Ok((d.clone(), fs.clone()))
            }
            _ => Err(Error::Ambiguous(
                self.opened.iter().map(|(d, _)| d.clone()).collect(),
            )),
        }
    }

    /// The facts fixers need about the OS of `r`: what inspection found, the root's fstab
    /// line, and the device map (each filesystem under the name the guest gave its disk,
    /// with the stable name that survives the move).
    pub fn facts(&self, r: &RootReport) -> Facts {
        let mut f: Facts = (&r.os).into();
        let vol = |name: &str| self.volumes.iter().find(|v| v.name == name);
        if let Some(l) = r
            .fstab
            .iter()
            .find(|l| l.mountpoint == "/" && l.ignored.is_none())
        {
            let c = l
                .resolution
                .device
                .as_deref()
                .and_then(vol)
                .and_then(|v| v.content.clone());
            f.root = Some(Root {
                spec: l.spec.clone(),
                device: l.spec.starts_with("/dev/").then(|| l.spec.clone()),
                uuid: c.as_ref().and_then(|c| c.uuid.clone()),
                label: c.as_ref().and_then(|c| c.label.clone()),
                fstype: Some(l.fstype.clone()),
            });
        }
        let naming = r.naming.unwrap_or(Naming::Sd);
        let mut devices: Vec<DeviceEntry> = Vec::new();
        let mut add = |device: String, v: &Volume| {
            let Some(c) = v.content.as_ref() else { return };
            let stable = match (&c.uuid, &c.label) {
                (Some(u), _) => format!("UUID={u}"),
                (None, Some(l)) => format!("LABEL={l}"),
                (None, None) => return,
            };
            if !devices.iter().any(|d| d.device == device) {
                devices.push(DeviceEntry {
                    device,
                    stable,
                    fstype: Some(c.fstype.clone()),
                    hard_coded: false,
                });
            }
        };
        for l in &r.fstab {
            if let (true, Some(v)) = (
                l.resolution.hard_coded,
                l.resolution.device.as_deref().and_then(vol),
            ) {
                add(l.spec.clone(), v);
            }
        }
        for v in &self.volumes {
            if let Some(name) = naming.name(&v.name) {
                add(name, v);
            }
        }
        f.devices.devices = devices;
        if f.source == Hypervisor::Unknown && r.naming == Some(Naming::Xvd) {
            f.source = Hypervisor::Xen;
        }
        f.complete();
        f
    }

    fn same_device(&self, ours: &str, name: &str) -> bool {
        self.volumes
            .iter()
            .any(|v| v.name == ours && named(v, name))
    }
}
