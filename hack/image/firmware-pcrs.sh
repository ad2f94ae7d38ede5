#!/usr/bin/env bash
# firmware-pcrs.sh CODE VARS OUT: measures what the UEFI firmware alone puts
# into PCRs 0-7 and writes them to OUT, one "pcr <index> <sha256 hex>" line
# each, with the firmware files' hashes as comments.
#
# OVMF's measurements cannot be replayed from the firmware file: PCR 0
# holds the digests of firmware volumes after decompression and of
# platform data only the running firmware knows. So the firmware is booted
# with no disk and no network under QEMU (TCG) with a fresh swtpm, until its
# UEFI shell prompt: by then it has measured everything it measures before
# any boot application (PCRs 0, 2, 3, 6, 7 end with their separators at
# ReadyToBoot). QEMU is then killed, swtpm stores its volatile state (the
# PCRs), and a second swtpm resumes that state on a TCP port where
# tpm2_pcrread reads the bank. The values depend on the firmware file, its
# variable store and the VM's memory size (MEMORY_MIB, default 2048: PCR 0
# differs between sizes), never on the node image.
set -euo pipefail
code=$1 vars=$2 out=$3

work=$(mktemp -d)
swtpm_pid= qemu_pid= swtpm2_pid=
cleanup() {
	for p in $qemu_pid $swtpm_pid $swtpm2_pid; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/tpm"
# A TPM without EK certificates: only its PCRs are read.
swtpm_setup --tpm2 --tpmstate "$work/tpm" >/dev/null
cp "$vars" "$work/vars.fd"

swtpm socket --tpm2 --tpmstate dir="$work/tpm" --ctrl type=unixio,path="$work/ctrl.sock" \
	--log file="$work/swtpm.log" &
swtpm_pid=$!
for _ in $(seq 100); do [ -S "$work/ctrl.sock" ] && break; sleep 0.1; done

qemu-system-x86_64 -machine q35 -accel tcg -m "${MEMORY_MIB:-2048}" -smp "${CPUS:-1}" -nographic -monitor none -no-reboot \
	-serial file:"$work/serial.log" -nic none \
	-drive if=pflash,format=raw,unit=0,readonly=on,file="$code" \
	-drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
	-chardev socket,id=chrtpm,path="$work/ctrl.sock" \
	-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 </dev/null >"$work/qemu.out" 2>&1 &
qemu_pid=$!
ok=
for _ in $(seq 240); do
	if grep -q 'Shell>' "$work/serial.log" 2>/dev/null; then ok=1; break; fi
	kill -0 "$qemu_pid" 2>/dev/null || break
	sleep 0.5
done
if [ -z "$ok" ]; then
	echo "firmware-pcrs: no UEFI shell prompt within 120 s" >&2
	tail -c 2000 "$work/serial.log" >&2 || true
	cat "$work/qemu.out" >&2
	exit 1
fi
# Killed, not shut down: a clean QEMU exit would reset the TPM.
kill -9 "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
# The ctrl channel serves one client at a time: let swtpm see QEMU's end.
for _ in $(seq 50); do swtpm_ioctl --unix "$work/ctrl.sock" -g >/dev/null 2>&1 && break; sleep 0.1; done
swtpm_ioctl --unix "$work/ctrl.sock" -v
swtpm_ioctl --unix "$work/ctrl.sock" -s
wait "$swtpm_pid" 2>/dev/null || true
swtpm_pid=
[ -f "$work/tpm/tpm2-00.volatilestate" ] || { echo "firmware-pcrs: swtpm stored no volatile state" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 23411)
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --flags not-need-init \
	--server type=tcp,port="$port",bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
	--log file="$work/swtpm2.log" &
swtpm2_pid=$!
for _ in $(seq 50); do
	tpm2_pcrread --tcti "swtpm:host=127.0.0.1,port=$port" sha256:0 >/dev/null 2>&1 && break
	sleep 0.1
done
{
	echo "# PCRs after the firmware alone (no boot application), measured by hack/image/firmware-pcrs.sh"
	echo "# firmware_code $(sha256sum "$code" | cut -d' ' -f1) $code"
	echo "# firmware_vars $(sha256sum "$vars" | cut -d' ' -f1) $vars"
	echo "# vm ${CPUS:-1} vCPU, ${MEMORY_MIB:-2048} MiB (OVMF's PCR 0 depends on the vCPU count and the memory below 4 GiB)"
	tpm2_pcrread --tcti "swtpm:host=127.0.0.1,port=$port" sha256:0,1,2,3,4,5,6,7 |
		awk '/^ +[0-9]+ *: *0x/ { gsub(/ /, ""); split($0, a, ":"); printf "pcr %s %s\n", a[1], tolower(substr(a[2], 3)) }'
} >"$out.tmp"
[ "$(grep -c '^pcr ' "$out.tmp")" = 8 ] || { echo "firmware-pcrs: could not read 8 PCRs" >&2; cat "$out.tmp" >&2; exit 1; }
mv "$out.tmp" "$out"
