#!/bin/bash
# Side-by-side: `ferry v2v -i disk` (free space left out), the same with `--no-trim`, and plain
# `ferry convert -O qcow2` (the copy alone; also with `--sync`, as v2v syncs its outputs before
# linking them into place), on one guest disk whose ext4 root had a large file
# written and deleted (its blocks free but full of data) and whose swap holds old pages. The
# three take turns within each of $RUNS rounds; the table gives the best and median wall time of
# each, the spread (slowest/best) and the output's allocated size, then every run.
# Usage: contrib/bench/v2v-trim.sh [WORKDIR]  (default /var/tmp/ferry-bench-v2v; needs root for
#        the loop mount that writes and deletes the file). SIZE (default 4G), DELETED (2G).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-v2v}
RUNS=${RUNS:-3}
SIZE=${SIZE:-4G}
DELETED=${DELETED:-2G}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f guest.done ]; then
    echo "building the guest (once)..."
    rm -f guest.raw
    truncate -s "$SIZE" guest.raw
    printf 'label: dos\nstart=2048, size=%s, type=83\ntype=82\n' \
        $(( $(numfmt --from=iec "$SIZE") / 512 - 2048 - 262144 )) | sfdisk -q guest.raw
    read -r p1s p1n p2s p2n < <(sfdisk -J guest.raw | python3 -c '
import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[0]["start"]*512, p[0]["size"]*512, p[1]["start"]*512, p[1]["size"]*512)')
    root=$(losetup -f --show -o "$p1s" --sizelimit "$p1n" guest.raw)
    swap=$(losetup -f --show -o "$p2s" --sizelimit "$p2n" guest.raw)
    trap 'umount -q "$work/mnt" 2>/dev/null; losetup -d "$root" "$swap" 2>/dev/null' EXIT
    mkfs.ext4 -q "$root"
    mkswap -q "$swap" >/dev/null
    dd if=/dev/urandom of="$swap" bs=1M seek=1 count=96 status=none
    mkdir -p mnt etc
    mount "$root" mnt
    mkdir -p mnt/etc mnt/usr/bin
    printf '/dev/sda1 / ext4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n' >mnt/etc/fstab
    printf 'ID=debian\nVERSION_ID="12"\n' >mnt/etc/os-release
    head -c 300M /dev/urandom >mnt/kept.bin
    head -c "$(numfmt --from=iec "$DELETED")" /dev/urandom >mnt/deleted.bin
    sync
    rm mnt/deleted.bin
    umount mnt
    losetup -d "$root" "$swap"
    trap - EXIT
    touch guest.done
fi

declare -A ALL size
run() { # name command...
    local name=$1 t0 t1
    shift
    rm -rf out && mkdir out
    sync
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    ALL[$name]+="$(ms "$t0" "$t1") "
    size[$name]=$(du -sB1 out | cut -f1)
}
# The runs of NAME in ms, one per line.
runs() { tr ' ' '\n' <<<"${ALL[$1]}" | grep .; }
for ((r = 0; r < RUNS; r++)); do
    run v2v "$ferry" -q v2v -i disk guest.raw --output-name g -o out
    run v2v-no-trim "$ferry" -q v2v -i disk guest.raw --output-name g -o out --no-trim
    run convert "$ferry" -q convert -O qcow2 guest.raw out/g.qcow2
    run convert-sync "$ferry" -q convert --sync -O qcow2 guest.raw out/g.qcow2
done
printf '%-12s %9s %9s %7s %12s\n' case best_ms median_ms spread out_bytes
for n in v2v v2v-no-trim convert convert-sync; do
    printf '%-12s %9s %9s %7s %12s\n' "$n" "$(runs $n | best)" "$(runs $n | median)" \
        "$(ratio "$(runs $n | worst)" "$(runs $n | best)")" "${size[$n]}"
done
echo "ratio v2v / convert (time): best $(ratio "$(runs v2v | best)" "$(runs convert | best)"), median $(ratio "$(runs v2v | median)" "$(runs convert | median)")"
echo "ratio v2v --no-trim / convert --sync (the copy stage; both sync): best $(ratio "$(runs v2v-no-trim | best)" "$(runs convert-sync | best)"), median $(ratio "$(runs v2v-no-trim | median)" "$(runs convert-sync | median)")"
echo "every run, ms:"
for n in v2v v2v-no-trim convert convert-sync; do
    echo "  $n: ${ALL[$n]}"
done
