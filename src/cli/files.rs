//! `ferry ls` and `ferry cat`: a guest's files without mounting (like virt-ls, virt-cat).

use super::{open, ViewArgs};
use anyhow::{bail, Context, Result};
use ferry::fs::FileType;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub(crate) struct LsArgs {
    /// IMAGE (the guest's whole tree) or IMAGE:DEVICE (one filesystem, as `ferry
    /// filesystems` names it), then the guest paths to list (default /). With `-a IMAGE`
    /// (virt-ls style, every disk of the guest given so) every argument is a guest path.
    #[arg(value_name = "IMAGE[:DEVICE] | PATH", num_args = 0..)]
    pub args: Vec<String>,
    /// Long listing: mode, links, uid, gid, size, mtime, name (-> target).
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Every entry below each path, by its full guest path (like virt-ls -R).
    #[arg(short = 'R', long = "recursive")]
    pub recursive: bool,
    /// Long listing as CSV (RFC 4180): mode,nlink,uid,gid,size,mtime,path,target[,checksum].
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Long listing as JSON: an array with one object a path.
    #[arg(long)]
    pub json: bool,
    /// Add the digest of each regular file (sha256 unless md5 or sha1 is given).
    #[arg(long, value_name = "ALGO", num_args = 0..=1, default_missing_value = "sha256", require_equals = true)]
    pub checksum: Option<ferry::forensics::Algo>,
    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(clap::Args)]
pub(crate) struct CatArgs {
    /// IMAGE (the guest's whole tree) or IMAGE:DEVICE (one filesystem), then the guest
    /// files, printed one after the other. With `-a IMAGE` (virt-cat style, every disk of
    /// the guest given so) every argument is a guest file.
    #[arg(value_name = "IMAGE[:DEVICE] | FILE", required = true, num_args = 1..)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub view: ViewArgs,
}

/// The source, the other disks and the guest paths of `ls`/`cat`. As in virt-ls, once a
/// disk is given with `-a` every argument is a guest path (an image path and a guest path
/// can look alike: `/etc/hostname` is both on most hosts); without `-a` the first argument
/// is the image (`disk.img`, `disk.img:/dev/sda1`).
fn split_args(args: &[String], view: &ViewArgs) -> Result<(String, Vec<PathBuf>, Vec<String>)> {
    match (view.add.split_first(), args.split_first()) {
        (Some((image, more)), _) => Ok((
            image.to_string_lossy().into_owned(),
            more.to_vec(),
            args.to_vec(),
        )),
        (None, Some((image, paths))) => Ok((image.clone(), Vec::new(), paths.to_vec())),
        (None, None) => bail!("give the guest's image (IMAGE or -a IMAGE), then the paths"),
    }
}

/// `IMAGE` (the guest's tree) or `IMAGE:DEVICE` (one filesystem), plus the other disks. A
/// path that exists as given is an image, so image names with colons work.
fn open_source(
    source: &str,
    more: &[PathBuf],
    view: &ViewArgs,
) -> Result<Arc<dyn ferry::fs::Filesystem>> {
    let (image, device) = match source.rsplit_once(':') {
        Some((img, dev)) if !std::path::Path::new(source).exists() => (img, Some(dev)),
        _ => (source, None),
    };
    let mut disks = vec![open(std::path::Path::new(image), view.format)
        .with_context(|| format!("opening {image}"))?];
    for p in more {
        disks.push(open(p, view.format).with_context(|| format!("opening {}", p.display()))?);
    }
    let guest = ferry::guest::Guest::open(&disks)?;
    let mounts: Vec<String> = device.map(String::from).into_iter().collect();
    Ok(guest.view(&mounts, view.root.as_deref())?.fs)
}

fn resolve(fs: &dyn ferry::fs::Filesystem, path: &str, follow: bool) -> Result<ferry::fs::Attr> {
    ferry::fs::path::resolve(fs, path.as_bytes(), follow).with_context(|| path.to_string())
}

pub(crate) fn cat(a: CatArgs) -> Result<()> {
    let (source, more, paths) = split_args(&a.args, &a.view)?;
    if paths.is_empty() {
        bail!("give the guest files to print");
    }
    let fs = open_source(&source, &more, &a.view)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    for path in &paths {
        let attr = resolve(fs.as_ref(), path, true)?;
        if attr.kind == FileType::Directory {
            bail!("{path}: is a directory");
        }
        let mut off = 0u64;
        loop {
            let n = fs
                .read(attr.ino, off, &mut buf)
                .with_context(|| path.to_string())?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            off = off.saturating_add(u64::try_from(n)?);
        }
    }
    out.flush()?;
    Ok(())
}

/// One entry `ls` shows: the name it prints (a name in its directory, or a full path with
/// -R) and what it is.
struct Shown {
    name: Vec<u8>,
    attr: ferry::fs::Attr,
    target: Option<Vec<u8>>,
    checksum: Option<String>,
}

/// How `ls` prints what it found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Names,
    Long,
    Csv,
    Json,
}

pub(crate) fn ls(a: LsArgs) -> Result<()> {
    let (source, more, mut paths) = split_args(&a.args, &a.view)?;
    if paths.is_empty() {
        paths.push("/".into());
    }
    let style = match (a.json, a.csv, a.long || a.checksum.is_some()) {
        (true, _, _) => Style::Json,
        (_, true, _) => Style::Csv,
        (_, _, true) => Style::Long,
        _ => Style::Names,
    };
    let fs = open_source(&source, &more, &a.view)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut json = Vec::new();
    let mut failed = 0usize;
    for (i, path) in paths.iter().enumerate() {
        let mut shown = Vec::new();
        collect(fs.as_ref(), path, &a, style, &mut shown, &mut failed)?;
        match style {
            Style::Json => json.extend(shown.iter().map(json_entry)),
            _ => {
                if paths.len() > 1 && !a.recursive {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    writeln!(out, "{path}:")?;
                }
                for s in &shown {
                    write_entry(&mut out, s, style)?;
                }
            }
        }
    }
    if style == Style::Json {
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} entries could not be read (the rest is listed)");
    }
    Ok(())
}

/// The entries `ls` shows for `path`: its directory's entries (each name below it with -R,
/// depth first in name order), or the path itself when it is not a directory. An entry that
/// cannot be read is reported and counted, never hiding the others.
fn collect(
    fs: &dyn ferry::fs::Filesystem,
    path: &str,
    a: &LsArgs,
    style: Style,
    shown: &mut Vec<Shown>,
    failed: &mut usize,
) -> Result<()> {
    let long = style != Style::Names;
    // Like ls(1): `ls -l link` describes the link itself, `ls link` lists where it points.
    let attr = resolve(fs, path, !long)?;
    let attr = if long && attr.kind == FileType::Symlink && path.ends_with('/') {
        resolve(fs, path, true)?
    } else {
        attr
    };
    if attr.kind != FileType::Directory {
        shown.push(describe(fs, path.as_bytes().to_vec(), attr, a.checksum));
        return Ok(());
    }
    // Directories still to list (inode, path); `seen` lists each once, so a damaged tree in
    // which a directory is its own descendant cannot loop.
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(attr.ino, path.trim_end_matches('/').as_bytes().to_vec())];
    while let Some((dir, prefix)) = stack.pop() {
        if !seen.insert(dir) {
            eprintln!(
                "ferry: {}: a directory loop (listed already)",
                String::from_utf8_lossy(&prefix)
            );
            *failed = failed.saturating_add(1);
            continue;
        }
        let mut entries = match ferry::fs::path::list(fs, dir) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("ferry: {}: {e}", String::from_utf8_lossy(&prefix));
                *failed = failed.saturating_add(1);
                continue;
            }
        };
        entries.sort_by(|x, y| x.name.cmp(&y.name));
        let mut below = Vec::new();
        for e in entries {
            let full = [prefix.as_slice(), b"/", &e.name].concat();
            let attr = match fs.getattr(e.ino) {
                Ok(attr) => attr,
                Err(err) => {
                    eprintln!("ferry: {}: {err}", String::from_utf8_lossy(&full));
                    *failed = failed.saturating_add(1);
                    continue;
                }
            };
            if a.recursive && attr.kind == FileType::Directory {
                below.push((e.ino, full.clone()));
            }
            let name = if a.recursive { full } else { e.name };
            shown.push(describe(fs, name, attr, a.checksum));
        }
        if a.recursive {
            // Depth first, in name order: the stack takes them last first. Entries of a
            // subdirectory then follow their parent's other entries, as virt-ls -R prints.
            stack.extend(below.into_iter().rev());
        }
    }
    Ok(())
}

fn describe(
    fs: &dyn ferry::fs::Filesystem,
    name: Vec<u8>,
    attr: ferry::fs::Attr,
    algo: Option<ferry::forensics::Algo>,
) -> Shown {
    let target = (attr.kind == FileType::Symlink)
        .then(|| fs.readlink(attr.ino).ok())
        .flatten();
    let checksum = match algo {
        Some(algo) if attr.kind == FileType::RegularFile => {
            match ferry::forensics::digest::hash_file(fs, attr.ino, attr.size, algo) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("ferry: {}: {e}", String::from_utf8_lossy(&name));
                    None
                }
            }
        }
        _ => None,
    };
    Shown {
        name,
        attr,
        target,
        checksum,
    }
}

fn write_entry(out: &mut impl Write, s: &Shown, style: Style) -> std::io::Result<()> {
    match style {
        Style::Names => {
            out.write_all(&s.name)?;
            out.write_all(b"\n")
        }
        Style::Long => {
            let mut line = long_line(&s.attr, &s.name, s.target.as_deref());
            if let Some(c) = &s.checksum {
                line.push(' ');
                line.push_str(c);
            }
            writeln!(out, "{line}")
        }
        Style::Csv => {
            let a = &s.attr;
            let mut fields = vec![
                format!("{:o}", a.mode & 0o7777 | type_bits(a.kind)),
                a.nlink.to_string(),
                a.uid.to_string(),
                a.gid.to_string(),
                a.size.to_string(),
                iso_time(a.mtime.secs),
                String::from_utf8_lossy(&s.name).into_owned(),
                s.target
                    .as_deref()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .unwrap_or_default(),
            ];
            if let Some(c) = &s.checksum {
                fields.push(c.clone());
            }
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            writeln!(out, "{}", line.join(","))
        }
        Style::Json => unreachable!("JSON is written as one array"),
    }
}

/// The S_IFMT bits of a file type, for the octal mode of --csv (as stat's %f shows it).
fn type_bits(k: FileType) -> u32 {
    match k {
        FileType::RegularFile => 0o100000,
        FileType::Directory => 0o040000,
        FileType::Symlink => 0o120000,
        FileType::CharDevice => 0o020000,
        FileType::BlockDevice => 0o060000,
        FileType::NamedPipe => 0o010000,
        FileType::Socket => 0o140000,
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

fn json_entry(s: &Shown) -> serde_json::Value {
    let a = &s.attr;
    serde_json::json!({
        "path": String::from_utf8_lossy(&s.name),
        "type": format!("{:?}", a.kind),
        "mode": a.mode & 0o7777,
        "nlink": a.nlink,
        "uid": a.uid,
        "gid": a.gid,
        "size": a.size,
        "mtime": a.mtime.secs,
        "mtime_nsec": a.mtime.nsecs,
        "target": s.target.as_deref().map(String::from_utf8_lossy),
        "checksum": s.checksum,
    })
}

/// One `ls -l` line with numeric owners and a UTC ISO time (scripts compare these).
fn long_line(a: &ferry::fs::Attr, name: &[u8], target: Option<&[u8]>) -> String {
    let t = match a.kind {
        FileType::RegularFile => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::NamedPipe => 'p',
        FileType::Socket => 's',
    };
    let mode = format!("{t}{}", ferry::forensics::bodyfile::permissions(a.mode));
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
// No step can overflow for any i64: |days| < 2^47, so every intermediate stays below 2^60.
#[allow(clippy::arithmetic_side_effects)]
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
