package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
)

// Benchmarks of the relay's hot paths over loopback. Each compares the proxy
// with a direct loopback connection in the same run, so the ratio (not the
// absolute figure, which depends on the machine) is the result:
//
//	go test -run '^$' -bench . -benchtime 2x ./proxy   (quick)
//	go test -run '^$' -bench . -count 5 ./proxy        (for benchstat)

// benchServer is a loopback server: after a one-byte mode, 'S' discards until
// EOF and answers the byte count (8 bytes), 'E' echoes until EOF.
func benchServer(b *testing.B) netip.AddrPort {
	b.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var m [1]byte
				if _, err := io.ReadFull(c, m[:]); err != nil {
					return
				}
				switch m[0] {
				case 'S':
					n, _ := io.Copy(io.Discard, c)
					binary.Write(c, binary.BigEndian, uint64(n))
				case 'E':
					c.Write(m[:])
					io.Copy(c, c)
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// relay says which relay a benchmark's proxy uses.
type relay string

const (
	relayLoops      relay = "loops"      // the event loops (Linux's default)
	relayGoroutines relay = "goroutines" // the goroutine relay every OS has
)

// forRelays runs fn as a sub-benchmark per relay this OS has, so a change to
// either shows: the loops where they exist, and the goroutine relay that
// flows which must wait are handed to.
func forRelays(b *testing.B, fn func(b *testing.B, r relay)) {
	rs := []relay{relayGoroutines}
	if eventLoops {
		rs = []relay{relayLoops, relayGoroutines}
	}
	for _, r := range rs {
		b.Run(string(r), func(b *testing.B) { fn(b, r) })
	}
}

// benchProxy is a proxy on loopback, relaying with r, whose original
// destination is always target.
func benchProxy(b *testing.B, r relay, target netip.AddrPort) netip.AddrPort {
	return benchProxyWith(b, r, target, nil)
}

// benchProxyWith is benchProxy with edit applied to the proxy before it listens.
func benchProxyWith(b *testing.B, r relay, target netip.AddrPort, edit func(*Proxy)) netip.AddrPort {
	b.Helper()
	p, err := New(Config{
		Listen:         []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		OriginalDst:    func(*net.TCPConn) (netip.AddrPort, error) { return target, nil },
		OriginalDstFD:  func(int, bool) (netip.AddrPort, error) { return target, nil },
		GoroutineRelay: r == relayGoroutines,
	})
	if err != nil {
		b.Fatal(err)
	}
	if edit != nil {
		edit(p)
	}
	if err := p.Listen(); err != nil {
		b.Fatal(err)
	}
	go p.Serve()
	b.Cleanup(func() { p.Close() })
	return p.Addrs()[0]
}

// send streams n bytes to a sink at addr and returns how long the server took to count them.
func send(b *testing.B, addr netip.AddrPort, buf []byte, n int64) time.Duration {
	start := time.Now()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{'S'}); err != nil {
		b.Fatal(err)
	}
	for sent := int64(0); sent < n; {
		w, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(w)
	}
	c.CloseWrite()
	var got uint64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		b.Fatal(err)
	}
	if int64(got) != n {
		b.Fatalf("server counted %d bytes, want %d", got, n)
	}
	return time.Since(start)
}

// BenchmarkRelayThroughput streams through one connection, direct and through
// the proxy with each relay. Compare the MB/s of the sub-benchmarks.
func BenchmarkRelayThroughput(b *testing.B) {
	srv := benchServer(b)
	buf := make([]byte, 128<<10)
	run := func(b *testing.B, addr netip.AddrPort) {
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		send(b, addr, buf, int64(b.N)*int64(len(buf)))
	}
	b.Run("direct", func(b *testing.B) { run(b, srv) })
	forRelays(b, func(b *testing.B, r relay) { run(b, benchProxy(b, r, srv)) })
}

// BenchmarkRelayVsDirect alternates a 64 MiB transfer direct and through the
// proxy in every iteration, so both see the same machine load, and reports
// the proxy's throughput as a fraction of direct (proxy/direct, 1.0 = free).
func BenchmarkRelayVsDirect(b *testing.B) { forRelays(b, benchRelayVsDirect) }

func benchRelayVsDirect(b *testing.B, r relay) {
	srv := benchServer(b)
	px := benchProxy(b, r, srv)
	buf := make([]byte, 128<<10)
	const n = 64 << 20
	var direct, proxied time.Duration
	b.SetBytes(2 * n)
	for b.Loop() {
		direct += send(b, srv, buf, n)
		proxied += send(b, px, buf, n)
	}
	b.ReportMetric(float64(direct)/float64(proxied), "proxy/direct")
	b.ReportMetric(float64(n)*float64(b.N)/proxied.Seconds()/1e6, "proxy-MB/s")
	b.ReportMetric(float64(n)*float64(b.N)/direct.Seconds()/1e6, "direct-MB/s")
}

// roundTrip connects, sends one byte and waits for its echo.
func roundTrip(b *testing.B, addr netip.AddrPort) {
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		b.Fatal(err)
	}
	var m = [1]byte{'E'}
	if _, err := c.Write(m[:]); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, m[:]); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// BenchmarkAcceptDial measures one connection's setup through the proxy
// (accept, original destination, decision, upstream dial, first byte both
// ways) against the same round trip direct, alternating in every iteration.
// It reports the time the proxy adds per connection.
func BenchmarkAcceptDial(b *testing.B) { forRelays(b, benchAcceptDial) }

func benchAcceptDial(b *testing.B, r relay) {
	srv := benchServer(b)
	px := benchProxy(b, r, srv)
	var direct, proxied time.Duration
	for b.Loop() {
		t0 := time.Now()
		roundTrip(b, srv)
		t1 := time.Now()
		roundTrip(b, px)
		proxied += time.Since(t1)
		direct += t1.Sub(t0)
	}
	b.ReportMetric(float64(direct.Nanoseconds())/float64(b.N), "direct-ns/conn")
	b.ReportMetric(float64(proxied.Nanoseconds())/float64(b.N), "proxy-ns/conn")
	b.ReportMetric(float64((proxied-direct).Nanoseconds())/float64(b.N), "added-ns/conn")
}

// BenchmarkIdleConns holds 1,000 idle relayed connections (one byte echoed
// on each, so every flow is relaying) and reports what each costs the proxy:
// goroutine stack and heap bytes, and descriptors where /proc/self/fd exists.
// Client and server live in the same process; their share is measured by the
// same connections held direct and subtracted. (1,000: client, proxy and
// server sockets and the proxy's splice pipes share one open-file limit.)
func BenchmarkIdleConns(b *testing.B) { forRelays(b, benchIdleConns) }

func benchIdleConns(b *testing.B, r relay) {
	const n = 1000
	srv := benchServer(b)
	px := benchProxy(b, r, srv)
	hold := func(addr netip.AddrPort) (stack, heap, fds float64, closeAll func()) {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		f0 := openFDs()
		cs := make([]*net.TCPConn, 0, n)
		for range n {
			c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(addr))
			if err != nil {
				b.Fatal(err)
			}
			m := [1]byte{'E'}
			if _, err := c.Write(m[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, m[:]); err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
		}
		time.Sleep(100 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		f1 := openFDs()
		return float64(m1.StackInuse-m0.StackInuse) / n, (float64(m1.HeapInuse) - float64(m0.HeapInuse)) / n,
			float64(f1-f0) / n, func() {
				for _, c := range cs {
					c.Close()
				}
				time.Sleep(200 * time.Millisecond)
			}
	}
	var stack, heap, fds float64
	for b.Loop() {
		ds, dh, df, done := hold(srv)
		done()
		ps, ph, pf, done := hold(px)
		done()
		stack += ps - ds
		heap += ph - dh
		fds += pf - df
	}
	b.ReportMetric(stack/float64(b.N), "stack-B/conn")
	b.ReportMetric(heap/float64(b.N), "heap-B/conn")
	if openFDs() >= 0 {
		b.ReportMetric(fds/float64(b.N), "fds/conn")
	}
}

// openFDs counts this process's open descriptors, or -1 where /proc/self/fd does not exist.
func openFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}
