// Package provision runs what follows the node lock, for both paths, as
// steps of the persisted state machine (package nodestate):
//
//	Locked → Keyed:          write the measurement salt, then re-key the
//	                         LUKS2 keyslot from the one-time passphrase to
//	                         the derived disk key
//	Keyed → Configured:      write the measurement salt, the kubelet
//	                         certificate and key (join) or the cluster
//	                         secrets (init), the kubeadm configuration; then
//	                         extend the cluster-ID latch
//	Configured → KubeadmStarted → Joined:
//	                         run kubeadm join or init (and, for init, start
//	                         the cluster's join service)
//
// The bootstrapper's main runs a Provisioner after the join client won the
// lock, and on every restart that finds the node Locked or further; the init
// server runs it inside the Init call, streaming its progress lines.
//
// # Failure policy
//
// Before the lock (join client, init server) everything is retried: nothing
// has happened that cannot be repeated. After the lock every step is either
// idempotent or detects that it was done, and is tried at most
// Options.MaxAttempts times; then the node goes to the terminal Failed state
// with the step and the reason, which status.v1 shows, and the bootstrapper
// exits non-zero. Never a silent loop. In particular:
//
//   - re-keying is idempotent (cryptsetup.Device.Rekey skips what is on disk
//     already), so it is simply run again after a crash;
//   - the latch cannot be extended idempotently: a second Extend moves PCR 15
//     away from the cluster's value for good. The step therefore reads the
//     latch first: at ExpectedTPM(cluster ID) it was extended before a crash
//     and is left alone; at its reset value it is extended; anything else is a
//     permanent failure (this boot belongs to another cluster) that only a
//     reboot fixes. A crash right before or right after the extend thus ends
//     in the same place;
//   - kubeadm is not idempotent (a second join double-counts the node), so
//     KubeadmStarted is persisted before kubeadm runs, and kubeadm runs once:
//     a restart that finds KubeadmStarted goes on only if kubeadm recorded
//     its success (kubeadm writes kubelet.conf and admin.conf early, so
//     they prove nothing), and fails otherwise; a failed kubeadm is not
//     retried;
//   - with Options.ResetOnFailure, entering Failed also runs `kubeadm reset
//     -f` and reboots the machine (both through interfaces).
//
// A cancelled context (shutdown) is not a failure: Run returns and the next
// start resumes from the persisted phase.
//
// # What is on the state disk when
//
// The path's inputs (the validated ticket with the kubelet key, or the init
// request's cluster secrets) are saved 0600 on the state disk under the lock,
// before the disk is keyed: a restart of the process, or a reboot after the
// LUKS2 token already says "keyed", needs them to resume. Before the token
// says "keyed", the disk is encrypted under the one-time passphrase that
// lives only in /run, and disk-mapper reformats such a disk after a reboot,
// which makes everything on it unreadable; nothing of the cluster survives
// an unfinished re-key. The measurement salt is written before the re-key,
// since disk-mapper reads it as soon as it finds a keyed disk.
//
// # Trust
//
// Inputs were validated before the lock and are saved 0600 on the encrypted
// state disk under it; they are validated again when loaded. Secrets are
// written 0600 only, never logged and never put in the failure reason.
package provision
