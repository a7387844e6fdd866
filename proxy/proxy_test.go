package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

// harness is a proxy on loopback whose "original destination" is always target.
type harness struct {
	t      *testing.T
	p      *Proxy
	addr   string
	target atomic.Value // netip.AddrPort
}

func newHarness(t *testing.T, hooks Hooks) *harness {
	t.Helper()
	return newHarnessWith(t, hooks, func(*Config) {})
}

// newHarnessWith lets edit adjust the proxy's Config first.
func newHarnessWith(t *testing.T, hooks Hooks, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t}
	cfg := Config{
		Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
			ap, _ := h.target.Load().(netip.AddrPort)
			if !ap.IsValid() {
				return ap, errors.New("no target")
			}
			return ap, nil
		},
		PeekWait:       50 * time.Millisecond,
		Hooks:          hooks,
		GoroutineRelay: goroutineRelay,
	}
	// The event loops (Linux) read the original destination from the socket.
	cfg.OriginalDstFD = func(int, bool) (netip.AddrPort, error) { return cfg.OriginalDst(nil) }
	edit(&cfg)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	h.p = p
	h.addr = p.Addrs()[0].String()
	go p.Serve()
	t.Cleanup(func() { p.Close() })
	return h
}

// server starts a TCP server running fn per connection and points the proxy at it.
func (h *harness) server(fn func(c *net.TCPConn)) {
	h.t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			go func() { defer c.Close(); fn(c) }()
		}
	}()
	h.target.Store(l.Addr().(*net.TCPAddr).AddrPort())
}

func (h *harness) dial() *net.TCPConn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// expectReset dials the proxy and checks the connection is reset: at connect
// (the RST can beat connect's completion on loopback) or at the first read.
func (h *harness) expectReset() {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		h.t.Fatalf("got %v, want ECONNRESET", err)
	}
}

// waitClosed waits until the proxy has no live flow and returns the closed ones.
func (h *harness) waitClosed(n int) []flow.Flow {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		// A flow that ends between the two reads is in fs as a live
		// snapshot (no end time) although Active is 0 by then: look again.
		fs := h.p.Flows(true)
		if st := h.p.Stats(); st.Active == 0 && len(fs) >= n && !slices.ContainsFunc(fs, func(f flow.Flow) bool { return f.End.IsZero() }) {
			return fs
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("flows still live: %+v", h.p.Flows(false))
	return nil
}

func TestLargeTransferBothWays(t *testing.T) {
	h := newHarness(t, Hooks{})
	const size = 16 << 20
	up := make([]byte, size)
	rand.Read(up)
	down := make([]byte, size)
	rand.Read(down)
	var gotUp [32]byte
	srvDone := make(chan struct{})
	h.server(func(c *net.TCPConn) {
		defer close(srvDone)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.Write(down); c.CloseWrite() }()
		hs := sha256.New()
		io.Copy(hs, c)
		copy(gotUp[:], hs.Sum(nil))
		wg.Wait()
	})
	c := h.dial()
	go func() { c.Write(up); c.CloseWrite() }()
	hs := sha256.New()
	if n, err := io.Copy(hs, c); err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	<-srvDone
	if !bytes.Equal(hs.Sum(nil), sha256.New().Sum(nil)) && !bytes.Equal(hs.Sum(nil), sum(down)) {
		t.Fatal("download corrupted")
	}
	if gotUp != [32]byte(sum(up)) {
		t.Fatal("upload corrupted")
	}
	fs := h.waitClosed(1)
	if f := fs[0]; f.BytesIn != size || f.BytesOut != size || f.State != flow.StateClosed || f.Err != "" {
		t.Fatalf("flow record %+v", f)
	}
	if st := h.p.Stats(); st.BytesIn != size || st.BytesOut != size || st.Total != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// The client half-closes and still reads the server's reply.
func TestHalfCloseClientFirst(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(func(c *net.TCPConn) {
		req, _ := io.ReadAll(c) // until the client's FIN
		c.Write(append([]byte("got:"), req...))
	})
	c := h.dial()
	c.Write([]byte("hello"))
	c.CloseWrite()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "got:hello" {
		t.Fatalf("reply %q, %v", resp, err)
	}
	h.waitClosed(1)
}

// The server half-closes first and still reads what the client sends after.
func TestHalfCloseServerFirst(t *testing.T) {
	h := newHarness(t, Hooks{})
	got := make(chan string, 1)
	h.server(func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	})
	c := h.dial()
	b, err := io.ReadAll(c) // ends at the server's FIN
	if err != nil || string(b) != "banner" {
		t.Fatalf("banner %q %v", b, err)
	}
	c.Write([]byte("after-fin"))
	c.CloseWrite()
	if s := <-got; s != "after-fin" {
		t.Fatalf("server got %q", s)
	}
	h.waitClosed(1)
}

func TestServerResetReachesClient(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(func(c *net.TCPConn) {
		c.Write([]byte("x"))
		time.Sleep(20 * time.Millisecond)
		c.SetLinger(0)
	})
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read error = %v, want ECONNRESET", err)
	}
	fs := h.waitClosed(1)
	if fs[0].Err == "" {
		t.Errorf("reset flow has no error: %+v", fs[0])
	}
}

func TestClientResetReachesServer(t *testing.T) {
	h := newHarness(t, Hooks{})
	srvErr := make(chan error, 1)
	h.server(func(c *net.TCPConn) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c)
		srvErr <- err
	})
	c := h.dial()
	c.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	c.SetLinger(0)
	c.Close()
	if err := <-srvErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read error = %v, want ECONNRESET", err)
	}
	h.waitClosed(1)
}

func TestServerClosesEarly(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(func(c *net.TCPConn) {})
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 0 {
		t.Fatalf("read %q %v, want clean EOF", b, err)
	}
	c.Close() // the other half ends when the client closes too
	h.waitClosed(1)
}

func TestZeroByteFlow(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	c := h.dial()
	c.Close()
	fs := h.waitClosed(1)
	if f := fs[0]; f.BytesIn != 0 || f.BytesOut != 0 || f.Err != "" {
		t.Fatalf("zero-byte flow %+v", f)
	}
}

func TestUpstreamUnreachableResetsClient(t *testing.T) {
	h := newHarness(t, Hooks{})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	h.target.Store(l.Addr().(*net.TCPAddr).AddrPort())
	l.Close() // nothing listens there now
	h.expectReset()
	fs := h.waitClosed(1)
	if fs[0].Err == "" || h.p.Stats().Failed != 1 {
		t.Fatalf("failed flow %+v, stats %+v", fs[0], h.p.Stats())
	}
}

func TestNoOriginalDstIsDropped(t *testing.T) {
	h := newHarness(t, Hooks{}) // no target set
	h.expectReset()
	if st := h.p.Stats(); st.Total != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Many connections that never send, then Close: nothing leaks.
func TestIdleConnectionsNoLeak(t *testing.T) {
	fds0 := countFDs(t)
	g0 := runtime.NumGoroutine()
	func() {
		h := newHarness(t, Hooks{})
		h.server(func(c *net.TCPConn) { io.Copy(io.Discard, c) })
		const n = 1000 // 4 descriptors each in this one process: client, accepted, upstream, server side
		cs := make([]net.Conn, 0, n)
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		deadline := time.Now().Add(10 * time.Second)
		for h.p.Stats().Active < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if a := h.p.Stats().Active; a != n {
			t.Fatalf("active = %d, want %d", a, n)
		}
		// Half of the clients leave; the rest are cut by Close.
		for _, c := range cs[:n/2] {
			c.Close()
		}
		h.p.Close()
		for _, c := range cs[n/2:] {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > g0+5 || countFDs(t) > fds0+5) {
		time.Sleep(20 * time.Millisecond)
	}
	if g, f := runtime.NumGoroutine(), countFDs(t); g > g0+5 || f > fds0+5 {
		t.Fatalf("leak: goroutines %d -> %d, fds %d -> %d", g0, g, fds0, f)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

func TestPanicInHookDoesNotKillDaemon(t *testing.T) {
	var calls atomic.Int32
	h := newHarness(t, Hooks{Identify: func(f *flow.Flow) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
	}})
	h.server(func(c *net.TCPConn) { c.Write([]byte("ok")) })
	h.expectReset() // the panicking flow is reset, not relayed
	c2 := h.dial()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c2)
	if err != nil || string(b) != "ok" {
		t.Fatalf("second flow after panic: %q %v", b, err)
	}
}

func TestDenyResetsWithoutDial(t *testing.T) {
	var dialled atomic.Int32
	h := newHarness(t, Hooks{Decide: func(f *flow.Flow) Action { f.Verdict = "deny"; f.RuleID = 7; return Deny }})
	h.server(func(c *net.TCPConn) { dialled.Add(1) })
	h.expectReset()
	fs := h.waitClosed(1)
	if fs[0].Verdict != "deny" || fs[0].RuleID != 7 || dialled.Load() != 0 || h.p.Stats().Denied != 1 {
		t.Fatalf("flow %+v dialled %d", fs[0], dialled.Load())
	}
}

func TestAskHoldsUntilAnswer(t *testing.T) {
	answer := make(chan Action)
	asked := make(chan *flow.Flow, 1)
	h := newHarness(t, Hooks{
		Decide: func(f *flow.Flow) Action { return Ask },
		Ask: func(ctx context.Context, f *flow.Flow) Action {
			asked <- f
			select {
			case a := <-answer:
				return a
			case <-ctx.Done():
				return Deny
			}
		},
	})
	h.server(func(c *net.TCPConn) { c.Write([]byte("hi")) })
	c := h.dial()
	<-asked
	if fs := h.p.Flows(false); len(fs) != 1 || fs[0].State != flow.StateHeld {
		t.Fatalf("held flow: %+v", fs)
	}
	answer <- Allow
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "hi" {
		t.Fatalf("after allow: %q %v", b, err)
	}
}

func TestHeldClientGivingUpEndsHold(t *testing.T) {
	released := make(chan struct{})
	h := newHarness(t, Hooks{
		Decide: func(f *flow.Flow) Action { return Ask },
		Ask: func(ctx context.Context, f *flow.Flow) Action {
			<-ctx.Done()
			close(released)
			return Allow
		},
	})
	h.server(func(c *net.TCPConn) {})
	c := h.dial()
	time.Sleep(50 * time.Millisecond)
	c.Write([]byte("data before leaving"))
	c.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("hold not released after the client left")
	}
	fs := h.waitClosed(1)
	if fs[0].BytesOut != 0 || fs[0].Err == "" {
		t.Fatalf("flow after give-up %+v", fs[0])
	}
}

func TestSNIAndHTTPHost(t *testing.T) {
	var mu sync.Mutex
	var decided []string
	h := newHarness(t, Hooks{
		NeedsHost: func(*flow.Flow) bool { return true },
		Decide: func(f *flow.Flow) Action {
			mu.Lock()
			decided = append(decided, f.Host+"/"+f.HostSource)
			mu.Unlock()
			return Allow
		},
	})
	h.server(func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	c := h.dial()
	tc := tls.Client(c, &tls.Config{ServerName: "video.example.test", InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(300 * time.Millisecond))
	tc.Handshake() // fails: the server is not TLS; the ClientHello is what matters
	c.Close()
	c2 := h.dial()
	c2.Write([]byte("GET / HTTP/1.1\r\nHost: files.example.test:8080\r\n\r\n"))
	c2.CloseWrite()
	fs := h.waitClosed(2)
	mu.Lock()
	defer mu.Unlock()
	if len(decided) != 2 || decided[0] != "video.example.test/sni" || decided[1] != "files.example.test/http" {
		t.Fatalf("decided on %v", decided)
	}
	sortByID(fs)
	if fs[0].Host != "video.example.test" || fs[1].HostSource != "http" {
		t.Fatalf("flows %+v", fs)
	}
}

// A server-speaks-first protocol is held up (PeekWait, for a client that
// sends nothing) only when NeedsHost says the flow's decision needs its host.
func TestServerSpeaksFirst(t *testing.T) {
	const peekWait = 600 * time.Millisecond
	var needs atomic.Bool
	var asked atomic.Value
	h := newHarnessWith(t, Hooks{NeedsHost: func(f *flow.Flow) bool {
		asked.Store(f.Dst)
		return needs.Load()
	}}, func(cfg *Config) { cfg.PeekWait = peekWait })
	h.server(func(c *net.TCPConn) {
		c.Write([]byte("SSH-2.0-test\r\n"))
		io.Copy(io.Discard, c)
	})
	banner := func() time.Duration {
		c := h.dial()
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 14)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "SSH-2.0-test\r\n" {
			t.Fatalf("banner %q %v", b, err)
		}
		return time.Since(start)
	}
	if el := banner(); el >= peekWait/2 {
		t.Errorf("banner after %v with no host needed, want well under PeekWait (%v)", el, peekWait)
	}
	if got, _ := asked.Load().(netip.AddrPort); got != h.target.Load().(netip.AddrPort) {
		t.Errorf("NeedsHost asked about a flow to %v, want %v", got, h.target.Load())
	}
	needs.Store(true)
	if el := banner(); el < peekWait*8/10 {
		t.Errorf("banner after %v with the host needed, want about PeekWait (%v)", el, peekWait)
	}
}

type fakeLimiter struct {
	max    int
	quota  int64
	used   atomic.Int64
	closed atomic.Bool
	waits  atomic.Bool  // Waits says so (a rate limit applies)
	grants atomic.Int64 // Grant calls while waits
}

func (l *fakeLimiter) Grant(ctx context.Context, d Dir, max int) (int, error) {
	if l.waits.Load() {
		l.grants.Add(1)
	}
	return min(max, l.max), nil
}

func (l *fakeLimiter) Waits(d Dir) bool { return l.waits.Load() }

func (l *fakeLimiter) Done(d Dir, n int) error {
	if l.used.Add(int64(n)) >= l.quota {
		return errors.New("quota exceeded")
	}
	return nil
}
func (l *fakeLimiter) Close() { l.closed.Store(true) }

func TestQuotaCutIsClean(t *testing.T) {
	lim := &fakeLimiter{max: 16 << 10, quota: 1 << 20}
	h := newHarness(t, Hooks{Limit: func(f *flow.Flow) (Limiter, error) { return lim, nil }})
	payload := make([]byte, 4<<20)
	h.server(func(c *net.TCPConn) { c.Write(payload) })
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("cut flow ended with %v, want a clean EOF", err)
	}
	if n < 1<<20 || n > 1<<20+16<<10 {
		t.Fatalf("client got %d bytes, want quota %d + at most one chunk", n, 1<<20)
	}
	fs := h.waitClosed(1)
	if fs[0].BytesIn != n || fs[0].Err == "" || !lim.closed.Load() {
		t.Fatalf("flow %+v (client got %d), limiter closed %v", fs[0], n, lim.closed.Load())
	}
}

func TestRefusedByLimit(t *testing.T) {
	h := newHarness(t, Hooks{Limit: func(f *flow.Flow) (Limiter, error) { return nil, errors.New("quota exhausted") }})
	h.server(func(c *net.TCPConn) {})
	h.expectReset()
	if fs := h.waitClosed(1); fs[0].Err != "quota exhausted" {
		t.Fatalf("flow %+v", fs[0])
	}
}

func TestCloseFlowsCutsMatching(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	c := h.dial()
	c.Write([]byte("x"))
	for h.p.Stats().Active != 1 {
		time.Sleep(time.Millisecond)
	}
	for len(h.p.Flows(false)) == 1 && h.p.Flows(false)[0].State != flow.StateOpen {
		time.Sleep(time.Millisecond)
	}
	if n := h.p.CloseFlows(func(f *flow.Flow) bool { return true }, "rule changed"); n != 1 {
		t.Fatalf("CloseFlows cut %d", n)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("cut client read = %v", err)
	}
}

// A first message larger than the small peek buffer still names its host.
func TestLargeFirstMessage(t *testing.T) {
	var got atomic.Value
	h := newHarness(t, Hooks{
		NeedsHost: func(*flow.Flow) bool { return true },
		Decide:    func(f *flow.Flow) Action { got.Store(f.Host + "/" + f.HostSource); return Allow },
	})
	h.server(func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	c := h.dial()
	req := "GET / HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 6000) + "\r\nHost: big.example.test\r\n\r\n"
	c.Write([]byte(req))
	c.CloseWrite()
	h.waitClosed(1)
	if g, _ := got.Load().(string); g != "big.example.test/http" {
		t.Fatalf("decided on %q", g)
	}
}

// Past MaxConns a new connection is reset and counted; once a flow ends
// there is room again.
func TestMaxConns(t *testing.T) {
	h := newHarnessWith(t, Hooks{}, func(c *Config) { c.MaxConns = 2 })
	h.server(echoServer)
	roundTrip := func(c *net.TCPConn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	c1, c2 := h.dial(), h.dial()
	for _, c := range []*net.TCPConn{c1, c2} {
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	}
	h.expectReset()
	if st := h.p.Stats(); st.Refused != 1 || st.Active != 2 {
		t.Fatalf("stats %+v, want 1 refused and 2 active", st)
	}
	c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for h.p.Stats().Active != 1 {
		if time.Now().After(deadline) {
			t.Fatal("closed flow never ended")
		}
		time.Sleep(time.Millisecond)
	}
	if err := roundTrip(h.dial()); err != nil {
		t.Fatalf("a connection after one ended: %v", err)
	}
}

// echoServer writes back whatever it reads; at EOF it half-closes.
func echoServer(c *net.TCPConn) {
	b := make([]byte, 64)
	for {
		n, err := c.Read(b)
		if err != nil {
			c.CloseWrite()
			return
		}
		c.Write(b[:n])
	}
}

// echo sends msg through c and fails the test unless it comes back whole.
func echo(t *testing.T, c *net.TCPConn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, b, err)
	}
}

// Many flows at once exchange many small messages, each written in pieces
// with pauses between them, and end with half-closes: every byte and every
// EOF arrives (on the loops: a short read is taken as an empty socket, so a
// lost edge would stall a flow here until its deadline).
func TestManySmallExchanges(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	const flows, rounds = 32, 100
	var wg sync.WaitGroup
	errs := make(chan error, flows)
	for i := range flows {
		c := h.dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			rnd := mrand.New(mrand.NewPCG(uint64(i), 1))
			for r := range rounds {
				msg := make([]byte, 1+rnd.IntN(3000))
				for j := range msg {
					msg[j] = byte(rnd.Uint32())
				}
				for rest := msg; len(rest) > 0; {
					n := min(len(rest), 1+rnd.IntN(len(msg)))
					if _, err := c.Write(rest[:n]); err != nil {
						errs <- fmt.Errorf("flow %d round %d: write: %w", i, r, err)
						return
					}
					rest = rest[n:]
					if rnd.IntN(2) == 0 {
						time.Sleep(time.Duration(rnd.IntN(200)) * time.Microsecond)
					}
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("flow %d round %d: %d bytes echoed wrong or late: %v", i, r, len(msg), err)
					return
				}
			}
			c.CloseWrite()
			if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
				errs <- fmt.Errorf("flow %d: after the half-close %d bytes, %v; want a clean EOF", i, len(b), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h.waitClosed(flows)
}

// ChangedFlows leaves out the live flows whose counts the caller has seen,
// and returns the others with their counts now.
func TestChangedFlows(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	c1, c2 := h.dial(), h.dial()
	echo(t, c1, "one")
	echo(t, c2, "two")
	if fs := h.p.ChangedFlows(nil); len(fs) != 2 {
		t.Fatalf("nothing seen: %d flows, want both", len(fs))
	}
	// The goroutine relay counts a chunk once written: the echo can
	// arrive a moment before its count.
	waitCounts := func(want int64) []flow.Flow {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			fs := h.p.Flows(false)
			done := true
			for _, f := range fs {
				done = done && f.BytesIn+f.BytesOut >= want
			}
			if done || time.Now().After(deadline) {
				return fs
			}
			time.Sleep(time.Millisecond)
		}
	}
	seen := map[uint64][2]int64{}
	bySrc := map[netip.AddrPort]uint64{}
	for _, f := range waitCounts(6) {
		seen[f.ID] = [2]int64{f.BytesIn, f.BytesOut}
		bySrc[f.Src] = f.ID
	}
	if fs := h.p.ChangedFlows(seen); len(fs) != 0 {
		t.Fatalf("all seen: got %+v, want none", fs)
	}
	echo(t, c1, "more")
	id1 := bySrc[c1.LocalAddr().(*net.TCPAddr).AddrPort()]
	var fs []flow.Flow
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if fs = h.p.ChangedFlows(seen); len(fs) == 1 && fs[0].BytesIn+fs[0].BytesOut == 14 {
			break
		}
	}
	if len(fs) != 1 || fs[0].ID != id1 || fs[0].BytesIn != 7 || fs[0].BytesOut != 7 {
		t.Fatalf("after 4 more bytes each way on flow %d: got %+v", id1, fs)
	}
}
