//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// The event loops are Linux's (loop_linux.go); elsewhere every flow is
// relayed on goroutines.

type loop struct{}

type lflow struct{}

func (p *Proxy) loopsWanted() bool { return false }

func (p *Proxy) listenControl() func(network, address string, c syscall.RawConn) error { return nil }

func (p *Proxy) startLoops() ([]*loop, error) { return nil, errors.ErrUnsupported }

func (p *Proxy) serveLoops([]*loop) error { return errors.ErrUnsupported }

func (p *Proxy) stopLoops() {}

func (l *loop) post(func()) bool { return false }

func (l *loop) abortOwned(*conn, string) {}

func (l *loop) cutOwned(*conn, error) {}
