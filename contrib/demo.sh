#!/usr/bin/env bash
# The main job on a small image ferry builds itself: a guest-like disk as a compressed qcow2 on a
# raw backing file, described, mapped and converted back to raw, and checked against qemu-img.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/setup.sh >/dev/null
cargo build --release --quiet
ferry=target/release/ferry
out=${1:-demo-out}
rm -rf "$out" && mkdir -p "$out"

echo "== building a 256 MiB disk: random data, text, zeros and holes"
python3 - "$out/base.raw" <<'PY'
import os, random, sys
random.seed(1)
size = 256 << 20
with open(sys.argv[1], "wb") as f:
    f.truncate(size)
    off = 0
    while off < size:
        n = min(random.choice([64 << 10, 1 << 20, 3 << 20]), size - off)
        kind = random.random()
        f.seek(off)
        if kind < 0.4:
            f.write(os.urandom(n))
        elif kind < 0.7:
            f.write((b"a line of a guest's log file, compressible\n" * (n // 43 + 1))[:n])
        off += n + random.choice([0, 0, 2 << 20])
PY
qemu-img convert -q -c -O qcow2 -o compression_type=zstd "$out/base.raw" "$out/disk.qcow2"
qemu-img create -q -f qcow2 -b disk.qcow2 -F qcow2 "$out/snapshot.qcow2"
qemu-io -f qcow2 -c "write -P 0x5a 10M 1M" -c "write -z 20M 4M" "$out/snapshot.qcow2" >/dev/null

echo "== ferry info $out/snapshot.qcow2"
$ferry info "$out/snapshot.qcow2"
echo "== ferry map $out/snapshot.qcow2 (first lines)"
$ferry map "$out/snapshot.qcow2" | head -n 8
echo "== ferry convert -O raw"
time $ferry convert "$out/snapshot.qcow2" -O raw "$out/ferry.raw" --json
qemu-img convert -O raw "$out/snapshot.qcow2" "$out/qemu.raw"
cmp "$out/ferry.raw" "$out/qemu.raw" && echo "OK: identical to qemu-img convert -O raw"
du -h --apparent-size "$out/ferry.raw" | sed 's/^/apparent size: /'
du -h "$out/ferry.raw" | sed 's/^/allocated on disk: /'

echo "== a partitioned guest disk (GPT: ext4 /boot, xfs /, swap) as a streamOptimized VMDK"
truncate -s 600M "$out/guest.img"
printf 'label: gpt\nsize=64MiB, type=L, name=boot\nsize=320MiB, type=L, name=root\nsize=64MiB, type=S\n' \
  | sfdisk -q "$out/guest.img"
part() { # NAME START_SECTOR SIZE_MIB MKFS...
  truncate -s "$3M" "$out/$1.fs"; "${@:4}" "$out/$1.fs" >/dev/null
  dd if="$out/$1.fs" of="$out/guest.img" bs=512 seek="$2" conv=notrunc,sparse status=none; rm "$out/$1.fs"
}
mkdir -p "$out/bootfiles/grub" && printf 'set root=(hd0,gpt1)\nlinux /vmlinuz root=/dev/xvda2 console=hvc0\n' \
  > "$out/bootfiles/grub/grub.cfg"
part boot 2048 64 mkfs.ext4 -q -F -L boot -d "$out/bootfiles"
part root $((2048 + 131072)) 320 mkfs.xfs -q -f -L root
part swap $((2048 + 131072 + 655360)) 64 mkswap -L swap
qemu-img convert -O vmdk -o subformat=streamOptimized "$out/guest.img" "$out/guest.vmdk"
echo "== ferry filesystems --all $out/guest.vmdk"
$ferry filesystems --all "$out/guest.vmdk"

echo "== ferry ls / cat (no FUSE): the guest's /boot"
$ferry ls -l "$out/guest.vmdk:/dev/sda1" /grub
$ferry cat "$out/guest.vmdk:/dev/sda1" /grub/grub.cfg
if [ -e /dev/fuse ]; then
  echo "== ferry mount -m /dev/sda1 (read-only FUSE), then umount"
  mkdir -p "$out/mnt"
  $ferry mount "$out/guest.vmdk" -m /dev/sda1 "$out/mnt"
  df -h "$out/mnt" | tail -n 1
  ls -la "$out/mnt"
  $ferry umount "$out/mnt"
else
  echo "(no /dev/fuse here: skipping the mount step)"
fi
