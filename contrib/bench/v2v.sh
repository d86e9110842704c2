#!/bin/bash
# Side-by-side: `ferry v2v -i disk` against `virt-v2v -i disk -o local` (issue 15: ferry at least
# 10x faster end to end), and `ferry convert -O qcow2` (the copy alone), on one 4 GiB guest: the
# real Debian 12 of contrib/boottest.sh's vmx case (kernel, GRUB, an initramfs without virtio,
# /dev/sda1 in fstab) with its disk grown to 4 GiB and a second ext4 partition holding 1.5 GiB of
# data (/srv in fstab). virt-v2v runs its libguestfs appliance under TCG here (KVM is not usable
# on these machines): its time is mostly the appliance's, which is what a user of this machine
# waits for. The tools take turns within each of $RUNS rounds, the page cache dropped before each;
# the table gives the best and median wall time of each, the spread (slowest/best) and the
# output's allocated size, then every run. Each output is checked
# (`qemu-img check`; ferry's and virt-v2v's guests must both have virtio in the domain XML).
# Usage: contrib/bench/v2v.sh [WORKDIR]   (default /var/tmp/ferry-bench-v2v-peer; root needed)
#        Needs virt-v2v (apt-get install virt-v2v) and the vmx guest of contrib/boottest.sh
#        (built when missing, without booting it: FERRY_BOOT_DIR as there).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-v2v-peer}
RUNS=${RUNS:-3}
boot=${FERRY_BOOT_DIR:-/var/tmp/ferry-boottest}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
command -v virt-v2v >/dev/null || { echo "virt-v2v is not installed (apt-get install virt-v2v)" >&2; exit 1; }
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
mkdir -p "$work"
cd "$work"

if [ ! -f guest.done ]; then
    src=$boot/vmx/guest-a.vmdk
    if [ ! -f "$src" ]; then
        echo "building the vmx guest of contrib/boottest.sh (once)..."
        FERRY_BOOT_BUILD_ONLY=1 FERRY=$ferry bash "$here/contrib/boottest.sh" vmx
    fi
    echo "building the 4 GiB guest (once)..."
    rm -f guest.raw
    qemu-img convert -O raw "$src" guest.raw
    qemu-img resize -q -f raw guest.raw 4G
    # A second partition after the root: /srv with 1.5 GiB of incompressible data.
    echo ',,83' | sfdisk -q --append guest.raw
    read -r p2s p2n < <(sfdisk -J guest.raw | python3 -c '
import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[1]["start"]*512, p[1]["size"]*512)')
    srv=$(losetup -f --show -o "$p2s" --sizelimit "$p2n" guest.raw)
    trap 'umount -q "$work/mnt" 2>/dev/null; losetup -d "$srv" 2>/dev/null' EXIT
    mkfs.ext4 -q -L srv "$srv"
    mkdir -p mnt
    mount "$srv" mnt
    for i in 1 2 3; do head -c 500M /dev/urandom >"mnt/data$i.bin"; done
    umount mnt
    losetup -d "$srv"
    trap - EXIT
    # fstab names the new partition as the source machine would.
    "$ferry" cat guest.raw /etc/fstab >fstab
    printf '/dev/sda2 /srv ext4 defaults 0 2\n' >>fstab
    root=$(losetup -f --show -o 1048576 --sizelimit $((2 * 1024 * 1024 * 1024 - 1024 * 1024)) guest.raw)
    mount "$root" mnt
    cp fstab mnt/etc/fstab
    mkdir -p mnt/srv
    umount mnt
    losetup -d "$root"
    touch guest.done
fi

declare -A ALL size
run() { # name command...
    local name=$1 t0 t1
    shift
    rm -rf out && mkdir out
    drop
    t0=$(now)
    if ! "$@" >"$name.log" 2>&1; then
        echo "$name failed: see $work/$name.log" >&2
        exit 1
    fi
    t1=$(now)
    ALL[$name]+="$(ms "$t0" "$t1") "
    local disk
    # virt-v2v -o local names its disk NAME-sda, without an extension.
    disk=$(find out -maxdepth 1 -type f ! -name '*.xml' | sort | head -n 1)
    qemu-img check -q "$disk"
    size[$name]=$(du -B1 "$disk" | cut -f1)
    case $name in
    ferry-v2v | virt-v2v) grep -q "bus=.virtio." out/*.xml || {
        echo "$name: no virtio disk in its XML" >&2
        exit 1
    } ;;
    esac
}

for r in $(seq 1 "$RUNS"); do
    echo "round $r/$RUNS"
    run ferry-v2v "$ferry" -q v2v -i disk guest.raw -on bench -o out -of qcow2
    run virt-v2v virt-v2v -i disk guest.raw -o local -os out -of qcow2 -on bench
    run ferry-convert "$ferry" convert -O qcow2 guest.raw out/bench.qcow2
done

# The runs of NAME in ms, one per line.
runs() { tr ' ' '\n' <<<"${ALL[$1]}" | grep .; }
printf '\n%-14s %9s %9s %8s %14s\n' tool best_ms median_ms spread "output bytes"
for n in ferry-v2v virt-v2v ferry-convert; do
    printf '%-14s %9s %9s %8s %14s\n' "$n" "$(runs $n | best)" "$(runs $n | median)" \
        "$(ratio "$(runs $n | worst)" "$(runs $n | best)")" "${size[$n]}"
done
printf '\nvirt-v2v / ferry v2v: best %sx, median %sx (goal >= 10; virt-v2v under TCG)\n' \
    "$(ratio "$(runs virt-v2v | best)" "$(runs ferry-v2v | best)")" \
    "$(ratio "$(runs virt-v2v | median)" "$(runs ferry-v2v | median)")"
echo "ferry v2v / ferry convert: $(ratio "$(runs ferry-v2v | best)" "$(runs ferry-convert | best)")"
echo "every run, ms:"
for n in ferry-v2v virt-v2v ferry-convert; do
    echo "  $n: ${ALL[$n]}"
done
