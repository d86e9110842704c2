//! ferry: open, inspect, fix and convert virtual machine disk images in userspace.
//! Layers (see DESIGN.md): `block` (image formats) → `volume` (partitions, LVM) → `fs`
//! (filesystems) → `guest` (the guest as a whole) → `mount` (FUSE); `fix` (rules), `convert`
//! (copy engine), `meta` (source VM descriptions); `v2v` (the whole move, using all of them).

pub mod block;
mod bytes;
pub mod convert;
pub mod fix;
pub mod forensics;
pub mod fs;
pub mod guest;
pub mod meta;
pub mod mount;
pub mod regf;
pub mod v2v;
pub mod volume;
