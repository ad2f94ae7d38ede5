package kubesecret

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cloister-dev/cloister/internal/keys"
)

func secret(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name}, Data: data}
}

func TestProviderWithFakeClientset(t *testing.T) {
	cs, err := keys.NewClusterSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := keys.MarshalClusterSecrets(cs)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(
		secret("good", map[string][]byte{DataKey: enc}),
		secret("nokey", map[string][]byte{"other": enc}),
		secret("garbage", map[string][]byte{DataKey: []byte("{")}),
	)
	got, err := (&Provider{Client: client, Namespace: "kube-system", Name: "good"}).ClusterSecrets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.MasterSecret, cs.MasterSecret) {
		t.Error("master secret changed on the way through the Secret")
	}
	for name, want := range map[string]string{"nokey": `no data key "secrets"`, "garbage": "malformed JSON", "missing": "not found"} {
		_, err := (&Provider{Client: client, Namespace: "kube-system", Name: name}).ClusterSecrets(context.Background())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", name, err, want)
		}
	}
}
