//! Read workers: large file reads are answered off the request threads.
//!
//! fuser starts every request thread at mount, and each costs about 0.1 ms of CPU (stack,
//! signal stack, malloc arena, code faults in the freshly forked daemon). With four of them the
//! first `cat` after `ferry mount` competed with their start-up (1.96 ms against 1.64 ms with
//! one thread, on 2 cores), while a cold sequential read needs several reads of the image in
//! flight (1063 MiB/s with four threads, 814 with two). So the request threads are few, and a
//! read above `INLINE_READ` is handed to a worker; workers are started when a large read finds
//! every worker busy, up to the configured number, and live until the mount ends. A reply can be sent
//! from any thread: the kernel matches it to its request by id.

use crate::fs::Filesystem;
use fuser::ReplyData;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Reads up to this size are answered by the request thread itself: they are quick, and the
/// small files a first look at a guest reads (a config file, a script) never start a worker.
pub const INLINE_READ: usize = 128 * 1024;

/// One read to answer.
pub struct Job {
    pub ino: u64,
    pub offset: u64,
    pub size: usize,
    pub reply: ReplyData,
}

/// The workers' queue and how many there are.
pub struct Workers {
    fs: Arc<dyn Filesystem>,
    /// Taken when the workers are dropped, which ends them.
    tx: Option<Sender<Job>>,
    rx: Arc<Mutex<Receiver<Job>>>,
    max: usize,
    started: AtomicUsize,
    /// Workers waiting for a job less the jobs queued: below zero, a new job finds every
    /// worker busy and starts another (up to `max`). Counting only idle workers started too
    /// few in a burst (the kernel sends its readahead as several reads at once), and a cold
    /// read ran at two workers' speed.
    free: Arc<AtomicIsize>,
    running: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Up to `max` workers reading from `fs`; none is started yet.
    pub fn new(fs: Arc<dyn Filesystem>, max: usize) -> Self {
        let (tx, rx) = channel();
        Workers {
            fs,
            tx: Some(tx),
            rx: Arc::new(Mutex::new(rx)),
            max,
            started: AtomicUsize::new(0),
            free: Arc::new(AtomicIsize::new(0)),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Queues `job` for a worker, starting one if every worker is busy and the limit allows;
    /// gives the job back when no worker will take it (none runs and none could start).
    pub fn offer(&self, job: Job) -> Option<Job> {
        if self.free.fetch_sub(1, Ordering::AcqRel) <= 0 && !self.start() {
            self.free.fetch_add(1, Ordering::AcqRel);
            return Some(job);
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if sent.is_some() {
            self.free.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }

    /// Starts one more worker. True when a worker will take a queued job: one started now,
    /// or the limit is reached with workers running.
    fn start(&self) -> bool {
        let n = self.started.load(Ordering::Acquire);
        if n >= self.max {
            return n > 0;
        }
        if self
            .started
            .compare_exchange(n, n.saturating_add(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another request thread is starting one at this moment.
            return true;
        }
        let (fs, rx, free) = (self.fs.clone(), self.rx.clone(), self.free.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ferry-read-{n}"))
            .spawn(move || work(fs.as_ref(), &rx, &free));
        match spawned {
            Ok(h) => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(h);
                true
            }
            Err(e) => {
                log::warn!("cannot start a read worker: {e}");
                self.started.fetch_sub(1, Ordering::AcqRel);
                n > 0
            }
        }
    }
}

impl Drop for Workers {
    /// Ends the workers once the reads queued are answered, and waits for them: none outlives
    /// the mount.
    fn drop(&mut self) {
        drop(self.tx.take());
        let running = std::mem::take(self.running.get_mut().unwrap_or_else(|p| p.into_inner()));
        for h in running {
            let _ = h.join();
        }
    }
}

/// A worker: answers queued reads until the queue's sender is gone (the mount ended).
fn work(fs: &dyn Filesystem, rx: &Mutex<Receiver<Job>>, free: &AtomicIsize) {
    loop {
        free.fetch_add(1, Ordering::AcqRel);
        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            Ok(j) => answer(fs, j),
            Err(_) => return,
        }
    }
}

thread_local! {
    /// Each thread's read buffer, grown to the largest read it has served (at most MAX_IO).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `job.size` bytes at `job.offset` and replies: the whole request except at end of
/// file (a filesystem may return short reads at run boundaries), or the error's errno.
pub fn answer(fs: &dyn Filesystem, job: Job) {
    let Job {
        ino,
        offset,
        size,
        reply,
    } = job;
    READ_BUF.with_borrow_mut(|buf| {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        let buf = &mut buf[..size];
        let mut done = 0;
        // `done` counts bytes of this request (at most MAX_IO past `offset`).
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset.saturating_add(crate::bytes::wide(done));
            match fs.read(ino, at, rest) {
                Ok(0) => break,
                Ok(n) => done = done.saturating_add(n),
                Err(e) => {
                    log::warn!("read inode {ino} at {at}: {e}");
                    reply.error(fuser::Errno::from_i32(super::errno(&e)));
                    return;
                }
            }
        }
        // Only the bytes this read filled are sent; the rest of the buffer is not.
        reply.data(&buf[..done]);
    })
}
