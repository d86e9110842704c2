#!/bin/bash
# Side-by-side: ferry's FUSE mount vs the kernel's loop mount vs fuse2fs, on one 4 GiB guest
# image (ext4, made with mkfs.ext4 -d from a copy of the host's /etc and part of /usr, a
# 20 000-file tree and a 1 GiB file). ferry reads the qcow2 and the raw image, the others raw.
#   (a) mount → first `cat /etc/os-release`, with the image's pages evicted from the page cache
#       (the tools themselves warm, as for an admin mounting image after image), and (a') with
#       the whole page cache dropped (the tool's own binary read from disk too)
#   (b) cold sequential read of the 1 GiB file
#   (c) cold `find -printf` with stat fields over the 20 000-file tree, and cold `tar` of /usr
# Prints best-of-$RUNS times and ratios, and the peak RSS of each FUSE daemon.
# Needs root (loop mounts, drop_caches), fuse2fs, e2fsprogs, qemu-img. Usage:
#   contrib/bench/mount.sh [WORKDIR]     (default /var/tmp/ferry-bench; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/ferry-bench}
RUNS=${RUNS:-3}
ferry=$here/target/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f guest.qcow2 ]; then
    echo "building the guest image (once)..."
    rm -rf stage && mkdir -p stage/usr/lib stage/tree stage/big
    cp -a /etc stage/etc 2>/dev/null || true
    cp -a /usr/share /usr/bin /usr/include stage/usr/
    cp -a /usr/lib/x86_64-linux-gnu /usr/lib/os-release stage/usr/lib/
    for d in $(seq 0 199); do
        mkdir stage/tree/d$d
        (cd stage/tree/d$d && for f in $(seq 0 99); do echo "$d $f" > f$f; done)
    done
    head -c 1G /dev/urandom > stage/big/1g
    truncate -s 4G guest.img
    mkfs.ext4 -q -F -d stage guest.img
    qemu-img convert -f raw -O qcow2 guest.img guest.qcow2
    rm -rf stage
fi
mkdir -p mnt

now() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
evict() { python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

# mount_cmd NAME → mounts at mnt; umount_cmd NAME → unmounts.
mount_cmd() {
    case $1 in
        kernel) mount -o ro,loop guest.img mnt ;;
        fuse2fs) fuse2fs -o ro,fakeroot guest.img mnt >/dev/null ;;
        ferry-qcow2) "$ferry" mount guest.qcow2 mnt ;;
        ferry-raw) "$ferry" mount guest.img mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry-*) "$ferry" umount mnt ;;
        *) umount mnt ;;
    esac
}
daemon_pid() {
    case $1 in
        fuse2fs) pgrep -n -x fuse2fs ;;
        ferry-*) head -1 /run/ferry/*.pid 2>/dev/null | tail -1 ;;
        *) echo "" ;;
    esac
}

best() { sort -n | head -1; }

declare -A A A2 B C D RSS
for who in kernel fuse2fs ferry-raw ferry-qcow2; do
    a=(); a2=(); b=(); c=(); d=()
    for _ in $(seq "$RUNS"); do
        drop
        t0=$(now); mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; t1=$(now)
        a2+=("$(ms "$t0" "$t1")")
        umount_cmd "$who"
        evict guest.img guest.qcow2
        t0=$(now); mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; t1=$(now)
        a+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); dd if=mnt/big/1g of=/dev/null bs=1M status=none; t1=$(now)
        b+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
        c+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); tar cf - -C mnt usr | cat >/dev/null; t1=$(now)
        d+=("$(ms "$t0" "$t1")")
        pid=$(daemon_pid "$who")
        if [ -n "$pid" ]; then
            RSS[$who]=$(awk '/VmHWM/ {print $2}' /proc/"$pid"/status)
        fi
        umount_cmd "$who"
    done
    A[$who]=$(printf '%s\n' "${a[@]}" | best)
    A2[$who]=$(printf '%s\n' "${a2[@]}" | best)
    B[$who]=$(printf '%s\n' "${b[@]}" | best)
    C[$who]=$(printf '%s\n' "${c[@]}" | best)
    D[$who]=$(printf '%s\n' "${d[@]}" | best)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
printf '%-12s %14s %16s %16s %14s %14s %10s\n' "" "mount+cat ms" "(all cold) ms" "1 GiB read MB/s" "find 20k ms" "tar /usr ms" "peak RSS"
for who in kernel fuse2fs ferry-raw ferry-qcow2; do
    mbs=$(awk -v t="${B[$who]}" 'BEGIN { printf "%.0f", 1024 / (t / 1000) }')
    printf '%-12s %14s %16s %16s %14s %14s %10s\n' "$who" "${A[$who]}" "${A2[$who]}" "$mbs" "${C[$who]}" "${D[$who]}" "${RSS[$who]:--} kB"
done
echo
for who in ferry-raw ferry-qcow2; do
    echo "$who / kernel: read throughput $(ratio "${B[kernel]}" "${B[$who]}"), find $(ratio "${C[$who]}" "${C[kernel]}")x, tar $(ratio "${D[$who]}" "${D[kernel]}")x"
    echo "$who / fuse2fs: read throughput $(ratio "${B[fuse2fs]}" "${B[$who]}"), find $(ratio "${C[$who]}" "${C[fuse2fs]}")x, tar $(ratio "${D[$who]}" "${D[fuse2fs]}")x"
done
