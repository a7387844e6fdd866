//go:build !linux && !darwin && !freebsd

package procmap

import (
	"fmt"
	"net/netip"
	"runtime"
)

type otherBackend struct{}

func newBackend(Options) backend { return otherBackend{} }

func (otherBackend) lookup(local, remote netip.AddrPort) (Proc, error) {
	return Proc{UID: -1}, fmt.Errorf("procmap: socket owners on %s: %w", runtime.GOOS, ErrUnsupported)
}
func (otherBackend) ppid(int) (int, error) {
	return 0, fmt.Errorf("procmap: parent pids on %s: %w", runtime.GOOS, ErrUnsupported)
}
func (otherBackend) parents() (map[int]int, error) {
	return nil, fmt.Errorf("procmap: process list on %s: %w", runtime.GOOS, ErrUnsupported)
}
func (otherBackend) close() error { return nil }
