//! Distribution release files: os-release(5) and the older per-distribution files that guests
//! from before systemd (RHEL ≤ 6, SLES ≤ 11, Debian ≤ 6, Ubuntu ≤ 12.04) have instead.
//! Each parser takes the file's text and returns what it states; none fails.

use super::Ctx;
use crate::guest::facts::Version;

/// What a release file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// os-release `ID` style (`rhel`, `sles`, `debian`…).
    pub distro: Option<String>,
    pub product_name: Option<String>,
    pub version: Option<Version>,
}

/// Release files are a few hundred bytes; anything bigger is not one.
pub const MAX_RELEASE: u64 = 64 * 1024;

/// Shell-style value of an os-release assignment: double quotes (with `\"`, `\\`, `\$`,
/// `` \` `` escapes), single quotes, backslash escapes outside quotes; an unquoted blank ends
/// the value, as the shell that may source the file would.
fn shell_value(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                            Some('\n') | None => {}
                            Some(e) => {
                                out.push('\\');
                                out.push(e);
                            }
                        },
                        c => out.push(c),
                    }
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            c if c == ' ' || c == '\t' => break,
            c => out.push(c),
        }
    }
    out
}

/// `KEY=value` assignments of an os-release (or lsb-release) file, in order.
pub fn assignments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid.then(|| (k.to_string(), shell_value(v.trim_end())))
        })
        .collect()
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    // The last assignment wins, as when the shell sources the file.
    kv.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// os-release(5): `ID`, `VERSION_ID`, `PRETTY_NAME` (or `NAME`).
pub fn os_release(text: &str) -> Release {
    let kv = assignments(text);
    Release {
        distro: get(&kv, "ID").map(str::to_lowercase),
        product_name: get(&kv, "PRETTY_NAME")
            .or_else(|| get(&kv, "NAME"))
            .map(str::to_string),
        version: get(&kv, "VERSION_ID").and_then(Version::parse),
    }
}

/// /etc/redhat-release and its siblings (centos-, fedora-release): one line,
/// `NAME release VERSION (CODENAME)`. RHEL 4 and older write the minor version as
/// `(Nahant Update 9)`.
pub fn redhat_release(text: &str) -> Release {
    let Some(line) = first_line(text) else {
        return Release::default();
    };
    let lower = line.to_lowercase();
    let distro = [
        ("centos", "centos"),
        ("fedora", "fedora"),
        ("scientific linux", "scientificlinux"),
        ("oracle linux", "ol"),
        ("enterprise linux enterprise linux", "ol"),
        ("rocky linux", "rocky"),
        ("almalinux", "almalinux"),
        ("cloudlinux", "cloudlinux"),
        ("red hat enterprise linux", "rhel"),
        ("red hat linux", "redhat-based"),
    ]
    .iter()
    .find(|(k, _)| lower.contains(k))
    .map(|(_, d)| d.to_string());
    let mut version = lower
        .split_once(" release ")
        .and_then(|(_, r)| Version::parse(r));
    if let (Some(v), Some((_, u))) = (version.as_mut(), lower.split_once(" update ")) {
        if v.parts().len() == 1 {
            if let Some(minor) = Version::parse(u) {
                // "Red Hat Enterprise Linux AS release 4 (Nahant Update 9)" is 4.9.
                *v = Version::from_parts(vec![v.major(), minor.major()]);
            }
        }
    }
    Release {
        distro,
        product_name: Some(line),
        version,
    }
}

/// /etc/SuSE-release (SLES ≤ 11, openSUSE ≤ 13): the product on the first line, then
/// `VERSION = 11` and `PATCHLEVEL = 4` (the service pack).
pub fn suse_release(text: &str) -> Release {
    let product = first_line(text);
    let lower = product.as_deref().unwrap_or("").to_lowercase();
    let distro = if lower.contains("opensuse") {
        "opensuse"
    } else if lower.contains("enterprise desktop") {
        "sled"
    } else if lower.contains("enterprise server") {
        "sles"
    } else {
        "suse"
    };
    let kv: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let version = get(&kv, "VERSION").map(|v| match get(&kv, "PATCHLEVEL") {
        Some(p) if !v.contains('.') => format!("{v}.{p}"),
        _ => v.to_string(),
    });
    Release {
        distro: Some(distro.into()),
        product_name: product,
        version: version.and_then(|v| Version::parse(&v)),
    }
}

/// /etc/lsb-release (Ubuntu before os-release): `DISTRIB_ID`, `DISTRIB_RELEASE`,
/// `DISTRIB_DESCRIPTION`.
pub fn lsb_release(text: &str) -> Release {
    let kv = assignments(text);
    Release {
        distro: get(&kv, "DISTRIB_ID").map(str::to_lowercase),
        product_name: get(&kv, "DISTRIB_DESCRIPTION").map(str::to_string),
        version: get(&kv, "DISTRIB_RELEASE").and_then(Version::parse),
    }
}

/// A file holding only a version: /etc/debian_version (`5.0.10`, or `squeeze/sid` on
/// testing, which is no version) and /etc/alpine-release (`3.18.4`).
pub fn version_file(distro: &str, text: &str) -> Release {
    Release {
        distro: Some(distro.into()),
        product_name: None,
        version: first_line(text).and_then(|l| Version::parse(&l)),
    }
}

/// /etc/gentoo-release: `Gentoo Base System release 2.7`.
pub fn gentoo_release(text: &str) -> Release {
    let line = first_line(text);
    Release {
        distro: Some("gentoo".into()),
        version: line
            .as_deref()
            .and_then(|l| {
                l.to_lowercase()
                    .split_once(" release ")
                    .map(|(_, r)| r.to_string())
            })
            .and_then(|r| Version::parse(&r)),
        product_name: line,
    }
}

type Parser = fn(&str) -> Release;

/// The release of the guest: os-release first, then the older files in the order that
/// tells derivatives from their parents (CentOS before RHEL, lsb-release before
/// debian_version, since old Ubuntu has both).
pub(super) fn detect(cx: &Ctx) -> Release {
    let text = |p: &str| cx.read_text(p, MAX_RELEASE);
    let mut rel = text("/etc/os-release")
        .or_else(|| text("/usr/lib/os-release"))
        .map(|t| os_release(&t))
        .unwrap_or_default();
    if rel.distro.is_some() {
        if rel.distro.as_deref() == Some("debian")
            && rel.version.as_ref().is_none_or(|v| v.parts().len() < 2)
        {
            // Debian's os-release has the major version only (and none on testing);
            // debian_version has the point release.
            if let Some(v) =
                text("/etc/debian_version").and_then(|t| version_file("debian", &t).version)
            {
                if rel.version.as_ref().is_none_or(|r| r.major() == v.major()) {
                    rel.version = Some(v);
                }
            }
        }
        return rel;
    }
    let legacy: [(&str, Parser); 10] = [
        ("/etc/fedora-release", redhat_release),
        ("/etc/centos-release", redhat_release),
        ("/etc/redhat-release", redhat_release),
        ("/etc/SuSE-release", suse_release),
        ("/etc/alpine-release", |t| version_file("alpine", t)),
        ("/etc/arch-release", |_| Release {
            distro: Some("arch".into()),
            ..Release::default()
        }),
        ("/etc/gentoo-release", gentoo_release),
        ("/etc/lsb-release", lsb_release),
        ("/etc/debian_version", |t| version_file("debian", t)),
        ("/etc/system-release", redhat_release),
    ];
    for (path, parse) in legacy {
        if let Some(t) = text(path) {
            let r = parse(&t);
            if r.distro.is_some() {
                return r;
            }
        }
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Version> {
        Version::parse(s)
    }

    #[test]
    fn shell_quoting() {
        let kv = assignments(
            "# c\nA=plain\nB=\"two words\"\nC='single $x'\nD=\"esc \\\" \\$ \\\\ \\n\"\nE=a\\ b\nF=x y\n=bad\n1X=bad\n",
        );
        let want = [
            ("A", "plain"),
            ("B", "two words"),
            ("C", "single $x"),
            ("D", "esc \" $ \\ \\n"),
            ("E", "a b"),
            ("F", "x"),
        ];
        let got: Vec<(&str, &str)> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn redhat_family() {
        let r = redhat_release("Red Hat Enterprise Linux AS release 4 (Nahant Update 9)\n");
        assert_eq!((r.distro.as_deref(), r.version), (Some("rhel"), v("4.9")));
        let r = redhat_release("Fedora Core release 6 (Zod)\n");
        assert_eq!((r.distro.as_deref(), r.version), (Some("fedora"), v("6")));
        assert_eq!(redhat_release("\n"), Release::default());
    }
}
