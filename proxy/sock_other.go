//go:build !linux

package proxy

import "net"

// clientGone reports whether a held client has closed or reset its side.
func clientGone(c *net.TCPConn) bool { return peekGone(c) }
