#!/usr/bin/env bash
# Builds a vanilla Kubernetes binary from the Go module proxy with this
# scratch module, stamped with its version (otherwise kubeadm reports
# v0.0.0-master and picks wrong images). Usage: build.sh <cmd> <version> <out>
set -euo pipefail
cmd=$1 version=$2 out=$(realpath -m "$3")
minor=${version#v*.}; minor=${minor%%.*}
major=${version#v}; major=${major%%.*}
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w -buildid="
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
done
cd "$(dirname "$0")"
mkdir -p "$(dirname "$out")"
GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "k8s.io/kubernetes/cmd/$cmd"
mv "$out.tmp" "$out"
