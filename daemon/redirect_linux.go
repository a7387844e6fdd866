package daemon

import (
	"log/slog"
	"os"

	"github.com/netshape/netshape/nftctl"
)

func newRedirector(cfg Config, log *slog.Logger) (Redirector, error) {
	return nftctl.New(nftctl.Config{
		Port:      cfg.Port,
		Bypass:    cfg.Bypass,
		BlockQUIC: cfg.BlockQUIC,
	}, log), nil
}

func hasIPv6Loopback() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
	return err == nil && len(b) > 0 && b[0] == '0'
}
