package harness

import (
	"io"
	"net"
	"strconv"
	"sync"
)

// Proxy forwards TCP connections from a port on 127.0.0.1 to a target
// address, and can be switched off: then nothing listens on its port and
// connections are refused, as when the service behind it is down. Guests
// reach it at 10.0.2.2:Port(). It stops with the test.
type Proxy struct {
	target string
	port   int

	mu sync.Mutex
	ln net.Listener // nil while switched off
	wg sync.WaitGroup
}

// NewProxy starts a proxy to target, switched on if up.
func NewProxy(t TB, target string, up bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &Proxy{target: target, port: ln.Addr().(*net.TCPAddr).Port}
	p.serve(ln)
	if !up {
		p.SetUp(t, false)
	}
	t.Cleanup(func() {
		p.SetUp(t, false)
		p.wg.Wait()
	})
	return p
}

// Port is the proxy's port on 127.0.0.1.
func (p *Proxy) Port() int { return p.port }

// SetUp switches forwarding on (listening again on the same port) or off;
// connections already forwarded stay.
func (p *Proxy) SetUp(t TB, up bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case up && p.ln == nil:
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)))
		if err != nil {
			t.Fatalf("proxy: listening again on %d: %v", p.port, err)
		}
		p.serveLocked(ln)
	case !up && p.ln != nil:
		p.ln.Close()
		p.ln = nil
	}
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}

func (p *Proxy) serveLocked(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(c)
			}()
		}
	}()
}

func (p *Proxy) forward(c net.Conn) {
	defer c.Close()
	b, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}
