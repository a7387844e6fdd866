package dnsmap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// response builds a packed DNS response to a question for qname with the
// given answer records (zone-file syntax).
func response(t testing.TB, qname string, qtype uint16, answers ...string) []byte {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(qname), qtype)
	r := new(dns.Msg)
	r.SetReply(q)
	for _, a := range answers {
		rr, err := dns.NewRR(a)
		if err != nil {
			t.Fatalf("bad test record %q: %v", a, err)
		}
		r.Answer = append(r.Answer, rr)
	}
	r.Compress = true
	b, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustName(t *testing.T, m *Map, ip, want string) {
	t.Helper()
	got, ok := m.Name(netip.MustParseAddr(ip))
	if want == "" {
		if ok {
			t.Errorf("Name(%s) = %q, want none", ip, got)
		}
		return
	}
	if !ok || got != want {
		t.Errorf("Name(%s) = %q, %v; want %q", ip, got, ok, want)
	}
}

func TestObserveAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   func(t testing.TB) []byte
		names map[string]string // ip → expected name ("" none)
	}{
		{"cname chain to the question", func(t testing.TB) []byte {
			return response(t, "www.YouTube.com", dns.TypeA,
				"www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
				"youtube-ui.l.google.com. 60 IN CNAME r3.googlevideo.com.",
				"r3.googlevideo.com. 30 IN A 142.250.1.1",
				"r3.googlevideo.com. 30 IN A 142.250.1.2")
		}, map[string]string{"142.250.1.1": "www.youtube.com", "142.250.1.2": "www.youtube.com"}},
		{"aaaa", func(t testing.TB) []byte {
			return response(t, "ipv6.example.org", dns.TypeAAAA,
				"ipv6.example.org. 300 IN CNAME edge.cdn.example.",
				"edge.cdn.example. 300 IN AAAA 2001:db8::7")
		}, map[string]string{"2001:db8::7": "ipv6.example.org"}},
		{"chain out of order, case differs", func(t testing.TB) []byte {
			return response(t, "a.example", dns.TypeA,
				"C.EXAMPLE. 300 IN A 198.18.0.9",
				"B.example. 300 IN CNAME c.example.",
				"a.example. 300 IN CNAME b.example.")
		}, map[string]string{"198.18.0.9": "a.example"}},
		{"cname loop ends", func(t testing.TB) []byte {
			return response(t, "x.example", dns.TypeA,
				"x.example. 300 IN CNAME y.example.",
				"y.example. 300 IN CNAME x.example.",
				"y.example. 300 IN A 198.18.0.10")
		}, map[string]string{"198.18.0.10": "x.example"}},
		{"unrelated address keeps its owner", func(t testing.TB) []byte {
			return response(t, "q.example", dns.TypeA,
				"q.example. 300 IN A 198.18.0.11",
				"other.example. 300 IN A 198.18.0.12")
		}, map[string]string{"198.18.0.11": "q.example", "198.18.0.12": "other.example"}},
		{"https hints", func(t testing.TB) []byte {
			return response(t, "h.example", dns.TypeHTTPS,
				`h.example. 300 IN HTTPS 1 . alpn="h2,h3" ipv4hint=198.18.0.13 ipv6hint=fd00:5e7::13`)
		}, map[string]string{"198.18.0.13": "h.example", "fd00:5e7::13": "h.example"}},
		{"escaped question name refused", func(t testing.TB) []byte {
			return response(t, `we\032ird.example`, dns.TypeA, `we\032ird.example. 300 IN A 198.18.0.14`)
		}, map[string]string{"198.18.0.14": ""}},
		{"nxdomain ignored", func(t testing.TB) []byte {
			b := response(t, "n.example", dns.TypeA, "n.example. 300 IN A 198.18.0.15")
			b[3] |= dns.RcodeNameError
			return b
		}, map[string]string{"198.18.0.15": ""}},
		{"query ignored", func(t testing.TB) []byte {
			q := new(dns.Msg)
			q.SetQuestion("q.example.", dns.TypeA)
			rr, _ := dns.NewRR("q.example. 300 IN A 198.18.0.16")
			q.Answer = append(q.Answer, rr)
			b, _ := q.Pack()
			return b
		}, map[string]string{"198.18.0.16": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Config{})
			defer m.Close()
			m.ObserveUDP(tc.msg(t))
			for ip, want := range tc.names {
				mustName(t, m, ip, want)
			}
			if st := m.Stats(); st.Observed != 1 || st.Malformed != 0 {
				t.Errorf("stats = %+v, want 1 observed, 0 malformed", st)
			}
		})
	}
}

func TestV4Mapped(t *testing.T) {
	m := New(Config{})
	defer m.Close()
	m.ObserveUDP(response(t, "v4.example", dns.TypeA, "v4.example. 300 IN A 198.18.0.1"))
	mustName(t, m, "::ffff:198.18.0.1", "v4.example")
	mustName(t, m, "198.18.0.1", "v4.example")
}

func TestTTLAndGrace(t *testing.T) {
	clk := newClock()
	m := New(Config{Now: clk.Now, Grace: time.Minute, MaxTTL: time.Hour})
	defer m.Close()
	m.ObserveUDP(response(t, "short.example", dns.TypeA,
		"short.example. 600 IN CNAME cdn.example.", "cdn.example. 30 IN A 198.18.0.1"))
	m.ObserveUDP(response(t, "long.example", dns.TypeA, "long.example. 86400 IN A 198.18.0.2"))

	// The chain's smallest TTL (30 s) counts, then one minute of grace.
	clk.Advance(89 * time.Second)
	mustName(t, m, "198.18.0.1", "short.example")
	clk.Advance(time.Second)
	mustName(t, m, "198.18.0.1", "")
	if n := m.Stats().Entries; n != 1 {
		t.Errorf("entries after expiry = %d, want 1 (the stale one dropped)", n)
	}
	// A day-long TTL is capped at MaxTTL.
	clk.Advance(time.Hour - 91*time.Second)
	mustName(t, m, "198.18.0.2", "long.example")
	clk.Advance(time.Minute + time.Second)
	mustName(t, m, "198.18.0.2", "")
}

func TestSeveralNamesPerIP(t *testing.T) {
	clk := newClock()
	m := New(Config{Now: clk.Now, NamesPerIP: 3, Grace: time.Second})
	defer m.Close()
	ip := netip.MustParseAddr("198.18.0.1")
	for i, n := range []string{"a.example", "b.example", "c.example", "d.example"} {
		ttl := 100
		if n == "d.example" {
			ttl = 10
		}
		m.ObserveUDP(response(t, n, dns.TypeA, fmt.Sprintf("%s. %d IN A 198.18.0.1", n, ttl)))
		clk.Advance(time.Duration(i) * time.Millisecond)
	}
	if got := fmt.Sprint(m.Names(ip)); got != "[d.example c.example b.example]" {
		t.Errorf("Names = %s; want the three most recent, newest first", got)
	}
	mustName(t, m, "198.18.0.1", "d.example")
	// When the newest name runs out, the next one still valid answers.
	clk.Advance(20 * time.Second)
	mustName(t, m, "198.18.0.1", "c.example")
	// Seeing an old name again makes it the newest.
	m.ObserveUDP(response(t, "b.example", dns.TypeA, "b.example. 100 IN A 198.18.0.1"))
	mustName(t, m, "198.18.0.1", "b.example")
	if got := fmt.Sprint(m.Names(ip)); got != "[b.example c.example]" {
		t.Errorf("Names = %s", got)
	}
}

func TestLRUEviction(t *testing.T) {
	m := New(Config{MaxEntries: 3})
	defer m.Close()
	add := func(i int) {
		m.ObserveUDP(response(t, fmt.Sprintf("h%d.example", i), dns.TypeA, fmt.Sprintf("h%d.example. 300 IN A 198.18.0.%d", i, i)))
	}
	add(1)
	add(2)
	add(3)
	mustName(t, m, "198.18.0.1", "h1.example") // 1 is now the most recently used
	add(4)                                     // evicts 2, the least recently used
	mustName(t, m, "198.18.0.2", "")
	mustName(t, m, "198.18.0.1", "h1.example")
	mustName(t, m, "198.18.0.3", "h3.example")
	mustName(t, m, "198.18.0.4", "h4.example")
	if st := m.Stats(); st.Entries != 3 || st.Evicted != 1 {
		t.Errorf("stats = %+v, want 3 entries, 1 evicted", st)
	}
}

func TestBoundedWithShards(t *testing.T) {
	const max = 8192
	m := New(Config{MaxEntries: max})
	defer m.Close()
	if len(m.shards) < 2 {
		t.Fatalf("%d shards for %d entries; want several", len(m.shards), max)
	}
	for i := range 3 * max {
		m.add(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "x.example", 300, 0)
	}
	if st := m.Stats(); st.Entries > max || st.Entries < max*9/10 || st.Evicted == 0 {
		t.Errorf("stats = %+v; want entries ≤ %d and close to it", st, max)
	}
}

func TestObserveTCP(t *testing.T) {
	frame := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	m1 := response(t, "one.example", dns.TypeA, "one.example. 300 IN A 198.18.0.1")
	m2 := response(t, "two.example", dns.TypeA, "two.example. 300 IN A 198.18.0.2")
	m3 := response(t, "three.example", dns.TypeA, "three.example. 300 IN A 198.18.0.3")
	seg := append(append(frame(m1), frame(m2)...), frame(m3)[:10]...)

	m := New(Config{})
	defer m.Close()
	m.ObserveTCP(seg)
	mustName(t, m, "198.18.0.1", "one.example")
	mustName(t, m, "198.18.0.2", "two.example")
	mustName(t, m, "198.18.0.3", "")
	if st := m.Stats(); st.Observed != 2 || st.Partial != 1 || st.Malformed != 0 {
		t.Errorf("stats = %+v, want 2 observed, 1 partial", st)
	}
	// One stray byte, and a frame whose content is garbage: framing is lost.
	m.ObserveTCP([]byte{0})
	m.ObserveTCP(append(frame([]byte{1, 2, 3}), frame(m3)...))
	mustName(t, m, "198.18.0.3", "")
	if st := m.Stats(); st.Partial != 2 || st.Malformed != 1 {
		t.Errorf("stats = %+v, want 2 partial, 1 malformed", st)
	}
}

func TestMalformedCounted(t *testing.T) {
	good := response(t, "a.example", dns.TypeA, "a.example. 300 IN A 198.18.0.1")
	loop := []byte{0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1} // name points at itself
	m := New(Config{})
	defer m.Close()
	for _, b := range [][]byte{nil, {1, 2, 3}, good[:len(good)-3], loop} {
		m.ObserveUDP(b)
	}
	if st := m.Stats(); st.Malformed != 4 || st.Observed != 0 || st.Entries != 0 {
		t.Errorf("stats = %+v, want 4 malformed and nothing learned", st)
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"Www.Example.COM.", "www.example.com", true},
		{"_dmarc.example.", "_dmarc.example", true},
		{"a.example", "a.example", true},
		{".", "", false},
		{"", "", false},
		{"a..b.", "", false},
		{"a.b..", "", false},
		{`a\.b.`, "", false},
		{`a\032b.`, "", false},
		{"a b.", "", false},
		{fmt.Sprintf("%064d.example.", 0), "", false},
	} {
		got, ok := normalize(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("normalize(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// fakeResolver answers reverse lookups from a table, after an optional gate.
type fakeResolver struct {
	names map[string][]string
	gate  chan struct{} // when not nil, each lookup waits for a value or ctx
	calls atomic.Int32
}

func (r *fakeResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	r.calls.Add(1)
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if n, ok := r.names[addr]; ok {
		return n, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// waitPTR asks PTR (starting a lookup if none is cached or running), waits
// until the answer is cached, and checks it.
func waitPTR(t *testing.T, m *Map, ip netip.Addr, want string) {
	t.Helper()
	m.PTR(ip)
	for deadline := time.Now().Add(5 * time.Second); !m.ptrSettled(ip); {
		if time.Now().After(deadline) {
			t.Fatalf("PTR(%s): no answer cached after 5s", ip)
		}
		time.Sleep(time.Millisecond)
	}
	got, ok := m.PTR(ip)
	if got != want || ok != (want != "") {
		t.Fatalf("PTR(%s) = %q, %v; want %q", ip, got, ok, want)
	}
}

// ptrSettled reports whether ip has a live cache entry and no lookup in flight.
func (m *Map) ptrSettled(ip netip.Addr) bool {
	m.ptr.mu.Lock()
	defer m.ptr.mu.Unlock()
	e, cached := m.ptr.cache[key(ip)]
	_, busy := m.ptr.inflight[key(ip)]
	return cached && e.expires > m.now() && !busy
}

func TestPTR(t *testing.T) {
	clk := newClock()
	r := &fakeResolver{names: map[string][]string{
		"198.18.0.1": {"Host-1.Example.NET."},
		"198.18.0.3": {"bad name.", "ok.example."},
	}}
	m := New(Config{Now: clk.Now, Resolver: r, PTRTTL: time.Hour, PTRNegativeTTL: time.Minute})
	defer m.Close()
	ip1, ip2, ip3 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("::ffff:198.18.0.3")

	if name, ok := m.PTR(ip1); ok {
		t.Fatalf("first PTR answered %q at once; want a background lookup", name)
	}
	waitPTR(t, m, ip1, "host-1.example.net")
	waitPTR(t, m, ip2, "")
	waitPTR(t, m, ip3, "ok.example")
	calls := r.calls.Load()
	for range 10 {
		m.PTR(ip1)
		m.PTR(ip2)
	}
	if got := r.calls.Load(); got != calls {
		t.Errorf("cached and negatively cached answers made %d more lookups", got-calls)
	}
	clk.Advance(2 * time.Minute) // negative entry expires, positive one not
	m.PTR(ip1)
	m.PTR(ip2)
	waitPTR(t, m, ip2, "")
	if got := r.calls.Load(); got != calls+1 {
		t.Errorf("after negative TTL: %d lookups, want %d", got, calls+1)
	}
	if st := m.Stats(); st.PTRFailed != 2 || st.PTRCached != 3 {
		t.Errorf("stats = %+v; want 2 failed lookups, 3 cached", st)
	}
}

func TestPTRDedupAndBound(t *testing.T) {
	r := &fakeResolver{gate: make(chan struct{}), names: map[string][]string{}}
	m := New(Config{Resolver: r, PTRConcurrency: 2, PTRTimeout: time.Minute})
	for i := range 5 {
		ip := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
		r.names[ip.String()] = []string{fmt.Sprintf("h%d.example.", i)}
		for range 3 {
			if _, ok := m.PTR(ip); ok {
				t.Fatal("PTR answered before any lookup finished")
			}
		}
	}
	st := m.Stats()
	if st.PTRLookups != 2 || st.PTRDropped != 3*3 {
		t.Errorf("stats = %+v; want 2 lookups in flight (deduplicated), 9 dropped", st)
	}
	// Close cancels the lookups in flight and waits for them; nothing is cached.
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while lookups were blocked")
	}
	if _, ok := m.PTR(netip.MustParseAddr("198.18.0.0")); ok {
		t.Error("PTR after Close gave a name from a cancelled lookup")
	}
	if st := m.Stats(); st.PTRCached != 0 || st.PTRLookups != 2 {
		t.Errorf("stats after Close = %+v", st)
	}
	m.Close() // idempotent
}

func TestPTRTimeout(t *testing.T) {
	r := &fakeResolver{gate: make(chan struct{})}
	m := New(Config{Resolver: r, PTRTimeout: 10 * time.Millisecond})
	defer m.Close()
	ip := netip.MustParseAddr("198.18.0.1")
	m.PTR(ip)
	waitPTR(t, m, ip, "")
	if st := m.Stats(); st.PTRFailed != 1 {
		t.Errorf("stats = %+v; want the timed-out lookup counted as failed", st)
	}
}

func TestPTRCacheBounded(t *testing.T) {
	r := &fakeResolver{names: map[string][]string{}}
	m := New(Config{Resolver: r, PTRMaxEntries: 4, PTRConcurrency: 1})
	defer m.Close()
	for i := range 10 {
		ip := netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})
		m.PTR(ip)
		waitPTR(t, m, ip, "")
	}
	if st := m.Stats(); st.PTRCached > 4 || st.PTRLookups != 10 {
		t.Errorf("stats = %+v; want at most 4 cached after 10 lookups", st)
	}
}

func TestConcurrent(t *testing.T) {
	m := New(Config{MaxEntries: 64})
	defer m.Close()
	msgs := make([][]byte, 16)
	for i := range msgs {
		msgs[i] = response(t, fmt.Sprintf("c%d.example", i), dns.TypeA, fmt.Sprintf("c%d.example. 300 IN A 198.18.0.%d", i, i))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				m.ObserveUDP(msgs[(g+i)%len(msgs)])
				m.Name(netip.AddrFrom4([4]byte{198, 18, 0, byte(i % 16)}))
			}
		}()
	}
	wg.Wait()
	for i := range 16 {
		mustName(t, m, fmt.Sprintf("198.18.0.%d", i), fmt.Sprintf("c%d.example", i))
	}
}

func BenchmarkName(b *testing.B) {
	m := New(Config{})
	defer m.Close()
	const n = 10000
	for i := range n {
		m.add(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "www.example.com", 300, m.now())
	}
	hit := netip.AddrFrom4([4]byte{10, 0, 1, 2})
	miss := netip.AddrFrom4([4]byte{11, 0, 1, 2})
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := m.Name(hit); !ok {
				b.Fatal("miss")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Name(miss)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				m.Name(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
				i = (i + 1) % n
			}
		})
	})
}

func BenchmarkObserveUDP(b *testing.B) {
	msg := response(b, "www.youtube.com", dns.TypeA,
		"www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
		"youtube-ui.l.google.com. 300 IN A 142.250.1.1",
		"youtube-ui.l.google.com. 300 IN A 142.250.1.2")
	m := New(Config{})
	defer m.Close()
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		m.ObserveUDP(msg)
	}
}

func TestZeroAndZonedAddr(t *testing.T) {
	m := New(Config{})
	defer m.Close()
	m.ObserveUDP(response(t, "z.example", dns.TypeAAAA, "z.example. 300 IN AAAA fe80::1"))
	if n, ok := m.Name(netip.Addr{}); ok {
		t.Errorf("Name(zero Addr) = %q", n)
	}
	if n, ok := m.PTR(netip.Addr{}); ok {
		t.Errorf("PTR(zero Addr) = %q", n)
	}
	if n, ok := m.Name(netip.MustParseAddr("fe80::1%eth0")); !ok || n != "z.example" {
		t.Errorf("Name(fe80::1%%eth0) = %q, %v; want the zone ignored", n, ok)
	}
}

func TestNameDoesNotAllocate(t *testing.T) {
	m := New(Config{})
	defer m.Close()
	m.ObserveUDP(response(t, "a.example", dns.TypeA, "a.example. 300 IN A 198.18.0.1"))
	hit, miss := netip.MustParseAddr("::ffff:198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	if n := testing.AllocsPerRun(100, func() { m.Name(hit); m.Name(miss) }); n != 0 {
		t.Errorf("Name allocates %v times per call pair, want 0", n)
	}
}

func TestTruncatedAfterAnswers(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("t.example.", dns.TypeA)
	r := new(dns.Msg)
	r.SetReply(q)
	a, _ := dns.NewRR("t.example. 300 IN A 198.18.0.1")
	ns, _ := dns.NewRR("example. 300 IN NS ns1.example.")
	r.Answer, r.Ns = []dns.RR{a}, []dns.RR{ns}
	b, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{})
	defer m.Close()
	m.ObserveUDP(b[:len(b)-4]) // authority section cut short
	mustName(t, m, "198.18.0.1", "t.example")
	m.ObserveUDP(response(t, "u.example", dns.TypeA, "u.example. 300 IN A 198.18.0.2")[:40]) // answer cut
	mustName(t, m, "198.18.0.2", "")
	if st := m.Stats(); st.Observed != 1 || st.Truncated != 1 || st.Malformed != 1 {
		t.Errorf("stats = %+v; want 1 observed (truncated), 1 malformed", st)
	}
}
