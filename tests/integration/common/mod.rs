//! Shared helpers for integration tests: run the real tools (qemu-img), make deterministic
//! content, hash sources before and after, find the corpus.

pub(crate) mod guest;
pub(crate) mod lvm;
pub(crate) mod ntfs3g;
pub(crate) mod regflog;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub(crate) mod kernel;

/// Runs `cmd` with sh -c, panicking loudly if it fails; returns its output.
pub(crate) fn sh(cmd: &str) -> String {
    run(Command::new("sh").arg("-c").arg(cmd))
}

/// Runs a command, panicking with its output if it fails (tests want a loud failure).
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img ARGS...`
pub(crate) fn qemu_img(args: &[&str]) -> String {
    run(Command::new("qemu-img").args(args))
}

/// `qemu-io -f FMT -c CMD... FILE`, each command a separate -c.
pub(crate) fn qemu_io(fmt: &str, file: &Path, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg(fmt);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(file);
    run(&mut c);
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub(crate) fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a raw disk of `size` bytes with a mix of random, compressible text-like, zero and
/// hole regions (`seed` picks the pattern), as real guests look.
pub(crate) fn make_mixed_raw(path: &Path, size: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let chunk = 192 * 1024 + 4096 * 3; // not a multiple of any cluster size
    let mut off = 0u64;
    let mut i = seed;
    while off < size {
        let len = (chunk as u64).min(size - off) as usize;
        match i % 5 {
            0 | 1 => f.write_all_at(&pseudo_random(i, len), off).unwrap(),
            2 => {
                let text: Vec<u8> = format!("line {i} of a log file, fairly compressible\n")
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(len)
                    .collect();
                f.write_all_at(&text, off).unwrap()
            }
            3 => f.write_all_at(&vec![0u8; len], off).unwrap(), // written zeros
            _ => {}                                             // hole
        }
        off += len as u64;
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 7;
    }
}

pub(crate) fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// Hashes files when created and asserts on drop that they did not change: "the source is sacred".
pub(crate) struct Unchanged(Vec<(PathBuf, String)>);

impl Unchanged {
    pub(crate) fn new(paths: &[&Path]) -> Self {
        Unchanged(
            paths
                .iter()
                .map(|p| (p.to_path_buf(), sha256_file(p)))
                .collect(),
        )
    }
}

impl Drop for Unchanged {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (p, h) in &self.0 {
            assert_eq!(
                &sha256_file(p),
                h,
                "{} changed while ferry had it open",
                p.display()
            );
        }
    }
}

/// Reads the whole device through the library in `chunk`-byte reads.
pub(crate) fn read_all(dev: &Arc<dyn ferry::block::BlockDevice>, chunk: usize) -> Vec<u8> {
    let len = dev.len() as usize;
    let mut out = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        dev.read_at(&mut out[off..off + n], off as u64).unwrap();
        off += n;
    }
    out
}

/// `qemu-img convert -O raw` of `src` into `dir`, returned as bytes.
pub(crate) fn qemu_raw(src: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.qemu.raw",
        src.file_name().unwrap().to_string_lossy()
    ));
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

/// The shared corpus of real images (../shared/corpus), or None with a loud message.
pub(crate) fn corpus() -> Option<PathBuf> {
    // FERRY_CORPUS names it from a worktree elsewhere.
    let p = std::env::var_os("FERRY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared/corpus is absent; corpus tests not run");
        None
    }
}

/// Decompresses a corpus file (.gz/.bz2/.zst or plain) into `dir`, returning the new path.
pub(crate) fn unpack(src: &Path, dir: &Path) -> PathBuf {
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    let (stem, tool) = if let Some(s) = name.strip_suffix(".gz") {
        (s.to_string(), Some("gzip"))
    } else if let Some(s) = name.strip_suffix(".bz2") {
        (s.to_string(), Some("bzip2"))
    } else if let Some(s) = name.strip_suffix(".zst") {
        (s.to_string(), Some("zstd"))
    } else {
        (name.clone(), None)
    };
    let dst = dir.join(stem);
    match tool {
        Some(t) => {
            let out = Command::new(t).arg("-dc").arg(src).output().unwrap();
            assert!(out.status.success(), "{t} -dc {} failed", src.display());
            std::fs::write(&dst, out.stdout).unwrap();
        }
        None => {
            std::fs::copy(src, &dst).unwrap();
        }
    }
    dst
}

/// Runs the built `ferry` with `args`.
pub(crate) fn run_ferry(args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin()).args(args).output().unwrap()
}

/// Runs `ferry` with `args`, which must succeed; returns its stdout.
pub(crate) fn ferry_ok(args: &[&str]) -> String {
    let o = run_ferry(args);
    assert!(
        o.status.success(),
        "ferry {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Path of the built `ferry` binary.
pub(crate) fn ferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// What qemu or ferry says a byte range holds, reduced to what both must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    pub data: bool,
    pub zero: bool,
    pub present: bool,
}

/// A `map --json` answer, qemu-img's or ferry's, as (start, length, zero, data, host offset).
pub(crate) fn map_json_shape(v: &serde_json::Value) -> Vec<(u64, u64, bool, bool, Option<u64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["zero"].as_bool().unwrap(),
                e["data"].as_bool().unwrap(),
                e["offset"].as_u64(),
            )
        })
        .collect()
}

/// `qemu-img map --output=json IMAGE` as (start, length, class) triples.
pub(crate) fn qemu_map_classes(image: &Path) -> Vec<(u64, u64, Class)> {
    let out = qemu_img(&["map", "--output=json", image.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let data = e["data"].as_bool().unwrap();
            let zero = e["zero"].as_bool().unwrap();
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                Class {
                    data: data && !zero,
                    zero,
                    present: e["present"].as_bool().unwrap(),
                },
            )
        })
        .collect()
}

/// Opens `path` and exercises the device (reads spread over it, extents of it) on a thread with a
/// deadline. Returns Ok(()) or the first error's text; panics if ferry panicked or hung.
pub(crate) fn exercise(path: &Path) -> Result<(), String> {
    let p = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| -> Result<(), String> {
            let dev = ferry::block::open(&p).map_err(|e| e.to_string())?;
            let len = dev.len();
            // Up to 64 reads of 64 KiB spread over the device, and the first MiB in odd pieces.
            let mut buf = vec![0u8; 65536];
            for i in 0..64u64 {
                let off = (len / 64).saturating_mul(i);
                let n = 65536.min(len.saturating_sub(off)) as usize;
                dev.read_at(&mut buf[..n], off).map_err(|e| e.to_string())?;
            }
            let mut off = 0;
            while off < len.min(1 << 20) {
                let n = 7777.min(len - off) as usize;
                dev.read_at(&mut buf[..n], off).map_err(|e| e.to_string())?;
                off += n as u64;
            }
            let mut count = 0u64;
            ferry::block::for_each_extent(
                dev.as_ref(),
                0,
                len,
                |_| -> Result<(), ferry::block::Error> {
                    count += 1;
                    Ok(())
                },
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => panic!("ferry panicked on {}", path.display()),
        Err(_) => panic!("ferry hung (>30 s) on {}", path.display()),
    }
}

/// Deterministic mutants of `orig`: `n` images, each with a few bytes changed, preferably in
/// `hot` ranges (headers and tables) where a flip matters most. Made one at a time as the
/// iterator is walked, so only one copy of the image is in memory.
pub(crate) fn mutants<'a>(
    orig: &'a [u8],
    hot: &'a [(usize, usize)],
    n: usize,
    seed: u64,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let r = pseudo_random(seed, n * 64);
    (0..n).map(move |i| {
        let mut m = orig.to_vec();
        let rnd = &r[i * 64..(i + 1) * 64];
        let flips = 1 + (rnd[0] % 4) as usize;
        for k in 0..flips {
            let word = u64::from_le_bytes(rnd[8 + k * 8..16 + k * 8].try_into().unwrap());
            let (lo, hi) = if !hot.is_empty() && rnd[1] % 4 != 0 {
                hot[(word as usize >> 3) % hot.len()]
            } else {
                (0, m.len())
            };
            let hi = hi.min(m.len());
            if hi <= lo {
                continue;
            }
            let at = lo + (word as usize % (hi - lo));
            m[at] = match rnd[2 + k] % 4 {
                0 => 0xff,
                1 => 0,
                2 => m[at] ^ (1 << ((word >> 40) % 8)),
                _ => rnd[40 + k],
            };
        }
        m
    })
}

/// One run of `qemu-img map --output=json`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct QemuMapEntry {
    pub start: u64,
    pub length: u64,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    /// Printed by qemu-img 8.2 and later.
    #[serde(default)]
    pub compressed: bool,
}

/// `qemu-img map --output=json IMAGE`, parsed.
pub(crate) fn qemu_map(image: &Path) -> Vec<QemuMapEntry> {
    let out = qemu_img(&["map", "--output=json", image.to_str().unwrap()]);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("cannot parse qemu-img map output: {e}\n{out}"))
}

/// Asserts that `dev.extents()` classifies every byte as `qemu-img map` does for `image`:
/// qemu data && !zero ⇔ ours Data; qemu zero ⇔ ours Zero or Hole; qemu present ⇔ ours not Hole.
/// Works for any format qemu-img reads: it walks both run lists side by side.
pub(crate) fn assert_map_matches(dev: &Arc<dyn ferry::block::BlockDevice>, image: &Path) {
    let qemu_end = qemu_map(image).last().map_or(0, |e| e.start + e.length);
    assert_eq!(
        qemu_end,
        dev.len(),
        "qemu-img map covers {qemu_end} bytes, the device has {}",
        dev.len()
    );
    assert_map_matches_upto(dev, image, dev.len());
}

/// `assert_map_matches` for the first `len` bytes only (qemu may see a longer disk).
pub(crate) fn assert_map_matches_upto(
    dev: &Arc<dyn ferry::block::BlockDevice>,
    image: &Path,
    len: u64,
) {
    use ferry::block::ExtentKind;
    let qemu = qemu_map(image);
    let ours = dev.extents(0, len).unwrap();
    let qemu_end = qemu.last().map_or(0, |e| e.start + e.length);
    assert!(
        qemu_end >= len,
        "qemu-img map covers {qemu_end} bytes, fewer than {len}"
    );
    let ours_end = ours.last().map_or(0, |e| e.end());
    assert_eq!(ours_end, len, "extents() covers {ours_end} bytes of {len}");
    let (mut qi, mut oi, mut pos) = (0usize, 0usize, 0u64);
    while pos < len {
        while qemu[qi].start + qemu[qi].length <= pos {
            qi += 1;
        }
        while ours[oi].end() <= pos {
            oi += 1;
        }
        let (q, o) = (&qemu[qi], &ours[oi]);
        let ok = ((q.data && !q.zero) == (o.kind == ExtentKind::Data))
            && (q.zero == matches!(o.kind, ExtentKind::Zero | ExtentKind::Hole))
            && (q.present == (o.kind != ExtentKind::Hole));
        assert!(
            ok,
            "{}: at byte {pos:#x} qemu says {q:?}, ferry says {o:?}",
            image.display()
        );
        pos = (q.start + q.length).min(o.end());
    }
}

/// Compares the first `dev.len()` bytes of `dev` with qemu's raw conversion of `image` without
/// holding either in memory: only ranges that either side maps as data are read and compared
/// (the rest must be zeros on both sides, which the map comparison checks). For images of many
/// GiB.
pub(crate) fn compare_sparse_with_qemu(
    dev: &Arc<dyn ferry::block::BlockDevice>,
    image: &Path,
    dir: &Path,
) {
    use ferry::block::{ExtentKind, Format};
    let out = dir.join(format!(
        "{}.qemu.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let raw = ferry::block::open_as(&out, Some(Format::Raw)).unwrap();
    let len = dev.len();
    assert!(
        raw.len() >= len,
        "qemu's disk is {} bytes, ours {len}",
        raw.len()
    );
    let mut ranges: Vec<(u64, u64)> = dev
        .extents(0, len)
        .unwrap()
        .into_iter()
        .chain(raw.extents(0, len).unwrap())
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| (e.offset, e.end()))
        .collect();
    ranges.sort();
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut done = 0u64;
    for (start, end) in ranges {
        let mut pos = start.max(done);
        while pos < end {
            let n = (end - pos).min(1 << 20) as usize;
            dev.read_at(&mut a[..n], pos).unwrap();
            raw.read_at(&mut b[..n], pos).unwrap();
            if let Some(i) = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y) {
                panic!(
                    "{}: differs from qemu at byte {:#x}",
                    image.display(),
                    pos + i as u64
                );
            }
            pos += n as u64;
        }
        done = done.max(end);
    }
    std::fs::remove_file(&out).unwrap();
    assert_map_matches_upto(dev, image, len);
}

/// Full path of a system tool, looking in PATH and the sbin directories (mkfs.* live there and
/// a non-root PATH often lacks them).
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when every tool is installed. Otherwise skips loudly, or fails when FERRY_REQUIRE_FUSE=1
/// (CI must not skip silently).
pub(crate) fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("FERRY_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("required tools missing (FERRY_REQUIRE_FUSE=1): {missing:?}");
    }
    eprintln!("SKIP: tools missing: {missing:?} (bash contrib/setup.sh installs them)");
    false
}

/// `NAME ARGS...` for a tool found by `tool`, panicking loudly on failure.
pub(crate) fn run_tool(name: &str, args: &[&str]) -> String {
    let t = tool(name).unwrap_or_else(|| panic!("{name} not installed"));
    run(Command::new(t).args(args))
}

/// `blkid -p -o export FILE` as key/value pairs (empty when blkid finds nothing).
pub(crate) fn blkid(file: &Path) -> std::collections::BTreeMap<String, String> {
    let t = tool("blkid").expect("blkid");
    let out = Command::new(t)
        .args(["-p", "-o", "export"])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unescape_shell(v)))
        .collect()
}

/// Undoes `blkid -o export`'s shell quoting (a backslash before special characters).
fn unescape_shell(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `sfdisk --json IMAGE`, parsed.
pub(crate) fn sfdisk_json(image: &Path) -> serde_json::Value {
    let out = run_tool("sfdisk", &["--json", image.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

/// Runs `cmd` with `input` on its standard input; its output, whatever the exit status.
pub(crate) fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // The writer thread lets a command that answers before reading everything not deadlock.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// Creates a sparse raw file of `size` bytes and partitions it with `sfdisk` reading `script`.
pub(crate) fn sfdisk_image(path: &Path, size: u64, script: &str) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let out = run_with_stdin(
        Command::new(tool("sfdisk").expect("sfdisk"))
            .args(["-q", "--no-reread", "--no-tell-kernel"])
            .arg(path),
        script.as_bytes(),
    );
    assert!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies `src` into `image` at byte `offset` without writing its zero blocks (the image stays
/// sparse), as `dd conv=notrunc,sparse` does.
pub(crate) fn write_into(image: &Path, offset: u64, src: &Path) {
    run_tool(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", image.display()),
            "bs=1M",
            "conv=notrunc,sparse",
            "oflag=seek_bytes",
            &format!("seek={offset}"),
            "status=none",
        ],
    );
}

/// Runs `ferry ARGS...`, asserts it succeeded and parses its JSON output.
pub(crate) fn ferry_json<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> serde_json::Value {
    let out = Command::new(ferry_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ferry failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Opens a damaged filesystem with `open` and walks all of it (statfs, free space, every
/// directory, lookups as listed and in lower case, attributes, xattrs, link targets, the first
/// MiBs of each file) on a thread with a deadline; true if it opened. Panics if ferry panicked
/// or took more than 30 s (`what` names the filesystem in the message).
pub(crate) fn walk_bounded(
    what: &'static str,
    open: impl FnOnce() -> Option<Box<dyn ferry::fs::Filesystem>>
        + Send
        + std::panic::UnwindSafe
        + 'static,
) -> bool {
    use ferry::fs::FileType;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(move || {
            let Some(fs) = open() else {
                return false;
            };
            let _ = fs.statfs();
            let _ = fs.unused();
            let mut todo = vec![fs.root_ino()];
            let mut seen = std::collections::HashSet::new();
            let mut buf = vec![0u8; 1 << 16];
            while let Some(dir) = todo.pop() {
                if !seen.insert(dir) || seen.len() > 5000 {
                    continue;
                }
                let mut entries = Vec::new();
                let _ = fs.readdir(dir, 0, &mut |e, _| {
                    entries.push(e);
                    true
                });
                for e in entries {
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    let _ = fs.lookup(dir, &e.name);
                    let _ = fs.lookup(dir, &e.name.to_ascii_lowercase());
                    let _ = fs.getattr(e.ino);
                    let _ = fs.listxattr(e.ino).map(|l| {
                        for n in l {
                            let _ = fs.getxattr(e.ino, &n);
                        }
                    });
                    match e.kind {
                        FileType::Directory => todo.push(e.ino),
                        FileType::Symlink => {
                            let _ = fs.readlink(e.ino);
                        }
                        _ => {
                            let mut off = 0;
                            while let Ok(n) = fs.read(e.ino, off, &mut buf) {
                                if n == 0 || off > 4 << 20 {
                                    break;
                                }
                                off += n as u64;
                            }
                        }
                    }
                }
            }
            true
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Ok(opened)) => opened,
        Ok(Err(_)) => panic!("ferry panicked on a damaged {what} volume"),
        Err(_) => panic!("ferry hung (>30 s) on a damaged {what} volume"),
    }
}
