package proxy

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The raw wrappers the loops use agree with what the runtime's own sockets
// see, over IPv4 and IPv6: accept's peer, getsockname, connect's target
// (ports in network byte order), peek, SO_ERROR.
func TestRawSyscalls(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		addr   string
	}{{"ipv4", unix.AF_INET, "127.0.0.1:0"}, {"ipv6", unix.AF_INET6, "[::1]:0"}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", tc.addr)
			if err != nil {
				t.Skip("no loopback for", tc.name, err)
			}
			defer ln.Close()
			target := ln.Addr().(*net.TCPAddr).AddrPort()

			fd, err := rawSocket(tc.family)
			if err != nil {
				t.Fatal(err)
			}
			defer rawClose(fd)
			if err := rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
				t.Fatal(err)
			}
			if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
				t.Fatalf("TCP_NODELAY = %d after rawSetsockoptInt", v)
			}
			if err := rawConnect(fd, target); err != nil && err != unix.EINPROGRESS {
				t.Fatal(err)
			}
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			waitWritable(t, fd)
			if e := rawSoError(fd); e != 0 {
				t.Fatalf("SO_ERROR %v on a connected socket", e)
			}
			local, err := rawLocalAddr(fd)
			if err != nil {
				t.Fatal(err)
			}
			if want := c.RemoteAddr().(*net.TCPAddr).AddrPort(); local != want {
				t.Fatalf("rawLocalAddr = %v, the server sees the client at %v", local, want)
			}

			b := make([]byte, 8)
			if _, err := rawPeek(fd, b); err != unix.EAGAIN {
				t.Fatalf("peek with nothing sent: %v, want EAGAIN", err)
			}
			c.Write([]byte("hello"))
			var n int
			for deadline := time.Now().Add(5 * time.Second); ; {
				if n, err = rawPeek(fd, b); err != unix.EAGAIN || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if err != nil || string(b[:n]) != "hello" {
				t.Fatalf("peek = %q, %v", b[:n], err)
			}
			if n2, _ := rawPeek(fd, b); n2 != n {
				t.Fatalf("a second peek saw %d bytes, the first %d: peek consumed", n2, n)
			}
			if err := rawShutdown(fd, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(b); err == nil || errors.Is(err, unix.ETIMEDOUT) {
				t.Fatalf("server read after rawShutdown: %v, want EOF", err)
			}

			// rawAccept reports the connecting socket's address.
			lfd, lap := rawListener(t, tc.family, target.Addr())
			defer rawClose(lfd)
			cc, err := net.Dial("tcp", lap.String())
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			var afd int
			var peer netip.AddrPort
			for deadline := time.Now().Add(5 * time.Second); ; {
				afd, peer, err = rawAccept(lfd)
				if err != unix.EAGAIN || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rawClose(afd)
			if want := cc.LocalAddr().(*net.TCPAddr).AddrPort(); peer != want {
				t.Fatalf("rawAccept peer = %v, the client is %v", peer, want)
			}
			if fl, _ := unix.FcntlInt(uintptr(afd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
				t.Fatal("accepted socket is blocking")
			}
		})
	}
}

// A refused connect shows as SO_ERROR ECONNREFUSED.
func TestRawSoErrorRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	fd, err := rawSocket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	defer rawClose(fd)
	if err := rawConnect(fd, target); err != nil && err != unix.EINPROGRESS && err != unix.ECONNREFUSED {
		t.Fatal(err)
	}
	waitWritable(t, fd)
	if e := rawSoError(fd); e != unix.ECONNREFUSED {
		t.Fatalf("SO_ERROR = %v, want ECONNREFUSED", e)
	}
}

func waitWritable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(fds, 5000); err != nil || fds[0].Revents == 0 {
		t.Fatalf("socket not writable within 5 s: %v", err)
	}
}

// rawListener opens a non-blocking listening socket on addr, any port.
func rawListener(t *testing.T, family int, addr netip.Addr) (int, netip.AddrPort) {
	t.Helper()
	fd, err := rawSocket(family)
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Addr: addr.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: addr.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	la, err := rawLocalAddr(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, la
}
