// Package statedisk finds the node's state disk by a stable identifier — a
// GPT partition label (/dev/disk/by-partlabel/<label>) or a configured
// /dev/disk/by-id path — and never by guessing (no "the second disk", no
// scanning). disk-mapper calls it once per boot before anything touches a
// disk.
//
// # Trust
//
// The identifier comes from the image's configuration; the symlinks under
// /dev/disk are made by udev from on-disk labels that whoever controls the
// disk can choose. A hostile label could therefore point at the disk that
// holds the root filesystem, which disk-mapper would then format. Find
// refuses any device on the same whole disk as the root filesystem (or, for a
// stacked root such as dm-verity, as any disk below it), read from
// /proc/self/mountinfo and sysfs.
package statedisk
