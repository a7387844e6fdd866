//go:build darwin || freebsd

package daemon

import (
	"fmt"
	"log/slog"
	"runtime"

	"github.com/netshape/netshape/pfctl"
)

// proxyPorts: pf redirects to one port (its states keep the client's own
// source port, so there is no clash to avoid).
const proxyPorts = 1

// newRedirector builds the pf backend. Its loop guard needs a dedicated group
// (_netshape on macOS, netshape on FreeBSD; see docs/macos.md): the daemon's
// upstream sockets carry that gid and the route-to rule skips them.
func newRedirector(cfg Config, log *slog.Logger) (Redirector, error) {
	name := pfctl.DefaultLoopGroupFreeBSD
	if runtime.GOOS == "darwin" {
		name = pfctl.DefaultLoopGroupDarwin
	}
	gid, err := pfctl.ResolveGroup(pfctl.ExecRunner{}, name)
	if err != nil {
		return nil, fmt.Errorf("loop-guard group %q: %w (create it as docs/macos.md shows)", name, err)
	}
	return pfctl.New(pfctl.Config{
		ListenPort: cfg.Port,
		Bypass:     cfg.Bypass,
		BlockQUIC:  cfg.BlockQUIC,
		StateDir:   cfg.StateDir,
		LoopGID:    gid,
		NoIPv6:     !hasIPv6Loopback(),
	}, log)
}
