//! Registry transaction logs: the input is split into a hive and up to two logs (two
//! little-endian u32 lengths first), the logs applied in memory, then a bounded walk of the
//! result. Seed it with a dirty hive and its logs (the writer in
//! tests/integration/common/regflog.rs makes both formats).
#![no_main]

use ferry::regf::{Hive, LogFile};
use libfuzzer_sys::fuzz_target;

fn take<'a>(data: &mut &'a [u8], len: usize) -> &'a [u8] {
    let n = len.min(data.len());
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

fn len(d: &mut &[u8]) -> usize {
    let b = take(d, 4);
    let mut w = [0u8; 4];
    w[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(w) as usize
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let (l1, l2) = (len(&mut data), len(&mut data));
    let log1 = take(&mut data, l1).to_vec();
    let log2 = take(&mut data, l2).to_vec();
    let logs = [
        LogFile {
            name: "HIVE.LOG1".into(),
            data: log1,
        },
        LogFile {
            name: "HIVE.LOG2".into(),
            data: log2,
        },
    ];
    if let Ok(hive) = Hive::open_with_logs(data.to_vec(), &logs) {
        let _ = hive.walk(&mut |_, k| {
            for v in k.values()? {
                let _ = v.typed();
            }
            Ok(())
        });
    }
});
