#!/bin/bash
# `ferry v2v -i ova` on a package whose disk is stored gzip-compressed (`ovf:compression="gzip"`),
# read in place through an index of its deflate stream, side by side with: the same package with
# the disk stored plain, and `gzip -dc` of the disk into a scratch file, the step that reading
# it took before (and that virt-v2v takes: it decompresses such disks to a temporary directory)
# before any conversion starts. The three take turns within each of $RUNS rounds, the page cache
# dropped before each; the table gives the best and median wall time, the spread (slowest/best)
# and the scratch space used, then every run.
# Guest: contrib/bench/v2v-trim.sh's disk (WORKDIR/guest.raw; run that script first).
# Usage: contrib/bench/ova-gzip.sh [WORKDIR]   (default /var/tmp/ferry-bench-v2v; root: drop_caches)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
. "$here/contrib/bench/lib.sh"
work=${1:-/var/tmp/ferry-bench-v2v}
RUNS=${RUNS:-3}
ferry=${CARGO_TARGET_DIR:-$here/target}/release/ferry
(cd "$here" && cargo build --release -q)
cd "$work"
[ -f guest.raw ] || { echo "no $work/guest.raw: run contrib/bench/v2v-trim.sh first" >&2; exit 1; }

ovf() { # FILE HREF COMPRESSION-ATTRIBUTE: a one-disk VMware OVF descriptor
    local mib=$(( $(stat -c %s guest.raw) / 1048576 ))
    cat >"$1" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="$2" ovf:id="file1"$3/></References>
  <DiskSection><Info>Disks</Info><Disk ovf:capacity="$mib" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="bench">
    <Info>A virtual machine</Info>
    <Name>bench</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
OVF
}

if [ ! -f ova.done ]; then
    echo "building the packages (once)..."
    rm -rf pkg && mkdir pkg
    qemu-img convert -O vmdk -o subformat=streamOptimized guest.raw pkg/disk1.vmdk
    gzip -1 -c pkg/disk1.vmdk >pkg/disk1.vmdk.gz
    ovf pkg/plain.ovf disk1.vmdk ""
    ovf pkg/gz.ovf disk1.vmdk.gz ' ovf:compression="gzip"'
    tar --format=ustar -cf plain.ova -C pkg plain.ovf disk1.vmdk
    tar --format=ustar -cf gz.ova -C pkg gz.ovf disk1.vmdk.gz
    rm -rf pkg
    touch ova.done
fi

declare -A ALL space
run() { # name command...
    local name=$1 t0 t1
    shift
    rm -rf out && mkdir out
    drop
    t0=$(now)
    "$@" >/dev/null
    sync
    t1=$(now)
    ALL[$name]+="$(ms "$t0" "$t1") "
    space[$name]=$(du -sB1 out | cut -f1)
}
runs() { tr ' ' '\n' <<<"${ALL[$1]}" | grep .; }
# The gzip member's place in the tar, for the gunzip reference.
read -r off len < <(python3 -c '
import tarfile; t = tarfile.open("gz.ova")
m = [m for m in t.getmembers() if m.name.endswith(".gz")][0]; print(m.offset_data, m.size)')
for ((r = 0; r < RUNS; r++)); do
    run plain "$ferry" -q v2v -i ova plain.ova --output-name g -o out
    run gzip "$ferry" -q v2v -i ova gz.ova --output-name g -o out
    run gunzip sh -c "tail -c +$((off + 1)) gz.ova | head -c $len | gzip -dc >out/disk1.vmdk"
done
printf '%-8s %9s %9s %7s %12s\n' case best_ms median_ms spread out_bytes
for n in plain gzip gunzip; do
    printf '%-8s %9s %9s %7s %12s\n' "$n" "$(runs $n | best)" "$(runs $n | median)" \
        "$(ratio "$(runs $n | worst)" "$(runs $n | best)")" "${space[$n]}"
done
echo "ratio gzip / plain (time): best $(ratio "$(runs gzip | best)" "$(runs plain | best)"), median $(ratio "$(runs gzip | median)" "$(runs plain | median)")"
echo "every run, ms:"
for n in plain gzip gunzip; do
    echo "  $n: ${ALL[$n]}"
done
