#!/bin/bash
# ferry's FUSE mount of an XFS guest vs the kernel's XFS loop mount, on one 4 GiB raw image
# made with mkfs.xfs and filled through a kernel mount (a copy of the host's /etc and
# /usr/share, a 20 000-file tree and a $BIG file):
#   (a) mount → first `cat /etc/os-release`, the image's pages evicted from the page cache
#   (b) cold sequential read of the big file
#   (c) cold `find -printf` with stat fields over the 20 000-file tree, cold `du -s` of it,
#       and cold `tar` of /usr
# Prints best-of-$RUNS times, ratios of the bests and of the medians, each run's times (the
# spread), and the peak RSS of ferry's daemon.
# Needs root (loop mounts, drop_caches), xfsprogs. Usage:
#   contrib/bench/xfs.sh [WORKDIR]     (default /var/tmp/ferry-bench-xfs; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/ferry-bench-xfs}
RUNS=${RUNS:-3}
BIG=${BIG:-1G}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"
mkdir -p mnt

if [ ! -f guest.img ]; then
    echo "building the guest image (once)..."
    truncate -s 4G guest.img
    mkfs.xfs -q -f guest.img
    mount -o loop guest.img mnt
    mkdir -p mnt/usr/lib mnt/tree mnt/big
    cp -a /etc mnt/etc 2>/dev/null || true
    cp -a /usr/lib/os-release mnt/usr/lib/
    cp -a /usr/share mnt/usr/
    for d in $(seq 0 199); do
        mkdir mnt/tree/d$d
        (cd mnt/tree/d$d && for f in $(seq 0 99); do echo "$d $f" > f$f; done)
    done
    head -c "$BIG" /dev/urandom > mnt/big/file
    umount mnt
fi

now() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
evict() { python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
mount_cmd() {
    case $1 in
        kernel) mount -o ro,loop guest.img mnt ;;
        ferry) "$ferry" mount guest.img mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry) "$ferry" umount mnt ;;
        *) umount mnt ;;
    esac
}
best() { sort -n | head -1; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

size=$(stat -c %s mnt/big/file 2>/dev/null || true)
declare -A A B C D E RSS ALL
for who in kernel ferry; do
    a=(); b=(); c=(); d=(); e=()
    for _ in $(seq "$RUNS"); do
        evict guest.img
        t0=$(now); mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; t1=$(now)
        a+=("$(ms "$t0" "$t1")")
        size=$(stat -c %s mnt/big/file)
        drop
        t0=$(now); dd if=mnt/big/file of=/dev/null bs=1M status=none; t1=$(now)
        b+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
        c+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); du -s mnt/tree >/dev/null; t1=$(now)
        d+=("$(ms "$t0" "$t1")")
        drop
        t0=$(now); tar cf - -C mnt usr | cat >/dev/null; t1=$(now)
        e+=("$(ms "$t0" "$t1")")
        if [ "$who" = ferry ]; then
            pid=$(head -1 /run/ferry/*.pid 2>/dev/null | tail -1)
            [ -n "$pid" ] && RSS[$who]=$(awk '/VmHWM/ {print $2}' /proc/"$pid"/status)
        fi
        umount_cmd "$who"
    done
    ALL[$who,a]="${a[*]}"; ALL[$who,b]="${b[*]}"; ALL[$who,c]="${c[*]}"
    ALL[$who,d]="${d[*]}"; ALL[$who,e]="${e[*]}"
    A[$who]=$(printf '%s\n' "${a[@]}" | best)
    B[$who]=$(printf '%s\n' "${b[@]}" | best)
    C[$who]=$(printf '%s\n' "${c[@]}" | best)
    D[$who]=$(printf '%s\n' "${d[@]}" | best)
    E[$who]=$(printf '%s\n' "${e[@]}" | best)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
printf '%-8s %14s %14s %12s %10s %12s %10s\n' "" "mount+cat ms" "read MB/s" "find 20k ms" "du ms" "tar /usr ms" "peak RSS"
for who in kernel ferry; do
    mbs=$(awk -v t="${B[$who]}" -v s="$size" 'BEGIN { if (t == 0) t = 1; printf "%.0f", s / 1048576 / (t / 1000) }')
    printf '%-8s %14s %14s %12s %10s %12s %10s\n' "$who" "${A[$who]}" "$mbs" "${C[$who]}" "${D[$who]}" "${E[$who]}" "${RSS[$who]:--} kB"
done
echo
echo "ferry / kernel: mount+cat $(ratio "${A[ferry]}" "${A[kernel]}")x, read throughput $(ratio "${B[kernel]}" "${B[ferry]}"), find $(ratio "${C[ferry]}" "${C[kernel]}")x, du $(ratio "${D[ferry]}" "${D[kernel]}")x, tar $(ratio "${E[ferry]}" "${E[kernel]}")x"
med() { tr ' ' '\n' <<<"${ALL[$1,$2]}" | median; }
echo "ferry / kernel, medians: mount+cat $(ratio "$(med ferry a)" "$(med kernel a)")x, read throughput $(ratio "$(med kernel b)" "$(med ferry b)"), find $(ratio "$(med ferry c)" "$(med kernel c)")x, du $(ratio "$(med ferry d)" "$(med kernel d)")x, tar $(ratio "$(med ferry e)" "$(med kernel e)")x"
echo "every run, ms (mount+cat / read / find / du / tar):"
for who in kernel ferry; do
    echo "  $who: ${ALL[$who,a]} / ${ALL[$who,b]} / ${ALL[$who,c]} / ${ALL[$who,d]} / ${ALL[$who,e]}"
done
