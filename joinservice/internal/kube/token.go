package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Bootstrap token format, as the API server's bootstrap authenticator and
// kubeadm expect it: "<6 chars>.<16 chars>" from [a-z0-9], stored in Secret
// kube-system/bootstrap-token-<id>.
const (
	tokenIDLen     = 6
	tokenSecretLen = 16
	tokenAlphabet  = "0123456789abcdefghijklmnopqrstuvwxyz"
	tokenPrefix    = "bootstrap-token-"

	keyTokenID          = "token-id"
	keyTokenSecret      = "token-secret"
	keyExpiration       = "expiration"
	keyDescription      = "description"
	keyUsageAuth        = "usage-bootstrap-authentication"
	keyUsageSigning     = "usage-bootstrap-signing"
	keyAuthExtraGroups  = "auth-extra-groups"
	nodeBootstrapGroup  = "system:bootstrappers:kubeadm:default-node-token"
	createTokenAttempts = 3

	// LabelManagedBy marks the objects this package creates and may delete.
	LabelManagedBy = "cloister.dev/managed-by"
	managedByValue = "joinservice"
	// AnnotationNode names the node a token or CSR was made for. An
	// annotation, not a label: node names may be longer than label values.
	AnnotationNode = "cloister.dev/node"
)

// Token is a bootstrap token. Only its ID may be logged: String, Format and
// LogValue print the secret part as REDACTED. Reveal gives the whole token,
// for the join ticket only.
type Token struct {
	// ID is the public half ("abcdef"), also the Secret's name suffix.
	ID string
	// Expires is when the API server stops accepting the token.
	Expires time.Time
	secret  string
}

// Reveal returns the whole token "<id>.<secret>" for kubeadm.
func (t Token) Reveal() string { return t.ID + "." + t.secret }

// String implements fmt.Stringer without the secret.
func (t Token) String() string { return t.ID + ".REDACTED" }

// GoString keeps %#v from printing the secret.
func (t Token) GoString() string { return t.String() }

// Format keeps every fmt verb from printing the secret.
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// LogValue implements slog.LogValuer without the secret.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", t.ID), slog.Time("expires", t.Expires))
}

// CreateBootstrapToken creates a bootstrap token for untrustedNodeName that
// authenticates as a kubeadm node bootstrapper until Now+TokenTTL.
func (c *Cluster) CreateBootstrapToken(ctx context.Context, untrustedNodeName string) (Token, error) {
	if err := checkNodeName(untrustedNodeName); err != nil {
		return Token{}, fmt.Errorf("kube: creating bootstrap token: %w", err)
	}
	expires := c.opts.Now().Add(c.opts.TokenTTL).UTC().Truncate(time.Second)
	data := map[string][]byte{
		keyUsageAuth:       []byte("true"),
		keyUsageSigning:    []byte("true"),
		keyAuthExtraGroups: []byte(nodeBootstrapGroup),
		keyDescription:     []byte("Cloister join token for node " + untrustedNodeName),
	}
	annotations := map[string]string{AnnotationNode: untrustedNodeName}
	return c.createToken(ctx, expires, data, annotations)
}

// createToken creates a bootstrap token Secret with extra data, retrying
// with a fresh ID if the ID is taken.
func (c *Cluster) createToken(ctx context.Context, expires time.Time, extra map[string][]byte, annotations map[string]string) (Token, error) {
	for range createTokenAttempts {
		tok, err := c.newToken(expires)
		if err != nil {
			return Token{}, err
		}
		data := map[string][]byte{
			keyTokenID:     []byte(tok.ID),
			keyTokenSecret: []byte(tok.secret),
			keyExpiration:  []byte(expires.Format(time.RFC3339)),
		}
		for k, v := range extra {
			data[k] = v
		}
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:        tokenPrefix + tok.ID,
				Namespace:   metav1.NamespaceSystem,
				Labels:      map[string]string{LabelManagedBy: managedByValue},
				Annotations: annotations,
			},
			Type: corev1.SecretTypeBootstrapToken,
			Data: data,
		}
		created, err := c.client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return Token{}, fmt.Errorf("kube: creating secret %s/%s: %w", metav1.NamespaceSystem, s.Name, err)
		}
		c.track(s.Name, issuedToken{uid: created.UID, node: annotations[AnnotationNode], expires: expires})
		return tok, nil
	}
	return Token{}, fmt.Errorf("kube: creating bootstrap token: %d random token IDs were all taken", createTokenAttempts)
}

func (c *Cluster) newToken(expires time.Time) (Token, error) {
	s, err := randomString(c.opts.Rand, tokenIDLen+tokenSecretLen)
	if err != nil {
		return Token{}, fmt.Errorf("kube: generating bootstrap token: %w", err)
	}
	return Token{ID: s[:tokenIDLen], secret: s[tokenIDLen:], Expires: expires}, nil
}

// randomString draws n characters uniformly from tokenAlphabet. Bytes at or
// above the largest multiple of the alphabet size are rejected, so there is
// no modulo bias.
func randomString(r io.Reader, n int) (string, error) {
	const limit = 256 - 256%len(tokenAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4)
	// A uniform source keeps 252/256 of its bytes; 32 rounds without enough
	// accepted bytes means the source is broken, not unlucky.
	for range 32 {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("reading randomness: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			if len(out) == n {
				return string(out), nil
			}
		}
	}
	return "", errors.New("reading randomness: the source rejected too often (is it constant?)")
}

// issuedToken is what a Cluster remembers of a bootstrap token it created:
// enough to delete exactly that Secret (by name and UID) without reading it.
type issuedToken struct {
	uid     types.UID
	node    string // empty for a token that is not per node
	expires time.Time
}

// track remembers a token this Cluster created.
func (c *Cluster) track(name string, t issuedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issued[name] = t
}

// issuedTokens returns the tokens this Cluster created and has not yet
// deleted, sorted by name.
func (c *Cluster) issuedTokens() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.issued))
}

func (c *Cluster) lookup(name string) (issuedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.issued[name]
	return t, ok
}

// deleteIssued deletes the Secret of a token this Cluster created, only if
// it is still the same object (the UID the API server gave it at create), and
// forgets the token. The Secret is never read: the join service has no
// permission to get, list or watch Secrets (package rbac).
func (c *Cluster) deleteIssued(ctx context.Context, name string) error {
	t, ok := c.lookup(name)
	if !ok {
		return nil
	}
	opts := metav1.DeleteOptions{}
	if t.uid != "" {
		opts.Preconditions = metav1.NewUIDPreconditions(string(t.uid))
	}
	err := c.client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, name, opts)
	switch {
	case err == nil, apierrors.IsNotFound(err):
	case apierrors.IsConflict(err):
		// Another object took the name since: not ours to delete.
	default:
		return fmt.Errorf("kube: deleting secret %s/%s: %w", metav1.NamespaceSystem, name, err)
	}
	c.mu.Lock()
	delete(c.issued, name)
	c.mu.Unlock()
	return nil
}

// DeleteSpentBootstrapTokens deletes the bootstrap tokens this Cluster
// created that have done their job or can no longer do it: those whose node
// is registered (it joined) and those that expired. It returns how many it
// deleted.
//
// Only tokens created by this process are known: the service cannot list
// Secrets, by design. A token created before a restart is left to its
// expiry (at most Options.TokenTTL) and to kube-controller-manager's
// tokencleaner, which deletes expired bootstrap tokens; the API server stops
// accepting a token at its expiration either way.
func (c *Cluster) DeleteSpentBootstrapTokens(ctx context.Context) (int, error) {
	now := c.opts.Now()
	registered := map[string]bool{} // one lookup per node and sweep
	deleted := 0
	var errs []error
	for _, name := range c.issuedTokens() {
		t, ok := c.lookup(name)
		if !ok {
			continue
		}
		if now.Before(t.expires) {
			if t.node == "" {
				continue // not a per-node token: it lives until it expires
			}
			done, seen := registered[t.node]
			if !seen {
				var err error
				if done, err = c.NodeRegistered(ctx, t.node); err != nil {
					errs = append(errs, err)
					continue
				}
				registered[t.node] = done
			}
			if !done {
				continue
			}
		}
		if err := c.deleteIssued(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
	}
	return deleted, errors.Join(errs...)
}

// DeleteTokensForNode deletes every bootstrap token this Cluster created for
// untrustedNodeName and returns how many it deleted. Call it once the node
// is registered (NodeRegistered): the token has done its job.
func (c *Cluster) DeleteTokensForNode(ctx context.Context, untrustedNodeName string) (int, error) {
	if err := checkNodeName(untrustedNodeName); err != nil {
		return 0, fmt.Errorf("kube: deleting bootstrap tokens: %w", err)
	}
	deleted := 0
	var errs []error
	for _, name := range c.issuedTokens() {
		if t, ok := c.lookup(name); !ok || t.node != untrustedNodeName {
			continue
		}
		if err := c.deleteIssued(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
	}
	return deleted, errors.Join(errs...)
}

// NodeRegistered reports whether the Node object untrustedNodeName exists.
func (c *Cluster) NodeRegistered(ctx context.Context, untrustedNodeName string) (bool, error) {
	if err := checkNodeName(untrustedNodeName); err != nil {
		return false, fmt.Errorf("kube: looking up node: %w", err)
	}
	_, err := c.client.CoreV1().Nodes().Get(ctx, untrustedNodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("kube: getting node %s: %w", untrustedNodeName, err)
	}
	return true, nil
}

// RunTokenCleanup calls DeleteSpentBootstrapTokens now and then every
// interval until ctx ends, and passes each result to report (which may be
// nil; main uses it to log). It returns nil when ctx ends: cancellation is
// not an error.
func (c *Cluster) RunTokenCleanup(ctx context.Context, interval time.Duration, report func(deleted int, err error)) error {
	if interval <= 0 {
		return fmt.Errorf("kube: token cleanup interval %v: use a positive interval", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// Sweep at once, then every interval: after a restart, tokens that
		// expired meanwhile go promptly.
		n, err := c.DeleteSpentBootstrapTokens(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if report != nil {
			report(n, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkNodeName refuses anything that is not a DNS-1123 subdomain, the
// shape of a Kubernetes node name.
func checkNodeName(untrustedNodeName string) error {
	if msgs := validation.IsDNS1123Subdomain(untrustedNodeName); len(msgs) > 0 {
		return fmt.Errorf("%w: %.80q: %s", ErrInvalidNodeName, untrustedNodeName, strings.Join(msgs, "; "))
	}
	return nil
}
