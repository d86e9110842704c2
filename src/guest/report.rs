//! `ferry inspect`'s text output: per operating system, what it is, its fstab resolved, and
//! its mount layout; then the filesystems. `--json` gives every field.

use super::Inspection;
use std::io::{self, Write};

pub fn write_text(out: &mut dyn Write, i: &Inspection) -> io::Result<()> {
    if i.roots.is_empty() {
        writeln!(out, "No operating system found.")?;
    }
    for r in &i.roots {
        let os = serde_json::to_value(&r.os).unwrap_or_default();
        writeln!(out, "Root {}:", r.root)?;
        if let Some(map) = os.as_object() {
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) if s.is_empty() => continue,
                    serde_json::Value::Array(a) if a.is_empty() => continue,
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                writeln!(out, "  {k}: {text}")?;
            }
        }
        if let Some(n) = r.naming {
            writeln!(
                out,
                "  disk names: {}",
                serde_json::to_value(n).unwrap_or_default()
            )?;
        }
        if !r.fstab.is_empty() {
            writeln!(out, "  fstab:")?;
        }
        for l in &r.fstab {
            let to = match (&l.ignored, &l.resolution.device) {
                (Some(why), _) => format!("({why})"),
                (None, Some(d)) => d.clone(),
                (None, None) => format!(
                    "NOT FOUND: {}",
                    l.resolution.problem.as_deref().unwrap_or("unknown")
                ),
            };
            let hard = if l.resolution.hard_coded {
                "  [hard-coded device name]"
            } else {
                ""
            };
            writeln!(
                out,
                "    line {}: {} {} {} -> {to}{hard}",
                l.line, l.spec, l.mountpoint, l.fstype
            )?;
        }
        writeln!(out, "  mountpoints:")?;
        for p in &r.mountpoints {
            writeln!(out, "    {} {}", p.mountpoint, p.device)?;
        }
        for p in &r.problems {
            writeln!(out, "  warning: {p}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Filesystems:")?;
    for f in &i.filesystems {
        let extra = match (&f.label, f.readable) {
            (_, false) => format!(
                "  (not readable: {})",
                f.problem.as_deref().unwrap_or("unknown")
            ),
            (Some(l), true) => format!("  label {l}"),
            (None, true) => String::new(),
        };
        writeln!(
            out,
            "  {} {} {}{extra}",
            f.device,
            f.fstype,
            f.uuid.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
