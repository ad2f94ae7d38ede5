// Package nodestate is the bootstrapper's persisted, explicit state machine:
// one small JSON file on the encrypted state disk that says how far the node
// got on its one way from a fresh disk to a cluster member.
//
//		Fresh → Locked{init|join} → Keyed → Configured → KubeadmStarted → Joined
//		any non-terminal phase → Failed{reason}
//
//	  - Fresh: nothing happened yet; the init server and the join client race.
//	  - Locked: the node lock was taken, for the init or the join path (the
//	    point of no return); the path's inputs are saved next to the state.
//	  - Keyed: the LUKS2 keyslot was re-keyed from the one-time passphrase to
//	    the derived disk key.
//	  - Configured: measurement salt, certificates and the kubeadm
//	    configuration are written and the cluster-ID latch is extended.
//	  - KubeadmStarted: kubeadm init or join was started. kubeadm is not
//	    idempotent (a second join double-counts the node), so a restart that
//	    finds this phase without kubeadm's result never runs it again.
//	  - Joined: the node is a cluster member; the bootstrapper only serves
//	    the node's status (plain and attested) from then on.
//	  - Failed: terminal; the reason is kept for status.v1 and the logs.
//
// Only forward transitions are allowed, so a bug cannot move a node back to a
// phase whose side effects (a re-keyed disk, an extended latch) already
// happened. Every transition records its time. The bootstrapper's main calls
// Open once; the init server, the join client (through the node lock) and the
// provisioning steps advance the Store.
//
// # Persistence
//
// The file is written atomically with mode 0600: a temporary file in the same
// directory, fsync, rename, fsync of the directory. A crash leaves the old
// state or the new one, never a mix. Faults can be injected right before and
// right after each persisted transition (Options.Fault), which is how the
// crash tests stop the bootstrapper at every point.
//
// # Trust
//
// The file lives on the encrypted state disk, which only this node can open,
// and holds no secrets. It is parsed strictly anyway (unknown fields, unknown
// phases and impossible combinations are refused): a corrupt file stops the
// node with an error instead of guessing.
package nodestate
