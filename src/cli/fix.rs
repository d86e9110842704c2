//! `ferry fix`: its arguments and what it prints (the report, the diff, JSON); the work is
//! `ferry::fix::command`.

use anyhow::Result;
use ferry::fix::command::{self, Options, Report};
use ferry::fix::engine::{self, Plan, Status};
use ferry::fix::Facts;
use std::io::Write;
use std::path::PathBuf;

/// Fix a guest so it boots on KVM: plan the rules, show or apply the edits, report.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FixArgs {
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

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    target: &'a str,
    dry_run: bool,
    changed: bool,
    facts: &'a Facts,
    rules: &'a [engine::RuleReport],
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// Runs `ferry fix`; a dry run with changes pending exits 2, so that a script can tell
/// "would change" from "nothing to do".
pub(crate) fn run(a: FixArgs) -> Result<()> {
    let json = a.json || a.output.as_deref() == Some("json");
    let opts = Options {
        targets: a.targets,
        overlay: a.overlay,
        root: a.root,
        facts: a.facts,
        rules: a.rules,
        no_standard: a.no_standard,
        only: a.only,
        skip: a.skip,
        enable: a.enable,
        dry_run: a.dry_run,
        show_facts: a.show_facts,
    };
    let rules = command::load_rules(&opts)?;
    let mut out = std::io::stdout().lock();
    if a.list {
        for r in &rules {
            let opt = if r.opt_in { " (opt-in)" } else { "" };
            writeln!(
                out,
                "{}{opt}\n    {}\n    why: {}\n    file: {}",
                r.name, r.description, r.why, r.file
            )?;
        }
        return Ok(());
    }
    let report = command::run(&opts, &rules)?;
    print(&mut out, &report, json)?;
    out.flush()?;
    if report.pending() {
        std::process::exit(2);
    }
    Ok(())
}

fn print(out: &mut impl Write, report: &Report, json: bool) -> Result<()> {
    let Some(plan) = &report.plan else {
        serde_json::to_writer_pretty(&mut *out, &report.facts)?;
        writeln!(out)?;
        return Ok(());
    };
    if json {
        let j = JsonReport {
            target: &report.target,
            dry_run: report.dry_run,
            changed: !plan.is_empty(),
            facts: &report.facts,
            rules: &plan.rules,
            diff: report.dry_run.then(|| plan.diff()),
        };
        serde_json::to_writer_pretty(&mut *out, &j)?;
        writeln!(out)?;
    } else {
        if report.dry_run {
            out.write_all(plan.diff().as_bytes())?;
        }
        write_report(out, plan, report.dry_run)?;
    }
    Ok(())
}

/// The human report: one line per rule, its files, warnings and notes, and a summary.
pub(crate) fn write_report(
    out: &mut impl Write,
    plan: &Plan,
    dry_run: bool,
) -> std::io::Result<()> {
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
                        (engine::ChangeKind::Modified, _) => match f.binary {
                            Some(b) => format!("binary, {} → {} bytes", b.before, b.after),
                            None => format!("+{} -{}", f.lines_added, f.lines_removed),
                        },
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
        .map(|f| f.lines_added.saturating_add(f.lines_removed))
        .fold(0, usize::saturating_add);
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
