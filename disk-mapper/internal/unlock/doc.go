// Package unlock is the one place where candidate keys for a keyed state disk
// are checked: disk-mapper's rejoin client and recovery server both offer
// what they receive to one Checker, which tries each key on the disk's real
// LUKS2 header, one at a time. The first key that opens the disk wins; every
// later offer is refused with ErrUnlocked, and a key that opens nothing is
// refused with ErrWrongKey so that its source can say so and keep waiting.
//
// # Trust
//
// A candidate is untrusted until the header accepts it: a join service or an
// operator may hand over a wrong key (a rotated generation, another node's
// disk, a typo). The header is the only judge. The Checker never logs and
// never puts key bytes in errors; the winner's copy belongs to the caller of
// Wait, which zeroes it after use.
package unlock
