//go:build !linux && !darwin && !freebsd

package control

import (
	"errors"
	"net"
)

func peerCred(c *net.UnixConn) (Cred, error) {
	return Cred{}, errors.New("peer credentials are not supported on this system")
}
