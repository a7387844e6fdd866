package nftctl

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// NFT is the nftables redirect backend. It implements daemon.Redirector.
type NFT struct {
	log *slog.Logger
	// dial opens a netlink connection; tests replace it with nftables.WithTestDial.
	dial func() (*nftables.Conn, error)

	mu        sync.Mutex
	cfg       Config
	installed bool
}

// New returns a backend for cfg. Nothing is changed until Install.
func New(cfg Config, log *slog.Logger) *NFT {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NFT{
		log:  log,
		cfg:  cfg.withDefaults(),
		dial: func() (*nftables.Conn, error) { return nftables.New() },
	}
}

// Name implements daemon.Redirector.
func (n *NFT) Name() string { return "nftables" }

// Install replaces any table of our name with the one for the current config,
// in one atomic batch.
func (n *NFT) Install() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.apply(n.cfg); err != nil {
		return err
	}
	n.installed = true
	n.log.Info("nftables redirect installed", "table", "inet "+n.cfg.Table, "port", n.cfg.Port,
		"bypass", len(n.cfg.Bypass), "block_quic", n.cfg.BlockQUIC)
	return nil
}

func (n *NFT) apply(cfg Config) error {
	conn, err := n.dial()
	if err != nil {
		return fmt.Errorf("%w: open netlink: %v", ErrUnavailable, err)
	}
	addTable(conn, cfg, true)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", cfg.Table, classify(err))
	}
	return nil
}

// SetBlockedIfaces drops all traffic in and out of ifaces (an interface quota
// ran out), or lifts the block with an empty list. It applies at once when
// installed, else at Install.
func (n *NFT) SetBlockedIfaces(ifaces []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	cfg := n.cfg
	cfg.BlockedIfaces = append([]string(nil), ifaces...)
	if n.installed {
		if err := n.apply(cfg); err != nil {
			return err
		}
	}
	n.cfg = cfg
	return nil
}

// Remove deletes our table. It is idempotent.
func (n *NFT) Remove() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.deleteTable(); err != nil {
		return err
	}
	if n.installed {
		n.log.Info("nftables redirect removed", "table", "inet "+n.cfg.Table)
	}
	n.installed = false
	return nil
}

// Cleanup deletes a table a previous run left behind, if any.
func (n *NFT) Cleanup() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.deleteTable()
}

// deleteTable deletes the table whether or not it exists, in one batch.
func (n *NFT) deleteTable() error {
	conn, err := n.dial()
	if err != nil {
		return fmt.Errorf("%w: open netlink: %v", ErrUnavailable, err)
	}
	t := &nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyINet}
	conn.AddTable(t)
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete nftables table inet %s: %w", n.cfg.Table, classify(err))
	}
	return nil
}

// Installed reports whether our table exists in the kernel now.
func (n *NFT) Installed() (bool, error) {
	conn, err := n.dial()
	if err != nil {
		return false, fmt.Errorf("%w: open netlink: %v", ErrUnavailable, err)
	}
	ts, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", classify(err))
	}
	for _, t := range ts {
		if t.Name == n.cfg.Table {
			return true, nil
		}
	}
	return false, nil
}

func classify(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: permission denied (run as root or with CAP_NET_ADMIN): %w", ErrUnavailable, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: kernel lacks nftables support (modprobe nf_tables nft_redir): %w", ErrUnavailable, err)
	}
	return err
}

// DialControl marks the proxy's upstream sockets so the out chain returns them
// unredirected (the loop guard).
func (n *NFT) DialControl(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = n.MarkFD(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// MarkFD is DialControl for the event loops' sockets: raw, as getsockopt,
// with no allocation (once per connection).
func (n *NFT) MarkFD(fd int) error {
	mark := int32(n.cfg.Mark)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MARK,
		uintptr(unsafe.Pointer(&mark)), 4, 0); e != 0 {
		return fmt.Errorf("set SO_MARK on upstream socket: %w", e)
	}
	return nil
}

// OriginalDst reads the destination a redirected connection was going to.
func (n *NFT) OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	return OriginalDst(c)
}

// OriginalDstFD is OriginalDst for a socket the proxy's event loops
// accepted; v6 says its family.
func (n *NFT) OriginalDstFD(fd int, v6 bool) (netip.AddrPort, error) {
	return OriginalDstFD(fd, v6)
}

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h), and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) has the same value.
const soOriginalDst = 80

// ErrNotRedirected is returned by OriginalDst for a connection that did not come
// through the redirect (someone connected to the proxy port directly).
var ErrNotRedirected = errors.New("connection was not redirected")

// OriginalDst reads SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6) from
// an accepted connection.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	la, _ := c.LocalAddr().(*net.TCPAddr)
	v6 := la != nil && la.IP.To4() == nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		ap   netip.AddrPort
		gerr error
	)
	if err := rc.Control(func(fd uintptr) { ap, gerr = OriginalDstFD(int(fd), v6) }); err != nil {
		return netip.AddrPort{}, err
	}
	return ap, gerr
}

// OriginalDstFD is OriginalDst for the descriptor of an accepted socket of
// family AF_INET6 (v6) or AF_INET.
func OriginalDstFD(fd int, v6 bool) (netip.AddrPort, error) {
	var ap netip.AddrPort
	var err error
	if v6 {
		var sa unix.RawSockaddrInet6
		l := uint32(unsafe.Sizeof(sa))
		if err = getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa), &l); err == nil {
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), netPort(&sa.Port))
		}
	} else {
		var sa unix.RawSockaddrInet4
		l := uint32(unsafe.Sizeof(sa))
		if err = getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &l); err == nil {
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), netPort(&sa.Port))
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNotRedirected, err)
	case err != nil:
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	return ap, nil
}

// getsockopt is raw (no runtime entersyscall/exitsyscall): it never sleeps,
// and the proxy's event loops call it once per connection (see
// proxy/rawsys_linux.go for why their calls are raw).
func getsockopt(fd, level, name int, v unsafe.Pointer, l *uint32) error {
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(v), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// netPort reads a port stored in network byte order, on any host byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
