//! OS detection over a guest tree. A first version built on `fix::detect`; the full
//! inspector (kernels, architecture, packages, guest tools) is being written with the same
//! entry points.

use crate::fix::detect;
use crate::fix::facts::{Facts, Os};
use crate::fix::tree::FileTree;
use serde::{Deserialize, Serialize};

/// What inspection finds out about one operating system.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OsInfo {
    pub os: Os,
    pub distro: String,
    #[serde(skip)]
    pub facts: Facts,
    pub warnings: Vec<String>,
}

/// Whether `tree` looks like the root of an installed system.
pub fn is_root(tree: &dyn FileTree) -> bool {
    let dir = |p: &str| tree.lstat(p).ok().flatten().is_some();
    dir("/etc") && (dir("/bin") || dir("/usr/bin") || dir("/sbin"))
}

pub fn inspect(tree: &dyn FileTree) -> OsInfo {
    let facts = detect::detect(tree);
    OsInfo {
        os: facts.os,
        distro: facts.distro.clone(),
        facts,
        warnings: Vec::new(),
    }
}

impl From<&OsInfo> for Facts {
    fn from(o: &OsInfo) -> Facts {
        o.facts.clone()
    }
}
