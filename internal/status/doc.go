// Package status tracks what a daemon is doing and why it waits, and serves
// it as status.v1.StatusService. Every daemon (disk-mapper, bootstrapper,
// joinservice) keeps one Tracker, sets its phase on every phase change and
// counts attempts in retry loops; main registers the Tracker on a gRPC server
// and passes sdnotify's Status as Options.OnChange, so systemctl status and
// the status endpoint show the same line.
//
// PlainServer is every daemon's plain status port: status.v1 next to the
// standard grpc.health.v1 service and gRPC server reflection, so that
// grpc-health-probe, grpcurl and Kubernetes' gRPC probes can reach it
// without attested TLS. Health names "" (the daemon overall) and
// cloister.status.v1.StatusService; a daemon adds its own service names
// (the join service: cloister.join.v1.JoinService, SERVING only while it can
// serve joins).
//
// # Trust
//
// The status service is read-only and unauthenticated by design: an operator
// must be able to see why a node that cannot attest (yet) is stuck, so it is
// served without attested TLS, over plain (insecure) gRPC credentials. The
// health service and reflection on that port say no more: serving states
// and the names and schemas of public services.
// Therefore nothing secret may enter a Tracker: callers pass phases, disk UUIDs
// and errors from checks, never key bytes or tokens, and never errors that
// could contain them.
package status
