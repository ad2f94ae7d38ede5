package snp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	sevtest "github.com/google/go-sev-guest/testing"
)

// countingKDS is go-sev-guest's fake KDS (serving a fake signer's VCEK and
// product chain) that counts its requests.
type countingKDS struct {
	kds   *sevtest.FakeKDS
	calls int
}

func (c *countingKDS) Get(url string) ([]byte, error) {
	c.calls++
	return c.kds.Get(url)
}

func fakeKDS(tb testing.TB, a *fakeAMD) *countingKDS {
	tb.Helper()
	k, err := sevtest.FakeKDSFromSigner(a.signer)
	if err != nil {
		tb.Fatalf("FakeKDSFromSigner: %v", err)
	}
	return &countingKDS{kds: k}
}

func offlineCache(tb testing.TB) *CertCache {
	tb.Helper()
	c, err := NewCertCache(tb.TempDir(), CertCacheOptions{})
	if err != nil {
		tb.Fatalf("NewCertCache: %v", err)
	}
	return c
}

// staticGetter is a fake upstream that answers every URL with body.
type staticGetter struct {
	body  []byte
	calls int
}

func (g *staticGetter) Get(string) ([]byte, error) {
	g.calls++
	return g.body, nil
}

const testURL = "https://kdsintf.amd.com/vcek/v1/Milan/c0c1?blSPL=3&teeSPL=1&snpSPL=8&ucodeSPL=115"

func TestCertCacheHit(t *testing.T) {
	up := &staticGetter{body: []byte("certificate")}
	c, err := NewCertCache(t.TempDir(), CertCacheOptions{Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := c.Get(testURL)
		if err != nil {
			t.Fatalf("Get #%d: %v", i, err)
		}
		if !bytes.Equal(got, up.body) {
			t.Fatalf("Get #%d = %q, want %q", i, got, up.body)
		}
	}
	if up.calls != 1 {
		t.Errorf("upstream called %d times for 3 gets of one URL, want 1", up.calls)
	}
	if c.Offline() {
		t.Error("cache with an upstream reports offline")
	}
}

func TestCertCacheMissOffline(t *testing.T) {
	c := offlineCache(t)
	if !c.Offline() {
		t.Error("cache without upstream does not report offline")
	}
	got, err := c.Get(testURL)
	if !errors.Is(err, ErrNotCached) {
		t.Fatalf("Get on an empty offline cache = %q, %v; want ErrNotCached", got, err)
	}
	if got != nil {
		t.Errorf("Get returned %q with an error", got)
	}
}

func TestCertCacheFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	c, err := NewCertCache(dir, CertCacheOptions{Upstream: &staticGetter{body: []byte("certificate")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(testURL); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("cache directory mode %o, want 700", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("cache directory holds %d entries, want 1 (no temporary files left)", len(entries))
	}
	info, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("cache file mode %o, want 600", got)
	}
}

func TestCertCacheRefusesBadResponses(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty response", nil},
		{"oversized response", make([]byte, maxCertSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := NewCertCache(dir, CertCacheOptions{Upstream: &staticGetter{body: tc.body}})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(testURL); err == nil {
				t.Fatalf("Get accepted a %d-byte response (%d bytes back)", len(tc.body), len(got))
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("cache stored %d entries for a refused response", len(entries))
			}
		})
	}
}

func TestNewCertCacheNeedsDirectory(t *testing.T) {
	if _, err := NewCertCache("", CertCacheOptions{}); err == nil {
		t.Fatal("NewCertCache accepted an empty directory name")
	}
}
