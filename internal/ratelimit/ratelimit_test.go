package ratelimit

import (
	"net"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLimiterBurstThenRate(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := New(Options{PerSecond: 2, Burst: 3, Now: clk.now})
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("burst event %d refused", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("4th event within the same instant allowed")
	}
	if !l.Allow("b") {
		t.Fatal("another peer is limited by a's bucket")
	}
	clk.t = clk.t.Add(500 * time.Millisecond) // one token at 2/s
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("refill after 500ms should give exactly one token")
	}
	clk.t = clk.t.Add(time.Hour)
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("refilled bucket exceeds burst? event %d refused", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("bucket refilled beyond its burst")
	}
}

func TestLimiterBoundsMemory(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	l := New(Options{PerSecond: 1, Burst: 1, MaxKeys: 10, Now: clk.now})
	for i := range 100 {
		l.Allow(net.IPv4(10, 0, 0, byte(i)).String())
		clk.t = clk.t.Add(2 * time.Second) // every earlier bucket is full again
	}
	if n := len(l.buckets); n > 10 {
		t.Errorf("%d buckets kept, limit 10", n)
	}
}

func TestListenerRefusesOverRate(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan net.Addr, 10)
	ln := &Listener{Listener: inner, Limiter: New(Options{PerSecond: 0.001, Burst: 2}), OnRefuse: func(a net.Addr) { refused <- a }}
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 2 {
		select {
		case c := <-accepted:
			c.Close()
		case <-time.After(5 * time.Second):
			t.Fatal("connection within burst not accepted")
		}
	}
	select {
	case a := <-refused:
		if HostKey(a) != "127.0.0.1" {
			t.Errorf("refused %v", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third connection was not refused")
	}
}
