//go:build !linux

package proxy

// eventLoops: no event loops here; the goroutine relay is the only one.
const eventLoops = false
