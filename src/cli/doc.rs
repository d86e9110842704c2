//! `ferry completions` and `ferry man`: generated from the clap definitions, so that they
//! never disagree with `--help`.

use anyhow::{Context, Result};
use clap_complete::Shell;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(clap::Args)]
pub(crate) struct ManArgs {
    /// Write ferry.1 and ferry-COMMAND.1 for every command into this directory (created if
    /// missing) instead of ferry.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub(crate) fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut cmd, "ferry", &mut out);
    out.flush()?;
    Ok(())
}

pub(crate) fn man(a: ManArgs, cmd: clap::Command) -> Result<()> {
    let Some(dir) = a.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cmd, &dir)
        .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
    Ok(())
}
