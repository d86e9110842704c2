//! `ferry inspect`: the operating systems on a guest's disks (like virt-inspector).

use super::{open, JsonOut};
use anyhow::{Context, Result};
use ferry::block::Format;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(short = 'f', long = "format")]
    pub format: Option<Format>,
    #[command(flatten)]
    pub json: JsonOut,
    /// Print the facts `ferry fix` would use for the operating system (JSON, what
    /// `ferry fix --facts FILE` takes: edit it and pass it back).
    #[arg(long, conflicts_with_all = ["json", "output"])]
    pub facts: bool,
    /// With --facts: the operating system to describe when the disks hold several (the
    /// device of its /).
    #[arg(long, requires = "facts")]
    pub root: Option<String>,
    /// Read the image even while another process writes it (qemu-img's -U): what is read
    /// may be inconsistent. Without it an image in use by a writer is refused.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

/// `facts`: print the facts of one root (the one given, or the only one) instead.
pub(crate) fn inspect(a: InspectArgs) -> Result<()> {
    let (format, json) = (a.format, a.json.on());
    let facts = a.facts.then_some(a.root);
    let disks = a
        .images
        .iter()
        .map(|p| open(p, format).with_context(|| format!("opening {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let guest = ferry::guest::Guest::open(&disks)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(root) = facts {
        let (_, r) = guest.tree(root.as_deref())?;
        serde_json::to_writer_pretty(&mut out, &guest.facts(r))?;
        writeln!(out)?;
    } else if json {
        serde_json::to_writer_pretty(&mut out, &guest.inspection)?;
        writeln!(out)?;
    } else {
        ferry::guest::report::write_text(&mut out, &guest.inspection)?;
    }
    out.flush()?;
    Ok(())
}
