package shaper

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Chunk sizing. A chunk is what one Grant hands out on a limited path: about
// chunkTime worth of the slowest bucket's rate, so slow rates pass in small
// smooth steps and fast rates in large ones that keep splice efficient.
//
// A bucket holds up to burstTime worth of tokens (at least burstChunks
// chunks): a relay goroutine that wakes late on a busy machine still finds
// the tokens that accrued meanwhile instead of losing them. New buckets start
// with one chunk, not a full burst, so the start of a flow does not overshoot.
const (
	chunkTime   = 20 * time.Millisecond
	burstTime   = 100 * time.Millisecond
	minChunk    = 128
	maxChunk    = 4 << 20
	burstChunks = 2
)

// quotaChunk is the largest grant on a path a quota counts: flows sharing a
// quota may each overshoot it by what they were granted when it ran out, so
// grants stay small there. A path nothing limits or counts gets what the
// relay asks for (1 MiB), which keeps splice efficient.
const quotaChunk = 256 << 10

// burstFor is the capacity of a bucket of rate r with chunk c.
func burstFor(r float64, c int) int {
	return max(c*burstChunks, int(min(r*burstTime.Seconds(), 1<<40)))
}

// chunkFor is the chunk size for a bucket of rate r bytes per second.
func chunkFor(r float64) int {
	c := r * chunkTime.Seconds()
	switch {
	case c < minChunk:
		return minChunk
	case c > maxChunk:
		return maxChunk
	}
	return int(c)
}

// bucket is one token bucket of the tree. Its limiter is replaced, not
// adjusted, when the rate changes, so debt run up at a fast rate is not paid
// back at a slow one.
type bucket struct {
	key   bucketKey
	lim   atomic.Pointer[rate.Limiter]
	rate  float64 // guarded by Shaper.mu
	chunk atomic.Int64
	refs  int  // paths using it; guarded by Shaper.mu
	idle  bool // on Shaper.idle; guarded by Shaper.mu
}

// bucketKey names a bucket: the limit (or throttling quota) it belongs to, the
// direction, and the flow attribute that splits a Limit with Each.
type bucketKey struct {
	owner int64 // limit ID, or ^quota ID for a quota's throttle bucket
	dir   Dir
	each  string
}

func newBucket(k bucketKey, r float64, now time.Time) *bucket {
	b := &bucket{key: k}
	b.set(r, now)
	return b
}

// set installs a fresh limiter at rate r holding one chunk of tokens, so a
// rate change neither carries debt over nor grants a new burst.
func (b *bucket) set(r float64, now time.Time) {
	c := chunkFor(r)
	burst := burstFor(r, c)
	l := rate.NewLimiter(rate.Limit(r), burst)
	l.ReserveN(now, burst-c)
	b.rate = r
	b.chunk.Store(int64(c))
	b.lim.Store(l)
}

// full reports whether the bucket holds a whole burst, so dropping it and
// making a new one later changes nothing.
func (b *bucket) full(now time.Time) bool {
	l := b.lim.Load()
	return l.TokensAt(now) >= float64(l.Burst())
}
