package pfctl

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

// These offsets are written out from the headers (see natlook.go) on purpose,
// not taken from the layout table, so a typo in the table fails here.
func TestNatlookLayoutFromHeaders(t *testing.T) {
	type offs struct {
		size, sport, dport, rdport, af, proto, dir int
		inet6                                      byte
		req                                        uint
	}
	for goos, want := range map[string]offs{
		"darwin":  {84, 64, 68, 76, 80, 81, 83, 30, 0xC0544417},
		"freebsd": {76, 64, 66, 70, 72, 73, 74, 28, 0xC04C4417},
	} {
		l, err := layoutFor(goos)
		if err != nil {
			t.Fatal(err)
		}
		if l.ioctlRequest() != want.req {
			t.Errorf("%s: DIOCNATLOOK = %#x, want %#x", goos, l.ioctlRequest(), want.req)
		}
		b, err := l.buildNatlook(netip.MustParseAddrPort("198.18.0.2:51234"), netip.MustParseAddrPort("127.0.0.1:9040"))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != want.size {
			t.Fatalf("%s: request is %d bytes, want %d", goos, len(b), want.size)
		}
		if got := binary.BigEndian.Uint16(b[want.sport:]); got != 51234 {
			t.Errorf("%s: sport at %d = %d", goos, want.sport, got)
		}
		if got := binary.BigEndian.Uint16(b[want.dport:]); got != 9040 {
			t.Errorf("%s: dport at %d = %d", goos, want.dport, got)
		}
		if b[want.af] != 2 || b[want.proto] != 6 || b[want.dir] != 2 {
			t.Errorf("%s: af/proto/direction = %d/%d/%d, want AF_INET/TCP/PF_OUT = 2/6/2", goos, b[want.af], b[want.proto], b[want.dir])
		}
		if [4]byte(b[0:4]) != [4]byte{198, 18, 0, 2} || [4]byte(b[16:20]) != [4]byte{127, 0, 0, 1} {
			t.Errorf("%s: saddr/daddr = % x / % x", goos, b[0:4], b[16:20])
		}
		b6, err := l.buildNatlook(netip.MustParseAddrPort("[fd00:5e7::2]:51234"), netip.MustParseAddrPort("[::1]:9040"))
		if err != nil {
			t.Fatal(err)
		}
		if b6[want.af] != want.inet6 {
			t.Errorf("%s: AF_INET6 = %d, want %d", goos, b6[want.af], want.inet6)
		}
		// A reply as the kernel writes it: rdaddr at 48, rdport at its offset.
		copy(b[48:], []byte{198, 18, 0, 80})
		binary.BigEndian.PutUint16(b[want.rdport:], 8443)
		got, err := l.parseNatlook(b)
		if err != nil || got != netip.MustParseAddrPort("198.18.0.80:8443") {
			t.Errorf("%s: parse = %v, %v", goos, got, err)
		}
	}
}

// kernelReply fills a request the way pf_ioctl.c answers PF_OUT: rsaddr/rsport
// echo the client, rdaddr/rdport are the original destination.
func kernelReply(l natlookLayout, req []byte, dst netip.AddrPort) []byte {
	b := append([]byte(nil), req...)
	copy(b[natlookAddrRsaddr:natlookAddrRsaddr+16], b[natlookAddrSaddr:natlookAddrSaddr+16])
	copy(b[l.ports[2]:l.ports[2]+2], b[l.ports[0]:l.ports[0]+2])
	putAddr(b[natlookAddrRdaddr:], dst.Addr())
	binary.BigEndian.PutUint16(b[l.ports[3]:], dst.Port())
	return b
}

func TestNatlookGolden(t *testing.T) {
	tests := []struct {
		name                string
		client, proxy, orig string
	}{
		{"v4", "198.18.0.2:51234", "127.0.0.1:9040", "198.18.0.80:443"},
		{"v6", "[fd00:5e7::2]:51234", "[::1]:9040", "[fd00:5e7::80]:443"},
	}
	for _, goos := range []string{"darwin", "freebsd"} {
		l, _ := layoutFor(goos)
		for _, tt := range tests {
			t.Run(goos+"_"+tt.name, func(t *testing.T) {
				req, err := l.buildNatlook(netip.MustParseAddrPort(tt.client), netip.MustParseAddrPort(tt.proxy))
				if err != nil {
					t.Fatal(err)
				}
				golden(t, "natlook_"+goos+"_"+tt.name+"_request.golden", []byte(hex.Dump(req)))
				want := netip.MustParseAddrPort(tt.orig)
				reply := kernelReply(l, req, want)
				golden(t, "natlook_"+goos+"_"+tt.name+"_reply.golden", []byte(hex.Dump(reply)))
				got, err := l.parseNatlook(reply)
				if err != nil || got != want {
					t.Errorf("parse reply = %v, %v; want %v", got, err, want)
				}
			})
		}
	}
}

func TestBuildNatlookErrors(t *testing.T) {
	l := darwinLayout()
	tests := []struct{ client, proxy netip.AddrPort }{
		{netip.MustParseAddrPort("198.18.0.2:1"), netip.MustParseAddrPort("[::1]:9040")},
		{netip.MustParseAddrPort("198.18.0.2:0"), netip.MustParseAddrPort("127.0.0.1:9040")},
		{netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:9040")},
	}
	for _, tt := range tests {
		if _, err := l.buildNatlook(tt.client, tt.proxy); err == nil {
			t.Errorf("buildNatlook(%v, %v) succeeded", tt.client, tt.proxy)
		}
	}
	// IPv4-mapped addresses (dual-stack sockets) go out in the 4-byte form.
	b, err := l.buildNatlook(netip.MustParseAddrPort("[::ffff:198.18.0.2]:1"), netip.MustParseAddrPort("[::ffff:127.0.0.1]:9040"))
	if err != nil || b[80] != afInet || [4]byte(b[0:4]) != [4]byte{198, 18, 0, 2} {
		t.Errorf("mapped addresses: % x, %v", b, err)
	}
}

func TestParseNatlookErrors(t *testing.T) {
	for _, goos := range []string{"darwin", "freebsd"} {
		l, _ := layoutFor(goos)
		req, _ := l.buildNatlook(netip.MustParseAddrPort("198.18.0.2:51234"), netip.MustParseAddrPort("127.0.0.1:9040"))
		if _, err := l.parseNatlook(req); !errors.Is(err, ErrNotRedirected) {
			t.Errorf("%s: unanswered request: %v, want ErrNotRedirected", goos, err)
		}
		if _, err := l.parseNatlook(req[:len(req)-1]); err == nil {
			t.Errorf("%s: short reply accepted", goos)
		}
		bad := kernelReply(l, req, netip.MustParseAddrPort("198.18.0.80:443"))
		bad[l.af] = 99
		if _, err := l.parseNatlook(bad); err == nil {
			t.Errorf("%s: unknown address family accepted", goos)
		}
	}
	if _, err := layoutFor("linux"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("layoutFor(linux) = %v", err)
	}
}

// FuzzParseNatlook feeds arbitrary replies to both parsers: they must never
// panic, and whatever they accept must be a usable destination.
func FuzzParseNatlook(f *testing.F) {
	for _, goos := range []string{"darwin", "freebsd"} {
		l, _ := layoutFor(goos)
		req, _ := l.buildNatlook(netip.MustParseAddrPort("198.18.0.2:51234"), netip.MustParseAddrPort("127.0.0.1:9040"))
		f.Add(kernelReply(l, req, netip.MustParseAddrPort("198.18.0.80:443")))
		req6, _ := l.buildNatlook(netip.MustParseAddrPort("[fd00:5e7::2]:51234"), netip.MustParseAddrPort("[::1]:9040"))
		f.Add(kernelReply(l, req6, netip.MustParseAddrPort("[fd00:5e7::80]:443")))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, l := range []natlookLayout{darwinLayout(), freebsdLayout()} {
			ap, err := l.parseNatlook(b)
			if err != nil {
				continue
			}
			if len(b) != l.size || !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
				t.Fatalf("%s accepted %x as %v", l.name, b, ap)
			}
			if ap.Addr().Is4() != (b[l.af] == afInet) {
				t.Fatalf("%s: family mismatch for %v", l.name, ap)
			}
		}
	})
}
