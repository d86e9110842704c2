//! Ctrl-C and kill during a copy: the signal is only noted, and the copy stops at its next
//! chunk with [`super::Error::Interrupted`], so the usual failure path removes the partial
//! output. A terminated convert leaves nothing that looks like an image.
#![allow(unsafe_code)] // the signal mask and sigwait; each block says why it is sound.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked us to stop, 0 while none has.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (so in every thread started after it) and
/// starts a thread that records the first one to arrive. Call before starting the copy.
pub fn catch() {
    // SAFETY: plain sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialised signal set.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            SIGNAL.store(sig, Ordering::SeqCst);
        }
    });
}

/// The signal received, if any.
pub fn pending() -> Option<i32> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}

/// The name of a signal for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
