//! The integration tests, one binary (one link of the crate instead of one per area): each
//! module is an area, run against the real tools (qemu-img, mkfs.*, lvm2, the kernel).
// Tests call libc directly (geteuid, statvfs, ioctls on loop devices) to set up and observe.
#![allow(unsafe_code)]
// The fixtures' sizes and offsets are the tests' own small constants, not untrusted bytes: the
// guard-rail lints of Cargo.toml are for the library.
#![allow(clippy::as_conversions, clippy::arithmetic_side_effects)]

mod common;
mod fixguest;

mod chain;
mod cli;
mod convert_write;
mod corpus;
mod edit;
mod ext4;
mod ext4_htree;
mod ext4_journal;
mod ext4_journal_write;
mod ext4_meta;
mod ext4_write;
mod fat;
mod fix_engine;
mod fix_rules;
mod forensics;
mod guest;
mod initramfs;
mod inspect;
mod layering;
mod locking;
mod lvm;
mod meta;
mod mount;
mod ntfs;
mod qcow2;
mod qcow2_bad;
mod qcow2_write;
mod qemu_json;
mod regf_log;
mod rhel_guest;
mod v2v;
mod vmdk;
mod vmdk_write;
mod volume;
mod volume_bad;
mod windows;
mod xfs;
