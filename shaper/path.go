package shaper

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netshape/netshape/flow"
	"golang.org/x/time/rate"
)

// pathCfg is what a path resolved to at one generation. It is immutable once
// published.
type pathCfg struct {
	gen     uint64
	dir     [2]dirCfg
	held    []*bucket // references to give back
	refused error
}

type dirCfg struct {
	free    bool // nothing limits or counts this direction
	chunk   int  // largest grant when buckets limit it
	buckets []*bucket
	quotas  []*quota
}

// dirState is the per-direction state of a path. Only the goroutine relaying
// that direction touches it.
type dirState struct {
	cfg       *pathCfg // configuration of the outstanding grant; nil after a free one
	n         int      // bytes of the outstanding grant
	credit    int      // bucket tokens granted but not used, spent first
	creditGen uint64
}

// Path is one flow's way through the buckets and quotas. Grant and Done may
// be called concurrently for In and Out, but for one direction only from one
// goroutine at a time. The relay may attach one Path per flow or one per
// direction of a flow: buckets are shared by key either way. Close it once
// the goroutines using it have stopped. A nil *Path limits nothing.
type Path struct {
	s      *Shaper
	f      flow.Flow  // the shaper's copy: the proxy may go on writing to its own
	mu     sync.Mutex // serializes re-resolving
	cfg    atomic.Pointer[pathCfg]
	closed atomic.Bool
	ds     [2]dirState
	meters [2]Meter
}

// Meter is the byte meter of one direction (In or Out) of the path.
func (p *Path) Meter(d Dir) *Meter {
	if p == nil || d > Out {
		return nil
	}
	return &p.meters[d]
}

// current returns the configuration for the shaper's current generation,
// resolving again when rules changed since.
func (p *Path) current() *pathCfg {
	c := p.cfg.Load()
	if c.gen == p.s.gen.Load() || p.closed.Load() {
		return c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c = p.cfg.Load()
	if c.gen == p.s.gen.Load() {
		return c
	}
	now := p.s.clock.Now()
	var ev events
	nc := p.s.build(&p.f, now, &ev)
	p.cfg.Store(nc)
	p.s.release(c, now)
	p.s.emit(&ev)
	return nc
}

// Waits reports whether Grant in direction d may wait now: a rate limit
// applies to it (quotas never make Grant wait). A relay that must not block,
// such as the proxy's event loops, hands such a flow to a goroutine.
func (p *Path) Waits(d Dir) bool {
	if p == nil || d > Out {
		return false
	}
	c := p.cfg.Load()
	if c.gen != p.s.gen.Load() {
		c = p.current()
	}
	return len(c.dir[d].buckets) > 0
}

// Grant waits until the path may pass bytes in direction d and returns how
// many (1 ≤ n ≤ max). It returns max at once when nothing limits the path;
// else at most a bucket's chunk, and at most quotaChunk under a quota.
// Call Done with the bytes really copied before the next Grant. The error is
// ctx's, or wraps ErrQuotaExceeded when a quota in scope is used up (cut the
// flow).
func (p *Path) Grant(ctx context.Context, d Dir, max int) (int, error) {
	if p == nil || max <= 0 || d > Out {
		return max, nil
	}
	c := p.cfg.Load()
	if c.gen != p.s.gen.Load() {
		c = p.current()
	}
	ds := &p.ds[d]
	if c.dir[d].free {
		ds.cfg = nil
		return max, nil
	}
	return p.grantSlow(ctx, d, c, max)
}

func (p *Path) grantSlow(ctx context.Context, d Dir, c *pathCfg, max int) (int, error) {
	ds := &p.ds[d]
	for {
		// Load wake before checking the generation: a change after this
		// point closes the channel we wait on.
		wake := *p.s.wake.Load()
		if c.gen != p.s.gen.Load() {
			c = p.current()
		}
		dc := &c.dir[d]
		if dc.free {
			ds.cfg = nil
			return max, nil
		}
		if ds.creditGen != c.gen {
			ds.credit = 0
		}
		n := max
		if len(dc.quotas) > 0 {
			n = min(n, quotaChunk)
		}
		useCredit := false
		if len(dc.buckets) > 0 {
			if ds.credit > 0 {
				n = min(n, ds.credit)
				useCredit = true
			} else {
				n = min(n, dc.chunk)
			}
		}
		now := p.s.clock.Now()
		var ev events
		var err error
		for _, q := range dc.quotas {
			if n, err = q.available(now, n, &ev); err != nil {
				break
			}
		}
		p.s.emit(&ev)
		if err != nil {
			return 0, err
		}
		if n <= 0 {
			n = 1 // unreachable: available never returns 0 without an error
		}
		if useCredit {
			ds.credit -= n
		} else if len(dc.buckets) > 0 {
			ok, werr := p.waitBuckets(ctx, dc.buckets, n, now, wake)
			if werr != nil {
				return 0, werr
			}
			if !ok { // rules changed while waiting: resolve and try again
				continue
			}
		}
		for _, q := range dc.quotas {
			q.reserve(n)
		}
		ds.cfg, ds.n = c, n
		return n, nil
	}
}

// maxDepth bounds the reservations kept on the stack; deeper paths still work.
const maxDepth = 8

// waitBuckets takes n tokens from every bucket and waits until the last of
// them allows it. It returns false, with the tokens given back, when wake
// closes first (rules changed).
func (p *Path) waitBuckets(ctx context.Context, bs []*bucket, n int, now time.Time, wake <-chan struct{}) (bool, error) {
	var arr [maxDepth]*rate.Reservation
	res := arr[:0]
	cancel := func() {
		t := p.s.clock.Now()
		for _, r := range res {
			r.CancelAt(t)
		}
	}
	var delay time.Duration
	for _, b := range bs {
		r := b.lim.Load().ReserveN(now, n)
		if !r.OK() { // the bucket changed under us: its chunk is now smaller
			cancel()
			return false, nil
		}
		res = append(res, r)
		delay = max(delay, r.DelayFrom(now))
	}
	if delay <= 0 {
		return true, nil
	}
	tc, stop := p.s.clock.After(delay)
	defer stop()
	select {
	case <-tc:
		return true, nil
	case <-wake:
		cancel()
		return false, nil
	case <-ctx.Done():
		cancel()
		return false, ctx.Err()
	}
}

// Done reports that c of the bytes of the last Grant in direction d were
// copied. The unused rest is kept for the next Grant, so short reads do not
// lower the rate. It returns an error wrapping ErrQuotaExceeded when these
// bytes used up a quota that cuts: end the flow.
func (p *Path) Done(d Dir, c int) error {
	if p == nil || d > Out {
		return nil
	}
	p.meters[d].Add(int64(c))
	ds := &p.ds[d]
	cfg := ds.cfg
	if cfg == nil {
		return nil
	}
	n := ds.n
	ds.cfg, ds.n = nil, 0
	dc := &cfg.dir[d]
	if c < n && len(dc.buckets) > 0 {
		if ds.creditGen != cfg.gen {
			ds.credit, ds.creditGen = 0, cfg.gen
		}
		ds.credit += n - c
	}
	if len(dc.quotas) == 0 {
		return nil
	}
	var ev events
	var cut error
	for _, q := range dc.quotas {
		if err := q.commit(n, c, &ev); err != nil && cut == nil {
			cut = err
		}
	}
	p.s.emit(&ev)
	return cut
}

// Close gives the path's buckets back. It is idempotent; a closed path
// should not be used again.
func (p *Path) Close() error {
	if p == nil || p.closed.Swap(true) {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for d := range p.ds {
		// Give back the quota reservation of a grant that was never settled.
		ds := &p.ds[d]
		if ds.cfg != nil {
			for _, q := range ds.cfg.dir[d].quotas {
				q.commit(ds.n, 0, &events{})
			}
		}
	}
	p.s.release(p.cfg.Load(), p.s.clock.Now())
	return nil
}
