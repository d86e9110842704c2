#!/usr/bin/env bash
# Opening a 1 TiB sparse image: time and peak memory of `ferry info` and `ferry map` vs `qemu-img`,
# for qcow2 and VMDK. Both must be milliseconds and megabytes, whatever the virtual size. (ferry info
# also counts allocated bytes, which reads every table; qemu-img info does not.)
# Usage: contrib/bench/open.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --example read_seq
ferry=$PWD/target/release/ferry
w=${1:-/tmp/ferry-bench-open}
mkdir -p "$w"
qemu-img create -q -f qcow2 "$w/1t.qcow2" 1T
qemu-io -f qcow2 -c "write -P 1 0 1M" -c "write -P 2 700G 1M" "$w/1t.qcow2" >/dev/null
qemu-img create -q -f vmdk -o subformat=monolithicSparse "$w/1t.vmdk" 1T
qemu-io -f vmdk -c "write -P 1 0 1M" -c "write -P 2 700G 1M" "$w/1t.vmdk" >/dev/null
measure() { /usr/bin/time -f "%e s, %M KiB max RSS" "$@" 2>&1 >/dev/null | tail -n 1; }
for img in 1t.qcow2 1t.vmdk; do
  echo "== $img ($(du -h "$w/$img" | cut -f1) on disk)"
  echo "  open only (library):     $(measure target/release/examples/read_seq "$w/$img" 0)"
  echo "  qemu-img info:           $(measure qemu-img info "$w/$img")"
  echo "  ferry info:              $(measure "$ferry" info "$w/$img")"
  echo "  qemu-img map --output=json: $(measure qemu-img map --output=json "$w/$img")"
  echo "  ferry map --json:        $(measure "$ferry" map --json "$w/$img")"
done
