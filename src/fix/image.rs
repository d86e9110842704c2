//! `ferry fix IMAGE...`: the rules run in process on the guest's own tree, with no FUSE.
//!
//! The disks are opened through overlays (`block::overlay`), the guest is inspected, the
//! filesystems of the chosen root's layout are reopened for writing, and the engine edits the
//! composed tree through `guest::FsFiles`. The facts come from inspection (device map with
//! UUIDs, the source's disk naming), then `--facts`. `--dry-run` opens the images read-only
//! and creates no overlay.

use super::cli::{fix_tree, FixArgs, Outcome};
use super::error::{FixError, Result};
use super::rule::Rule;
use crate::block::{self, overlay::EditSet, BlockDevice};
use crate::fs::Filesystem;
use crate::guest::files::FsFiles;
use crate::guest::Guest;
use std::path::PathBuf;
use std::sync::Arc;

/// Fixes the guest on `images`.
pub fn run(images: &[PathBuf], rules: &[Rule], args: &FixArgs) -> Result<Outcome> {
    for i in images {
        if i.is_dir() {
            return Err(FixError::Usage(format!(
                "{} is a directory: give one guest directory, or the guest's disk images",
                i.display()
            )));
        }
    }
    let writing = !args.dry_run && !args.show_facts;
    let mut edits = None;
    let disks: Vec<Arc<dyn BlockDevice>> = if writing {
        let e = EditSet::open(images, &args.overlay)?;
        let d = e.disks();
        edits = Some(e);
        d
    } else {
        images
            .iter()
            .map(|p| block::open(p))
            .collect::<block::Result<_>>()?
    };
    let mut guest = Guest::open(&disks)?;
    let root = guest.tree(args.root.as_deref())?.1.root.clone();
    if writing {
        let devices: Vec<String> = guest
            .tree(Some(&root))?
            .0
            .mounts()
            .map(|m| m.device.clone())
            .collect();
        let notes = guest.make_writable(&devices);
        for n in &notes {
            log::warn!("{n}");
            eprintln!("ferry: {n}");
        }
    }
    let (tree, report) = guest.tree(Some(&root))?;
    let mut facts = guest.facts(report);
    if let Some(f) = &args.facts {
        facts = super::facts::merge_file(facts, f)?;
    }
    if let Some(e) = edits.as_mut() {
        for line in e.keep() {
            eprintln!("ferry: {line}");
        }
    }
    let target = format!("{} ({root})", images[0].display());
    let outcome = fix_tree(&FsFiles::new(&tree), &target, facts, rules, args)?;
    if writing {
        tree.fsync().map_err(|source| FixError::Fs {
            what: format!("committing the edits of {target}"),
            source,
        })?;
        drop(tree);
        drop(guest);
        if let Some(e) = edits {
            e.finish()?;
        }
    }
    Ok(outcome)
}
