#!/bin/bash
# Side by side, interleaved: writing into ferry's `mount --rw` (through a qcow2 overlay) vs the
# kernel's ext4 on a loop device vs `fuse2fs -o rw`, on copies of one empty 3 GiB ext4 image.
#   (a) untar a 20 000-file tree (a copy of /usr/share/doc plus small generated files) into the
#       mount, then unmount (everything written and flushed: the kernel's writeback, fuse2fs's
#       and ferry's journal and overlay) and sync the host
#   (b) write a 1 GiB file sequentially (random data, from the page cache) with fsync
#   (c) `ferry fix IMAGE` end to end on a 4 GiB guest (inspect, plan, write, commit), no peer
# Each round runs every tool once, in turn, so a slow moment of the host hits all of them; the
# report gives the median and the spread (min-max) of $RUNS rounds, and the ratios of medians.
# Needs root (loop mounts), fuse2fs, e2fsprogs, qemu-img. Usage:
#   contrib/bench/edit.sh [WORKDIR]     (default /var/tmp/ferry-bench-edit; inputs are kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-edit}
RUNS=${RUNS:-5}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f tree.tar ]; then
    echo "building the inputs (once)..."
    rm -rf stage && mkdir -p stage/gen
    cp -a /usr/share/doc stage/doc
    n=$(find stage -type f | wc -l)
    d=0
    while [ "$n" -lt 20000 ]; do
        mkdir -p stage/gen/d$d
        (cd stage/gen/d$d && for f in $(seq 0 99); do echo "$d $f" > f$f; done)
        n=$((n + 100)); d=$((d + 1))
    done
    tar cf tree.tar -C stage .
    rm -rf stage
    head -c 1G /dev/urandom > rand1g
    truncate -s 3G base.img
    mkfs.ext4 -q -F base.img
fi
if [ ! -f guest.qcow2 ]; then
    # A Xen-style guest whose fstab names /dev/xvda1: what `ferry fix` rewrites.
    rm -rf gstage && mkdir -p gstage
    cp -a /etc gstage/etc 2>/dev/null || true
    cp -a /usr/bin gstage/bin
    printf '/dev/xvda1 / ext4 defaults 1 1\n' > gstage/etc/fstab
    truncate -s 4G guest.img
    mkfs.ext4 -q -F -d gstage guest.img
    qemu-img convert -f raw -O qcow2 guest.img guest.qcow2
    rm -rf gstage guest.img
fi
mkdir -p mnt
cat rand1g tree.tar > /dev/null

fresh() {  # fresh NAME: a clean copy of the empty filesystem for NAME, mounted at mnt
    rm -f k.img o.qcow2
    case $1 in
        kernel) cp --sparse=always base.img k.img; mount -o loop k.img mnt ;;
        fuse2fs) cp --sparse=always base.img k.img; fuse2fs -o rw,fakeroot k.img mnt >/dev/null ;;
        ferry) "$ferry" mount --rw --overlay o.qcow2 base.img mnt 2>/dev/null ;;
    esac
}
finish() {  # unmounts; returns when everything is on the host's disk
    case $1 in
        ferry) "$ferry" umount mnt ;;
        fuse2fs) umount mnt; while pgrep -x fuse2fs >/dev/null; do sleep 0.01; done ;;
        *) umount mnt ;;
    esac
    sync
}

declare -A UNTAR WRITE
tools=(kernel fuse2fs ferry)
for _ in $(seq "$RUNS"); do
    for who in "${tools[@]}"; do
        fresh "$who"
        t0=$(now); tar xf tree.tar -C mnt; finish "$who"; t1=$(now)
        UNTAR[$who]+="$(ms "$t0" "$t1") "
        fresh "$who"
        t0=$(now); dd if=rand1g of=mnt/big bs=1M conv=fsync status=none; t1=$(now)
        WRITE[$who]+="$(ms "$t0" "$t1") "
        finish "$who"
    done
done
FIX=""
for _ in $(seq "$RUNS"); do
    rm -f fix.qcow2
    t0=$(now); "$ferry" fix guest.qcow2 --overlay fix.qcow2 >/dev/null 2>&1; t1=$(now)
    FIX+="$(ms "$t0" "$t1") "
done
rm -f k.img o.qcow2 fix.qcow2

# The numbers of a space-separated list, one per line.
lines() { printf '%s\n' $1; }
stats() {  # "median (min-max)" of a list of numbers
    echo "$(lines "$1" | median) ($(lines "$1" | best)-$(lines "$1" | worst))"
}

printf '%-8s %26s %26s\n' "" "untar 20k + umount, ms" "1 GiB write+fsync, ms"
for who in "${tools[@]}"; do
    printf '%-8s %26s %26s\n' "$who" "$(stats "${UNTAR[$who]}")" "$(stats "${WRITE[$who]}")"
done
echo "ferry fix IMAGE (4 GiB guest), ms: $(stats "$FIX")"
echo
mu() { lines "${UNTAR[$1]}" | median; }
mw() { lines "${WRITE[$1]}" | median; }
echo "untar: ferry / kernel $(ratio "$(mu ferry)" "$(mu kernel)")x, fuse2fs / ferry $(ratio "$(mu fuse2fs)" "$(mu ferry)")x"
echo "write: ferry throughput / kernel $(ratio "$(mw kernel)" "$(mw ferry)"), ferry / fuse2fs $(ratio "$(mw fuse2fs)" "$(mw ferry)")"
