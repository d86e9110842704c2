//! The engine: plans every selected rule against an in-memory overlay of the tree (so later
//! rules see earlier rules' edits and nothing is written while planning), reports what each
//! rule did, prints the plan as a unified diff, and applies it.
//!
//! Planning reads the tree only. Any error (an unreadable or binary file, a file over
//! [`MAX_FILE`], an edit that is not idempotent) stops the run before anything is written;
//! applying writes each file atomically (temp file and rename, see [`FileTree::write`]).

use super::action;
use super::cond::View;
use super::devices;
use super::error::{Error, Result};
use super::facts::Facts;
use super::firstboot;
use super::glob;
use super::initramfs;
use super::rule::{Action, Edit, Rule, Scope};
use super::template::Context;
use super::text::nul_offset;
use crate::fs::files::{
    self, child, probe_via_lstat, resolve_with, split_parent, Attrs, FileTree, Probe,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Configuration files are small; a larger file is not edited (nor read for a condition).
pub const MAX_FILE: u64 = 16 << 20;
/// Paths one pattern may expand to.
const MAX_GLOB: usize = 4096;

/// The state of one guest path, before or after the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Absent,
    Dir,
    File {
        data: Vec<u8>,
        attrs: Attrs,
    },
    Symlink(String),
    /// Devices, FIFOs, sockets.
    Other,
}

/// The tree as the plan would leave it.
struct Overlay<'t> {
    tree: &'t dyn FileTree,
    /// Tree states read so far (file contents included).
    cache: HashMap<String, Node>,
    /// Planned states.
    nodes: BTreeMap<String, Node>,
    /// States at the start of the rule being planned, for its report and for rollback.
    rule_before: BTreeMap<String, Node>,
}

impl<'t> Overlay<'t> {
    fn new(tree: &'t dyn FileTree) -> Self {
        Overlay {
            tree,
            cache: HashMap::new(),
            nodes: BTreeMap::new(),
            rule_before: BTreeMap::new(),
        }
    }

    /// The tree's own state of a canonical path.
    fn tree_state(&mut self, p: &str) -> Result<Node> {
        self.tree_state_within(p, MAX_FILE)
    }

    /// [`Overlay::tree_state`] with another size limit for a file's contents.
    fn tree_state_within(&mut self, p: &str, limit: u64) -> Result<Node> {
        if let Some(n) = self.cache.get(p) {
            return Ok(n.clone());
        }
        let n = match self.tree.lstat(p)? {
            None => Node::Absent,
            Some(m) => match m.kind {
                crate::fs::files::Kind::Dir => Node::Dir,
                crate::fs::files::Kind::Symlink => Node::Symlink(self.tree.read_link(p)?),
                crate::fs::files::Kind::Other => Node::Other,
                crate::fs::files::Kind::File => Node::File {
                    data: self.tree.read(p, limit)?,
                    attrs: m.attrs,
                },
            },
        };
        self.cache.insert(p.to_string(), n.clone());
        Ok(n)
    }

    /// Whether a planned, present path lies below `p` (which then is a directory to be).
    fn has_planned_children(&self, p: &str) -> bool {
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, n)| *n != Node::Absent)
    }

    fn probe(&mut self, p: &str) -> crate::fs::files::Result<Probe> {
        if let Some(n) = self.nodes.get(p) {
            return Ok(match n {
                Node::Absent => Probe::Missing,
                Node::Dir => Probe::Dir,
                Node::Symlink(t) => Probe::Link(t.clone()),
                Node::File { .. } | Node::Other => Probe::Other,
            });
        }
        let probe = match self.cache.get(p) {
            Some(Node::Absent) => Probe::Missing,
            Some(Node::Dir) => Probe::Dir,
            Some(Node::Symlink(t)) => Probe::Link(t.clone()),
            Some(_) => Probe::Other,
            None => probe_via_lstat(self.tree, p)?,
        };
        if probe == Probe::Missing && self.has_planned_children(p) {
            return Ok(Probe::Dir);
        }
        Ok(probe)
    }

    fn resolve(&mut self, path: &str, follow: bool) -> Result<String> {
        Ok(resolve_with(|p| self.probe(p), path, follow)?)
    }

    fn state(&mut self, p: &str) -> Result<Node> {
        match self.nodes.get(p) {
            Some(n) => Ok(n.clone()),
            None => self.tree_state(p),
        }
    }

    /// [`Overlay::state`] of a file that may be larger than a configuration file.
    fn state_within(&mut self, p: &str, limit: u64) -> Result<Node> {
        match self.nodes.get(p) {
            Some(n) => Ok(n.clone()),
            None => self.tree_state_within(p, limit),
        }
    }

    fn set(&mut self, p: &str, node: Node) -> Result<()> {
        if !self.rule_before.contains_key(p) {
            let before = self.state(p)?;
            self.rule_before.insert(p.to_string(), before);
        }
        // Keep the tree's state for the final diff.
        self.tree_state(p)?;
        self.nodes.insert(p.to_string(), node);
        Ok(())
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>> {
        let canonical = self.resolve(dir, true)?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        if self.tree_state_kind_is_dir(&canonical)? {
            names.extend(self.tree.list(&canonical)?);
        }
        let prefix = if canonical == "/" {
            "/".to_string()
        } else {
            format!("{canonical}/")
        };
        let planned: Vec<(String, bool)> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, n)| (k[prefix.len()..].to_string(), *n != Node::Absent))
            .collect();
        for (rest, present) in planned {
            match rest.split_once('/') {
                None if present => {
                    names.insert(rest);
                }
                None => {
                    names.remove(&rest);
                }
                Some((first, _)) if present => {
                    names.insert(first.to_string());
                }
                Some(_) => {}
            }
        }
        Ok(names.into_iter().collect())
    }

    fn tree_state_kind_is_dir(&mut self, p: &str) -> Result<bool> {
        if let Some(n) = self.cache.get(p) {
            return Ok(*n == Node::Dir);
        }
        Ok(matches!(self.tree.lstat(p)?, Some(m) if m.kind == crate::fs::files::Kind::Dir))
    }

    /// Expands a path that may hold patterns into the existing paths it names.
    fn expand(&mut self, pattern: &str) -> Result<Vec<String>> {
        let mut current = vec!["/".to_string()];
        for comp in pattern.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            for dir in &current {
                if glob::is_pattern(comp) {
                    if self.resolve(dir, true).and_then(|d| Ok(self.probe(&d)?))? != Probe::Dir {
                        continue;
                    }
                    for name in self.list(dir)? {
                        if glob::matches(comp, &name) {
                            next.push(child(dir, &name));
                        }
                    }
                } else {
                    next.push(child(dir, comp));
                }
                if next.len() > MAX_GLOB {
                    return Err(Error::Files(files::Error::WrongKind {
                        path: pattern.to_string(),
                        what: "the pattern names too many files",
                    }));
                }
            }
            current = next;
        }
        let mut out = Vec::new();
        for p in current {
            let c = self.resolve(&p, false)?;
            if self.probe(&c)? != Probe::Missing {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl View for Overlay<'_> {
    fn glob(&mut self, pattern: &str) -> Result<Vec<String>> {
        self.expand(pattern)
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        let c = self.resolve(path, true)?;
        Ok(match self.state(&c)? {
            Node::File { data, .. } => Some(data),
            _ => None,
        })
    }
}

impl firstboot::Probe for Overlay<'_> {
    fn is_dir(&mut self, path: &str) -> bool {
        self.resolve(path, true)
            .and_then(|c| Ok(self.probe(&c)?))
            .is_ok_and(|p| p == Probe::Dir)
    }

    fn exists(&mut self, path: &str) -> bool {
        self.resolve(path, true)
            .and_then(|c| Ok(self.probe(&c)?))
            .is_ok_and(|p| p != Probe::Missing)
    }
}

/// Which rules run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these (opt-in rules named here run too); all when empty.
    pub only: Vec<String>,
    pub skip: Vec<String>,
    /// Opt-in rules to run.
    pub enable: Vec<String>,
}

/// What happened to a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It changes files.
    Applied,
    /// Its conditions hold and there is nothing left to change.
    Unchanged,
    /// Its conditions do not hold (or it was left out); `reason` says why.
    Skipped,
}

/// What a rule does to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
    /// Mode or owner only.
    Attributes,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub change: ChangeKind,
    /// `file` or `symlink` (what the path is after the change, or was before a deletion).
    pub kind: &'static str,
    pub lines_added: usize,
    pub lines_removed: usize,
    /// For a binary file (an initramfs), its sizes instead of line counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinarySizes>,
}

/// Sizes in bytes of a binary file before and after a change.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BinarySizes {
    pub before: u64,
    pub after: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub file: String,
    pub description: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub files: Vec<FileReport>,
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
}

/// One path the plan changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub before: Node,
    pub after: Node,
}

/// The result of planning: per-rule reports and the changes, path by path.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rules: Vec<RuleReport>,
    pub changes: Vec<Change>,
}

/// Why a rule stopped: an error, or a fact its templates need is unknown (a skip).
enum Stop {
    Error(Error),
    UnknownFact(String),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

type StepResult<T> = std::result::Result<T, Stop>;

fn fill(t: &super::template::Template, facts: &Facts, ctx: Context) -> StepResult<String> {
    t.fill(facts, ctx).map_err(Stop::UnknownFact)
}

fn regex_of(p: &super::rule::Pattern, facts: &Facts) -> StepResult<regex::bytes::Regex> {
    p.regex(facts).map_err(Stop::UnknownFact)
}

struct RuleRun<'a, 'b, 't> {
    ov: &'a mut Overlay<'t>,
    facts: &'b Facts,
    rule: &'b Rule,
    notes: Vec<String>,
    warnings: Vec<String>,
}

impl RuleRun<'_, '_, '_> {
    /// Canonical targets of a step: patterns expanded to what exists, exact paths as given.
    fn targets(&mut self, edit: &Edit, follow: bool) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for p in &edit.paths {
            let paths = if p.split('/').any(glob::is_pattern) {
                self.ov.expand(p)?
            } else {
                vec![p.clone()]
            };
            for q in paths {
                let c = self.ov.resolve(&q, follow)?;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Runs a text edit on a file: missing files and non-files are left alone (unless
    /// `create`), binary files refused, and the edit must be idempotent.
    fn edit_text(
        &mut self,
        path: &str,
        only_if: Option<&regex::bytes::Regex>,
        create: bool,
        mut f: impl FnMut(&[u8]) -> Vec<u8>,
    ) -> Result<()> {
        let (data, attrs) = match self.ov.state(path)? {
            Node::File { data, attrs } => (data, attrs),
            Node::Absent if create => (Vec::new(), Attrs::root(0o644)),
            _ => return Ok(()),
        };
        if let Some(offset) = nul_offset(&data) {
            return Err(Error::Binary {
                path: path.to_string(),
                offset,
            });
        }
        if only_if.is_some_and(|re| !re.is_match(&data)) {
            return Ok(());
        }
        let new = f(&data);
        if f(&new) != new {
            return Err(Error::NotIdempotent {
                path: path.to_string(),
            });
        }
        let exists = matches!(self.ov.state(path)?, Node::File { .. });
        if new != data || (!exists && create) {
            self.ov.set(path, Node::File { data: new, attrs })?;
        }
        Ok(())
    }

    fn write(&mut self, path: &str, content: Vec<u8>, attrs: Attrs, keep: bool) -> Result<()> {
        match self.ov.state(path)? {
            Node::Dir => Err(Error::Files(files::Error::WrongKind {
                path: path.to_string(),
                what: "is a directory",
            })),
            Node::Absent => self.ov.set(
                path,
                Node::File {
                    data: content,
                    attrs,
                },
            ),
            _ if keep => Ok(()),
            Node::File { data, attrs: a } if data == content && a == attrs => Ok(()),
            _ => self.ov.set(
                path,
                Node::File {
                    data: content,
                    attrs,
                },
            ),
        }
    }

    fn symlink(&mut self, path: &str, target: &str, force: bool) -> Result<()> {
        match self.ov.state(path)? {
            Node::Symlink(t) if t == target => Ok(()),
            Node::Absent | Node::Symlink(_) => self.ov.set(path, Node::Symlink(target.to_string())),
            Node::File { .. } if force => self.ov.set(path, Node::Symlink(target.to_string())),
            _ => {
                self.warnings.push(format!(
                    "{path} exists and is not a symlink; left as is (force = true replaces a file)"
                ));
                Ok(())
            }
        }
    }

    /// Appends the `modules` a kernel's initramfs lacks to it (see [`initramfs`]).
    fn initramfs(&mut self, path: &str, modules: &[String]) -> Result<()> {
        let Some(release) = initramfs::release_of(path) else {
            return Ok(());
        };
        let (data, attrs) = match self.ov.state_within(path, initramfs::MAX_IMAGE)? {
            Node::File { data, attrs } => (data, attrs),
            _ => return Ok(()),
        };
        let moddir = self.ov.resolve(&format!("/lib/modules/{release}"), true)?;
        if self.ov.probe(&moddir)? != Probe::Dir {
            self.warnings.push(format!(
                "{path}: no module tree /lib/modules/{release} for it; left as is"
            ));
            return Ok(());
        }
        let tree = self.ov.tree;
        let mut read = |p: &str, limit: u64| tree.read(p, limit).ok();
        match initramfs::add_modules(path, &data, &moddir, modules, &mut read) {
            initramfs::Outcome::Present => {}
            initramfs::Outcome::Appended { data, modules } => {
                self.ov.set(path, Node::File { data, attrs })?;
                self.notes
                    .push(format!("{path}: appended {} to it", modules.join(", ")));
            }
            initramfs::Outcome::Skipped(w) => self.warnings.push(w),
        }
        Ok(())
    }

    /// Runs `f` as a text edit (see [`Self::edit_text`]) on every target of `edit`; `f` also
    /// gets the target's path, for messages that name it.
    fn edit_targets(
        &mut self,
        edit: &Edit,
        only_if: Option<&regex::bytes::Regex>,
        create: bool,
        mut f: impl FnMut(&str, &[u8]) -> Vec<u8>,
    ) -> Result<()> {
        for p in self.targets(edit, true)? {
            self.edit_text(&p, only_if, create, |d| f(&p, d))?;
        }
        Ok(())
    }

    /// Runs one step: its `when` and `only-if` decide whether and where, then its action.
    fn step(&mut self, edit: &Edit) -> StepResult<()> {
        if let Some(c) = &edit.when {
            if c.check(self.facts, self.ov)?.is_some() {
                return Ok(());
            }
        }
        let only_if = edit
            .only_if
            .as_ref()
            .map(|p| regex_of(p, self.facts))
            .transpose()?;
        let only_if = only_if.as_ref();
        let facts = self.facts;
        match &edit.action {
            Action::Replace {
                pattern,
                with,
                scope,
            } => {
                let re = regex_of(pattern, facts)?;
                let with = fill(with, facts, Context::Replacement)?;
                self.edit_targets(edit, only_if, false, |_, d| match scope {
                    Scope::Line => action::replace_lines(d, &re, with.as_bytes()),
                    Scope::File => action::replace_file(d, &re, with.as_bytes()),
                })?;
            }
            Action::SetKey {
                key,
                value,
                format,
                section,
                create,
            } => {
                let filled = match value {
                    super::rule::SetValue::To(t) => fill(t, facts, Context::Plain)?,
                    super::rule::SetValue::Words { .. } => String::new(),
                };
                self.edit_targets(edit, only_if, false, |_, d| {
                    action::set_key(
                        d,
                        key,
                        value,
                        filled.as_bytes(),
                        *format,
                        section.as_deref(),
                        *create,
                    )
                })?;
            }
            Action::Comment { pattern, prefix } => {
                let re = regex_of(pattern, facts)?;
                self.edit_targets(edit, only_if, false, |_, d| action::comment(d, &re, prefix))?;
            }
            Action::Uncomment { pattern, prefix } => {
                let re = regex_of(pattern, facts)?;
                self.edit_targets(edit, only_if, false, |_, d| {
                    action::uncomment(d, &re, prefix)
                })?;
            }
            Action::EnsureLine {
                lines,
                after,
                matching,
                create,
            } => {
                let wanted = lines
                    .iter()
                    .map(|l| fill(l, facts, Context::Plain).map(String::into_bytes))
                    .collect::<StepResult<Vec<_>>>()?;
                let after = after.as_ref().map(|a| regex_of(a, facts)).transpose()?;
                let matching = matching.as_ref().map(|a| regex_of(a, facts)).transpose()?;
                self.edit_targets(edit, only_if, *create, |_, d| {
                    action::ensure_lines(d, &wanted, after.as_ref(), matching.as_ref())
                })?;
            }
            Action::Delete => self.delete(edit, only_if)?,
            Action::Write {
                content,
                attrs,
                keep_existing,
            } => {
                let content = fill(content, facts, Context::Plain)?;
                for p in self.targets(edit, false)? {
                    self.write(&p, content.clone().into_bytes(), *attrs, *keep_existing)?;
                }
            }
            Action::Symlink { target, force } => {
                let target = fill(target, facts, Context::Plain)?;
                for p in self.targets(edit, false)? {
                    self.symlink(&p, &target, *force)?;
                }
            }
            Action::RewriteDevices { format } => self.rewrite_devices(edit, only_if, *format)?,
            Action::Firstboot {
                name,
                script,
                priority,
            } => {
                let script = fill(script, facts, Context::Plain)?;
                self.firstboot(name, &script, *priority)?;
            }
            Action::InitramfsModules { modules } => {
                for p in self.targets(edit, true)? {
                    self.initramfs(&p, modules)?;
                }
            }
            Action::Note { message } => {
                let m = fill(message, facts, Context::Plain)?;
                self.notes.push(m);
            }
        }
        Ok(())
    }

    /// Removes files and symlinks; a directory (or anything else) among the targets is an
    /// error, as `delete` promises never to remove a tree.
    fn delete(&mut self, edit: &Edit, only_if: Option<&regex::bytes::Regex>) -> Result<()> {
        for p in self.targets(edit, false)? {
            match self.ov.state(&p)? {
                Node::Absent => {}
                Node::File { data, .. } => {
                    if only_if.is_none_or(|re| re.is_match(&data)) {
                        self.ov.set(&p, Node::Absent)?;
                    }
                }
                Node::Symlink(_) => self.ov.set(&p, Node::Absent)?,
                Node::Dir | Node::Other => {
                    return Err(Error::Files(files::Error::WrongKind {
                        path: p,
                        what: "is not a file or symlink; `delete` removes only those",
                    }))
                }
            }
        }
        Ok(())
    }

    /// Rewrites device names in each target; the warnings (a device with no new name) are
    /// kept once each, however many files name the device.
    fn rewrite_devices(
        &mut self,
        edit: &Edit,
        only_if: Option<&regex::bytes::Regex>,
        format: devices::Format,
    ) -> Result<()> {
        let facts = self.facts;
        let mut warnings = Vec::new();
        self.edit_targets(edit, only_if, false, |p, d| {
            let r = devices::rewrite(d, format, &facts.devices, facts.target_bus, p);
            warnings.extend(r.warnings);
            r.data
        })?;
        for w in warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        Ok(())
    }

    /// Installs a firstboot script: the files, links and rc.local line the guest's init
    /// system needs (see [`firstboot::install`]).
    fn firstboot(&mut self, name: &str, script: &str, priority: u32) -> Result<()> {
        let path = firstboot::script_path(priority, &self.rule.name, name);
        for op in firstboot::install(self.facts, self.ov, script, &path) {
            match op {
                firstboot::Op::Write {
                    path,
                    content,
                    mode,
                } => {
                    let p = self.ov.resolve(&path, false)?;
                    self.write(&p, content, Attrs::root(mode), false)?;
                }
                firstboot::Op::Symlink { path, target } => {
                    let p = self.ov.resolve(&path, false)?;
                    self.symlink(&p, &target, true)?;
                }
                firstboot::Op::RcLocal { path, line } => {
                    let p = self.ov.resolve(&path, true)?;
                    self.edit_text(&p, None, false, |d| rc_local_line(d, &line))?;
                }
            }
        }
        Ok(())
    }
}

/// rc.local with `line` added once, before its final `exit 0` (a line after it never runs).
fn rc_local_line(d: &[u8], line: &str) -> Vec<u8> {
    static EXIT: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r"(?-u)^\s*exit\s+0\b").expect("static") // OK: a constant pattern
    });
    let exit = &*EXIT;
    let mut l = super::text::Lines::new(d);
    if l.lines.iter().any(|(c, _)| c == line.as_bytes()) {
        return d.to_vec();
    }
    let at = l
        .lines
        .iter()
        .rposition(|(c, _)| exit.is_match(c))
        .unwrap_or(l.lines.len());
    l.insert(at, line.as_bytes().to_vec());
    l.into_bytes()
}

fn kind_of(n: &Node) -> &'static str {
    match n {
        Node::Symlink(_) => "symlink",
        _ => "file",
    }
}

fn text_of(n: &Node) -> &[u8] {
    match n {
        Node::File { data, .. } => data,
        _ => &[],
    }
}

fn file_report(path: &str, before: &Node, after: &Node) -> FileReport {
    let change = match (before, after) {
        (Node::Absent, _) => ChangeKind::Created,
        (_, Node::Absent) => ChangeKind::Deleted,
        (Node::File { data: a, .. }, Node::File { data: b, .. }) if a == b => {
            ChangeKind::Attributes
        }
        _ => ChangeKind::Modified,
    };
    let (a, b) = (text_of(before), text_of(after));
    let binary = nul_offset(a).is_some() || nul_offset(b).is_some();
    let (added, removed) = if binary {
        (0, 0)
    } else {
        super::diff::count(a, b)
    };
    FileReport {
        path: path.to_string(),
        change,
        kind: kind_of(if *after == Node::Absent {
            before
        } else {
            after
        }),
        lines_added: added,
        lines_removed: removed,
        binary: binary.then_some(BinarySizes {
            before: crate::bytes::wide(a.len()),
            after: crate::bytes::wide(b.len()),
        }),
    }
}

/// Plans `rules` (in order) against `tree`.
pub fn plan(tree: &dyn FileTree, rules: &[Rule], facts: &Facts, sel: &Selection) -> Result<Plan> {
    let mut ov = Overlay::new(tree);
    let mut reports = Vec::new();
    for rule in rules {
        let report = |status, reason: Option<String>| RuleReport {
            name: rule.name.clone(),
            file: rule.file.clone(),
            description: rule.description.clone(),
            status,
            reason,
            files: Vec::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
        };
        let named = |l: &[String]| l.contains(&rule.name);
        if !sel.only.is_empty() && !named(&sel.only) {
            continue;
        }
        if named(&sel.skip) {
            reports.push(report(Status::Skipped, Some("--skip".into())));
            continue;
        }
        if rule.opt_in && !named(&sel.enable) && !named(&sel.only) {
            reports.push(report(
                Status::Skipped,
                Some(format!("opt-in: run it with --enable {}", rule.name)),
            ));
            continue;
        }
        let cond_err = |e: Error| Error::Condition {
            rule: rule.name.clone(),
            file: rule.file.clone(),
            source: Box::new(e),
        };
        if let Some(why) = rule.when.check(facts, &mut ov).map_err(cond_err)? {
            reports.push(report(Status::Skipped, Some(why)));
            continue;
        }
        if let Some(u) = &rule.unless {
            if u.check(facts, &mut ov).map_err(cond_err)?.is_none() {
                reports.push(report(
                    Status::Skipped,
                    Some("its `unless` conditions hold".into()),
                ));
                continue;
            }
        }
        ov.rule_before.clear();
        let mut run = RuleRun {
            ov: &mut ov,
            facts,
            rule,
            notes: Vec::new(),
            warnings: Vec::new(),
        };
        let mut stopped = None;
        for (step, edit) in (1usize..).zip(&rule.edits) {
            match run.step(edit) {
                Ok(()) => {}
                Err(Stop::UnknownFact(k)) => {
                    stopped = Some(k);
                    break;
                }
                Err(Stop::Error(e)) => {
                    return Err(Error::Step {
                        rule: rule.name.clone(),
                        file: format!("{}:{}", rule.file, edit.line),
                        step,
                        source: Box::new(e),
                    })
                }
            }
        }
        let (notes, warnings) = (run.notes, run.warnings);
        let before = std::mem::take(&mut ov.rule_before);
        if let Some(key) = stopped {
            for (p, n) in before {
                ov.nodes.insert(p, n);
            }
            reports.push(report(
                Status::Skipped,
                Some(format!("the fact `{key}` is not known for this guest")),
            ));
            continue;
        }
        let mut files = Vec::new();
        for (p, b) in &before {
            let a = ov.state(p)?;
            if *b != a {
                files.push(file_report(p, b, &a));
            }
        }
        let mut r = report(
            if files.is_empty() {
                Status::Unchanged
            } else {
                Status::Applied
            },
            None,
        );
        r.files = files;
        r.notes = notes;
        r.warnings = warnings;
        reports.push(r);
    }
    let mut changes = Vec::new();
    let planned: Vec<(String, Node)> = ov
        .nodes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (p, after) in planned {
        let before = ov.tree_state(&p)?;
        if before != after {
            changes.push(Change {
                path: p,
                before,
                after,
            });
        }
    }
    Ok(Plan {
        rules: reports,
        changes,
    })
}

fn mode_line(which: &str, n: &Node) -> Option<String> {
    match n {
        Node::File { attrs, .. } => Some(format!("{which} mode {:06o}", 0o100000 | attrs.mode)),
        Node::Symlink(_) => Some(format!("{which} mode 120000")),
        _ => None,
    }
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan as a unified diff, file by file, with git-style headers for created and
    /// deleted files, mode changes and symlinks, and `old owner`/`new owner` lines.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            let rel = c.path.trim_start_matches('/');
            out.push_str(&format!("diff --ferry a/{rel} b/{rel}\n"));
            match (&c.before, &c.after) {
                (Node::Absent, a) => {
                    if let Some(m) = mode_line("new file", a) {
                        out.push_str(&m);
                        out.push('\n');
                    }
                }
                (b, Node::Absent) => {
                    if let Some(m) = mode_line("deleted file", b) {
                        out.push_str(&m);
                        out.push('\n');
                    }
                }
                (b, a) => {
                    let (mb, ma) = (mode_line("old", b), mode_line("new", a));
                    if mb.as_deref().map(|s| &s[3..]) != ma.as_deref().map(|s| &s[3..]) {
                        for m in [mb, ma].into_iter().flatten() {
                            out.push_str(&m);
                            out.push('\n');
                        }
                    }
                }
            }
            let owner = |n: &Node| match n {
                Node::File { attrs, .. } => Some((attrs.uid, attrs.gid)),
                _ => None,
            };
            match (owner(&c.before), owner(&c.after)) {
                (Some(b), Some(a)) if a != b => out.push_str(&format!(
                    "old owner {}:{}\nnew owner {}:{}\n",
                    b.0, b.1, a.0, a.1
                )),
                (None, Some(a)) if a != (0, 0) => {
                    out.push_str(&format!("new owner {}:{}\n", a.0, a.1))
                }
                _ => {}
            }
            if let Node::Symlink(t) = &c.before {
                out.push_str(&format!("old symlink -> {t}\n"));
            }
            if let Node::Symlink(t) = &c.after {
                out.push_str(&format!("new symlink -> {t}\n"));
            }
            let is_file = |n: &Node| matches!(n, Node::File { .. });
            if !is_file(&c.before) && !is_file(&c.after) {
                continue;
            }
            let (a, b) = (text_of(&c.before), text_of(&c.after));
            if a == b {
                continue;
            }
            if nul_offset(a).is_some() || nul_offset(b).is_some() {
                out.push_str(&format!("Binary files a/{rel} and b/{rel} differ\n"));
                continue;
            }
            out.push_str(&if is_file(&c.before) {
                format!("--- a/{rel}\n")
            } else {
                "--- /dev/null\n".into()
            });
            out.push_str(&if is_file(&c.after) {
                format!("+++ b/{rel}\n")
            } else {
                "+++ /dev/null\n".into()
            });
            out.push_str(&super::diff::unified(a, b, 3));
        }
        out
    }

    /// Carries out the plan on `tree`: removals, then files and symlinks (parents created
    /// as root-owned 0755 directories).
    pub fn apply(&self, tree: &dyn FileTree) -> Result<()> {
        let ensure_parent = |p: &str| -> Result<()> {
            if let Some((parent, _)) = split_parent(p) {
                tree.create_dir_all(parent, 0o755)?;
            }
            Ok(())
        };
        for c in self.changes.iter().filter(|c| c.after == Node::Absent) {
            tree.remove(&c.path)?;
        }
        for c in &self.changes {
            match (&c.before, &c.after) {
                (_, Node::Absent) => {}
                (Node::File { data: old, .. }, Node::File { data, attrs }) if old == data => {
                    tree.set_attrs(&c.path, *attrs)?;
                }
                (_, Node::File { data, attrs }) => {
                    ensure_parent(&c.path)?;
                    tree.write(&c.path, data, *attrs)?;
                }
                (_, Node::Symlink(t)) => {
                    ensure_parent(&c.path)?;
                    tree.symlink(t, &c.path)?;
                }
                (_, Node::Dir | Node::Other) => {
                    unreachable!("the engine never plans directories or devices")
                }
            }
        }
        Ok(())
    }
}
