//! Forensic read paths (issue 18): `ferry hash` (the virtual disk's content and a per-file
//! manifest), `ferry timeline` (a body file as The Sleuth Kit writes it) and `ferry diff`
//! (what changed between two views of a guest). Everything here
//! only reads: devices through `BlockDevice::read_at`, guests through `Filesystem`.

pub mod bodyfile;
pub mod diff;
pub mod digest;
pub mod walk;

pub use digest::Algo;
