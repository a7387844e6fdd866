package dnsmap

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func TestParseReverse(t *testing.T) {
	for _, ip := range []string{"198.18.0.1", "0.0.0.0", "255.255.255.255", "10.20.30.40", "fd00:5e7::1", "2001:db8:abcd::ff", "::"} {
		arpa, err := dns.ReverseAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseReverse(arpa)
		if !ok || got != netip.MustParseAddr(ip) {
			t.Errorf("parseReverse(%q) = %v, %v; want %s", arpa, got, ok, ip)
		}
	}
	for _, bad := range []string{
		"", "in-addr.arpa.", "1.2.3.in-addr.arpa.", "1.2.3.4.5.in-addr.arpa.", "256.2.3.4.in-addr.arpa.",
		"01.2.3.4.in-addr.arpa.", "0/26.2.3.4.in-addr.arpa.", "a.2.3.4.in-addr.arpa.", "1..3.4.in-addr.arpa.",
		"1.0.ip6.arpa.", "www.example.com.", "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
	} {
		if got, ok := parseReverse(bad); ok {
			t.Errorf("parseReverse(%q) = %v, want not a reverse name", bad, got)
		}
	}
	if got, ok := parseReverse("1.0.18.198.IN-ADDR.ARPA"); !ok || got != netip.MustParseAddr("198.18.0.1") {
		t.Errorf("upper case reverse name: %v, %v", got, ok)
	}
}

// A PTR answer seen on the wire fills the PTR cache, including through an
// RFC 2317 CNAME, so PTR answers without a lookup of its own.
func TestObservedPTRAnswer(t *testing.T) {
	r := &fakeResolver{}
	m := New(Config{Resolver: r})
	defer m.Close()
	m.ObserveUDP(response(t, "1.0.18.198.in-addr.arpa", dns.TypePTR, "1.0.18.198.in-addr.arpa. 300 IN PTR Host1.Example.NET."))
	m.ObserveUDP(response(t, "5.0.18.198.in-addr.arpa", dns.TypePTR,
		"5.0.18.198.in-addr.arpa. 300 IN CNAME 5.0/26.0.18.198.in-addr.arpa.",
		"5.0/26.0.18.198.in-addr.arpa. 300 IN PTR five.example."))
	for ip, want := range map[string]string{"198.18.0.1": "host1.example.net", "198.18.0.5": "five.example"} {
		if got, ok := m.PTR(netip.MustParseAddr(ip)); !ok || got != want {
			t.Errorf("PTR(%s) = %q, %v; want %q from the observed answer", ip, got, ok, want)
		}
	}
	if n := r.calls.Load(); n != 0 {
		t.Errorf("%d reverse lookups made; want none", n)
	}
	if _, ok := m.Name(netip.MustParseAddr("198.18.0.1")); ok {
		t.Error("a PTR answer must not become a forward name")
	}
}
