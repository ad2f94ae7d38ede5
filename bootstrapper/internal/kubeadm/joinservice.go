package kubeadm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/cloister-dev/cloister/joinservice/rbac"
)

// JoinServiceCertValidity is the lifetime of the join service's client
// certificate (kubeadm's default for `kubeadm kubeconfig user`). It is not
// renewed by `kubeadm certs renew`: docs/joinservice.md says how to renew it.
const JoinServiceCertValidity = 365 * 24 * time.Hour

// JoinServiceUserConfiguration returns the ClusterConfiguration document
// for `kubeadm kubeconfig user`. It has no controlPlaneEndpoint even when the
// cluster has one, so kubeadm writes this node's own API endpoint (its
// advertise address) into the kubeconfig: the join service talks to the API
// server on its own control plane, not through the cluster's external
// endpoint. certificatesDir empty means kubeadm's /etc/kubernetes/pki.
func JoinServiceUserConfiguration(i Init, certificatesDir string) ([]byte, error) {
	if err := i.Validate(); err != nil {
		return nil, fmt.Errorf("kubeadm: join service user configuration: %w", err)
	}
	return yaml.Marshal(struct {
		clusterConfiguration
		CertificatesDir string `json:"certificatesDir,omitempty"`
	}{
		clusterConfiguration: clusterConfiguration{
			APIVersion:        APIVersion,
			Kind:              "ClusterConfiguration",
			ClusterName:       i.ClusterName,
			KubernetesVersion: i.KubernetesVersion,
		},
		CertificatesDir: certificatesDir,
	})
}

// KubeconfigUser runs `kubeadm kubeconfig user --config configPath
// --client-name clientName --validity-period validity` and returns the
// kubeconfig it prints: a client certificate and key signed by the cluster
// CA, for clientName in no group. The kubeconfig holds a private key, so it
// is returned, never written to Output; kubeadm's stderr goes to Output.
func (r Runner) KubeconfigUser(ctx context.Context, configPath, clientName string, validity time.Duration) ([]byte, error) {
	var stdout bytes.Buffer
	err := r.runTo(ctx, &stdout, "kubeconfig", "user", "--config", configPath, "--client-name", clientName, "--validity-period", validity.String())
	if err != nil {
		clear(stdout.Bytes())
		return nil, err
	}
	return stdout.Bytes(), nil
}

// CheckJoinServiceKubeconfig parses a kubeconfig made by KubeconfigUser and
// checks that it is what the join service must run with: one cluster whose
// server is https, one user whose client certificate names exactly
// rbac.UserName and no group (system:masters would bypass RBAC), embedded
// key. It returns the server URL.
func CheckJoinServiceKubeconfig(kubeconfig []byte) (string, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return "", fmt.Errorf("kubeadm: join service kubeconfig: %w", err)
	}
	if len(cfg.Clusters) != 1 || len(cfg.AuthInfos) != 1 {
		return "", fmt.Errorf("kubeadm: join service kubeconfig: want 1 cluster and 1 user, got %d and %d", len(cfg.Clusters), len(cfg.AuthInfos))
	}
	var server string
	for _, c := range cfg.Clusters {
		server = c.Server
	}
	if len(server) < len("https://x") || server[:8] != "https://" {
		return "", fmt.Errorf("kubeadm: join service kubeconfig: server: want https://host:port, got %q", short(server))
	}
	for _, u := range cfg.AuthInfos {
		if len(u.ClientKeyData) == 0 {
			return "", errors.New("kubeadm: join service kubeconfig: user: want an embedded client key, got none")
		}
		block, _ := pem.Decode(u.ClientCertificateData)
		if block == nil || block.Type != "CERTIFICATE" {
			return "", errors.New("kubeadm: join service kubeconfig: user: want an embedded PEM client certificate, got none")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("kubeadm: join service kubeconfig: client certificate: %w", err)
		}
		if cert.Subject.CommonName != rbac.UserName {
			return "", fmt.Errorf("kubeadm: join service kubeconfig: client certificate common name: want %q, got %q", rbac.UserName, short(cert.Subject.CommonName))
		}
		if len(cert.Subject.Organization) != 0 {
			return "", fmt.Errorf("kubeadm: join service kubeconfig: client certificate groups: want none, got %q", cert.Subject.Organization)
		}
	}
	return server, nil
}

// WriteJoinServiceKubeconfig writes kubeconfig to path, 0600, atomically
// (a crash leaves the old file or the new one, never half of it).
func WriteJoinServiceKubeconfig(path string, kubeconfig []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".joinservice-kubeconfig-*")
	if err != nil {
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	if _, err := tmp.Write(kubeconfig); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("kubeadm: writing %s: %w", path, err)
	}
	return nil
}

// ApplyJoinServiceRBAC creates the RBAC objects of package rbac, or
// replaces their rules and subjects if they exist (so a rerun after a crash,
// or an init on a cluster that has them, converges on the table). It is the
// bootstrapper's one use of the Kubernetes API outside the kubeadm binary
// (docs/design.md §8): kubeadm cannot apply RBAC objects, and the join
// service must not create its own permissions. client is built from
// admin.conf, once, at init.
func ApplyJoinServiceRBAC(ctx context.Context, client kubernetes.Interface) error {
	o := rbac.NewObjects()
	rb := client.RbacV1()
	apply := func(kind, name string, create func() error, update func() error) error {
		err := create()
		if apierrors.IsAlreadyExists(err) {
			err = update()
		}
		if err != nil {
			return fmt.Errorf("kubeadm: applying %s %s: %w", kind, name, err)
		}
		return nil
	}
	if err := apply("ClusterRole", o.ClusterRole.Name, func() error {
		_, err := rb.ClusterRoles().Create(ctx, o.ClusterRole, metav1.CreateOptions{})
		return err
	}, func() error {
		old, err := rb.ClusterRoles().Get(ctx, o.ClusterRole.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		old.Labels, old.Rules, old.AggregationRule = o.ClusterRole.Labels, o.ClusterRole.Rules, nil
		_, err = rb.ClusterRoles().Update(ctx, old, metav1.UpdateOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := apply("ClusterRoleBinding", o.ClusterRoleBinding.Name, func() error {
		_, err := rb.ClusterRoleBindings().Create(ctx, o.ClusterRoleBinding, metav1.CreateOptions{})
		return err
	}, func() error {
		old, err := rb.ClusterRoleBindings().Get(ctx, o.ClusterRoleBinding.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if old.RoleRef != o.ClusterRoleBinding.RoleRef {
			// roleRef is immutable: replace the binding.
			if err := rb.ClusterRoleBindings().Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
			_, err = rb.ClusterRoleBindings().Create(ctx, o.ClusterRoleBinding, metav1.CreateOptions{})
			return err
		}
		old.Labels, old.Subjects = o.ClusterRoleBinding.Labels, o.ClusterRoleBinding.Subjects
		_, err = rb.ClusterRoleBindings().Update(ctx, old, metav1.UpdateOptions{})
		return err
	}); err != nil {
		return err
	}
	for _, role := range o.Roles {
		if err := apply("Role", role.Namespace+"/"+role.Name, func() error {
			_, err := rb.Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{})
			return err
		}, func() error {
			old, err := rb.Roles(role.Namespace).Get(ctx, role.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			old.Labels, old.Rules = role.Labels, role.Rules
			_, err = rb.Roles(role.Namespace).Update(ctx, old, metav1.UpdateOptions{})
			return err
		}); err != nil {
			return err
		}
	}
	for _, b := range o.RoleBindings {
		if err := apply("RoleBinding", b.Namespace+"/"+b.Name, func() error {
			_, err := rb.RoleBindings(b.Namespace).Create(ctx, b, metav1.CreateOptions{})
			return err
		}, func() error {
			old, err := rb.RoleBindings(b.Namespace).Get(ctx, b.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if old.RoleRef != b.RoleRef {
				if err := rb.RoleBindings(b.Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
					return err
				}
				_, err = rb.RoleBindings(b.Namespace).Create(ctx, b, metav1.CreateOptions{})
				return err
			}
			old.Labels, old.Subjects = b.Labels, b.Subjects
			_, err = rb.RoleBindings(b.Namespace).Update(ctx, old, metav1.UpdateOptions{})
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// AdminClient builds a Kubernetes client from kubeadm's admin kubeconfig,
// for ApplyJoinServiceRBAC.
func AdminClient(adminKubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeadm: reading %s: %w", adminKubeconfig, err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeadm: client from %s: %w", adminKubeconfig, err)
	}
	return c, nil
}

// DefaultJoinServiceKubeconfig is where the join service's kubeconfig goes;
// the image's joinservice.yaml names it, and its unit makes it the only file
// of /etc/kubernetes the service can see.
const DefaultJoinServiceKubeconfig = "/etc/kubernetes/cloister-joinservice.conf"

// JoinServiceIdentity gives the join service its own Kubernetes identity on
// the first control plane, after kubeadm init: the RBAC objects of package
// rbac (applied with admin.conf), then a client certificate for
// rbac.UserName made by `kubeadm kubeconfig user`, written 0600 to
// Kubeconfig. Ensure is idempotent: a rerun converges the RBAC objects and
// replaces the kubeconfig with a fresh certificate.
type JoinServiceIdentity struct {
	// Runner runs kubeadm.
	Runner Runner
	// AdminKubeconfig is kubeadm's admin.conf (default
	// /etc/kubernetes/admin.conf); used only to apply the RBAC objects.
	AdminKubeconfig string
	// Kubeconfig is where the join service's kubeconfig goes (default
	// DefaultJoinServiceKubeconfig).
	Kubeconfig string
	// NewClient builds the admin client; nil means AdminClient.
	NewClient func(adminKubeconfig string) (kubernetes.Interface, error)
}

// Ensure applies the RBAC objects and writes the kubeconfig; userConfigPath
// is a file from JoinServiceUserConfiguration.
func (j JoinServiceIdentity) Ensure(ctx context.Context, userConfigPath string) error {
	admin, out := j.AdminKubeconfig, j.Kubeconfig
	if admin == "" {
		admin = "/etc/kubernetes/admin.conf"
	}
	if out == "" {
		out = DefaultJoinServiceKubeconfig
	}
	newClient := j.NewClient
	if newClient == nil {
		newClient = AdminClient
	}
	client, err := newClient(admin)
	if err != nil {
		return err
	}
	// Permissions first: once the kubeconfig exists, the identity works.
	if err := ApplyJoinServiceRBAC(ctx, client); err != nil {
		return err
	}
	kc, err := j.Runner.KubeconfigUser(ctx, userConfigPath, rbac.UserName, JoinServiceCertValidity)
	if err != nil {
		return err
	}
	defer clear(kc)
	if _, err := CheckJoinServiceKubeconfig(kc); err != nil {
		return err
	}
	return WriteJoinServiceKubeconfig(out, kc)
}
