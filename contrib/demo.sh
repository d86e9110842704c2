#!/usr/bin/env bash
# The main job on a small image ferry builds itself: a guest-like disk as a compressed qcow2 on a
# raw backing file, described, mapped and converted back to raw, and checked against qemu-img.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/setup.sh >/dev/null
cargo build --release --quiet
ferry=target/release/ferry
out=${1:-target/demo-out}
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
time $ferry convert --overwrite "$out/snapshot.qcow2" -O raw "$out/ferry.raw" --json
qemu-img convert -O raw "$out/snapshot.qcow2" "$out/qemu.raw"
cmp "$out/ferry.raw" "$out/qemu.raw" && echo "OK: identical to qemu-img convert -O raw"
du -h --apparent-size "$out/ferry.raw" | sed 's/^/apparent size: /'
du -h "$out/ferry.raw" | sed 's/^/allocated on disk: /'

echo "== a Xen-style guest disk (GPT: ext4 /boot, ext4 /, xfs /srv, swap) as a streamOptimized VMDK"
truncate -s 640M "$out/guest.img"
printf 'label: gpt\nsize=64MiB, type=L, name=boot\nsize=160MiB, type=L, name=root\nsize=320MiB, type=L, name=srv\nsize=32MiB, type=S\n' \
  | sfdisk -q "$out/guest.img"
part() { # NAME START_SECTOR SIZE_MIB MKFS...
  truncate -s "$3M" "$out/$1.fs"; "${@:4}" "$out/$1.fs" >/dev/null 2>&1
  dd if="$out/$1.fs" of="$out/guest.img" bs=512 seek="$2" conv=notrunc,sparse status=none; rm "$out/$1.fs"
}
mkdir -p "$out/bootfiles/grub" "$out/rootfiles/etc" "$out/rootfiles/usr/bin" "$out/rootfiles/boot" "$out/rootfiles/srv"
printf 'set root=(hd0,gpt1)\nlinux /vmlinuz-6.1.0-13-amd64 root=/dev/xvda2 console=hvc0\n' > "$out/bootfiles/grub/grub.cfg"
echo kernel > "$out/bootfiles/vmlinuz-6.1.0-13-amd64"
cp /etc/os-release "$out/rootfiles/etc/os-release"
cp /usr/bin/dash "$out/rootfiles/usr/bin/dash" && ln -sf dash "$out/rootfiles/usr/bin/sh" && ln -sfn usr/bin "$out/rootfiles/bin"
echo demo-guest > "$out/rootfiles/etc/hostname"
printf '/dev/xvda2 / ext4 defaults 0 1\nLABEL=boot /boot ext4 defaults 0 2\nLABEL=srv /srv xfs defaults 0 2\n/dev/xvda4 none swap sw 0 0\n' \
  > "$out/rootfiles/etc/fstab"
part boot 2048 64 mkfs.ext4 -q -F -L boot -d "$out/bootfiles"
part root $((2048 + 131072)) 160 mkfs.ext4 -q -F -L root -d "$out/rootfiles"
part srv $((2048 + 131072 + 327680)) 320 mkfs.xfs -q -f -L srv
part swap $((2048 + 131072 + 327680 + 655360)) 32 mkswap -L swap
qemu-img convert -O vmdk -o subformat=streamOptimized "$out/guest.img" "$out/guest.vmdk"
echo "== ferry filesystems --all $out/guest.vmdk"
$ferry filesystems --all "$out/guest.vmdk"
echo "== ferry inspect $out/guest.vmdk (xvda names resolved to our sda, XFS not readable yet)"
$ferry inspect "$out/guest.vmdk"

echo "== ferry ls / cat (no FUSE): guest paths, /boot found on its own partition"
$ferry ls -l "$out/guest.vmdk" /boot/grub
$ferry cat "$out/guest.vmdk" /boot/grub/grub.cfg
if [ -e /dev/fuse ]; then
  echo "== ferry mount: the guest's own layout, read-only FUSE; then umount"
  mkdir -p "$out/mnt"
  $ferry mount "$out/guest.vmdk" "$out/mnt"
  df -h "$out/mnt" "$out/mnt/boot" | tail -n 2
  ls -la "$out/mnt" "$out/mnt/boot"
  $ferry umount "$out/mnt"
else
  echo "(no /dev/fuse here: skipping the mount step)"
fi
