package procmap

import (
	"net"
	"net/netip"
	"testing"
)

// BenchmarkLookup measures Map.Lookup end to end (sock_diag + /proc) on real
// loopback sockets while this process holds 9,000 connections (18,000
// sockets, both ends).
func BenchmarkLookup(b *testing.B) {
	const nconn = 9000 // 18,000 fds: under this machine's hard limit of 20,000
	ln := listen(b, "127.0.0.1:0")
	conns := make([]net.Conn, 0, nconn)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range nconn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Skipf("could open only %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Each sub-benchmark looks up a connection dialed just before it, so a
	// connection lost to an accept-queue overflow during setup cannot skew it.
	fresh := func(b *testing.B) (netip.AddrPort, netip.AddrPort) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		return addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	}

	b.Run("warm", func(b *testing.B) {
		local, remote := fresh(b)
		m := New(Options{})
		defer m.Close()
		if _, err := m.Lookup(local, remote); err != nil {
			b.Fatal(err)
		}
		reportP50(b, func() {
			if _, err := m.Lookup(local, remote); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("cold", func(b *testing.B) {
		local, remote := fresh(b)
		// A fresh Map each time: full /proc scan including this process's 20,000 fds.
		reportP50(b, func() {
			m := New(Options{})
			if _, err := m.Lookup(local, remote); err != nil {
				b.Fatal(err)
			}
			m.Close()
		})
	})
	b.Run("diag-only", func(b *testing.B) {
		local, remote := fresh(b)
		d := newDiagConn(1)
		defer d.close()
		reportP50(b, func() {
			if _, ok, err := d.query(local, remote); err != nil || !ok {
				b.Fatal(ok, err)
			}
		})
	})
}
