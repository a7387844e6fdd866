package daemon

import (
	"net"
	"net/netip"
	"syscall"
)

// Redirector is the OS seam: it makes the kernel send outbound TCP to the proxy
// listener and tells the proxy where each connection was going. nftctl (linux)
// and pfctl (darwin, freebsd) implement it; other systems get an error at start.
type Redirector interface {
	// Name is the backend's name as shown by `netshape status` ("nftables", "pf").
	Name() string
	// Install puts the redirect rules in place. On error nothing is left installed.
	Install() error
	// Remove takes out everything Install put in place. It is idempotent.
	Remove() error
	// Cleanup removes what a previous run that died without Remove left behind.
	// It is idempotent and safe when nothing is left.
	Cleanup() error
	// OriginalDst is the destination the client connected to before the redirect.
	OriginalDst(c *net.TCPConn) (netip.AddrPort, error)
	// DialControl is set as net.Dialer.Control on the proxy's upstream sockets so
	// the rules never send them back to the proxy (the loop guard).
	DialControl(network, address string, c syscall.RawConn) error
}
