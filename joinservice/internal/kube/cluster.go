package kube

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Defaults of the zero Options.
const (
	DefaultTokenTTL        = 15 * time.Minute
	DefaultCertsTokenTTL   = 2 * time.Hour
	DefaultCSRTimeout      = 2 * time.Minute
	DefaultCSRPollInterval = 500 * time.Millisecond

	// maxTokenTTL bounds per-node tokens: they are meant to live for one join.
	maxTokenTTL = 24 * time.Hour
	// minCertLifetime is the API server's minimum for spec.expirationSeconds.
	minCertLifetime = 10 * time.Minute
)

// Options are the optional settings of a Cluster. The zero value is safe.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of token and nonce randomness; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// TokenTTL is the lifetime of a per-node bootstrap token; zero means
	// DefaultTokenTTL. At most 24h.
	TokenTTL time.Duration
	// CertsTokenTTL is how long the kubeadm-certs Secret lives: it is owned
	// by a bootstrap token of this lifetime and garbage-collected with it.
	// Zero means DefaultCertsTokenTTL (kubeadm's value).
	CertsTokenTTL time.Duration
	// CSRTimeout bounds SignKubeletCSR from creating the CSR to receiving
	// the certificate; zero means DefaultCSRTimeout.
	CSRTimeout time.Duration
	// CSRPollInterval is how often SignKubeletCSR looks for the issued
	// certificate; zero means DefaultCSRPollInterval.
	CSRPollInterval time.Duration
	// KubeletCertLifetime is requested as the CSR's expirationSeconds; zero
	// leaves it to the signer (its --cluster-signing-duration). At least 10m.
	KubeletCertLifetime time.Duration
	// ExternalEtcd, when set, names the external etcd client files that
	// UploadControlPlaneCerts uploads instead of the stacked etcd CA.
	ExternalEtcd *ExternalEtcd
}

// ExternalEtcd are the paths of an external etcd's CA and client
// certificate, as in kubeadm's ClusterConfiguration etcd.external.
type ExternalEtcd struct {
	CAFile, CertFile, KeyFile string
}

// Cluster is the join service's handle on the Kubernetes API.
type Cluster struct {
	client kubernetes.Interface
	opts   Options

	// mu guards issued: the bootstrap tokens this Cluster created and has
	// not deleted yet, by Secret name. The join service may delete Secrets
	// but not read them, so it deletes only what it remembers creating.
	mu     sync.Mutex
	issued map[string]issuedToken
}

// New returns a Cluster that talks to the API server through client.
func New(client kubernetes.Interface, opts Options) (*Cluster, error) {
	if client == nil {
		return nil, errors.New("kube: no Kubernetes client: pass a kubernetes.Interface")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TokenTTL", &opts.TokenTTL, DefaultTokenTTL},
		{"CertsTokenTTL", &opts.CertsTokenTTL, DefaultCertsTokenTTL},
		{"CSRTimeout", &opts.CSRTimeout, DefaultCSRTimeout},
		{"CSRPollInterval", &opts.CSRPollInterval, DefaultCSRPollInterval},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("kube: Options.%s is negative (%v): use a positive duration, or zero for %v", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if opts.TokenTTL > maxTokenTTL {
		return nil, fmt.Errorf("kube: Options.TokenTTL %v is too long for a per-node token: use at most %v", opts.TokenTTL, maxTokenTTL)
	}
	if opts.KubeletCertLifetime > time.Duration(math.MaxInt32)*time.Second {
		return nil, fmt.Errorf("kube: Options.KubeletCertLifetime %v does not fit the CSR's expirationSeconds: use at most %v", opts.KubeletCertLifetime, time.Duration(math.MaxInt32)*time.Second)
	}
	if opts.KubeletCertLifetime != 0 && opts.KubeletCertLifetime < minCertLifetime {
		return nil, fmt.Errorf("kube: Options.KubeletCertLifetime %v is below the API server's minimum: use at least %v, or zero for the signer's default", opts.KubeletCertLifetime, minCertLifetime)
	}
	if e := opts.ExternalEtcd; e != nil && (e.CAFile == "" || e.CertFile == "" || e.KeyFile == "") {
		return nil, errors.New("kube: Options.ExternalEtcd is incomplete: set CAFile, CertFile and KeyFile, or leave ExternalEtcd nil for stacked etcd")
	}
	return &Cluster{client: client, opts: opts, issued: map[string]issuedToken{}}, nil
}
