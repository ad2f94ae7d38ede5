package main

import "github.com/google/go-sev-guest/verify/trust"

// snpUpstream fetches VCEKs from AMD's KDS when the cache misses. Only the
// cache's fill path uses it; validation reads the cache.
func snpUpstream() trust.HTTPSGetter { return trust.DefaultHTTPSGetter() }
