//! The kernel's three recovery passes (fs/jbd2/recovery.c, do_one_pass), mirrored step by step
//! so that ferry replays exactly the transactions the kernel would, and refuses exactly the
//! journals the kernel refuses to recover:
//!
//! - SCAN walks the log from `s_start`, transaction by transaction, to find where it ends: the
//!   first block without the magic number or with an unexpected transaction ID, or a commit
//!   block whose checksum fails (the transaction is then not replayed). A failing commit block
//!   older than the previous commit (`h_commit_sec`) is a stale leftover and just ends the log;
//!   otherwise it is corruption (the kernel's `j_failed_commit`, which makes jbd2_journal_load
//!   refuse the journal), except with async commit, where only a later commit block (v1) is.
//! - REVOKE collects the revoke records of the complete transactions.
//! - REPLAY maps every tagged block that no revoke record of its own or a later transaction
//!   cancels to its copy in the log (the last copy wins). Nothing is copied: the map says
//!   where each block's bytes are.
//!
//! Two things differ from the kernel, both only on hostile input: a walk longer than the log
//! itself (which would need 2^32 transactions in a valid journal, and which the kernel can
//! follow forever) or than `MAX_LOG_WALK` ends the log, and the maps held in memory are capped.
// Guard rails (issue 16 item 7): the log is untrusted. Positions and counters below stay far
// from the u64 limit (log positions are u32 block numbers plus at most a block's tags, and a
// walk is capped at MAX_LOG_WALK): the saturating steps never saturate.

use super::block::{
    commit_csum_ok, commit_csum_partial_ok, crc32_be, data_csum_ok, revoke_record_len,
    revoke_records, revoke_records_end, tags, tail_csum_ok, Commit, Header, Tag, BLOCKTYPE_COMMIT,
    BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, COMMIT_CRC32, COMMIT_CRC32_SIZE, FLAG_ESCAPE, MAGIC,
    REVOKE_HEADER_LEN,
};
use super::superblock::{JournalSuperblock, INCOMPAT_ASYNC_COMMIT};
use super::view::Copy;
use crate::block::BlockDevice;
use crate::bytes::wide;
use crate::fs::{Error, Result};
use std::collections::{BTreeMap, HashMap};

/// Filesystem blocks the replay map may hold. A 1 GiB journal of 4 KiB blocks (mke2fs's
/// largest default) replays at most 262144; this allows journals 16 times larger while
/// bounding the map to ~100 MiB on hostile input.
pub const MAX_REPLAYED_BLOCKS: usize = 1 << 22;
/// Distinct blocks the revoke table may hold, for the same reason.
pub const MAX_REVOKED_BLOCKS: usize = 1 << 22;
/// Log blocks one pass walks at most. A journal inode can map billions of logical blocks onto
/// a few physical ones, so the log's length alone does not bound the work. mke2fs makes
/// journals of at most 10,240,000 blocks, and the part of a log still to replay is a small
/// fraction of that; a longer walk ends the log there, with a warning.
pub const MAX_LOG_WALK: u64 = 1 << 21;

/// Where journal blocks are on the device (the kernel's jbd2_journal_bmap).
pub trait LogSource {
    /// Byte offset of journal block `jblk` on the device.
    fn locate(&self, jblk: u64) -> Result<u64>;
}

/// What recovery found, in the kernel's terms (struct recovery_info).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The first transaction ID in the log (s_sequence).
    pub start_transaction: u32,
    /// One past the last transaction replayed.
    pub end_transaction: u32,
    /// Tagged blocks written (the kernel's nr_replays; a block copied twice counts twice).
    pub replays: u64,
    /// Revoke records in the replayed transactions.
    pub revokes: u64,
    /// Tagged blocks skipped because a revoke record cancels them.
    pub revoke_hits: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

/// `x` is after `y` in the circular space of transaction IDs (the kernel's tid_gt).
fn tid_gt(x: u32, y: u32) -> bool {
    tid_diff(x, y) > 0
}

fn tid_geq(x: u32, y: u32) -> bool {
    tid_diff(x, y) >= 0
}

/// `x - y` modulo 2^32 as a signed value (the kernel's `(int)(x - y)`).
fn tid_diff(x: u32, y: u32) -> i32 {
    i32::from_ne_bytes(x.wrapping_sub(y).to_ne_bytes())
}

pub struct Recovery<'a> {
    dev: &'a dyn BlockDevice,
    src: &'a dyn LogSource,
    jsb: &'a JournalSuperblock,
    /// Inode number of the journal, for error messages (0 when it is not an inode).
    ino: u64,
    bs: usize,
    /// Journal blocks that exist (the kernel's j_total_len).
    total_len: u64,
    /// The circular log is `[first, last)`.
    first: u64,
    last: u64,
    /// Blocks of the filesystem's device: a copy of anything past it cannot be written.
    device_blocks: u64,
    seed: u32,
    out: Outcome,
    /// end_transaction as the kernel keeps it: 0 means "not found yet".
    end: u32,
    revoked: HashMap<u64, u32>,
    pub map: BTreeMap<u64, Copy>,
}

impl<'a> Recovery<'a> {
    pub fn new(
        dev: &'a dyn BlockDevice,
        src: &'a dyn LogSource,
        jsb: &'a JournalSuperblock,
        ino: u64,
        total_len: u64,
    ) -> Result<Self> {
        let bs = usize::try_from(jsb.block_size).map_err(|_| {
            Error::corrupt(
                "journal superblock",
                ino,
                0,
                format!("block size {}", jsb.block_size),
            )
        })?;
        let (first, last) = (u64::from(jsb.first), u64::from(jsb.last()));
        if first >= last {
            return Err(Error::corrupt(
                "journal superblock",
                ino,
                0,
                format!("first log block {first} is not before the log's end {last}"),
            ));
        }
        Ok(Recovery {
            dev,
            src,
            jsb,
            ino,
            bs,
            total_len,
            first,
            last,
            // The block size is nonzero (the journal superblock's check).
            device_blocks: dev.len().checked_div(wide(bs)).unwrap_or(0),
            seed: jsb.csum_seed(),
            out: Outcome::default(),
            end: 0,
            revoked: HashMap::new(),
            map: BTreeMap::new(),
        })
    }

    /// Runs the three passes; on success `map` holds the replayed blocks.
    pub fn run(&mut self) -> Result<Outcome> {
        self.pass(Pass::Scan)?;
        self.pass(Pass::Revoke)?;
        self.pass(Pass::Replay)?;
        self.out.end_transaction = self.end;
        Ok(self.out.clone())
    }

    /// Damage in journal block `jblk`, placed on the device (filesystem block and byte)
    /// where the journal maps it.
    fn bad(&self, jblk: u64, detail: String) -> Error {
        let e = Error::corrupt(
            "journal block",
            self.ino,
            0,
            format!("journal block {jblk}: {detail}"),
        );
        match self.src.locate(jblk) {
            Ok(at) if jblk < self.total_len && at < self.dev.len() => e
                .in_block(at.checked_div(wide(self.bs)).unwrap_or(at))
                .at(at),
            _ => e,
        }
    }

    /// The kernel's j_failed_commit: recovery itself succeeds, then jbd2_journal_load
    /// refuses the journal ("journal transaction N is corrupt").
    fn failed_commit(&self, jblk: u64, transaction: u32, why: &str) -> Error {
        self.bad(
            jblk,
            format!("journal transaction {transaction} is corrupt: {why}"),
        )
    }

    /// Checks journal block `jblk` exists and finds it (the kernel's jread without the read).
    fn locate(&self, jblk: u64) -> Result<u64> {
        if jblk >= self.total_len {
            return Err(self.bad(
                jblk,
                format!(
                    "log position past the journal's {} blocks (corrupt journal superblock)",
                    self.total_len
                ),
            ));
        }
        let at = self.src.locate(jblk)?;
        if at
            .checked_add(wide(self.bs))
            .is_none_or(|e| e > self.dev.len())
        {
            return Err(self.bad(jblk, format!("lies at byte {at}, past the device's end")));
        }
        Ok(at)
    }

    /// Reads journal block `jblk` (the kernel's jread).
    fn read(&self, jblk: u64) -> Result<Vec<u8>> {
        let at = self.locate(jblk)?;
        let mut b = vec![0u8; self.bs];
        self.dev.read_at(&mut b, at)?;
        Ok(b)
    }

    /// The log position after `v`, wrapping once at the log's end as the kernel does. A
    /// position still past the end (a tag count larger than the log) fails at the next read.
    fn wrap(&self, v: u64) -> u64 {
        if v >= self.last {
            // first < last (checked in `new`) and v >= last: no underflow.
            v.saturating_sub(self.last.saturating_sub(self.first))
        } else {
            v
        }
    }

    fn pass(&mut self, pass: Pass) -> Result<()> {
        let mut next_commit = self.jsb.sequence;
        let mut next_log = u64::from(self.jsb.start);
        if pass == Pass::Scan {
            self.out.start_transaction = next_commit;
        }
        let mut crc32_sum = !0u32;
        let mut need_check_commit_time = false;
        let mut last_commit_time = 0u64;
        // Log blocks walked: a valid log is walked at most once around.
        let mut walked = 0u64;
        let log_len = self.last.saturating_sub(self.first).min(MAX_LOG_WALK);
        loop {
            if pass != Pass::Scan && tid_geq(next_commit, self.end) {
                break;
            }
            if walked >= log_len {
                log::warn!(
                    "jbd2: transaction {next_commit} runs past the whole log or \
                     {MAX_LOG_WALK} blocks; the log ends there"
                );
                break;
            }
            let this = next_log;
            let b = self.read(this)?;
            next_log = self.wrap(next_log.saturating_add(1));
            walked = walked.saturating_add(1);
            let h = Header::parse(&b);
            if h.magic != MAGIC || h.sequence != next_commit {
                break;
            }
            // In the kernel a `break` inside its switch goes on to the next block; those are
            // the `continue`s below that change nothing.
            match h.blocktype {
                BLOCKTYPE_DESCRIPTOR => {
                    if !tail_csum_ok(&b, self.jsb, self.seed) {
                        if pass != Pass::Scan {
                            return Err(self.bad(
                                this,
                                format!(
                                    "descriptor block of transaction {next_commit} \
                                     fails its checksum"
                                ),
                            ));
                        }
                        // Stale blocks from an earlier use of the log look like this; the
                        // commit block's time decides.
                        need_check_commit_time = true;
                    }
                    let tags = tags(&b, self.jsb);
                    match pass {
                        Pass::Scan if self.jsb.csum_v1() && self.end == 0 => {
                            crc32_sum = crc32_be(crc32_sum, &b);
                            for _ in 0..tags.len() {
                                let io = next_log;
                                next_log = self.wrap(next_log.saturating_add(1));
                                walked = walked.saturating_add(1);
                                match self.read(io) {
                                    Ok(d) => crc32_sum = crc32_be(crc32_sum, &d),
                                    Err(e) => {
                                        log::warn!("jbd2: cannot read log block {io}: {e}");
                                        break;
                                    }
                                }
                            }
                        }
                        Pass::Scan | Pass::Revoke => {
                            next_log = self.wrap(next_log.saturating_add(wide(tags.len())));
                            walked = walked.saturating_add(wide(tags.len()));
                        }
                        Pass::Replay => {
                            self.replay_tags(&tags, &mut next_log, &mut walked, next_commit)?
                        }
                    }
                }
                BLOCKTYPE_COMMIT => {
                    if pass != Pass::Scan {
                        next_commit = next_commit.wrapping_add(1);
                        continue;
                    }
                    let c = Commit::parse(&b);
                    if need_check_commit_time {
                        if c.sec >= last_commit_time {
                            return Err(self.bad(
                                this,
                                format!("invalid checksum found in transaction {next_commit}"),
                            ));
                        }
                        log::debug!(
                            "jbd2: checksum failure in transaction {next_commit} ignored: \
                             stale log blocks"
                        );
                        break;
                    }
                    let ok = if self.jsb.csum_v1() {
                        if self.end != 0 {
                            // An async-commit log whose earlier commit failed goes on, and
                            // here finds a later commit: the kernel sets j_failed_commit.
                            return Err(self.failed_commit(
                                this,
                                self.end,
                                "its commit block fails its checksum and this later commit \
                                 follows it (async commit)",
                            ));
                        }
                        let ok = (crc32_sum == c.chksum
                            && c.chksum_type == COMMIT_CRC32
                            && c.chksum_size == COMMIT_CRC32_SIZE)
                            || (c.chksum_type == 0 && c.chksum_size == 0 && c.chksum == 0);
                        if ok {
                            crc32_sum = !0;
                        }
                        ok
                    } else if commit_csum_ok(&b, self.jsb, self.seed) {
                        true
                    } else if commit_csum_partial_ok(&b, self.seed) {
                        log::info!(
                            "jbd2: incomplete commit block in transaction {next_commit} \
                             (journal block {this})"
                        );
                        true
                    } else {
                        false
                    };
                    if !ok {
                        // Older than the previous commit: a stale block from an earlier
                        // use of the log, so the log simply ends here.
                        if c.sec < last_commit_time {
                            break;
                        }
                        // Without async commit the commit block is written only after the
                        // rest of the transaction, so a bad one is corruption: the kernel
                        // sets j_failed_commit and jbd2_journal_load refuses the journal.
                        if !self.jsb.has_incompat(INCOMPAT_ASYNC_COMMIT) {
                            return Err(self.failed_commit(
                                this,
                                next_commit,
                                "its commit block fails its checksum and is not older than \
                                 the previous commit",
                            ));
                        }
                        log::warn!(
                            "jbd2: commit block of transaction {next_commit} (journal block \
                             {this}) fails its checksum; recovery stops before it"
                        );
                        self.end = next_commit;
                    }
                    last_commit_time = c.sec;
                    next_commit = next_commit.wrapping_add(1);
                }
                BLOCKTYPE_REVOKE => {
                    if pass == Pass::Replay {
                        continue;
                    }
                    if pass == Pass::Scan && !tail_csum_ok(&b, self.jsb, self.seed) {
                        need_check_commit_time = true;
                    }
                    self.scan_revoke(pass, &b, this, next_commit)?;
                }
                _ => break,
            }
        }
        if pass == Pass::Scan {
            if self.end == 0 {
                self.end = next_commit;
            }
        } else if self.end != next_commit {
            return Err(self.bad(
                next_log,
                format!(
                    "recovery pass ended at transaction {next_commit}, expected {}",
                    self.end
                ),
            ));
        }
        Ok(())
    }

    /// The kernel's scan_revoke_records: counts in SCAN, records in REVOKE.
    fn scan_revoke(&mut self, pass: Pass, b: &[u8], jblk: u64, sequence: u32) -> Result<()> {
        let Some(end) = revoke_records_end(b, self.jsb) else {
            return Err(self.bad(
                jblk,
                format!("revoke block of transaction {sequence} claims more records than fit"),
            ));
        };
        if pass == Pass::Scan {
            let n = end
                .saturating_sub(REVOKE_HEADER_LEN)
                .checked_div(revoke_record_len(self.jsb))
                .unwrap_or(0);
            self.out.revokes = self.out.revokes.saturating_add(wide(n));
            return Ok(());
        }
        for blk in revoke_records(b, end, self.jsb) {
            match self.revoked.get_mut(&blk) {
                // Only the latest revoking transaction matters.
                Some(seq) => {
                    if tid_gt(sequence, *seq) {
                        *seq = sequence;
                    }
                }
                None => {
                    if self.revoked.len() >= MAX_REVOKED_BLOCKS {
                        return Err(self.bad(
                            jblk,
                            format!(
                                "more than {MAX_REVOKED_BLOCKS} revoked blocks; ferry keeps \
                                 no more in memory"
                            ),
                        ));
                    }
                    self.revoked.insert(blk, sequence);
                }
            }
        }
        Ok(())
    }

    /// A block copied in transaction `sequence` is cancelled by a revoke record of that
    /// transaction or a later one (the kernel's jbd2_journal_test_revoke).
    fn is_revoked(&self, blk: u64, sequence: u32) -> bool {
        self.revoked
            .get(&blk)
            .is_some_and(|&seq| !tid_gt(sequence, seq))
    }

    /// The kernel's jbd2_do_replay for one descriptor block: each tag's log block, unless
    /// revoked, becomes the block's content (checked against its v2/v3 checksum first).
    fn replay_tags(
        &mut self,
        tags: &[Tag],
        next_log: &mut u64,
        walked: &mut u64,
        sequence: u32,
    ) -> Result<()> {
        for tag in tags {
            let io = *next_log;
            *next_log = self.wrap(next_log.saturating_add(1));
            *walked = walked.saturating_add(1);
            let at = self.locate(io)?;
            if self.is_revoked(tag.blocknr, sequence) {
                self.out.revoke_hits = self.out.revoke_hits.saturating_add(1);
                continue;
            }
            if self.jsb.csum_v2or3() {
                let data = self.read(io)?;
                if !data_csum_ok(tag, &data, sequence, self.jsb) {
                    return Err(self.bad(
                        io,
                        format!(
                            "copy of filesystem block {} in transaction {sequence} fails its \
                             checksum",
                            tag.blocknr
                        ),
                    ));
                }
            }
            if tag.blocknr >= self.device_blocks {
                return Err(self.bad(
                    io,
                    format!(
                        "transaction {sequence} writes block {}, past the device's {} blocks",
                        tag.blocknr, self.device_blocks
                    ),
                ));
            }
            if self.map.len() >= MAX_REPLAYED_BLOCKS && !self.map.contains_key(&tag.blocknr) {
                return Err(self.bad(
                    io,
                    format!(
                        "more than {MAX_REPLAYED_BLOCKS} replayed blocks; ferry keeps no \
                         more in memory"
                    ),
                ));
            }
            self.map.insert(
                tag.blocknr,
                Copy {
                    at,
                    escaped: tag.flags & FLAG_ESCAPE != 0,
                },
            );
            self.out.replays = self.out.replays.saturating_add(1);
        }
        Ok(())
    }
}
