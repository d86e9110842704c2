//! The qcow2 writer and the overlay, checked against an in-memory model and against qemu:
//! `qemu-img check` must find nothing (or only leaks after a kill -9), `qemu-img convert` of what
//! ferry wrote must equal the model, and the source must never change.

use crate::common;

use common::{have_tools, make_mixed_raw, pseudo_random, qemu_img, qemu_raw, Unchanged};
use ferry::block::overlay;
use ferry::block::BlockDevice;
use ferry::block::{Qcow2CreateOptions as CreateOptions, Qcow2Writer};
use std::path::Path;
use std::process::Command;

fn tools() -> bool {
    have_tools(&["qemu-img"])
}

/// `qemu-img check --output=json`, whatever its exit status (3 = leaks only, 2 = corruption).
fn check(image: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json"])
        .arg(image)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "qemu-img check of {}: {e}\n{}\n{}",
            image.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(|x| x.as_u64()).unwrap_or(0)
}

fn assert_clean(image: &Path) {
    let v = check(image);
    assert_eq!(
        (
            count(&v, "corruptions"),
            count(&v, "leaks"),
            count(&v, "check-errors")
        ),
        (0, 0, 0),
        "qemu-img check {}: {v}",
        image.display()
    );
}

/// Tiny deterministic generator for the write pattern.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` random writes of 1 byte .. 4 MiB (log-uniform sizes, unaligned, a third of them zeros)
/// into `dev` and `model`, comparing the whole device with the model every `every` writes.
fn random_writes(dev: &dyn BlockDevice, model: &mut [u8], n: usize, every: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let size = model.len() as u64;
    let mut got = vec![0u8; model.len()];
    for i in 0..n {
        let len = (1u64 << rng.below(23)).max(1);
        let len = (len + rng.below(len)).clamp(1, 4 << 20).min(size);
        let off = rng.below(size - len + 1);
        let data = if rng.below(3) == 0 {
            vec![0u8; len as usize]
        } else {
            pseudo_random(rng.next(), len as usize)
        };
        dev.write_at(&data, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        if (i + 1) % every == 0 || i + 1 == n {
            dev.read_at(&mut got, 0).unwrap();
            if got != model {
                let at = got.iter().zip(model.iter()).position(|(a, b)| a != b);
                panic!("after write {i} (off {off:#x} len {len}) the device differs from the model at {at:?}");
            }
        }
    }
}

fn overlay_case(cluster_size: u64, compat_v2: bool, writes: usize) {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_mixed_raw(&src, 48 << 20, 7);
    let _guard = Unchanged::new(&[&src]);
    let ov = dir.path().join("ov.qcow2");
    let o = CreateOptions {
        size: 48 << 20,
        cluster_size,
        compat_v2,
        backing: Some((overlay::backing_name(&src, &ov).unwrap(), "raw".into())),
        ..Default::default()
    };
    let mut model = std::fs::read(&src).unwrap();
    {
        let w = Qcow2Writer::create(&ov, &o).unwrap();
        random_writes(&w, &mut model, writes, 100, cluster_size ^ 0x5eed);
        w.flush().unwrap();
    }
    assert_clean(&ov);
    assert!(
        qemu_raw(&ov, dir.path()) == model,
        "qemu reads other data than the model"
    );
    // Reopened by ferry (writer and reader) it reads the same.
    let r = ferry::block::open(&ov).unwrap();
    assert!(common::read_all(&r, 1 << 20) == model);
    let w = overlay::open(&ov).unwrap();
    random_writes(&w, &mut model, writes / 10, 50, 99);
    drop(w);
    assert_clean(&ov);
    assert!(qemu_raw(&ov, dir.path()) == model);
}

#[test]
fn random_writes_v3_64k_clusters() {
    overlay_case(64 << 10, false, 1500);
}

#[test]
fn random_writes_v2_4k_clusters() {
    overlay_case(4 << 10, true, 600);
}

#[test]
fn overlay_is_read_by_qemu_as_a_chain() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("base.qcow2");
    let raw = dir.path().join("base.raw");
    make_mixed_raw(&raw, 16 << 20, 3);
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let _guard = Unchanged::new(&[&src]);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let ov = dir.path().join("sub/ov.qcow2");
    let w = overlay::create(&src, &ov).unwrap();
    assert_eq!(w.header().backing_file.as_deref(), Some("../base.qcow2"));
    drop(w);
    assert_clean(&ov);
    let info: serde_json::Value = serde_json::from_str(&qemu_img(&[
        "info",
        "--backing-chain",
        "--output=json",
        ov.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info[0]["backing-filename"], "../base.qcow2");
    assert_eq!(info[0]["backing-filename-format"], "qcow2");
    assert_eq!(info[0]["virtual-size"], 16 << 20);
    assert_eq!(info[1]["format"], "qcow2");
    qemu_img(&["compare", ov.to_str().unwrap(), raw.to_str().unwrap()]);
    // Writes through ferry, then through qemu-io on top of ferry's: both readers agree.
    let mut model = std::fs::read(&raw).unwrap();
    let w = overlay::open(&ov).unwrap();
    random_writes(&w, &mut model, 200, 200, 5);
    drop(w);
    common::qemu_io("qcow2", &ov, &["write -P 0xab 1000 70000"]);
    model[1000..71000].fill(0xab);
    assert_clean(&ov);
    let r = ferry::block::open(&ov).unwrap();
    assert!(common::read_all(&r, 1 << 20) == model);
    assert!(
        overlay::create(&src, &ov).is_err(),
        "an existing overlay must not be replaced"
    );
}

#[test]
fn qemu_overlay_is_writable_by_ferry() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_mixed_raw(&src, 24 << 20, 11);
    let _guard = Unchanged::new(&[&src]);
    let ov = dir.path().join("q.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "src.raw",
        "-F",
        "raw",
        ov.to_str().unwrap(),
    ]);
    common::qemu_io(
        "qcow2",
        &ov,
        &["write -P 0x11 0 3M", "write -z 5M 2M", "write -P 7 9000 5"],
    );
    let mut model = qemu_raw(&ov, dir.path());
    let w = overlay::open(&ov).unwrap();
    random_writes(&w, &mut model, 400, 100, 17);
    drop(w);
    assert_clean(&ov);
    assert!(qemu_raw(&ov, dir.path()) == model);
}

#[test]
fn small_clusters_grow_the_refcount_table() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.qcow2");
    let o = CreateOptions {
        size: 64 << 20,
        cluster_size: 512,
        ..Default::default()
    };
    let w = Qcow2Writer::create(&img, &o).unwrap();
    let mut model = vec![0u8; 64 << 20];
    // 24 MiB of data in 512-byte clusters: three times what the first refcount table covers.
    for i in 0..24u64 {
        let d = pseudo_random(i, 1 << 20);
        let off = i * (5 << 19) % (60 << 20);
        w.write_at(&d, off).unwrap();
        model[off as usize..off as usize + d.len()].copy_from_slice(&d);
    }
    let first = w.header().refcount_table_offset;
    drop(w);
    let h = ferry::block::overlay::open(&img).unwrap();
    assert_ne!(
        h.header().refcount_table_offset,
        first,
        "the table should have moved"
    );
    drop(h);
    assert_clean(&img);
    assert!(qemu_raw(&img, dir.path()) == model);
}

/// Child half of the crash test: writes forever into the overlay named by the environment.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var("FERRY_CRASH_CHILD") else {
        return;
    };
    let w = overlay::open(Path::new(&path)).unwrap();
    let size = w.len();
    let mut rng = Rng(std::process::id() as u64);
    loop {
        let len = (1 + rng.below(1 << 20)).min(size);
        let off = rng.below(size - len + 1);
        let data = if rng.below(4) == 0 {
            vec![0u8; len as usize]
        } else {
            pseudo_random(rng.next(), len as usize)
        };
        w.write_at(&data, off).unwrap();
    }
}

#[test]
fn kill_9_leaves_at_most_leaks() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_mixed_raw(&src, 32 << 20, 5);
    let _guard = Unchanged::new(&[&src]);
    let mut rng = Rng(0xc0ffee);
    for round in 0..8 {
        // Small clusters in some rounds, so refcount blocks and table growth are hit too.
        let ov = dir.path().join(format!("ov{round}.qcow2"));
        let o = CreateOptions {
            size: 32 << 20,
            cluster_size: if round % 2 == 0 { 512 } else { 64 << 10 },
            backing: Some(("src.raw".into(), "raw".into())),
            ..Default::default()
        };
        drop(Qcow2Writer::create(&ov, &o).unwrap());
        let empty = std::fs::metadata(&ov).unwrap().len();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "qcow2_write::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FERRY_CRASH_CHILD", &ov)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + rng.below(600)));
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let st = child.wait().unwrap();
        assert!(!st.success(), "the child should have been killed");
        let grown = std::fs::metadata(&ov).unwrap().len();
        assert!(
            grown > empty + (1 << 20),
            "round {round}: the child wrote too little ({grown} bytes)"
        );
        let v = check(&ov);
        assert_eq!(
            (count(&v, "corruptions"), count(&v, "check-errors")),
            (0, 0),
            "round {round}: qemu-img check after kill -9: {v}"
        );
        // Both ferry and qemu open and read it whole; ferry can write on.
        let r = ferry::block::open(&ov).unwrap();
        let _ = common::read_all(&r, 4 << 20);
        qemu_raw(&ov, dir.path());
        let w = overlay::open(&ov).unwrap();
        w.write_at(b"after the crash", 12345).unwrap();
    }
}

#[test]
fn garbled_images_fail_cleanly_when_written() {
    if !tools() {
        return;
    }
    // A small image with data, a zero cluster and a compressed cluster; then mutants of its
    // header and tables opened read-write: every operation returns, no panic, no hang.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("g.qcow2");
    let o = CreateOptions {
        size: 4 << 20,
        cluster_size: 4096,
        ..Default::default()
    };
    let w = Qcow2Writer::create(&img, &o).unwrap();
    w.write_at(&pseudo_random(1, 100_000), 5000).unwrap();
    w.write_at(&[0u8; 8192], 1 << 20).unwrap();
    let text = b"compressible ".repeat(400);
    let z = w.compress_cluster(&text[..4096]).unwrap();
    w.write_compressed(600, &z).unwrap();
    drop(w);
    assert_clean(&img);
    let orig = std::fs::read(&img).unwrap();
    let hot = [(0, 112), (4096, 4096 * 4), (orig.len() - 8192, orig.len())];
    let m = dir.path().join("m.qcow2");
    for (i, bytes) in common::mutants(&orig, &hot, 300, 42).enumerate() {
        std::fs::write(&m, &bytes).unwrap();
        let Ok(w) = Qcow2Writer::open(&m) else {
            continue;
        };
        let mut buf = vec![0u8; 64 << 10];
        let _ = w.read_at(&mut buf, 0);
        let _ = w.write_at(&pseudo_random(i as u64, 70_000), 3000);
        let _ = w.write_at(&[0u8; 4096], 600 * 4096);
        let _ = w.write_at(b"x", w.len() - 1);
        let _ = w.extents(0, w.len());
        let _ = w.read_at(&mut buf, 600 * 4096 - 100);
    }
}
