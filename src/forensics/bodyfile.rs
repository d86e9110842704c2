//! The Sleuth Kit 3.x body file (`MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|
//! ctime|crtime`), the input of `mactime -b` and plaso, one line per path as `fls -r -m /`
//! writes it: symlinks named `NAME -> TARGET`, the mode as `fls` prints it (the directory
//! entry's type letter, `/`, then the inode's `ls -l` mode), the root itself not listed.
//! Times carry their nanoseconds as a decimal fraction (`mactime` reads the number and keeps
//! the whole seconds; fls prints whole seconds only).

use super::digest::{hash_file, Algo};
use super::walk::{walk_with, Visit};
use crate::fs::{FileType, Filesystem, Timestamp};

/// The body-file type letter of a file type (TSK's `tsk_fs_name_type_str` and
/// `tsk_fs_meta_type_str` agree on these).
pub fn type_letter(kind: FileType) -> char {
    match kind {
        FileType::RegularFile => 'r',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::NamedPipe => 'p',
        FileType::Socket => 's',
    }
}

/// The mode column of a removed entry: the record's type letter ("-" when it names none),
/// then the inode's as it is now ("-" and no permissions when it could not be read).
fn deleted_mode_string(d: super::walk::Deleted, a: &crate::fs::Attr) -> String {
    let entry = d.entry_kind.map_or('-', type_letter);
    if d.meta_read {
        format!("{entry}/{}{}", type_letter(a.kind), permissions(a.mode))
    } else {
        format!("{entry}/----------")
    }
}

/// `ls -l`-style permissions of `mode` after a type letter, with setuid/setgid/sticky as
/// s/S and t/T.
pub fn mode_string(entry: FileType, kind: FileType, mode: u32) -> String {
    let mut s = String::with_capacity(12);
    s.push(type_letter(entry));
    s.push('/');
    s.push(type_letter(kind));
    s.push_str(&permissions(mode));
    s
}

/// The nine permission letters of `ls -l` for `mode`, setuid/setgid/sticky as s/S and t/T.
pub fn permissions(mode: u32) -> String {
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, sp: u32, on: char, off: char| match (mode & x != 0, mode & sp != 0) {
        (true, true) => on,
        (false, true) => off,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
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
    .collect()
}

/// A time as seconds with its nanoseconds as a fraction (trailing zeros dropped); exact for
/// times before the epoch too (`secs` -1 with 5e8 ns is -0.5).
pub fn time_string(t: Timestamp) -> String {
    if t.nsecs == 0 || t.nsecs >= 1_000_000_000 {
        return t.secs.to_string();
    }
    // secs < 0 and nsecs < 10^9 here, so neither step can saturate.
    let (sign, whole, frac) = if t.secs < 0 {
        (
            "-",
            t.secs.saturating_add(1).unsigned_abs(),
            1_000_000_000u32.saturating_sub(t.nsecs),
        )
    } else {
        ("", t.secs.unsigned_abs(), t.nsecs)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Options of a timeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// JSON Lines (one object a path, as timeline tools such as Timesketch ingest) instead
    /// of body-file lines.
    pub json: bool,
    /// Put before every path (`/dev/sdb1:` for a filesystem outside the guest's layout).
    pub prefix: &'a [u8],
    /// Fill the first column with this digest of each regular file (0 otherwise, as fls).
    pub hash: Option<Algo>,
    /// Show inode numbers as each filesystem has them (strip a composed tree's top byte,
    /// see `guest::tree`).
    pub local_inodes: bool,
}

/// Writes the body file of `fs` to `out`; returns what could not be read (the rest is
/// written regardless).
pub fn write(
    fs: &dyn Filesystem,
    opts: Options,
    out: &mut dyn std::io::Write,
) -> std::io::Result<Vec<String>> {
    let mut io_err = None;
    let mut errors = Vec::new();
    let mut line = Vec::with_capacity(256);
    let mut errs = walk_with(fs, true, &mut |v: &Visit| {
        if io_err.is_some() {
            return;
        }
        line.clear();
        let a = v.attr;
        let path = [opts.prefix, v.path].concat();
        // A removed entry's inode may be freed or another file's: its content is not the
        // removed file's to hash, nor its link target to read (errors there are expected).
        let live = v.deleted.is_none();
        let digest = match (opts.hash.filter(|_| live), a.kind) {
            (Some(algo), FileType::RegularFile) => match hash_file(fs, a.ino, a.size, algo) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(format!("{}: {e}", String::from_utf8_lossy(&path)));
                    "0".into()
                }
            },
            _ => "0".into(),
        };
        // A removed entry's target is read from its inode as it is now, as fls does; that it
        // is unreadable there is no error.
        let target = match (a.kind, v.deleted) {
            (FileType::Symlink, None) => match fs.readlink(a.ino) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(format!("{}: {e}", String::from_utf8_lossy(&path)));
                    None
                }
            },
            // fls prints a freed inode's target as a C string: up to its first NUL (the
            // kernel zeroes a fast symlink's target when it frees the inode).
            (FileType::Symlink, Some(d)) if d.meta_read => fs.readlink(a.ino).ok().map(|mut t| {
                if let Some(n) = t.iter().position(|&b| b == 0) {
                    t.truncate(n);
                }
                t
            }),
            _ => None,
        };
        let ino = if opts.local_inodes {
            crate::guest::tree::local_ino(a.ino)
        } else {
            a.ino
        };
        let mode = match v.deleted {
            None if v.orphan_dir => "V/V---------".to_string(),
            None => mode_string(v.entry_kind, a.kind, a.mode),
            Some(d) => deleted_mode_string(d, a),
        };
        if opts.json {
            let mut j = serde_json::json!({
                "path": String::from_utf8_lossy(&path),
                "inode": ino,
                "type": if v.orphan_dir { "V".to_string() } else { type_letter(a.kind).to_string() },
                "mode": mode,
                "uid": a.uid,
                "gid": a.gid,
                "size": a.size,
                "atime": time_string(a.atime).parse::<f64>().unwrap_or_default(),
                "mtime": time_string(a.mtime).parse::<f64>().unwrap_or_default(),
                "ctime": time_string(a.ctime).parse::<f64>().unwrap_or_default(),
                "atime_ns": a.atime.nsecs,
                "mtime_ns": a.mtime.nsecs,
                "ctime_ns": a.ctime.nsecs,
            });
            if let Some(c) = a.crtime {
                j["crtime"] = time_string(c).parse::<f64>().unwrap_or_default().into();
                j["crtime_ns"] = c.nsecs.into();
            }
            if let Some(t) = &target {
                j["target"] = String::from_utf8_lossy(t).into();
            }
            if opts.hash.is_some() && live && a.kind == FileType::RegularFile {
                j["digest"] = digest.into();
            }
            if let Some(d) = v.deleted {
                j["deleted"] = true.into();
                j["reallocated"] = d.reallocated.into();
                if d.orphan {
                    j["orphan"] = true.into();
                }
            }
            if v.orphan_dir {
                j["virtual"] = true.into();
            }
            if let Err(e) = serde_json::to_writer(&mut *out, &j)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
            {
                io_err = Some(e);
            }
            return;
        }
        line.extend_from_slice(digest.as_bytes());
        line.push(b'|');
        line.extend_from_slice(&path);
        if let Some(t) = &target {
            line.extend_from_slice(b" -> ");
            line.extend_from_slice(t);
        }
        match v.deleted {
            Some(d) if d.reallocated => line.extend_from_slice(b" (deleted-realloc)"),
            Some(_) => line.extend_from_slice(b" (deleted)"),
            None => {}
        }
        let rest = format!(
            "|{ino}|{}|{}|{}|{}|{}|{}|{}|{}\n",
            mode,
            a.uid,
            a.gid,
            a.size,
            time_string(a.atime),
            time_string(a.mtime),
            time_string(a.ctime),
            a.crtime.map_or_else(|| "0".into(), time_string),
        );
        line.extend_from_slice(rest.as_bytes());
        if let Err(e) = out.write_all(&line) {
            io_err = Some(e);
        }
    });
    if let Some(e) = io_err {
        return Err(e);
    }
    errs.append(&mut errors);
    Ok(errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_fls_prints_them() {
        let r = FileType::RegularFile;
        assert_eq!(mode_string(r, r, 0o100644), "r/rrw-r--r--");
        assert_eq!(mode_string(r, r, 0o104755), "r/rrwsr-xr-x");
        assert_eq!(mode_string(r, r, 0o102644), "r/rrw-r-Sr--");
        let d = FileType::Directory;
        assert_eq!(mode_string(d, d, 0o41777), "d/drwxrwxrwt");
        assert_eq!(mode_string(d, d, 0o41776), "d/drwxrwxrwT");
        let l = FileType::Symlink;
        assert_eq!(mode_string(l, l, 0o120777), "l/lrwxrwxrwx");
    }

    #[test]
    fn fractional_times() {
        let t = |secs, nsecs| time_string(Timestamp { secs, nsecs });
        assert_eq!(t(5, 0), "5");
        assert_eq!(t(5, 250_000_000), "5.25");
        assert_eq!(t(-1, 500_000_000), "-0.5");
        assert_eq!(t(-2, 999_999_999), "-1.000000001");
    }
}
