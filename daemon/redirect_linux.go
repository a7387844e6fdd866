package daemon

import (
	"log/slog"

	"github.com/netshape/netshape/nftctl"
)

// proxyPorts is how many ports the proxy listens on, from Config.Port: the
// redirect picks among them so that a connection whose redirected reply
// would clash with an older one's in conntrack (its source port used before
// towards another destination) keeps its source port, by which its process
// is found (nftctl.Config.Ports).
const proxyPorts = 4

func newRedirector(cfg Config, log *slog.Logger) (Redirector, error) {
	return nftctl.New(nftctl.Config{
		Port:      cfg.Port,
		Ports:     proxyPorts,
		Bypass:    cfg.Bypass,
		BlockQUIC: cfg.BlockQUIC,
	}, log), nil
}
