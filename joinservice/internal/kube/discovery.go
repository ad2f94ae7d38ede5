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
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cloister-dev/cloister/internal/strictyaml"
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

// clusterInfoShape is what parseClusterInfo checks of the document's shape
// before kubeadm's reader interprets it: every key once (any other field is
// kubeadm's business) and exactly one entry in the clusters list.
type clusterInfoShape map[string]any

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
	server, caPEM, err = parseClusterInfo([]byte(raw))
	if err != nil {
		return "", nil, true, fmt.Errorf("kube: configmap %s: %s: %w", where, clusterInfoKey, err)
	}
	return server, caPEM, true, nil
}

// parseClusterInfo reads the server and CA of cluster-info's kubeconfig.
//
// Not strictyaml into our own struct, on purpose: the document is kubeadm's
// (kubeadm init writes it, kubeadm join on the node reads it), and it may
// carry fields we do not model (contexts, preferences, extensions, whatever
// a later kubeadm adds), so refusing unknown fields would break discovery on
// a kubeadm upgrade. What matters is that the join service and kubeadm join
// read the same server and CA, since the pins handed to nodes are checked
// by kubeadm against its own reading. So the document is read with
// clientcmd.Load, as kubeadm join reads it (case-sensitive field names:
// "Server" is not server), after strictyaml's key checks have refused what
// makes readers disagree or pick silently: a key given twice in a mapping
// (YAML parsers keep the last), anchors and aliases, and a clusters list
// with other than one entry (clientcmd keys clusters by name, so two
// entries of one name would collapse into the last).
func parseClusterInfo(doc []byte) (server string, caPEM []byte, err error) {
	var shape clusterInfoShape
	if err := strictyaml.Decode(doc, &shape); err != nil {
		return "", nil, fmt.Errorf("parsing: %w", err)
	}
	if list, _ := shape["clusters"].([]any); len(list) != 1 {
		return "", nil, fmt.Errorf("clusters: want 1 cluster, got %d", len(list))
	}
	cfg, err := clientcmd.Load(doc)
	if err != nil {
		return "", nil, fmt.Errorf("parsing: %w", err)
	}
	if n := len(cfg.Clusters); n != 1 {
		return "", nil, fmt.Errorf("clusters: want 1 cluster, got %d", n)
	}
	for _, cl := range cfg.Clusters {
		server, caPEM = cl.Server, cl.CertificateAuthorityData
	}
	return server, caPEM, nil
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
