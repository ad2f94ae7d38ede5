#!/usr/bin/env bash
# Installs the Debian packages that building the node image (make image) and
# booting it under QEMU need, when missing (make test builds the image for
# its QEMU scenarios). Safe to
# rerun. In CI (CI=true) a failed install fails the run.
set -euo pipefail

packages=(
  mkosi systemd-container debootstrap # the image tree (mkosi 14 runs nspawn)
  e2fsprogs                           # mkfs.ext4 -d: root.img without mounting
  gcc libcryptsetup-dev               # cgo: the daemons link libcryptsetup
  zstd cpio kmod                      # inspecting the initrd and modules
  qemu-system-x86 qemu-utils ovmf     # booting it (TCG), measured boot
  swtpm swtpm-tools                   # the VM's vTPM
  gdisk cryptsetup-bin                # state disks: GPT label, luksDump; veritysetup format
  binutils                            # objcopy: the unified kernel image
  tpm2-tools                          # tpm2_pcrread: the firmware's PCRs (firmware-pcrs.sh)
  dosfstools mtools                   # smoke.sh: the EFI system partition, without mounting
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "image deps: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
