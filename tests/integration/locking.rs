//! Image locking against the real qemu tools (issue 17): ferry takes the byte-range OFD locks
//! qemu takes (block/file-posix.c), so a qemu-io/qemu-nbd writer keeps ferry's readers and
//! writers out (unless -U for readers), and ferry's writers keep qemu out. The bytes ferry locks
//! are compared with the ones qemu-io locks in /proc/locks; every refusal leaves the images as
//! they were.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a peer to take its locks.
const PEER_START: Duration = Duration::from_secs(20);

/// The OFD lock bytes held on `path`'s inode, sorted (every holder's, merged).
fn locked_bytes(path: &Path) -> Vec<i64> {
    let m = std::fs::metadata(path).unwrap();
    let ino = format!(":{}", m.ino());
    let text = std::fs::read_to_string("/proc/locks").unwrap();
    let mut out: Vec<i64> = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = w.iter().position(|x| *x == "OFDLCK")?;
            if !w.get(at + 4)?.ends_with(&ino) {
                return None;
            }
            let start: i64 = w.get(at + 5)?.parse().ok()?;
            let end: i64 = w.get(at + 6)?.parse().ok()?;
            Some(start..=end)
        })
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A qemu tool holding an image open; killed (and reaped) on drop.
struct Peer(Child);

impl Peer {
    /// Starts `cmd` and waits until `path` carries the lock on `byte`.
    fn start(cmd: &mut Command, path: &Path, byte: i64) -> Peer {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut p = Peer(child);
        let t = Instant::now();
        while !locked_bytes(path).contains(&byte) {
            if let Ok(Some(st)) = p.0.try_wait() {
                panic!("{cmd:?} exited ({st}) before locking {}", path.display());
            }
            assert!(
                t.elapsed() < PEER_START,
                "{cmd:?} did not lock byte {byte} of {} within {PEER_START:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// `qemu-io` with the image open for writing (read-only with `-r` in `extra`), idle.
    fn qemu_io(fmt: &str, path: &Path, extra: &[&str]) -> Peer {
        let byte = if extra.contains(&"-r") { 100 } else { 101 };
        Peer::start(
            Command::new("qemu-io")
                .args(["-f", fmt])
                .args(extra)
                .args(["-c", "sleep 600000"])
                .arg(path),
            path,
            byte,
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ferry(args: &[&str]) -> Output {
    common::run_ferry(args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `o` failed naming `path` and the lock qemu would name (`"write" lock` or
/// `shared "write" lock`).
fn assert_refused(o: &Output, path: &Path, lock: &str, what: &str) {
    let e = stderr(o);
    assert!(!o.status.success(), "{what} succeeded: {e}");
    assert_eq!(o.status.code(), Some(1), "{what}: {e}");
    assert!(
        e.contains(&path.display().to_string()) && e.contains(lock),
        "{what}: the message names neither {} nor {lock}: {e}",
        path.display()
    );
}

/// qemu's own refusal (stderr) must name the same permission.
fn qemu_says(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        !o.status.success(),
        "{cmd:?} succeeded where it should be refused"
    );
    stderr(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A qcow2 image with data, made by qemu.
fn qcow2_with_data(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    common::qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "16M"]);
    common::qemu_io("qcow2", &p, &["write -P 0x5a 1M 2M"]);
    p
}

#[test]
fn ferry_takes_the_bytes_qemu_takes() {
    let d = tempfile::tempdir().unwrap();
    let mine = qcow2_with_data(d.path(), "mine.qcow2");
    let theirs = qcow2_with_data(d.path(), "theirs.qcow2");
    // A reader: ferry's open image against `qemu-io -r`.
    let dev = ferry::block::open(&mine).unwrap();
    let peer = Peer::qemu_io("qcow2", &theirs, &["-r"]);
    assert_eq!(locked_bytes(&mine), locked_bytes(&theirs), "reader bytes");
    drop(peer);
    drop(dev);
    assert!(locked_bytes(&mine).is_empty(), "closing releases the locks");
    // A writer: ferry's qcow2 writer against `qemu-io`.
    let w = ferry::block::overlay::open(&mine).unwrap();
    let peer = Peer::qemu_io("qcow2", &theirs, &[]);
    assert_eq!(locked_bytes(&mine), locked_bytes(&theirs), "writer bytes");
    drop(peer);
    drop(w);
    assert!(locked_bytes(&mine).is_empty(), "closing releases the locks");
}

#[test]
fn a_qemu_writer_keeps_ferry_out_and_force_share_reads() {
    let d = tempfile::tempdir().unwrap();
    let img = qcow2_with_data(d.path(), "vm.qcow2");
    let other = d.path().join("other.raw");
    std::fs::write(&other, vec![7u8; 1 << 20]).unwrap();
    let out = d.path().join("out.raw");
    let ov = d.path().join("ov.qcow2");
    let _same = common::Unchanged::new(&[&img]);
    let peer = Peer::qemu_io("qcow2", &img, &[]);

    // Readers, as qemu-img's: refused, and qemu-img agrees on the permission.
    let q = qemu_says(Command::new("qemu-img").args(["info", s(&img)]));
    assert!(q.contains("shared \"write\" lock"), "{q}");
    let shared = "shared \"write\" lock";
    assert_refused(&ferry(&["info", s(&img)]), &img, shared, "info");
    assert_refused(&ferry(&["map", s(&img)]), &img, shared, "map");
    let o = ferry(&["convert", "-O", "raw", s(&img), s(&out)]);
    assert_refused(&o, &img, shared, "convert from it");
    assert!(!out.exists(), "a refused convert leaves no output");
    assert_refused(
        &ferry(&["overlay", "create", s(&img), s(&ov)]),
        &img,
        shared,
        "an overlay over it",
    );
    assert!(!ov.exists());
    // -U reads it anyway, as qemu-img -U does.
    common::qemu_img(&["info", "-U", s(&img)]);
    let info = common::ferry_ok(&["info", "-U", "--json", s(&img)]);
    assert!(info.contains("qcow2"), "{info}");
    common::ferry_ok(&["convert", "-U", "-O", "raw", s(&img), s(&out)]);
    let data = std::fs::read(&out).unwrap();
    assert!(data[1 << 20..3 << 20].iter().all(|&b| b == 0x5a));
    std::fs::remove_file(&out).unwrap();

    // Writers: refused before anything is truncated; qemu-img convert is refused the same way.
    let q = qemu_says(Command::new("qemu-img").args([
        "convert",
        "-n",
        "-O",
        "qcow2",
        s(&other),
        s(&img),
    ]));
    assert!(q.contains("\"write\" lock"), "{q}");
    let o = ferry(&["convert", "-O", "qcow2", s(&other), s(&img)]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = ferry(&["convert", "-O", "qcow2", "--overwrite", s(&other), s(&img)]);
    assert_refused(&o, &img, "\"write\" lock", "convert onto it");
    // -n (write into the existing image) is refused the same way, before anything is written.
    let o = ferry(&["convert", "-n", "-O", "qcow2", s(&other), s(&img)]);
    assert_refused(&o, &img, "\"write\" lock", "convert -n into it");

    // Once qemu-io is gone, everything works again.
    drop(peer);
    common::ferry_ok(&["info", s(&img)]);
    common::ferry_ok(&["overlay", "create", s(&img), s(&ov)]);
}

/// `convert -n` into a raw image that qemu-io holds open for writing is refused, the target
/// untouched: a raw image's qemu writer shares "write", so qemu-img would write beside it, but
/// ferry never writes an image another writer has open (issue 17). Once qemu-io is gone the same
/// command writes it.
#[test]
fn convert_n_into_a_raw_image_qemu_writes_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.raw");
    std::fs::write(&src, vec![7u8; 1 << 20]).unwrap();
    let dst = d.path().join("dst.raw");
    std::fs::write(&dst, vec![1u8; 2 << 20]).unwrap();
    let peer = Peer::qemu_io("raw", &dst, &[]);
    {
        let _same = common::Unchanged::new(&[&src, &dst]);
        let o = ferry(&["convert", "-n", "-O", "raw", s(&src), s(&dst)]);
        assert_refused(
            &o,
            &dst,
            "shared \"write\" lock",
            "convert -n into a raw image",
        );
    }
    drop(peer);
    common::ferry_ok(&["convert", "-n", "-O", "raw", s(&src), s(&dst)]);
    let data = std::fs::read(&dst).unwrap();
    assert!(data[..1 << 20].iter().all(|&b| b == 7));
    assert!(
        data[1 << 20..].iter().all(|&b| b == 1),
        "past the source: kept"
    );
}

#[test]
fn qemu_nbd_serving_for_writing_keeps_ferry_writers_out() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.raw");
    std::fs::write(&img, common::pseudo_random(3, 4 << 20)).unwrap();
    let src = qcow2_with_data(d.path(), "src.qcow2");
    let _same = common::Unchanged::new(&[&img]);
    let sock = d.path().join("nbd.sock");
    let _peer = Peer::start(
        Command::new("qemu-nbd")
            .args(["-t", "-f", "raw", "-k"])
            .arg(&sock)
            .arg(&img),
        &img,
        101,
    );
    // qemu-nbd shares "write" on a raw image but not "resize": qemu-img convert names that,
    // and so must ferry.
    let q = qemu_says(Command::new("qemu-img").args(["convert", "-O", "raw", s(&src), s(&img)]));
    assert!(q.contains("\"resize\" lock"), "{q}");
    let o = ferry(&["convert", "-O", "raw", "--overwrite", s(&src), s(&img)]);
    assert_refused(&o, &img, "\"resize\" lock", "convert onto a served image");
}

#[test]
fn commit_into_a_source_qemu_writes_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("base.raw");
    std::fs::write(&src, vec![0u8; 4 << 20]).unwrap();
    let ov = d.path().join("top.qcow2");
    common::qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&src),
        "-F",
        "raw",
        s(&ov),
    ]);
    common::qemu_io("qcow2", &ov, &["write -P 0x11 0 64k"]);
    let _same = common::Unchanged::new(&[&src, &ov]);
    let _peer = Peer::qemu_io("raw", &src, &[]);
    let o = ferry(&["commit", s(&ov), "--into-source", "--yes"]);
    assert_refused(&o, &src, "\"write\" lock", "commit into a source in use");
}

#[test]
fn ferry_writers_keep_qemu_out_until_closed() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("base.raw");
    std::fs::write(&src, vec![0u8; 4 << 20]).unwrap();
    let ov = d.path().join("base-overlay.qcow2");
    let w = ferry::block::overlay::create(&src, &ov).unwrap();
    // The overlay ferry writes: qemu-img info (shared locks) is refused, as for a running VM.
    let q = qemu_says(Command::new("qemu-img").args(["info", s(&ov)]));
    assert!(q.contains("Failed to get shared \"write\" lock"), "{q}");
    // Its source, read by ferry: qemu readers are welcome, qemu writers are not.
    let q = qemu_says(Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 512", s(&src)]));
    assert!(q.contains("Failed to get \"write\" lock"), "{q}");
    common::run(Command::new("qemu-io").args(["-f", "raw", "-r", "-c", "read 0 512", s(&src)]));
    drop(w);
    common::qemu_img(&["info", s(&ov)]);
    common::qemu_io("raw", &src, &["write 0 512"]);
}

#[test]
fn a_rw_mount_keeps_convert_and_commit_off_its_images() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/fuse").exists() && common::have_tools(&["mkfs.ext4"]);
    if !ok {
        assert!(
            !common::kernel::required(),
            "FUSE tests need root, /dev/fuse and mkfs.ext4, and FERRY_REQUIRE_FUSE=1"
        );
        eprintln!("SKIP: the rw-mount locking test needs root, /dev/fuse and mkfs.ext4");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("fs.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    common::run(Command::new("mkfs.ext4").args(["-q", s(&img)]));
    let other = d.path().join("other.raw");
    std::fs::write(&other, vec![1u8; 32 << 20]).unwrap();
    let mnt = d.path().join("mnt");
    let ov = d.path().join("fs-overlay.qcow2");
    let _same = common::Unchanged::new(&[&img]);
    let m = common::kernel::FerryMount::new(&[OsStr::new("--rw"), img.as_os_str()], &mnt).unwrap();
    std::fs::write(mnt.join("hello"), b"written through the mount").unwrap();
    let write = "\"write\" lock";
    for target in [&img, &ov] {
        let o = ferry(&["convert", "-O", "raw", "--overwrite", s(&other), s(target)]);
        assert_refused(&o, target, write, "convert onto a mounted image");
    }
    let o = ferry(&["commit", s(&ov), "-O", "raw", "--overwrite", s(&img)]);
    assert!(
        !o.status.success(),
        "commit onto the mounted source: {}",
        stderr(&o)
    );
    let q = qemu_says(Command::new("qemu-img").args(["info", s(&ov)]));
    assert!(q.contains("Failed to get shared \"write\" lock"), "{q}");
    drop(m);
    // Unmounted: the locks are gone with the daemon.
    common::qemu_img(&["info", s(&ov)]);
    assert!(locked_bytes(&img).is_empty() && locked_bytes(&ov).is_empty());
}
