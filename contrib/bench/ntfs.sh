#!/bin/bash
# ferry's FUSE mount of an NTFS volume vs ntfs-3g (`-o ro`), the peer issue #14 names, on one
# 4 GiB raw image made with mkntfs and filled through ntfs-3g (a copy of the host's /etc and
# /usr/share/doc, a 20 000-file tree and a $BIG file of random bytes):
#   (a) mount → first `cat /etc/os-release`, the image's pages evicted from the page cache
#   (b) cold sequential read of the big file
#   (c) cold `find -printf` with stat fields over the 20 000-file tree, and cold `du -s` of it
#   (d) the same `find` again at once, caches warm (what browsing a mounted guest feels like)
# The two take turns within each of $RUNS rounds. Prints bests, medians, every run (the
# spread), the ratios, and the peak RSS of each daemon. The issue's goals: find/du at least
# 3× faster than ntfs-3g, reads at least 1.5× faster, mount → first cat no slower.
# Needs root (drop_caches), ntfs-3g. Usage:
#   contrib/bench/ntfs.sh [WORKDIR]     (default /var/tmp/ferry-bench-ntfs; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-ntfs}
RUNS=${RUNS:-5}
BIG=${BIG:-1G}
pick_ferry # FERRY=path: that binary; otherwise the tree is built
mkdir -p "$work"
cd "$work"
mkdir -p mnt

if [ ! -f guest.img ]; then
    echo "building the NTFS image (once; ntfs-3g writes slowly)..."
    truncate -s 4G guest.img.part
    mkntfs -q -F -Q -c 4096 guest.img.part
    ntfs-3g guest.img.part mnt
    mkdir -p mnt/usr/lib mnt/usr/share mnt/tree mnt/big
    cp -r /etc mnt/etc 2>/dev/null || true
    cp /usr/lib/os-release mnt/usr/lib/
    cp /usr/lib/os-release mnt/etc/os-release
    cp -r /usr/share/doc mnt/usr/share/ 2>/dev/null || true
    for d in $(seq 0 199); do
        mkdir mnt/tree/d$d
        (cd mnt/tree/d$d && for f in $(seq 0 99); do echo "$d $f" > f$f; done)
    done
    head -c "$BIG" /dev/urandom > mnt/big/file
    umount mnt
    mv guest.img.part guest.img
fi

# FERRY_BASE=/path/to/older/ferry adds a third contender, to measure a change.
mount_cmd() {
    case $1 in
        ntfs3g) ntfs-3g -o ro guest.img mnt ;;
        ferry) "$ferry" mount guest.img mnt ;;
        base) "$FERRY_BASE" mount guest.img mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry) "$ferry" umount mnt ;;
        base) "$FERRY_BASE" umount mnt ;;
        *) umount mnt ;;
    esac
}
rss_of() {
    case $1 in
        ferry | base) ferry_rss mnt ;;
        ntfs3g) pid=$(pgrep -n -x ntfs-3g || true)
            if [ -n "$pid" ]; then awk '/VmHWM/ {print $2}' /proc/"$pid"/status; else echo -; fi ;;
    esac
}

WHO="ntfs3g ferry${FERRY_BASE:+ base}"
declare -A ALL RSS
size=0
order=($WHO)
for run in $(seq "$RUNS"); do
    # Each round starts with the next contender: the one after ntfs-3g reads measurably
    # slower (its exit still settling), and a fixed order put that on one side.
    for i in "${!order[@]}"; do
        who=${order[$(( (i + run) % ${#order[@]} ))]}
        warm "$ferry" ${FERRY_BASE:+"$FERRY_BASE"} "$(command -v ntfs-3g)"
        evict guest.img
        stamp t0; mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; stamp t1
        a=$(msus "$t0" "$t1")
        size=$(stat -c %s mnt/big/file)
        drop
        t0=$(now); dd if=mnt/big/file of=/dev/null bs=1M status=none; t1=$(now)
        b=$(ms "$t0" "$t1")
        drop
        t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
        c=$(ms "$t0" "$t1")
        drop
        t0=$(now); du -s mnt/tree >/dev/null; t1=$(now)
        d=$(ms "$t0" "$t1")
        t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
        e=$(ms "$t0" "$t1")
        RSS[$who]=$(rss_of "$who")
        umount_cmd "$who"
        ALL[$who,a]+="$a "; ALL[$who,b]+="$b "; ALL[$who,c]+="$c "; ALL[$who,d]+="$d "; ALL[$who,e]+="$e "
        echo "round $run $who: mount+cat $a ms, read $b ms, find $c ms, du $d ms, find again $e ms"
    done
done

pick() { tr ' ' '\n' <<<"${ALL[$1,$2]}" | grep . | "$3"; }
echo
printf '%-8s %14s %12s %12s %10s %14s %10s\n' "" "mount+cat ms" "read MiB/s" "find 20k ms" "du ms" "find again ms" "peak RSS"
for who in $WHO; do
    printf '%-8s %14s %12s %12s %10s %14s %10s\n' "$who" "$(pick "$who" a best)" \
        "$(mibs "$(pick "$who" b best)" "$size")" "$(pick "$who" c best)" "$(pick "$who" d best)" \
        "$(pick "$who" e best)" "${RSS[$who]} kB"
done
for stat in best median; do
    echo "ntfs-3g / ferry ($stat; above 1 = ferry faster): mount+cat $(ratio "$(pick ntfs3g a $stat)" "$(pick ferry a $stat)"), read $(ratio "$(pick ntfs3g b $stat)" "$(pick ferry b $stat)"), find $(ratio "$(pick ntfs3g c $stat)" "$(pick ferry c $stat)"), du $(ratio "$(pick ntfs3g d $stat)" "$(pick ferry d $stat)"), find again $(ratio "$(pick ntfs3g e $stat)" "$(pick ferry e $stat)")"
done
echo "every run, ms (mount+cat / read / find / du / find again):"
for who in $WHO; do
    echo "  $who: ${ALL[$who,a]}/ ${ALL[$who,b]}/ ${ALL[$who,c]}/ ${ALL[$who,d]}/ ${ALL[$who,e]}"
done
