package sniff

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// captureHello runs a crypto/tls client against a net.Pipe and returns the
// first TLS record(s) it writes: its real ClientHello.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(c, cfg).Handshake()
	}()
	defer func() { s.Close(); c.Close(); <-done }()
	if err := s.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		hdr := make([]byte, recordHeaderLen)
		if _, err := io.ReadFull(s, hdr); err != nil {
			t.Fatalf("reading ClientHello record header: %v", err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.ReadFull(s, body); err != nil {
			t.Fatalf("reading ClientHello record: %v", err)
		}
		out = append(append(out, hdr...), body...)
		if _, err := clientHello(out); !errors.Is(err, ErrNeedMore) {
			return out
		}
	}
}

// reframe re-cuts the handshake bytes of a one-record ClientHello into records
// of at most size bytes each.
func reframe(rec []byte, size int) []byte {
	hs := rec[recordHeaderLen:]
	var out []byte
	for len(hs) > 0 {
		n := min(size, len(hs))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

func TestServerNameCryptoTLS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     *tls.Config
		want    string
		wantErr error
	}{
		{"tls13", &tls.Config{ServerName: "www.youtube.com"}, "www.youtube.com", nil},
		{"tls12", &tls.Config{ServerName: "example.org", MaxVersion: tls.VersionTLS12}, "example.org", nil},
		{"tls13 only", &tls.Config{ServerName: "a.b.example", MinVersion: tls.VersionTLS13}, "a.b.example", nil},
		{"upper case and dot", &tls.Config{ServerName: "WWW.Example.COM."}, "www.example.com", nil},
		{"no sni", &tls.Config{InsecureSkipVerify: true}, "", ErrNoHost},
		{"ip literal sends no sni", &tls.Config{ServerName: "198.18.0.1"}, "", ErrNoHost},
		{"no sni tls12", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}, "", ErrNoHost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := captureHello(t, tc.cfg)
			check := func(label string, b []byte) {
				t.Helper()
				got, err := ServerName(b)
				if got != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
					t.Errorf("%s: ServerName = %q, %v; want %q, %v", label, got, err, tc.want, tc.wantErr)
				}
				h, src, err := Detect(b)
				if h != tc.want || src != "sni" || (tc.wantErr == nil) != (err == nil) {
					t.Errorf("%s: Detect = %q, %q, %v", label, h, src, err)
				}
			}
			check("one record", rec)
			check("with trailing bytes", append(bytes.Clone(rec), 23, 3, 3, 0, 5, 1, 2, 3, 4, 5))
			for _, size := range []int{1, 3, 4, 5, 100, 512} {
				split := reframe(rec, size)
				check("split", split)
				for i := 0; i < len(split); i += 1 + i/8 {
					if _, err := ServerName(split[:i]); !errors.Is(err, ErrNeedMore) {
						t.Fatalf("split %d: prefix of %d/%d bytes: err = %v, want ErrNeedMore", size, i, len(split), err)
					}
				}
			}
		})
	}
}

// hello builds a ClientHello record around the given extensions block.
func hello(exts []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // one suite
	body = append(body, 1, 0)             // null compression
	if exts != nil {
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	hs := []byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	hs = append(hs, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func sniExt(nameType byte, name string) []byte {
	entry := append([]byte{nameType}, binary.BigEndian.AppendUint16(nil, uint16(len(name)))...)
	entry = append(entry, name...)
	list := binary.BigEndian.AppendUint16(nil, uint16(len(entry)))
	list = append(list, entry...)
	ext := []byte{0, extServerName}
	ext = binary.BigEndian.AppendUint16(ext, uint16(len(list)))
	return append(ext, list...)
}

func TestServerNameCrafted(t *testing.T) {
	other := []byte{0, 23, 0, 0} // extended_master_secret, empty
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"sni after other ext", hello(append(bytes.Clone(other), sniExt(0, "Mail.Example.NET")...)), "mail.example.net", nil},
		{"underscore", hello(sniExt(0, "_srv.example.com")), "_srv.example.com", nil},
		{"no extensions", hello(nil), "", ErrNoHost},
		{"empty extensions", hello([]byte{}), "", ErrNoHost},
		{"only other ext", hello(other), "", ErrNoHost},
		{"non host_name entry", hello(sniExt(7, "x")), "", ErrNoHost},
		{"bad chars", hello(sniExt(0, "exa mple.com")), "", ErrBadName},
		{"nul byte", hello(sniExt(0, "a\x00b")), "", ErrBadName},
		{"ip v6 literal", hello(sniExt(0, "::1")), "", ErrBadName},
		{"empty name", hello(sniExt(0, "")), "", ErrBadName},
		{"empty label", hello(sniExt(0, "a..b")), "", ErrBadName},
		{"label 64", hello(sniExt(0, strings.Repeat("a", 64)+".com")), "", ErrBadName},
		{"label 63", hello(sniExt(0, strings.Repeat("a", 63)+".com")), strings.Repeat("a", 63) + ".com", nil},
		{"name 254", hello(sniExt(0, strings.Repeat("abcdefghi.", 25)+"abcd")), "", ErrBadName},
		{"name 253", hello(sniExt(0, strings.Repeat("abcdefghi.", 25)+"abc")), strings.Repeat("abcdefghi.", 25) + "abc", nil},
		{"ext len lies", hello([]byte{0, 0, 0xff, 0xff}), "", ErrMalformed},
		{"sni list lies", hello([]byte{0, 0, 0, 4, 0, 9, 0, 0}), "", ErrMalformed},
		{"empty input", nil, "", ErrNeedMore},
		{"one byte", []byte{22}, "", ErrNeedMore},
		{"header only", []byte{22, 3, 1, 0, 200}, "", ErrNeedMore},
		{"http", []byte("GET / HTTP/1.1\r\n"), "", ErrNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), "", ErrNotTLS},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, "", ErrNotTLS},
		{"bad major", []byte{22, 2}, "", ErrNotTLS},
		{"bad minor", []byte{22, 3, 9}, "", ErrNotTLS},
		{"server hello", []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, "", ErrNotTLS},
		{"zero record", []byte{22, 3, 1, 0, 0}, "", ErrMalformed},
		{"huge record", []byte{22, 3, 1, 0x48, 0x01}, "", ErrMalformed},
		{"huge hello", []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, "", ErrMalformed},
		{"alert in the middle", append([]byte{22, 3, 1, 0, 4, 1, 0, 0, 50}, 21, 3, 3, 0, 2), "", ErrMalformed},
		{"short body", []byte{22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3}, "", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ServerName(tc.in)
			if got != tc.want || !errors.Is(err, tc.err) || tc.err == nil && err != nil {
				t.Errorf("ServerName = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestHTTPHost(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string
		err  error
	}{
		{"simple", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com", nil},
		{"port stripped", "GET /x?y=1 HTTP/1.1\r\nUser-Agent: curl/8\r\nHOST:  Example.COM:8080 \r\nAccept: */*\r\n\r\n", "example.com", nil},
		{"early answer", "POST /upload HTTP/1.1\r\nhost: up.example.org\r\nContent-Le", "up.example.org", nil},
		{"bare LF", "GET / HTTP/1.0\nHost: a.example\n\n", "a.example", nil},
		{"ipv4", "GET / HTTP/1.1\r\nHost: 198.18.0.1:80\r\n\r\n", "198.18.0.1", nil},
		{"ipv6", "GET / HTTP/1.1\r\nHost: [FD00:5E7::1]:8080\r\n\r\n", "fd00:5e7::1", nil},
		{"ipv6 no port", "GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "::1", nil},
		{"empty port", "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", "a.example", nil},
		{"trailing dot", "GET / HTTP/1.1\r\nHost: a.example.\r\n\r\n", "a.example", nil},
		{"two trailing dots", "GET / HTTP/1.1\r\nHost: a.example..\r\n\r\n", "", ErrBadName},
		{"absolute form", "GET http://b.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", "b.example", nil},
		{"other folded field", "GET / HTTP/1.1\r\nX-A: 1\r\n  2\r\nHost: c.example\r\n\r\n", "c.example", nil},
		{"connect", "CONNECT d.example:443 HTTP/1.1\r\nHost: d.example:443\r\n\r\n", "d.example", nil},
		{"http10 no host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", "", ErrNoHost},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "", ErrNoHost},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n", "", ErrBadName},
		{"long port", "GET / HTTP/1.1\r\nHost: a.example:123456\r\n\r\n", "", ErrBadName},
		{"space in host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "", ErrBadName},
		{"userinfo", "GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", "", ErrBadName},
		{"v6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%eth0]\r\n\r\n", "", ErrBadName},
		{"v6 unclosed", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "", ErrBadName},
		{"v4 in brackets", "GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", "", ErrBadName},
		{"folded host", "GET / HTTP/1.1\r\nHost: a.example\r\n b\r\n\r\n", "", ErrMalformed},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", "", ErrMalformed},
		{"no colon", "GET / HTTP/1.1\r\nHost a.example\r\n\r\n", "", ErrMalformed},
		{"empty", "", "", ErrNeedMore},
		{"method prefix", "GE", "", ErrNeedMore},
		{"target prefix", "GET /ab", "", ErrNeedMore},
		{"version prefix", "GET / HTTP/1", "", ErrNeedMore},
		{"cr only", "GET / HTTP/1.1\r", "", ErrNeedMore},
		{"headers prefix", "GET / HTTP/1.1\r\nAccept: */*\r\nHo", "", ErrNeedMore},
		{"host line not ended", "GET / HTTP/1.1\r\nHost: a.exa", "", ErrNeedMore},
		{"lower method", "get / HTTP/1.1\r\n", "", ErrNotHTTP},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "", ErrNotHTTP},
		{"bad version prefix", "GET / HTTX", "", ErrNotHTTP},
		{"no target", "GET  HTTP/1.1\r\n", "", ErrNotHTTP},
		{"long method", strings.Repeat("A", 25) + " / HTTP/1.1\r\n", "", ErrNotHTTP},
		{"ssh", "SSH-2.0-OpenSSH_9.6\r\n", "", ErrNotHTTP},
		{"tls", "\x16\x03\x01\x02\x00", "", ErrNotHTTP},
		{"version junk", "GET / HTTP/1.1x\r\n", "", ErrNotHTTP},
		{"ctl in target", "GET /\x01 HTTP/1.1\r\n", "", ErrNotHTTP},
		{"request line too long", "GET /" + strings.Repeat("a", maxRequestLine), "", ErrMalformed},
		{"header too long", "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", maxHeaderBytes/8+1), "", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := HTTPHost([]byte(tc.in))
			if got != tc.want || !errors.Is(err, tc.err) || tc.err == nil && err != nil {
				t.Errorf("HTTPHost = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// Every proper prefix of a request whose Host line is complete only at the end
// asks for more.
func TestHTTPHostPrefixes(t *testing.T) {
	req := []byte("DELETE /items/7?x=%20 HTTP/1.1\r\nAccept: */*\r\nHost: api.example.com:8443\r\n")
	for i := range len(req) {
		if h, err := HTTPHost(req[:i]); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("HTTPHost(%q) = %q, %v; want ErrNeedMore", req[:i], h, err)
		}
	}
	if h, err := HTTPHost(req); h != "api.example.com" || err != nil {
		t.Fatalf("HTTPHost(full) = %q, %v", h, err)
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		in        string
		host, src string
		errs      []error
	}{
		{"GET / HTTP/1.1\r\nHost: x.example\r\n\r\n", "x.example", "http", nil},
		{"GET / HTTP/1.0\r\n\r\n", "", "http", []error{ErrNoHost}},
		{"GE", "", "http", []error{ErrNeedMore}},
		{"PROPF", "", "http", []error{ErrNeedMore}},
		{"E", "", "", []error{ErrNotHTTP}},                                  // a one-byte binary message, not a method's start
		{"XYZ", "", "", []error{ErrNotHTTP}},                                // no known method begins so
		{"XYZ / HTTP/1.1\r\nHost: z.example\r\n", "z.example", "http", nil}, // a whole line with any method still counts
		{"", "", "", []error{ErrNeedMore}},
		{string(hello(sniExt(0, "y.example"))), "y.example", "sni", nil},
		{string(hello(nil)), "", "sni", []error{ErrNoHost}},
		{"\x16\x03", "", "sni", []error{ErrNeedMore}},
		{"SSH-2.0-x\r\n", "", "", []error{ErrNotTLS, ErrNotHTTP}},
		{"\x16\x09", "", "", []error{ErrNotTLS, ErrNotHTTP}},
	} {
		h, src, err := Detect([]byte(tc.in))
		if h != tc.host || src != tc.src || (err == nil) != (tc.errs == nil) {
			t.Errorf("Detect(%q) = %q, %q, %v; want %q, %q, %v", tc.in, h, src, err, tc.host, tc.src, tc.errs)
		}
		for _, e := range tc.errs {
			if !errors.Is(err, e) {
				t.Errorf("Detect(%q) error %v does not wrap %v", tc.in, err, e)
			}
		}
	}
}

func TestHappyPathAllocs(t *testing.T) {
	rec := captureHello(t, &tls.Config{ServerName: "www.example.com"})
	req := []byte("GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: www.example.com\r\n\r\n")
	for name, fn := range map[string]func(){
		"ServerName": func() { _, _ = ServerName(rec) },
		"HTTPHost":   func() { _, _ = HTTPHost(req) },
		"Detect":     func() { _, _, _ = Detect(rec) },
	} {
		if n := testing.AllocsPerRun(100, fn); n > 1 {
			t.Errorf("%s: %v allocations per call, want at most 1 (the result)", name, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ServerName(rec[:100]) }); n != 0 {
		t.Errorf("ServerName(need more): %v allocations, want 0", n)
	}
}

func BenchmarkServerName(b *testing.B) {
	rec := captureHello(b, &tls.Config{ServerName: "www.youtube.com"})
	split := reframe(rec, 512)
	b.Run("one-record", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(rec)))
		for b.Loop() {
			if _, err := ServerName(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("split-512", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(split)))
		for b.Loop() {
			if _, err := ServerName(split); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHTTPHost(b *testing.B) {
	req := []byte("GET /watch?v=abc HTTP/1.1\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nHost: www.youtube.com\r\n\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		if _, err := HTTPHost(req); err != nil {
			b.Fatal(err)
		}
	}
}
