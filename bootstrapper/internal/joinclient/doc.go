// Package joinclient is a fresh node's side of join.v1.IssueJoinTicket: it
// asks the cluster's join services for a join ticket, with fresh attestation,
// until one delivers a ticket that passes every check, and returns it as a
// provision.Ticket. The bootstrapper's main runs the Client next to the init
// server; the ticket is only the input of the node lock, which decides.
//
// Attempts go to the configured endpoints in turn, each under its own
// deadline, with exponential backoff and jitter between them (retry.Do with
// retry.DefaultBackoff: about 1 s growing to 30 s), so that a fleet booting
// together does not poll in lockstep and a join service that comes up late is
// found. Every attempt generates a fresh ECDSA P-256 kubelet key on the node
// and sends only its CSR (subject "system:node:<name>", organization
// "system:nodes"); the private key never leaves the node and is written (0600)
// only once the ticket is accepted.
//
// # Trust
//
// Both sides attest (mutual attested TLS): the join service releases the
// ticket only to evidence that passes the cluster policy, and the node sends
// its request only to a join service whose evidence passes the policy the
// image carries. The ticket is still validated completely before anything is
// written (see checkTicket): sizes of keys, salts and secrets, the token's
// format and expiry, the CA pins, the endpoint, the version, and that the
// kubelet certificate parses, is valid now, and certifies exactly this
// node's key and name. A ticket that fails is refused and the client tries
// again. Secrets never reach logs or the status.
package joinclient
