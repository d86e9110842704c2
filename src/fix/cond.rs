//! Rule conditions (`when` / `unless`) and their evaluation against the facts and the tree.

use super::error::Result;
use super::facts::{Bootloader, Facts, Hypervisor, InitSystem, Os, Target, Version};
use regex::bytes::Regex;
use std::cmp::Ordering;

/// Read access to the tree as planned so far (earlier rules' edits included).
pub trait View {
    /// Canonical paths matching a guest path that may hold shell patterns, sorted; only
    /// paths that exist.
    fn glob(&mut self, pattern: &str) -> Result<Vec<String>>;
    /// The contents of the file at `path` (symlinks followed); `None` if there is no file.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>>;
}

/// A version comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

/// `rhel >= 5, < 8`: a distro (or family) name with optional version constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSpec {
    pub name: String,
    pub constraints: Vec<(Op, Version)>,
}

impl NameSpec {
    pub fn parse(s: &str) -> std::result::Result<NameSpec, String> {
        let s = s.trim();
        let end = s
            .find(|c: char| c.is_whitespace() || "<>=!".contains(c))
            .unwrap_or(s.len());
        let name = &s[..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "`{s}`: expected a name such as `rhel` or `rhel >= 5, < 8`"
            ));
        }
        let mut constraints = Vec::new();
        let rest = s[end..].trim();
        if !rest.is_empty() {
            for c in rest.split(',') {
                let c = c.trim();
                let (op, v) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("==", Op::Eq),
                    ("!=", Op::Ne),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                ]
                .iter()
                .find_map(|(t, op)| c.strip_prefix(t).map(|v| (*op, v.trim())))
                .ok_or_else(|| format!("`{c}`: expected a comparison such as `>= 5`"))?;
                let version = Version::parse(v)
                    .filter(|p| p.to_string().len() == v.len())
                    .ok_or_else(|| format!("`{v}`: not a version"))?;
                constraints.push((op, version));
            }
        }
        Ok(NameSpec {
            name: name.to_string(),
            constraints,
        })
    }

    /// Whether `name` at `version` satisfies this spec (an unknown version fails any constraint).
    pub fn matches(&self, name: &str, version: Option<&Version>) -> bool {
        if self.name != name {
            return false;
        }
        self.constraints.iter().all(|(op, want)| {
            let Some(v) = version else { return false };
            let o = v.cmp_to(want);
            match op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Ge => o != Ordering::Less,
                Op::Gt => o == Ordering::Greater,
            }
        })
    }
}

/// A file pattern and a regex over its contents (or, for `every`, over its path).
#[derive(Debug, Clone)]
pub struct FileMatch {
    pub path: String,
    pub regex: Regex,
}

/// All listed conditions must hold; within a list, any entry may.
#[derive(Debug, Clone, Default)]
pub struct Cond {
    pub os: Vec<Os>,
    pub distro: Vec<NameSpec>,
    pub family: Vec<NameSpec>,
    pub init: Vec<InitSystem>,
    pub bootloader: Vec<Bootloader>,
    pub source: Vec<Hypervisor>,
    pub target: Vec<Target>,
    /// Each path (or pattern) names at least one existing file.
    pub exists: Vec<String>,
    /// At least one of these paths (or patterns) names an existing file.
    pub exists_any: Vec<String>,
    /// No path (or pattern) names an existing file.
    pub missing: Vec<String>,
    /// Some file the path names has a match for the regex.
    pub contains: Vec<FileMatch>,
    /// No file the path names has a match for the regex.
    pub lacks: Vec<FileMatch>,
    /// At least one path matches, and every matching path matches the regex.
    pub every: Vec<FileMatch>,
    /// The `xen_pv_only` fact has this value.
    pub xen_pv_only: Option<bool>,
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Cond {
    /// `Ok(None)` when the condition holds, `Ok(Some(reason))` when it does not.
    pub fn check(&self, facts: &Facts, view: &mut dyn View) -> Result<Option<String>> {
        if !self.os.is_empty() && !self.os.contains(&facts.os) {
            return Ok(Some(format!("os is {}, not {}", facts.os, list(&self.os))));
        }
        let version = facts.version.as_ref();
        let shown = |v: Option<&Version>| v.map_or("unknown version".into(), |v| v.to_string());
        if !self.distro.is_empty()
            && !self
                .distro
                .iter()
                .any(|d| d.matches(&facts.distro, version))
        {
            let d = if facts.distro.is_empty() {
                "unknown"
            } else {
                &facts.distro
            };
            return Ok(Some(format!(
                "distro is {d} {}, not {}",
                shown(version),
                self.distro
                    .iter()
                    .map(spec_text)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let family = facts.family();
        if !self.family.is_empty() && !self.family.iter().any(|d| d.matches(&family, version)) {
            return Ok(Some(format!(
                "family is {family} {}, not {}",
                shown(version),
                self.family
                    .iter()
                    .map(spec_text)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        if !self.init.is_empty() && !self.init.contains(&facts.init) {
            return Ok(Some(format!(
                "init is {}, not {}",
                facts.init,
                list(&self.init)
            )));
        }
        if !self.bootloader.is_empty() && !self.bootloader.contains(&facts.bootloader) {
            return Ok(Some(format!(
                "boot loader is {}, not {}",
                facts.bootloader,
                list(&self.bootloader)
            )));
        }
        if !self.source.is_empty() && !self.source.contains(&facts.source) {
            return Ok(Some(format!(
                "source hypervisor is {}, not {}",
                facts.source,
                list(&self.source)
            )));
        }
        if !self.target.is_empty() && !self.target.contains(&facts.target) {
            return Ok(Some(format!(
                "target is {}, not {}",
                facts.target,
                list(&self.target)
            )));
        }
        if let Some(want) = self.xen_pv_only.filter(|&w| w != facts.xen_pv_only) {
            return Ok(Some(if want {
                "some bootable kernel is not a Xen PV-only build".into()
            } else {
                "every bootable kernel is a Xen PV-only build".into()
            }));
        }
        for p in &self.exists {
            if view.glob(p)?.is_empty() {
                return Ok(Some(format!("{p} does not exist")));
            }
        }
        if !self.exists_any.is_empty() {
            let mut any = false;
            for p in &self.exists_any {
                if !view.glob(p)?.is_empty() {
                    any = true;
                    break;
                }
            }
            if !any {
                return Ok(Some(format!(
                    "none of {} exists",
                    self.exists_any.join(", ")
                )));
            }
        }
        for p in &self.missing {
            if let Some(found) = view.glob(p)?.first() {
                return Ok(Some(format!("{found} exists")));
            }
        }
        for m in &self.contains {
            if !any_contains(view, m)? {
                return Ok(Some(format!("no {} matches /{}/", m.path, m.regex)));
            }
        }
        for m in &self.lacks {
            if any_contains(view, m)? {
                return Ok(Some(format!("{} already matches /{}/", m.path, m.regex)));
            }
        }
        for m in &self.every {
            let paths = view.glob(&m.path)?;
            if paths.is_empty() {
                return Ok(Some(format!("{} does not exist", m.path)));
            }
            if let Some(p) = paths.iter().find(|p| !m.regex.is_match(p.as_bytes())) {
                return Ok(Some(format!("{p} does not match /{}/", m.regex)));
            }
        }
        Ok(None)
    }
}

fn spec_text(s: &NameSpec) -> String {
    let mut t = s.name.clone();
    for (i, (op, v)) in s.constraints.iter().enumerate() {
        let op = match op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Ge => ">=",
            Op::Gt => ">",
        };
        t.push_str(if i == 0 { " " } else { ", " });
        t.push_str(&format!("{op} {v}"));
    }
    t
}

fn any_contains(view: &mut dyn View, m: &FileMatch) -> Result<bool> {
    for p in view.glob(&m.path)? {
        if let Some(data) = view.read(&p)? {
            if m.regex.is_match(&data) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_specs() {
        let s = NameSpec::parse("rhel >= 5, < 8").unwrap();
        let v = |x| Version::parse(x);
        assert!(s.matches("rhel", v("5.11").as_ref()));
        assert!(s.matches("rhel", v("7.9").as_ref()));
        assert!(!s.matches("rhel", v("8.0").as_ref()));
        assert!(!s.matches("rhel", None));
        assert!(!s.matches("centos", v("7").as_ref()));
        assert!(NameSpec::parse("debian").unwrap().matches("debian", None));
        for bad in ["", ">= 5", "rhel >=", "rhel ~ 5", "rhel >= 5x", "rh el"] {
            assert!(NameSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
