# Shared by the contrib/bench scripts (source it): timing, cache control and summaries.
# Every script times its tools in turns within each round (interleaved), so that a change in
# the machine's load hits both sides, and reports bests, medians and every run (the spread).

# Nanoseconds since the epoch (bash's clock: no `date` to start).
now() { echo "${EPOCHREALTIME/./}000"; }
# Milliseconds between two `now` values.
ms() { echo $(( ($2 - $1) / 1000000 )); }
# Microseconds since the epoch into the variable named $1, without a fork: `t=$(now)` runs a
# subshell, a few tenths of a millisecond that a short measure (mount → first cat) would carry.
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/./}"; }
# Milliseconds, with two decimals, between two `stamp` values.
msus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1000 }'; }
# Drops the whole page cache (the tools' own binaries included).
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Evicts the named files' pages only (the tools themselves stay warm, as for an admin
# mounting image after image); names of files that do not exist are skipped.
evict() { python3 -c 'import os, sys
for p in sys.argv[1:]:
    if not os.path.exists(p): continue
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"; }
# Reads programs and the libraries they load into the page cache. A step's `drop` also
# evicts the tools, so without this a later mount → first read would time paging the
# binary back in, not the mount (the case measured is an admin mounting image after image).
warm() { local p; for p in "$@"; do cat "$p"; ldd "$p" 2>/dev/null | awk '$3 ~ /^\// {print $3}' | xargs -r cat; done >/dev/null 2>&1 || true; }
# The smallest / the largest / the median of numbers on stdin, one per line.
best() { sort -n | head -1; }
worst() { sort -n | tail -1; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# a / b with two decimals (b = 0 counts as 1).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.2f", a / b }'; }
# MiB/s for $2 bytes read in $1 ms.
mibs() { awk -v t="$1" -v s="$2" 'BEGIN { if (t == 0) t = 1; printf "%.0f", s / 1048576 / (t / 1000) }'; }
# Peak RSS (kB) of the ferry daemon serving mountpoint $1, or "-". Each daemon's pid file
# (/run/ferry/*.pid) holds its pid, then its mountpoint; stale files of other mounts are skipped.
ferry_rss() {
    local want f pid
    want=$(realpath "$1")
    for f in /run/ferry/*.pid; do
        [ -r "$f" ] || continue
        if [ "$(sed -n 2p "$f")" = "$want" ]; then
            pid=$(sed -n 1p "$f")
            if [ -r /proc/"$pid"/status ]; then
                awk '/VmHWM/ {print $2}' /proc/"$pid"/status
                return
            fi
        fi
    done
    echo -
}
# Sets $ferry, the binary measured: FERRY=path runs that binary as it is (to compare two
# builds); otherwise the tree ($here) is built and its release binary taken.
pick_ferry() {
    ferry=${FERRY:-${CARGO_TARGET_DIR:-$here/target}/release/ferry}
    [ -n "${FERRY:-}" ] || (cd "$here" && cargo build --release -q)
}
