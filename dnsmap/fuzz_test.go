package dnsmap

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed corpus under testdata/fuzz")

func udpSeeds(tb testing.TB) [][]byte {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63)
	good := response(tb, "www.youtube.com", dns.TypeA,
		"www.youtube.com. 300 IN CNAME youtube-ui.l.google.com.",
		"youtube-ui.l.google.com. 300 IN A 142.250.1.1")
	return [][]byte{
		good,
		good[:len(good)-2],
		response(tb, "v6.example", dns.TypeAAAA, "v6.example. 60 IN CNAME a.example.", "a.example. 60 IN AAAA fd00:5e7::1"),
		response(tb, "x.example", dns.TypeA, "x.example. 300 IN CNAME y.example.", "y.example. 300 IN CNAME x.example.", "y.example. 1 IN A 198.18.0.1"),
		response(tb, "h.example", dns.TypeHTTPS, `h.example. 300 IN HTTPS 1 . ipv4hint=198.18.0.2 ipv6hint=fd00:5e7::3`),
		response(tb, long, dns.TypeA, long+". 300 IN A 198.18.0.4"),
		{0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},     // compression pointer to itself
		{0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 'a', 0, 0, 1, 0, 1}, // label length 64
		{},
		response(tb, "5.0.18.198.in-addr.arpa", dns.TypePTR,
			"5.0.18.198.in-addr.arpa. 300 IN CNAME 5.0/26.0.18.198.in-addr.arpa.",
			"5.0/26.0.18.198.in-addr.arpa. 300 IN PTR five.example."),
	}
}

func tcpSeeds(tb testing.TB) [][]byte {
	frame := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	u := udpSeeds(tb)
	return [][]byte{
		append(frame(u[0]), frame(u[2])...),
		append(frame(u[0]), frame(u[2])[:7]...),
		frame(u[6]),
		{0},
		{0, 0, 0, 0},
		{0xff, 0xff, 1, 2, 3},
	}
}

// checkMap checks what a fuzzed Map may contain: normalised names only.
func checkMap(t *testing.T, m *Map) {
	t.Helper()
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for ip, e := range s.m {
			if ip != key(ip) {
				t.Errorf("stored key %s is not in lookup form", ip)
			}
			if len(e.names) == 0 || len(e.names) > m.cfg.NamesPerIP {
				t.Errorf("%s has %d names", ip, len(e.names))
			}
			for _, n := range e.names {
				if v, ok := normalize(n.name); !ok || v != n.name {
					t.Errorf("%s maps to unnormalised name %q", ip, n.name)
				}
			}
		}
		s.mu.Unlock()
	}
	if st := m.Stats(); st.Entries > m.cfg.MaxEntries {
		t.Errorf("%d entries, max %d", st.Entries, m.cfg.MaxEntries)
	}
}

func FuzzObserveUDP(f *testing.F) {
	for _, s := range udpSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := New(Config{MaxEntries: 4, NamesPerIP: 2})
		m.ObserveUDP(b)
		if st := m.Stats(); st.Observed+st.Malformed != 1 {
			t.Fatalf("one message counted as %+v", st)
		}
		checkMap(t, m)
		m.Name(netip.MustParseAddr("198.18.0.1"))
	})
}

func FuzzObserveTCP(f *testing.F) {
	for _, s := range tcpSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := New(Config{MaxEntries: 4, NamesPerIP: 2})
		m.ObserveTCP(b)
		st := m.Stats()
		if max := uint64(len(b)/2 + 1); st.Observed+st.Malformed+st.Partial > max {
			t.Fatalf("%d bytes counted as %+v", len(b), st)
		}
		if len(b) > 0 && st.Observed+st.Malformed+st.Partial == 0 {
			t.Fatalf("%d bytes left no trace in %+v", len(b), st)
		}
		checkMap(t, m)
	})
}

func FuzzParseReverse(f *testing.F) {
	for _, s := range []string{"1.0.18.198.in-addr.arpa.", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.e.5.0.0.0.d.f.ip6.arpa.", "01.2.3.4.in-addr.arpa", "x.ip6.arpa"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ip, ok := parseReverse(name)
		if !ok {
			return
		}
		want, err := dns.ReverseAddr(ip.String())
		if err != nil || !strings.EqualFold(strings.TrimSuffix(want, "."), strings.TrimSuffix(name, ".")) {
			t.Fatalf("parseReverse(%q) = %s, whose reverse name is %q", name, ip, want)
		}
	})
}

// TestWriteCorpus regenerates the checked-in seed corpus when run with
// -write-corpus; without it, it checks that the corpus is there.
func TestWriteCorpus(t *testing.T) {
	sets := map[string][][]byte{"FuzzObserveUDP": udpSeeds(t), "FuzzObserveTCP": tcpSeeds(t)}
	if !*writeCorpus {
		sets["FuzzParseReverse"] = nil
	}
	for fuzzer, seeds := range sets {
		dir := filepath.Join("testdata", "fuzz", fuzzer)
		if !*writeCorpus {
			if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
				t.Errorf("seed corpus %s missing (%v): run go test -run TestWriteCorpus -write-corpus", dir, err)
			}
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			data := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
