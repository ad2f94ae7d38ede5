// Package kube is the join service's only door to the Kubernetes API. A
// Cluster, built by the join service's main from a client-go
// kubernetes.Interface, does the four things a verified join needs:
//
//   - per-node, short-lived kubeadm bootstrap tokens (CreateBootstrapToken),
//     deleted once their node is registered or they expired
//     (DeleteSpentBootstrapTokens, run every minute by RunTokenCleanup);
//     only tokens this process created are known and deleted;
//   - kubeadm discovery data: the API server endpoint and the
//     "sha256:<hex>" pins of the cluster CA (APIServerEndpoint, CACertHashes);
//   - the kubelet client certificate, issued by the cluster's own signer
//     through the certificates.k8s.io CSR API, so the join service never holds
//     a CA private key (SignKubeletCSR, CheckKubeletCSR);
//   - kubeadm's certificate-key mechanism for control-plane joins: the
//     control-plane CAs are uploaded to the kubeadm-certs Secret, encrypted
//     under a one-time certificate key, exactly as `kubeadm init phase
//     upload-certs` does (UploadControlPlaneCerts).
//
// # Trust
//
// The server calls this package only for a node whose attestation has
// already been verified, so the node is entitled to join. Its request is
// still untrusted in shape: a node name must be a DNS-1123 subdomain, and a
// kubelet CSR must ask for exactly "system:node:<node name>" in
// "system:nodes" — nothing more (no other identity, no group such as
// system:masters, no SANs). CheckKubeletCSR is pure, so the server can run it
// before any Kubernetes call. The API server, the cluster-info ConfigMap and
// the CSR signer are trusted: they are the cluster itself.
//
// Only bootstrap tokens this Cluster created are ever deleted, by name and
// UID; tokens that kubeadm, an operator or an earlier run created are never
// touched (they expire).
//
// # Permissions
//
// The join service runs as its own user, rbac.UserName, with exactly the
// rules of package rbac, which the bootstrapper grants at init: get nodes;
// get the configmaps kube-public/cluster-info and kube-system/kube-root-ca.crt
// by name; create and delete (never get, list or watch) secrets in
// kube-system; create, get and delete certificatesigningrequests, update
// their approval, and approve for the signer
// kubernetes.io/kube-apiserver-client-kubelet only. Every call in this
// package is tested against that table (TestPermissionsAreExactlyTheCallsMade),
// and CheckIdentity asks the API server at start whether the credentials
// hold exactly it, so the service refuses to run as cluster-admin.
//
// Because it cannot read Secrets, a Cluster remembers the bootstrap tokens
// it created (name and UID) and deletes only those, by name with a UID
// precondition. Tokens created before a restart are left to their expiry
// and to kube-controller-manager's tokencleaner. UploadControlPlaneCerts
// needs more (get and update on kubeadm-certs) and is not called by the
// service.
//
// The Role and RoleBinding that let a joining control plane (authenticated by
// its bootstrap token, group system:bootstrappers:kubeadm:default-node-token)
// read the kubeadm-certs Secret are kubeadm's job: `kubeadm init` creates
// them in its upload-certs phase, so the first control plane must be
// initialised with --upload-certs. This package does not create RBAC.
//
// The package does not log; it returns errors that name the object and the
// operation. Token secrets never appear in errors or in log output (Token
// redacts itself).
package kube
