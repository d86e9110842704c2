//! Spreading CPU-bound work of one request (inflating the clusters of a 1 MiB read) over idle
//! cores. A process-wide count of busy threads keeps nested use (the copy engine's workers each
//! reading) from oversubscribing the machine: extra threads are spawned only for idle cores.

use super::error::Result;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static BUSY: AtomicUsize = AtomicUsize::new(0);

fn cores() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

struct Busy;

impl Busy {
    fn enter() -> (Self, usize) {
        (Busy, BUSY.fetch_add(1, Ordering::AcqRel).saturating_add(1))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `f` on every item, on this thread and on as many extra threads as there are idle cores
/// (at most one per item). Returns the first error.
pub(crate) fn for_each<T: Send>(items: Vec<T>, f: impl Fn(T) -> Result<()> + Sync) -> Result<()> {
    let (_me, busy) = Busy::enter();
    let extra = cores()
        .saturating_sub(busy)
        .min(items.len().saturating_sub(1));
    if extra == 0 {
        return items.into_iter().try_for_each(&f);
    }
    // Deal items round-robin so neighbouring (similar) clusters spread evenly.
    let mut groups: Vec<Vec<T>> = (0..=extra).map(|_| Vec::new()).collect();
    for (it, group) in items.into_iter().zip((0..groups.len()).cycle()) {
        if let Some(g) = groups.get_mut(group) {
            g.push(it);
        }
    }
    let mine = groups.pop().unwrap_or_default();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    let _b = Busy::enter();
                    g.into_iter().try_for_each(f)
                })
            })
            .collect();
        let mut result = mine.into_iter().try_for_each(f);
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}
