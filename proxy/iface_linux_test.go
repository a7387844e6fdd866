package proxy

import (
	"net/netip"
	"testing"
	"time"
)

// The egress interface of a destination is looked up once per routeTTL.
func TestRouteIfaceCached(t *testing.T) {
	h := newHarness(t, Hooks{})
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	if got := h.p.routeIface(dst); got != "lo" {
		t.Fatalf("routeIface(%v) = %q, want lo", dst, got)
	}
	now := time.Now()
	if name, ok := h.p.routes.get(dst.Addr(), now); !ok || name != "lo" {
		t.Fatalf("not cached: %q %v", name, ok)
	}
	if _, ok := h.p.routes.get(dst.Addr(), now.Add(routeTTL+time.Millisecond)); ok {
		t.Fatal("cached past routeTTL")
	}
	for i := range routeCacheSize + 1 {
		h.p.routes.put(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "x", now)
	}
	if n := len(h.p.routes.m); n > routeCacheSize {
		t.Fatalf("cache grew to %d entries", n)
	}
}
