//go:build !linux && !darwin && !freebsd

package bpfacct

// IfaceCounters is not supported on this OS.
func IfaceCounters() ([]IfaceStat, error) { return nil, ErrUnsupported }

// SetIfaceUp is not supported on this OS.
func SetIfaceUp(name string, up bool) error { return ErrUnsupported }
