#!/usr/bin/env bash
# smoke.sh: boots the node image once under QEMU (TCG, OVMF, swtpm vTPM) with
# a blank 1 GiB state disk (GPT partition "cloister-state"), and checks on the
# serial console that disk-mapper formats and opens the disk with dm-crypt
# and that the bootstrapper waits for init or join; then asks the status
# endpoint through a 127.0.0.1 port forward, and luksDumps the state disk on
# the host. Prints the times. Everything is removed afterwards; QEMU and swtpm
# are ended by PID. Needs make image first.
#
#   SMOKE_TIMEOUT  seconds for the whole boot (default 300)
#   SMOKE_KEEP=1   keep the temp dir (serial log, disks) for inspection
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
img=${IMAGE_OUT:-$root/.cache/image}
timeout_s=${SMOKE_TIMEOUT:-300}
for f in uki.efi root.img; do
	[ -f "$img/$f" ] || {
		echo "smoke: $img/$f missing: run make image" >&2
		exit 1
	}
done
"$root/hack/image/deps.sh"

dir=$(mktemp -d /tmp/cloister-smoke.XXXXXX)
qemu_pid= swtpm_pid=
cleanup() {
	[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
	[ -f "$dir/swtpm.pid" ] && swtpm_pid=$(cat "$dir/swtpm.pid")
	[ -n "$swtpm_pid" ] && kill "$swtpm_pid" 2>/dev/null || true
	if [ "${SMOKE_KEEP:-}" = 1 ]; then
		echo "smoke: kept $dir" >&2
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
status_port=$(free_port)

# The node's disks: a copy-on-write overlay of root.img, a blank state disk.
# The partition size must be a multiple of 4 KiB (LUKS2 4096-byte sectors).
qemu-img create -q -f qcow2 -F raw -b "$img/root.img" "$dir/root.qcow2"
truncate -s 1G "$dir/state.img"
sgdisk -o -n 1:0:+1020M -c 1:cloister-state "$dir/state.img" >/dev/null
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$dir/OVMF_VARS.fd"
# The boot disk: an EFI system partition with the unified kernel image as
# the default boot path (FAT written into the file, never mounted).
esp_mib=$(($(stat -c %s "$img/uki.efi") / 1048576 + 16))
truncate -s $((esp_mib + 2))M "$dir/esp.img"
sgdisk --new=1:2048:+"$esp_mib"M --typecode=1:ef00 --change-name=1:ESP "$dir/esp.img" >/dev/null
mkfs.vfat --offset=2048 "$dir/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$dir/esp.img@@1M" ::/EFI ::/EFI/BOOT
mcopy -i "$dir/esp.img@@1M" "$img/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
# Configuration through the image's fw_cfg test hook (no join services here).
printf '# from the host via fw_cfg\njoinEndpoints: []\n' >"$dir/node.yaml"

# vTPM with EK certificates, as a cloud's vTPM has.
mkdir -p "$dir/tpm"
swtpm_setup --tpm2 --tpmstate "$dir/tpm" --create-ek-cert --create-platform-cert --lock-nvram >"$dir/swtpm_setup.log" 2>&1
swtpm socket --tpm2 --tpmstate dir="$dir/tpm" --ctrl type=unixio,path="$dir/swtpm.sock" \
	--terminate --daemon --pid file="$dir/swtpm.pid" --log file="$dir/swtpm.log"

start=$(date +%s.%N)
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -machine q35 -m 2048 -smp 1 \
	-no-reboot -display none -monitor none -serial file:"$dir/serial.log" \
	-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
	-drive if=pflash,format=raw,file="$dir/OVMF_VARS.fd" \
	-smbios type=11,value=cloister.role=control-plane -smbios type=11,value=cloister.node=smoke \
	-drive if=none,id=esp,format=raw,file="$dir/esp.img" -device virtio-blk-pci,drive=esp,bootindex=0 \
	-drive if=virtio,format=qcow2,file="$dir/root.qcow2" \
	-drive if=virtio,format=raw,file="$dir/state.img" \
	-chardev socket,id=chrtpm,path="$dir/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 \
	-fw_cfg name=opt/cloister/node.yaml,file="$dir/node.yaml" \
	-netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$status_port"-:9101 -device virtio-net-pci,netdev=n0,romfile= \
	</dev/null >"$dir/qemu.log" 2>&1 &
qemu_pid=$!

elapsed() { printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)"; }
wait_marker() { # name regex
	while ! grep -qE "$2" "$dir/serial.log" 2>/dev/null; do
		if grep -qE 'Failed to start .*(disk-mapper|Cloister)|Dependency failed for .*(cloi|Cloister)' "$dir/serial.log"; then
			echo "smoke: FAIL: a Cloister unit failed before: $1" >&2
			grep -aE 'disk-mapper|bootstrapper|FAILED|DEPEND' "$dir/serial.log" | tail -n 20 >&2
			exit 1
		fi
		if ! kill -0 "$qemu_pid" 2>/dev/null; then
			echo "smoke: FAIL: QEMU ended before: $1" >&2
			tail -n 40 "$dir/serial.log" >&2
			exit 1
		fi
		sleep 0.5
	done
	echo "smoke: [$(elapsed)s] $1: $(grep -m1 -E "$2" "$dir/serial.log" | tr -d '\r' | cut -c1-240)"
}

wait_marker "kernel" 'Linux version'
wait_marker "systemd" 'systemd\[1\]: systemd [0-9]+ running|Welcome to'
wait_marker "fw_cfg test hook" 'CLOISTER-MARKER fwcfg-config node.yaml'
wait_marker "disk-mapper found the disk" '"msg":"found state disk"'
wait_marker "disk-mapper formatted+opened" '"msg":"state disk ready".*"formatted":true'
wait_marker "bootstrapper waiting for init or join" 'CLOISTER-MARKER bootstrapper-started .*waiting-for-init-or-join'

"$img/work/extra/usr/bin/cloister" status --node "127.0.0.1:$status_port" || {
	echo "smoke: FAIL: status endpoint" >&2
	exit 1
}
echo "smoke: [$(elapsed)s] status answered"
grep -E '"component":"(disk-mapper|bootstrapper)"' "$dir/serial.log" | tr -d '\r' | sed 's/^/serial: /' | cut -c1-300

kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
# The partition holds a LUKS2 header now (read on the host: no dm needed).
part_start=$(partx -g -o START -n 1 "$dir/state.img" | tr -d ' ')
loop=$(losetup --show -f -o $((part_start * 512)) "$dir/state.img")
cryptsetup luksDump "$loop" | sed -n '1,12p' | sed 's/^/luksDump: /'
losetup -d "$loop"
echo "smoke: OK"
