//! Forensic read paths (issue 18): `ferry hash` (the virtual disk's content and a per-file
//! manifest) and `ferry timeline` (a body file as The Sleuth Kit writes it). Everything here
//! only reads: devices through `BlockDevice::read_at`, guests through `Filesystem`.

pub mod bodyfile;
pub mod digest;
pub mod walk;

pub use digest::Algo;
