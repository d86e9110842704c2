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
                match (k.as_str(), v) {
                    (_, serde_json::Value::Null) => {}
                    (_, serde_json::Value::String(s)) if s.is_empty() || s == "unknown" => {}
                    (_, serde_json::Value::Array(a)) if a.is_empty() => {}
                    ("kernels", serde_json::Value::Array(ks)) => {
                        for k in ks {
                            writeln!(out, "  kernel {}", kernel_line(k))?;
                        }
                    }
                    ("tools", serde_json::Value::Array(ts)) => {
                        let names: Vec<String> = ts
                            .iter()
                            .map(|t| format!("{} ({})", text(&t["name"]), text(&t["path"])))
                            .collect();
                        writeln!(out, "  tools: {}", names.join(", "))?;
                    }
                    ("bootloader", b) => {
                        if b["loader"] != "unknown" {
                            let efi = if b["efi"] == true { ", EFI" } else { "" };
                            let on = match b["device"].as_str() {
                                Some(d) => format!(" on {d}"),
                                None => String::new(),
                            };
                            writeln!(
                                out,
                                "  bootloader: {} ({}{on}{efi})",
                                text(&b["loader"]),
                                b["config"].as_str().unwrap_or("store not read")
                            )?;
                        }
                    }
                    (k, v) => writeln!(out, "  {k}: {}", text(v))?,
                }
            }
        }
        if let Some(n) = r.naming {
            writeln!(
                out,
                "  disk names: {}",
                text(&serde_json::to_value(n).unwrap_or_default())
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
            match &p.drive {
                Some(d) => writeln!(out, "    {} {} ({d})", p.mountpoint, p.device)?,
                None => writeln!(out, "    {} {}", p.mountpoint, p.device)?,
            }
        }
        for p in &r.problems {
            writeln!(out, "  warning: {p}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Filesystems:")?;
    for f in &i.filesystems {
        let extra = match (&f.label, f.readable) {
            (_, false) if f.fstype == "swap" => String::new(),
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

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// `6.1.0-13-amd64: /boot/vmlinuz-6.1.0-13-amd64, virtio_blk module, virtio_net module, …`
fn kernel_line(k: &serde_json::Value) -> String {
    let mut parts = vec![text(&k["vmlinuz"])];
    for d in ["virtio_blk", "virtio_net", "virtio_scsi", "virtio_pci"] {
        parts.push(format!("{d} {}", text(&k[d])));
    }
    format!("{}: {}", text(&k["version"]), parts.join(", "))
}
