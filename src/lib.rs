//! ferry: open, inspect, fix and convert virtual machine disk images in userspace.
//! Layers (see DESIGN.md): `block` (image formats) → `convert` (copy engine).

pub mod block;
pub mod convert;
pub mod fix;
pub mod fs;
pub mod volume;
