// Package config reads the join service's configuration file: strict YAML
// (internal/strictyaml: unknown fields, case variants of field names and
// duplicate keys are errors, so "AllowControlPlaneJoins: true" or a second
// "allowControlPlaneJoins" cannot override the first), defaults for
// everything that has a sensible one, and every problem reported with its
// field name.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// Config is the validated configuration.
type Config struct {
	// Listen is the attested gRPC address.
	Listen string `json:"listen"`
	// MetricsListen serves /metrics, /healthz (liveness) and /readyz
	// (readiness) in plain HTTP, no secrets.
	MetricsListen string `json:"metricsListen"`
	// StatusListen is the plain gRPC port for standard tools: status.v1,
	// grpc.health.v1 and reflection, no secrets.
	StatusListen string `json:"statusListen"`
	// Policy is the reference-value document, watched for changes.
	Policy string `json:"policy"`
	// PolicyReloadInterval is how often the policy file is reread.
	PolicyReloadInterval Duration `json:"policyReloadInterval"`
	// ClusterSecrets is the 0600 file with the master and measurement secrets.
	ClusterSecrets string `json:"clusterSecrets"`
	// ClusterSecretsSecret, "namespace/name", reads them from a Kubernetes
	// Secret instead; it excludes ClusterSecrets.
	ClusterSecretsSecret string `json:"clusterSecretsSecret"`
	// Kubeconfig reaches the API server; empty means in-cluster. Its user
	// must hold exactly the permissions of package joinservice/rbac (the
	// image: /etc/kubernetes/cloister-joinservice.conf, made at init); the
	// service refuses to start with more, such as admin.conf.
	Kubeconfig string `json:"kubeconfig"`
	// APIServerEndpoint is what joining nodes dial (host:port).
	APIServerEndpoint string `json:"apiServerEndpoint"`
	// KubernetesVersion is told to joining nodes.
	KubernetesVersion string `json:"kubernetesVersion"`
	// BootstrapTokenTTL bounds each per-node token's life.
	BootstrapTokenTTL Duration `json:"bootstrapTokenTTL"`
	// RequestTimeout is every call's deadline.
	RequestTimeout Duration `json:"requestTimeout"`
	// HandshakeTimeout bounds the attested TLS handshake.
	HandshakeTimeout Duration `json:"handshakeTimeout"`
	// RateLimit limits each peer IP.
	RateLimit RateLimit `json:"rateLimit"`
	// Trust names the trust anchors of the attestation variants.
	Trust Trust `json:"trust"`
	// AllowControlPlaneJoins releases control-plane tickets (with the master
	// secret). Off by default.
	AllowControlPlaneJoins bool `json:"allowControlPlaneJoins"`
	// CertificateKeyFile holds kubeadm's certificate key (64 hex characters,
	// mode 0600), which the first control plane's bootstrapper wrote at init.
	// Required with AllowControlPlaneJoins.
	CertificateKeyFile string `json:"certificateKeyFile"`
	// AllowVariantsWithoutLatch accepts variants without a cluster-ID latch.
	AllowVariantsWithoutLatch bool `json:"allowVariantsWithoutLatch"`
	// DiskKeyGeneration is the generation of disk keys handed out (from 1).
	DiskKeyGeneration uint32 `json:"diskKeyGeneration"`
}

// RateLimit is a token bucket per peer IP.
type RateLimit struct {
	ConnectionsPerSecond float64 `json:"connectionsPerSecond"`
	ConnectionBurst      int     `json:"connectionBurst"`
	CallsPerSecond       float64 `json:"callsPerSecond"`
	CallBurst            int     `json:"callBurst"`
}

// Trust lists the trust anchors (PEM files). A variant is usable only if the
// policy has a section for it and its anchors are set (SEV-SNP and TDX fall
// back to the AMD and Intel roots built into their libraries).
type Trust struct {
	// TPMEKRoots are CA certificates for TPM endorsement-key certificates.
	TPMEKRoots []string `json:"tpmEKRoots"`
	// TPMAKRoots are CA certificates for TPM attestation-key certificates.
	TPMAKRoots []string `json:"tpmAKRoots"`
	// SNPCertCache caches VCEK certificates; SNPOffline never fetches.
	SNPCertCache string `json:"snpCertCache"`
	SNPOffline   bool   `json:"snpOffline"`
	// TDXRoots replaces Intel's SGX root (tests, private PKI).
	TDXRoots []string `json:"tdxRoots"`
}

// Duration is a time.Duration written as "15m" in the file. A value that
// does not parse is kept and reported by Validate with its field name.
type Duration struct {
	time.Duration
	invalid string
}

// D makes a Duration.
func D(d time.Duration) Duration { return Duration{Duration: d} }

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		*d = Duration{invalid: string(b)}
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		*d = Duration{invalid: s}
		return nil
	}
	*d = Duration{Duration: v}
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// DefaultClusterSecrets is the secrets file used when the file names no
// source of cluster secrets.
const DefaultClusterSecrets = "/var/lib/cloister/cluster-secrets.json"

// Default is the configuration used where the file says nothing.
func Default() Config {
	return Config{
		Listen:               ":9000",
		MetricsListen:        ":9091",
		StatusListen:         ":9092",
		Policy:               "/etc/cloister/policy.yaml",
		PolicyReloadInterval: D(10 * time.Second),
		KubernetesVersion:    "v1.37.2",
		BootstrapTokenTTL:    D(15 * time.Minute),
		RequestTimeout:       D(30 * time.Second),
		HandshakeTimeout:     D(30 * time.Second),
		DiskKeyGeneration:    keys.FirstGeneration,
		RateLimit:            RateLimit{ConnectionsPerSecond: 5, ConnectionBurst: 20, CallsPerSecond: 5, CallBurst: 20},
	}
}

// maxFile bounds the configuration file.
const maxFile = 1 << 20

// Load reads path over the defaults. An empty path means defaults only.
func Load(path string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("reading config: %w", err)
		}
		if len(b) > maxFile {
			return Config{}, fmt.Errorf("config %s: %d bytes, limit %d", path, len(b), maxFile)
		}
		if err := strictyaml.Decode(b, &c); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if c.ClusterSecrets == "" && c.ClusterSecretsSecret == "" {
		c.ClusterSecrets = DefaultClusterSecrets
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	for field, addr := range map[string]string{"listen": c.Listen, "metricsListen": c.MetricsListen, "statusListen": c.StatusListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "want host:port, got %q", addr)
		}
	}
	if c.APIServerEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.APIServerEndpoint); err != nil {
			bad("apiServerEndpoint", "want host:port, got %q", c.APIServerEndpoint)
		}
	}
	if c.Policy == "" {
		bad("policy", "missing")
	}
	switch {
	case c.ClusterSecrets != "" && c.ClusterSecretsSecret != "":
		bad("clusterSecretsSecret", "set either clusterSecrets (a file) or clusterSecretsSecret, not both")
	case c.ClusterSecrets == "" && c.ClusterSecretsSecret == "":
		bad("clusterSecrets", "missing: set the secrets file, or clusterSecretsSecret")
	case c.ClusterSecretsSecret != "":
		if ns, name, ok := strings.Cut(c.ClusterSecretsSecret, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			bad("clusterSecretsSecret", "want namespace/name, got %q", c.ClusterSecretsSecret)
		}
	}
	for field, d := range map[string]Duration{
		"policyReloadInterval": c.PolicyReloadInterval, "bootstrapTokenTTL": c.BootstrapTokenTTL,
		"requestTimeout": c.RequestTimeout, "handshakeTimeout": c.HandshakeTimeout,
	} {
		switch {
		case d.invalid != "":
			bad(field, "want a duration like \"30s\", got %q", d.invalid)
		case d.Duration <= 0:
			bad(field, "must be positive, got %v", d.Duration)
		}
	}
	if ttl := c.BootstrapTokenTTL.Duration; ttl > 24*time.Hour {
		bad("bootstrapTokenTTL", "at most 24h for a per-node token, got %v", ttl)
	}
	if c.AllowControlPlaneJoins && c.CertificateKeyFile == "" {
		bad("certificateKeyFile", "required with allowControlPlaneJoins: control planes join with kubeadm's certificate key")
	}
	if c.DiskKeyGeneration < keys.FirstGeneration {
		bad("diskKeyGeneration", "generations start at %d, got %d", keys.FirstGeneration, c.DiskKeyGeneration)
	}
	if c.RateLimit.ConnectionsPerSecond <= 0 || c.RateLimit.CallsPerSecond <= 0 {
		bad("rateLimit", "connectionsPerSecond and callsPerSecond must be positive")
	}
	if c.RateLimit.ConnectionBurst < 1 || c.RateLimit.CallBurst < 1 {
		bad("rateLimit", "connectionBurst and callBurst must be at least 1")
	}
	return errors.Join(errs...)
}
