package tdx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/google/go-tdx-guest/verify/trust"
)

// maxCollateralSize bounds one PCS response body. Real TDX TCB info is a
// few KiB; QE identity is under 1 KiB.
const maxCollateralSize = 1 << 20

// ErrOffline is returned by CollateralCache.Refresh when the cache has no
// fetcher: in offline mode only AddTCBInfo and AddQEIdentity fill it.
var ErrOffline = errors.New("collateral cache is offline")

// CollateralCacheOptions configures a CollateralCache. The zero value is
// offline mode.
type CollateralCacheOptions struct {
	// Fetcher fetches from Intel PCS during Refresh, e.g.
	// trust.DefaultHTTPSGetter(). Nil means offline: Refresh fails with
	// ErrOffline and the cache holds only what AddTCBInfo and AddQEIdentity
	// put in it (responses saved from PCS, for air-gapped clusters).
	Fetcher trust.HTTPSGetter
}

// CollateralCache holds Intel PCS collateral, the TDX TCB info per FMSPC and
// the TD quoting enclave identity, for Validators. Validators only read it
// from memory, so the hot path never waits on Intel; the caller fills it off
// the hot path with Refresh (online) or the Add methods (offline).
//
// Entries are kept as Intel sent them, issuer-chain headers included. Every
// Validate checks their signatures under the validator's trusted root and
// their nextUpdate time, so a forged or stale entry fails validation rather
// than passing it. A CollateralCache is safe for concurrent use.
//
// Validators record which FMSPCs they need (FMSPCs), so that a background
// refresher fetches exactly those. Only quotes whose PCK chain and signatures
// have verified reach the cache, so forged quotes cannot grow that list.
type CollateralCache struct {
	fetcher trust.HTTPSGetter

	mu        sync.Mutex
	responses map[string]pcsResponse // by Intel PCS URL
	wanted    map[string]bool        // FMSPCs validators asked for
}

type pcsResponse struct {
	header map[string][]string
	body   []byte
}

// NewCollateralCache returns an empty cache.
func NewCollateralCache(opts CollateralCacheOptions) *CollateralCache {
	return &CollateralCache{fetcher: opts.Fetcher, responses: make(map[string]pcsResponse), wanted: make(map[string]bool)}
}

// FMSPCs lists, sorted, the platforms (FMSPCs) whose TCB info validators
// have asked for, found or not. A refresher calls Refresh for each of them
// before their collateral goes stale; a new platform's first validation fails
// with a "collateral" rejection until then.
func (c *CollateralCache) FMSPCs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.wanted))
}

// AddTCBInfo stores a TDX TCB info response from Intel PCS
// (GET /tdx/certification/v4/tcb?fmspc=…): its headers, which carry the
// TCB-Info-Issuer-Chain, and its body. The FMSPC is read from the body.
func (c *CollateralCache) AddTCBInfo(header map[string][]string, body []byte) error {
	if err := checkResponse(header, body, pcs.TcbInfoIssuerChainPhrase); err != nil {
		return fmt.Errorf("tdx: TCB info: %w", err)
	}
	var info pcs.TdxTcbInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return fmt.Errorf("tdx: TCB info: decoding body: %w", err)
	}
	fmspc := strings.ToLower(info.TcbInfo.Fmspc)
	if !isFMSPC(fmspc) {
		return fmt.Errorf("tdx: TCB info: fmspc %q is not 12 hex digits", info.TcbInfo.Fmspc)
	}
	c.put(pcs.TcbInfoURL(fmspc), header, body)
	return nil
}

// AddQEIdentity stores a TD QE identity response from Intel PCS
// (GET /tdx/certification/v4/qe/identity): its headers, which carry the
// SGX-Enclave-Identity-Issuer-Chain, and its body.
func (c *CollateralCache) AddQEIdentity(header map[string][]string, body []byte) error {
	if err := checkResponse(header, body, pcs.SgxQeIdentityIssuerChainPhrase); err != nil {
		return fmt.Errorf("tdx: QE identity: %w", err)
	}
	var id pcs.QeIdentity
	if err := json.Unmarshal(body, &id); err != nil {
		return fmt.Errorf("tdx: QE identity: decoding body: %w", err)
	}
	c.put(pcs.QeIdentityURL(), header, body)
	return nil
}

// Refresh fetches the TCB info for fmspc (12 hex digits, as in the PCK
// certificate) and the QE identity from Intel PCS and stores them. It
// replaces nothing unless both fetches succeed. Offline caches return
// ErrOffline.
func (c *CollateralCache) Refresh(ctx context.Context, fmspc string) error {
	if c.fetcher == nil {
		return fmt.Errorf("tdx: refreshing collateral for FMSPC %s: %w", fmspc, ErrOffline)
	}
	fmspc = strings.ToLower(fmspc)
	if !isFMSPC(fmspc) {
		return fmt.Errorf("tdx: refreshing collateral: fmspc %q is not 12 hex digits", fmspc)
	}
	tcbHeader, tcbBody, err := trust.GetWith(ctx, c.fetcher, pcs.TcbInfoURL(fmspc))
	if err != nil {
		return fmt.Errorf("tdx: fetching TCB info for FMSPC %s: %w", fmspc, err)
	}
	qeHeader, qeBody, err := trust.GetWith(ctx, c.fetcher, pcs.QeIdentityURL())
	if err != nil {
		return fmt.Errorf("tdx: fetching QE identity: %w", err)
	}
	scratch := NewCollateralCache(CollateralCacheOptions{})
	if err := scratch.AddTCBInfo(tcbHeader, tcbBody); err != nil {
		return err
	}
	if err := scratch.AddQEIdentity(qeHeader, qeBody); err != nil {
		return err
	}
	if _, ok := scratch.responses[pcs.TcbInfoURL(fmspc)]; !ok {
		return fmt.Errorf("tdx: Intel PCS answered the TCB info request for FMSPC %s with another FMSPC", fmspc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.Copy(c.responses, scratch.responses)
	return nil
}

func (c *CollateralCache) put(url string, header map[string][]string, body []byte) {
	h := make(map[string][]string, len(header))
	for k, v := range header {
		h[k] = append([]string(nil), v...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.responses[url] = pcsResponse{header: h, body: bytes.Clone(body)}
}

// get answers go-tdx-guest's collateral requests from memory only.
func (c *CollateralCache) get(url string) (map[string][]string, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fmspc, ok := strings.CutPrefix(url, pcs.TcbInfoURL("")); ok && isFMSPC(fmspc) {
		c.wanted[fmspc] = true
	}
	r, ok := c.responses[url]
	if !ok {
		return nil, nil, fmt.Errorf("no collateral for %s in the cache: refresh or load it", url)
	}
	h := make(map[string][]string, len(r.header))
	for k, v := range r.header {
		h[k] = append([]string(nil), v...)
	}
	return h, bytes.Clone(r.body), nil
}

// cacheGetter adapts a CollateralCache to go-tdx-guest's trust.HTTPSGetter.
type cacheGetter struct{ c *CollateralCache }

func (g cacheGetter) Get(url string) (map[string][]string, []byte, error) { return g.c.get(url) }

func checkResponse(header map[string][]string, body []byte, chainHeader string) error {
	if len(body) == 0 || len(body) > maxCollateralSize {
		return fmt.Errorf("body is %d bytes, want 1..%d", len(body), maxCollateralSize)
	}
	if len(header[chainHeader]) != 1 {
		return fmt.Errorf("want exactly one %s header, got %d", chainHeader, len(header[chainHeader]))
	}
	return nil
}

func isFMSPC(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}
