//! Dirty registry hives with transaction logs: ferry's view of hive A plus a log (built by the
//! published format in common::regflog, since no Linux tool writes one) must equal hivex's
//! view of hive B, the hive the log turns A into. A and B are made with hivexregedit from
//! hivex's `minimal` and from the real SYSTEM hive of the corpus.

use crate::common::{self, regflog};
use crate::windows::{hivexget, listing, theirs, Listing};
use ferry::regf::{Hive, LogFile};
use std::path::{Path, PathBuf};

/// Changes B makes to A: a changed string and DWORD, a new key, and a 40 KB binary value
/// whose data cells do not fit in A's hive bins (so the log grows the hive).
fn change_reg() -> String {
    let big: Vec<String> = (0..40_000u32)
        .map(|i| format!("{:02x}", (i * 7 + 3) as u8))
        .collect();
    format!(
        "Windows Registry Editor Version 5.00\n\n[\\Ferry]\n\"Name\"=\"after\"\n\
         \"Count\"=dword:0000002a\n\n[\\Ferry\\Added]\n\"Big\"=hex:{}\n\"Note\"=\"new key\"\n",
        big.join(",")
    )
}

const BEFORE_REG: &str = "Windows Registry Editor Version 5.00\n\n[\\Ferry]\n\
    \"Name\"=\"before\"\n\"Count\"=dword:00000007\n\"Kept\"=\"same\"\n";

fn merge(hive: &Path, reg: &str) {
    let f = hive.with_extension("reg");
    std::fs::write(&f, reg).unwrap();
    common::run_tool(
        "hivexregedit",
        &[
            "--merge",
            hive.to_str().unwrap(),
            "--prefix",
            "HKEY_LOCAL_MACHINE\\X",
            f.to_str().unwrap(),
        ],
    );
}

/// Hives A (from `base` with BEFORE_REG) and B (A with change_reg()).
fn a_and_b(dir: &Path, base: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let a = dir.join(format!("{tag}-A"));
    let b = dir.join(format!("{tag}-B"));
    std::fs::copy(base, &a).unwrap();
    merge(&a, BEFORE_REG);
    std::fs::copy(&a, &b).unwrap();
    merge(&b, &change_reg());
    (a, b)
}

fn log(name: &str, data: Vec<u8>) -> LogFile {
    LogFile {
        name: name.into(),
        data,
    }
}

fn corpus() -> Option<PathBuf> {
    let c = std::env::var_os("FERRY_CORPUS")
        .map(PathBuf::from)
        .or_else(common::corpus)?;
    common::have_tools(&["hivexregedit", "hivexget"]).then_some(c)
}

fn assert_listing(got: &Listing, want: &Listing, what: &str) {
    let only_ours: Vec<_> = got.difference(want).take(5).collect();
    let only_theirs: Vec<_> = want.difference(got).take(5).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{what}: ferry only {only_ours:?}\nhivex only {only_theirs:?}"
    );
}

/// The dirty A with `logs` applied, listed.
fn recovered(a: &[u8], logs: &[LogFile]) -> (Hive, Listing) {
    let h = Hive::open_with_logs(a.to_vec(), logs).unwrap();
    let l = listing(&h);
    (h, l)
}

/// New-format logs: one log with both entries; the entries split over LOG1 (the later one)
/// and LOG2; a bad hash in either (the hive as the primary says, and a warning); and the
/// old format. Each from hivex's `minimal` and from the corpus' real SYSTEM hive.
#[test]
fn dirty_hive_with_logs_reads_as_hivex_reads_the_new_hive() {
    let Some(corpus) = corpus() else {
        eprintln!("SKIP: corpus or hivex missing");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let system = common::unpack(&corpus.join("dissect.regf/SYSTEM.gz"), tmp.path());
    for (tag, base) in [
        ("minimal", corpus.join("hivex-images/minimal")),
        ("system", system),
    ] {
        let (a_path, b_path) = a_and_b(tmp.path(), &base, tag);
        let (a_clean, b) = (
            std::fs::read(&a_path).unwrap(),
            std::fs::read(&b_path).unwrap(),
        );
        assert!(
            regflog::hbins_len(&b) > regflog::hbins_len(&a_clean),
            "{tag}: B should be larger than A"
        );
        let mut a = a_clean.clone();
        regflog::mark_dirty(&mut a);
        let seq = regflog::seqs(&a).0;
        let pages = regflog::dirty_pages(&a, &b, 4096);
        assert!(pages.len() >= 2, "{tag}: {} dirty pages", pages.len());
        let half = pages.len() / 2;
        let first = regflog::Entry {
            seq,
            hbins_len: regflog::hbins_len(&b),
            pages: pages[..half].to_vec(),
        };
        let second = regflog::Entry {
            seq: seq + 1,
            hbins_len: regflog::hbins_len(&b),
            pages: pages[half..].to_vec(),
        };
        let want_b = theirs(&b_path);
        let want_a = theirs(&a_path);
        assert_ne!(want_a, want_b);

        let one = regflog::new_log(&a, &[first.clone(), second.clone()]);
        let (h, got) = recovered(&a, &[log("X.LOG1", one), log("X.LOG2", Vec::new())]);
        assert_listing(&got, &want_b, &format!("{tag}: one new-format log"));
        assert!(
            !h.dirty() && h.recovery.warnings.is_empty(),
            "{:?}",
            h.recovery
        );
        // Value by value, as hivexget reads B.
        let v = h.value("\\Ferry\\Added", "Note").unwrap().unwrap();
        assert_eq!(
            v.string().unwrap(),
            hivexget(&b_path, "\\Ferry\\Added", "Note")
        );
        let v = h.value("\\Ferry", "Name").unwrap().unwrap();
        assert_eq!(v.string().unwrap(), hivexget(&b_path, "\\Ferry", "Name"));
        let v = h.value("\\Ferry", "Count").unwrap().unwrap();
        assert_eq!(
            v.number().unwrap().to_string(),
            hivexget(&b_path, "\\Ferry", "Count")
        );

        // Split: LOG1 holds the later entry, LOG2 the earlier.
        let log1 = regflog::new_log(&a, std::slice::from_ref(&second));
        let log2 = regflog::new_log(&a, std::slice::from_ref(&first));
        let (h, got) = recovered(
            &a,
            &[log("X.LOG1", log1.clone()), log("X.LOG2", log2.clone())],
        );
        assert_listing(&got, &want_b, &format!("{tag}: entries over LOG1 and LOG2"));
        assert_eq!(h.recovery.applied.len(), 2, "{:?}", h.recovery);
        assert!(h.recovery.applied[0].starts_with("X.LOG2"));

        // A bad hash in the one log that holds entries: the hive is A, with a warning. (With
        // LOG1 beside it, LOG1's entry would apply alone: the specification asks only that a
        // log's first entry be no older than the primary.)
        let mut bad = log2.clone();
        let n = bad.len();
        bad[n - 600] ^= 0x55;
        let (h, got) = recovered(&a, &[log("X.LOG1", Vec::new()), log("X.LOG2", bad)]);
        assert_listing(&got, &want_a, &format!("{tag}: bad hash in LOG2"));
        assert!(h.dirty());
        let w = h.recovery.warnings.join("\n");
        assert!(
            w.contains("X.LOG2: regf HvLE log entry at 0x218: Hash-1"),
            "{w}"
        );

        // Old format, 512-byte dirty pages.
        let old = regflog::old_log(&a, &b, seq);
        let (h, got) = recovered(&a, &[log("X.LOG1", old)]);
        assert_listing(&got, &want_b, &format!("{tag}: old-format log"));
        assert!(!h.dirty(), "{:?}", h.recovery);
        eprintln!(
            "{tag}: {} keys and values agree with hivex's view of B",
            want_b.len()
        );
    }
}
