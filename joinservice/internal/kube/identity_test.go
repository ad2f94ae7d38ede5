package kube

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cloister-dev/cloister/joinservice/rbac"
)

// recordCalls records every request the Cluster sends to the fake
// clientset as an RBAC action, plus the one the API server checks on the
// Cluster's behalf: approving a CSR requires "approve" on its signer
// (the CertificateApproval admission plugin).
func recordCalls(tb testing.TB, client *fake.Clientset) func() []rbac.Action {
	tb.Helper()
	var mu sync.Mutex
	var calls []rbac.Action
	client.PrependReactor("*", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		a := rbac.Action{
			Namespace: action.GetNamespace(),
			APIGroup:  action.GetResource().Group,
			Resource:  action.GetResource().Resource,
			Verb:      action.GetVerb(),
		}
		if sub := action.GetSubresource(); sub != "" {
			a.Resource += "/" + sub
		}
		var approval *certv1.CertificateSigningRequest
		switch act := action.(type) {
		case k8stesting.GetAction:
			a.Name = act.GetName()
		case k8stesting.DeleteAction:
			a.Name = act.GetName()
		case k8stesting.UpdateAction:
			if o, ok := act.GetObject().(metav1.Object); ok {
				a.Name = o.GetName()
			}
			if csr, ok := act.GetObject().(*certv1.CertificateSigningRequest); ok && act.GetSubresource() == "approval" {
				approval = csr
			}
		}
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, a)
		if approval != nil {
			calls = append(calls, rbac.Action{APIGroup: certv1.GroupName, Resource: "signers", Verb: "approve", Name: approval.Spec.SignerName})
		}
		return false, nil, nil
	})
	return func() []rbac.Action {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
}

// TestPermissionsAreExactlyTheCallsMade runs every operation the join
// service uses (main and package server: discovery, node lookup, kubelet CSR
// signing and its cleanup, token creation and cleanup) against the fake
// clientset, and checks that rbac.Rules grant each request made and that
// each verb of each rule is used by some request: no call the init-time RBAC
// would refuse, no permission nothing uses.
func TestPermissionsAreExactlyTheCallsMade(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	now := testNow
	c, client := newFakeCluster(t, Options{Now: func() time.Time { return now }, CSRPollInterval: time.Millisecond, CSRTimeout: 5 * time.Second},
		clusterInfoConfigMap("https://10.0.0.1:6443", ca.pem), rootCAConfigMap(ca.pem))
	signer := installFakeSigner(t, client, fakeSignerSigns)
	calls := recordCalls(t, client) // prepended after the signer: sees every request first
	ctx := context.Background()

	if _, err := c.APIServerEndpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CACertHashes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NodeRegistered(ctx, "worker-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignKubeletCSR(ctx, "worker-1", validCSR(t, "worker-1")); err != nil {
		t.Fatal(err)
	}
	signer.mode = fakeSignerDenies // the failure path deletes the CSR
	if _, err := c.SignKubeletCSR(ctx, "worker-1", validCSR(t, "worker-1")); !errors.Is(err, ErrCSRDenied) {
		t.Fatalf("SignKubeletCSR with a denying signer: %v, want ErrCSRDenied", err)
	}
	if _, err := c.CreateBootstrapToken(ctx, "worker-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := c.DeleteSpentBootstrapTokens(ctx)
	if err != nil || n != 1 {
		t.Fatalf("DeleteSpentBootstrapTokens = %d, %v; want 1, nil", n, err)
	}
	if _, err := c.CreateBootstrapToken(ctx, "worker-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteTokensForNode(ctx, "worker-2"); err != nil {
		t.Fatal(err)
	}
	// Without cluster-info, the CA comes from kube-root-ca.crt.
	made := calls()
	if err := client.CoreV1().ConfigMaps(metav1.NamespacePublic).Delete(ctx, "cluster-info", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CACertHashes(ctx); err != nil {
		t.Fatal(err)
	}
	made = append(made, calls()[len(made)+1:]...) // the test's own delete is not the service's

	var served []rbac.Action
	for _, a := range made {
		if a.Resource == "nodes" && a.Verb == "create" {
			continue // the test registering the node, playing kubelet
		}
		if !rbac.Allows(a) {
			t.Errorf("the join service made a request its RBAC does not grant: %+v", a)
		}
		served = append(served, a)
	}
	for _, need := range neededActions() {
		if !slices.ContainsFunc(served, func(a rbac.Action) bool { return covers(need, a) }) {
			t.Errorf("rbac grants %+v, but no call uses it: remove the rule or the call is untested", need)
		}
	}
	for _, a := range rbac.Forbidden() {
		if rbac.Allows(a) {
			t.Errorf("rbac.Rules grant a forbidden action: %+v", a)
		}
	}
}

// covers reports whether request a uses the permission need: same verb and
// resource in the same namespace, and the same name if need names one.
func covers(need, a rbac.Action) bool {
	return need.Namespace == a.Namespace && need.APIGroup == a.APIGroup && need.Resource == a.Resource &&
		need.Verb == a.Verb && (need.Name == "" || need.Name == a.Name)
}

// fakeAuthorizer answers SelfSubjectAccessReviews on the fake clientset the
// way a real API server would for an identity whose permissions allow
// describes. It is a FAKE: no RBAC is evaluated by Kubernetes code.
func fakeAuthorizer(client *fake.Clientset, allow func(rbac.Action) bool) {
	client.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		r := action.(k8stesting.CreateAction).GetObject().(*authzv1.SelfSubjectAccessReview).DeepCopy()
		ra := r.Spec.ResourceAttributes
		res := ra.Resource
		if ra.Subresource != "" {
			res += "/" + ra.Subresource
		}
		r.Status.Allowed = allow(rbac.Action{Namespace: ra.Namespace, APIGroup: ra.Group, Resource: res, Verb: ra.Verb, Name: ra.Name})
		if r.Status.Allowed {
			r.Status.Reason = "fake authorizer"
		}
		return true, r, nil
	})
}

func TestCheckIdentityWithFakeAuthorizer(t *testing.T) {
	tests := []struct {
		name  string
		allow func(rbac.Action) bool
		// wantRefused are the actions reported, as "want/got verb resource".
		wantRefused []string
	}{
		{name: "exactly the rbac table", allow: rbac.Allows},
		{
			name:  "admin.conf (system:masters: everything allowed)",
			allow: func(rbac.Action) bool { return true },
			wantRefused: []string{
				"denied/allowed get secrets", "denied/allowed list secrets", "denied/allowed delete nodes",
				"denied/allowed approve signers", "denied/allowed impersonate users",
			},
		},
		{
			name: "RBAC that also lets it read Secrets in kube-system",
			allow: func(a rbac.Action) bool {
				return rbac.Allows(a) || (a.Resource == "secrets" && a.Namespace == metav1.NamespaceSystem && (a.Verb == "get" || a.Verb == "list"))
			},
			wantRefused: []string{"denied/allowed get secrets", "denied/allowed list secrets"},
		},
		{
			name:        "RBAC without the signer approval",
			allow:       func(a rbac.Action) bool { return rbac.Allows(a) && a.Resource != "signers" },
			wantRefused: []string{"allowed/denied approve signers"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, client := newFakeCluster(t, Options{})
			fakeAuthorizer(client, tt.allow)
			err := c.CheckIdentity(context.Background())
			if len(tt.wantRefused) == 0 {
				if err != nil {
					t.Fatalf("CheckIdentity = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckIdentity = nil, want refusal")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var pe *PermissionError
				if !errors.As(e, &pe) {
					t.Fatalf("error %v is not a *PermissionError", e)
				}
				got = append(got, pe.Want+"/"+pe.Got+" "+pe.Action.Verb+" "+pe.Action.Resource)
			}
			for _, w := range tt.wantRefused {
				if !slices.Contains(got, w) {
					t.Errorf("refusals %q lack %q", got, w)
				}
			}
		})
	}
}
