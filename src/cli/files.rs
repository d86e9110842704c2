//! `ferry ls` and `ferry cat`: a guest's files without mounting (like virt-ls, virt-cat).

use super::{open, ViewArgs};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct LsArgs {
    /// IMAGE (the guest's whole tree), or IMAGE:DEVICE for one filesystem (a name
    /// `ferry filesystems` prints).
    pub source: String,
    #[arg(default_value = "/")]
    pub path: String,
    /// Long listing: mode, links, uid, gid, size, mtime, name (-> target).
    #[arg(short = 'l')]
    pub long: bool,
    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// IMAGE (the guest's whole tree), or IMAGE:DEVICE for one filesystem (a name
    /// `ferry filesystems` prints).
    pub source: String,
    pub path: String,
    #[command(flatten)]
    pub view: ViewArgs,
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
    Ok(guest.view(&mounts, view.root.as_deref())?.fs)
}

fn resolve(fs: &dyn ferry::fs::Filesystem, path: &str, follow: bool) -> Result<ferry::fs::Attr> {
    ferry::fs::path::resolve(fs, path.as_bytes(), follow).with_context(|| path.to_string())
}

pub fn cat(a: CatArgs) -> Result<()> {
    let (source, path, view) = (&a.source, &a.path, &a.view);
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

pub fn ls(a: LsArgs) -> Result<()> {
    let (source, path, long, view) = (&a.source, &a.path, a.long, &a.view);
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
