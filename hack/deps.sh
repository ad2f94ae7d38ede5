#!/usr/bin/env bash
# Installs the Debian packages that building and testing Cloister needs, when
# they are missing. Safe to rerun. In CI (CI=true) a failed install fails the run.
set -euo pipefail

packages=(
  gcc               # cgo: go-tpm-tools simulator, libcryptsetup
  protobuf-compiler # make proto
  swtpm swtpm-tools # out-of-process vTPM with EK certificates
  tpm2-tools        # tpm2_checkquote: independent quote verification
  libcryptsetup-dev # LUKS2 through go-cryptsetup
  cryptsetup-bin    # luksDump: independent reader of the headers we write
  systemd-boot-efi  # internal/measure: systemd's EFI stub, a real PE image
  binutils          # objcopy: unified kernel images in internal/measure's tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
