#!/usr/bin/env bash
# `ferry inspect` against libguestfs's virt-inspector on a 4 GiB LVM guest in qcow2: GPT, ext4
# /boot on sda1, an LVM PV on sda2 with root (a copy of this host's /etc, /usr/bin, /usr/sbin),
# /var and swap LVs, fstab naming them by UUID and by LVM path.
#   RUNS=5 contrib/bench/inspect.sh [WORKDIR]
# Needs root (loop devices for pvcreate), e2fsprogs, lvm2, qemu-img; virt-inspector if installed
# (libguestfs-tools; it boots its appliance under TCG here, LIBGUESTFS_BACKEND_SETTINGS=force_tcg).
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1
cd "$(dirname "$0")/../.."
. contrib/bench/lib.sh
cargo build --release --quiet
ferry=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
work=${1:-/tmp/ferry-bench-inspect}
runs=${RUNS:-5}
mkdir -p "$work"
img=$work/guest.qcow2

if [ ! -e "$img" ] || [ "$(cat "$work/version" 2>/dev/null)" != 2 ]; then
  raw=$work/guest.raw
  vg=benchvg$$
  rm -f "$raw" && truncate -s 4G "$raw"
  printf 'label: gpt\nstart=2048, size=256MiB, type=L\nsize=+, type=V\n' | sfdisk -q "$raw"
  p2=$(( (2048 + 524288) * 512 ))
  p2len=$(( (4 << 30) - p2 - 33 * 512 ))
  root=$work/root; boot=$work/boot; var=$work/var
  rm -rf "$root" "$boot" "$var"
  mkdir -p "$root/usr" "$root/boot" "$root/var" "$boot/grub" "$var/log"
  cp -a /etc "$root/etc"
  cp -a /usr/bin /usr/sbin "$root/usr/"
  ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"
  echo benchguest > "$root/etc/hostname"
  cat > "$root/etc/fstab" <<EOF
/dev/mapper/$vg-root / ext4 errors=remount-ro 0 1
UUID=0b0b0b0b-1111-4222-8333-444455556666 /boot ext4 defaults 0 2
/dev/$vg/var /var ext4 defaults 0 2
/dev/mapper/$vg-swap none swap sw 0 0
EOF
  echo "linux /vmlinuz-6.1.0-13-amd64 root=/dev/mapper/$vg-root" > "$boot/grub/grub.cfg"
  echo kernel > "$boot/vmlinuz-6.1.0-13-amd64"
  seq 1 100000 > "$var/log/messages"
  mkdir -p "$var/lib/dpkg" && cp /var/lib/dpkg/status "$var/lib/dpkg/status"
  mk() { # FILE SIZE_MIB UUID DIR [mkfs args]
    rm -f "$1"; truncate -s "$2M" "$1"; mkfs.ext4 -q -F -U "$3" -d "$4" "${@:5}" "$1"
  }
  mk "$work/boot.fs" 256 0b0b0b0b-1111-4222-8333-444455556666 "$boot"
  dd if="$work/boot.fs" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
  conf='devices { use_devicesfile=0 obtain_device_list_from_udev=0 } activation { udev_sync=0 udev_rules=0 }'
  loop=$(losetup -f --show --offset "$p2" --sizelimit "$p2len" "$raw")
  lvm pvcreate -q -ff -y --config "$conf" "$loop" >/dev/null
  lvm vgcreate -q -s 4m --config "$conf" "$vg" "$loop" >/dev/null
  pe_start=$(lvm pvs --config "$conf" --noheadings --nosuffix --units b -o pe_start "$loop" | tr -d ' ')
  lvm vgcfgbackup -q --config "$conf" -f "$work/vg.backup" "$vg" >/dev/null
  # root: 2 GiB (512 extents) at 0, var: 512 MiB at 512, swap: 256 MiB at 640.
  lv() { printf '%s {\nid = "%s"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = %s\ntype = "striped"\nstripe_count = 1\nstripes = [\n"pv0", %s\n]\n}\n}\n' "$@"; }
  { printf '\nlogical_volumes {\n'
    lv root aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa1 512 0
    lv var aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa2 128 512
    lv swap aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaa3 64 640
    printf '}\n'; } > "$work/lvs.txt"
  # The LVs go inside the VG's section: before the backup's last closing brace.
  python3 - "$work/vg.backup" "$work/lvs.txt" "$work/vg.new" <<'PY'
import sys
text = open(sys.argv[1]).read()
cut = text.rstrip().rfind("}")
open(sys.argv[3], "w").write(text[:cut] + open(sys.argv[2]).read() + text[cut:])
PY
  lvm vgcfgrestore -q --config "$conf" -f "$work/vg.new" "$vg" >/dev/null
  losetup -d "$loop"
  mk "$work/root.fs" 2048 a0000000-0000-4000-8000-000000000001 "$root"
  mk "$work/var.fs" 512 a0000000-0000-4000-8000-000000000002 "$var"
  dd if="$work/root.fs" of="$raw" oflag=seek_bytes seek=$((p2 + pe_start)) bs=4M conv=notrunc,sparse status=none
  dd if="$work/var.fs" of="$raw" oflag=seek_bytes seek=$((p2 + pe_start + 512 * 4194304)) bs=4M conv=notrunc,sparse status=none
  truncate -s 256M "$work/swap.fs" && mkswap "$work/swap.fs" >/dev/null
  dd if="$work/swap.fs" of="$raw" oflag=seek_bytes seek=$((p2 + pe_start + 640 * 4194304)) bs=4M conv=notrunc,sparse status=none
  qemu-img convert -O qcow2 "$raw" "$img"
  rm -rf "$raw" "$work"/*.fs "$root" "$boot" "$var"
  echo 2 > "$work/version"
fi

best_of() { # N PREPARE CMD...: the best wall time in ms of N runs of CMD (PREPARE runs untimed
  # before each), or "failed"
  local n=$1 prep=$2 t0 t1 all=""; shift 2
  for _ in $(seq "$n"); do
    $prep
    t0=$(now)
    if ! "$@" >/dev/null 2>&1; then echo failed; return; fi
    t1=$(now)
    all+="$(ms "$t0" "$t1")
"
  done
  printf '%s' "$all" | best
}
# Only the image leaves the page cache (ferry's own binary stays, as it would after any use).
drop_image() { evict "$img"; }

echo "guest: $(du -h --apparent-size "$img" | cut -f1) virtual 4G, $(du -h "$img" | cut -f1) allocated"
"$ferry" inspect "$img" | head -n 20
f_warm=$(best_of "$runs" : "$ferry" inspect --json "$img")
f_image=$(best_of "$runs" drop_image "$ferry" inspect --json "$img")
f_cold=$(best_of "$runs" drop "$ferry" inspect --json "$img")
rss=$( { /usr/bin/time -f %M "$ferry" inspect --json "$img" >/dev/null; } 2>&1 | tail -1)
echo "ferry inspect: ${f_warm} ms warm, ${f_image} ms with the image cold, ${f_cold} ms with the whole page cache dropped, peak RSS ${rss} KiB"
if command -v virt-inspector >/dev/null; then
  export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
  virt-inspector --format=qcow2 -a "$img" | grep -E '<(distro|major_version|minor_version|hostname|arch)>' | sort -u
  v=$(best_of "${VRUNS:-2}" : virt-inspector --format=qcow2 -a "$img")
  echo "virt-inspector: ${v} ms (appliance under TCG)"
  echo "ratio ferry/virt-inspector (warm): $(awk -v a="$f_warm" -v b="$v" 'BEGIN{printf "%.4f", (a>0?a:1)/b}')"
else
  echo "virt-inspector: not installed (apt-get install libguestfs-tools)"
fi
