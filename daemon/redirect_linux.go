package daemon

import (
	"log/slog"

	"github.com/netshape/netshape/nftctl"
)

func newRedirector(cfg Config, log *slog.Logger) (Redirector, error) {
	return nftctl.New(nftctl.Config{
		Port:      cfg.Port,
		Bypass:    cfg.Bypass,
		BlockQUIC: cfg.BlockQUIC,
	}, log), nil
}
