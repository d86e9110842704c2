#!/bin/bash
# Side-by-side: tree walks over 100 000 files, ferry's FUSE mount (raw and qcow2) vs the kernel's
# loop mount of the same ext4 image (1000 directories of 100 small files, made with
# mkfs.ext4 -d). Each measure starts with the whole page cache dropped and a fresh mount:
#   find  `find -printf` with stat fields (type, mode, owner, size, links, inode, times)
#   du    `du -s` (a stat of every file)
# The tools take turns within each of $RUNS rounds; prints the best and the median of each, the
# spread (slowest/best) and the ratios tool / kernel of the bests and of the medians.
# Needs root (loop mount, drop_caches), e2fsprogs, qemu-img. Usage:
#   contrib/bench/walk.sh [WORKDIR]     (default /var/tmp/ferry-bench-walk; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-walk}
RUNS=${RUNS:-5}
WHO=${WHO:-kernel ferry-raw ferry-qcow2}
pick_ferry # FERRY=path: that binary; otherwise the tree is built
mkdir -p "$work"
cd "$work"

if [ ! -f walk.qcow2 ]; then
    echo "building the image (once)..."
    rm -rf stage walk.img
    python3 - <<'EOF'
import os
for d in range(1000):
    p = f"stage/tree/d{d:03}"
    os.makedirs(p)
    for f in range(100):
        with open(f"{p}/f{f:02}", "w") as o:
            o.write(f"{d} {f}\n" * (1 + (d * 100 + f) % 50))
EOF
    truncate -s 2G walk.img
    mkfs.ext4 -q -F -N 131072 -d stage walk.img
    qemu-img convert -f raw -O qcow2 walk.img walk.qcow2
    rm -rf stage
fi
mkdir -p mnt

mount_cmd() {
    case $1 in
        kernel) mount -o ro,loop walk.img mnt ;;
        ferry-raw) "$ferry" mount walk.img mnt ;;
        ferry-qcow2) "$ferry" mount walk.qcow2 mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry-*) "$ferry" umount mnt ;;
        *) umount mnt ;;
    esac
}
# A mount left behind by an interrupted run would hide the next one's.
trap 'mountpoint -q mnt && umount mnt 2>/dev/null; true' EXIT

rm -f times.txt
for _ in $(seq "$RUNS"); do
    for who in $WHO; do
        for what in find du; do
            drop
            mount_cmd "$who"
            t0=$(now)
            case $what in
                find) n=$(find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@\n' | wc -l) ;;
                du) n=$(du -s mnt/tree | cut -f1) ;;
            esac
            t1=$(now)
            umount_cmd "$who"
            echo "$who $what $(ms "$t0" "$t1") $n" >> times.txt
        done
    done
done

# Every tool saw the same tree: one line count, one du total.
for what in find du; do
    if [ "$(awk -v m="$what" '$2 == m { print $4 }' times.txt | sort -u | wc -l)" != 1 ]; then
        echo "the tools disagree on $what:" >&2
        awk -v m="$what" '$2 == m' times.txt >&2
        exit 1
    fi
done

echo "ms over $RUNS rounds: best / median (spread = slowest/best); ratio = tool / kernel"
printf '%-12s %32s %32s\n' "" "find 100k (stat)" "du -s 100k"
for who in $WHO; do
    line=$(printf '%-12s' "$who")
    for what in find du; do
        v=$(awk -v w="$who" -v m="$what" '$1 == w && $2 == m { print $3 }' times.txt)
        b=$(echo "$v" | best)
        md=$(echo "$v" | median)
        s=$(ratio "$(echo "$v" | worst)" "$b")
        kb=$(awk -v m="$what" '$1 == "kernel" && $2 == m { print $3 }' times.txt | best)
        km=$(awk -v m="$what" '$1 == "kernel" && $2 == m { print $3 }' times.txt | median)
        cell="$b / $md ($s)"
        if [ "$who" != kernel ] && [ -n "$kb" ]; then
            cell="$cell $(ratio "$b" "$kb")x/$(ratio "$md" "$km")x"
        fi
        line="$line $(printf '%32s' "$cell")"
    done
    echo "$line"
done
