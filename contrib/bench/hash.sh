#!/bin/bash
# `ferry hash IMG` against its peer, `qemu-img convert -O raw IMG OUT && sha256sum OUT` (qemu-img
# cannot write raw to a pipe: to /dev/stdout it writes nothing and exits 0, and `qemu-img dd`
# fails to resize it, so the peer needs the whole raw copy; OUT is on tmpfs, $OUTDIR, so the
# peer pays no disk writeback). Warm page cache: each image is read once before the rounds.
# The two take turns within each of $RUNS rounds (lib.sh), so load elsewhere hits both; every
# round checks that the digests agree. The table gives best and median wall times (ms) and the
# ratio peer / ferry of each (above 1: ferry is faster).
# Inputs: the images named in $IMAGES (space-separated paths, e.g. an existing bench guest:
# IMAGES="/var/tmp/ferry-bench/guest.img /var/tmp/ferry-bench/guest.qcow2"), or else, built
# once in WORKDIR:
#   guest.raw: $SIZE (default 2G) sparse raw, about half random data, the rest holes;
#   guest.qcow2: the same as qcow2; guest-c.qcow2: compressed; sparse.raw: 64G holding the
#   same data at its start (time must follow the data, not the virtual size).
# Usage: [IMAGES=...] contrib/bench/hash.sh [WORKDIR]   (default /var/tmp/ferry-bench-hash)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/ferry-bench-hash}
RUNS=${RUNS:-5}
SIZE=${SIZE:-2G}
OUTDIR=${OUTDIR:-/dev/shm}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
. "$here/contrib/bench/lib.sh"
(cd "$here" && cargo build --release -q)

if [ -n "${IMAGES:-}" ]; then
    read -r -a images <<< "$IMAGES"
else
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
    images=("$work/guest.raw" "$work/sparse.raw" "$work/guest.qcow2" "$work/guest-c.qcow2")
fi

out=$(mktemp "$OUTDIR/ferry-bench-hash.XXXXXX")
# A copy of the binary: a rebuild during the rounds must not swap it underneath.
bin=$(mktemp /tmp/ferry-bench-hash-bin.XXXXXX)
cp "$ferry" "$bin"
chmod 0755 "$bin"
ferry=$bin
trap 'rm -f "$out" "$bin"' EXIT
for img in "${images[@]}"; do
    cat "$img" > /dev/null
done
declare -A ferry_ms peer_ms
for ((r = 0; r < RUNS; r++)); do
    for img in "${images[@]}"; do
        t0=$(now)
        a=$("$ferry" hash "$img" | cut -d' ' -f1)
        t1=$(now)
        qemu-img convert -O raw "$img" "$out"
        b=$(sha256sum "$out" | cut -d' ' -f1)
        t2=$(now)
        : > "$out"
        [ "$a" = "$b" ] || { echo "DIGESTS DIFFER on $img: ferry $a, qemu-img $b"; exit 1; }
        ferry_ms[$img]+="$(ms "$t0" "$t1") "
        peer_ms[$img]+="$(ms "$t1" "$t2") "
        echo "round $((r + 1)) $img: ferry $(ms "$t0" "$t1") ms, peer $(ms "$t1" "$t2") ms" >&2
    done
done

col() { printf '%s\n' $1 | "$2"; }
printf '%-40s %9s %9s %9s %9s %7s %7s\n' image ferry-best ferry-med peer-best peer-med \
    'x best' 'x med'
for img in "${images[@]}"; do
    fb=$(col "${ferry_ms[$img]}" best) fm=$(col "${ferry_ms[$img]}" median)
    pb=$(col "${peer_ms[$img]}" best) pm=$(col "${peer_ms[$img]}" median)
    printf '%-40s %9s %9s %9s %9s %7s %7s\n' "$img" "$fb" "$fm" "$pb" "$pm" \
        "$(ratio "$pb" "$fb")" "$(ratio "$pm" "$fm")"
    echo "  runs (ms): ferry ${ferry_ms[$img]}/ peer ${peer_ms[$img]}"
done
