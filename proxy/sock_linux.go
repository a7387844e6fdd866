package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// clientGone reports whether a held client has closed or reset its side. The
// kernel's TCP state sees a FIN even when data sits unread in front of it,
// which a peek cannot.
func clientGone(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			gone = true
			return
		}
		switch info.State {
		case unix.BPF_TCP_CLOSE_WAIT, unix.BPF_TCP_CLOSE, unix.BPF_TCP_LAST_ACK:
			gone = true
		}
	})
	return err != nil || gone || peekGone(c)
}
