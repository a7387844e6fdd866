package bpfacct

import (
	"os"
	"testing"
)

// helperEnv selects a helper mode: the test binary re-executes itself inside
// a test network namespace (ip netns exec NS <test binary>) so that every
// goroutine of the Accounter runs in that namespace.
const helperEnv = "BPFACCT_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}
