#!/bin/bash
# Boot test for `ferry v2v` (issue 15): real Debian 12 guests, built here in the broken shapes
# that moving a VM leaves behind, converted by ferry and booted with qemu under TCG on virtio
# disks and NICs. Each must reach a login prompt on the serial console with a DHCP address;
# the same guest converted *without* ferry's fixes must not boot, which shows that the fixes are
# what makes it boot.
#
#   (a) vmx  – a VMware guest from a SATA host: /dev/sda1 in fstab and on the kernel command
#              line, an initramfs built with MODULES=list and no virtio driver, a .vmx beside it.
#   (b) xen  – a Xen PV guest: /dev/xvda1 everywhere, console=hvc0 (getty on hvc0), an
#              initramfs with xen-blkfront but no virtio, an xl .cfg beside it.
#   (c) ova  – an OVA (OVF, manifest, streamOptimized VMDK) of a VMware guest with /boot on
#              /dev/sda1 and / on LVM (vg0/root), no virtio in its initramfs.
#
# Usage: contrib/boottest.sh [CASE...]      (cases: vmx xen ova; default: all)
# Needs root (debootstrap, chroot, mkfs -d), network access once (the Debian rootfs is cached
# in $FERRY_BOOT_DIR, default /var/tmp/ferry-boottest) and qemu-system-x86 10 from
# bookworm-backports (installed if missing). A boot under TCG takes 1–3 minutes.
# FERRY_BOOT_REUSE=1 keeps guests built by an earlier run; FERRY=PATH uses that ferry binary;
# FERRY_BOOT_BUILD_ONLY=1 (vmx) builds the source guest and stops (for contrib/bench/v2v.sh).
set -euo pipefail
export LVM_SUPPRESS_FD_WARNINGS=1

here=$(cd "$(dirname "$0")/.." && pwd)
work=${FERRY_BOOT_DIR:-/var/tmp/ferry-boottest}
boot_timeout=${FERRY_BOOT_TIMEOUT:-420}
fail_timeout=${FERRY_BOOT_FAIL_TIMEOUT:-240}
mirror=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(vmx xen ova)
mkdir -p "$work"

log() { printf 'boottest: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot)"

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing qemu-system-x86 (bookworm-backports) and debootstrap"
  bash "$here/contrib/setup.sh" >/dev/null
  apt-get install -y -q -t bookworm-backports qemu-system-x86 >/dev/null
  apt-get install -y -q debootstrap >/dev/null
fi

ferry=${FERRY:-}
if [ -z "$ferry" ]; then
  (cd "$here" && cargo build --release -q)
  ferry="${CARGO_TARGET_DIR:-$here/target}/release/ferry"
fi

# ---- the Debian rootfs, once -------------------------------------------------------------
rootfs_tar="$work/rootfs.tar"
if [ ! -s "$rootfs_tar" ]; then
  log "debootstrap bookworm (a few minutes, once)"
  rm -rf "$work/rootfs.tmp"
  debootstrap --variant=minbase \
    --include=linux-image-amd64,grub-pc,systemd-sysv,udev,ifupdown,isc-dhcp-client,lvm2,initramfs-tools,kmod,zstd \
    bookworm "$work/rootfs.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed: see $work/debootstrap.log"
  tar -C "$work/rootfs.tmp" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$work/rootfs.tmp"
fi

mounted=()
cleanup() {
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
  [ -n "${qemu_pid:-}" ] && kill "$qemu_pid" 2>/dev/null || true
}
trap cleanup EXIT

# prepare DIR ROOTDEV CONSOLE MODULES...: unpack the rootfs into DIR and give it the shape of
# the source machine: fstab and the kernel command line naming ROOTDEV, a getty on CONSOLE,
# DHCP on eth0, and an initramfs holding exactly MODULES.
prepare() {
  local dir=$1 rootdev=$2 console=$3 bootfs=${BOOTFS:-}
  shift 3
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" -xf "$rootfs_tar"
  local kver
  kver=$(basename "$(ls -d "$dir"/lib/modules/*)")
  echo ferry-guest >"$dir/etc/hostname"
  printf 'Debian GNU/Linux 12 \\n \\l ferry-ip=\\4\n\n' >"$dir/etc/issue"
  cat >"$dir/etc/network/interfaces" <<EOF
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
  printf '%s / ext4 errors=remount-ro 0 1\n' "$rootdev" >"$dir/etc/fstab"
  [ -z "$bootfs" ] || printf '%s /boot ext4 defaults 0 2\n' "$bootfs" >>"$dir/etc/fstab"
  local b=/boot
  [ -z "$bootfs" ] || b=
  # Root may log in on the console without a password (a test guest).
  sed -i 's/^root:[^:]*:/root::/' "$dir/etc/shadow"
  printf 'MODULES=list\n' >"$dir/etc/initramfs-tools/conf.d/ferry-boottest"
  printf '%s\n' "$@" >"$dir/etc/initramfs-tools/modules"
  rm -f "$dir"/boot/initrd.img-*
  mount -t proc proc "$dir/proc"
  mounted+=("$dir/proc")
  chroot "$dir" update-initramfs -c -k "$kver" >/dev/null 2>&1 || die "update-initramfs in $dir"
  umount "$dir/proc"
  if chroot "$dir" lsinitramfs "/boot/initrd.img-$kver" | grep -q 'virtio'; then
    die "the $dir initramfs holds a virtio driver; the test needs one without"
  fi
  mkdir -p "$dir/boot/grub/i386-pc"
  cp "$dir"/usr/lib/grub/i386-pc/*.mod "$dir"/usr/lib/grub/i386-pc/*.lst "$dir/boot/grub/i386-pc/"
  cat >"$dir/etc/default/grub" <<EOF
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=$console net.ifnames=0"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
EOF
  # What update-grub writes for this machine, reduced to the one entry.
  cat >"$dir/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux' {
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	echo 'Loading Linux $kver ...'
	linux $b/vmlinuz-$kver root=$rootdev ro console=$console net.ifnames=0
	echo 'Loading initial ramdisk ...'
	initrd $b/initrd.img-$kver
}
EOF
}

# disk DIR IMAGE: a 2 GiB raw disk, one MBR partition from 1 MiB holding DIR as ext4, and GRUB
# in the MBR gap (boot.img and a core.img whose prefix is that partition's /boot/grub).
disk() {
  local dir=$1 img=$2
  rm -f "$img" "$img.part"
  truncate -s 2G "$img"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$img"
  truncate -s $((2 * 1024 * 1024 * 1024 - 1024 * 1024)) "$img.part"
  mkfs.ext4 -q -F -L root -d "$dir" "$img.part"
  dd if="$img.part" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$img.part"
  chroot "$dir" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile echo serial terminal test search
  dd if="$dir/usr/lib/grub/i386-pc/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
  dd if="$dir/tmp/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
}

# boot IMAGE FORMAT LOG TIMEOUT MACHINE MAC: boots IMAGE on virtio-blk and virtio-net under TCG
# on the machine type and with the MAC the domain XML names; succeeds when
# the serial console shows a login prompt with a DHCP address, fails at a kernel/initramfs
# failure or the timeout.
boot() {
  local img=$1 fmt=$2 out=$3 limit=$4 machine=$5 mac=$6
  : >"$out"
  qemu-system-x86_64 -machine "$machine" -accel tcg -m 1024 -smp 1 -display none -monitor none \
    -serial "file:$out" -no-reboot -snapshot \
    -drive "file=$img,format=$fmt,if=virtio" \
    -netdev user,id=n0 -device "virtio-net-pci,netdev=n0,mac=$mac" &
  qemu_pid=$!
  local t=0 rc=1
  while [ $t -lt "$limit" ]; do
    if grep -aq 'ferry-ip=10\.0\.2\.' "$out" && grep -aq 'login:' "$out"; then
      rc=0
      break
    fi
    if grep -aqE 'Gave up waiting for root|Kernel panic|emergency mode' "$out"; then
      break
    fi
    if ! kill -0 "$qemu_pid" 2>/dev/null; then break; fi
    sleep 2
    t=$((t + 2))
  done
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  log "$(basename "$out"): $( [ $rc = 0 ] && echo "login prompt with an address after ${t}s" || echo "no login after ${t}s: $(grep -aoE 'Gave up waiting for root[^\r]*|ALERT![^\r]*|Kernel panic[^\r]*' "$out" | head -n 1)")"
  return $rc
}

# check NAME SOURCE DIR [DISK]: the fixed conversion in DIR must boot; DISK (default SOURCE)
# converted without fixes must not; SOURCE must not change.
check() {
  local name=$1 src=$2 out=$3 disk_src=${4:-$2}
  local before after
  before=$(sha256sum "$src" | cut -d' ' -f1)
  local disk
  disk=$(ls "$out"/*-sda.qcow2)
  local xml machine mac
  xml=$(ls "$out"/*.xml)
  virt-xml-validate "$xml" domain >/dev/null || die "$name: $xml does not validate"
  grep -Eq "<target dev=.vda. bus=.virtio./>" "$xml" || die "$name: the domain XML has no virtio disk"
  grep -Eq "<model type=.virtio./>" "$xml" || die "$name: the domain XML has no virtio NIC"
  machine=$(grep -oE 'machine="[^"]+"' "$xml" | head -n 1 | cut -d'"' -f2)
  mac=$(grep -oE '<mac address="[^"]+"' "$xml" | head -n 1 | cut -d'"' -f2)
  boot "$disk" qcow2 "$work/$name-fixed.log" "$boot_timeout" "$machine" "$mac" || die "$name: the converted guest did not boot (serial log: $work/$name-fixed.log)"
  "$ferry" convert -O qcow2 "$disk_src" "$work/$name-unfixed.qcow2" >/dev/null
  if boot "$work/$name-unfixed.qcow2" qcow2 "$work/$name-unfixed.log" "$fail_timeout" "$machine" "$mac"; then
    die "$name: the guest booted without ferry's fixes; the test proves nothing"
  fi
  rm -f "$work/$name-unfixed.qcow2"
  after=$(sha256sum "$src" | cut -d' ' -f1)
  [ "$before" = "$after" ] || die "$name: the source image changed"
  log "$name: PASS"
}

# v2v KIND FILE OUT: `ferry v2v -i KIND FILE` into the fresh directory OUT.
v2v() {
  local kind=$1 file=$2 out=$3
  rm -rf "$out"
  mkdir -p "$out"
  "$ferry" v2v -i "$kind" "$file" -o "$out" --output-format qcow2 >"$work/$kind-v2v.log" 2>&1 ||
    die "$kind: ferry v2v failed: $(tail -n 3 "$work/$kind-v2v.log")"
}

# lvm_disk DIR IMAGE: a 3 GiB disk with /boot (DIR/boot) on partition 1 and the root (the rest
# of DIR) on the logical volume vg0/root of an LVM PV on partition 2. No device-mapper: the PV
# and VG are made with pvcreate/vgcreate on a loop device, the LV by vgcfgrestore of an edited
# backup, and the filesystem is written where the LV's extents are.
lvm_disk() {
  local dir=$1 img=$2
  local lvmconf='devices { use_devicesfile=0 obtain_device_list_from_udev=0 hints="none" } activation { udev_sync=0 udev_rules=0 monitoring=0 }'
  rm -f "$img"
  truncate -s 3G "$img"
  printf 'label: dos\nstart=2048, size=512MiB, type=83, bootable\ntype=8e\n' | sfdisk -q "$img"
  local p2_start p2_size
  p2_start=$(sfdisk -J "$img" | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][1]; print(p["start"]*512, p["size"]*512)')
  p2_size=${p2_start#* }
  p2_start=${p2_start% *}
  mv "$dir/boot" "$dir.boot"
  mkdir "$dir/boot"
  truncate -s 512M "$img.boot"
  mkfs.ext4 -q -F -L boot -d "$dir.boot" "$img.boot"
  dd if="$img.boot" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$img.boot"
  local loop vg=vg0 backup="$work/vg0.backup"
  loop=$(losetup -f --show --offset "$p2_start" --sizelimit "$p2_size" "$img")
  lvm pvcreate -q --config "$lvmconf" "$loop" >/dev/null
  lvm vgcreate -q --config "$lvmconf" -s 4M "$vg" "$loop" >/dev/null
  local free pe_start
  free=$(lvm vgs --config "$lvmconf" --noheadings -o vg_free_count "$vg" | tr -d ' ')
  pe_start=$(lvm pvs --config "$lvmconf" --noheadings --units b --nosuffix -o pe_start "$loop" | tr -d ' ')
  lvm vgcfgbackup -q --config "$lvmconf" -f "$backup" "$vg" >/dev/null
  python3 - "$backup" "$free" <<'PY'
import sys
path, count = sys.argv[1], int(sys.argv[2])
s = open(path).read()
close = s.rstrip().rfind("}")
lv = f"""
logical_volumes {{
root {{
id = "ferry0-boot-test-aaaa-aaaa-aaaa-aaaaaa"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {{
start_extent = 0
extent_count = {count}
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}}
}}
}}
"""
open(path, "w").write(s[:close] + lv + s[close:])
PY
  lvm vgcfgrestore -q --config "$lvmconf" -f "$backup" "$vg" >/dev/null
  losetup -d "$loop"
  truncate -s $((free * 4 * 1024 * 1024)) "$img.root"
  mkfs.ext4 -q -F -L root -d "$dir" "$img.root"
  dd if="$img.root" of="$img" bs=1M seek=$(((p2_start + pe_start) / 1048576)) conv=notrunc,sparse status=none
  rm -f "$img.root"
  [ $(((p2_start + pe_start) % 1048576)) = 0 ] || die "the LV does not start on a MiB boundary"
  chroot "$dir" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/grub' \
    biosdisk part_msdos ext2 normal linux configfile echo serial terminal test search
  dd if="$dir/usr/lib/grub/i386-pc/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
  dd if="$dir/tmp/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
  rm -rf "$dir.boot"
}

case_vmx() {
  local d="$work/vmx"
  if [ -n "${FERRY_BOOT_REUSE:-}" ] && [ -s "$d/guest-a.vmx" ]; then :; else
  prepare "$d.root" /dev/sda1 ttyS0 ahci sd_mod ata_piix ata_generic mptspi vmw_pvscsi ext4 crc32c_generic
  disk "$d.root" "$d.raw"
  mkdir -p "$d"
  qemu-img convert -f raw -O vmdk "$d.raw" "$d/guest-a.vmdk"
  rm -f "$d.raw"
  rm -rf "$d.root"
  cat >"$d/guest-a.vmx" <<EOF
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "guest-a"
guestOS = "debian12-64"
memsize = "1024"
numvcpus = "1"
firmware = "bios"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.fileName = "guest-a.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "e1000"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:3f:00:0a"
ethernet0.networkName = "VM Network"
EOF
  fi
  # contrib/bench/v2v.sh only needs the source guest.
  [ -z "${FERRY_BOOT_BUILD_ONLY:-}" ] || return 0
  v2v vmx "$d/guest-a.vmx" "$d/out"
  check vmx "$d/guest-a.vmdk" "$d/out"
}

case_xen() {
  local d="$work/xen"
  if [ -n "${FERRY_BOOT_REUSE:-}" ] && [ -s "$d/guest-b.cfg" ]; then :; else
  prepare "$d.root" /dev/xvda1 hvc0 xen_blkfront xen_netfront ext4 crc32c_generic
  mkdir -p "$d"
  disk "$d.root" "$d/guest-b.img"
  rm -rf "$d.root"
  cat >"$d/guest-b.cfg" <<EOF
name = "guest-b"
memory = 1024
vcpus = 1
bootloader = "pygrub"
disk = [ 'file:$d/guest-b.img,xvda,w' ]
vif = [ 'mac=00:16:3e:00:00:0b,bridge=xenbr0' ]
EOF
  fi
  v2v xen "$d/guest-b.cfg" "$d/out"
  check xen "$d/guest-b.img" "$d/out"
}

case_ova() {
  local d="$work/ova"
  if [ -n "${FERRY_BOOT_REUSE:-}" ] && [ -s "$d/guest-c.ova" ]; then :; else
  BOOTFS=/dev/sda1 prepare "$d.root" /dev/mapper/vg0-root ttyS0 ahci sd_mod mptspi vmw_pvscsi ext4 crc32c_generic dm_mod
  # GRUB reads /boot's partition, whose root holds grub/ (not boot/grub/).
  lvm_disk "$d.root" "$d.raw"
  rm -rf "$d.root" "$d"
  mkdir -p "$d/pkg"
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$d.raw" "$d/pkg/guest-c-disk1.vmdk"
  rm -f "$d.raw"
  cat >"$d/pkg/guest-c.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="guest-c-disk1.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>Disks</Info><Disk ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="guest-c">
    <Info>A virtual machine</Info>
    <Name>guest-c</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Address>00:50:56:0a:0b:0c</rasd:Address><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
EOF
  (cd "$d/pkg" && for f in guest-c.ovf guest-c-disk1.vmdk; do printf 'SHA256(%s)= %s\n' "$f" "$(sha256sum "$f" | cut -d' ' -f1)"; done >guest-c.mf)
  tar --format=ustar -cf "$d/guest-c.ova" -C "$d/pkg" guest-c.ovf guest-c.mf guest-c-disk1.vmdk
  rm -rf "$d/pkg"
  fi
  v2v ova "$d/guest-c.ova" "$d/out"
  tar -xf "$d/guest-c.ova" -C "$work" guest-c-disk1.vmdk
  check ova "$d/guest-c.ova" "$d/out" "$work/guest-c-disk1.vmdk"
  rm -f "$work/guest-c-disk1.vmdk"
}

for c in "${cases[@]}"; do
  case $c in
    vmx) case_vmx ;;
    xen) case_xen ;;
    ova) case_ova ;;
    *) die "unknown case $c (vmx, xen, ova)" ;;
  esac
done
log "all passed: ${cases[*]}"
