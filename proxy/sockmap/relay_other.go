//go:build !linux

package sockmap

import (
	"context"
	"log/slog"
	"net"
)

// Relay moves bytes between pairs of TCP sockets inside the kernel; only
// Linux has one.
type Relay struct{}

// Pair is one relayed connection.
type Pair struct{}

// Open returns ErrUnsupported: only Linux can relay sockets in the kernel.
func Open(log *slog.Logger, opt Options) (*Relay, error) { return nil, ErrUnsupported }

// Close does nothing.
func (r *Relay) Close() error { return nil }

// Splice returns ErrUnsupported.
func (r *Relay) Splice(ctx context.Context, a, b *net.TCPConn) (*Pair, error) {
	return nil, ErrUnsupported
}

// Wait returns ErrUnsupported.
func (p *Pair) Wait() (aToB, bToA int64, err error) { return 0, 0, ErrUnsupported }

// Done returns a closed channel.
func (p *Pair) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Bytes returns zeros.
func (p *Pair) Bytes() (aToB, bToA int64) { return 0, 0 }

// Kernel returns false.
func (p *Pair) Kernel() bool { return false }
