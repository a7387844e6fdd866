package proxy

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// goroutineRelay makes the tests' proxies relay on goroutines rather than
// the event loops.
var goroutineRelay bool

// TestMain runs the tests twice on Linux: with the event loops (the default
// there) and with the goroutine relay every OS has, which the loops hand the
// flows to that must wait.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code == 0 && eventLoops && flag.Lookup("test.bench").Value.String() == "" {
		fmt.Println("=== the same tests with the goroutine relay (no event loops)")
		goroutineRelay = true
		code = m.Run()
	}
	os.Exit(code)
}

// goroutinesOnly is a harness edit for tests of the goroutine relay itself.
func goroutinesOnly(c *Config) { c.GoroutineRelay = true }
