package ratelimit

import (
	"net"
	"sync"
)

// ConnLimit wraps a listener so that at most max of its connections are
// open at once, whoever opens them. It is for plain (unattested) ports,
// where nothing is worth a per-peer budget but every connection costs
// buffers and a goroutine or two: without a cap, one client opening
// connections and never closing them grows the process without bound.
//
// A connection over the cap is held, not refused: Accept waits for a slot,
// so the connection waits in the kernel's accept queue (costing the process
// nothing) and is served as soon as another one closes. Slots free up only
// as connections close, so the server must close idle and silent ones
// itself (gRPC keepalive and connection timeouts, HTTP timeouts).
type ConnLimit struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// LimitConns returns lis with at most max connections open at once.
func LimitConns(lis net.Listener, max int) *ConnLimit {
	return &ConnLimit{Listener: lis, slots: make(chan struct{}, max), done: make(chan struct{})}
}

// Accept waits for a free slot, then for the next connection.
func (l *ConnLimit) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

// Close closes the listener and ends an Accept waiting for a slot.
func (l *ConnLimit) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	release func()
}

// Close frees the connection's slot once, however often it is called.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
