package kubeadm

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"

	"sigs.k8s.io/yaml"
)

// APIVersion is the kubeadm configuration API the documents use.
const APIVersion = "kubeadm.k8s.io/v1beta4"

var (
	tokenRE   = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	caHashRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	certKeyRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	versionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+$`)
	dns1123RE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// Join are the inputs of a JoinConfiguration.
type Join struct {
	// NodeName is the node's name (DNS-1123 subdomain).
	NodeName string
	// APIServerEndpoint is host:port of the API server.
	APIServerEndpoint string
	// Token is the per-node bootstrap token, "[a-z0-9]{6}.[a-z0-9]{16}".
	Token string
	// CACertHashes pin the cluster CA, each "sha256:<64 hex>"; at least one.
	CACertHashes []string
	// CertificateKey is set for control-plane joins: it decrypts the
	// certificates kubeadm init uploaded (64 hex characters).
	CertificateKey string
}

// Init are the inputs of an InitConfiguration and ClusterConfiguration.
type Init struct {
	// NodeName is the node's name (DNS-1123 subdomain).
	NodeName string
	// ClusterName names the cluster in kubeconfigs; empty means kubeadm's
	// default.
	ClusterName string
	// KubernetesVersion is "vX.Y.Z".
	KubernetesVersion string
	// CertificateKey encrypts the control-plane certificates that
	// `kubeadm init --upload-certs` stores in the cluster (64 hex characters).
	CertificateKey string
	// ControlPlaneEndpoint is a stable host:port for all control planes;
	// empty means this node's address.
	ControlPlaneEndpoint string
}

// The documents, as kubeadm v1beta4 spells them. Only what the bootstrapper
// sets is here; kubeadm defaults the rest.
type (
	joinConfiguration struct {
		APIVersion       string            `json:"apiVersion"`
		Kind             string            `json:"kind"`
		Discovery        discovery         `json:"discovery"`
		NodeRegistration nodeRegistration  `json:"nodeRegistration"`
		ControlPlane     *joinControlPlane `json:"controlPlane,omitempty"`
		Timeouts         timeouts          `json:"timeouts"`
	}
	timeouts struct {
		ControlPlaneComponentHealthCheck string `json:"controlPlaneComponentHealthCheck,omitempty"`
		KubeletHealthCheck               string `json:"kubeletHealthCheck"`
		KubernetesAPICall                string `json:"kubernetesAPICall"`
		TLSBootstrap                     string `json:"tlsBootstrap,omitempty"`
	}
	discovery struct {
		BootstrapToken    bootstrapTokenDiscovery `json:"bootstrapToken"`
		TLSBootstrapToken string                  `json:"tlsBootstrapToken"`
	}
	bootstrapTokenDiscovery struct {
		Token             string   `json:"token"`
		APIServerEndpoint string   `json:"apiServerEndpoint"`
		CACertHashes      []string `json:"caCertHashes"`
	}
	nodeRegistration struct {
		Name                  string   `json:"name"`
		IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	}
	joinControlPlane struct {
		CertificateKey string `json:"certificateKey"`
	}
	initConfiguration struct {
		APIVersion       string           `json:"apiVersion"`
		Kind             string           `json:"kind"`
		BootstrapTokens  []bootstrapToken `json:"bootstrapTokens"`
		NodeRegistration nodeRegistration `json:"nodeRegistration"`
		CertificateKey   string           `json:"certificateKey"`
		SkipPhases       []string         `json:"skipPhases"`
		Timeouts         timeouts         `json:"timeouts"`
	}
	bootstrapToken struct {
		Description string   `json:"description"`
		TTL         string   `json:"ttl"`
		Usages      []string `json:"usages"`
		Groups      []string `json:"groups"`
	}
	clusterConfiguration struct {
		APIVersion           string `json:"apiVersion"`
		Kind                 string `json:"kind"`
		ClusterName          string `json:"clusterName,omitempty"`
		KubernetesVersion    string `json:"kubernetesVersion"`
		ControlPlaneEndpoint string `json:"controlPlaneEndpoint,omitempty"`
	}
)

// Validate checks every input; errors name the field.
func (j Join) Validate() error {
	var errs []error
	if err := CheckNodeName(j.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("node name: %w", err))
	}
	if err := CheckEndpoint(j.APIServerEndpoint); err != nil {
		errs = append(errs, fmt.Errorf("API server endpoint: %w", err))
	}
	if !tokenRE.MatchString(j.Token) {
		errs = append(errs, errors.New("bootstrap token: want [a-z0-9]{6}.[a-z0-9]{16}"))
	}
	if len(j.CACertHashes) == 0 {
		errs = append(errs, errors.New("CA cert hashes: want at least one"))
	}
	for i, h := range j.CACertHashes {
		if !caHashRE.MatchString(h) {
			errs = append(errs, fmt.Errorf("CA cert hashes[%d]: want sha256:<64 lowercase hex>, got %q", i, short(h)))
		}
	}
	if j.CertificateKey != "" && !certKeyRE.MatchString(j.CertificateKey) {
		errs = append(errs, errors.New("certificate key: want 64 lowercase hex characters"))
	}
	return errors.Join(errs...)
}

// Validate checks every input; errors name the field.
func (i Init) Validate() error {
	var errs []error
	if err := CheckNodeName(i.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("node name: %w", err))
	}
	if i.ClusterName != "" {
		if err := CheckNodeName(i.ClusterName); err != nil {
			errs = append(errs, fmt.Errorf("cluster name: %w", err))
		}
	}
	if err := CheckVersion(i.KubernetesVersion); err != nil {
		errs = append(errs, fmt.Errorf("kubernetes version: %w", err))
	}
	if !certKeyRE.MatchString(i.CertificateKey) {
		errs = append(errs, errors.New("certificate key: want 64 lowercase hex characters"))
	}
	if i.ControlPlaneEndpoint != "" {
		if err := CheckEndpoint(i.ControlPlaneEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("control plane endpoint: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SkippedInitPhases are the kubeadm init phases a Cloister node leaves out:
// the kube-proxy and CoreDNS add-ons would make every node pull images from
// a registry, and nodes register and become Ready without them. A cluster
// that needs Services installs its own proxy and DNS from images it trusts.
var SkippedInitPhases = []string{"addon/kube-proxy", "addon/coredns"}

// slowStart bounds kubeadm's waits for kubelet, the control plane and its
// retries of API calls. A failed kubeadm is terminal for a node (it is never
// run twice), so waiting longer than kubeadm's defaults (4 minutes, 1 minute
// for API calls) on a slow machine beats failing: a fresh API server on a
// small confidential VM can take longer than that to answer its first writes.
const slowStart = "10m0s"

// PreflightKubeletConf is kubeadm join's preflight check that refuses an
// existing /etc/kubernetes/kubelet.conf.
const PreflightKubeletConf = "FileAvailable--etc-kubernetes-kubelet.conf"

// KubeletKubeconfig returns the kubelet's kubeconfig for a joining node:
// the API server at endpoint, verified with the cluster CA in caFile, and
// the client certificate and key in certFile (one PEM file, as kubelet's
// certificate store keeps them). kubelet finds it valid at its first start
// and does not run a TLS bootstrap of its own.
func KubeletKubeconfig(nodeName, endpoint, caFile, certFile string) ([]byte, error) {
	var errs []error
	if err := CheckNodeName(nodeName); err != nil {
		errs = append(errs, fmt.Errorf("node name: %w", err))
	}
	if err := CheckEndpoint(endpoint); err != nil {
		errs = append(errs, fmt.Errorf("API server endpoint: %w", err))
	}
	for _, f := range []struct{ name, path string }{{"CA file", caFile}, {"certificate file", certFile}} {
		if !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("%s: want an absolute path, got %q", f.name, short(f.path)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kubeadm: kubelet kubeconfig: %w", err)
	}
	user := "system:node:" + nodeName
	doc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []map[string]any{{
			"name":    "default-cluster",
			"cluster": map[string]string{"server": "https://" + endpoint, "certificate-authority": caFile},
		}},
		"users": []map[string]any{{
			"name": user,
			"user": map[string]string{"client-certificate": certFile, "client-key": certFile},
		}},
		"contexts": []map[string]any{{
			"name":    "default-context",
			"context": map[string]string{"cluster": "default-cluster", "user": user, "namespace": "default"},
		}},
		"current-context": "default-context",
	}
	return yaml.Marshal(doc)
}

// JoinConfiguration returns the JoinConfiguration document for j.
func JoinConfiguration(j Join) ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, fmt.Errorf("kubeadm: join configuration: %w", err)
	}
	doc := joinConfiguration{
		APIVersion: APIVersion,
		Kind:       "JoinConfiguration",
		Discovery: discovery{
			BootstrapToken: bootstrapTokenDiscovery{
				Token:             j.Token,
				APIServerEndpoint: j.APIServerEndpoint,
				CACertHashes:      j.CACertHashes,
			},
			TLSBootstrapToken: j.Token,
		},
		// The bootstrapper puts kubelet.conf in place before the join, with
		// the client certificate the join service issued after attestation
		// (KubeletKubeconfig); kubeadm's preflight would refuse the file.
		NodeRegistration: nodeRegistration{Name: j.NodeName, IgnorePreflightErrors: []string{PreflightKubeletConf}},
		Timeouts:         timeouts{KubeletHealthCheck: slowStart, KubernetesAPICall: slowStart, TLSBootstrap: slowStart},
	}
	if j.CertificateKey != "" {
		doc.ControlPlane = &joinControlPlane{CertificateKey: j.CertificateKey}
	}
	return yaml.Marshal(doc)
}

// InitConfiguration returns the InitConfiguration and ClusterConfiguration
// documents for i, in one multi-document file.
func InitConfiguration(i Init) ([]byte, error) {
	if err := i.Validate(); err != nil {
		return nil, fmt.Errorf("kubeadm: init configuration: %w", err)
	}
	initDoc, err := yaml.Marshal(initConfiguration{
		APIVersion: APIVersion,
		Kind:       "InitConfiguration",
		// kubeadm creates a default bootstrap token valid for 24 hours unless
		// told otherwise. Nodes get per-node tokens from the join service, so
		// kubeadm's own token lives only as long as init needs it.
		BootstrapTokens: []bootstrapToken{{
			Description: "kubeadm init (Cloister nodes get per-node tokens from the join service)",
			TTL:         "10m0s",
			Usages:      []string{"signing", "authentication"},
			Groups:      []string{"system:bootstrappers:kubeadm:default-node-token"},
		}},
		NodeRegistration: nodeRegistration{Name: i.NodeName},
		CertificateKey:   i.CertificateKey,
		SkipPhases:       SkippedInitPhases,
		Timeouts:         timeouts{ControlPlaneComponentHealthCheck: slowStart, KubeletHealthCheck: slowStart, KubernetesAPICall: slowStart},
	})
	if err != nil {
		return nil, err
	}
	clusterDoc, err := yaml.Marshal(clusterConfiguration{
		APIVersion:           APIVersion,
		Kind:                 "ClusterConfiguration",
		ClusterName:          i.ClusterName,
		KubernetesVersion:    i.KubernetesVersion,
		ControlPlaneEndpoint: i.ControlPlaneEndpoint,
	})
	if err != nil {
		return nil, err
	}
	return append(append(initDoc, "---\n"...), clusterDoc...), nil
}

// CheckNodeName accepts a DNS-1123 subdomain: at most 253 characters,
// lowercase alphanumeric labels separated by dots, '-' only inside a label,
// labels at most 63 characters.
func CheckNodeName(s string) error {
	if s == "" || len(s) > 253 || !dns1123RE.MatchString(s) {
		return fmt.Errorf("want a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.'), got %q", short(s))
	}
	for start, i := 0, 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i-start > 63 {
				return fmt.Errorf("want labels of at most 63 characters, got %d", i-start)
			}
			start = i + 1
		}
	}
	return nil
}

// CheckEndpoint accepts host:port with a non-empty host and a port in 1–65535.
func CheckEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", short(ep))
	}
	if host == "" {
		return fmt.Errorf("want a host, got %q", short(ep))
	}
	if net.ParseIP(host) == nil {
		if err := CheckNodeName(host); err != nil {
			return fmt.Errorf("want an IP address or DNS name as host, got %q", short(host))
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("want a port in 1-65535, got %q", short(port))
	}
	return nil
}

// CheckVersion accepts a Kubernetes release version "vX.Y.Z".
func CheckVersion(v string) error {
	if !versionRE.MatchString(v) {
		return fmt.Errorf("want vX.Y.Z, got %q", short(v))
	}
	return nil
}

// short bounds untrusted text quoted in errors.
func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// CheckToken accepts a bootstrap token "[a-z0-9]{6}.[a-z0-9]{16}".
func CheckToken(t string) error {
	if !tokenRE.MatchString(t) {
		return fmt.Errorf("want [a-z0-9]{6}.[a-z0-9]{16}, got %d characters", len(t))
	}
	return nil
}

// CheckCACertHash accepts a CA pin "sha256:<64 lowercase hex>".
func CheckCACertHash(h string) error {
	if !caHashRE.MatchString(h) {
		return fmt.Errorf("want sha256:<64 lowercase hex>, got %q", short(h))
	}
	return nil
}
