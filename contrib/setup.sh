#!/usr/bin/env bash
# Installs the system packages ferry's tests and demo use (Debian 12). Safe to run again.
# Needs root (or sudo) for apt-get; skips the install when everything is already present.
set -euo pipefail

need=(qemu-img qemu-io zstd bzip2 gzip python3 sfdisk blkid mkfs.ext4 mkfs.xfs xfs_db xfs_io xfs_repair mkfs.vfat mkfs.ntfs mkfs.btrfs
      mkswap cryptsetup pvcreate debugfs fusermount3 fuse2fs patch diff getfattr setfattr setfacl file
      virsh virt-xml-validate xmllint hivexget hivexregedit fls faketime fsck.vfat mcopy mattrib mdir)
missing=0
# mkfs.* and friends live in sbin, which a non-root PATH may lack.
for t in "${need[@]}"; do PATH="$PATH:/usr/sbin:/sbin" command -v "$t" >/dev/null 2>&1 || missing=1; done
# The tests use qemu-img features of 8.0 and later (zstd clusters, extended L2 and more).
qemu_major=$(qemu-img --version 2>/dev/null | sed -n 's/^qemu-img version \([0-9]*\)\..*/\1/p')
[ "${qemu_major:-0}" -ge 8 ] || missing=1

if [ "$missing" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # fdisk: sfdisk; util-linux: blkid; fuse3: fusermount3 (mounts without root); fuse2fs: the peer
  # in contrib/bench/mount.sh; patch/diffutils: oracles for ferry fix's diffs; attr, acl:
  # getfattr/setfattr/setfacl for the xattr tests; file: the ELF oracle of the inspection tests;
  # libvirt-clients (virsh, virt-xml-validate) and libxml2-utils (xmllint) check the domain XML
  # ferry v2v writes; libhivex-bin, libwin-hivex-perl: hivexget/hivexregedit, the registry
  # oracles; sleuthkit: fls, the oracle of ferry timeline (faketime: ntfs-3g writes times fls 4.11
  # still reads from index slack, which it takes only before 2020); cpio: the reader of the archives
  # ferry appends to an initramfs; libwim15: wimlib's LZX and XPRESS compressors, which make the
  # WOF-compressed test files; mtools: fills FAT images and reads them back (the FAT tests'
  # oracle, with dosfstools' fsck.vfat); the rest make the filesystems the volume tests recognise.
  $SUDO apt-get install -y -q qemu-utils zstd xz-utils bzip2 gzip python3 fdisk util-linux e2fsprogs xfsprogs \
    dosfstools ntfs-3g btrfs-progs cryptsetup-bin lvm2 fuse3 fuse2fs patch diffutils attr acl file \
    libvirt-clients libxml2-utils libhivex-bin libwin-hivex-perl sleuthkit faketime cpio libwim15 mtools
  qemu_major=$(qemu-img --version 2>/dev/null | sed -n 's/^qemu-img version \([0-9]*\)\..*/\1/p')
  if [ "${qemu_major:-0}" -lt 8 ]; then
    # Debian 12 ships qemu 7.2; take qemu-utils from bookworm-backports, using the mirror this
    # machine is already configured with.
    src=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
    if [ -n "$src" ]; then
      awk 'BEGIN{RS=""} NR==1{print; exit}' "$src" | sed 's/^Suites:.*/Suites: bookworm-backports/' \
        | $SUDO tee /etc/apt/sources.list.d/ferry-backports.sources >/dev/null
    else
      grep -m1 '^deb .* bookworm ' /etc/apt/sources.list | sed 's/ bookworm / bookworm-backports /' \
        | $SUDO tee /etc/apt/sources.list.d/ferry-backports.list >/dev/null
    fi
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q -t bookworm-backports qemu-utils
  fi
fi
qemu-img --version | head -n 1
# Unprivileged FUSE mounts (fusermount3) need /dev/fuse open to every user, as udev leaves it on
# a Debian system; some containers and VMs create it 0600.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ] && [ "$(id -u)" = 0 ]; then
  chmod 0666 /dev/fuse
fi
