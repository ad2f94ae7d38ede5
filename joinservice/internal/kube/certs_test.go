package kube

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
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

// writePKI writes a kubeadm-shaped PKI directory with random contents and
// returns the files by their kubeadm-certs data key.
func writePKI(t *testing.T, withEtcd bool) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"ca.crt": "ca.crt", "ca.key": "ca.key",
		"front-proxy-ca.crt": "front-proxy-ca.crt", "front-proxy-ca.key": "front-proxy-ca.key",
		"sa.pub": "sa.pub", "sa.key": "sa.key",
	}
	if withEtcd {
		files["etcd-ca.crt"] = "etcd/ca.crt"
		files["etcd-ca.key"] = "etcd/ca.key"
		if err := os.Mkdir(filepath.Join(dir, "etcd"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	contents := map[string][]byte{}
	for key, rel := range files {
		b := make([]byte, 700)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		b = fmt.Appendf(nil, "-----BEGIN %s-----\n%x\n-----END-----\n", key, b)
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o600); err != nil {
			t.Fatal(err)
		}
		contents[key] = b
	}
	return dir, contents
}

// kubeadmDecrypt is kubeadm's decryption (util/crypto DecryptBytes),
// written independently: AES-GCM, nonce prepended, no additional data.
func kubeadmDecrypt(t *testing.T, data, key []byte) ([]byte, error) {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < gcm.NonceSize() {
		return nil, fmt.Errorf("shorter than the nonce")
	}
	return gcm.Open(nil, data[:gcm.NonceSize()], data[gcm.NonceSize():], nil)
}

// uidOnCreate gives created objects a UID, as the API server does and the
// fake clientset does not.
func uidOnCreate(client *fake.Clientset) {
	n := 0
	client.PrependReactor("create", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := action.(k8stesting.CreateAction).GetObject().(metav1.Object); ok && o.GetUID() == "" {
			n++
			o.SetUID(types.UID(fmt.Sprintf("uid-%d", n)))
		}
		return false, nil, nil
	})
}

func newCertificateKey(t *testing.T) []byte {
	t.Helper()
	key := make([]byte, CertificateKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}

func TestUploadControlPlaneCertsWithFakeClientset(t *testing.T) {
	c, client := newFakeCluster(t, Options{})
	uidOnCreate(client)
	dir, want := writePKI(t, true)
	key := newCertificateKey(t)
	if err := c.UploadControlPlaneCerts(context.Background(), dir, key); err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, c, "kubeadm-certs")
	if len(s.Data) != len(want) {
		t.Errorf("secret has %d keys, want %d", len(s.Data), len(want))
	}
	nonces := map[string]bool{}
	for k, plain := range want {
		enc, ok := s.Data[k]
		if !ok {
			t.Errorf("secret lacks %s", k)
			continue
		}
		if bytes.Contains(enc, plain[:40]) {
			t.Errorf("%s is stored in the clear", k)
		}
		got, err := kubeadmDecrypt(t, enc, key)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s does not decrypt to the file: %v", k, err)
		}
		if _, err := kubeadmDecrypt(t, enc, newCertificateKey(t)); err == nil {
			t.Errorf("%s decrypts under another key", k)
		}
		nonces[string(enc[:12])] = true
	}
	if len(nonces) != len(want) {
		t.Errorf("%d distinct nonces for %d files", len(nonces), len(want))
	}

	if len(s.OwnerReferences) != 1 {
		t.Fatalf("owner references = %+v, want 1", s.OwnerReferences)
	}
	ref := s.OwnerReferences[0]
	owner := getSecret(t, c, ref.Name)
	if ref.APIVersion != "v1" || ref.Kind != "Secret" || ref.UID == "" || ref.UID != owner.UID ||
		ref.Controller == nil || !*ref.Controller || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("owner reference = %+v, owner UID %q", ref, owner.UID)
	}
	if owner.Type != corev1.SecretTypeBootstrapToken || owner.Name != "bootstrap-token-"+string(owner.Data["token-id"]) {
		t.Errorf("owner is not a bootstrap token: %s %s", owner.Type, owner.Name)
	}
	if got, want := string(owner.Data["expiration"]), testNow.Add(DefaultCertsTokenTTL).Format(time.RFC3339); got != want {
		t.Errorf("owner token expiration = %s, want %s", got, want)
	}
	for _, k := range []string{"usage-bootstrap-authentication", "usage-bootstrap-signing", "auth-extra-groups"} {
		if _, ok := owner.Data[k]; ok {
			t.Errorf("owner token has %s: it must not authenticate anyone", k)
		}
	}
	if owner.Labels[LabelManagedBy] != managedByValue {
		t.Errorf("owner token is not marked as Cloister's: %v", owner.Labels)
	}
}

func TestUploadControlPlaneCertsStackedEtcdMissingWithFakeClientset(t *testing.T) {
	c, _ := newFakeCluster(t, Options{})
	dir, _ := writePKI(t, false)
	if err := c.UploadControlPlaneCerts(context.Background(), dir, newCertificateKey(t)); err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, c, "kubeadm-certs")
	for _, k := range []string{"etcd-ca.crt", "etcd-ca.key"} {
		if v, ok := s.Data[k]; !ok || len(v) != 0 {
			t.Errorf("%s: present=%v len=%d, want present and empty as kubeadm writes it", k, ok, len(v))
		}
	}
}

func TestUploadControlPlaneCertsExternalEtcdWithFakeClientset(t *testing.T) {
	dir, _ := writePKI(t, false)
	ext := t.TempDir()
	want := map[string][]byte{}
	for _, name := range []string{"external-etcd-ca.crt", "external-etcd.crt", "external-etcd.key"} {
		want[name] = []byte("contents of " + name)
		if err := os.WriteFile(filepath.Join(ext, name), want[name], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := newFakeCluster(t, Options{ExternalEtcd: &ExternalEtcd{
		CAFile: filepath.Join(ext, "external-etcd-ca.crt"), CertFile: filepath.Join(ext, "external-etcd.crt"), KeyFile: filepath.Join(ext, "external-etcd.key"),
	}})
	key := newCertificateKey(t)
	if err := c.UploadControlPlaneCerts(context.Background(), dir, key); err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, c, "kubeadm-certs")
	for k, plain := range want {
		got, err := kubeadmDecrypt(t, s.Data[k], key)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s does not decrypt to the file: %v", k, err)
		}
	}
	if _, ok := s.Data["etcd-ca.key"]; ok {
		t.Error("stacked etcd key uploaded for an external etcd")
	}
}

func TestUploadControlPlaneCertsReplacesExistingWithFakeClientset(t *testing.T) {
	old := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kubeadm-certs", Namespace: metav1.NamespaceSystem,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Secret", Name: "bootstrap-token-old000", UID: "old"}}},
		Data: map[string][]byte{"ca.key": []byte("stale"), "stale-key": []byte("x")},
	}
	c, client := newFakeCluster(t, Options{}, old)
	uidOnCreate(client)
	dir, want := writePKI(t, true)
	key := newCertificateKey(t)
	if err := c.UploadControlPlaneCerts(context.Background(), dir, key); err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, c, "kubeadm-certs")
	if _, ok := s.Data["stale-key"]; ok {
		t.Error("stale data kept")
	}
	if got, err := kubeadmDecrypt(t, s.Data["ca.key"], key); err != nil || !bytes.Equal(got, want["ca.key"]) {
		t.Errorf("ca.key not replaced: %v", err)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Name == "bootstrap-token-old000" {
		t.Errorf("owner references = %+v, want the new token only", s.OwnerReferences)
	}
}

func TestUploadControlPlaneCertsRefusesWithFakeClientset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		key   []byte
	}{
		{name: "certificate key of 16 bytes", key: make([]byte, 16)},
		{name: "certificate key missing", key: []byte{}},
		{name: "ca.key missing", setup: func(t *testing.T, dir string) { rm(t, filepath.Join(dir, "ca.key")) }},
		{name: "sa.pub missing", setup: func(t *testing.T, dir string) { rm(t, filepath.Join(dir, "sa.pub")) }},
		{name: "only half of the etcd CA", setup: func(t *testing.T, dir string) { rm(t, filepath.Join(dir, "etcd", "ca.key")) }},
		{name: "empty front-proxy-ca.key", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "front-proxy-ca.key"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "oversize ca.crt", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "ca.crt"), make([]byte, maxPKIFileSize+1), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client := newFakeCluster(t, Options{})
			dir, _ := writePKI(t, true)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			key := tc.key
			if key == nil {
				key = newCertificateKey(t)
			}
			if err := c.UploadControlPlaneCerts(context.Background(), dir, key); err == nil {
				t.Fatal("accepted")
			}
			if n := len(client.Actions()); n != 0 {
				t.Errorf("%d API calls before the refusal, want 0", n)
			}
			if _, err := client.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), "kubeadm-certs", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("kubeadm-certs written: %v", err)
			}
		})
	}
}

func rm(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}
