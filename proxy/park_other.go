//go:build !linux

package proxy

import "errors"

// parker is Linux-only. Elsewhere transfer blocks in io.CopyN until bytes
// arrive and never reports its source drained, so nothing is parked: each
// relay direction keeps its goroutine.
type parker struct{}

func newParker(func(msg string, args ...any)) (*parker, error) {
	return nil, errors.ErrUnsupported
}

func (*parker) park(*direction) bool { return false }
func (*parker) wake(*direction)      {}
func (*parker) close()               {}
