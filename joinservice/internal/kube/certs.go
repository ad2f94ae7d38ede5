package kube

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// CertificateKeySize is the size of kubeadm's certificate key (AES-256).
	CertificateKeySize = 32
	// certsSecretName is where kubeadm join --control-plane looks for the
	// encrypted control-plane certificates.
	certsSecretName = "kubeadm-certs"
	// certsTokenDescription is the description kubeadm gives the token that
	// owns kubeadm-certs; kept identical so `kubeadm token list` reads alike.
	certsTokenDescription = "Proxy for managing TTL for the kubeadm-certs secret"
	// maxPKIFileSize bounds each file read from the PKI directory.
	maxPKIFileSize = 1 << 20
)

// certFile is one file of the kubeadm-certs Secret: its data key (kubeadm's
// file name with "/" replaced by "-") and where to read it.
type certFile struct {
	key, path string
	optional  bool
}

// certFiles lists what kubeadm's copycerts.go transfers, in the same data
// keys. Optional files that are missing are uploaded empty, as kubeadm does,
// because kubeadm join expects every key to be present.
func (c *Cluster) certFiles(pkiDir string) [][]certFile {
	files := [][]certFile{
		{{key: "ca.crt", path: "ca.crt"}},
		{{key: "ca.key", path: "ca.key"}},
		{{key: "front-proxy-ca.crt", path: "front-proxy-ca.crt"}},
		{{key: "front-proxy-ca.key", path: "front-proxy-ca.key"}},
		{{key: "sa.pub", path: "sa.pub"}},
		{{key: "sa.key", path: "sa.key"}},
	}
	for i := range files {
		files[i][0].path = filepath.Join(pkiDir, files[i][0].path)
	}
	if e := c.opts.ExternalEtcd; e != nil {
		// All or nothing: an insecure external etcd has no files at all.
		return append(files, []certFile{
			{key: "external-etcd-ca.crt", path: e.CAFile, optional: true},
			{key: "external-etcd.crt", path: e.CertFile, optional: true},
			{key: "external-etcd.key", path: e.KeyFile, optional: true},
		})
	}
	return append(files, []certFile{
		{key: "etcd-ca.crt", path: filepath.Join(pkiDir, "etcd", "ca.crt"), optional: true},
		{key: "etcd-ca.key", path: filepath.Join(pkiDir, "etcd", "ca.key"), optional: true},
	})
}

// UploadControlPlaneCerts does what `kubeadm init phase upload-certs` does,
// through the API: it encrypts the cluster's CA certificates and keys from
// pkiDir (ca, front-proxy-ca, sa, and the etcd CA unless etcd is external)
// with AES-256-GCM under certificateKey, and writes them to the Secret
// kube-system/kubeadm-certs, which a bootstrap token of lifetime
// Options.CertsTokenTTL owns, so the garbage collector deletes it with the
// token. A node that receives certificateKey can then run `kubeadm join
// --control-plane --certificate-key <hex>`; the join service never ships CA
// private keys itself.
//
// certificateKey is the raw 32-byte key; kubeadm and the join ticket carry
// it hex-encoded. The format is kubeadm's: each value is nonce ‖ ciphertext ‖ tag with a
// fresh 12-byte nonce and no additional data; missing etcd files are empty
// values.
//
// The join service itself never calls it, and its identity (package rbac)
// may not: replacing an existing kubeadm-certs needs get and update on
// Secrets in kube-system, which would let it read every Secret there. `kubeadm
// init --upload-certs` uploads the certificates at init; an operator with a
// stronger identity re-uploads them (`kubeadm init phase upload-certs`).
func (c *Cluster) UploadControlPlaneCerts(ctx context.Context, pkiDir string, certificateKey []byte) error {
	if len(certificateKey) != CertificateKeySize {
		return fmt.Errorf("kube: uploading control-plane certificates: certificate key: want %d bytes, got %d", CertificateKeySize, len(certificateKey))
	}
	block, err := aes.NewCipher(certificateKey)
	if err != nil {
		return fmt.Errorf("kube: uploading control-plane certificates: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return fmt.Errorf("kube: uploading control-plane certificates: %w", err)
	}
	data, err := c.encryptCertFiles(aead, pkiDir)
	if err != nil {
		return fmt.Errorf("kube: uploading control-plane certificates: %w", err)
	}

	expires := c.opts.Now().Add(c.opts.CertsTokenTTL).UTC().Truncate(time.Second)
	owner, err := c.createToken(ctx, expires, map[string][]byte{keyDescription: []byte(certsTokenDescription)}, nil)
	if err != nil {
		return fmt.Errorf("kube: uploading control-plane certificates: owner token: %w", err)
	}
	secrets := c.client.CoreV1().Secrets(metav1.NamespaceSystem)
	ownerName := tokenPrefix + owner.ID
	ownerToken, _ := c.lookup(ownerName)
	isController := true
	refs := []metav1.OwnerReference{{
		APIVersion:         "v1",
		Kind:               "Secret",
		Name:               ownerName,
		UID:                ownerToken.uid,
		Controller:         &isController,
		BlockOwnerDeletion: &isController,
	}}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            certsSecretName,
			Namespace:       metav1.NamespaceSystem,
			OwnerReferences: refs,
		},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var old *corev1.Secret
		old, err = secrets.Get(ctx, certsSecretName, metav1.GetOptions{})
		if err == nil {
			old.OwnerReferences = refs
			old.Data = data
			old.Type = corev1.SecretTypeOpaque
			_, err = secrets.Update(ctx, old, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("kube: uploading control-plane certificates: writing secret %s/%s: %w", metav1.NamespaceSystem, certsSecretName, err)
	}
	return nil
}

func (c *Cluster) encryptCertFiles(aead cipher.AEAD, pkiDir string) (map[string][]byte, error) {
	data := map[string][]byte{}
	for _, group := range c.certFiles(pkiDir) {
		var missing, present []string
		for _, f := range group {
			plain, err := readBounded(f.path)
			if errors.Is(err, fs.ErrNotExist) && f.optional {
				missing = append(missing, f.path)
				data[f.key] = []byte{}
				continue
			}
			if err != nil {
				return nil, err
			}
			present = append(present, f.path)
			nonce := make([]byte, aead.NonceSize())
			if _, err := io.ReadFull(c.opts.Rand, nonce); err != nil {
				clear(plain)
				return nil, fmt.Errorf("reading nonce: %w", err)
			}
			data[f.key] = aead.Seal(nonce, nonce, plain, nil)
			clear(plain)
		}
		if len(missing) > 0 && len(present) > 0 {
			return nil, fmt.Errorf("%v exist but %v are missing: provide all of them or none", present, missing)
		}
	}
	return data, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPKIFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > maxPKIFileSize {
		clear(b)
		return nil, fmt.Errorf("reading %s: larger than %d bytes", path, maxPKIFileSize)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("reading %s: empty file", path)
	}
	return b, nil
}
