//go:build darwin || freebsd

package control

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred reads LOCAL_PEERCRED (struct xucred). It carries no pid.
func peerCred(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var (
		xc   *unix.Xucred
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		xc, gerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return Cred{}, err
	}
	if gerr != nil {
		return Cred{}, gerr
	}
	gid := -1
	if xc.Ngroups > 0 {
		gid = int(xc.Groups[0])
	}
	return Cred{PID: -1, UID: int(xc.Uid), GID: gid}, nil
}
