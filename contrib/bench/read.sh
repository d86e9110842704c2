#!/usr/bin/env bash
# Sequential read of a 2 GiB image, side by side (best of 5, alternating): `qemu-img convert -O raw` vs `ferry convert -O raw`
# (both to a file on the same disk; neither fsyncs, qemu-img never does) and the library in 1 MiB reads.
# Usage: contrib/bench/read.sh [WORKDIR]   (needs ~10 GiB free; hyperfine is used if installed)
set -euo pipefail
cd "$(dirname "$0")/../.."
. contrib/bench/lib.sh
cargo build --release --quiet --example read_seq
target=${CARGO_TARGET_DIR:-$PWD/target}
ferry=$target/release/ferry
readseq=$target/release/examples/read_seq
w=${1:-/tmp/ferry-bench}
mkdir -p "$w"
size=$((2 << 30))

if [ ! -f "$w/src.raw" ]; then
  echo "building a 2 GiB guest-like raw disk (random, text, zeros, holes)"
  python3 - "$w/src.raw" "$size" <<'PY'
import os, random, sys
random.seed(2)
path, size = sys.argv[1], int(sys.argv[2])
text = b"".join(b"%08d a log line of a guest, fairly compressible text\n" % i for i in range(20000))
with open(path, "wb") as f:
    f.truncate(size)
    off = 0
    while off < size:
        n = min(random.choice([256 << 10, 1 << 20, 4 << 20]), size - off)
        r = random.random()
        f.seek(off)
        if r < 0.35:
            f.write(os.urandom(n))
        elif r < 0.8:
            f.write((text * (n // len(text) + 1))[:n])
        off += n + random.choice([0, 0, 0, 1 << 20])
PY
fi
mk() { [ -f "$w/$1" ] || qemu-img convert -O "${@:2}" "$w/src.raw" "$w/$1"; }
mk plain.qcow2 qcow2
mk zlib.qcow2 qcow2 -c
mk zstd.qcow2 qcow2 -c -o compression_type=zstd
mk stream.vmdk vmdk -o subformat=streamOptimized
mk sparse.vmdk vmdk -o subformat=monolithicSparse

# t CMD...: the wall time of CMD in ms.
t() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); ms "$t0" "$t1"; }
# Library level: sequential 1 MiB reads, one at a time (qemu-img bench -d 1 vs examples/read_seq),
# warm page cache. Convert level: SRC -> raw file in the work dir, fsynced by both. Best of 3,
# the two tools alternating so that both see the same machine state.
printf '%-14s | %9s %9s %6s | %9s %9s %6s   (ms)\n' image "qemu conv" "ferry" ratio "qemu read" "ferry" ratio
for img in plain.qcow2 zlib.qcow2 zstd.qcow2 stream.vmdk sparse.vmdk; do
  cat "$w/$img" >/dev/null
  n=$((size >> 20))
  lq=""; lf=""; bq=""; bf=""
  for i in 1 2 3 4 5; do
    lq+="$(t qemu-img bench -c "$n" -s 1M -S 1M -d 1 "$w/$img") "
    lf+="$(t "$readseq" "$w/$img") "
    # Deleting the last 2 GiB output leaves the filesystem busy freeing it: settle first.
    rm -f "$w/out.raw"; sync; bq+="$(t qemu-img convert -O raw "$w/$img" "$w/out.raw") "
    rm -f "$w/out.raw"; sync; bf+="$(t "$ferry" convert "$w/$img" -O raw "$w/out.raw") "
  done
  # shellcheck disable=SC2086
  lq=$(printf '%s\n' $lq | best); lf=$(printf '%s\n' $lf | best)
  # shellcheck disable=SC2086
  bq=$(printf '%s\n' $bq | best); bf=$(printf '%s\n' $bf | best)
  printf '%-14s | %9s %9s %6s | %9s %9s %6s\n' "$img" "$bq" "$bf" "$(ratio "$bf" "$bq")" \
    "$lq" "$lf" "$(ratio "$lf" "$lq")"
done
rm -f "$w/out.raw"
