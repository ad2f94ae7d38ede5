#!/usr/bin/env bash
# Prints the directory where builds are cached outside the checkout, so that
# a fresh clone reuses what an earlier one built (like Go's build cache):
# $CLOISTER_CACHE, else $XDG_CACHE_HOME/cloister, else ~/.cache/cloister.
# Every entry below it is keyed by its inputs (a version and a hash of the
# files that decide its bytes), never by the checkout it came from.
set -euo pipefail
echo "${CLOISTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloister}"
