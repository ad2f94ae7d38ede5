// Package setup is disk-mapper's boot flow: it turns the state disk that
// statedisk found into a mounted, decrypted filesystem, once per boot, before
// the bootstrapper runs. cmd/disk-mapper builds a Flow from the real LUKS2,
// device-mapper, filesystem and latch implementations and runs it; tests use
// real LUKS2 headers on file images and fakes for what needs device-mapper.
//
// # Fresh disk
//
// A disk without a LUKS header is formatted with a random one-time passphrase
// (32 bytes), which is written only to Options.PassphrasePath (in /run, a
// tmpfs: directory 0700, file 0600, written atomically) for the bootstrapper,
// which re-keys the disk to the key the join service derives and records
// "keyed" in the header's state token. The header's state token says "not
// keyed" until then. The disk is opened, gets a filesystem and is mounted.
//
// # Formatted but never keyed
//
// A disk whose state token says "not keyed" was formatted in an earlier boot
// that ended before the bootstrapper finished joining: its one-time
// passphrase lived in /run and is gone. It is formatted again, exactly like a
// fresh disk. Nothing is lost that the node needs: the bootstrapper may have
// saved its join inputs (the ticket) there when it took the node lock, but a
// node that never finished keying has joined nothing — its latch was reset by
// the reboot and it asks the join service again from the start. Kubelet and
// kubeadm state is written only after "keyed", and the token is part of the
// LUKS2 header that Open validates strictly.
//
// # Keyed disk
//
// A keyed disk's header is validated strictly, then every Options.Sources
// (the rejoin client and the recovery server) offers keys to one
// unlock.Checker, which tries each on the real header. The first key that
// opens the disk wins and stops every source; a wrong key is reported to its
// source, which keeps waiting. Then the disk is opened and mounted, the
// measurement salt is read from MeasurementSaltPath on it, and the cluster ID
// (keys.ClusterID) is extended into the cluster-ID latch (PCR 15 or RTMR 3),
// after which the join service refuses this node any further join or rejoin
// in this boot. The key and the measurement secret are zeroed.
//
// # Exit codes
//
// ExitCode maps Run's error to the process exit code:
//
//	0  ready: the state disk is mounted
//	1  internal error (a bug, a broken device, a failed mount)
//	2  bad usage (flags, configuration)
//	3  no usable state disk: missing, or on the boot disk
//	4  LUKS header refused: not what disk-mapper formats (a *cryptsetup.HeaderError names the field)
//	5  no key opened the disk before the wait ended (--key-timeout, or every key source gave up)
//
// # Trust
//
// The disk's content, header included, is untrusted until the header passed
// validation and a key opened it. Keys from either source are untrusted until
// the header accepts them. The salt is read from the decrypted filesystem,
// which only a holder of the disk key could have written.
package setup
