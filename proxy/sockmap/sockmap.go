package sockmap

import "errors"

// Sentinel errors, for errors.Is.
var (
	// ErrUnsupported: this OS or kernel cannot relay in the kernel (no BPF,
	// no sockmap, not allowed to load programs). Relay with splice instead.
	ErrUnsupported = errors.New("kernel socket relay unsupported")
	// ErrClosed: the Relay was closed; its pairs were reset.
	ErrClosed = errors.New("sockmap relay closed")
	// ErrReset: one side of a pair was reset (or failed); the other side was
	// reset too.
	ErrReset = errors.New("connection reset")
)

// Options tune a Relay. The zero value is usable.
type Options struct {
	// MaxPairs bounds the pairs relayed at once (the size of the BPF maps).
	// Default 65536.
	MaxPairs int
}
