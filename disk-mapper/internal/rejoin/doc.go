// Package rejoin is the rebooted node's side of join.v1.IssueRejoinTicket:
// it asks the cluster's join services for the key of its state disk, with
// fresh attestation, until one delivers a key that opens the disk. disk-mapper's
// setup flow runs the Client next to the recovery server.
//
// Attempts go to the configured endpoints in turn, each under its own
// deadline, with exponential backoff and jitter between them (retry.Do with
// retry.DefaultBackoff), so that a fleet rebooting together does not poll in
// lockstep and a join service that comes up late is found.
//
// # Trust
//
// Both sides attest (mutual attested TLS): the join service releases the key
// only to evidence that passes the cluster policy, and the node sends its
// disk UUID only to a join service whose evidence passes the policy the
// image carries. The delivered key is still untrusted: only the real LUKS2
// header, through unlock.Checker, decides whether it opens the disk.
// Refusals (PermissionDenied, InvalidArgument, a refused handshake) are shown
// in the status with their reason and retried with backoff, since an
// operator may fix the policy. Key bytes never reach logs or the status.
package rejoin
