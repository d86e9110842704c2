//! `ferry fix`: the arguments and the command, kept here so the binary's `main.rs` only
//! names them.

use super::engine::{self, Plan, Selection, Status};
use super::error::{FixError, Result};
use super::facts::Facts;
use super::host::HostTree;
use super::rule::{self, Rule};
use super::{detect, standard};
use crate::fs::files::FileTree;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Fix a guest so it boots on KVM: plan the rules, show or apply the edits, report.
#[derive(clap::Args, Debug, Clone)]
pub struct FixArgs {
    /// The guest: its root directory (a ferry mountpoint or any directory holding its
    /// files), or its disk images, edited in process through an overlay (no FUSE).
    #[arg(required_unless_present = "list", value_name = "DIR | IMAGE...")]
    pub targets: Vec<PathBuf>,
    /// For images: the overlay of the image in the same position (repeatable), instead of
    /// NAME-overlay.qcow2 beside it (continued if it exists). An image that is itself an
    /// overlay is written in place.
    #[arg(long, value_name = "PATH")]
    pub overlay: Vec<PathBuf>,
    /// For images: the operating system to fix when the disks hold several (the device of
    /// its /).
    #[arg(long, value_name = "DEVICE")]
    pub root: Option<String>,
    /// Facts about the guest (JSON, or TOML if the name ends in .toml), overriding or
    /// adding to what ferry detects (e.g. the device map with UUIDs).
    #[arg(long, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// A directory of rule files (*.toml) added to the standard set; a rule named like a
    /// standard one replaces it. Repeatable.
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Leave out the standard rule set (use only --rules).
    #[arg(long)]
    pub no_standard: bool,
    /// Run only this rule (repeatable); names opt-in rules too.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Do not run this rule (repeatable).
    #[arg(long, value_name = "NAME")]
    pub skip: Vec<String>,
    /// Run this opt-in rule as well (repeatable).
    #[arg(long, value_name = "NAME")]
    pub enable: Vec<String>,
    /// Show the edits as a unified diff; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report (and in --dry-run the diff) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Output format, as qemu-img's --output: human (the default) or json (as --json).
    #[arg(long = "output", value_name = "FORMAT", value_parser = ["human", "json"])]
    pub output: Option<String>,
    /// List the rules with their descriptions and exit.
    #[arg(long)]
    pub list: bool,
    /// Print the facts the rules would see and exit.
    #[arg(long)]
    pub show_facts: bool,
}

/// The rule set: the standard rules unless left out, then each --rules directory (a rule
/// of the same name replaces the earlier one in place).
pub fn load_rules(args: &FixArgs) -> Result<Vec<Rule>> {
    let mut rules = if args.no_standard {
        Vec::new()
    } else {
        standard::rules()?
    };
    for dir in &args.rules {
        for r in rule::load_dir(dir)? {
            match rules.iter_mut().find(|x| x.name == r.name) {
                Some(slot) => *slot = r,
                None => rules.push(r),
            }
        }
    }
    for name in args.only.iter().chain(&args.skip).chain(&args.enable) {
        if !rules.iter().any(|r| r.name == *name) {
            return Err(FixError::UnknownRule(name.clone()));
        }
    }
    Ok(rules)
}

/// Detected facts, then what a ferry mount published for the target, then --facts.
pub fn load_facts(tree: &HostTree, target: &Path, args: &FixArgs) -> Result<Facts> {
    let mut facts = detect::detect(tree);
    if let Some(published) = super::facts::load_published(target)? {
        let file = super::facts::published_path(target).display().to_string();
        facts = facts
            .merge_value(published)
            .map_err(|message| FixError::Facts { file, message })?;
    }
    if let Some(f) = &args.facts {
        facts = super::facts::merge_file(facts, f)?;
    }
    Ok(facts)
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    target: String,
    dry_run: bool,
    changed: bool,
    facts: &'a Facts,
    rules: &'a [engine::RuleReport],
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// How a run ended, for the exit status: a dry run with changes pending exits 2, so that a
/// script can tell "would change" from "nothing to do".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or nothing to do.
    Done,
    /// A dry run found changes to make.
    Pending,
}

/// Runs `ferry fix` on a directory or on images.
pub fn run(args: FixArgs) -> Result<Outcome> {
    let rules = load_rules(&args)?;
    if let Some(both) = args.only.iter().find(|n| args.skip.contains(n)) {
        return Err(FixError::Usage(format!(
            "rule `{both}` is given to both --only and --skip"
        )));
    }
    if args.list {
        list(&rules)?;
        return Ok(Outcome::Done);
    }
    match args.targets.as_slice() {
        [dir] if dir.is_dir() => {
            if !args.overlay.is_empty() || args.root.is_some() {
                return Err(FixError::Usage(
                    "--overlay and --root are for images; a directory is edited as it is".into(),
                ));
            }
            let tree = HostTree::new(dir)?;
            if tree.lstat("/etc")?.is_none() {
                return Err(FixError::Usage(format!(
                    "no operating system found in {} (it has no /etc): give the guest's root \
                     directory or its disk images",
                    dir.display()
                )));
            }
            let facts = load_facts(&tree, dir, &args)?;
            fix_tree(&tree, &dir.display().to_string(), facts, &rules, &args)
        }
        images => super::image::run(images, &rules, &args),
    }
}

/// `--list`: the rules with their descriptions.
fn list(rules: &[Rule]) -> Result<()> {
    let io = |e: std::io::Error| FixError::io("(stdout)", e);
    let mut out = std::io::stdout().lock();
    for r in rules {
        let opt = if r.opt_in { " (opt-in)" } else { "" };
        writeln!(
            out,
            "{}{opt}\n    {}\n    why: {}\n    file: {}",
            r.name, r.description, r.why, r.file
        )
        .map_err(io)?;
    }
    Ok(())
}

/// Plans the rules over `tree` with `facts`, applies them unless --dry-run, and reports.
pub fn fix_tree(
    tree: &dyn FileTree,
    target: &str,
    facts: Facts,
    rules: &[Rule],
    args: &FixArgs,
) -> Result<Outcome> {
    let io = |e: std::io::Error| FixError::io("(stdout)", e);
    let mut out = std::io::stdout().lock();
    if args.show_facts {
        serde_json::to_writer_pretty(&mut out, &facts).map_err(|e| io(e.into()))?;
        writeln!(out).map_err(io)?;
        return Ok(Outcome::Done);
    }
    let sel = Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
        enable: args.enable.clone(),
    };
    let plan = engine::plan(tree, rules, &facts, &sel)?;
    if !args.dry_run {
        plan.apply(tree)?;
    }
    if args.json || args.output.as_deref() == Some("json") {
        let report = JsonReport {
            target: target.to_string(),
            dry_run: args.dry_run,
            changed: !plan.is_empty(),
            facts: &facts,
            rules: &plan.rules,
            diff: args.dry_run.then(|| plan.diff()),
        };
        serde_json::to_writer_pretty(&mut out, &report).map_err(|e| io(e.into()))?;
        writeln!(out).map_err(io)?;
    } else {
        if args.dry_run {
            out.write_all(plan.diff().as_bytes()).map_err(io)?;
        }
        write_report(&mut out, &plan, args.dry_run).map_err(io)?;
    }
    Ok(if args.dry_run && !plan.is_empty() {
        Outcome::Pending
    } else {
        Outcome::Done
    })
}

/// The human report: one line per rule, its files, warnings and notes, and a summary.
pub fn write_report(out: &mut impl Write, plan: &Plan, dry_run: bool) -> std::io::Result<()> {
    let width = plan.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in &plan.rules {
        let status = match (r.status, dry_run) {
            (Status::Applied, true) => "would fix",
            (Status::Applied, false) => "fixed",
            (Status::Unchanged, _) => "done",
            (Status::Skipped, _) => "skipped",
        };
        let detail = match r.status {
            Status::Skipped => r.reason.clone().unwrap_or_default(),
            Status::Unchanged => "nothing to change".into(),
            Status::Applied => r
                .files
                .iter()
                .map(|f| {
                    let what = match (f.change, f.kind) {
                        (engine::ChangeKind::Created, "symlink") => "new symlink".to_string(),
                        (engine::ChangeKind::Created, _) => format!("new, +{}", f.lines_added),
                        (engine::ChangeKind::Deleted, k) => format!("{k} removed"),
                        (engine::ChangeKind::Attributes, _) => "mode/owner".into(),
                        (engine::ChangeKind::Modified, "symlink") => "symlink changed".into(),
                        (engine::ChangeKind::Modified, _) => {
                            format!("+{} -{}", f.lines_added, f.lines_removed)
                        }
                    };
                    format!("{} ({what})", f.path)
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        writeln!(out, "{status:<9}  {:<width$}  {detail}", r.name)?;
        for w in &r.warnings {
            writeln!(out, "    warning: {w}")?;
        }
        for n in &r.notes {
            writeln!(out, "    note: {n}")?;
        }
    }
    let applied = plan
        .rules
        .iter()
        .filter(|r| r.status == Status::Applied)
        .count();
    let lines: usize = plan
        .rules
        .iter()
        .flat_map(|r| &r.files)
        .map(|f| f.lines_added + f.lines_removed)
        .sum();
    if plan.is_empty() {
        writeln!(
            out,
            "Nothing to do: every rule that applies to this guest is already done."
        )
    } else {
        let verb = if dry_run { "Would change" } else { "Changed" };
        writeln!(
            out,
            "{verb} {} paths ({lines} lines) in {applied} rules.",
            plan.changes.len()
        )
    }
}
