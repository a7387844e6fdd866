//go:build unix

package proxy

import (
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// peek copies bytes waiting on c into buf without consuming them. When block
// is set it waits for bytes until deadline. n == 0 with a nil error means the
// client closed its side.
func peek(c *net.TCPConn, buf []byte, block bool, deadline time.Time) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	if block {
		c.SetReadDeadline(deadline)
		defer c.SetReadDeadline(time.Time{})
	}
	var (
		n    int
		serr error
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, serr = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !(block && errors.Is(serr, unix.EAGAIN))
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return n, nil
}

// peekGone reports whether the client closed or reset, by peeking one byte.
func peekGone(c *net.TCPConn) bool {
	var b [1]byte
	n, err := peek(c, b[:], false, time.Time{})
	if err != nil {
		return !errors.Is(err, unix.EAGAIN)
	}
	return n == 0
}
