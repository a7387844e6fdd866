package nftctl

import (
	"errors"
	"net/netip"
)

// Defaults.
const (
	DefaultTable = "netshape"
	DefaultMark  = 0x5e7
)

// ErrUnavailable wraps failures to talk to nftables at all (no kernel support,
// no permission).
var ErrUnavailable = errors.New("nftables unavailable")

// Config says what to redirect and what to leave alone.
type Config struct {
	Table string // table name; DefaultTable when empty
	Port  uint16 // proxy listen port on 127.0.0.1 and ::1
	// Ports is how many consecutive proxy ports from Port the redirect may
	// pick from (0 and 1: Port alone). With several, a connection whose
	// redirected reply tuple clashes with an older one's still in conntrack
	// (the same source port, used before towards another destination) gets
	// another proxy port; with one, NAT rewrites its source port instead, and
	// the proxy can no longer find the process that owns it.
	Ports     int
	Mark      uint32         // socket mark of the proxy's upstream sockets; DefaultMark when 0
	Bypass    []netip.Prefix // destinations never redirected
	BlockQUIC bool           // reject outbound UDP 443 so browsers fall back to TCP
	// BlockedIfaces get all traffic dropped in and out (an interface quota ran out).
	BlockedIfaces []string
}

// lastPort is the last proxy port the redirect may pick. A range that would
// pass 65535 is not one: Port alone (the daemon refuses such a --port).
func (c Config) lastPort() uint16 {
	if c.Ports <= 1 || int(c.Port)+c.Ports-1 > 65535 {
		return c.Port
	}
	return c.Port + uint16(c.Ports-1)
}

func (c Config) withDefaults() Config {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	return c
}
