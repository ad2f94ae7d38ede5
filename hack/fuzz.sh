#!/usr/bin/env bash
# Runs every fuzz target of the module with a short budget each (default
# 20000 executions; a count, see the Makefile for why not a duration).
# Go runs one fuzz target per invocation, so list them first.
set -euo pipefail
fuzztime=${1:-20000x}
found=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    found=$((found + 1))
    echo "fuzz: $pkg $target ($fuzztime)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg"
  done
done
if [ "$found" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
echo "fuzz: $found targets passed"
