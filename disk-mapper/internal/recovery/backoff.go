package recovery

import (
	"sync"
	"time"
)

// Backoff after wrong keys. A recovery key is 32 random bytes, so guessing
// is hopeless anyway; the backoff keeps a flood of wrong keys from costing
// the node a LUKS2 key check each and from filling its status and log.
// An operator's first tries are free: after freeFailures wrong keys from
// one address, each further try from it waits peerBase, doubling up to
// peerMax. Over all addresses, after globalFree wrong keys, each check
// waits globalBase, doubling up to globalMax: low, so that a flood from
// many addresses delays the operator by seconds, not minutes.
const (
	freeFailures = 3
	peerBase     = time.Second
	peerMax      = time.Minute
	globalFree   = 10
	globalBase   = time.Second
	globalMax    = 10 * time.Second
	// maxPeers bounds the per-address table; when full, the oldest
	// penalties are forgotten (the global one still holds).
	maxPeers = 1024
)

// backoff tracks wrong keys per peer address and over all peers. One check
// per address runs at a time.
type backoff struct {
	now func() time.Time

	mu     sync.Mutex
	global penalty
	peers  map[string]*penalty
}

type penalty struct {
	failures int
	next     time.Time // no check before
	inFlight bool
	last     time.Time
}

func newBackoff(now func() time.Time) *backoff {
	return &backoff{now: now, peers: map[string]*penalty{}}
}

// delay is the wait after failures wrong keys.
func delay(failures, free int, base, max time.Duration) time.Duration {
	if failures < free {
		return 0
	}
	d := base
	for i := free; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// admit reports how long ip must still wait; zero admits one check, which
// the caller ends with done.
func (b *backoff) admit(ip string) time.Duration {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[ip]
	if p == nil {
		if len(b.peers) >= maxPeers {
			b.forgetOldest()
		}
		p = &penalty{}
		b.peers[ip] = p
	}
	p.last = now
	switch {
	case p.inFlight:
		return peerBase
	case now.Before(p.next):
		return p.next.Sub(now)
	case now.Before(b.global.next):
		return b.global.next.Sub(now)
	}
	p.inFlight = true
	return 0
}

// done ends ip's check; wrong says whether the key was wrong.
func (b *backoff) done(ip string, wrong bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[ip]
	if p == nil {
		p = &penalty{}
		b.peers[ip] = p
	}
	p.inFlight = false
	if !wrong {
		return
	}
	p.failures++
	p.next = now.Add(delay(p.failures, freeFailures, peerBase, peerMax))
	b.global.failures++
	b.global.next = now.Add(delay(b.global.failures, globalFree, globalBase, globalMax))
}

// forgetOldest drops the least recently seen idle peer. Called with b.mu held.
func (b *backoff) forgetOldest() {
	var oldest string
	var at time.Time
	for ip, p := range b.peers {
		if !p.inFlight && (oldest == "" || p.last.Before(at)) {
			oldest, at = ip, p.last
		}
	}
	delete(b.peers, oldest)
}
