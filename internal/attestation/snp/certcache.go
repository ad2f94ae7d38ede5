package snp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cloister-dev/cloister/internal/atomicfile"
)

// ErrNotCached is wrapped by CertCache when a URL is not in the cache and
// the cache is offline, so it may not fetch it.
var ErrNotCached = errors.New("not in the certificate cache, and the cache is offline")

// CertCacheOptions are the optional settings of a CertCache. The zero value
// is safe: an offline cache that never touches the network.
type CertCacheOptions struct {
	// Upstream fetches what is not cached yet, e.g.
	// trust.DefaultHTTPSGetter() for AMD's KDS. Nil makes the cache offline:
	// a miss is an error wrapping ErrNotCached.
	Upstream trust.HTTPSGetter
}

// CertCache is a trust.HTTPSGetter that keeps every response it fetched in a
// directory (one 0600 file per URL, named by the URL's SHA-256, in a 0700
// directory), so that AMD collateral is fetched once per chip and TCB and
// verification keeps working when AMD's KDS is slow or unreachable.
//
// Cached content is not trusted: it is a certificate that the validator
// still chains to the AMD roots.
type CertCache struct {
	dir      string
	upstream trust.HTTPSGetter
}

var (
	_ trust.HTTPSGetter        = (*CertCache)(nil)
	_ trust.ContextHTTPSGetter = (*CertCache)(nil)
)

// NewCertCache returns a cache in dir, creating dir (0700) if needed.
func NewCertCache(dir string, opts CertCacheOptions) (*CertCache, error) {
	if dir == "" {
		return nil, errors.New("snp: certificate cache: no directory: pass the directory to keep certificates in")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snp: creating certificate cache %s: %w", dir, err)
	}
	return &CertCache{dir: dir, upstream: opts.Upstream}, nil
}

// Offline reports whether the cache never fetches.
func (c *CertCache) Offline() bool { return c.upstream == nil }

// Get returns the response for url from the cache or, on a miss, from the
// upstream getter, storing it.
func (c *CertCache) Get(url string) ([]byte, error) {
	return c.GetContext(context.Background(), url)
}

// GetContext is Get with a context for the upstream fetch.
func (c *CertCache) GetContext(ctx context.Context, url string) ([]byte, error) {
	path := c.path(url)
	b, err := readLimited(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("snp: reading cached %s: %w", url, err)
	}
	if c.upstream == nil {
		return nil, fmt.Errorf("snp: %s: %w", url, ErrNotCached)
	}
	b, err = trust.GetWith(ctx, c.upstream, url)
	if err != nil {
		return nil, fmt.Errorf("snp: fetching %s: %w", url, err)
	}
	if len(b) == 0 || len(b) > maxCertSize {
		return nil, fmt.Errorf("snp: fetching %s: response is %d bytes, want 1..%d", url, len(b), maxCertSize)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("snp: caching %s: %w", url, err)
	}
	return b, nil
}

// path names the cache file of url. Hashing keeps any URL (query strings,
// "..") out of the file system's syntax.
func (c *CertCache) path(url string) string {
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:]))
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCertSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b) > maxCertSize {
		return nil, fmt.Errorf("cache file %s is %d bytes, want 1..%d", path, len(b), maxCertSize)
	}
	return b, nil
}
