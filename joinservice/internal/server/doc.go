// Package server implements join.v1.JoinService: after the attested TLS
// handshake has verified a node against the cluster policy, it releases what
// that node needs and nothing more — its own disk key, the measurement
// secrets, a per-node bootstrap token, the cluster CA pins and a kubelet
// client certificate for its own name.
//
// What is trusted: the peer's Claims (verified by internal/atls before any
// handler runs). What is not: every request field. Each refusal names the
// failed check, maps to one gRPC code, is counted in the metrics by reason,
// and is written once to the audit log. Key material never reaches a log.
package server
