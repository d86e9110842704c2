#!/bin/bash
# Side-by-side: `ferry convert` vs `qemu-img convert` (default settings, and `-W -m 8`) on the
# same inputs, warm page cache, best of $RUNS wall times, with each tool's peak RSS:
#   vmdk (monolithicSparse) → qcow2, qcow2 → raw, raw → qcow2, raw → compressed qcow2,
#   and a 100 GiB sparse raw disk holding 1 GiB of data → qcow2 (time must follow the data).
# The guest is $SIZE bytes (default 4G) of which about 40% random data, 20% text, the rest zeros
# and holes. Every output is checked with `qemu-img compare` against its input.
# Usage: contrib/bench/convert.sh [WORKDIR]   (default /var/tmp/ferry-bench-convert; inputs kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/ferry-bench-convert}
RUNS=${RUNS:-3}
SIZE=${SIZE:-4G}
ferry=$here/target/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f inputs.done ] || [ "$(stat -c %s guest.raw)" != "$(numfmt --from=iec "$SIZE")" ]; then
    echo "building inputs (once)..."
    set +o pipefail # `yes | head` ends with SIGPIPE
    rm -f guest.raw
    truncate -s "$SIZE" guest.raw
    bytes=$(stat -c %s guest.raw)
    mib=$((bytes >> 20))
    # 8 MiB pieces: random, text, zeros, hole, random, hole, text, ...
    for ((i = 0; i < mib / 8; i++)); do
        case $((i % 5)) in
            0 | 3) head -c 8M /dev/urandom ;;
            1) yes "a line of a log file in a guest, fairly compressible $i" | head -c 8M ;;
            2) head -c 8M /dev/zero ;;
            *) true ;; # a hole: nothing written
        esac | dd of=guest.raw bs=1M seek=$((i * 8)) conv=notrunc status=none
    done
    qemu-img convert -O vmdk guest.raw guest.vmdk
    qemu-img convert -O qcow2 guest.raw guest.qcow2
    rm -f sparse.raw
    truncate -s 100G sparse.raw
    for ((i = 0; i < 64; i++)); do
        head -c 16M /dev/urandom | dd of=sparse.raw bs=1M seek=$((i * 1600)) conv=notrunc status=none
    done
    set -o pipefail
    touch inputs.done
fi

# best TOOL-COMMAND...: best wall seconds of $RUNS runs and the peak RSS (KiB) of the best run.
best() {
    local b="" rss=""
    for ((r = 0; r < RUNS; r++)); do
        rm -f out.*
        /usr/bin/time -f "%e %M" -o t.txt "$@" > /dev/null
        read -r s m < t.txt
        if [ -z "$b" ] || [ "$(echo "$s < $b" | bc)" = 1 ]; then b=$s rss=$m; fi
    done
    echo "$b $rss"
}

printf "%-28s %10s %10s %10s %8s %8s %9s\n" case ferry qemu "qemu-W-m8" ratio ratioW "ferryRSS"
run() {
    local name=$1 src=$2 fmt=$3 dst=$4
    shift 4
    read -r f frss < <(best "$ferry" convert "$src" -O "$fmt" "$@" "$dst")
    qemu-img compare -q "$src" "$dst"
    read -r q _ < <(best qemu-img convert -O "$fmt" $([ "${1:-}" = -c ] && echo -c) "$src" "$dst")
    read -r w _ < <(best qemu-img convert -W -m 8 -O "$fmt" $([ "${1:-}" = -c ] && echo -c) "$src" "$dst")
    printf "%-28s %9ss %9ss %9ss %8.2f %8.2f %7sMB\n" "$name" "$f" "$q" "$w" \
        "$(echo "$f / $q" | bc -l)" "$(echo "$f / $w" | bc -l)" $((frss / 1024))
}
run "vmdk -> qcow2" guest.vmdk qcow2 out.qcow2
run "qcow2 -> raw" guest.qcow2 raw out.raw
run "raw -> qcow2" guest.raw qcow2 out.qcow2
run "raw -> qcow2 -c" guest.raw qcow2 out.qcow2 -c
run "100G sparse raw -> qcow2" sparse.raw qcow2 out.qcow2
rm -f out.* t.txt
