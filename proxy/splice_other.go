//go:build !linux

package proxy

import (
	"io"
	"net"
)

// pipePool is Linux-only; elsewhere the relay copies with io.CopyN, which the
// runtime moves with sendfile or through user space.
type pipePool struct{}

func newPipePool() pipePool { return pipePool{} }
func (pipePool) drain()     {}

// transfer moves up to max bytes from src to dst.
func (p *Proxy) transfer(dst, src *net.TCPConn, max int) (int64, error) {
	return io.CopyN(dst, src, int64(max))
}
