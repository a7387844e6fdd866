package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFits(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{
		{20000, (20000 - fdReserve) / fdsPerConn},
		{1 << 20, (1<<20 - fdReserve) / fdsPerConn},
		{256, 1 + 256/4},
	} {
		if got := fits(tc.limit); got != tc.want {
			t.Errorf("fits(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}

func keepNoFile(t *testing.T) {
	cur, max, err := getNoFile()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { setNoFile(cur, max) })
}

func TestRaiseFileLimitFitsSmallMaxConns(t *testing.T) {
	keepNoFile(t)
	_, max, _ := getNoFile()
	if max < 100*fdsPerConn+fdReserve {
		t.Skipf("hard open-file limit %d is below what 100 connections need", max)
	}
	fl := raiseFileLimit(100, "/nonexistent")
	if fl.warning != "" || fl.maxConns != 100 || fl.limit < 100*fdsPerConn+fdReserve {
		t.Fatalf("raiseFileLimit(100) = %+v", fl)
	}
	cur, _, _ := getNoFile()
	if cur != fl.limit {
		t.Fatalf("soft limit %d, reported %d", cur, fl.limit)
	}
}

// More connections than the kernel's nr_open can ever fit: a clear warning,
// and the cap is what fits.
func TestRaiseFileLimitWarnsWhenItCannotFit(t *testing.T) {
	keepNoFile(t)
	nr := filepath.Join(t.TempDir(), "nr_open")
	if err := os.WriteFile(nr, []byte("30000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fl := raiseFileLimit(1_000_000, nr)
	if !strings.Contains(fl.warning, "not --max-conns 1000000") {
		t.Fatalf("warning %q", fl.warning)
	}
	if fl.maxConns != fits(fl.limit) || fl.maxConns >= 1_000_000 {
		t.Fatalf("maxConns %d with limit %d", fl.maxConns, fl.limit)
	}
	if fl.limit > 30000 {
		t.Fatalf("limit %d above nr_open 30000", fl.limit)
	}
	t.Log(fl.warning)
}

// --port must leave room for every proxy port after it (four on Linux).
func TestPortLeavesRoomForTheProxyPorts(t *testing.T) {
	ok := Config{Port: uint16(65536 - proxyPorts)}
	if err := ok.fill(); err != nil {
		t.Fatalf("port %d: %v", ok.Port, err)
	}
	if got := listenAddrs(ok.Port); got[len(got)-1].Port() != 65535 {
		t.Errorf("last listen address %v, want port 65535", got[len(got)-1])
	}
	if proxyPorts == 1 {
		return
	}
	first := 65537 - proxyPorts // a variable: with one proxy port the constant would not fit a uint16
	bad := Config{Port: uint16(first)}
	if err := bad.fill(); err == nil || !strings.Contains(err.Error(), "--port") {
		t.Errorf("port %d with %d proxy ports: %v, want an error naming --port", bad.Port, proxyPorts, err)
	}
}
