#!/usr/bin/env bash
# make image: builds the Cloister node image that QEMU boots directly.
#
#   1. go build the daemons and the CLI from this checkout (cgo, dynamic
#      libcryptsetup: the image's libcryptsetup12 provides it);
#   2. mkosi (Debian's 14) makes a Debian bookworm tree from image/mkosi.*,
#      with image/mkosi.extra and the freshly built binaries and units on top;
#   3. mkinitramfs in a chroot of the tree: an initrd that loads virtio and
#      ext4 and mounts root=LABEL=cloister-root;
#   4. mkfs.ext4 -d turns the tree into root.img without mounting anything.
#
# Outputs in $IMAGE_OUT (default .cache/image): vmlinuz, initrd.img, root.img
# and manifest.txt (hashes of every input and output, package versions).
# Reruns are skipped while the inputs hash the same; FORCE=1 rebuilds.
# Reproducibility: SOURCE_DATE_EPOCH (the last commit touching image/ or hack/image/ unless set), fixed
# file system UUID and hash seed, all times clamped; see image/README.md for
# what still varies.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${IMAGE_OUT:-$root/.cache/image}
work=$out/work
GO=${GO:-go}
# Fixed so that the same tree gives the same root.img; the label is what the
# kernel command line names (root=LABEL=cloister-root).
ROOT_UUID=c10157e2-0000-4000-8000-000000000001
ROOT_LABEL=cloister-root

# The last change to the image definition, so that commits elsewhere do not
# move every timestamp in the image.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct -- image hack/image)}
export TZ=UTC LC_ALL=C.UTF-8

step_start=$SECONDS
step() {
	echo "image: [$((SECONDS - step_start))s] $*" >&2
}

"$root/hack/image/deps.sh"
mkdir -p "$out"

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
k8s=${K8S_DIR:-$root/.cache/k8s/v1.37.2}
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
	(cd "$root" && git ls-files -- image hack/image | LC_ALL=C sort | xargs sha256sum)
	echo "source_date_epoch $SOURCE_DATE_EPOCH"
	echo "mkosi $(mkosi --version | awk '{print $2}')"
	echo "e2fsprogs $(dpkg-query -W -f='${Version}' e2fsprogs)"
} >"$inputs"
inputs_hash=$(sha256sum "$inputs" | cut -d' ' -f1)
if [ "${FORCE:-}" != 1 ] && [ -f "$out/manifest.txt" ] &&
	grep -qx "inputs_sha256 $inputs_hash" "$out/manifest.txt" &&
	[ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] && [ -f "$out/root.img" ]; then
	step "up to date (inputs $inputs_hash); FORCE=1 rebuilds"
	exit 0
fi

# 2. The tree. mkosi's nspawn needs a private mount namespace with a tmpfs on
# /run/systemd/nspawn on these machines (LAB.md).
step "mkosi: Debian bookworm tree"
tree=$work/tree
rm -rf "$tree" "$out/vmlinuz" "$out/initrd.img" "$out/root.img" "$out/manifest.txt"
mkdir -p "$out/mkosi-cache"
unshare -m --propagation private sh -c '
	mkdir -p /run/systemd/nspawn &&
	mount -t tmpfs tmpfs /run/systemd/nspawn &&
	exec mkosi "$@"' sh \
	-C "$root/image" --with-network --nspawn-keep-unit -f \
	--cache "$out/mkosi-cache" --extra-tree "$root/image/mkosi.extra" --extra-tree "$extra" \
	-o "$tree" build >"$work/mkosi.log" 2>&1 || {
	tail -n 40 "$work/mkosi.log" >&2
	echo "image: mkosi failed; full log in $work/mkosi.log" >&2
	exit 1
}

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

# 4. root.img: every time clamped to SOURCE_DATE_EPOCH; ext4 with a fixed
# UUID and hash seed; E2FSPROGS_FAKE_TIME fixes the superblock's times.
step "mkfs.ext4 root.img"
find "$tree" -xdev -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
used_mb=$(du -sm --apparent-size "$tree" | cut -f1)
size_mb=$(((used_mb * 3 / 2 + 512 + 63) / 64 * 64))
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -t ext4 -T default \
	-L "$ROOT_LABEL" -U "$ROOT_UUID" \
	-E "hash_seed=$ROOT_UUID,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0" \
	-d "$tree" "$out/root.img.tmp" "${size_mb}M"
"$root/hack/image/clamp-times.sh" "$out/root.img.tmp" "$SOURCE_DATE_EPOCH" "$tree"
mv "$out/root.img.tmp" "$out/root.img"

# Manifest.
{
	echo "# Cloister node image manifest (hack/image/build.sh)"
	echo "inputs_sha256 $inputs_hash"
	echo "git_commit $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- image hack/image || echo ' (image/ or hack/image/ modified)')"
	echo "go $("$GO" env GOVERSION)"
	echo "kernel $kv"
	echo "root_label $ROOT_LABEL"
	echo "root_uuid $ROOT_UUID"
	sed 's/^/input /' "$inputs"
	chroot "$tree" dpkg-query -W -f='package ${Package} ${Version}\n' | LC_ALL=C sort
	(cd "$out" && sha256sum vmlinuz initrd.img root.img | sed 's/^/output /')
} >"$out/manifest.txt.tmp"
mv "$out/manifest.txt.tmp" "$out/manifest.txt"
step "done: $out/{vmlinuz,initrd.img,root.img,manifest.txt}"
grep '^output ' "$out/manifest.txt" >&2
