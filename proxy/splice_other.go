//go:build !linux

package proxy

import (
	"io"
)

// pipePool is Linux-only; elsewhere the relay copies with io.CopyN, which the
// runtime moves with sendfile or through user space.
type pipePool struct{}

func newPipePool() pipePool { return pipePool{} }

// spliceState is Linux-only.
type spliceState struct{}

func (pipePool) drain() {}

// transfer moves up to max bytes from src to dst. It blocks until src has
// bytes (wait or not), so it never reports src drained and nothing parks.
func (p *Proxy) transfer(x *direction, max int, wait bool) (int64, bool, error) {
	n, err := io.CopyN(x.dst, x.src, int64(max))
	return n, false, err
}
