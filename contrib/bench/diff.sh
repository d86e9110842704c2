#!/bin/bash
# `ferry diff OVERLAY` on a one-file edit of a 4 GiB guest: the pruned comparison (the
# overlay's clusters → changed inodes) against the walk of both whole trees (--full-walk, what
# `ferry diff` did before), and virt-diff when installed (libguestfs-tools; under TCG here,
# LIBGUESTFS_BACKEND_SETTINGS=force_tcg). Warm page cache; the tools take turns within each of
# $RUNS rounds, so load elsewhere hits all; the table gives the median wall time and the spread
# (slowest/fastest), and checks that the fast path and the full walk print the same.
#   base.raw: $SIZE (default 4G) MBR disk, one ext4 partition from 1 MiB, an OS-like tree of
#   $FILES (default 24000) small files in 40 × 30 directories plus 1 GiB of file data;
#   over.qcow2: /etc/hostname rewritten through a kernel loop mount of a copy, the copy turned
#   into an overlay over base.raw holding only the clusters that differ (`qemu-img rebase`).
# Usage: contrib/bench/diff.sh [WORKDIR]   (default /var/tmp/ferry-bench-diff; inputs kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-diff}
RUNS=${RUNS:-5}
SIZE=${SIZE:-4G}
FILES=${FILES:-24000}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
mkdir -p "$work"
cd "$work"

if [ ! -f inputs.done ]; then
    echo "building inputs (once)..."
    rm -rf src base.raw copy.raw part.raw over.qcow2 mnt
    mkdir -p src/etc src/usr/bin src/var/lib
    printf 'PRETTY_NAME="Bench"\nID=debian\nVERSION_ID=12\n' > src/etc/os-release
    printf '/dev/sda1 / ext4 defaults 0 1\n' > src/etc/fstab
    echo bench > src/etc/hostname
    for ((d = 0; d < 40; d++)); do
        for ((e = 0; e < 30; e++)); do mkdir -p "src/usr/share/p$d/s$e"; done
    done
    for ((i = 0; i < FILES; i++)); do
        echo "file $i" > "src/usr/share/p$((i % 40))/s$((i / 40 % 30))/f$i"
    done
    for ((i = 0; i < 16; i++)); do
        head -c 64M /dev/urandom > "src/var/lib/blob$i"
    done
    truncate -s "$SIZE" base.raw
    echo 'start=2048, type=83' | sfdisk -q base.raw
    bytes=$(($(stat -c %s base.raw) - 1048576))
    truncate -s "$bytes" part.raw
    mkfs.ext4 -q -d src part.raw
    dd if=part.raw of=base.raw bs=1M seek=1 conv=notrunc,sparse status=none
    rm -f part.raw
    cp --sparse=always base.raw copy.raw
    mkdir -p mnt
    loop=$(losetup --find --show --offset 1048576 --sizelimit "$bytes" copy.raw)
    mount "$loop" mnt
    echo edited > mnt/etc/hostname
    umount mnt
    losetup -d "$loop"
    # Only the clusters that differ (convert -B would write every cluster of copy.raw).
    qemu-img create -q -f qcow2 -b copy.raw -F raw over.qcow2
    qemu-img rebase -f qcow2 -b base.raw -F raw over.qcow2
    rm -f copy.raw
    touch inputs.done
fi

have_virt_diff=$(command -v virt-diff || true)
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
declare -A times
rm -f virt.txt
for ((r = 0; r < RUNS; r++)); do
    t0=$(now)
    "$ferry" diff over.qcow2 > fast.txt
    t1=$(now)
    "$ferry" diff --full-walk over.qcow2 > full.txt
    t2=$(now)
    cmp -s fast.txt full.txt || { echo "FAST PATH DIFFERS:"; diff fast.txt full.txt; exit 1; }
    times[fast]+="$(ms "$t0" "$t1") "
    times[full]+="$(ms "$t1" "$t2") "
    if [ -n "$have_virt_diff" ] && [ "$r" -lt "${VIRT_RUNS:-2}" ]; then
        virt-diff --format=raw -a base.raw --format=qcow2 -A over.qcow2 > virt.txt || true
        t3=$(now)
        times[virt]+="$(ms "$t2" "$t3") "
    fi
done
echo "ferry's changes:"; cat fast.txt
[ -f virt.txt ] && { echo "virt-diff's:"; cat virt.txt; }

stats() { # median in ms and slowest/fastest of the numbers given
    local l
    l=$(printf '%s\n' "$@")
    printf '%8s ms  x%s' "$(median <<<"$l")" "$(ratio "$(worst <<<"$l")" "$(best <<<"$l")")"
}
printf '%-34s %s\n' "tool" "median, spread"
# shellcheck disable=SC2086
printf '%-34s %s\n' "ferry diff OVERLAY (changed inodes)" "$(stats ${times[fast]})"
# shellcheck disable=SC2086
printf '%-34s %s\n' "ferry diff --full-walk OVERLAY" "$(stats ${times[full]})"
if [ -n "${times[virt]:-}" ]; then
    # shellcheck disable=SC2086
    label="virt-diff (TCG)"
    # Its inspection may refuse this synthetic guest; the time is then its appliance's start.
    [ -s virt.txt ] || label="virt-diff (TCG, refused the guest)"
    printf '%-34s %s\n' "$label" "$(stats ${times[virt]})"
fi
