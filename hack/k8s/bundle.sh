#!/usr/bin/env bash
# make k8s: vanilla Kubernetes for the node image, built from the Go module
# proxy (no registry, no release tarballs) into OUT (the Makefile's K8S_DIR,
# <cache>/k8s/<version>-<inputs hash>, outside the checkout):
#
#   kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler
#                 k8s.io/kubernetes <version>, this directory's module
#   etcd          go.etcd.io/etcd/server/v3 (hack/etcd), the version kubeadm
#                 runs (its constants.DefaultEtcdVersion)
#   pause         hack/k8s/pause, the pod sandbox
#   images/*.tar  the control-plane images kubeadm's static pods name
#                 (registry.k8s.io/<name>:<tag>), one layer each with the
#                 binary at /usr/local/bin, as docker-archives that
#                 `ctr images import` reads at boot
#
# Each output is rebuilt when it is missing or its inputs (inputs.sh: the
# module files and these scripts) changed: a stamp next to it holds their hash. Builds are
# reproducible: -trimpath, no build ID, the version stamp's build date is the
# last commit touching hack/k8s or hack/etcd.
# Usage: bundle.sh <version> <out dir>
set -euo pipefail
version=$1 out=$(realpath -m "$2")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct -- hack/k8s hack/etcd 2>/dev/null || echo 0)}
export GOWORK=off CGO_ENABLED=0
etcd_version=3.7.0
etcd_tag=$etcd_version-0
pause_tag=3.10.2
mkdir -p "$out/images"

inputs=$("$here/inputs.sh")
fresh() { [ -f "$1" ] && [ "$(cat "$1.stamp" 2>/dev/null)" = "$inputs" ]; }
stamp() { echo "$inputs" >"$1.stamp"; }
t0=$SECONDS
log() { echo "k8s: [$((SECONDS - t0))s] $*" >&2; }

for cmd in kubeadm kubelet kube-apiserver kube-controller-manager kube-scheduler; do
	fresh "$out/$cmd" && continue
	log "building $cmd $version"
	"$here/build.sh" "$cmd" "$version" "$out/$cmd"
	stamp "$out/$cmd"
done
if ! fresh "$out/etcd"; then
	log "building etcd v$etcd_version"
	(cd "$root/hack/etcd" && go build -trimpath -ldflags '-s -w -buildid=' -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$out/etcd.tmp" "$out/etcd"
	stamp "$out/etcd"
fi
if ! fresh "$out/pause"; then
	(cd "$here" && go build -trimpath -ldflags '-s -w -buildid=' -o "$out/pause.tmp" ./pause)
	mv "$out/pause.tmp" "$out/pause"
	stamp "$out/pause"
fi

image() { # image <file> <ref> <entrypoint> <path in image>=<binary>
	local file=$out/images/$1
	fresh "$file" && return 0
	log "image $2"
	(cd "$here" && go run ./ociarchive -o "$file" -tag "$2" -entrypoint "$3" "$4")
	stamp "$file"
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do
	image "$c.tar" "registry.k8s.io/$c:$version" "/usr/local/bin/$c" "/usr/local/bin/$c=$out/$c"
done
image etcd.tar "registry.k8s.io/etcd:$etcd_tag" /usr/local/bin/etcd "/usr/local/bin/etcd=$out/etcd"
image pause.tar "registry.k8s.io/pause:$pause_tag" /pause "/pause=$out/pause"
log "done: $out"
