#!/bin/bash
# Side-by-side: `ferry convert` vs `qemu-img convert` (default settings, and `-W -m 8`) on the
# same inputs, warm page cache. The three commands take turns within each of $RUNS rounds (in an
# order that turns each round), so a burst of load elsewhere hits all of them; the table gives
# the best wall time of each, the spread (slowest/best) and each tool's peak RSS in its best run.
#   4 GiB guest: vmdk (monolithicSparse) → qcow2, qcow2 → raw, raw → streamOptimized vmdk,
#                raw → qcow2, raw → compressed qcow2;
#   100 GiB sparse raw disk holding 1 GiB of data → qcow2 and → raw (time must follow the data).
# The guest is $SIZE bytes (default 4G): about 40% random data, 20% text, the rest zeros and holes.
# Every ferry output is checked with `qemu-img compare` against its input (and `check` for qcow2).
# Cases named "(cold)" evict the source's pages before each command (the tools stay cached): a
# convert of an image not read lately, where the disk's speed and the reads in flight count.
# Spreads of 3-4x on a warm copy are the machine's, not the tools': on a VM whose balloon
# reports free pages to the host (/sys/module/page_reporting), a run that reuses memory freed
# seconds earlier (the previous output's page cache) faults it back in from the host and takes
# three times as long. The median ratio is therefore given beside the best.
# Usage: contrib/bench/convert.sh [WORKDIR]   (default /var/tmp/ferry-bench-convert; inputs kept)
#        ONLY=regex limits the cases by name.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-convert}
RUNS=${RUNS:-3}
SIZE=${SIZE:-4G}
ONLY=${ONLY:-.}
pick_ferry # FERRY=path: that binary; otherwise the tree is built
mkdir -p "$work"
cd "$work"

if [ ! -f inputs.done ] || [ "$(stat -c %s guest.raw)" != "$(numfmt --from=iec "$SIZE")" ]; then
    echo "building inputs (once)..."
    set +o pipefail # `yes | head` ends with SIGPIPE
    rm -f guest.raw inputs.done
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
cat guest.raw guest.vmdk guest.qcow2 > /dev/null
"$ferry" map sparse.raw > /dev/null

# timed NAME COMMAND...: appends "NAME seconds rssKiB" to times.txt (output removed first, and
# the file system's pending writes flushed so one run's writeback does not slow the next).
timed() {
    local name=$1
    shift
    rm -f out.*
    sync
    if [ -n "$cold" ]; then evict "$cold"; fi
    /usr/bin/time -f "%e %M" -o t.txt "$@" > /dev/null
    echo "$name $(cat t.txt)" >> times.txt
}

# stat NAME: "best spread rssMiB median" over the runs of NAME in times.txt.
stat_of() {
    local med
    med=$(awk -v n="$1" '$1 == n { print $2 }' times.txt | median)
    awk -v n="$1" -v m="$med" '$1 == n { if (b == "" || $2 < b) { b = $2; r = $3 } if ($2 > w) w = $2 }
        END { printf "%.2f %.2f %d %.2f\n", b, (b > 0 ? w / b : 1), r / 1024, m }' times.txt
}

printf "%-26s %8s %8s %8s %7s %7s %7s %15s %8s %6s\n" case ferry qemu qemu-W8 ratio ratioW \
    medianW spread ferryRSS qRSS
cold=
run() {
    local name=$1 src=$2 fmt=$3 dst=$4
    shift 4
    [[ $name =~ $ONLY ]] || return 0
    cold=
    if [[ $name == *"(cold)"* ]]; then cold=$src; fi
    "$ferry" convert --overwrite "$src" -O "$fmt" "$@" "$dst" > /dev/null
    qemu-img compare -q "$src" "$dst"
    if [ "$fmt" = qcow2 ]; then qemu-img check -q "$dst"; fi
    rm -f times.txt
    # The order turns each round: which command runs right after a removal is a matter of luck
    # with freed memory (see the top), and it falls to each in turn.
    local order=(f q w) i who
    for ((r = 0; r < RUNS; r++)); do
        for i in 0 1 2; do
            who=${order[$(((i + r) % 3))]}
            case $who in
                f) timed f "$ferry" convert --overwrite "$src" -O "$fmt" "$@" "$dst" ;;
                q) timed q qemu-img convert -O "$fmt" "$@" "$src" "$dst" ;;
                w) timed w qemu-img convert -W -m 8 -O "$fmt" "$@" "$src" "$dst" ;;
            esac
        done
    done
    read -r f fs frss fm < <(stat_of f)
    read -r q qs qrss _ < <(stat_of q)
    read -r w ws _ wm < <(stat_of w)
    printf "%-26s %7ss %7ss %7ss %7.2f %7.2f %7.2f %15s %6sMB %4sMB\n" "$name" "$f" "$q" "$w" \
        "$(ratio "$f" "$q")" "$(ratio "$f" "$w")" "$(ratio "$fm" "$wm")" "$fs/$qs/$ws" \
        "$frss" "$qrss"
}
run "vmdk -> qcow2" guest.vmdk qcow2 out.qcow2
run "qcow2 -> raw" guest.qcow2 raw out.raw
run "raw -> vmdk stream" guest.raw vmdk out.vmdk -o subformat=streamOptimized
run "raw -> qcow2" guest.raw qcow2 out.qcow2
run "raw -> qcow2 (cold)" guest.raw qcow2 out.qcow2
run "qcow2 -> raw (cold)" guest.qcow2 raw out.raw
run "raw -> qcow2 -c" guest.raw qcow2 out.qcow2 -c
run "100G sparse -> qcow2" sparse.raw qcow2 out.qcow2
run "100G sparse -> raw" sparse.raw raw out.raw
rm -f out.* t.txt times.txt
