package atls

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cloister-dev/cloister/internal/ratelimit"
)

// ErrBusy is wrapped by the error of a server handshake refused because a
// limit of Limits was reached, and by PriorityIssuer when its queue for
// peer-triggered evidence is full. It is no verdict on the peer: Code maps
// it to Unavailable, and the client retries later.
var ErrBusy = errors.New("server busy")

// Limits bound what unauthenticated peers cost a server. A peer is
// unauthenticated until its evidence has been verified; with
// Config.AcceptUnattestedPeer it stays so for the connection's whole life.
// Each zero field takes the default named in its comment, so the zero
// value is the safe choice; a negative field is refused by NewCredentials.
// Only ServerHandshake applies them: a client chooses whom it dials.
type Limits struct {
	// MaxUnauthenticated bounds the connections of unauthenticated peers at
	// once, over all peers: handshakes in progress, plus established
	// connections of peers accepted unattested. Default 64.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerIP bounds the same per peer IP address.
	// Default 8.
	MaxUnauthenticatedPerIP int
	// HandshakesPerSecondPerIP and HandshakeBurstPerIP are a token bucket
	// per peer IP for new connections, taken before any TLS work. Default
	// 10/s, burst 40.
	HandshakesPerSecondPerIP float64
	HandshakeBurstPerIP      int
	// FrameMemory bounds the bytes of attestation frames read from
	// unauthenticated peers and held at once, over all connections. A frame
	// is charged as its buffer grows, which is only as its bytes arrive; a
	// handshake that would exceed the budget fails with ErrBusy. Each growth
	// of a frame's buffer is charged, so a frame of n bytes costs up to 2n;
	// FrameMemory must be at least 2*MaxFrameSize. Default 16 MiB.
	FrameMemory int64
	// QuotesPerSecond and QuoteBurst are a token bucket, over all peers, for
	// the evidence a server with Config.AcceptUnattestedPeer issues: each
	// costs the node a hardware quote, and the peer proved nothing.
	// Default 10/s, burst 20.
	QuotesPerSecond float64
	QuoteBurst      int
	// QuotesPerSecondPerIP and QuoteBurstPerIP are the same per peer IP.
	// Default 2/s, burst 10.
	QuotesPerSecondPerIP float64
	QuoteBurstPerIP      int
}

// Defaults of Limits. An operator's CLI opens one or two connections per
// command; a node's rejoin opens one per attempt.
const (
	defaultMaxUnauthenticated       = 64
	defaultMaxUnauthenticatedPerIP  = 8
	defaultHandshakesPerSecondPerIP = 10
	defaultHandshakeBurstPerIP      = 40
	defaultFrameMemory              = 16 << 20
	defaultQuotesPerSecond          = 10
	defaultQuoteBurst               = 20
	defaultQuotesPerSecondPerIP     = 2
	defaultQuoteBurstPerIP          = 10
)

// withDefaults checks l and fills its zero fields.
func (l Limits) withDefaults() (Limits, error) {
	var errs []error
	intField := func(name string, v *int, def int) {
		switch {
		case *v < 0:
			errs = append(errs, fmt.Errorf("atls: Config.Limits.%s is negative (%d): set a positive value, or zero for %d", name, *v, def))
		case *v == 0:
			*v = def
		}
	}
	rateField := func(name string, v *float64, def float64) {
		switch {
		case *v < 0:
			errs = append(errs, fmt.Errorf("atls: Config.Limits.%s is negative (%v): set a positive rate, or zero for %v/s", name, *v, def))
		case *v == 0:
			*v = def
		}
	}
	intField("MaxUnauthenticated", &l.MaxUnauthenticated, defaultMaxUnauthenticated)
	intField("MaxUnauthenticatedPerIP", &l.MaxUnauthenticatedPerIP, defaultMaxUnauthenticatedPerIP)
	rateField("HandshakesPerSecondPerIP", &l.HandshakesPerSecondPerIP, defaultHandshakesPerSecondPerIP)
	intField("HandshakeBurstPerIP", &l.HandshakeBurstPerIP, defaultHandshakeBurstPerIP)
	rateField("QuotesPerSecond", &l.QuotesPerSecond, defaultQuotesPerSecond)
	intField("QuoteBurst", &l.QuoteBurst, defaultQuoteBurst)
	rateField("QuotesPerSecondPerIP", &l.QuotesPerSecondPerIP, defaultQuotesPerSecondPerIP)
	intField("QuoteBurstPerIP", &l.QuoteBurstPerIP, defaultQuoteBurstPerIP)
	switch {
	case l.FrameMemory < 0:
		errs = append(errs, fmt.Errorf("atls: Config.Limits.FrameMemory is negative (%d): set at least 2*MaxFrameSize (%d), or zero for %d", l.FrameMemory, 2*MaxFrameSize, defaultFrameMemory))
	case l.FrameMemory == 0:
		l.FrameMemory = defaultFrameMemory
	case l.FrameMemory < 2*MaxFrameSize:
		errs = append(errs, fmt.Errorf("atls: Config.Limits.FrameMemory: want at least 2*MaxFrameSize (%d), got %d", 2*MaxFrameSize, l.FrameMemory))
	}
	return l, errors.Join(errs...)
}

// guard enforces Limits for one Credentials (and its clones: they share it).
type guard struct {
	limits     Limits
	handshakes *ratelimit.Limiter // per IP
	quotes     *ratelimit.Limiter // per IP
	allQuotes  *ratelimit.Limiter // one key: all peers
	memory     *budget

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func newGuard(l Limits) *guard {
	return &guard{
		limits:     l,
		handshakes: ratelimit.New(ratelimit.Options{PerSecond: l.HandshakesPerSecondPerIP, Burst: l.HandshakeBurstPerIP}),
		quotes:     ratelimit.New(ratelimit.Options{PerSecond: l.QuotesPerSecondPerIP, Burst: l.QuoteBurstPerIP}),
		allQuotes:  ratelimit.New(ratelimit.Options{PerSecond: l.QuotesPerSecond, Burst: l.QuoteBurst}),
		memory:     &budget{limit: l.FrameMemory},
		perIP:      map[string]int{},
	}
}

// admit takes a slot for a new connection from ip, after its rate. The
// returned release gives the slot back; it may be called more than once.
func (g *guard) admit(ip string) (release func(), err error) {
	if !g.handshakes.Allow(ip) {
		return nil, fmt.Errorf("atls: %w: peer %s over its rate of %v connections/s (burst %d)", ErrBusy, ip, g.limits.HandshakesPerSecondPerIP, g.limits.HandshakeBurstPerIP)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.total >= g.limits.MaxUnauthenticated:
		return nil, fmt.Errorf("atls: %w: unauthenticated connections: want at most %d, got %d", ErrBusy, g.limits.MaxUnauthenticated, g.total+1)
	case g.perIP[ip] >= g.limits.MaxUnauthenticatedPerIP:
		return nil, fmt.Errorf("atls: %w: unauthenticated connections from %s: want at most %d, got %d", ErrBusy, ip, g.limits.MaxUnauthenticatedPerIP, g.perIP[ip]+1)
	}
	g.total++
	g.perIP[ip]++
	var once sync.Once
	return func() { once.Do(func() { g.leave(ip) }) }, nil
}

func (g *guard) leave(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// allowQuote takes a quote token for a peer that did not attest: from ip's
// bucket and from the global one. A refused peer's token is not returned:
// a flood then also drains its own bucket.
func (g *guard) allowQuote(ip string) error {
	if !g.quotes.Allow(ip) {
		return fmt.Errorf("atls: %w: evidence for unattested peer %s over its rate of %v/s (burst %d)", ErrBusy, ip, g.limits.QuotesPerSecondPerIP, g.limits.QuoteBurstPerIP)
	}
	if !g.allQuotes.Allow("") {
		return fmt.Errorf("atls: %w: evidence for unattested peers over the rate of %v/s (burst %d)", ErrBusy, g.limits.QuotesPerSecond, g.limits.QuoteBurst)
	}
	return nil
}

// budget is a byte budget shared by connections; charges are taken before
// memory is allocated, so the budget bounds what unauthenticated peers hold.
type budget struct {
	limit int64

	mu   sync.Mutex
	used int64
}

// take charges n bytes or reports ErrBusy without charging anything.
func (b *budget) take(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return fmt.Errorf("atls: %w: frame memory of unauthenticated peers: want at most %d bytes, got %d", ErrBusy, b.limit, b.used+n)
	}
	b.used += n
	return nil
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// charge is one connection's account with a budget: what it took is given
// back at once by release. A nil charge charges nothing (the client side).
type charge struct {
	b     *budget
	taken int64
}

func (c *charge) take(n int64) error {
	if c == nil {
		return nil
	}
	if err := c.b.take(n); err != nil {
		return err
	}
	c.taken += n
	return nil
}

func (c *charge) release() {
	if c == nil {
		return
	}
	c.b.give(c.taken)
	c.taken = 0
}

// peerIP is the key of a peer for the limits: its IP without the port, so
// that new source ports do not escape a per-IP limit.
func peerIP(a net.Addr) string { return ratelimit.HostKey(a) }

// releasingConn gives its guard slot back when closed: the connection of a
// peer accepted unattested stays unauthenticated for its whole life.
type releasingConn struct {
	net.Conn
	release func()
}

func (c *releasingConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
