package shaper

import "time"

// Clock is the shaper's source of time, replaceable in tests. Token buckets
// use the differences of Now (monotonic with the real clock); quotas use its
// wall time for period boundaries.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a func
	// that releases the timer early.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
