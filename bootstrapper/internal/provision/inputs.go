package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cloister-dev/cloister/bootstrapper/internal/kubeadm"
	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// File names in the state directory.
const (
	// TicketFile holds the join path's validated ticket and the kubelet key
	// (0600, on the encrypted state disk), saved under the node lock.
	TicketFile = "join-ticket.json"
	// InitFile holds the init path's validated inputs, saved under the node
	// lock.
	InitFile = "init-inputs.json"
)

// Ticket is a validated join ticket: what the join path needs after the lock.
// The join client builds it only from a ticket that passed every check.
type Ticket struct {
	DiskKey           keys.Secret  `json:"diskKey"`
	DiskKeyGeneration uint32       `json:"diskKeyGeneration"`
	MeasurementSecret keys.Secret  `json:"measurementSecret"`
	MeasurementSalt   []byte       `json:"measurementSalt"`
	Kubeadm           kubeadm.Join `json:"kubeadm"`
	// KubeletCert is the PEM kubelet client certificate issued for KubeletKey.
	KubeletCert []byte `json:"kubeletCert"`
	// KubeletKey is the PEM (PKCS #8) key generated on this node.
	KubeletKey        keys.Secret `json:"kubeletKey"`
	KubernetesVersion string      `json:"kubernetesVersion"`
	TokenExpiry       time.Time   `json:"tokenExpiry"`
	// MasterSecret and MasterSalt come with control-plane tickets only.
	MasterSecret keys.Secret `json:"masterSecret,omitempty"`
	MasterSalt   []byte      `json:"masterSalt,omitempty"`
}

// Zero overwrites the secrets.
func (t *Ticket) Zero() {
	t.DiskKey.Zero()
	t.MeasurementSecret.Zero()
	t.KubeletKey.Zero()
	t.MasterSecret.Zero()
}

// InitInputs are the validated inputs of the init path.
type InitInputs struct {
	// Secrets are the cluster secrets the CLI generated.
	Secrets *keys.ClusterSecrets `json:"-"`
	// DiskKey is this node's own disk key, derived from Secrets.
	DiskKey           keys.Secret  `json:"diskKey"`
	DiskKeyGeneration uint32       `json:"diskKeyGeneration"`
	Kubeadm           kubeadm.Init `json:"kubeadm"`
	// SecretsJSON is Secrets encoded by keys.MarshalClusterSecrets.
	SecretsJSON keys.Secret `json:"secrets"`
}

// Zero overwrites the secrets.
func (in *InitInputs) Zero() {
	if in.Secrets != nil {
		in.Secrets.Zero()
	}
	in.DiskKey.Zero()
	in.SecretsJSON.Zero()
}

// SaveTicket writes t to the state directory (0600, atomically).
func SaveTicket(stateDir string, t *Ticket) error {
	return save(filepath.Join(stateDir, TicketFile), t)
}

// SaveInit writes in to the state directory (0600, atomically).
func SaveInit(stateDir string, in *InitInputs) error {
	if in.Secrets == nil {
		return errors.New("provision: init inputs without cluster secrets")
	}
	b, err := keys.MarshalClusterSecrets(in.Secrets)
	if err != nil {
		return fmt.Errorf("provision: encoding cluster secrets: %w", err)
	}
	in.SecretsJSON = b
	return save(filepath.Join(stateDir, InitFile), in)
}

func save(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("provision: encoding %s: %w", filepath.Base(path), err)
	}
	defer keys.Secret(b).Zero()
	if err := nodestate.WriteFile(path, b); err != nil {
		return fmt.Errorf("provision: writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// loadTicket reads the ticket saved under the lock and checks it again.
func loadTicket(stateDir string) (*Ticket, error) {
	var t Ticket
	if err := load(filepath.Join(stateDir, TicketFile), &t); err != nil {
		return nil, err
	}
	if len(t.DiskKey) != keys.SecretSize || len(t.MeasurementSecret) != keys.SecretSize || len(t.MeasurementSalt) != keys.SecretSize {
		return nil, fmt.Errorf("provision: %s: secrets of the wrong size", TicketFile)
	}
	if err := t.Kubeadm.Validate(); err != nil {
		return nil, fmt.Errorf("provision: %s: %w", TicketFile, err)
	}
	return &t, nil
}

// loadInit reads the init inputs saved under the lock and checks them again.
func loadInit(stateDir string) (*InitInputs, error) {
	var in InitInputs
	if err := load(filepath.Join(stateDir, InitFile), &in); err != nil {
		return nil, err
	}
	s, err := keys.ParseClusterSecrets(in.SecretsJSON)
	if err != nil {
		return nil, fmt.Errorf("provision: %s: %w", InitFile, err)
	}
	in.Secrets = s
	if len(in.DiskKey) != keys.SecretSize {
		return nil, fmt.Errorf("provision: %s: disk key of the wrong size", InitFile)
	}
	if err := in.Kubeadm.Validate(); err != nil {
		return nil, fmt.Errorf("provision: %s: %w", InitFile, err)
	}
	return &in, nil
}

func load(path string, v any) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 || fi.Size() > 1<<20 {
		return fmt.Errorf("provision: %s: want a regular 0600 file under 1 MiB, got %v, %d bytes", path, fi.Mode(), fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	defer keys.Secret(b).Zero()
	// strictyaml.DecodeJSON, not encoding/json alone, which would take
	// "DiskKey" for diskKey and keep the last of two spellings. Only
	// structural refusals (they name keys, never values) are shown: any
	// other decoding error could quote secret bytes.
	if err := strictyaml.DecodeJSON(b, v); err != nil {
		var fe *strictyaml.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("provision: decoding %s: %w", filepath.Base(path), fe)
		}
		return fmt.Errorf("provision: decoding %s: malformed", filepath.Base(path))
	}
	return nil
}
