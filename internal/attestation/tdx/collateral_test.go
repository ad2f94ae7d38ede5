package tdx_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloister-dev/cloister/internal/attestation/tdx"
	"github.com/cloister-dev/cloister/internal/attestation/tdx/tdxtest"
)

// fakePCS is a fake Intel PCS that serves fixed responses by URL path.
type fakePCS struct {
	tcbInfo, qeIdentity tdxtest.PCSResponse
	calls               int
}

func (p *fakePCS) Get(url string) (map[string][]string, []byte, error) {
	p.calls++
	switch {
	case strings.Contains(url, "/tcb?fmspc="):
		return p.tcbInfo.Header, p.tcbInfo.Body, nil
	case strings.HasSuffix(url, "/qe/identity"):
		return p.qeIdentity.Header, p.qeIdentity.Body, nil
	}
	return nil, nil, fmt.Errorf("fake PCS: no route for %s", url)
}

func TestCollateralCacheRefreshFromFakePCS(t *testing.T) {
	f := newFixture(t)
	tcbInfo, qeIdentity, err := f.chain.Collateral(tdxtest.CollateralOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pcs := &fakePCS{tcbInfo: tcbInfo, qeIdentity: qeIdentity}
	cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{Fetcher: pcs})
	v := f.validator(t, tdx.ValidatorOptions{Collateral: cache})
	ev := f.issue(t, f.chain, f.body, f.userData)

	_, err = v.Validate(context.Background(), ev, f.userData)
	assertCheck(t, err, "collateral") // nothing fetched yet, and Validate never fetches
	if pcs.calls != 0 {
		t.Fatalf("Validate called Intel PCS %d times; the hot path must not", pcs.calls)
	}
	wanted := cache.FMSPCs()
	if len(wanted) != 1 || wanted[0] != "50806f000000" {
		t.Fatalf("FMSPCs() = %q, want the fake platform's [50806f000000]", wanted)
	}
	if err := cache.Refresh(context.Background(), strings.ToUpper(wanted[0])); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if _, err := v.Validate(context.Background(), ev, f.userData); err != nil {
		t.Fatalf("Validate after Refresh: %v", err)
	}
	if pcs.calls != 2 {
		t.Errorf("Intel PCS called %d times, want 2 (TCB info, QE identity)", pcs.calls)
	}
}

func TestCollateralCacheRefuses(t *testing.T) {
	f := newFixture(t)
	tcbInfo, qeIdentity, err := f.chain.Collateral(tdxtest.CollateralOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("refresh while offline", func(t *testing.T) {
		err := tdx.NewCollateralCache(tdx.CollateralCacheOptions{}).Refresh(ctx, "50806f000000")
		if !errors.Is(err, tdx.ErrOffline) {
			t.Errorf("Refresh = %v, want ErrOffline", err)
		}
	})
	t.Run("refresh with a malformed FMSPC", func(t *testing.T) {
		cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{Fetcher: &fakePCS{tcbInfo: tcbInfo, qeIdentity: qeIdentity}})
		if err := cache.Refresh(ctx, "../../x"); err == nil {
			t.Error("Refresh accepted a malformed FMSPC")
		}
	})
	t.Run("PCS answers with another FMSPC", func(t *testing.T) {
		cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{Fetcher: &fakePCS{tcbInfo: tcbInfo, qeIdentity: qeIdentity}})
		if err := cache.Refresh(ctx, "00906ed50000"); err == nil {
			t.Error("Refresh stored TCB info for another FMSPC")
		}
	})
	t.Run("TCB info without issuer chain", func(t *testing.T) {
		cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{})
		if err := cache.AddTCBInfo(nil, tcbInfo.Body); err == nil {
			t.Error("AddTCBInfo accepted a response without issuer chain")
		}
	})
	t.Run("TCB info that is not JSON", func(t *testing.T) {
		cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{})
		if err := cache.AddTCBInfo(tcbInfo.Header, []byte("<html>")); err == nil {
			t.Error("AddTCBInfo accepted a non-JSON body")
		}
	})
	t.Run("QE identity given as TCB info", func(t *testing.T) {
		cache := tdx.NewCollateralCache(tdx.CollateralCacheOptions{})
		if err := cache.AddTCBInfo(qeIdentity.Header, qeIdentity.Body); err == nil {
			t.Error("AddTCBInfo accepted a QE identity")
		}
	})
}
