//! /etc/fstab: a first reading (fields split on blanks, comments skipped). A fuller parser
//! (escapes, warnings, limits) is being written; this one keeps the same interface.

use serde::Serialize;

/// One mount line of fstab(5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    pub spec: String,
    pub file: String,
    pub vfstype: String,
    pub options: Vec<String>,
    pub freq: u32,
    pub passno: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fstab {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

impl Entry {
    pub fn is_swap(&self) -> bool {
        self.vfstype == "swap"
    }
    pub fn is_bind(&self) -> bool {
        self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
    pub fn is_noauto(&self) -> bool {
        self.options.iter().any(|o| o == "noauto")
    }
    pub fn is_virtual(&self) -> bool {
        matches!(
            self.vfstype.as_str(),
            "proc" | "sysfs" | "tmpfs" | "devpts" | "devtmpfs" | "none" | "nfs" | "nfs4" | "cifs"
        )
    }
}

pub fn parse(data: &[u8]) -> Fstab {
    let text = String::from_utf8_lossy(data);
    let mut f = Fstab::default();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 3 {
            f.warnings.push(format!("line {}: too few fields", n + 1));
            continue;
        }
        f.entries.push(Entry {
            line: n + 1,
            spec: w[0].into(),
            file: unescape(w[1]),
            vfstype: w[2].into(),
            options: w
                .get(3)
                .map_or(vec![], |o| o.split(',').map(String::from).collect()),
            freq: w.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
            passno: w.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
        });
    }
    f
}

/// What the first field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Spec {
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    Path(String),
    Other(String),
}

impl Spec {
    pub fn parse(s: &str) -> Spec {
        let unq = |v: &str| v.trim_matches('"').to_string();
        for (p, f) in [
            ("UUID=", Spec::Uuid as fn(String) -> Spec),
            ("LABEL=", Spec::Label),
            ("PARTUUID=", Spec::PartUuid),
            ("PARTLABEL=", Spec::PartLabel),
            ("/dev/disk/by-uuid/", Spec::Uuid),
            ("/dev/disk/by-label/", Spec::Label),
            ("/dev/disk/by-partuuid/", Spec::PartUuid),
            ("/dev/disk/by-partlabel/", Spec::PartLabel),
        ] {
            if let Some(v) = s.strip_prefix(p) {
                return f(unq(v));
            }
        }
        if s.starts_with('/') {
            Spec::Path(s.into())
        } else {
            Spec::Other(s.into())
        }
    }
}

/// `\040`-style octal escapes, as fstab(5) writes blanks in paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
