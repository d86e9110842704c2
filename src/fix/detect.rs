//! The facts `ferry fix` starts from when it edits a tree: the OS part of guest inspection
//! ([`crate::guest::inspect`]: release, init system, boot loader, source hypervisor,
//! architecture, the root filesystem from fstab). Never fails: what cannot be told stays
//! unknown. `--facts` supplies what a directory cannot show, such as the device map.

use super::facts::Facts;
use crate::fs::files::FileTree;

/// Facts read from the tree itself.
pub fn detect(tree: &dyn FileTree) -> Facts {
    Facts::from(&crate::guest::inspect::inspect(tree))
}
