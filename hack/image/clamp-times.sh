#!/usr/bin/env bash
# clamp-times.sh IMG EPOCH TREE: sets the times mkfs.ext4 -d copies from the
# host (ctime, which touch cannot set) and the creation times it stamps
# (crtime) of every file of TREE inside the ext4 image IMG to EPOCH, so that
# the same tree gives the same bytes.
set -euo pipefail
img=$1 epoch=$2 tree=$3
{
	for f in ctime atime mtime crtime; do
		echo "sif / $f @$epoch"
	done
	(cd "$tree" && find . -xdev -mindepth 1 -printf '%P\n') | LC_ALL=C sort | while IFS= read -r p; do
		for f in ctime atime crtime; do
			printf 'sif "/%s" %s @%s\n' "$p" "$f" "$epoch"
		done
	done
	for f in ctime atime mtime crtime; do
		echo "sif /lost+found $f @$epoch"
	done
} >"$img.debugfs"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$img.debugfs" "$img" >/dev/null 2>"$img.debugfs.err" || {
	cat "$img.debugfs.err" >&2
	exit 1
}
if grep -v '^debugfs ' "$img.debugfs.err" | grep -q .; then
	grep -v '^debugfs ' "$img.debugfs.err" | head -n 5 >&2
	echo "clamp-times: debugfs reported errors" >&2
	exit 1
fi
rm -f "$img.debugfs" "$img.debugfs.err"
