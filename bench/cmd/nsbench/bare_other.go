//go:build !linux

package main

import "errors"

func bare([]string) error {
	return errors.New("the bare relay (gobare contender) reads SO_ORIGINAL_DST and sets SO_MARK: Linux only")
}

func loop([]string) error {
	return errors.New("the event-loop relay (goloop contender) reads SO_ORIGINAL_DST and sets SO_MARK: Linux only")
}
