package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var tokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

func getSecret(t *testing.T, c *Cluster, name string) *corev1.Secret {
	t.Helper()
	s, err := c.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting secret %s: %v", name, err)
	}
	return s
}

func TestCreateBootstrapTokenWithFakeClientset(t *testing.T) {
	c, _ := newFakeCluster(t, Options{})
	tok, err := c.CreateBootstrapToken(context.Background(), "worker-1.example")
	if err != nil {
		t.Fatal(err)
	}
	full := tok.Reveal()
	if !tokenRE.MatchString(full) {
		t.Fatalf("token %q does not match %s", full, tokenRE)
	}
	if want := testNow.Add(DefaultTokenTTL); !tok.Expires.Equal(want) {
		t.Errorf("Expires = %v, want %v", tok.Expires, want)
	}
	s := getSecret(t, c, "bootstrap-token-"+tok.ID)
	if s.Type != corev1.SecretTypeBootstrapToken {
		t.Errorf("type = %q", s.Type)
	}
	secretPart := strings.SplitN(full, ".", 2)[1]
	want := map[string]string{
		"token-id":                       tok.ID,
		"token-secret":                   secretPart,
		"expiration":                     "2026-11-27T06:15:00Z",
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
	}
	for k, v := range want {
		if got := string(s.Data[k]); got != v {
			t.Errorf("data[%s] = %q, want %q", k, got, v)
		}
	}
	if d := string(s.Data["description"]); !strings.Contains(d, "worker-1.example") {
		t.Errorf("description %q does not name the node", d)
	}
	if s.Labels[LabelManagedBy] != managedByValue || s.Annotations[AnnotationNode] != "worker-1.example" {
		t.Errorf("labels %v annotations %v: want Cloister's marker and the node", s.Labels, s.Annotations)
	}
}

func TestTokenNeverPrintsSecret(t *testing.T) {
	c, _ := newFakeCluster(t, Options{})
	tok, err := c.CreateBootstrapToken(context.Background(), "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	secretPart := strings.SplitN(tok.Reveal(), ".", 2)[1]
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("token", "token", tok)
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", tok), "%+v": fmt.Sprintf("%+v", tok), "%#v": fmt.Sprintf("%#v", tok),
		"%s": fmt.Sprintf("%s", tok), "%q": fmt.Sprintf("%q", tok), "%x": fmt.Sprintf("%x", tok),
		"String": tok.String(), "slog": logged.String(),
		"in a struct": fmt.Sprintf("%+v", struct{ T Token }{tok}),
	} {
		if strings.Contains(out, secretPart) {
			t.Errorf("%s prints the token secret: %s", name, out)
		}
		if !strings.Contains(out, tok.ID) {
			t.Errorf("%s does not show the token ID: %s", name, out)
		}
	}
}

func TestCreateBootstrapTokenUniqueWithFakeClientset(t *testing.T) {
	c, _ := newFakeCluster(t, Options{})
	seen := map[string]bool{}
	for i := range 200 {
		tok, err := c.CreateBootstrapToken(context.Background(), fmt.Sprintf("node-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok.ID] || seen[tok.Reveal()] {
			t.Fatalf("token %s repeated after %d tokens", tok, i)
		}
		seen[tok.ID], seen[tok.Reveal()] = true, true
	}
}

func TestCreateBootstrapTokenRetriesTakenIDWithFakeClientset(t *testing.T) {
	// The first draw gives ID "aaaaaa" (byte 10 → 'a'), which is taken; the
	// second draw gives "bbbbbb".
	draw := func(b byte) []byte {
		return bytes.Repeat([]byte{b}, tokenIDLen+tokenSecretLen+(tokenIDLen+tokenSecretLen)/4)
	}
	rnd := bytes.NewReader(append(draw(10), draw(11)...))
	taken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-aaaaaa", Namespace: metav1.NamespaceSystem}}
	c, _ := newFakeCluster(t, Options{Rand: rnd}, taken)
	tok, err := c.CreateBootstrapToken(context.Background(), "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID != "bbbbbb" {
		t.Fatalf("ID = %s, want bbbbbb after the taken aaaaaa", tok.ID)
	}
	if s := getSecret(t, c, "bootstrap-token-aaaaaa"); len(s.Data) != 0 {
		t.Fatalf("the existing secret was overwritten: %v", s.Data)
	}
}

func TestRandomStringHasNoModuloBias(t *testing.T) {
	// Every byte value once: the 4 values ≥ 252 are rejected and each of
	// the 36 characters is drawn exactly 7 times.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	s, err := randomString(bytes.NewReader(append(all, make([]byte, 64)...)), 252)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	for _, r := range tokenAlphabet {
		if counts[r] != 7 {
			t.Errorf("character %q drawn %d times, want 7", r, counts[r])
		}
	}
}

func TestRandomStringRefusesBrokenSource(t *testing.T) {
	constant := bytes.NewReader(bytes.Repeat([]byte{0xff}, 1<<16))
	if _, err := randomString(constant, 22); err == nil {
		t.Fatal("a source that only yields rejected bytes was accepted")
	}
	if _, err := randomString(bytes.NewReader([]byte{1, 2}), 22); err == nil {
		t.Fatal("a short source was accepted")
	}
}

func TestCreateBootstrapTokenRefusesBadNodeName(t *testing.T) {
	c, client := newFakeCluster(t, Options{})
	for _, name := range []string{"", "Worker", "worker_1", strings.Repeat("a", 254), "-worker", "worker/1"} {
		_, err := c.CreateBootstrapToken(context.Background(), name)
		if !errors.Is(err, ErrInvalidNodeName) {
			t.Errorf("node name %.20q: err = %v, want ErrInvalidNodeName", name, err)
		}
	}
	if n := len(client.Actions()); n != 0 {
		t.Fatalf("%d API calls for invalid node names, want 0", n)
	}
}

// tokenSecret builds a bootstrap token Secret for the cleanup tests.
func tokenSecret(id, expiration string, cloister bool, mutate ...func(*corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		Data:       map[string][]byte{"token-id": []byte(id), "token-secret": []byte("0123456789abcdef"), "expiration": []byte(expiration)},
	}
	if cloister {
		s.Labels = map[string]string{LabelManagedBy: managedByValue}
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func TestDeleteSpentBootstrapTokensWithFakeClientset(t *testing.T) {
	past := testNow.Add(-time.Minute).Format(time.RFC3339)
	now := testNow
	objects := []runtime.Object{
		tokenSecret("kubeadm", past, false), // kubeadm's or an operator's token
		tokenSecret("labels", past, true),   // Cloister's label, but made by another process
	}
	c, _ := newFakeCluster(t, Options{Now: func() time.Time { return now }, TokenTTL: time.Minute}, objects...)
	ctx := context.Background()
	expired, err := c.CreateBootstrapToken(ctx, "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(30 * time.Second)
	live, err := c.CreateBootstrapToken(ctx, "worker-2")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(31 * time.Second) // past the first token's expiry only
	n, err := c.DeleteSpentBootstrapTokens(ctx)
	if err != nil || n != 1 {
		t.Fatalf("DeleteSpentBootstrapTokens = %d, %v; want 1, nil", n, err)
	}
	if _, err := c.client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+expired.ID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("expired token %s: err = %v, want NotFound", expired.ID, err)
	}
	for _, id := range []string{live.ID, "kubeadm", "labels"} {
		getSecret(t, c, "bootstrap-token-"+id)
	}
	if n, err := c.DeleteSpentBootstrapTokens(ctx); err != nil || n != 0 {
		t.Errorf("second sweep = %d, %v; want 0, nil", n, err)
	}
}

func TestDeleteSpentBootstrapTokensLeavesAReplacedSecretWithFakeClientset(t *testing.T) {
	now := testNow
	c, client := newFakeCluster(t, Options{Now: func() time.Time { return now }, TokenTTL: time.Minute})
	installFakeUIDs(t, client)
	ctx := context.Background()
	tok, err := c.CreateBootstrapToken(ctx, "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	// Someone else deletes the Secret and creates another under the same
	// name: the UID precondition keeps the sweep off it.
	name := "bootstrap-token-" + tok.ID
	if err := client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	other := tokenSecret(tok.ID, testNow.Add(time.Hour).Format(time.RFC3339), false)
	other.UID = "someone-elses"
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := c.DeleteSpentBootstrapTokens(ctx); err != nil {
		t.Fatal(err)
	}
	getSecret(t, c, name)
}

func TestDeleteSpentBootstrapTokensDeletesTokensOfRegisteredNodesWithFakeClientset(t *testing.T) {
	c, client := newFakeCluster(t, Options{})
	joined, err := c.CreateBootstrapToken(context.Background(), "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := c.CreateBootstrapToken(context.Background(), "worker-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := c.DeleteSpentBootstrapTokens(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("deleted %d (err %v), want 1: the registered node's token", n, err)
	}
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), "bootstrap-token-"+joined.ID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token of registered worker-1: err = %v, want NotFound", err)
	}
	getSecret(t, c, "bootstrap-token-"+waiting.ID)
}

func TestDeleteTokensForRegisteredNodeWithFakeClientset(t *testing.T) {
	c, client := newFakeCluster(t, Options{})
	ctx := context.Background()
	mine, err := c.CreateBootstrapToken(ctx, "worker-1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateBootstrapToken(ctx, "worker-10")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.NodeRegistered(ctx, "worker-1"); err != nil || ok {
		t.Fatalf("NodeRegistered before registration = %v, %v; want false, nil", ok, err)
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.NodeRegistered(ctx, "worker-1"); err != nil || !ok {
		t.Fatalf("NodeRegistered after registration = %v, %v; want true, nil", ok, err)
	}
	n, err := c.DeleteTokensForNode(ctx, "worker-1")
	if err != nil || n != 1 {
		t.Fatalf("DeleteTokensForNode = %d, %v; want 1, nil", n, err)
	}
	if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+mine.ID, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("worker-1's token still there: %v", err)
	}
	getSecret(t, c, "bootstrap-token-"+other.ID)
	if _, err := c.NodeRegistered(ctx, "Worker_1"); !errors.Is(err, ErrInvalidNodeName) {
		t.Errorf("NodeRegistered(Worker_1) err = %v, want ErrInvalidNodeName", err)
	}
}

func TestRunTokenCleanupWithFakeClientset(t *testing.T) {
	now := testNow
	c, _ := newFakeCluster(t, Options{Now: func() time.Time { return now }})
	if _, err := c.CreateBootstrapToken(context.Background(), "worker-1"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(DefaultTokenTTL)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var total, calls int
	done := make(chan error, 1)
	go func() {
		done <- c.RunTokenCleanup(ctx, 5*time.Millisecond, func(n int, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("cleanup: %v", err)
			}
			total += n
			calls++
			if calls == 3 {
				cancel()
			}
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunTokenCleanup after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunTokenCleanup did not stop")
	}
	if total != 1 {
		t.Errorf("deleted %d tokens in total, want 1", total)
	}
	if err := c.RunTokenCleanup(context.Background(), 0, nil); err == nil {
		t.Error("zero interval accepted")
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	c, _ := newFakeCluster(t, Options{})
	for name, opts := range map[string]Options{
		"negative TTL":             {TokenTTL: -time.Second},
		"TTL over a day":           {TokenTTL: 25 * time.Hour},
		"negative CSR timeout":     {CSRTimeout: -1},
		"certificate under 10m":    {KubeletCertLifetime: time.Minute},
		"incomplete external etcd": {ExternalEtcd: &ExternalEtcd{CAFile: "/x"}},
	} {
		if _, err := New(c.client, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil client accepted")
	}
}

// installFakeUIDs makes the fake clientset do what the API server does and
// the fake does not: give each created Secret a UID, and refuse a delete
// whose UID precondition names another object (409 Conflict).
func installFakeUIDs(tb testing.TB, client *fake.Clientset) {
	tb.Helper()
	var n atomic.Int64
	gvr := corev1.SchemeGroupVersion.WithResource("secrets")
	client.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		s := action.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
		if s.UID == "" {
			s.UID = types.UID(fmt.Sprintf("fake-uid-%d", n.Add(1)))
		}
		if err := client.Tracker().Create(gvr, s, s.Namespace); err != nil {
			return true, nil, err
		}
		return true, s, nil
	})
	client.PrependReactor("delete", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		da := action.(k8stesting.DeleteAction)
		pre := da.GetDeleteOptions().Preconditions
		if pre == nil || pre.UID == nil {
			return false, nil, nil
		}
		obj, err := client.Tracker().Get(gvr, da.GetNamespace(), da.GetName())
		if err != nil {
			return false, nil, nil
		}
		if got := obj.(*corev1.Secret).UID; got != *pre.UID {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), da.GetName(), fmt.Errorf("precondition: want UID %s, got %s", *pre.UID, got))
		}
		return false, nil, nil
	})
}
