package kube

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Where kubeadm publishes discovery data, and where every namespace gets
// the cluster CA.
const (
	clusterInfoNamespace = metav1.NamespacePublic
	clusterInfoName      = "cluster-info"
	clusterInfoKey       = "kubeconfig"
	rootCANamespace      = metav1.NamespaceSystem
	rootCAName           = "kube-root-ca.crt"
	rootCAKey            = "ca.crt"
)

// clusterInfo is the part of cluster-info's kubeconfig that discovery uses.
type clusterInfo struct {
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server string `json:"server"`
			// CAData is base64 in YAML; encoding/json decodes it.
			CAData []byte `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
}

// readClusterInfo returns the server URL and CA bundle in kube-public's
// cluster-info, or found=false if the ConfigMap does not exist.
func (c *Cluster) readClusterInfo(ctx context.Context) (server string, caPEM []byte, found bool, err error) {
	cm, err := c.client.CoreV1().ConfigMaps(clusterInfoNamespace).Get(ctx, clusterInfoName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil, false, nil
	}
	where := clusterInfoNamespace + "/" + clusterInfoName
	if err != nil {
		return "", nil, false, fmt.Errorf("kube: getting configmap %s: %w", where, err)
	}
	raw, ok := cm.Data[clusterInfoKey]
	if !ok {
		return "", nil, true, fmt.Errorf("kube: configmap %s has no key %q", where, clusterInfoKey)
	}
	var ci clusterInfo
	if err := yaml.Unmarshal([]byte(raw), &ci); err != nil {
		return "", nil, true, fmt.Errorf("kube: configmap %s: parsing %s: %w", where, clusterInfoKey, err)
	}
	if n := len(ci.Clusters); n != 1 {
		return "", nil, true, fmt.Errorf("kube: configmap %s: %s: want 1 cluster, got %d", where, clusterInfoKey, n)
	}
	cl := ci.Clusters[0].Cluster
	return cl.Server, cl.CAData, true, nil
}

// CACertHashes returns kubeadm's discovery pins of the cluster CA,
// "sha256:<hex>" over each CA certificate's SubjectPublicKeyInfo, in the
// order of the bundle. The CA comes from kube-public/cluster-info (its
// kubeconfig's certificate-authority-data) or, if that ConfigMap does not
// exist, from kube-system/kube-root-ca.crt.
func (c *Cluster) CACertHashes(ctx context.Context) ([]string, error) {
	_, caPEM, found, err := c.readClusterInfo(ctx)
	if err != nil {
		return nil, err
	}
	where := clusterInfoNamespace + "/" + clusterInfoName + " " + clusterInfoKey + " certificate-authority-data"
	if !found {
		where = rootCANamespace + "/" + rootCAName + " " + rootCAKey
		cm, err := c.client.CoreV1().ConfigMaps(rootCANamespace).Get(ctx, rootCAName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("kube: no cluster CA: configmap %s/%s is missing and getting configmap %s/%s: %w",
				clusterInfoNamespace, clusterInfoName, rootCANamespace, rootCAName, err)
		}
		caPEM = []byte(cm.Data[rootCAKey])
	}
	if len(caPEM) == 0 {
		return nil, fmt.Errorf("kube: no cluster CA: %s is empty or missing", where)
	}
	pins, err := caPins(caPEM)
	if err != nil {
		return nil, fmt.Errorf("kube: cluster CA in %s: %w", where, err)
	}
	return pins, nil
}

// caPins parses a PEM bundle of certificates and returns one pin per
// distinct certificate key.
func caPins(caPEM []byte) ([]string, error) {
	var pins []string
	seen := map[string]bool{}
	rest := caPEM
	for i := 0; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d: want CERTIFICATE, got %q", i, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		pin := caPin(cert)
		if !seen[pin] {
			seen[pin] = true
			pins = append(pins, pin)
		}
	}
	if len(pins) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return pins, nil
}

// caPin is kubeadm's discovery-token-ca-cert-hash of cert:
// "sha256:" + hex(SHA-256(SubjectPublicKeyInfo DER)).
func caPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// APIServerEndpoint returns the API server as host:port, from the server URL
// in kube-public/cluster-info (port 443 if the URL has none).
func (c *Cluster) APIServerEndpoint(ctx context.Context) (string, error) {
	server, _, found, err := c.readClusterInfo(ctx)
	if err != nil {
		return "", err
	}
	where := clusterInfoNamespace + "/" + clusterInfoName
	if !found {
		return "", fmt.Errorf("kube: no API server endpoint: configmap %s is missing", where)
	}
	if server == "" {
		return "", fmt.Errorf("kube: no API server endpoint: configmap %s %s has no server", where, clusterInfoKey)
	}
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("kube: configmap %s: server: %w", where, err)
	}
	if u.Scheme != "https" || u.Hostname() == "" {
		return "", fmt.Errorf("kube: configmap %s: server: want https://host[:port], got %q", where, server)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}
