#!/bin/bash
# Side-by-side: ferry's FUSE mount vs the kernel's loop mount vs fuse2fs, on one 4 GiB guest
# image (ext4, made with mkfs.ext4 -d from a copy of the host's /etc and part of /usr, a
# 20 000-file tree and a 1 GiB file). ferry reads the qcow2 and the raw image, the others raw.
#   (a) mount → first `cat /etc/os-release`, with the image's pages evicted from the page cache
#       (the tools themselves warm, as for an admin mounting image after image), and (a') with
#       the whole page cache dropped (the tool's own binary read from disk too)
#   (b) cold sequential read of the 1 GiB file
#   (c) cold `find -printf` with stat fields over the 20 000-file tree, and cold `tar` of /usr
# The tools take turns within each of $RUNS rounds; prints each one's best time with the spread
# (slowest/best), the ratios to the kernel of the bests and of the medians of one run, and the
# peak RSS of each FUSE daemon.
# Needs root (loop mounts, drop_caches), fuse2fs, e2fsprogs, qemu-img. Usage:
#   contrib/bench/mount.sh [WORKDIR]     (default /var/tmp/ferry-bench; the image is kept)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench}
RUNS=${RUNS:-3}
# The tools compared, in the order they take turns; also fuse2fs (10-20x slower on the walks)
# and ferry-vmdk (a streamOptimized copy of the image); base-raw and base-qcow2 run the binary
# FERRY_BASE (an older build, for before/after in one run).
WHO=${WHO:-kernel ferry-raw ferry-qcow2}
# The measures taken, a subset of "a2 a b c d" (the letters above; a2 is (a')), e.g. STEPS="a2 a"
# to time only the mount and first read, over many rounds.
STEPS=${STEPS:-a2 a b c d}
pick_ferry # FERRY=path: that binary; otherwise the tree is built
mkdir -p "$work"
cd "$work"

if [ ! -f guest.qcow2 ]; then
    echo "building the guest image (once)..."
    rm -rf stage && mkdir -p stage/usr/lib stage/tree stage/big
    cp -a /etc stage/etc 2>/dev/null || true
    cp -a /usr/share /usr/bin /usr/include stage/usr/
    cp -a /usr/lib/x86_64-linux-gnu /usr/lib/os-release stage/usr/lib/
    for d in $(seq 0 199); do
        mkdir stage/tree/d$d
        (cd stage/tree/d$d && for f in $(seq 0 99); do echo "$d $f" > f$f; done)
    done
    head -c 1G /dev/urandom > stage/big/1g
    truncate -s 4G guest.img
    mkfs.ext4 -q -F -d stage guest.img
    qemu-img convert -f raw -O qcow2 guest.img guest.qcow2
    rm -rf stage
fi
if [[ $WHO == *ferry-vmdk* ]] && [ ! -f guest.vmdk ]; then
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized guest.img guest.vmdk
fi
mkdir -p mnt

# mount_cmd NAME → mounts at mnt; umount_cmd NAME → unmounts.
mount_cmd() {
    case $1 in
        kernel) mount -o ro,loop guest.img mnt ;;
        fuse2fs) fuse2fs -o ro,fakeroot guest.img mnt >/dev/null ;;
        ferry-qcow2) "$ferry" mount guest.qcow2 mnt ;;
        ferry-raw) "$ferry" mount guest.img mnt ;;
        ferry-vmdk) "$ferry" mount guest.vmdk mnt ;;
        base-qcow2) "$FERRY_BASE" mount guest.qcow2 mnt ;;
        base-raw) "$FERRY_BASE" mount guest.img mnt ;;
    esac
}
umount_cmd() {
    case $1 in
        ferry-* | base-*) "$ferry" umount mnt ;;
        *) umount mnt ;;
    esac
}
# Peak RSS (kB) of the FUSE daemon serving mnt, or "-" (the kernel has none).
daemon_rss() {
    local pid
    case $1 in
        fuse2fs)
            pid=$(pgrep -n -x fuse2fs) && awk '/VmHWM/ {print $2}' /proc/"$pid"/status || echo -
            ;;
        ferry-* | base-*) ferry_rss mnt ;;
        *) echo - ;;
    esac
}

step() { [[ " $STEPS " == *" $1 "* ]]; }

# Rounds: every tool takes its turn within each round, so a burst of load elsewhere (2 cores
# shared with other jobs) hits all of them alike; each cell is the best of the rounds and the
# spread (slowest/best) shows how noisy the machine was.
rm -f times.txt
for _ in $(seq "$RUNS"); do
    for who in $WHO; do
        if step a2; then
            drop
            stamp t0; mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; stamp t1
            echo "$who a2 $(msus "$t0" "$t1")" >> times.txt
            umount_cmd "$who"
        fi
        evict guest.img guest.qcow2 guest.vmdk
        stamp t0; mount_cmd "$who"; cat mnt/etc/os-release >/dev/null; stamp t1
        step a && echo "$who a $(msus "$t0" "$t1")" >> times.txt
        if step b; then
            drop
            t0=$(now); dd if=mnt/big/1g of=/dev/null bs=1M status=none; t1=$(now)
            echo "$who b $(ms "$t0" "$t1")" >> times.txt
        fi
        if step c; then
            drop
            t0=$(now); find mnt/tree -printf '%P %y %m %U %G %s %n %i %T@ %C@ %l\n' >/dev/null; t1=$(now)
            echo "$who c $(ms "$t0" "$t1")" >> times.txt
        fi
        if step d; then
            drop
            t0=$(now); tar cf - -C mnt usr | cat >/dev/null; t1=$(now)
            echo "$who d $(ms "$t0" "$t1")" >> times.txt
        fi
        rss=$(daemon_rss "$who")
        [ "$rss" = - ] || echo "$who rss $rss" >> times.txt
        umount_cmd "$who"
    done
done

# cell WHO METRIC: "best(spread)"; bestof WHO METRIC: the best alone; medof: the median.
bestof() { awk -v w="$1" -v m="$2" '$1 == w && $2 == m { if (b == "" || $3 < b) b = $3 } END { print b + 0 }' times.txt; }
medof() { awk -v w="$1" -v m="$2" '$1 == w && $2 == m { print $3 }' times.txt | median | awk '{ print $1 + 0 }'; }
cell() {
    awk -v w="$1" -v m="$2" '$1 == w && $2 == m { if (b == "" || $3 < b) b = $3; if ($3 > s) s = $3 }
        END { if (b == "") print "-"; else printf "%g(%.2f)", b, (b > 0 ? s / b : 1) }' times.txt
}
echo "best of $RUNS rounds in ms, (spread = slowest/best); read in MiB/s from the best"
printf '%-12s %14s %14s %16s %14s %14s %10s\n' "" "mount+cat" "(all cold)" "1 GiB read" "find 20k" "tar /usr" "peak RSS"
for who in $WHO; do
    b=$(bestof "$who" b)
    mbs=$(awk -v t="$b" 'BEGIN { if (t == 0) t = 1; printf "%.0f", 1024 / (t / 1000) }')
    rss=$(awk -v w="$who" '$1 == w && $2 == "rss" { if ($3 > r) r = $3 } END { if (r) print r " kB"; else print "-" }' times.txt)
    printf '%-12s %14s %14s %16s %14s %14s %10s\n' "$who" "$(cell "$who" a)" "$(cell "$who" a2)" \
        "$mbs $(cell "$who" b | sed 's/.*(/(/')" "$(cell "$who" c)" "$(cell "$who" d)" "$rss"
done
# The ratios of the bests, then of the medians: one outlier (the host's cache serving a
# whole read, a burst of load) moves a best but not a median.
for of in bestof medof; do
    echo
    if [ $of = bestof ]; then
        echo "ratios of the best times, tool / kernel (read: throughput ratio, tool's MiB/s / kernel's)"
    else
        echo "ratios of the median times, the same way"
    fi
    for who in $WHO; do
        [ "$who" = kernel ] && continue
        echo "$who: mount+cat $(ratio "$($of "$who" a)" "$($of kernel a)")x," \
            "all cold $(ratio "$($of "$who" a2)" "$($of kernel a2)")x," \
            "read $(ratio "$($of kernel b)" "$($of "$who" b)")," \
            "find $(ratio "$($of "$who" c)" "$($of kernel c)")x," \
            "tar $(ratio "$($of "$who" d)" "$($of kernel d)")x"
    done
done
