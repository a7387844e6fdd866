package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/flow"
)

// loopsOnly skips a test of the event loops when the suite runs its second
// pass on the goroutine relay.
func loopsOnly(t *testing.T) {
	t.Helper()
	if goroutineRelay {
		t.Skip("a test of the event loops")
	}
}

// liveConn returns the proxy's only live flow.
func liveConn(t *testing.T, p *Proxy) *conn {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.live) != 1 {
		t.Fatalf("%d live flows, want 1", len(p.live))
	}
	for _, c := range p.live {
		return c
	}
	return nil
}

// The loops relay flows that need not wait, and an idle flow costs them no
// goroutine at all (nor a pipe: TestIdleRelayHoldsNoPipe).
func TestLoopOwnsFlowsWithoutGoroutines(t *testing.T) {
	loopsOnly(t)
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	c := h.dial()
	echo(t, c, "first")
	if liveConn(t, h.p).lp.Load() == nil {
		t.Fatal("the flow is not on an event loop")
	}
	g0 := runtime.NumGoroutine()
	const n = 300
	for i := 0; i < n; i++ {
		echo(t, h.dial(), "x")
	}
	time.Sleep(20 * time.Millisecond) // what would linger on goroutines has ended
	// The echo server holds one goroutine per connection; the relay none.
	if g := runtime.NumGoroutine() - g0; g > n+10 {
		t.Fatalf("%d more goroutines for %d idle relayed connections (the server's %d included)", g, n, n)
	}
	echo(t, c, "still relayed")
}

// A flow whose limiter may wait (a rate limit) is relayed on goroutines
// from the start, with the same bytes and counters.
func TestLoopHandsRateLimitedFlowToGoroutines(t *testing.T) {
	loopsOnly(t)
	lim := &fakeLimiter{max: 64 << 10, quota: 1 << 40}
	lim.waits.Store(true)
	h := newHarness(t, Hooks{Limit: func(f *flow.Flow) (Limiter, error) { return lim, nil }})
	const size = 8 << 20
	h.server(func(c *net.TCPConn) { io.CopyN(c, stream(), size) })
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := sha256.New()
	if n, err := io.Copy(got, c); n != size || err != nil {
		t.Fatalf("client got %d bytes, %v; want %d", n, err, size)
	}
	checkHandedOver(t, h, c, got, lim, size, size)
}

// checkHandedOver checks that what the client got (hashed in got) is the
// server's streams of the given sizes, in order, and that the flow, once the
// client closed, counted every byte and went through the goroutine relay
// (its limiter was asked while it said it may wait).
func checkHandedOver(t *testing.T, h *harness, c *net.TCPConn, got hash.Hash, lim *fakeLimiter, total int64, parts ...int64) {
	t.Helper()
	want := sha256.New()
	for _, n := range parts {
		io.CopyN(want, stream(), n)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("bytes differ")
	}
	c.Close()
	fs := h.waitClosed(1)
	if fs[0].BytesIn != total || lim.grants.Load() == 0 || !lim.closed.Load() {
		t.Fatalf("flow %+v; limiter asked %d times while it may wait, closed %v", fs[0], lim.grants.Load(), lim.closed.Load())
	}
}

// A rate limit that starts to apply mid-flow moves the flow to goroutines,
// which may wait, without losing, repeating or miscounting a byte.
func TestLoopHandsOffMidFlow(t *testing.T) {
	loopsOnly(t)
	lim := &fakeLimiter{max: 1 << 20, quota: 1 << 40}
	h := newHarness(t, Hooks{Limit: func(f *flow.Flow) (Limiter, error) { return lim, nil }})
	const size = 64 << 20
	start := make(chan struct{})
	h.server(func(c *net.TCPConn) {
		io.CopyN(c, stream(), 1<<20)
		<-start
		io.CopyN(c, stream(), size-1<<20)
	})
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := sha256.New()
	if _, err := io.CopyN(got, c, 1<<20); err != nil {
		t.Fatal(err)
	}
	if liveConn(t, h.p).lp.Load() == nil {
		t.Fatal("the flow is not on an event loop before the rule")
	}
	lim.waits.Store(true) // a rate rule was added
	close(start)
	if n, err := io.Copy(got, c); n != size-1<<20 || err != nil {
		t.Fatalf("client got %d more bytes, %v; want %d", n, err, size-1<<20)
	}
	checkHandedOver(t, h, c, got, lim, size, 1<<20, size-1<<20)
}

// An upstream that never answers the SYN is given up after DialTimeout and
// the client reset, on either relay. The server's accept queue is full, so
// the kernel drops new SYNs (loopback only, nothing leaves the machine).
func TestDialTimeout(t *testing.T) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(lfd)
	target := addrPortOf(sa)
	// Fill the accept queue: nothing accepts here.
	for i := 0; i < 3; i++ {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		if c, err := d.Dial("tcp", target.String()); err == nil {
			defer c.Close()
		}
	}
	h := newHarnessWith(t, Hooks{}, func(c *Config) { c.DialTimeout = 300 * time.Millisecond })
	h.target.Store(target)
	start := time.Now()
	h.expectReset()
	fs := h.waitClosed(1)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("reset after %v, want about the 300ms dial timeout", el)
	}
	if !strings.Contains(fs[0].Err, "timeout") {
		t.Fatalf("flow error %q, want a timeout", fs[0].Err)
	}
	if st := h.p.Stats(); st.Failed != 1 {
		t.Fatalf("failed flows %d, want 1", st.Failed)
	}
}

// CutFlows (a quota ran out elsewhere) ends a loop's flow cleanly: FIN to
// both sides, no reset.
func TestCutFlowsOnLoop(t *testing.T) {
	h := newHarness(t, Hooks{})
	srvEOF := make(chan error, 1)
	h.server(func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		_, err := io.Copy(io.Discard, c)
		srvEOF <- err
	})
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if n := h.p.CutFlows(func(*flow.Flow) bool { return true }, "quota used up"); n != 1 {
		t.Fatalf("CutFlows cut %d flows, want 1", n)
	}
	if n, err := c.Read(b); n != 0 || err != io.EOF {
		t.Fatalf("client read after the cut: %d, %v; want EOF", n, err)
	}
	select {
	case err := <-srvEOF:
		if err != nil {
			t.Fatalf("server saw %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no EOF")
	}
	if fs := h.waitClosed(1); fs[0].Err != "quota used up" {
		t.Fatalf("flow %+v", fs[0])
	}
}

// Redirected IPv6 connections run on the loops too.
func TestLoopIPv6(t *testing.T) {
	ln, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() { defer c.Close(); echoServer(c) }()
		}
	}()
	h := newHarnessWith(t, Hooks{}, func(c *Config) {
		c.Listen = []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}
	})
	h.target.Store(ln.Addr().(*net.TCPAddr).AddrPort())
	c := h.dial()
	echo(t, c, "over v6")
	c.Close()
	fs := h.waitClosed(1)
	if !fs[0].Src.Addr().Is6() || fs[0].BytesOut != 7 || fs[0].BytesIn != 7 {
		t.Fatalf("flow %+v", fs[0])
	}
}

// A connection the loops cannot give an upstream socket to is reset, not
// leaked, and the proxy goes on: whether DialControl or MarkFD refuses.
func TestLoopSocketFailure(t *testing.T) {
	refuse := map[string]func(*Config){
		"DialControl": func(c *Config) {
			c.DialControl = func(string, string, syscall.RawConn) error { return errors.New("mark refused") }
		},
		"MarkFD": func(c *Config) { c.MarkFD = func(int) error { return errors.New("mark refused") } },
	}
	for name, edit := range refuse {
		t.Run(name, func(t *testing.T) {
			if name == "MarkFD" {
				loopsOnly(t) // the goroutine relay dials with DialControl
			}
			h := newHarnessWith(t, Hooks{}, edit)
			h.server(echoServer)
			h.expectReset()
			if fs := h.waitClosed(1); !strings.Contains(fs[0].Err, "mark refused") {
				t.Fatalf("flow %+v", fs[0])
			}
		})
	}
}

// The loops mark their upstream sockets through MarkFD when it is set (a
// socket not yet connected), not through DialControl.
func TestLoopMarkFD(t *testing.T) {
	loopsOnly(t)
	var marked, controlled atomic.Int32
	h := newHarnessWith(t, Hooks{}, func(c *Config) {
		c.DialControl = func(string, string, syscall.RawConn) error { controlled.Add(1); return nil }
		c.MarkFD = func(fd int) error {
			if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
				return fmt.Errorf("MarkFD on fd %d: type %d, %v", fd, typ, err)
			}
			if _, err := unix.Getpeername(fd); err != unix.ENOTCONN {
				return fmt.Errorf("MarkFD on a connected socket (%v)", err)
			}
			marked.Add(1)
			return nil
		}
	})
	h.server(echoServer)
	c := h.dial()
	echo(t, c, "marked")
	c.Close()
	if fs := h.waitClosed(1); fs[0].Err != "" {
		t.Fatalf("flow %+v", fs[0])
	}
	if marked.Load() != 1 || controlled.Load() != 0 {
		t.Fatalf("MarkFD called %d times, DialControl %d; want 1 and 0", marked.Load(), controlled.Load())
	}
}

// stream returns the same endless byte sequence each time: a long transfer
// checked by hash without holding it in memory.
func stream() io.Reader { return &pattern{} }

type pattern struct{ i uint64 }

func (r *pattern) Read(b []byte) (int, error) {
	for k := range b {
		b[k] = byte((r.i * 2654435761) >> 13)
		r.i++
	}
	return len(b), nil
}

// With host-name rules the loop itself waits (bounded) for the client's
// first bytes before deciding: a client that sends nothing is decided after
// PeekWait, a request split over two writes is read whole, and both flows
// stay on the loop.
func TestLoopWaitsForHost(t *testing.T) {
	loopsOnly(t)
	var mu sync.Mutex
	var decided []string
	h := newHarness(t, Hooks{
		NeedsHost: func(*flow.Flow) bool { return true },
		Decide: func(f *flow.Flow) Action {
			mu.Lock()
			decided = append(decided, f.Host)
			mu.Unlock()
			return Allow
		},
	})
	h.server(func(c *net.TCPConn) {
		c.Write([]byte("220 ready\r\n"))
		io.Copy(io.Discard, c)
	})
	c := h.dial()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 11)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "220 ready\r\n" {
		t.Fatalf("banner %q, %v", b, err)
	}
	if el := time.Since(start); el < 40*time.Millisecond || el > 2*time.Second {
		t.Errorf("a client that sends nothing was decided after %v, want about PeekWait (50ms)", el)
	}
	if liveConn(t, h.p).lp.Load() == nil {
		t.Error("the flow left the loop")
	}
	c.Close()
	h.waitClosed(1)

	c = h.dial()
	c.Write([]byte("GET / HTTP/1.1\r\nHo"))
	time.Sleep(3 * time.Millisecond)
	c.Write([]byte("st: split.example.test\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if liveConn(t, h.p).lp.Load() == nil {
		t.Error("the flow left the loop")
	}
	c.Close()
	fs := h.waitClosed(2)
	mu.Lock()
	defer mu.Unlock()
	if len(decided) != 2 || decided[0] != "" || decided[1] != "split.example.test" {
		t.Fatalf("decided on hosts %q, want \"\" then split.example.test", decided)
	}
	sortByID(fs)
	if fs[1].Host != "split.example.test" || fs[1].HostSource != flow.HostHTTP {
		t.Fatalf("flow %+v", fs[1])
	}
}

// Without host-name rules the loop decides at once and names the host from
// the client's first bytes as it relays them (its first read is a copy):
// the Sniffed hook hears it, the flow record keeps it, the bytes arrive
// whole, and a client whose first bytes name nothing gets no name.
func TestLoopNamesFromFirstRead(t *testing.T) {
	loopsOnly(t)
	var mu sync.Mutex
	var heard []string
	h := newHarness(t, Hooks{
		Sniffed: func(f *flow.Flow) {
			mu.Lock()
			heard = append(heard, f.Host)
			mu.Unlock()
		},
	})
	h.server(func(c *net.TCPConn) { io.Copy(c, c) })
	for _, req := range []string{"GET / HTTP/1.1\r\nHost: after.example.test\r\n\r\n", "SSH-2.0-x\r\n"} {
		c := h.dial()
		c.Write([]byte(req))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, len(req))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != req {
			t.Fatalf("echo %q, %v", b, err)
		}
		c.Close()
	}
	fs := h.waitClosed(2)
	sortByID(fs)
	if fs[0].Host != "after.example.test" || fs[0].HostSource != flow.HostHTTP {
		t.Errorf("HTTP flow named %q from %q, want after.example.test from http", fs[0].Host, fs[0].HostSource)
	}
	if fs[1].HostSource == flow.HostHTTP || fs[1].HostSource == flow.HostSNI {
		t.Errorf("SSH flow named %q from %q", fs[1].Host, fs[1].HostSource)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 1 || heard[0] != "after.example.test" {
		t.Errorf("Sniffed heard %q, want once after.example.test", heard)
	}
}

// A direction reads at most its loop's budget times per turn, then waits on the
// ready list with its bytes still unread, so a bulk flow cannot keep its
// loop from the other flows for as long as its sender keeps up.
func TestMoveBudget(t *testing.T) {
	// src: 6 MiB waiting in a socket with room for them; dst: drained.
	srcFar, srcNear := tcpPair(t)
	unix.SetsockoptInt(fdOf(t, srcNear), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	dstNear, dstFar := tcpPair(t)
	go io.Copy(io.Discard, dstFar)
	const size = 6 << 20
	if _, err := io.CopyN(srcFar, stream(), size); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // all in srcNear's receive queue
	l, fl := loopFlow(t, 2, fdOf(t, srcNear), fdOf(t, dstNear))
	p, c := l.p, fl.c
	if err := l.move(&fl.cli); err != nil {
		t.Fatal(err)
	}
	moved := c.out.Load()
	if !fl.queued || len(l.ready) != 1 || moved == 0 || moved > 2<<20 {
		t.Fatalf("after one turn: queued %v, ready %d, moved %d bytes; want queued with at most 2 reads (2 MiB) moved", fl.queued, len(l.ready), moved)
	}
	// Later turns carry on where it stopped (a full destination is waited
	// for, as its EPOLLOUT would), until every byte went through.
	deadline := time.Now().Add(10 * time.Second)
	for fl.queued = false; c.out.Load() < size || fl.cli.inPipe > 0; fl.queued = false {
		if err := l.move(&fl.cli); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("stuck at %d of %d bytes", c.out.Load(), size)
		}
		time.Sleep(time.Millisecond)
	}
	if fl.cli.havePP {
		p.pipes.put(fl.cli.pp)
	}
}

// A small burst is copied; what a full peer does not take waits in a pipe
// and reaches the peer, in order, once it reads again.
func TestCopyBurstFullPeer(t *testing.T) {
	srcFar, srcNear := tcpPair(t)
	dstNear, dstFar := tcpPair(t)
	// Fill dst: its send queue and dstFar's receive queue, with nobody
	// reading.
	dfd := fdOf(t, dstNear)
	unix.SetsockoptInt(dfd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	unix.SetsockoptInt(fdOf(t, dstFar), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	junk := make([]byte, 64<<10)
	filled := 0
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, err := rawWrite(dfd, junk)
		if err == unix.EAGAIN {
			time.Sleep(20 * time.Millisecond) // let the receiver's window close too
			if n, err = rawWrite(dfd, junk); err == unix.EAGAIN {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		filled += n
		if time.Now().After(deadline) {
			t.Fatal("destination never filled")
		}
	}
	const size = 10000 // under copyBuf: one copy, no splice
	want := make([]byte, size)
	io.ReadFull(stream(), want)
	if _, err := srcFar.Write(want); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)

	l, fl := loopFlow(t, moveBudget, fdOf(t, srcNear), dfd)
	c := fl.c
	if err := l.move(&fl.cli); err != nil {
		t.Fatal(err)
	}
	if got := c.out.Load(); got != size {
		t.Fatalf("counted %d bytes out, want %d", got, size)
	}
	if !fl.cli.havePP || fl.cli.inPipe == 0 || fl.cli.bulk {
		t.Fatalf("after a copy into a full peer: pipe %v holding %d, bulk %v; want the rest held in a pipe", fl.cli.havePP, fl.cli.inPipe, fl.cli.bulk)
	}

	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, filled+size)
		dstFar.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadFull(dstFar, b)
		got <- b[:n]
	}()
	for deadline := time.Now().Add(10 * time.Second); fl.cli.inPipe > 0; {
		if err := l.move(&fl.cli); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still held after 10 s", fl.cli.inPipe)
		}
		time.Sleep(time.Millisecond)
	}
	b := <-got
	if len(b) != filled+size || !bytes.Equal(b[filled:], want) {
		t.Fatalf("peer read %d bytes (want %d); the burst arrived intact: %v", len(b), filled+size, len(b) == filled+size && bytes.Equal(b[filled:], want))
	}
	if fl.cli.havePP {
		t.Fatal("the drained pipe was kept")
	}
}

// loopFlow returns a loop of a proxy that serves nothing (closed with the
// test) and a flow on it from the socket cli to up, for driving move by hand.
func loopFlow(t *testing.T, budget, cli, up int) (*loop, *lflow) {
	t.Helper()
	p, err := New(Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	l := &loop{p: p, buf: make([]byte, copyBuf), flows: map[int]*lside{}, budget: budget}
	fl := &lflow{c: &conn{p: p, ctx: p.ctx, cancel: noCancel}}
	fl.cli = lside{fd: cli, fl: fl, d: Out}
	fl.up = lside{fd: up, fl: fl, d: In}
	fl.cli.peer, fl.up.peer = &fl.up, &fl.cli
	return l, fl
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// A flow whose process only the slow lookup can name (no BPF record) is
// identified on a goroutine, not on the loop, and relayed there; one the
// fast lookup names stays on the loop and never meets the slow one.
func TestLoopSlowIdentifyOnGoroutine(t *testing.T) {
	loopsOnly(t)
	var fast atomic.Bool
	var slowCalls atomic.Int32
	h := newHarness(t, Hooks{
		IdentifyFast: func(f *flow.Flow) bool {
			if !fast.Load() {
				return false
			}
			f.PID = 7
			return true
		},
		Identify: func(f *flow.Flow) { slowCalls.Add(1); f.PID = 42 },
	})
	h.server(echoServer)
	for _, tc := range []struct {
		fast   bool
		pid    int
		onLoop bool
	}{{false, 42, false}, {true, 7, true}} {
		fast.Store(tc.fast)
		c := h.dial()
		echo(t, c, "who")
		if on := liveConn(t, h.p).lp.Load() != nil; on != tc.onLoop {
			t.Errorf("fast lookup %v: on the loop %v, want %v", tc.fast, on, tc.onLoop)
		}
		c.Close()
		fs := h.waitClosed(1)
		if f := fs[len(fs)-1]; f.PID != tc.pid || f.BytesOut != 3 || f.BytesIn != 3 {
			t.Errorf("fast lookup %v: flow %+v, want pid %d and 3 bytes each way", tc.fast, f, tc.pid)
		}
	}
	if n := slowCalls.Load(); n != 1 {
		t.Errorf("the slow lookup ran %d times, want once (for the flow without a record)", n)
	}
}

// A loop that cannot wait any more (epoll_wait fails: a bug, not a
// condition) resets its flows rather than stranding them, so Close, which
// waits for every flow, still returns, and the daemon can exit.
func TestLoopFailureResetsFlows(t *testing.T) {
	loopsOnly(t)
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	c := h.dial()
	echo(t, c, "x")
	h.p.mu.Lock()
	loops := h.p.loops
	h.p.mu.Unlock()
	for _, l := range loops {
		// Its epoll set closes under it: the next wait fails.
		l.post(func() { l.epf.Close() })
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after its loop failed: %v, want a reset", err)
	}
	done := make(chan struct{})
	go func() { h.p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the loops failed")
	}
}

// addrPortOf converts a sockaddr from x/sys/unix.
func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// A server that speaks first can have its bytes there by the time the
// connect's event is read: that event says EPOLLIN too, and the loop
// relays them then (a later arrival is an event of its own).
func TestLoopConnectEventWithBytes(t *testing.T) {
	cliFar, cliNear := tcpPair(t)
	upNear, upFar := tcpPair(t)
	if _, err := upFar.Write([]byte("220 ready\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	l, fl := loopFlow(t, moveBudget, fdOf(t, cliNear), fdOf(t, upNear))
	fl.dialing = true
	l.dialing = map[*lflow]struct{}{fl: {}}
	l.event(&fl.up, unix.EPOLLOUT|unix.EPOLLIN)
	cliFar.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 11)
	if _, err := io.ReadFull(cliFar, b); err != nil || string(b) != "220 ready\r\n" {
		t.Fatalf("banner %q, %v", b, err)
	}
	if fl.dialing {
		t.Error("flow still dialling after its connect event")
	}
}
