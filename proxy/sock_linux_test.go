package proxy

import (
	"net"
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
