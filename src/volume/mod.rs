//! Layer 2: volumes. Carves each disk into what the guest sees (partitions, LVM logical
//! volumes), each itself a `BlockDevice`, and recognises what each one holds.

pub mod error;
pub mod lvm;
pub mod slice;

pub use error::{Error, Result};
pub use slice::Slice;
