package rbac

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestObjectsGrantExactlyRules checks that the objects the bootstrapper
// applies hold every rule once, in the rule's namespace, bound to UserName
// and to nobody else.
func TestObjectsGrantExactlyRules(t *testing.T) {
	o := NewObjects()
	n := len(o.ClusterRole.Rules)
	for _, r := range o.Roles {
		n += len(r.Rules)
	}
	if n != len(Rules()) {
		t.Errorf("objects hold %d rules, want %d", n, len(Rules()))
	}
	for _, r := range Rules() {
		in := o.ClusterRole.Rules
		if r.Namespace != "" {
			i := slices.IndexFunc(o.Roles, func(x *rbacv1.Role) bool { return x.Namespace == r.Namespace })
			if i < 0 {
				t.Errorf("no Role in %s for %s", r.Namespace, r.Resource)
				continue
			}
			in = o.Roles[i].Rules
		}
		if !slices.ContainsFunc(in, func(p rbacv1.PolicyRule) bool {
			return slices.Equal(p.APIGroups, []string{r.APIGroup}) && slices.Equal(p.Resources, []string{r.Resource}) &&
				slices.Equal(p.Verbs, r.Verbs) && slices.Equal(p.ResourceNames, r.ResourceNames)
		}) {
			t.Errorf("rule %+v is not in the objects", r)
		}
	}
	for _, b := range o.RoleBindings {
		if len(b.Subjects) != 1 || b.Subjects[0].Name != UserName || b.Subjects[0].Kind != rbacv1.UserKind {
			t.Errorf("RoleBinding %s/%s subjects %+v, want only user %s", b.Namespace, b.Name, b.Subjects, UserName)
		}
	}
	if s := o.ClusterRoleBinding.Subjects; len(s) != 1 || s[0].Name != UserName || s[0].Kind != rbacv1.UserKind {
		t.Errorf("ClusterRoleBinding subjects %+v, want only user %s", s, UserName)
	}
	if len(o.Roles) != 2 || len(o.RoleBindings) != 2 {
		t.Errorf("%d Roles and %d RoleBindings, want 2 each (kube-system, kube-public)", len(o.Roles), len(o.RoleBindings))
	}
}

func TestAllows(t *testing.T) {
	tests := []struct {
		name string
		a    Action
		want bool
	}{
		{"create a token secret", Action{Namespace: NamespaceSystem, Resource: "secrets", Verb: "create"}, true},
		{"delete a token secret", Action{Namespace: NamespaceSystem, Resource: "secrets", Verb: "delete", Name: "bootstrap-token-abcdef"}, true},
		{"read a secret in kube-system", Action{Namespace: NamespaceSystem, Resource: "secrets", Verb: "get", Name: "bootstrap-token-abcdef"}, false},
		{"create a secret elsewhere", Action{Namespace: "default", Resource: "secrets", Verb: "create"}, false},
		{"cluster-info", Action{Namespace: NamespacePublic, Resource: "configmaps", Verb: "get", Name: "cluster-info"}, true},
		{"another kube-public configmap", Action{Namespace: NamespacePublic, Resource: "configmaps", Verb: "get", Name: "other"}, false},
		{"list configmaps named by a rule", Action{Namespace: NamespacePublic, Resource: "configmaps", Verb: "list"}, false},
		{"kubelet signer", Action{APIGroup: "certificates.k8s.io", Resource: "signers", Verb: "approve", Name: "kubernetes.io/kube-apiserver-client-kubelet"}, true},
		{"client signer", Action{APIGroup: "certificates.k8s.io", Resource: "signers", Verb: "approve", Name: "kubernetes.io/kube-apiserver-client"}, false},
		{"approval subresource", Action{APIGroup: "certificates.k8s.io", Resource: "certificatesigningrequests/approval", Verb: "update", Name: "x"}, true},
		{"status subresource", Action{APIGroup: "certificates.k8s.io", Resource: "certificatesigningrequests/status", Verb: "update", Name: "x"}, false},
	}
	for _, tt := range tests {
		if got := Allows(tt.a); got != tt.want {
			t.Errorf("%s: Allows(%+v) = %v, want %v", tt.name, tt.a, got, tt.want)
		}
	}
	for _, a := range Forbidden() {
		if Allows(a) {
			t.Errorf("Rules grant the forbidden %+v", a)
		}
	}
}
