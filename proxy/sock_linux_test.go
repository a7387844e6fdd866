package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func sockopt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fdOf(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(s uintptr) { fd = int(s) })
	return fd
}

// flowSockets returns the client and upstream sockets of a live flow, on
// the event loop that owns it or on the goroutine path.
func flowSockets(t *testing.T, c *conn) (cli, up int) {
	t.Helper()
	if l := c.lp.Load(); l != nil {
		ch := make(chan [2]int, 1)
		l.post(func() { ch <- [2]int{c.lf.cli.fd, c.lf.up.fd} })
		v := <-ch
		return v[0], v[1]
	}
	return fdOf(t, c.client), fdOf(t, c.up.Load())
}

// Local client sockets get no keep-alive; upstream sockets get it with the
// system's timing, not Go's 15 s, so idle flows do not probe every 15 s.
func TestKeepAlive(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	c := h.dial()
	echo(t, c, "x")
	h.p.mu.Lock()
	var cc *conn
	for _, x := range h.p.live {
		cc = x
	}
	h.p.mu.Unlock()
	if cc == nil {
		t.Fatal("no live flow")
	}
	cli, up := flowSockets(t, cc)
	if v := sockopt(t, cli, unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 0 {
		t.Errorf("accepted socket SO_KEEPALIVE = %d, want 0", v)
	}
	if v := sockopt(t, up, unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 1 {
		t.Errorf("upstream SO_KEEPALIVE = %d, want 1", v)
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_keepalive_time")
	if err != nil {
		t.Skip("no /proc/sys/net/ipv4/tcp_keepalive_time")
	}
	want, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if v := sockopt(t, up, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); v != want {
		t.Errorf("upstream TCP_KEEPIDLE = %d s, want the system's %d s", v, want)
	}
}

// Both sockets of a flow send without Nagle's delay, on either relay (the
// loops' client sockets inherit it from their listener).
func TestNoDelay(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	echo(t, h.dial(), "x")
	cli, up := flowSockets(t, liveConn(t, h.p))
	if v := sockopt(t, cli, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
		t.Errorf("accepted socket TCP_NODELAY = %d, want 1", v)
	}
	if v := sockopt(t, up, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
		t.Errorf("upstream TCP_NODELAY = %d, want 1", v)
	}
}

// The listeners are plain TCP, not Go's default MPTCP: the connection an
// MPTCP client makes is redirected there too, and accepted by an MPTCP
// listener it is an MPTCP socket, which has no SO_ORIGINAL_DST (the flow
// was dropped). The e2e test TestMPTCPClient runs it through the redirect.
func TestListenersArePlainTCP(t *testing.T) {
	p, err := New(Config{
		Listen:         []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		OriginalDst:    func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("unused") },
		OriginalDstFD:  func(int, bool) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("unused") },
		GoroutineRelay: goroutineRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, l := range p.listeners {
		rc, err := l.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var fd int
		rc.Control(func(s uintptr) { fd = int(s) })
		if v := sockopt(t, fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); v != unix.IPPROTO_TCP {
			t.Errorf("listener on %v: protocol %d, want TCP (%d)", l.Addr(), v, unix.IPPROTO_TCP)
		}
	}
}
