#!/bin/bash
# ferry's FUSE mount of an XFS guest vs the kernel's XFS loop mount, on one 4 GiB raw image
# made with mkfs.xfs and filled through a kernel mount (a copy of the host's /etc and
# /usr/share, a 20 000-file tree and a $BIG file):
#   (a) mount → first `cat /etc/os-release`, the image's pages evicted from the page cache
#   (b) cold sequential read of the big file
#   (c) cold `find -printf` with stat fields over the 20 000-file tree, cold `du -s` of it,
#       and cold `tar` of /usr
# The two take turns within each of $RUNS rounds. Prints best-of-$RUNS times, ratios of the
# bests and of the medians, each run's times (the spread), and the peak RSS of ferry's daemon.
# STEPS picks the measures (a subset of "a b c d e", the letters above; e.g. STEPS=e times
# only the tar, each mount still evicting the image first); FERRY_BASE=path adds a third
# side, "base", running that binary (an older build: before/after in one interleaved run).
# Needs root (loop mounts, drop_caches), xfsprogs. Usage:
#   contrib/bench/xfs.sh [WORKDIR]     (default /var/tmp/ferry-bench-xfs; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-xfs}
RUNS=${RUNS:-3}
BIG=${BIG:-1G}
STEPS=${STEPS:-a b c d e}
# FERRY=path runs that binary as it is (no build); otherwise the tree is built.
ferry=${FERRY:-${CARGO_TARGET_DIR:-$here/target}/release/ferry}
WHO="kernel ferry"
[ -n "${FERRY_BASE:-}" ] && WHO="kernel base ferry"
step() { [[ " $STEPS " == *" $1 "* ]]; }
[ -n "${FERRY:-}" ] || (cd "$here" && cargo build --release -q)
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

mount_cmd() {
    case $1 in
        kernel) mount -o ro,loop guest.img mnt ;;
        ferry) "$ferry" mount guest.img mnt ;;
        base) "$FERRY_BASE" mount guest.img mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry | base) "$ferry" umount mnt ;;
        *) umount mnt ;;
    esac
}
size=0
declare -A A B C D E RSS ALL
for who in $WHO; do
    for s in a b c d e; do ALL[$who,$s]=""; done
done
for _ in $(seq "$RUNS"); do
    for who in $WHO; do
        warm "$ferry" ${FERRY_BASE:+"$FERRY_BASE"} "$(command -v mount)" "$(command -v umount)"
        evict guest.img
        stamp t0; mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; stamp t1
        ALL[$who,a]+="$(msus "$t0" "$t1") "
        size=$(stat -c %s mnt/big/file)
        if step b; then
            drop
            t0=$(now); dd if=mnt/big/file of=/dev/null bs=1M status=none; t1=$(now)
            ALL[$who,b]+="$(ms "$t0" "$t1") "
        fi
        if step c; then
            drop
            t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
            ALL[$who,c]+="$(ms "$t0" "$t1") "
        fi
        if step d; then
            drop
            t0=$(now); du -s mnt/tree >/dev/null; t1=$(now)
            ALL[$who,d]+="$(ms "$t0" "$t1") "
        fi
        if step e; then
            drop
            t0=$(now); tar cf - -C mnt usr | cat >/dev/null; t1=$(now)
            ALL[$who,e]+="$(ms "$t0" "$t1") "
        fi
        [ "$who" != kernel ] && RSS[$who]=$(ferry_rss mnt)
        umount_cmd "$who"
    done
done
for who in $WHO; do
    A[$who]=$(tr ' ' '\n' <<<"${ALL[$who,a]}" | { grep . || true; } | best)
    B[$who]=$(tr ' ' '\n' <<<"${ALL[$who,b]}" | { grep . || true; } | best)
    C[$who]=$(tr ' ' '\n' <<<"${ALL[$who,c]}" | { grep . || true; } | best)
    D[$who]=$(tr ' ' '\n' <<<"${ALL[$who,d]}" | { grep . || true; } | best)
    E[$who]=$(tr ' ' '\n' <<<"${ALL[$who,e]}" | { grep . || true; } | best)
done

printf '%-8s %14s %14s %12s %10s %12s %10s\n' "" "mount+cat ms" "read MB/s" "find 20k ms" "du ms" "tar /usr ms" "peak RSS"
for who in $WHO; do
    mbs=$(mibs "${B[$who]}" "$size")
    printf '%-8s %14s %14s %12s %10s %12s %10s\n' "$who" "${A[$who]}" "$mbs" "${C[$who]}" "${D[$who]}" "${E[$who]}" "${RSS[$who]:--} kB"
done
echo
echo "ferry / kernel: mount+cat $(ratio "${A[ferry]}" "${A[kernel]}")x, read throughput $(ratio "${B[kernel]}" "${B[ferry]}"), find $(ratio "${C[ferry]}" "${C[kernel]}")x, du $(ratio "${D[ferry]}" "${D[kernel]}")x, tar $(ratio "${E[ferry]}" "${E[kernel]}")x"
med() { tr ' ' '\n' <<<"${ALL[$1,$2]}" | { grep . || true; } | median; }
echo "ferry / kernel, medians: mount+cat $(ratio "$(med ferry a)" "$(med kernel a)")x, read throughput $(ratio "$(med kernel b)" "$(med ferry b)"), find $(ratio "$(med ferry c)" "$(med kernel c)")x, du $(ratio "$(med ferry d)" "$(med kernel d)")x, tar $(ratio "$(med ferry e)" "$(med kernel e)")x"
if [ -n "${FERRY_BASE:-}" ]; then
    echo "base / kernel: tar $(ratio "${E[base]}" "${E[kernel]}")x best, $(ratio "$(med base e)" "$(med kernel e)")x median; ferry / base: tar $(ratio "${E[ferry]}" "${E[base]}")x best, $(ratio "$(med ferry e)" "$(med base e)")x median"
fi
echo "every run, ms (mount+cat / read / find / du / tar):"
for who in $WHO; do
    echo "  $who: ${ALL[$who,a]} / ${ALL[$who,b]} / ${ALL[$who,c]} / ${ALL[$who,d]} / ${ALL[$who,e]}"
done
