#!/bin/bash
# `ferry hash` vs `qemu-img convert -O raw IMG out.raw && sha256sum out.raw` (qemu-img cannot
# write raw to a pipe: it resizes its output) on the same inputs, warm page cache. The two take turns within each of $RUNS rounds, so load elsewhere hits both;
# the table gives the median wall time and the spread (slowest/fastest) of each, and checks
# that the digests agree.
#   guest.raw: $SIZE (default 2G) sparse raw, about half random data, the rest holes;
#   guest.qcow2: the same as qcow2; guest-c.qcow2: compressed; sparse.raw: 64G holding the
#   same data at its start (time must follow the data, not the virtual size).
# Usage: contrib/bench/hash.sh [WORKDIR]   (default /var/tmp/ferry-bench-hash; inputs kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-hash}
RUNS=${RUNS:-5}
SIZE=${SIZE:-2G}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f inputs.done ]; then
    echo "building inputs (once)..."
    rm -f guest.raw
    truncate -s "$SIZE" guest.raw
    mib=$(($(stat -c %s guest.raw) >> 20))
    # 4 MiB of random data every 8 MiB: half data, half holes.
    for ((m = 0; m < mib; m += 8)); do
        dd if=/dev/urandom of=guest.raw bs=1M seek=$m count=4 conv=notrunc status=none
    done
    cp --sparse=always guest.raw sparse.raw
    truncate -s 64G sparse.raw
    qemu-img convert -O qcow2 guest.raw guest.qcow2
    qemu-img convert -c -O qcow2 guest.raw guest-c.qcow2
    touch inputs.done
fi

declare -A times
for ((r = 0; r < RUNS; r++)); do
    for img in guest.raw sparse.raw guest.qcow2 guest-c.qcow2; do
        t0=$(now)
        a=$("$ferry" hash "$img" | cut -d' ' -f1)
        t1=$(now)
        qemu-img convert -O raw "$img" out.raw
        b=$(sha256sum out.raw | cut -d' ' -f1)
        rm -f out.raw
        t2=$(now)
        [ "$a" = "$b" ] || { echo "DIGESTS DIFFER on $img: ferry $a, qemu-img $b"; exit 1; }
        times[$img,ferry]+="$(ms "$t0" "$t1") "
        times[$img,qemu]+="$(ms "$t1" "$t2") "
    done
done

stats() { # median in ms and slowest/fastest of the numbers given
    local l
    l=$(printf '%s\n' "$@")
    printf '%8s ms  x%s' "$(median <<<"$l")" "$(ratio "$(worst <<<"$l")" "$(best <<<"$l")")"
}
printf '%-15s %-22s %-22s\n' image "ferry hash (median, spread)" "qemu-img convert;sha256sum"
for img in guest.raw sparse.raw guest.qcow2 guest-c.qcow2; do
    # shellcheck disable=SC2086
    printf '%-15s %-22s %-22s\n' "$img" "$(stats ${times[$img,ferry]})" "$(stats ${times[$img,qemu]})"
done
