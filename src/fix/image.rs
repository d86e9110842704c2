//! `ferry fix IMAGE...`: the rules run in process on the guest's own tree, with no FUSE.
//!
//! The disks are opened through overlays (`block::overlay`), the guest is inspected, the
//! filesystems of the chosen root's layout are reopened for writing, and the engine edits the
//! composed tree through `guest::FsFiles`. The facts come from inspection (device map with
//! UUIDs, the source's disk naming), then `--facts`. `--dry-run` opens the images read-only
//! and creates no overlay.
//!
//! [`Session`] is the same machinery as a library call, for `ferry v2v`: it takes disks that
//! are already open (overlays it created itself), lets the caller adjust the facts from
//! inspection, and returns the plan instead of printing it.

use super::command::{fix_tree, Options, Report};
use super::engine::{self, Plan, Selection};
use super::error::{Error, Result};
use super::facts::Facts;
use super::rule::Rule;
use crate::block::{self, overlay::EditSet, BlockDevice};
use crate::fs::Filesystem;
use crate::guest::files::FsFiles;
use crate::guest::tree::Tree;
use crate::guest::{Guest, RootReport};
use std::path::PathBuf;
use std::sync::Arc;

/// One operating system of a guest opened in process for fixing.
pub struct Session {
    guest: Guest,
    /// The device of the chosen root's `/`.
    root: String,
    writable: bool,
    /// Why filesystems of the layout stay read-only (one line a device), when writable.
    pub notes: Vec<String>,
}

impl Session {
    /// Inspects the guest on `disks` and picks its operating system (`root`, the device of
    /// its `/`, when the disks hold several). With `writable`, the filesystems of that
    /// root's layout are reopened for writing: `disks` must then be overlays, since every
    /// write goes to them.
    pub fn open(
        disks: &[Arc<dyn BlockDevice>],
        root: Option<&str>,
        writable: bool,
    ) -> Result<Session> {
        let mut guest = Guest::open(disks)?;
        let root = guest.tree(root)?.1.root.clone();
        let mut notes = Vec::new();
        if writable {
            let devices: Vec<String> = guest
                .tree(Some(&root))?
                .0
                .mounts()
                .map(|m| m.device.clone())
                .collect();
            notes = guest.make_writable(&devices);
        }
        Ok(Session {
            guest,
            root,
            writable,
            notes,
        })
    }

    /// The device of the chosen root's `/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// What inspection found for the chosen root.
    pub fn report(&self) -> Result<&RootReport> {
        Ok(self.guest.tree(Some(&self.root))?.1)
    }

    /// The guest (its volumes and whole inspection).
    pub fn guest(&self) -> &Guest {
        &self.guest
    }

    /// The facts inspection gives the rules for the chosen root.
    pub fn facts(&self) -> Result<Facts> {
        let (_, report) = self.guest.tree(Some(&self.root))?;
        Ok(self.guest.facts(report))
    }

    /// The composed tree of the chosen root (writable where the session is).
    pub fn tree(&self) -> Result<Tree> {
        Ok(self.guest.tree(Some(&self.root))?.0)
    }

    /// Plans `rules` over the guest with `facts`; with `apply` (a writable session only),
    /// applies the plan and syncs every filesystem of the tree.
    pub fn fix(&self, facts: &Facts, rules: &[Rule], sel: &Selection, apply: bool) -> Result<Plan> {
        if apply && !self.writable {
            return Err(Error::Usage(
                "the guest was opened read-only: nothing can be applied".into(),
            ));
        }
        let tree = self.tree()?;
        let files = FsFiles::new(&tree);
        let plan = engine::plan(&files, rules, facts, sel)?;
        if apply {
            plan.apply(&files)?;
            tree.fsync().map_err(|source| Error::Fs {
                what: format!("committing the edits of the guest on {}", self.root),
                source,
            })?;
        }
        Ok(plan)
    }
}

/// Fixes the guest on `images`.
pub fn run(images: &[PathBuf], rules: &[Rule], opts: &Options) -> Result<Report> {
    for i in images {
        if i.is_dir() {
            return Err(Error::Usage(format!(
                "{} is a directory: give one guest directory, or the guest's disk images",
                i.display()
            )));
        }
    }
    let writing = !opts.dry_run && !opts.show_facts;
    let mut edits = None;
    let disks: Vec<Arc<dyn BlockDevice>> = if writing {
        let e = EditSet::open(images, &opts.overlay)?;
        let d = e.disks();
        edits = Some(e);
        d
    } else {
        images
            .iter()
            .map(|p| block::open(p))
            .collect::<block::Result<_>>()?
    };
    let session = Session::open(&disks, opts.root.as_deref(), writing)?;
    for n in &session.notes {
        log::warn!("{n}");
        eprintln!("ferry: {n}");
    }
    let mut facts = session.facts()?;
    if let Some(f) = &opts.facts {
        facts = super::facts::merge_file(facts, f)?;
    }
    if let Some(e) = edits.as_mut() {
        for line in e.keep() {
            eprintln!("ferry: {line}");
        }
    }
    let target = format!("{} ({})", images[0].display(), session.root());
    let tree = session.tree()?;
    let report = fix_tree(&FsFiles::new(&tree), &target, facts, rules, opts)?;
    if writing {
        tree.fsync().map_err(|source| Error::Fs {
            what: format!("committing the edits of {target}"),
            source,
        })?;
        drop(tree);
        drop(session);
        if let Some(e) = edits {
            e.finish()?;
        }
    }
    Ok(report)
}
