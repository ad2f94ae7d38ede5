// Package initserver serves init.v1.InitService on a node that waits to
// become the first control plane of a new cluster: the operator's `cloister
// init` sends the cluster secrets the CLI generated; the node takes the node
// lock, saves them, and runs the provisioning steps (re-key the state disk to
// its own derived disk key, write the cluster secrets for the join service,
// extend the latch, kubeadm init, start the join service), streaming a
// progress line per step, and answers with the admin kubeconfig and the
// cluster ID. The bootstrapper's main registers the Server next to status.v1
// on one gRPC server with attested TLS, so `cloister verify` can attest the
// node through the same port.
//
// # Trust
//
// The node attests; the CLI, which runs on no confidential hardware, does not
// (atls.Config.AcceptUnattestedPeer). Whoever reaches the port first could
// therefore initialize the node with secrets of their own: the CLI verifies
// the node before it sends anything, and an optional init secret (only its
// SHA-256 in the node's configuration, compared in constant time) limits who
// may initialize. Every request is untrusted: Init is refused with
// FailedPrecondition once the node lock is held or the node left Fresh, with
// PermissionDenied for a wrong init secret, and with InvalidArgument for
// wrong sizes, all before anything is written. Failure reasons sent back
// never contain secrets.
package initserver
