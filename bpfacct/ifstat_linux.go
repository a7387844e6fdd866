package bpfacct

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// IfaceCounters returns the kernel's counters of every interface, from
// /sys/class/net/IF/statistics (bytes include the link header, as captured).
func IfaceCounters() ([]IfaceStat, error) {
	return readSysClassNet(os.DirFS("/sys/class/net"))
}

// SetIfaceUp sets (up) or clears IFF_UP on the named interface with a netlink
// RTM_NEWLINK request. It needs CAP_NET_ADMIN.
func SetIfaceUp(name string, up bool) error {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNoInterface, name, err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("bpfacct: open netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bpfacct: bind netlink socket: %w", err)
	}
	tv := unix.Timeval{Sec: 5}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	const seq = 1
	if err := unix.Sendto(fd, setLinkUpMsg(int32(ifc.Index), up, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bpfacct: send RTM_NEWLINK for %s: %w", name, err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("bpfacct: read netlink answer for %s: %w", name, err)
		}
		ok, err := parseNetlinkAck(buf[:n], seq)
		if !ok && err == nil {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("%w: set %s up=%v: %w", ErrPermission, name, up, err)
			}
			return fmt.Errorf("bpfacct: set %s up=%v: %w", name, up, err)
		}
		return nil
	}
}
