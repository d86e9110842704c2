//! Rule files: the TOML schema, its validation, and the typed rules the engine runs.
//!
//! A rule file holds one fix: `name`, `description`, `why`, optional `opt-in`, `when` and
//! `unless` condition tables, and ordered `[[edit]]` steps, each with an `action` and the
//! fields that action takes (see fixers/README.md). Every error names the file, the line and
//! the field: serde reports unknown and missing fields and wrong types with a position, and
//! the checks here (regexes, templates, paths, the fields each action accepts) use the
//! positions serde_spanned keeps for each value.

use super::cond::{Cond, FileMatch, NameSpec};
use super::devices;
use super::error::{Error, Result};
use super::facts::{Bootloader, Hypervisor, InitSystem, Os, Target};
use super::glob;
use super::template::{Context, Template};
use crate::fs::files::Attrs;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

/// A rule file larger than this is not a rule file.
pub const MAX_RULE_FILE: u64 = 1 << 20;
/// Steps in one rule, paths in one step: generous bounds that keep a plan small.
const MAX_EDITS: usize = 256;
const MAX_PATHS: usize = 256;
/// Compiled size limit of one regex; the regex crate matches in linear time, this bounds
/// the memory a pattern such as `(a{1000}){1000}` could ask for.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Firstboot script order numbers, as virt-customize's (0..=9999).
const MAX_PRIORITY: u32 = 9999;

/// Where a regex is used: per line, or over the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Line,
    File,
}

/// The syntax of a `set-key` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `KEY=value`, `KEY="a b"`, `export KEY=…` (sysconfig, /etc/default/grub, ifcfg).
    Shell,
    /// `key = value` or `key=value`.
    Kv,
    /// `[section]` then `key=value` (yum repos, systemd units).
    Ini,
}

/// What `set-key` does to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetValue {
    To(Template),
    /// Word-list edit: words added at the end if missing, words removed.
    Words {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// A regex that may hold templates: compiled once when it has none.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub template: Template,
    compiled: Option<Regex>,
}

impl Pattern {
    fn new(s: &str) -> std::result::Result<Pattern, String> {
        let template = Template::parse(s)?;
        let compiled = compile(&template.sample())?;
        Ok(Pattern {
            compiled: (!template.has_keys()).then_some(compiled),
            template,
        })
    }

    /// The regex for these facts; `Err(key)` names an unknown fact.
    pub fn regex(&self, facts: &super::facts::Facts) -> std::result::Result<Regex, String> {
        if let Some(r) = &self.compiled {
            return Ok(r.clone());
        }
        let s = self.template.fill(facts, Context::Regex)?;
        // The sample compiled; escaped values cannot break it, but stay total.
        compile(&s).map_err(|e| format!("regex: {e}"))
    }
}

/// Compiles a rule's pattern. The regex crate is built without its Unicode tables, so patterns
/// are ASCII-aware only: `\s`, `\w`, `\d`, `\b` and `(?i)` mean what they mean in the C
/// locale, `.` matches any byte but a newline (also in text that is not UTF-8), and a
/// non-ASCII literal matches its UTF-8 bytes; `\p{..}` and `(?u)` are refused by name.
pub(crate) fn compile(s: &str) -> std::result::Result<Regex, String> {
    RegexBuilder::new(s)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// What a step does to each file it names.
#[derive(Debug, Clone)]
pub enum Action {
    Replace {
        pattern: Pattern,
        with: Template,
        scope: Scope,
    },
    SetKey {
        key: String,
        value: SetValue,
        format: KeyFormat,
        /// INI section; `*` for every section.
        section: Option<String>,
        create: bool,
    },
    Comment {
        pattern: Pattern,
        prefix: String,
    },
    Uncomment {
        pattern: Pattern,
        prefix: String,
    },
    EnsureLine {
        lines: Vec<Template>,
        after: Option<Pattern>,
        matching: Option<Pattern>,
        create: bool,
    },
    Delete,
    Write {
        content: Template,
        attrs: Attrs,
        keep_existing: bool,
    },
    Symlink {
        target: Template,
        force: bool,
    },
    RewriteDevices {
        format: devices::Format,
    },
    Firstboot {
        name: String,
        script: Template,
        priority: u32,
    },
    Note {
        message: Template,
    },
    /// Kernel modules appended to an initramfs that lacks them (`fix::initramfs`).
    InitramfsModules {
        modules: Vec<String>,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Replace { .. } => "replace",
            Action::SetKey { .. } => "set-key",
            Action::Comment { .. } => "comment",
            Action::Uncomment { .. } => "uncomment",
            Action::EnsureLine { .. } => "ensure-line",
            Action::Delete => "delete",
            Action::Write { .. } => "write",
            Action::Symlink { .. } => "symlink",
            Action::RewriteDevices { .. } => "rewrite-devices",
            Action::Firstboot { .. } => "firstboot",
            Action::Note { .. } => "note",
            Action::InitramfsModules { .. } => "initramfs-add-modules",
        }
    }
}

/// One `[[edit]]` step.
#[derive(Debug, Clone)]
pub struct Edit {
    /// Line of the `[[edit]]` header in the rule file.
    pub line: usize,
    pub when: Option<Cond>,
    /// Guest paths; patterns allowed for actions that edit existing files.
    pub paths: Vec<String>,
    /// Only files whose contents match are edited.
    pub only_if: Option<Pattern>,
    pub action: Action,
}

/// A parsed, validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The rule file, as given (or `builtin:NAME.toml`).
    pub file: String,
    pub description: String,
    pub why: String,
    /// Runs only when named with `--enable` or `--only`.
    pub opt_in: bool,
    pub when: Cond,
    pub unless: Option<Cond>,
    pub edits: Vec<Edit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRule {
    name: Spanned<String>,
    description: Spanned<String>,
    why: Spanned<String>,
    #[serde(default)]
    opt_in: bool,
    when: Option<Spanned<RawWhen>>,
    unless: Option<Spanned<RawWhen>>,
    edit: Spanned<Vec<Spanned<RawEdit>>>,
}

type Strings = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWhen {
    os: Strings,
    distro: Strings,
    family: Strings,
    init: Strings,
    bootloader: Strings,
    source: Strings,
    target: Strings,
    exists: Strings,
    exists_any: Strings,
    missing: Strings,
    contains: Option<Vec<Spanned<RawMatch>>>,
    lacks: Option<Vec<Spanned<RawMatch>>>,
    every: Option<Vec<Spanned<RawMatch>>>,
    xen_pv_only: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    path: Spanned<String>,
    regex: Spanned<String>,
}

type Str = Option<Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEdit {
    action: Spanned<String>,
    path: Str,
    paths: Strings,
    when: Option<Spanned<RawWhen>>,
    only_if: Str,
    pattern: Str,
    with: Str,
    scope: Str,
    key: Str,
    value: Str,
    add_words: Strings,
    remove_words: Strings,
    format: Str,
    section: Str,
    create: Option<Spanned<bool>>,
    line: Str,
    lines: Strings,
    after: Str,
    matching: Str,
    prefix: Str,
    content: Str,
    mode: Str,
    owner: Str,
    if_exists: Str,
    target: Str,
    force: Option<Spanned<bool>>,
    name: Str,
    script: Str,
    priority: Option<Spanned<u32>>,
    message: Str,
    modules: Strings,
}

impl RawEdit {
    /// The action-specific fields present, with their positions.
    fn present(&self) -> Vec<(&'static str, usize)> {
        let mut v = Vec::new();
        macro_rules! f {
            ($($field:ident => $name:literal),+) => {
                $(if let Some(x) = &self.$field { v.push(($name, x.span().start)); })+
            };
        }
        f!(pattern => "pattern", with => "with", scope => "scope", key => "key", value => "value",
           add_words => "add-words", remove_words => "remove-words", format => "format",
           section => "section", create => "create", line => "line", lines => "lines",
           after => "after", matching => "matching", prefix => "prefix", content => "content",
           mode => "mode", owner => "owner", if_exists => "if-exists", target => "target",
           force => "force", name => "name", script => "script", priority => "priority",
           message => "message", modules => "modules");
        v
    }
}

/// One action kind: the fields it accepts beyond `action`, `when` and the path fields, the
/// paths it takes, and the validator that turns its fields into an [`Action`]. Keeping the
/// three together means a new action cannot be accepted by name and forgotten by the parser.
struct ActionKind {
    name: &'static str,
    fields: &'static [&'static str],
    paths: Paths,
    build: fn(&Parser<'_>, &Step<'_>) -> Result<Action>,
}

const ACTIONS: &[ActionKind] = &[
    ActionKind {
        name: "replace",
        fields: &["pattern", "with", "scope"],
        paths: Paths::Patterns,
        build: |p, s| p.replace(s),
    },
    ActionKind {
        name: "set-key",
        fields: &[
            "key",
            "value",
            "add-words",
            "remove-words",
            "format",
            "section",
            "create",
        ],
        paths: Paths::Patterns,
        build: |p, s| p.set_key(s),
    },
    ActionKind {
        name: "comment",
        fields: &["pattern", "prefix"],
        paths: Paths::Patterns,
        build: |p, s| p.comment(s),
    },
    ActionKind {
        name: "uncomment",
        fields: &["pattern", "prefix"],
        paths: Paths::Patterns,
        build: |p, s| p.uncomment(s),
    },
    ActionKind {
        name: "ensure-line",
        fields: &["line", "lines", "after", "matching", "create"],
        paths: Paths::Patterns,
        build: |p, s| p.ensure_line(s),
    },
    ActionKind {
        name: "delete",
        fields: &[],
        paths: Paths::Patterns,
        build: |_, _| Ok(Action::Delete),
    },
    ActionKind {
        name: "write",
        fields: &["content", "mode", "owner", "if-exists"],
        paths: Paths::Literal,
        build: |p, s| p.write(s),
    },
    ActionKind {
        name: "symlink",
        fields: &["target", "force"],
        paths: Paths::Literal,
        build: |p, s| p.symlink(s),
    },
    ActionKind {
        name: "rewrite-devices",
        fields: &["format"],
        paths: Paths::Patterns,
        build: |p, s| p.rewrite_devices(s),
    },
    ActionKind {
        name: "firstboot",
        fields: &["name", "script", "priority"],
        paths: Paths::None,
        build: |p, s| p.firstboot(s),
    },
    ActionKind {
        name: "note",
        fields: &["message"],
        paths: Paths::None,
        build: |p, s| p.note(s),
    },
    ActionKind {
        name: "initramfs-add-modules",
        fields: &["modules"],
        paths: Paths::Patterns,
        build: |p, s| p.initramfs_modules(s),
    },
];

/// The step a validator reads: its raw fields, where its `[[edit]]` starts (an error about a
/// missing field points there) and its action's name (for messages).
struct Step<'e> {
    raw: &'e RawEdit,
    at: usize,
    action: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// Paths may hold shell patterns.
    Patterns,
    /// Exact paths (the file may not exist yet).
    Literal,
    /// The action takes no path.
    None,
}

/// Parses and validates one rule file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Rule> {
    let raw: RawRule = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
    let p = Parser { file, text };
    let name = raw.name.get_ref();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(p.err(
            raw.name.span().start,
            "name",
            "a rule name is 1-64 lowercase letters, digits and `-`",
        ));
    }
    for (f, v) in [("description", &raw.description), ("why", &raw.why)] {
        if v.get_ref().trim().is_empty() {
            return Err(p.err(v.span().start, f, "must say something"));
        }
    }
    let when = match &raw.when {
        Some(w) => p.cond(w.get_ref(), "when")?,
        None => Cond::default(),
    };
    let unless = match &raw.unless {
        Some(w) => Some(p.cond(w.get_ref(), "unless")?),
        None => None,
    };
    let edits = raw.edit.get_ref();
    if edits.is_empty() || edits.len() > MAX_EDITS {
        return Err(p.err(
            raw.edit.span().start,
            "edit",
            &format!("a rule has 1 to {MAX_EDITS} [[edit]] steps"),
        ));
    }
    let edits = edits
        .iter()
        .map(|e| p.edit(e))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rule {
        name: name.clone(),
        file: file.to_string(),
        description: raw.description.into_inner().trim().to_string(),
        why: raw.why.into_inner().trim().to_string(),
        opt_in: raw.opt_in,
        when,
        unless,
        edits,
    })
}

/// Reads every `*.toml` in `dir` (sorted by name).
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>> {
    let shown = dir.display().to_string();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(&shown, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    let mut rules: Vec<Rule> = Vec::new();
    for path in names {
        let file = path.display().to_string();
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&file, e))?;
        if meta.len() > MAX_RULE_FILE {
            return Err(Error::Schema {
                file,
                line: 1,
                field: "(file)".into(),
                message: format!(
                    "{} bytes; a rule file is at most {MAX_RULE_FILE}",
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&file, e))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Schema {
            file: file.clone(),
            line: lines_in(&e.as_bytes()[..e.utf8_error().valid_up_to()]),
            field: "(file)".into(),
            message: "not UTF-8 text".into(),
        })?;
        let rule = parse(&file, &text)?;
        if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
            return Err(Error::DuplicateRule {
                file,
                name: rule.name,
                other: other.file.clone(),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    lines_in(&text.as_bytes()[..offset.min(text.len())])
}

/// The 1-based line the end of `head` is on: its newlines plus one.
fn lines_in(head: &[u8]) -> usize {
    head.split(|b| *b == b'\n').count()
}

/// Turns a TOML/serde error into a schema error with line and field.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let msg = e.message().trim().to_string();
    let offset = e.span().map_or(0, |s| s.start);
    let line = line_of(text, offset);
    // serde names unknown and missing fields in backquotes; otherwise take the key the
    // offending value belongs to from the line itself.
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|r| r.split('`').next())
        .map(str::to_string);
    let field = named.unwrap_or_else(|| {
        let l = line
            .checked_sub(1)
            .and_then(|i| text.lines().nth(i))
            .unwrap_or("");
        let l = l.trim();
        if l.starts_with('[') {
            l.trim_matches(|c| c == '[' || c == ']').trim().to_string()
        } else {
            l.split('=').next().unwrap_or("").trim().to_string()
        }
    });
    Error::Schema {
        file: file.to_string(),
        line,
        field: if field.is_empty() {
            "(syntax)".into()
        } else {
            field
        },
        message: msg,
    }
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
}

impl Parser<'_> {
    fn err(&self, offset: usize, field: &str, message: &str) -> Error {
        Error::Schema {
            file: self.file.to_string(),
            line: line_of(self.text, offset),
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    fn pattern(&self, s: &Spanned<String>, field: &str) -> Result<Pattern> {
        Pattern::new(s.get_ref()).map_err(|m| self.err(s.span().start, field, &m))
    }

    fn template(&self, s: &Spanned<String>, field: &str) -> Result<Template> {
        Template::parse(s.get_ref()).map_err(|m| self.err(s.span().start, field, &m))
    }

    fn path(&self, s: &Spanned<String>, field: &str, patterns: bool) -> Result<String> {
        let p = s.get_ref();
        let bad = |m: &str| self.err(s.span().start, field, &format!("`{p}`: {m}"));
        if !p.starts_with('/') || p.contains('\0') {
            return Err(bad("a guest path is absolute"));
        }
        if p.len() > 4096 {
            return Err(bad("longer than PATH_MAX"));
        }
        let comps: Vec<&str> = p[1..].split('/').collect();
        if comps
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
        {
            return Err(bad(
                "no empty, `.` or `..` components (a rule names files plainly)",
            ));
        }
        if !patterns && comps.iter().any(|c| glob::is_pattern(c)) {
            return Err(bad("this action needs an exact path, not a pattern"));
        }
        if comps.iter().any(|c| glob::posix_subexpression(c)) {
            return Err(bad(
                "POSIX classes such as `[[:digit:]]` are not supported in patterns: write `[0-9]`",
            ));
        }
        Ok(p.clone())
    }

    fn names<T: std::str::FromStr<Err = String>>(
        &self,
        v: &Strings,
        field: &str,
    ) -> Result<Vec<T>> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.get_ref()
            .iter()
            .map(|s| {
                s.get_ref()
                    .parse()
                    .map_err(|m: String| self.err(s.span().start, field, &m))
            })
            .collect()
    }

    fn specs(&self, v: &Strings, field: &str) -> Result<Vec<NameSpec>> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.get_ref()
            .iter()
            .map(|s| NameSpec::parse(s.get_ref()).map_err(|m| self.err(s.span().start, field, &m)))
            .collect()
    }

    fn paths(&self, v: &Strings, field: &str) -> Result<Vec<String>> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.get_ref()
            .iter()
            .map(|s| self.path(s, field, true))
            .collect()
    }

    fn matches(&self, v: &Option<Vec<Spanned<RawMatch>>>, field: &str) -> Result<Vec<FileMatch>> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.iter()
            .map(|m| {
                let m = m.get_ref();
                Ok(FileMatch {
                    path: self.path(&m.path, &format!("{field}.path"), true)?,
                    regex: compile(m.regex.get_ref()).map_err(|e| {
                        self.err(m.regex.span().start, &format!("{field}.regex"), &e)
                    })?,
                })
            })
            .collect()
    }

    fn cond(&self, w: &RawWhen, table: &str) -> Result<Cond> {
        let f = |n: &str| format!("{table}.{n}");
        Ok(Cond {
            os: self.names::<Os>(&w.os, &f("os"))?,
            distro: self.specs(&w.distro, &f("distro"))?,
            family: self.specs(&w.family, &f("family"))?,
            init: self.names::<InitSystem>(&w.init, &f("init"))?,
            bootloader: self.names::<Bootloader>(&w.bootloader, &f("bootloader"))?,
            source: self.names::<Hypervisor>(&w.source, &f("source"))?,
            target: self.names::<Target>(&w.target, &f("target"))?,
            exists: self.paths(&w.exists, &f("exists"))?,
            exists_any: self.paths(&w.exists_any, &f("exists-any"))?,
            missing: self.paths(&w.missing, &f("missing"))?,
            contains: self.matches(&w.contains, &f("contains"))?,
            lacks: self.matches(&w.lacks, &f("lacks"))?,
            every: self.matches(&w.every, &f("every"))?,
            xen_pv_only: w.xen_pv_only,
        })
    }

    /// A field the action cannot do without.
    fn required<'b, T>(
        &self,
        s: &Step<'_>,
        v: &'b Option<Spanned<T>>,
        field: &str,
    ) -> Result<&'b Spanned<T>> {
        v.as_ref().ok_or_else(|| {
            self.err(
                s.at,
                field,
                &format!("action `{}` needs `{field}`", s.action),
            )
        })
    }

    /// A field that names one of `choices`; `None` when absent.
    fn choice<T: Copy>(&self, v: &Str, field: &str, choices: &[(&str, T)]) -> Result<Option<T>> {
        let Some(v) = v else { return Ok(None) };
        let given = v.get_ref().as_str();
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == given) {
            return Ok(Some(*t));
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("`{n}`")).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        Err(self.err(
            v.span().start,
            field,
            &format!("`{given}`: expected {expected}"),
        ))
    }

    /// Validates one `[[edit]]`: the action and the fields it accepts, its paths, its
    /// conditions, then the action's own fields (in that order, so the first error a user
    /// sees is the most general one).
    fn edit(&self, e: &Spanned<RawEdit>) -> Result<Edit> {
        let raw = e.get_ref();
        let kind = self.action_kind(raw)?;
        let step = Step {
            raw,
            at: e.span().start,
            action: kind.name,
        };
        let paths = self.edit_paths(&step, kind.paths)?;
        let when = match &raw.when {
            Some(w) => Some(self.cond(w.get_ref(), "edit.when")?),
            None => None,
        };
        let only_if = match &raw.only_if {
            Some(s) if kind.paths == Paths::Patterns => Some(self.pattern(s, "only-if")?),
            Some(s) => {
                return Err(self.err(
                    s.span().start,
                    "only-if",
                    &format!("not a field of action `{}`", kind.name),
                ))
            }
            None => None,
        };
        let action = (kind.build)(self, &step)?;
        Ok(Edit {
            line: line_of(self.text, step.at),
            when,
            paths,
            only_if,
            action,
        })
    }

    /// The step's action, once it is known and every field present is one it accepts.
    fn action_kind(&self, e: &RawEdit) -> Result<&'static ActionKind> {
        let action = e.action.get_ref().as_str();
        let Some(kind) = ACTIONS.iter().find(|k| k.name == action) else {
            let names: Vec<&str> = ACTIONS.iter().map(|k| k.name).collect();
            return Err(self.err(
                e.action.span().start,
                "action",
                &format!(
                    "unknown action `{action}`, expected one of: {}",
                    names.join(", ")
                ),
            ));
        };
        for (field, pos) in e.present() {
            if !kind.fields.contains(&field) {
                return Err(self.err(pos, field, &format!("not a field of action `{action}`")));
            }
        }
        Ok(kind)
    }

    /// The step's `path` and `paths`, checked against what its action takes.
    fn edit_paths(&self, s: &Step<'_>, kind: Paths) -> Result<Vec<String>> {
        let e = s.raw;
        let mut paths = Vec::new();
        let patterns = kind == Paths::Patterns;
        if let Some(p) = &e.path {
            paths.push(self.path(p, "path", patterns)?);
        }
        if let Some(ps) = &e.paths {
            if ps.get_ref().len() > MAX_PATHS {
                return Err(self.err(
                    ps.span().start,
                    "paths",
                    &format!("at most {MAX_PATHS} paths"),
                ));
            }
            for p in ps.get_ref() {
                paths.push(self.path(p, "paths", patterns)?);
            }
        }
        let action = s.action;
        match kind {
            Paths::None => {
                if let Some(pos) = e
                    .path
                    .as_ref()
                    .map(|p| p.span().start)
                    .or(e.paths.as_ref().map(|p| p.span().start))
                {
                    return Err(self.err(pos, "path", &format!("action `{action}` takes no path")));
                }
            }
            _ if paths.is_empty() => {
                return Err(self.err(
                    s.at,
                    "path",
                    &format!("action `{action}` needs `path` or `paths`"),
                ))
            }
            Paths::Literal if paths.len() > 1 => {
                return Err(self.err(
                    s.at,
                    "paths",
                    &format!("action `{action}` takes one `path`"),
                ))
            }
            _ => {}
        }
        Ok(paths)
    }

    fn replace(&self, s: &Step<'_>) -> Result<Action> {
        let e = s.raw;
        let pattern = self.required(s, &e.pattern, "pattern")?;
        let with = self.required(s, &e.with, "with")?;
        let scope = self
            .choice(
                &e.scope,
                "scope",
                &[("line", Scope::Line), ("file", Scope::File)],
            )?
            .unwrap_or(Scope::Line);
        let pattern = self.pattern(pattern, "pattern")?;
        if scope == Scope::Line && pattern.template.sample().contains("\\n") {
            return Err(self.err(
                s.at,
                "pattern",
                "a per-line pattern cannot match a newline; use scope = \"file\"",
            ));
        }
        Ok(Action::Replace {
            pattern,
            with: self.template(with, "with")?,
            scope,
        })
    }

    fn set_key(&self, s: &Step<'_>) -> Result<Action> {
        let e = s.raw;
        let key = self.required(s, &e.key, "key")?;
        if key.get_ref().is_empty()
            || !key
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(self.err(
                key.span().start,
                "key",
                "a key is letters, digits, `_`, `.` and `-`",
            ));
        }
        let format = self
            .choice(
                &e.format,
                "format",
                &[
                    ("shell", KeyFormat::Shell),
                    ("kv", KeyFormat::Kv),
                    ("ini", KeyFormat::Ini),
                ],
            )?
            .unwrap_or(KeyFormat::Shell);
        if let Some(sec) = &e.section {
            if format != KeyFormat::Ini {
                return Err(self.err(sec.span().start, "section", "only for format = \"ini\""));
            }
        }
        let value = match (&e.value, e.add_words.is_some() || e.remove_words.is_some()) {
            (Some(v), false) => SetValue::To(self.template(v, "value")?),
            (None, true) => SetValue::Words {
                add: self.words(&e.add_words, "add-words")?,
                remove: self.words(&e.remove_words, "remove-words")?,
            },
            (Some(v), true) => {
                return Err(self.err(
                    v.span().start,
                    "value",
                    "either `value` or `add-words`/`remove-words`, not both",
                ))
            }
            (None, false) => {
                return Err(self.err(
                    s.at,
                    "value",
                    "action `set-key` needs `value` or `add-words`/`remove-words`",
                ))
            }
        };
        Ok(Action::SetKey {
            key: key.get_ref().clone(),
            value,
            format,
            section: e.section.as_ref().map(|s| s.get_ref().clone()),
            create: e.create.as_ref().is_none_or(|c| *c.get_ref()),
        })
    }

    /// The words of `add-words`/`remove-words`: set-key writes them unquoted into shell-like
    /// files, so nothing in them may need quoting.
    fn words(&self, v: &Strings, field: &str) -> Result<Vec<String>> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.get_ref()
            .iter()
            .map(|w| {
                let s = w.get_ref();
                if s.is_empty()
                    || s.chars()
                        .any(|c| c.is_whitespace() || "\"'\\$`".contains(c))
                {
                    Err(self.err(
                        w.span().start,
                        field,
                        "a word has no blanks or shell quoting characters",
                    ))
                } else {
                    Ok(s.clone())
                }
            })
            .collect()
    }

    /// The pattern and prefix that `comment` and `uncomment` share.
    fn comment_fields(&self, s: &Step<'_>) -> Result<(Pattern, String)> {
        let pattern = self.pattern(self.required(s, &s.raw.pattern, "pattern")?, "pattern")?;
        let prefix = match &s.raw.prefix {
            Some(p) if p.get_ref().is_empty() || p.get_ref().contains('\n') => {
                return Err(self.err(
                    p.span().start,
                    "prefix",
                    "a comment prefix is a non-empty string on one line",
                ))
            }
            Some(p) => p.get_ref().clone(),
            None => "#".into(),
        };
        Ok((pattern, prefix))
    }

    fn comment(&self, s: &Step<'_>) -> Result<Action> {
        let (pattern, prefix) = self.comment_fields(s)?;
        Ok(Action::Comment { pattern, prefix })
    }

    fn uncomment(&self, s: &Step<'_>) -> Result<Action> {
        let (pattern, prefix) = self.comment_fields(s)?;
        Ok(Action::Uncomment { pattern, prefix })
    }

    fn ensure_line(&self, s: &Step<'_>) -> Result<Action> {
        let e = s.raw;
        let mut lines = Vec::new();
        if let Some(l) = &e.line {
            lines.push(l);
        }
        if let Some(ls) = &e.lines {
            lines.extend(ls.get_ref().iter());
        }
        if lines.is_empty() {
            return Err(self.err(s.at, "line", "action `ensure-line` needs `line` or `lines`"));
        }
        let lines = lines
            .into_iter()
            .map(|l| {
                if l.get_ref().contains('\n') {
                    Err(self.err(l.span().start, "line", "one line, without a newline"))
                } else {
                    self.template(l, "line")
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Action::EnsureLine {
            lines,
            after: e
                .after
                .as_ref()
                .map(|a| self.pattern(a, "after"))
                .transpose()?,
            matching: e
                .matching
                .as_ref()
                .map(|a| self.pattern(a, "matching"))
                .transpose()?,
            create: e.create.as_ref().is_some_and(|c| *c.get_ref()),
        })
    }

    fn write(&self, s: &Step<'_>) -> Result<Action> {
        let e = s.raw;
        let content = self.template(self.required(s, &e.content, "content")?, "content")?;
        let mode = match &e.mode {
            Some(m) => u32::from_str_radix(m.get_ref(), 8)
                .ok()
                .filter(|v| *v <= 0o7777 && !m.get_ref().is_empty())
                .ok_or_else(|| {
                    self.err(m.span().start, "mode", "an octal mode such as \"0644\"")
                })?,
            None => 0o644,
        };
        let (uid, gid) = match &e.owner {
            Some(o) => parse_owner(o.get_ref()).ok_or_else(|| {
                self.err(o.span().start, "owner", "`UID:GID` in numbers, or `root`")
            })?,
            None => (0, 0),
        };
        let keep_existing = self
            .choice(
                &e.if_exists,
                "if-exists",
                &[("replace", false), ("keep", true)],
            )?
            .unwrap_or(false);
        Ok(Action::Write {
            content,
            attrs: Attrs { mode, uid, gid },
            keep_existing,
        })
    }

    fn symlink(&self, s: &Step<'_>) -> Result<Action> {
        let t = self.required(s, &s.raw.target, "target")?;
        if t.get_ref().is_empty() || t.get_ref().contains('\0') {
            return Err(self.err(
                t.span().start,
                "target",
                "a symlink target is a non-empty path",
            ));
        }
        Ok(Action::Symlink {
            target: self.template(t, "target")?,
            force: s.raw.force.as_ref().is_some_and(|f| *f.get_ref()),
        })
    }

    fn rewrite_devices(&self, s: &Step<'_>) -> Result<Action> {
        let f = self.required(s, &s.raw.format, "format")?;
        let format = devices::Format::parse(f.get_ref()).ok_or_else(|| {
            self.err(
                f.span().start,
                "format",
                &format!(
                    "`{}`: expected one of: {}",
                    f.get_ref(),
                    devices::Format::NAMES.join(", ")
                ),
            )
        })?;
        Ok(Action::RewriteDevices { format })
    }

    fn firstboot(&self, s: &Step<'_>) -> Result<Action> {
        let e = s.raw;
        let n = self.required(s, &e.name, "name")?;
        if n.get_ref().is_empty()
            || n.get_ref().len() > 60
            || !n
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(n.span().start, "name", "1-60 letters, digits, `-` and `_`"));
        }
        let priority = match &e.priority {
            Some(p) if *p.get_ref() > MAX_PRIORITY => {
                return Err(self.err(p.span().start, "priority", &format!("0 to {MAX_PRIORITY}")))
            }
            Some(p) => *p.get_ref(),
            None => 5000,
        };
        Ok(Action::Firstboot {
            name: n.get_ref().clone(),
            script: self.template(self.required(s, &e.script, "script")?, "script")?,
            priority,
        })
    }

    fn note(&self, s: &Step<'_>) -> Result<Action> {
        Ok(Action::Note {
            message: self.template(self.required(s, &s.raw.message, "message")?, "message")?,
        })
    }

    fn initramfs_modules(&self, s: &Step<'_>) -> Result<Action> {
        let m = self.required(s, &s.raw.modules, "modules")?;
        let modules: Vec<String> = m.get_ref().iter().map(|s| s.get_ref().clone()).collect();
        if let Some(bad) = modules.iter().find(|n| {
            n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }) {
            return Err(self.err(
                m.span().start,
                "modules",
                &format!("`{bad}` is not a kernel module name"),
            ));
        }
        Ok(Action::InitramfsModules { modules })
    }
}

fn parse_owner(s: &str) -> Option<(u32, u32)> {
    if s == "root" || s == "root:root" {
        return Some((0, 0));
    }
    let (u, g) = s.split_once(':')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns are ASCII-aware over bytes, as `compile` says, and Unicode classes are refused
    /// with a message that names them.
    #[test]
    fn patterns_are_ascii_over_bytes() {
        let m = |re: &str, text: &[u8]| compile(re).unwrap().is_match(text);
        assert!(m(r"^\s*exit\s+0\b", b"  exit\t0"));
        assert!(!m(r"^\s*exit\s+0\b", b"exit 00"));
        assert!(m(r"(?i)^ROOT=", b"root=/dev/sda1"));
        // `.` matches bytes that are not UTF-8 (a Latin-1 comment), \w only ASCII letters.
        assert!(m(r"^# caf.$", b"# caf\xe9"));
        assert!(!m(r"^\w+$", "café".as_bytes()));
        assert!(m(r"caf\w", b"cafe"));
        // A non-ASCII literal matches its UTF-8 encoding.
        assert!(m("café", "un café".as_bytes()));
        for unicode in [r"\p{Greek}", r"(?u)\w"] {
            let e = compile(unicode).unwrap_err();
            assert!(e.to_lowercase().contains("unicode"), "{unicode}: {e}");
        }
    }

    fn schema(text: &str) -> (usize, String, String) {
        match parse("t.toml", text) {
            Err(Error::Schema {
                line,
                field,
                message,
                ..
            }) => (line, field, message),
            other => panic!("expected a schema error, got {other:?}"),
        }
    }

    const HEAD: &str = "name = \"x\"\ndescription = \"d\"\nwhy = \"w\"\n";

    #[test]
    fn minimal_rule() {
        let r = parse(
            "t.toml",
            &format!("{HEAD}[[edit]]\naction = \"delete\"\npath = \"/etc/x\"\n"),
        )
        .unwrap();
        assert_eq!(r.edits.len(), 1);
        assert_eq!(r.edits[0].line, 4);
    }

    #[test]
    fn errors_name_line_and_field() {
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"delete\"\npath = \"/etc/x\"\nbogus = 1\n"
        ));
        assert_eq!((l, f.as_str()), (7, "bogus"));
        let (l, f, m) = schema(&format!("{HEAD}[[edit]]\naction = \"replace\"\npath = \"/etc/x\"\npattern = \"(\"\nwith = \"\"\n"));
        assert_eq!((l, f.as_str()), (7, "pattern"), "{m}");
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"frobnicate\"\npath = \"/x\"\n"
        ));
        assert_eq!((l, f.as_str()), (5, "action"));
        let (l, f, _) = schema(&format!(
            "{HEAD}[when]\ninit = [\"systemdd\"]\n[[edit]]\naction = \"delete\"\npath = \"/x\"\n"
        ));
        assert_eq!((l, f.as_str()), (5, "when.init"));
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"delete\"\npath = \"/x\"\nwith = \"y\"\n"
        ));
        assert_eq!((l, f.as_str()), (7, "with"));
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"write\"\npath = \"/etc/*\"\ncontent = \"\"\n"
        ));
        assert_eq!((l, f.as_str()), (6, "path"));
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"delete\"\npath = \"/etc/../../x\"\n"
        ));
        assert_eq!((l, f.as_str()), (6, "path"));
        let (l, f, m) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"delete\"\npath = \"/etc/rc[[:digit:]].d/x\"\n"
        ));
        assert_eq!((l, f.as_str()), (6, "path"), "{m}");
        assert!(m.contains("POSIX classes"), "{m}");
        let (l, f, _) = schema("name = \"x\"\ndescription = \"d\"\nwhy = 3\n[[edit]]\naction = \"delete\"\npath = \"/x\"\n");
        assert_eq!((l, f.as_str()), (3, "why"));
        let (_, f, _) = schema(
            "name = \"x\"\ndescription = \"d\"\n[[edit]]\naction = \"delete\"\npath = \"/x\"\n",
        );
        assert_eq!(f, "why");
        let (l, f, _) = schema(&format!(
            "{HEAD}[[edit]]\naction = \"note\"\nmessage = \"{{{{nope}}}}\"\n"
        ));
        assert_eq!((l, f.as_str()), (6, "message"));
    }
}
