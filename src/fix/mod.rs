//! Fixers: the declarative rule engine that edits a guest so it boots on the target
//! hypervisor (DESIGN.md, "fix"; issue 7).
//!
//! Rules (`fixers/*.toml`, parsed by [`rule`]) hold conditions over [`facts::Facts`] and the
//! guest's files ([`cond`]) and ordered edits ([`action`], [`devices`], [`firstboot`]). The
//! [`engine`] plans them over a [`tree::FileTree`] without writing, reports and diffs the
//! plan, and applies it. The tree is a host directory today ([`host::HostTree`]) and a
//! `guest::Tree` later; the OS facts come from guest inspection through [`detect`], the
//! device map from `--facts` until the device map of issue 5 fills it.

pub mod action;
pub mod command;
pub mod cond;
pub mod detect;
pub mod devices;
pub mod diff;
pub mod engine;
pub mod error;
pub mod facts;
pub mod firstboot;
pub mod glob;
pub mod host;
pub mod image;
pub mod initramfs;
pub mod rule;
pub mod standard;
pub mod template;
pub mod text;

pub use crate::fs::files::FileTree;
pub use engine::{plan, Plan, Selection};
pub use error::{Error, Result};
pub use facts::Facts;
pub use host::HostTree;
pub use rule::Rule;
