package atls

import (
	"context"
	"fmt"
	"sync"

	"github.com/cloister-dev/cloister/internal/attestation"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// DefaultPeerQueue is how many peer-triggered Issue calls may wait for the
// device when PriorityIssuer's queue length is zero.
const DefaultPeerQueue = 4

// PriorityIssuer shares one issuer (one TPM, one TEE device) between the
// node's own attestation and the evidence its servers issue for peers. A
// device quotes one request at a time; without an order, a flood of peers
// on a node's attested ports would queue the node's own quote behind theirs
// and make its rejoin miss its deadline. PriorityIssuer runs one Issue at a
// time on the device, always starts a waiting Own call before a waiting
// Peers call, and lets at most a bounded number of Peers calls wait: more
// fail at once with ErrBusy. The node's own quote therefore waits at most
// for the one peer quote in progress.
//
// Build one per daemon, in main, around the daemon's issuer; give Own() to
// the credentials this node dials with and Peers() to the credentials of
// its servers.
type PriorityIssuer struct {
	issuer   attestation.Issuer
	maxQueue int

	mu   sync.Mutex
	busy bool
	own  []chan struct{} // waiting Own calls, in order
	peer []chan struct{} // waiting Peers calls, in order
}

// NewPriorityIssuer wraps issuer. peerQueue bounds the waiting
// peer-triggered calls; zero means DefaultPeerQueue.
func NewPriorityIssuer(issuer attestation.Issuer, peerQueue int) (*PriorityIssuer, error) {
	switch {
	case issuer == nil:
		return nil, fmt.Errorf("atls: NewPriorityIssuer: no issuer")
	case peerQueue < 0:
		return nil, fmt.Errorf("atls: NewPriorityIssuer: peer queue is negative (%d): set a positive length, or zero for %d", peerQueue, DefaultPeerQueue)
	case peerQueue == 0:
		peerQueue = DefaultPeerQueue
	}
	return &PriorityIssuer{issuer: issuer, maxQueue: peerQueue}, nil
}

// Own returns the issuer for this node's own attestation: high priority.
func (p *PriorityIssuer) Own() attestation.Issuer { return p.wrap(true) }

// Peers returns the issuer for evidence a peer's connection triggers: low
// priority, bounded queue.
func (p *PriorityIssuer) Peers() attestation.Issuer { return p.wrap(false) }

func (p *PriorityIssuer) wrap(own bool) attestation.Issuer {
	g := gatedIssuer{gate: p, own: own}
	if _, ok := p.issuer.(attestation.Responder); ok {
		return gatedResponder{g}
	}
	return g
}

// acquire waits for the device. It fails with ErrBusy when a peer call finds
// the queue full, and with ctx's error when ctx ends first.
func (p *PriorityIssuer) acquire(ctx context.Context, own bool) error {
	p.mu.Lock()
	if !p.busy && len(p.own) == 0 && (own || len(p.peer) == 0) {
		p.busy = true
		p.mu.Unlock()
		return nil
	}
	if !own && len(p.peer) >= p.maxQueue {
		p.mu.Unlock()
		return fmt.Errorf("atls: %w: %d peer-triggered quotes already wait for the device", ErrBusy, len(p.peer))
	}
	ch := make(chan struct{})
	if own {
		p.own = append(p.own, ch)
	} else {
		p.peer = append(p.peer, ch)
	}
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if removeWaiter(&p.own, ch) || removeWaiter(&p.peer, ch) {
		p.mu.Unlock()
		return ctx.Err()
	}
	p.mu.Unlock()
	// Granted while ctx ended: pass the device on.
	p.release()
	return ctx.Err()
}

// release hands the device to the first waiting Own call, else to the
// first waiting Peers call, else frees it.
func (p *PriorityIssuer) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case len(p.own) > 0:
		close(p.own[0])
		p.own = p.own[1:]
	case len(p.peer) > 0:
		close(p.peer[0])
		p.peer = p.peer[1:]
	default:
		p.busy = false
	}
}

func removeWaiter(q *[]chan struct{}, ch chan struct{}) bool {
	for i, c := range *q {
		if c == ch {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false
}

type gatedIssuer struct {
	gate *PriorityIssuer
	own  bool
}

var (
	_ attestation.Issuer    = gatedIssuer{}
	_ attestation.Responder = gatedResponder{}
)

func (g gatedIssuer) Variant() attestation.Variant { return g.gate.issuer.Variant() }

func (g gatedIssuer) Issue(ctx context.Context, userData []byte) (*attestationv1.Evidence, error) {
	if err := g.gate.acquire(ctx, g.own); err != nil {
		return nil, err
	}
	defer g.gate.release()
	return g.gate.issuer.Issue(ctx, userData)
}

// gatedResponder also answers activation challenges, through the same gate:
// the answer is a device operation too.
type gatedResponder struct{ gatedIssuer }

func (g gatedResponder) Respond(ctx context.Context, ch *attestationv1.ActivationChallenge) ([]byte, error) {
	if err := g.gate.acquire(ctx, g.own); err != nil {
		return nil, err
	}
	defer g.gate.release()
	return g.gate.issuer.(attestation.Responder).Respond(ctx, ch)
}
