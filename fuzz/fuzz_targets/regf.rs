//! Registry hives: open, walk every key (bounded depth, loops refused) and read every value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hive) = ferry::regf::Hive::open(data.to_vec()) {
        let _ = hive.walk(&mut |_, k| {
            for v in k.values()? {
                let _ = v.typed();
            }
            Ok(())
        });
        let _ = hive.key("\\Select\\Current");
    }
});
