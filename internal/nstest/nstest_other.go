//go:build !linux

package nstest

import "testing"

// Require skips: network namespaces exist only on Linux.
func Require(t testing.TB) {
	t.Helper()
	t.Skip("network namespaces exist only on Linux")
}
