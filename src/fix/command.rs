//! `ferry fix` as a library call: the options, the rule set, and a run on a directory or
//! on images that returns what it found and did (the CLI in the binary prints it).

use super::engine::{self, Plan, Selection};
use super::error::{Error, Result};
use super::facts::Facts;
use super::host::HostTree;
use super::rule::{self, Rule};
use super::{detect, standard};
use crate::fs::files::FileTree;
use std::path::{Path, PathBuf};

/// What `ferry fix` is asked to do (the CLI fills it from its arguments).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The guest: one root directory, or its disk images (edited in process through
    /// overlays).
    pub targets: Vec<PathBuf>,
    /// For images: the overlay of the image in the same position, instead of
    /// NAME-overlay.qcow2 beside it.
    pub overlay: Vec<PathBuf>,
    /// For images: the device of the `/` of the operating system to fix.
    pub root: Option<String>,
    /// A facts file (JSON, or TOML by its name) merged over what is detected.
    pub facts: Option<PathBuf>,
    /// Rule directories added to the standard set (a rule of the same name replaces it).
    pub rules: Vec<PathBuf>,
    /// Leave out the standard rule set.
    pub no_standard: bool,
    /// The rule selection.
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub enable: Vec<String>,
    /// Plan only: change nothing (images are opened read-only, no overlay is made).
    pub dry_run: bool,
    /// Only gather the facts the rules would see.
    pub show_facts: bool,
}

/// The rule set: the standard rules unless left out, then each --rules directory (a rule
/// of the same name replaces the earlier one in place).
pub fn load_rules(opts: &Options) -> Result<Vec<Rule>> {
    let mut rules = if opts.no_standard {
        Vec::new()
    } else {
        standard::rules()?
    };
    for dir in &opts.rules {
        for r in rule::load_dir(dir)? {
            match rules.iter_mut().find(|x| x.name == r.name) {
                Some(slot) => *slot = r,
                None => rules.push(r),
            }
        }
    }
    for name in opts.only.iter().chain(&opts.skip).chain(&opts.enable) {
        if !rules.iter().any(|r| r.name == *name) {
            return Err(Error::UnknownRule(name.clone()));
        }
    }
    Ok(rules)
}

/// Detected facts, then what a ferry mount published for the target, then --facts.
pub fn load_facts(tree: &HostTree, target: &Path, opts: &Options) -> Result<Facts> {
    let mut facts = detect::detect(tree);
    if let Some(published) = super::facts::load_published(target)? {
        let file = super::facts::published_path(target).display().to_string();
        facts = facts
            .merge_value(published)
            .map_err(|message| Error::Facts { file, message })?;
    }
    if let Some(f) = &opts.facts {
        facts = super::facts::merge_file(facts, f)?;
    }
    Ok(facts)
}

/// What a run found and did.
#[derive(Debug)]
pub struct Report {
    /// The guest, as the user named it (with the root device for images).
    pub target: String,
    pub dry_run: bool,
    /// The facts the rules saw.
    pub facts: Facts,
    /// The plan (applied unless a dry run); None when only the facts were asked for.
    pub plan: Option<Plan>,
}

impl Report {
    /// A dry run found changes to make: `ferry fix` exits 2, so that a script can tell
    /// "would change" from "nothing to do".
    pub fn pending(&self) -> bool {
        self.dry_run && self.plan.as_ref().is_some_and(|p| !p.is_empty())
    }
}

/// Runs `ferry fix` with `rules` (from [`load_rules`]) on a directory or on images.
pub fn run(opts: &Options, rules: &[Rule]) -> Result<Report> {
    if let Some(both) = opts.only.iter().find(|n| opts.skip.contains(n)) {
        return Err(Error::Usage(format!(
            "rule `{both}` is given to both --only and --skip"
        )));
    }
    match opts.targets.as_slice() {
        [dir] if dir.is_dir() => {
            if !opts.overlay.is_empty() || opts.root.is_some() {
                return Err(Error::Usage(
                    "--overlay and --root are for images; a directory is edited as it is".into(),
                ));
            }
            let tree = HostTree::new(dir)?;
            if tree.lstat("/etc")?.is_none() {
                return Err(Error::Usage(format!(
                    "no operating system found in {} (it has no /etc): give the guest's root \
                     directory or its disk images",
                    dir.display()
                )));
            }
            let facts = load_facts(&tree, dir, opts)?;
            fix_tree(&tree, &dir.display().to_string(), facts, rules, opts)
        }
        [] => Err(Error::Usage(
            "give the guest's root directory or its disk images".into(),
        )),
        images => super::image::run(images, rules, opts),
    }
}

/// Plans the rules over `tree` with `facts` and applies them unless a dry run.
pub fn fix_tree(
    tree: &dyn FileTree,
    target: &str,
    facts: Facts,
    rules: &[Rule],
    opts: &Options,
) -> Result<Report> {
    let mut report = Report {
        target: target.to_string(),
        dry_run: opts.dry_run,
        facts,
        plan: None,
    };
    if opts.show_facts {
        return Ok(report);
    }
    let sel = Selection {
        only: opts.only.clone(),
        skip: opts.skip.clone(),
        enable: opts.enable.clone(),
    };
    let plan = engine::plan(tree, rules, &report.facts, &sel)?;
    if !opts.dry_run {
        plan.apply(tree)?;
    }
    report.plan = Some(plan);
    Ok(report)
}
