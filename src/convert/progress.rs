//! Progress reporting: a bar on a terminal, nothing otherwise (scripts read `--json`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar over `total` bytes, hidden unless `wanted` and stderr is a terminal.
pub fn bar(total: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

/// Told, from the copy's worker threads, how many more bytes of the source the copy has dealt
/// with (copied, or skipped as holes and zeros), for progress that is not a terminal bar:
/// `ferry v2v --machine-readable` turns it into lines a wrapper reads.
#[derive(Clone)]
pub struct Observer(pub std::sync::Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}
