#!/usr/bin/env bash
# Prints the hash of everything that decides the bytes make k8s builds: the
# scratch modules, the build scripts, the pause and image-archive sources.
# The Makefile names the cache directory after it, bundle.sh stamps each
# output with it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cat "$here/go.mod" "$here/go.sum" "$root/hack/etcd/go.mod" "$root/hack/etcd/go.sum" \
	"$here/build.sh" "$here/bundle.sh" "$here/inputs.sh" "$here/pause/main.go" "$here/ociarchive/main.go" |
	sha256sum | cut -d' ' -f1
