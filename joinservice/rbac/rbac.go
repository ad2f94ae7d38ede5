// Package rbac is the join service's Kubernetes identity and the exact
// permissions it holds: the user name of its client certificate, the rules,
// and the RBAC objects that grant them.
//
// One table, two users. The bootstrapper applies Objects at init, once, so
// the identity exists before the join service starts; the join service's
// tests run every Kubernetes call it makes against Allows, so a call the
// table does not grant fails a host test instead of a cluster, and a rule no
// call needs fails one too (package kube, TestPermissionsAreExactlyTheCallsMade).
// At start the join service asks the API server itself (SelfSubjectAccessReview)
// whether it holds every rule and none of Forbidden (kube.CheckIdentity).
//
// # What the rules cannot express
//
// RBAC cannot restrict create by name, and resourceNames cannot name a
// prefix: "create secrets in kube-system" lets the holder create any Secret
// there, and "delete secrets in kube-system" lets it delete any. Neither
// returns a Secret's data, and the service holds no get, list or watch on
// Secrets at all, so it cannot read any Secret, its own tokens included.
// Bootstrap tokens it can mint authenticate only in groups with the
// system:bootstrappers: prefix (the API server's bootstrap authenticator
// refuses others), and the kubelet signer it may approve for issues only
// system:node:<name> identities. docs/threat-model.md states the residual.
//
// # Trust
//
// Nothing here is input: the table is code, reviewed like code.
package rbac

import (
	"slices"

	certv1 "k8s.io/api/certificates/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// UserName is the common name of the join service's client certificate,
// which the API server takes as its user name. Not under "system:", which
// Kubernetes reserves for its own components, and in no group: in
// particular not system:masters, which RBAC cannot restrict.
const UserName = "cloister:joinservice"

// ObjectName names the ClusterRole, Roles and their bindings.
const ObjectName = "cloister:joinservice"

// Namespaces the join service touches.
const (
	NamespaceSystem = metav1.NamespaceSystem
	NamespacePublic = metav1.NamespacePublic
)

// Rule is one permission: verbs on a resource, cluster-wide (Namespace "")
// or in one namespace, on any object or only on ResourceNames.
type Rule struct {
	// Namespace is where the rule applies; empty means cluster-scoped.
	Namespace string
	// APIGroup is the resource's API group ("" for core).
	APIGroup string
	// Resource is the plural resource, with "/subresource" if any.
	Resource string
	// Verbs are the RBAC verbs granted.
	Verbs []string
	// ResourceNames, if set, limits the rule to these objects.
	ResourceNames []string
	// Why names the call that needs the rule.
	Why string
}

// Rules returns the join service's permissions; nothing else is granted.
func Rules() []Rule {
	return []Rule{
		{APIGroup: "", Resource: "nodes", Verbs: []string{"get"},
			Why: "NodeRegistered: a join ticket for a node name that is already registered is refused; spent tokens are deleted once their node exists"},
		{Namespace: NamespacePublic, APIGroup: "", Resource: "configmaps", Verbs: []string{"get"}, ResourceNames: []string{"cluster-info"},
			Why: "APIServerEndpoint, CACertHashes: kubeadm's discovery data"},
		{Namespace: NamespaceSystem, APIGroup: "", Resource: "configmaps", Verbs: []string{"get"}, ResourceNames: []string{"kube-root-ca.crt"},
			Why: "CACertHashes: the cluster CA when cluster-info is missing"},
		{Namespace: NamespaceSystem, APIGroup: "", Resource: "secrets", Verbs: []string{"create"},
			Why: "CreateBootstrapToken: a per-node bootstrap token is a Secret bootstrap-token-<id>"},
		{Namespace: NamespaceSystem, APIGroup: "", Resource: "secrets", Verbs: []string{"delete"},
			Why: "DeleteSpentBootstrapTokens: tokens this process created, by name and UID, once their node joined"},
		{APIGroup: certv1.GroupName, Resource: "certificatesigningrequests", Verbs: []string{"create", "get", "delete"},
			Why: "SignKubeletCSR: create the kubelet CSR, poll it for the certificate, delete it after a failure"},
		{APIGroup: certv1.GroupName, Resource: "certificatesigningrequests/approval", Verbs: []string{"update"},
			Why: "SignKubeletCSR: approve the CSR of a node that passed attestation"},
		{APIGroup: certv1.GroupName, Resource: "signers", Verbs: []string{"approve"}, ResourceNames: []string{certv1.KubeAPIServerClientKubeletSignerName},
			Why: "SignKubeletCSR: the API server lets only approvers of this signer approve its CSRs"},
	}
}

// Action is one request the join service could make, in RBAC's terms.
type Action struct {
	Namespace, APIGroup, Resource, Verb, Name string
}

// Forbidden lists actions the join service must not be able to take; the
// join service refuses to start if the API server allows any of them, and
// the QEMU cluster scenario tries them with the service's own credentials.
func Forbidden() []Action {
	return []Action{
		{Namespace: NamespaceSystem, Resource: "secrets", Verb: "get", Name: "kubeadm-certs"},
		{Namespace: NamespaceSystem, Resource: "secrets", Verb: "list"},
		{Namespace: NamespaceSystem, Resource: "secrets", Verb: "watch"},
		{Namespace: NamespaceSystem, Resource: "secrets", Verb: "update"},
		{Namespace: "default", Resource: "secrets", Verb: "get"},
		{Namespace: "default", Resource: "secrets", Verb: "create"},
		{Resource: "nodes", Verb: "delete"},
		{Resource: "nodes", Verb: "list"},
		{Namespace: NamespaceSystem, Resource: "pods", Verb: "list"},
		{Namespace: NamespaceSystem, Resource: "pods", Verb: "create"},
		{Namespace: NamespaceSystem, Resource: "configmaps", Verb: "get", Name: "kubeadm-config"},
		{APIGroup: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "create"},
		{APIGroup: certv1.GroupName, Resource: "signers", Verb: "approve", Name: certv1.KubeAPIServerClientSignerName},
		{APIGroup: certv1.GroupName, Resource: "certificatesigningrequests", Verb: "list"},
		{APIGroup: "", Resource: "users", Verb: "impersonate", Name: "kubernetes-admin"},
	}
}

// Allows reports whether Rules grant a. It is RBAC's matching for the
// subset the rules use (no wildcards, no non-resource URLs): a namespaced
// rule grants only in its namespace, a cluster-scoped rule everywhere, and
// a rule with ResourceNames only for those names (so never list, watch or
// create, which carry no name).
func Allows(a Action) bool {
	for _, r := range Rules() {
		if r.APIGroup != a.APIGroup || r.Resource != a.Resource || !slices.Contains(r.Verbs, a.Verb) {
			continue
		}
		if r.Namespace != "" && r.Namespace != a.Namespace {
			continue
		}
		if len(r.ResourceNames) > 0 && !slices.Contains(r.ResourceNames, a.Name) {
			continue
		}
		return true
	}
	return false
}

// Objects are the RBAC objects that grant Rules to UserName: one
// ClusterRole and ClusterRoleBinding for the cluster-scoped rules, one Role
// and RoleBinding per namespace for the others. Every object carries the
// label app.kubernetes.io/managed-by=cloister.
type Objects struct {
	ClusterRole        *rbacv1.ClusterRole
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	Roles              []*rbacv1.Role
	RoleBindings       []*rbacv1.RoleBinding
}

// NewObjects builds the RBAC objects for Rules, all named ObjectName.
func NewObjects() Objects {
	labels := map[string]string{"app.kubernetes.io/managed-by": "cloister"}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: UserName}}
	var o Objects
	o.ClusterRole = &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: ObjectName, Labels: labels}}
	o.ClusterRoleBinding = &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ObjectName, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ObjectName},
		Subjects:   subject,
	}
	roles := map[string]*rbacv1.Role{}
	for _, r := range Rules() {
		pr := rbacv1.PolicyRule{
			APIGroups:     []string{r.APIGroup},
			Resources:     []string{r.Resource},
			Verbs:         slices.Clone(r.Verbs),
			ResourceNames: slices.Clone(r.ResourceNames),
		}
		if r.Namespace == "" {
			o.ClusterRole.Rules = append(o.ClusterRole.Rules, pr)
			continue
		}
		role, ok := roles[r.Namespace]
		if !ok {
			role = &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: ObjectName, Namespace: r.Namespace, Labels: labels}}
			roles[r.Namespace] = role
			o.Roles = append(o.Roles, role)
			o.RoleBindings = append(o.RoleBindings, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: ObjectName, Namespace: r.Namespace, Labels: labels},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ObjectName},
				Subjects:   subject,
			})
		}
		role.Rules = append(role.Rules, pr)
	}
	return o
}
