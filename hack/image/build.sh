#!/usr/bin/env bash
# make image: builds the Cloister node image, measured and integrity-protected.
#
#   1. go build the daemons and the CLI from this checkout (cgo, dynamic
#      libcryptsetup: the image's libcryptsetup12 provides it);
#   2. mkosi (Debian's 14) makes a Debian bookworm tree from image/mkosi.*,
#      with image/mkosi.extra and the freshly built binaries and units on top;
#   3. mkinitramfs in a chroot of the tree: an initrd that loads virtio, ext4
#      and dm-verity, opens the root through dm-verity and mounts it read-only;
#   4. mkfs.ext4 -d turns the tree into a file system without mounting anything;
#   5. veritysetup format appends its hash tree: root.img;
#   6. the unified kernel image uki.efi: systemd's EFI stub with the kernel,
#      the initrd and the kernel command line (which carries the root hash);
#   7. the reference values: PCRs predicted from uki.efi (hack/image/predict)
#      and the firmware PCRs measured from the firmware file
#      (hack/image/firmware-pcrs.sh), as a policy document per VM shape.
#
# Outputs in $IMAGE_OUT, or by default in the build cache outside the checkout
# (hack/cachedir.sh) under the hash of the inputs, <cache>/image/<inputs hash>,
# which .cache/image in the checkout links to: a fresh clone with the same
# inputs reuses the image. Outputs: uki.efi, root.img,
# reference-values.yaml (1 vCPU) and reference-values-2cpu.yaml,
# pcr-events.txt, firmware-pcrs.txt and firmware-pcrs-2cpu.txt, manifest.txt
# (hashes of every input and output, package versions), and vmlinuz,
# initrd.img and cmdline (what uki.efi carries, for inspection).
# Reruns are skipped while the inputs hash the same; FORCE=1 rebuilds. The
# newest three cached images are kept. One build at a time (a lock in the
# cache).
# Reproducibility: SOURCE_DATE_EPOCH (the last commit touching image/ or hack/image/ unless set), fixed
# file system UUID and hash seed, all times clamped; see image/README.md for
# what still varies.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=$("$root/hack/cachedir.sh")/image
out=${IMAGE_OUT:-}
link=
if [ -z "$out" ]; then
	link=$root/.cache/image
	work=$cache/work
else
	work=$out/work
fi
GO=${GO:-go}
# Fixed so that the same tree gives the same root.img; the label is what the
# kernel command line names (root=LABEL=cloister-root).
ROOT_UUID=c10157e2-0000-4000-8000-000000000001
ROOT_LABEL=cloister-root
# The firmware the reference values are for (Debian's OVMF without Secure
# Boot, what the QEMU harness boots) and the VM shapes: OVMF's PCR 0 depends
# on the number of vCPUs and on the memory below 4 GiB (the same from 2 GiB
# up on q35), docs/measured-boot.md. One set of reference values per vCPU
# count: reference-values.yaml for 1 vCPU, reference-values-<n>cpu.yaml
# for the others.
FIRMWARE_CODE=${FIRMWARE_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
FIRMWARE_VARS=${FIRMWARE_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
MEMORY_MIB=${MEMORY_MIB:-2048}
VM_CPUS=${VM_CPUS:-1 2}
suffix() { [ "$1" = 1 ] || echo "-${1}cpu"; }
outputs=(uki.efi root.img pcr-events.txt vmlinuz initrd.img cmdline)
for n in $VM_CPUS; do
	outputs+=("reference-values$(suffix "$n").yaml" "firmware-pcrs$(suffix "$n").txt")
done

# The last change to the image definition, so that commits elsewhere do not
# move every timestamp in the image.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct -- image hack/image)}
export TZ=UTC LC_ALL=C.UTF-8

step_start=$SECONDS
step() {
	echo "image: [$((SECONDS - step_start))s] $*" >&2
}

"$root/hack/image/deps.sh"
mkdir -p "$cache" "$work"
exec 9>"$cache/.lock"
flock 9

# 1. Binaries and the tree that carries them and their units.
step "building binaries"
extra=$work/extra
rm -rf "$extra"
mkdir -p "$extra/usr/bin" "$extra/usr/lib/systemd/system" "$extra/etc/cloister"
(
	cd "$root"
	CGO_ENABLED=1 "$GO" build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' \
		-o "$extra/usr/bin/" \
		./disk-mapper/cmd/disk-mapper ./bootstrapper/cmd/bootstrapper \
		./joinservice/cmd/joinservice ./cli/cmd/cloister
)
# Vanilla Kubernetes from make k8s: kubeadm and kubelet, and the images of
# the control plane's static pods and the pod sandbox, which
# cloister-images.service imports into containerd at boot.
k8s=${K8S_DIR:?K8S_DIR: the directory make k8s built (run make image)}
for bin in kubeadm kubelet; do
	[ -x "$k8s/$bin" ] || { echo "image: $k8s/$bin missing: run make k8s" >&2; exit 1; }
	install -m 0755 "$k8s/$bin" "$extra/usr/bin/$bin"
done
mkdir -p "$extra/usr/share/cloister/images"
for img in kube-apiserver kube-controller-manager kube-scheduler etcd pause; do
	[ -f "$k8s/images/$img.tar" ] || { echo "image: $k8s/images/$img.tar missing: run make k8s" >&2; exit 1; }
	install -m 0644 "$k8s/images/$img.tar" "$extra/usr/share/cloister/images/$img.tar"
done
# What the node compares before it imports again (import-images).
(cd "$extra/usr/share/cloister/images" && sha256sum ./*.tar >SHA256SUMS)
for img in kube-apiserver kube-controller-manager kube-scheduler etcd pause; do
	tar -xOf "$k8s/images/$img.tar" manifest.json | sed 's/.*"RepoTags":\["\([^"]*\)".*/\1/'
	echo
done >"$extra/usr/share/cloister/images/REFS"
# Unit names are what the units refer to each other by.
install -m 0644 "$root/image/disk-mapper.service" "$extra/usr/lib/systemd/system/disk-mapper.service"
install -m 0644 "$root/image/bootstrapper.service" "$extra/usr/lib/systemd/system/cloister-bootstrapper.service"
install -m 0644 "$root/image/joinservice.service" "$extra/usr/lib/systemd/system/joinservice.service"
install -m 0644 "$root/image/joinservice.yaml" "$extra/etc/cloister/joinservice.yaml"
# The units' Documentation= lines point at these files on the node.
mkdir -p "$extra/usr/share/doc/cloister"
for doc in design.md threat-model.md joinservice.md cli.md; do
	install -m 0644 "$root/docs/$doc" "$extra/usr/share/doc/cloister/$doc"
done
# TPM manufacturer roots: this test image trusts swtpm's local CA (the one
# swtpm_setup --create-ek-cert signs EK certificates with on this machine).
# A production image ships the vendors' roots here instead.
localca=/var/lib/swtpm-localca
if [ ! -f "$localca/swtpm-localca-rootca-cert.pem" ]; then
	tpmtmp=$(mktemp -d)
	swtpm_setup --tpm2 --tpmstate "$tpmtmp" --create-ek-cert >/dev/null
	rm -rf "$tpmtmp"
fi
mkdir -p "$extra/etc/cloister/trust"
cat "$localca/swtpm-localca-rootca-cert.pem" "$localca/issuercert.pem" >"$extra/etc/cloister/trust/tpm-ek-roots.pem"

# Inputs: what decides the image's bytes (apart from Debian's archive, whose
# package versions the manifest lists after the build).
inputs=$work/inputs.txt
{
	(cd "$extra" && find . -type f | LC_ALL=C sort | xargs sha256sum | sed 's|  \./|  extra/|')
	(cd "$root" && git ls-files --cached --others --exclude-standard -- image hack/image | LC_ALL=C sort | xargs sha256sum)
	echo "source_date_epoch $SOURCE_DATE_EPOCH"
	echo "mkosi $(mkosi --version | awk '{print $2}')"
	echo "e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs)"
	echo "cryptsetup $(dpkg-query -W -f='${Version}' cryptsetup-bin)"
	echo "binutils $(dpkg-query -W -f='${Version}' binutils)"
	echo "firmware_code $(sha256sum "$FIRMWARE_CODE" | cut -d' ' -f1)"
	echo "firmware_vars $(sha256sum "$FIRMWARE_VARS" | cut -d' ' -f1)"
	echo "memory_mib $MEMORY_MIB"
	echo "vm_cpus $VM_CPUS"
	(cd "$root" && git ls-files --cached --others --exclude-standard -- hack/image/predict hack/image/pestamp internal/measure | LC_ALL=C sort | xargs sha256sum)
} >"$inputs"
inputs_hash=$(sha256sum "$inputs" | cut -d' ' -f1)
[ -n "$out" ] || out=$cache/$inputs_hash
mkdir -p "$out"
# publish: the checkout's .cache/image names the image of its inputs.
publish() {
	[ -n "$link" ] || return 0
	mkdir -p "$(dirname "$link")"
	rm -rf "$link.tmp" && ln -s "$out" "$link.tmp" && mv -T "$link.tmp" "$link"
}
if [ "${FORCE:-}" != 1 ] && [ -f "$out/manifest.txt" ] &&
	grep -qx "inputs_sha256 $inputs_hash" "$out/manifest.txt" &&
	(cd "$out" && ls "${outputs[@]}" >/dev/null 2>&1); then
	publish
	step "up to date (inputs $inputs_hash): $out; FORCE=1 rebuilds"
	exit 0
fi

# 2. The tree. Debian's mkosi 14 runs its build steps in systemd-nspawn,
# which fails on build hosts where /run/systemd/nspawn is shared with the
# host: mkosi therefore runs in a private mount namespace with a tmpfs on
# /run/systemd/nspawn, and with --nspawn-keep-unit.
step "mkosi: Debian bookworm tree"
tree=$work/tree
rm -rf "$tree" "$out/manifest.txt"
(cd "$out" && rm -f "${outputs[@]}")
mkdir -p "$cache/mkosi-cache"
unshare -m --propagation private sh -c '
	mkdir -p /run/systemd/nspawn &&
	mount -t tmpfs tmpfs /run/systemd/nspawn &&
	exec mkosi "$@"' sh \
	-C "$root/image" --with-network --nspawn-keep-unit -f \
	--cache "$cache/mkosi-cache" --extra-tree "$root/image/mkosi.extra" --extra-tree "$extra" \
	-o "$tree" build >"$work/mkosi.log" 2>&1 || {
	tail -n 40 "$work/mkosi.log" >&2
	echo "image: mkosi failed; full log in $work/mkosi.log" >&2
	exit 1
}

# The units' Documentation= must not dangle.
for doc in design.md threat-model.md joinservice.md cli.md; do
	[ -f "$tree/usr/share/doc/cloister/$doc" ] || {
		echo "image: /usr/share/doc/cloister/$doc is missing from the tree" >&2
		exit 1
	}
done

# The kernel version moves with Debian's security updates: read it from the tree.
kv=$(ls "$tree/usr/lib/modules" | LC_ALL=C sort -V | tail -n 1)
[ -n "$kv" ] && [ -f "$tree/boot/vmlinuz-$kv" ] || {
	echo "image: no kernel in the tree" >&2
	exit 1
}

# 3. The initrd, made in a chroot of the finished tree.
step "mkinitramfs for $kv"
unshare -m --propagation private sh -c '
	tree=$1 kv=$2
	mount -t proc proc "$tree/proc" &&
	mount -t sysfs sysfs "$tree/sys" &&
	mount --rbind /dev "$tree/dev" &&
	chroot "$tree" mkinitramfs -o "/boot/initrd.img-$kv" "$kv"' sh "$tree" "$kv"
cp "$tree/boot/vmlinuz-$kv" "$out/vmlinuz"
cp "$tree/boot/initrd.img-$kv" "$out/initrd.img"
# The initrd is an output of the tree, not part of it.
rm -f "$tree/boot/initrd.img-$kv" "$tree/initrd.img" "$tree/initrd.img.old"

# 4. The file system: every time clamped to SOURCE_DATE_EPOCH; ext4 with a
# fixed UUID and hash seed; E2FSPROGS_FAKE_TIME fixes the superblock's times.
# It is mounted read-only at boot and never written.
step "mkfs.ext4"
find "$tree" -xdev -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
used_mb=$(du -sm --apparent-size "$tree" | cut -f1)
size_mb=$(((used_mb * 3 / 2 + 512 + 63) / 64 * 64))
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -t ext4 -T default \
	-L "$ROOT_LABEL" -U "$ROOT_UUID" \
	-E "hash_seed=$ROOT_UUID,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0" \
	-d "$tree" "$out/root.img.tmp" "${size_mb}M"
"$root/hack/image/clamp-times.sh" "$out/root.img.tmp" "$SOURCE_DATE_EPOCH" "$tree"

# 5. dm-verity: the hash tree goes right after the file system on the same
# disk, without a verity superblock: every parameter (root hash, salt, data
# blocks, hash offset) is on the measured kernel command line, none is read
# from the disk. The salt is the inputs' hash: the same inputs, the same
# root hash.
step "veritysetup format"
data_blocks=$((size_mb * 256))
hash_offset=$((size_mb << 20))
salt=$inputs_hash
veritysetup format --no-superblock --format=1 --hash=sha256 \
	--data-block-size=4096 --hash-block-size=4096 \
	--data-blocks="$data_blocks" --hash-offset="$hash_offset" --salt="$salt" \
	"$out/root.img.tmp" "$out/root.img.tmp" >"$work/verity.txt"
root_hash=$(awk '/^Root hash:/ {print $3}' "$work/verity.txt")
[ ${#root_hash} = 64 ] || { cat "$work/verity.txt" >&2; echo "image: no root hash from veritysetup" >&2; exit 1; }
mv "$out/root.img.tmp" "$out/root.img"

# 6. The unified kernel image. The command line is the same for every node
# (nodes are configured through SMBIOS OEM strings): it is measured, and it
# carries the root hash, so the root file system is covered by PCRs 4 and 11.
step "uki.efi"
cmdline="root=LABEL=$ROOT_LABEL ro fsck.mode=skip console=ttyS0 panic=-1 cloister.verity=$root_hash,$salt,$data_blocks,$hash_offset"
printf '%s\0' "$cmdline" >"$work/cmdline"
printf '%s\n' "$cmdline" >"$out/cmdline"
printf 'ID=cloister\nID_LIKE=debian\nNAME="Cloister node"\nPRETTY_NAME="Cloister node (Debian bookworm, kernel %s)"\n' "$kv" >"$work/os-release"
stub=$tree/usr/lib/systemd/boot/efi/linuxx64.efi.stub
[ -f "$stub" ] || { echo "image: no EFI stub in the tree (systemd-boot-efi)" >&2; exit 1; }
# Sections go after the stub's own, each at a 1 MiB-aligned address above
# the previous one (systemd's documented objcopy recipe).
stub_end=0
while read -r _ _ size vma _; do
	stub_end=$((16#$vma + 16#$size > stub_end ? 16#$vma + 16#$size : stub_end))
done < <(objdump -h -w "$stub" | awk '$1 ~ /^[0-9]+$/')
align() { echo $((($1 + 0xfffff) & ~0xfffff)); }
addr=$(align "$stub_end")
objcopy_args=()
for s in .osrel:"$work/os-release" .cmdline:"$work/cmdline" .linux:"$out/vmlinuz" .initrd:"$out/initrd.img"; do
	name=${s%%:*} file=${s#*:}
	objcopy_args+=(--add-section "$name=$file" --change-section-vma "$(printf '%s=0x%x' "$name" "$addr")")
	addr=$(align $((addr + $(stat -c %s "$file"))))
done
objcopy "${objcopy_args[@]}" "$stub" "$out/uki.efi.tmp"
# objcopy stamps the time of the build into the PE header, which is part of
# the Authenticode hash (PCR 4): set it to SOURCE_DATE_EPOCH.
(cd "$root" && "$GO" run ./hack/image/pestamp "$SOURCE_DATE_EPOCH" "$out/uki.efi.tmp")
mv "$out/uki.efi.tmp" "$out/uki.efi"

# 7. Reference values: predicted from uki.efi, plus the firmware's own PCRs
# measured from the firmware file (OVMF's cannot be replayed from it).
for n in $VM_CPUS; do
	sfx=$(suffix "$n")
	step "reference values: firmware PCRs (boots $FIRMWARE_CODE alone, $n vCPU, ${MEMORY_MIB} MiB)"
	MEMORY_MIB=$MEMORY_MIB CPUS=$n "$root/hack/image/firmware-pcrs.sh" "$FIRMWARE_CODE" "$FIRMWARE_VARS" "$out/firmware-pcrs$sfx.txt"
	step "reference values: predicting PCRs from uki.efi ($n vCPU)"
	(cd "$root" && "$GO" run ./hack/image/predict \
		-uki "$out/uki.efi" -linux "$out/vmlinuz" -initrd "$out/initrd.img" -cmdline "$work/cmdline" \
		-osrel "$work/os-release" -firmware "$out/firmware-pcrs$sfx.txt" \
		-events "$out/pcr-events.txt" -o "$out/reference-values$sfx.yaml" -shape "${sfx#-}")
done

# Manifest.
{
	echo "# Cloister node image manifest (hack/image/build.sh)"
	echo "inputs_sha256 $inputs_hash"
	echo "git_commit $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- image hack/image internal/measure || echo ' (image/, hack/image/ or internal/measure modified)')"
	echo "go $("$GO" env GOVERSION)"
	echo "kernel $kv"
	echo "root_label $ROOT_LABEL"
	echo "root_uuid $ROOT_UUID"
	echo "verity_root_hash $root_hash"
	echo "verity_salt $salt"
	echo "verity_data_blocks $data_blocks"
	echo "verity_hash_offset $hash_offset"
	echo "cmdline $cmdline"
	sed 's/^/input /' "$inputs"
	chroot "$tree" dpkg-query -W -f='package ${Package} ${Version}\n' | LC_ALL=C sort
	for n in $VM_CPUS; do
		grep -h '^ *"[0-9]*": {value:' "$out/reference-values$(suffix "$n").yaml" |
			sed "s/^ *\"\([0-9]*\)\": {value: \"\([0-9a-f]*\)\".*/pcr \1 \2 (${n} vCPU)/"
	done
	(cd "$out" && sha256sum "${outputs[@]}" | sed 's/^/output /')
} >"$out/manifest.txt.tmp"
mv "$out/manifest.txt.tmp" "$out/manifest.txt"
rm -rf "$tree"
publish
# Only the newest three images stay in the cache (each is a few GiB).
if [ -n "$link" ]; then
	find "$cache" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{64}' -printf '%T@ %p\n' |
		LC_ALL=C sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
fi
step "done: $out/{$(IFS=,; echo "${outputs[*]}"),manifest.txt}"
grep '^output \|^pcr ' "$out/manifest.txt" >&2
