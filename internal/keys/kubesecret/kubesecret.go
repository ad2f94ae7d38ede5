// Package kubesecret provides the cluster secrets from a Kubernetes Secret,
// for join services that run as pods instead of reading a file on the
// control plane's encrypted state disk. The Secret's data key "secrets"
// holds the same JSON document as the file (keys.MarshalClusterSecrets).
//
// Trust: the API server and etcd see the secret; use this only where etcd is
// itself on encrypted, attested control-plane storage.
package kubesecret

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cloister-dev/cloister/internal/keys"
)

// DataKey is the key in the Secret's data that holds the encoded secrets.
const DataKey = "secrets"

// Provider reads the cluster secrets from Namespace/Name on every call, so a
// rotated Secret takes effect without a restart.
type Provider struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
}

var _ keys.KeyProvider = (*Provider)(nil)

// ClusterSecrets implements keys.KeyProvider.
func (p *Provider) ClusterSecrets(ctx context.Context) (*keys.ClusterSecrets, error) {
	s, err := p.Client.CoreV1().Secrets(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading cluster secrets from secret %s/%s: %w", p.Namespace, p.Name, err)
	}
	b, ok := s.Data[DataKey]
	if !ok {
		return nil, fmt.Errorf("cluster secrets: secret %s/%s has no data key %q", p.Namespace, p.Name, DataKey)
	}
	cs, err := keys.ParseClusterSecrets(b)
	if err != nil {
		return nil, fmt.Errorf("%w (secret %s/%s)", err, p.Namespace, p.Name)
	}
	return cs, nil
}
