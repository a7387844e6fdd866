package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The profiles are written by the hidden start flags; a bad path must fail
// the start, and what is written must be a pprof file (gzip).
func TestProfilesToFile(t *testing.T) {
	dir := t.TempDir()
	for name, start := range map[string]func(string) (func(), error){
		"cpu": startCPUProfile, "mem": startMemProfile, "trace": startTrace,
	} {
		if _, err := start(filepath.Join(dir, "missing", name)); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%s: a path in a missing directory gave %v, want an error naming the flag", name, err)
		}
		f := filepath.Join(dir, name)
		stop, err := start(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = make([]byte, 1<<20) // something to allocate
		stop()
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: profile file: %d bytes, %v", name, len(b), err)
		}
		if name != "trace" && !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("%s: profile does not start with gzip's magic: % x", name, b[:min(4, len(b))])
		}
	}
}
