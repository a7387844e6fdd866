package sniff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// checkPrefixes checks that every prefix of an input that gave a name either
// asks for more or gives the same name (the message may end before b does),
// and that bytes after it change nothing.
func checkPrefixes(t *testing.T, fn func([]byte) (string, error), b []byte, name string) {
	t.Helper()
	if got, err := hostName([]byte(name)); err != nil || got != name {
		t.Fatalf("returned name %q is not a normalised host name: %q, %v", name, got, err)
	}
	step := 1 + len(b)/64
	for i := 0; i < len(b); i += step {
		got, err := fn(b[:i])
		if unknownMethodOnly(b[:i]) && errors.Is(err, ErrNotHTTP) {
			continue // by design: a lone token no known method begins with is not waited on
		}
		if err != nil && !errors.Is(err, ErrNeedMore) || err == nil && got != name {
			t.Fatalf("prefix %d of %d: %q, %v; full input gave %q", i, len(b), got, err, name)
		}
	}
	if got, err := fn(append(bytes.Clone(b), "\x00junk\r\n"...)); err != nil || got != name {
		t.Fatalf("with trailing bytes: %q, %v; want %q", got, err, name)
	}
}

// unknownMethodOnly reports whether p is a bare method-like token (no space
// yet) that begins no known method: HTTPHost declines those without waiting.
func unknownMethodOnly(p []byte) bool {
	for _, c := range p {
		if !(c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '\r') {
			return false
		}
	}
	return !knownMethodPrefix(bytes.TrimSuffix(p, []byte("\r")))
}

func checkErr(t *testing.T, err error, allowed ...error) {
	t.Helper()
	for _, e := range allowed {
		if errors.Is(err, e) {
			return
		}
	}
	t.Fatalf("error %v wraps none of the documented sentinels", err)
}

func FuzzServerName(f *testing.F) {
	for _, s := range serverNameSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := ServerName(b)
		if err != nil {
			checkErr(t, err, ErrNeedMore, ErrNotTLS, ErrMalformed, ErrNoHost, ErrBadName)
			return
		}
		checkPrefixes(t, ServerName, b, name)
	})
}

func FuzzHTTPHost(f *testing.F) {
	for _, s := range httpSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := HTTPHost(b)
		if err != nil {
			checkErr(t, err, ErrNeedMore, ErrNotHTTP, ErrMalformed, ErrNoHost, ErrBadName)
			return
		}
		if strings.Contains(name, ":") { // an IPv6 literal
			return
		}
		checkPrefixes(t, HTTPHost, b, name)
	})
}

func serverNameSeeds(tb testing.TB) [][]byte {
	rec13 := captureHello(tb, &tls.Config{ServerName: "www.youtube.com"})
	rec12 := captureHello(tb, &tls.Config{ServerName: "example.org", MaxVersion: tls.VersionTLS12})
	nosni := captureHello(tb, &tls.Config{InsecureSkipVerify: true})
	return [][]byte{
		rec13, rec12, nosni,
		reframe(rec13, 1), reframe(rec13, 100), reframe(rec12, 7),
		rec13[:len(rec13)/2],
		hello(sniExt(0, strings.Repeat("a", 300))),
		hello(sniExt(0, "UPPER.Example.")),
		hello([]byte{0, 0, 0xff, 0xff}),
		{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff},
		[]byte("GET / HTTP/1.1\r\n"),
	}
}

func httpSeeds() [][]byte {
	return [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		[]byte("POST /a HTTP/1.0\r\nUser-Agent: x\r\nHOST: Example.COM:8080\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: [fd00:5e7::1]:80\r\n\r\n"),
		[]byte("GET / HTTP/1.1\nX: a\n b\nhost: a.b\n\n"),
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		[]byte("GET /" + strings.Repeat("x", 300) + " HTTP/1.1\r\nHost: " + strings.Repeat("a", 70) + "\r\n"),
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHo"),
	}
}

// TestWriteCorpus regenerates the checked-in seed corpus when run with
// -write-corpus; without it, it checks that the corpus is there.
func TestWriteCorpus(t *testing.T) {
	sets := map[string][][]byte{"FuzzServerName": serverNameSeeds(t), "FuzzHTTPHost": httpSeeds()}
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
