#!/usr/bin/env bash
# Installs the Debian packages the QEMU end-to-end tests (make e2e) need, when
# they are missing. Safe to rerun.
set -euo pipefail

packages=(
  qemu-system-x86   # the VMs (TCG)
  qemu-utils        # qemu-img
  ovmf              # UEFI firmware: measured boot into the vTPM
  swtpm swtpm-tools # the VMs' vTPM with EK certificates
  busybox-static    # the harness's own tiny initramfs
  cpio kmod         # building that initramfs, resolving module dependencies
  gdisk             # sgdisk: GPT state disks labelled cloister-state
  cryptsetup-bin    # luksDump on the host
  systemd-boot-efi  # linuxx64.efi.stub: a UKI, booted by OVMF from an ESP
  binutils          # objcopy: assembling that UKI
  dosfstools mtools # the ESP (FAT) as a file, without mounting (no vfat here)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "e2e-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
