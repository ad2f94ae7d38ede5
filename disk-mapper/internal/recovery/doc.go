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
//
// # Abuse
//
// Wrong keys back off (backoff.go): the first 3 from one address are
// checked at once; then each try from it waits 1 s, doubling up to 1 min,
// and over all addresses, after 10 wrong keys, each check waits 1 s,
// doubling up to 10 s. A try during its wait is answered ResourceExhausted
// ("retry in …") without a check. One check per address runs at a time.
// Refusals are logged at most once a minute per kind, with a count of the
// rest. Connections, their rate and the quotes they trigger are bounded by
// atls (Config.Limits) before a request arrives.
package recovery
