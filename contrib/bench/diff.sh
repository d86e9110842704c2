#!/bin/bash
# `ferry diff OVERLAY` on a one-file edit of a 4 GiB guest: the pruned comparison (the
# overlay's clusters → changed inodes) against the walk of both whole trees (--full-walk, what
# `ferry diff` did before), and virt-diff when installed (libguestfs-tools; under TCG here,
# LIBGUESTFS_BACKEND_SETTINGS=force_tcg; $VIRT_RUNS of the rounds, default 2). Warm page cache;
# the tools take turns within each of $RUNS rounds (lib.sh), so load elsewhere hits all; the
# table gives best and median wall times with every run, the ratio virt-diff / ferry diff, and
# checks that the fast path and the full walk print the same.
#   base.raw: $SIZE (default 4G) MBR disk, one ext4 partition from 1 MiB, an OS-like tree of
#   $FILES (default 24000) small files in 40 × 30 directories plus 1 GiB of file data;
#   over.qcow2: /etc/hostname rewritten through a kernel loop mount of a copy, the copy turned
#   into an overlay over base.raw holding only the clusters that differ (`qemu-img rebase`).
# Usage: contrib/bench/diff.sh [WORKDIR]   (default /var/tmp/ferry-bench-diff; inputs kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/var/tmp/ferry-bench-diff}
RUNS=${RUNS:-5}
SIZE=${SIZE:-4G}
FILES=${FILES:-24000}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
. "$here/contrib/bench/lib.sh"
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
    printf '127.0.0.1 localhost\n' > src/etc/hosts
    # libguestfs inspection (virt-diff) takes a Linux root only with /etc, /bin and
    # /etc/fstab or /etc/hosts.
    ln -s usr/bin src/bin
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
# A copy of the binary: a rebuild during the rounds must not swap it underneath.
bin=$(mktemp /tmp/ferry-bench-diff-bin.XXXXXX)
cp "$ferry" "$bin"
chmod 0755 "$bin"
ferry=$bin
trap 'rm -f "$bin"' EXIT
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
    echo "round $((r + 1)): ${times[fast]}/ ${times[full]}/ ${times[virt]:-}" >&2
done
echo "ferry's changes:"; cat fast.txt
[ -f virt.txt ] && { echo "virt-diff's:"; cat virt.txt; }

col() { printf '%s\n' $1 | "$2"; }
fb=$(col "${times[fast]}" best) fm=$(col "${times[fast]}" median)
printf '%-36s %9s %9s  %s\n' tool "best ms" "median ms" "runs"
printf '%-36s %9s %9s  %s\n' "ferry diff OVERLAY (changed inodes)" "$fb" "$fm" "${times[fast]}"
printf '%-36s %9s %9s  %s\n' "ferry diff --full-walk OVERLAY" \
    "$(col "${times[full]}" best)" "$(col "${times[full]}" median)" "${times[full]}"
if [ -n "${times[virt]:-}" ]; then
    label="virt-diff (TCG)"
    # Its inspection may refuse the guest; the time is then its appliance's start.
    [ -s virt.txt ] || label="virt-diff (TCG, refused the guest)"
    vb=$(col "${times[virt]}" best) vm=$(col "${times[virt]}" median)
    printf '%-36s %9s %9s  %s\n' "$label" "$vb" "$vm" "${times[virt]}"
    echo "virt-diff / ferry diff: best $(ratio "$vb" "$fb"), median $(ratio "$vm" "$fm")"
fi
