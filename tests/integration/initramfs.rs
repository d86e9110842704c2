//! `initramfs-add-modules` (rule initramfs-tools): an initramfs built with the real tools
//! (`cpio -o -H newc`, `zstd` or `xz`) in the shape Debian writes (a plain early-microcode archive, then
//! the zstd main archive with `lib -> usr/lib`), lacking virtio. After `ferry fix` GNU cpio,
//! unpacking the members in order as the kernel does, must find the guest's own module files
//! and indexes where the kernel looks for them, with the old members byte for byte in front.

use crate::common::guest::{debian_root, put, symlink};
use crate::common::{ferry_ok, have_tools, run_ferry};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const R: &str = "6.1.0-13-amd64";

/// `cpio -o -H newc` of `names` (relative to `dir`), as mkinitramfs runs it.
fn cpio_of(dir: &Path, names: &[&str]) -> Vec<u8> {
    let mut c = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(names.join("\n").as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    o.stdout
}

/// Unpacks one plain archive into `dir` with GNU cpio (later entries replace earlier ones).
fn unpack(archive: &[u8], dir: &Path) {
    let mut c = Command::new("cpio")
        .args(["--quiet", "-idmu", "--no-absolute-filenames"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(archive).unwrap();
    assert!(c.wait().unwrap().success());
}

fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn virtio_modules_are_appended_to_an_initramfs_without_them() {
    if !have_tools(&["cpio", "zstd"]) {
        return;
    }
    appended_to(&|cpio| zstd::encode_all(cpio, 19).unwrap());
}

/// The same with the main archive compressed as SUSE's dracut does (`xz -0 --check=crc32`,
/// by the real xz): ferry reads it to see what is missing, and appends after it.
#[test]
fn virtio_modules_are_appended_to_an_xz_initramfs() {
    if !have_tools(&["cpio", "xz"]) {
        return;
    }
    appended_to(&|cpio| {
        let mut c = Command::new("xz")
            .args(["-0", "--check=crc32", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let data = cpio.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let o = c.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(o.status.success());
        assert!(o.stdout.starts_with(b"\xfd7zXZ\0"));
        o.stdout
    });
}

/// Builds the guest with its main archive compressed by `compress`, fixes it and unpacks the
/// result as the kernel would.
fn appended_to(compress: &dyn Fn(&[u8]) -> Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    debian_root(&root, "/dev/sda1 / ext4 defaults 0 1\n");
    put(&root, "/etc/initramfs-tools/modules", "# modules\n");
    let k = format!("/usr/lib/modules/{R}");
    let dep = "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
               kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
               kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko:\n\
               kernel/drivers/ata/ahci.ko:\n";
    put(&root, &format!("{k}/modules.dep"), dep);
    put(
        &root,
        &format!("{k}/modules.builtin"),
        "kernel/fs/ext4/ext4.ko\n",
    );
    put(&root, &format!("{k}/modules.alias.bin"), bytes(9, 3000));
    let mods = [
        ("block/virtio_blk", 1u8),
        ("virtio/virtio_pci", 2),
        ("virtio/virtio_ring", 3),
        ("virtio/virtio", 4),
        ("ata/ahci", 5),
    ];
    for (m, seed) in mods {
        put(
            &root,
            &format!("{k}/kernel/drivers/{m}.ko"),
            bytes(seed, 5000 + seed as usize),
        );
    }
    // The image mkinitramfs would have made on a SATA host: ahci only.
    let early = tmp.path().join("early");
    put(
        &early,
        "/kernel/x86/microcode/GenuineIntel.bin",
        bytes(7, 999),
    );
    let main = tmp.path().join("main");
    put(&main, "/init", "#!/bin/sh\n");
    put(
        &main,
        &format!("/usr/lib/modules/{R}/modules.dep"),
        "kernel/drivers/ata/ahci.ko:\n",
    );
    put(
        &main,
        &format!("/usr/lib/modules/{R}/kernel/drivers/ata/ahci.ko"),
        bytes(5, 5005),
    );
    symlink(&main, "/lib", "usr/lib");
    let mut initrd = cpio_of(
        &early,
        &[
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/GenuineIntel.bin",
        ],
    );
    let names: Vec<String> = ["init", "lib", "usr", "usr/lib", "usr/lib/modules"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("usr/lib/modules/{R}"),
            format!("usr/lib/modules/{R}/modules.dep"),
            format!("usr/lib/modules/{R}/kernel"),
            format!("usr/lib/modules/{R}/kernel/drivers"),
            format!("usr/lib/modules/{R}/kernel/drivers/ata"),
            format!("usr/lib/modules/{R}/kernel/drivers/ata/ahci.ko"),
        ])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let main_cpio = cpio_of(&main, &names);
    initrd.extend_from_slice(&compress(&main_cpio));
    let path = root.join(format!("boot/initrd.img-{R}"));
    put(&root, &format!("/boot/initrd.img-{R}"), &initrd);

    // A dry run changes nothing and names the image as a binary change.
    let dry = run_ferry(&[
        "fix",
        root.to_str().unwrap(),
        "--only",
        "initramfs-tools",
        "--dry-run",
    ]);
    assert_eq!(
        dry.status.code(),
        Some(2),
        "a dry run with changes pending exits 2"
    );
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.contains(&format!(
            "Binary files a/boot/initrd.img-{R} and b/boot/initrd.img-{R} differ"
        )),
        "{dry}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), initrd);

    ferry_ok(&["fix", root.to_str().unwrap(), "--only", "initramfs-tools"]);
    let fixed = std::fs::read(&path).unwrap();
    assert!(
        fixed.starts_with(&initrd),
        "the old members must stay as they were"
    );
    let tail = &fixed[initrd.len().next_multiple_of(4)..];
    assert!(fixed[initrd.len()..initrd.len().next_multiple_of(4)]
        .iter()
        .all(|&b| b == 0));

    // Unpack as the kernel does: every member in order into one directory.
    let out = tmp.path().join("unpacked");
    std::fs::create_dir(&out).unwrap();
    let early_len = cpio_of(
        &early,
        &[
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/GenuineIntel.bin",
        ],
    )
    .len();
    unpack(&initrd[..early_len], &out);
    unpack(&main_cpio, &out);
    unpack(tail, &out);
    assert_eq!(
        std::fs::read_link(out.join("lib")).unwrap(),
        Path::new("usr/lib"),
        "the appended archive must not replace the lib symlink"
    );
    let m = out.join(format!("usr/lib/modules/{R}"));
    for (name, seed) in mods {
        let want = root.join(format!("{}/kernel/drivers/{name}.ko", &k[1..]));
        let got = m.join(format!("kernel/drivers/{name}.ko"));
        assert_eq!(
            std::fs::read(&got).unwrap_or_default(),
            std::fs::read(&want).unwrap(),
            "{name} (seed {seed})"
        );
    }
    assert_eq!(std::fs::read_to_string(m.join("modules.dep")).unwrap(), dep);
    assert_eq!(
        std::fs::read(m.join("modules.alias.bin")).unwrap(),
        bytes(9, 3000)
    );
    assert!(out.join("init").exists());
    assert!(out.join("kernel/x86/microcode/GenuineIntel.bin").exists());
    // ahci was there already and is not appended again.
    let listed = Command::new("cpio")
        .args(["--quiet", "-it"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(tail)?;
            c.wait_with_output()
        })
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!listed.contains("ahci.ko"), "{listed}");
    assert!(listed.contains("virtio_blk.ko"), "{listed}");

    // A second run has nothing to add.
    ferry_ok(&["fix", root.to_str().unwrap(), "--only", "initramfs-tools"]);
    assert_eq!(std::fs::read(&path).unwrap(), fixed);
}
