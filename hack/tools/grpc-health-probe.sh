#!/usr/bin/env bash
# Builds grpc-health-probe VERSION from the Go module proxy into OUT, unless
# it is already there (the cache is keyed by version). The health test of the
# plain status ports runs it against 127.0.0.1 (joinservice/jointest).
# Usage: hack/tools/grpc-health-probe.sh VERSION OUT
set -euo pipefail
version=$1
out=$2
[ -x "$out" ] && exit 0
dir=$(dirname "$out")
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "tools: building grpc-health-probe $version into $dir" >&2
# Outside the workspace: the tool's own go.mod decides its dependencies.
GOWORK=off GOFLAGS=-mod=mod GOBIN="$tmp" "${GO:-go}" install "github.com/grpc-ecosystem/grpc-health-probe@$version"
mv "$tmp/grpc-health-probe" "$out"
