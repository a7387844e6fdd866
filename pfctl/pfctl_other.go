//go:build !darwin && !freebsd

package pfctl

import (
	"fmt"
	"log/slog"
	"runtime"
)

// New reports ErrUnsupported: pf exists only on macOS and FreeBSD here.
func New(cfg Config, log *slog.Logger) (*PF, error) {
	return nil, fmt.Errorf("pf backend on %s: %w", runtime.GOOS, ErrUnsupported)
}

func ioctlNatlook(fd int, req uint, buf []byte) error {
	return fmt.Errorf("DIOCNATLOOK on %s: %w", runtime.GOOS, ErrUnsupported)
}
