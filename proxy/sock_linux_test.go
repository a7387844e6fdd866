package proxy

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func sockopt(t *testing.T, c *net.TCPConn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
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
	if v := sockopt(t, cc.client, unix.SOL_SOCKET, unix.SO_KEEPALIVE); v != 0 {
		t.Errorf("accepted socket SO_KEEPALIVE = %d, want 0", v)
	}
	up := cc.up.Load()
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
