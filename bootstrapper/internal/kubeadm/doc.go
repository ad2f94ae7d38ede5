// Package kubeadm is the bootstrapper's only way to Kubernetes (DESIGN §8): it
// generates kubeadm v1beta4 configuration files (JoinConfiguration;
// InitConfiguration with ClusterConfiguration) and runs the vanilla kubeadm
// binary baked into the image, whose path is configurable.
//
// One exception, kept here so it stays in one place: after kubeadm init,
// JoinServiceIdentity applies the join service's RBAC objects (package
// joinservice/rbac) with client-go and admin.conf, because kubeadm cannot
// apply arbitrary objects and the join service must not grant itself
// permissions; kubeadm itself (`kubeadm kubeconfig user`) makes the join
// service's client certificate.
//
// The provisioning steps call it after the node lock, with inputs that were
// validated before the lock (the join client validates the ticket, the init
// server the request). The generated documents are checked against a real
// kubeadm (`kubeadm config validate`) in the tests.
//
// # Trust
//
// kubeadm runs as root with the configuration written here, which holds a
// bootstrap token or a certificate key: files are written 0600 and kubeadm's
// output, which may echo such values, goes to a writer the caller chooses
// (a 0600 log file on the state disk), never into errors.
package kubeadm
