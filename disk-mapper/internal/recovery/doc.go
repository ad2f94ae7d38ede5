// Package recovery serves recovery.v1.RecoveryService on a rebooted node
// whose state disk waits for its key: the operator's CLI, after verifying
// the node's attestation, sends the node's disk key and the cluster's
// measurement secret. disk-mapper's setup flow runs the Server next to the
// rejoin client; whichever delivers a key that opens the disk first wins.
//
// # Trust
//
// The node attests (attested TLS with the node's issuer); the CLI does not,
// so the server accepts unattested peers (atls.Config.AcceptUnattestedPeer).
// That is safe because the CLI gives and takes nothing secret: the key it
// sends is useful only if it opens this disk, which the real LUKS2 header
// decides (unlock.Checker), and the answer carries only the disk UUID. Every
// request is untrusted: sizes are checked before anything else, a wrong key
// is refused with PermissionDenied and the server keeps waiting.
package recovery
