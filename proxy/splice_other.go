//go:build !linux

package proxy

import (
	"io"
	"net"
	"syscall"
)

// pipePool is Linux-only; elsewhere the relay copies with io.CopyN, which the
// runtime moves with sendfile or through user space.
type pipePool struct{}

func newPipePool() pipePool { return pipePool{} }
func (pipePool) drain()     {}

// transfer moves up to max bytes from src to dst. It blocks until src has
// bytes, so it never reports src drained and nothing waits in waitReadable.
func (p *Proxy) transfer(dst, src *net.TCPConn, max int) (int64, bool, error) {
	n, err := io.CopyN(dst, src, int64(max))
	return n, false, err
}

// waitReadable is the Linux relay's wait for a drained source; transfer here
// never drains without blocking, so there is nothing to wait for.
func waitReadable(syscall.RawConn) error { return nil }
