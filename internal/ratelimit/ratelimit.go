// Package ratelimit limits how often one peer may do something expensive:
// open a connection (an attested TLS handshake costs a hardware-signature
// verification or a quote), call the join service, or make a server write a
// log line. One token bucket per peer key, usually the peer's IP address
// (Limiter); one log line per interval and message (Logger). Package atls
// uses it for every attested server, the join service for its calls.
package ratelimit

import (
	"net"
	"sync"
	"time"
)

// Limiter is a set of token buckets, one per key. The zero value is not
// usable; build it with New.
type Limiter struct {
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Options configure a Limiter.
type Options struct {
	// PerSecond is the sustained rate per key. Required, > 0.
	PerSecond float64
	// Burst is how many events a key may have at once. Default 1.
	Burst int
	// MaxKeys bounds memory: when exceeded, full buckets are dropped (a
	// dropped key starts again with a full bucket, so nothing is refused
	// wrongly). Default 10000.
	MaxKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// New builds a Limiter.
func New(opts Options) *Limiter {
	if opts.Burst < 1 {
		opts.Burst = 1
	}
	if opts.MaxKeys < 1 {
		opts.MaxKeys = 10000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Limiter{rate: opts.PerSecond, burst: float64(opts.Burst), maxKeys: opts.MaxKeys, now: opts.Now, buckets: map[string]*bucket{}}
}

// Allow takes one token from key's bucket and reports whether there was one.
func (l *Limiter) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.dropFull(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(burst, b.tokens+elapsed*rate)
	}
	b.last = now
}

// dropFull forgets buckets that have refilled completely: they hold no
// information. Called with l.mu held.
func (l *Limiter) dropFull(now time.Time) {
	for k, b := range l.buckets {
		b.refill(now, l.rate, l.burst)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// Listener wraps a net.Listener and closes connections from peers over their
// rate before any TLS work is done for them.
type Listener struct {
	net.Listener
	Limiter *Limiter
	// OnRefuse, if set, is told about each refused connection.
	OnRefuse func(addr net.Addr)
}

// Accept returns the next connection within its peer's rate.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.Limiter.Allow(HostKey(c.RemoteAddr())) {
			return c, nil
		}
		if l.OnRefuse != nil {
			l.OnRefuse(c.RemoteAddr())
		}
		c.Close()
	}
}

// HostKey is the rate-limit key of an address: its IP without the port, so a
// peer cannot escape its bucket by opening new source ports.
func HostKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
