//go:build !linux && !darwin && !freebsd

package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
)

// ErrUnsupported: no redirect backend for this system (yet).
var ErrUnsupported = errors.New("unsupported system")

const proxyPorts = 1

func newRedirector(cfg Config, log *slog.Logger) (Redirector, error) {
	return nil, fmt.Errorf("%w: netshape has no redirect backend for %s", ErrUnsupported, runtime.GOOS)
}
