package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

func (pk *parker) count() int {
	pk.mu.Lock()
	defer pk.mu.Unlock()
	return len(pk.parked)
}

// waitParked waits until n directions are parked.
func waitParked(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.parker.count() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked, want %d", p.parker.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Idle relayed connections park both directions (no goroutine each) and
// carry on when bytes arrive, any number of times.
func TestIdleDirectionsParkAndResume(t *testing.T) {
	h := newHarnessWith(t, Hooks{}, goroutinesOnly) // the parker is the goroutine relay's
	h.server(echoServer)
	const n = 50
	cs := make([]*net.TCPConn, n)
	for i := range cs {
		cs[i] = h.dial()
		echo(t, cs[i], "hello")
	}
	waitParked(t, h.p, 2*n)
	for round := range 3 {
		for _, c := range cs {
			echo(t, c, "again")
		}
		waitParked(t, h.p, 2*n)
		t.Logf("round %d: all %d directions parked again", round, 2*n)
	}
	// A half-close of a parked connection reaches the server, whose reply
	// and FIN still come back.
	c := cs[0]
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("after half-close: %q, %v; want EOF", b, err)
	}
	for _, c := range cs {
		c.Close()
	}
	h.waitClosed(n)
	if k := h.p.parker.count(); k != 0 {
		t.Fatalf("%d directions still parked after every flow closed", k)
	}
}

// A flow cut while both its directions are parked ends (both sides reset),
// and closing the proxy with parked flows does not hang.
func TestAbortParkedFlow(t *testing.T) {
	h := newHarnessWith(t, Hooks{}, goroutinesOnly) // the parker is the goroutine relay's
	h.server(func(c *net.TCPConn) {
		echoServer(c)
	})
	c1, c2 := h.dial(), h.dial()
	echo(t, c1, "x")
	echo(t, c2, "y")
	waitParked(t, h.p, 4)
	src := c1.LocalAddr().(*net.TCPAddr).AddrPort()
	cut := h.p.CloseFlows(func(f *flow.Flow) bool { return f.Src == src }, "rule changed")
	if cut != 1 {
		t.Fatalf("CloseFlows cut %d flows", cut)
	}
	c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("cut client read = %v, want ECONNRESET", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.p.Stats().Active != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("cut flow never ended: %+v", h.p.Flows(false))
		}
		time.Sleep(time.Millisecond)
	}
	waitParked(t, h.p, 2)
	done := make(chan struct{})
	go func() { h.p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with a parked flow")
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client of a closed proxy read = %v, want ECONNRESET", err)
	}
}

// A reset from the server of a parked flow reaches the client.
func TestResetOfParkedFlow(t *testing.T) {
	h := newHarnessWith(t, Hooks{}, goroutinesOnly) // the parker is the goroutine relay's
	rst := make(chan struct{})
	h.server(func(c *net.TCPConn) {
		b := make([]byte, 1)
		c.Read(b)
		c.Write(b)
		<-rst
		c.SetLinger(0)
	})
	c := h.dial()
	echo(t, c, "x")
	waitParked(t, h.p, 2)
	close(rst)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read = %v, want ECONNRESET", err)
	}
	h.waitClosed(1)
}
