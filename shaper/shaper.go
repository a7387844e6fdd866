package shaper

import (
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netshape/netshape/flow"
)

// Options configure a Shaper. The zero value works.
type Options struct {
	Logger *slog.Logger
	// Clock defaults to the real clock.
	Clock Clock
	// Loc is the time zone of quotas that set none; nil means time.Local.
	Loc *time.Location
	// OnEvent is called for every quota event, synchronously from the relay
	// or from the method that caused it, with no lock held. It must return
	// quickly (hand the event to a channel or goroutine).
	OnEvent func(Event)
	// MatchHost replaces the default host matching (exact name or IP,
	// "*.example.com") of Selector.Host, e.g. with the policy's matcher that
	// knows CIDRs.
	MatchHost func(pattern string, f *flow.Flow) bool
	// MayMatchHost, when set, is asked once per flow being resolved; false
	// means no Selector.Host can match it, and MatchHost is not asked about
	// each (with hundreds of limits and quotas, most flows match none).
	MayMatchHost func(f *flow.Flow) bool
	// ExternalIfaceBytes means the daemon also counts interface traffic the
	// proxy does not relay (UDP, ICMP, bypassing TCP: the capture's bytes less
	// the proxied ones) and reports it with AddIfaceBytes. Quotas whose
	// selector names only an interface then count those bytes as well as the
	// proxied ones, which paths count chunk by chunk (so a proxied flow is
	// cut within one chunk). Without it, AddIfaceBytes does nothing.
	ExternalIfaceBytes bool
}

// Shaper holds the rate limits and quotas and hands out Paths.
type Shaper struct {
	log       *slog.Logger
	clock     Clock
	loc       *time.Location
	onEvent   func(Event)
	matchHost func(string, *flow.Flow) bool
	mayHost   func(*flow.Flow) bool
	external  bool

	// gen changes whenever what a path resolves to may have changed; wake is
	// closed at the same time to wake flows waiting for tokens.
	gen  atomic.Uint64
	wake atomic.Pointer[chan struct{}]

	mu     sync.Mutex
	limits []Limit
	quotas []*quota
	// For build: every limit, and the limits and quotas whose selector names
	// no host (all that a flow MayMatchHost refused can match).
	allLimits, unhostedLimits []*Limit
	unhostedQuotas            []*quota
	byID                      map[int64]*quota
	buckets                   map[bucketKey]*bucket
	idle                      []*bucket // unreferenced buckets kept until full
}

// New returns a Shaper with no limits and no quotas.
func New(o Options) *Shaper {
	s := &Shaper{
		log: o.Logger, clock: o.Clock, loc: o.Loc, onEvent: o.OnEvent,
		matchHost: o.MatchHost, mayHost: o.MayMatchHost, external: o.ExternalIfaceBytes,
		byID: map[int64]*quota{}, buckets: map[bucketKey]*bucket{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.loc == nil {
		s.loc = time.Local
	}
	if s.matchHost == nil {
		s.matchHost = matchHostPattern
	}
	ch := make(chan struct{})
	s.wake.Store(&ch)
	s.gen.Store(1)
	return s
}

// bump makes every path re-resolve and wakes flows waiting for tokens.
func (s *Shaper) bump() {
	s.gen.Add(1)
	ch := make(chan struct{})
	close(*s.wake.Swap(&ch))
}

func (s *Shaper) emit(ev *events) {
	if ev.changed {
		s.bump()
	}
	for i := 0; i < ev.n+len(ev.more); i++ {
		e := ev.ev[min(i, len(ev.ev)-1)]
		if i >= ev.n {
			e = ev.more[i-ev.n]
		}
		s.log.Info("quota event", "quota", e.Quota.ID, "event", e.Kind.String(), "scope", e.Quota.Sel.String(),
			"used", e.Used, "limit", e.Limit, "throttled", e.Throttled)
		if s.onEvent != nil {
			s.onEvent(e)
		}
	}
}

// matches reports whether sel selects f; mayHost false (MayMatchHost's
// answer for f) fails every Host selector without asking.
func (s *Shaper) matches(sel Selector, f *flow.Flow, mayHost bool) bool {
	if sel.Iface != "" && sel.Iface != f.Iface {
		return false
	}
	if sel.App != "" && sel.App != f.App() && sel.App != f.Exe {
		return false
	}
	if sel.Host != "" && (!mayHost || !s.matchHost(sel.Host, f)) {
		return false
	}
	return true
}

// SetLimits replaces every rate limit. Running flows follow within one chunk
// (flows waiting for tokens are woken and re-resolve at once). On error
// nothing changes.
func (s *Shaper) SetLimits(ls []Limit) error {
	seen := make(map[int64]bool, len(ls))
	for _, l := range ls {
		if err := l.Validate(); err != nil {
			return err
		}
		if seen[l.ID] {
			return fmt.Errorf("%w: limit ID %d is used twice; give every limit its own ID", ErrInvalid, l.ID)
		}
		seen[l.ID] = true
	}
	now := s.clock.Now()
	s.mu.Lock()
	byID := make(map[int64]Limit, len(ls))
	for _, l := range ls {
		byID[l.ID] = l
	}
	for k, b := range s.buckets { // only limits' buckets; throttles live in their quota
		old := s.limitLocked(k.owner)
		nl, ok := byID[k.owner]
		r := nl.rate(k.dir)
		if !ok || r == 0 || nl.Sel != old.Sel || nl.Each != old.Each {
			delete(s.buckets, k) // paths drop it on re-resolve
			continue
		}
		if r != b.rate {
			b.set(r, now)
		}
	}
	s.limits = append([]Limit(nil), ls...)
	s.allLimits, s.unhostedLimits = nil, nil
	for i := range s.limits {
		l := &s.limits[i]
		s.allLimits = append(s.allLimits, l)
		if l.Sel.Host == "" {
			s.unhostedLimits = append(s.unhostedLimits, l)
		}
	}
	s.mu.Unlock()
	s.bump()
	s.log.Debug("rate limits set", "count", len(ls))
	return nil
}

func (s *Shaper) limitLocked(id int64) Limit {
	for _, l := range s.limits {
		if l.ID == id {
			return l
		}
	}
	return Limit{}
}

func (l Limit) rate(d Dir) float64 {
	switch d {
	case In:
		return l.In
	case Out:
		return l.Out
	}
	return l.Total
}

// SetQuotas replaces every quota. Quotas whose ID existed before keep their
// counters (used and granted bytes of the current period). On error nothing
// changes.
func (s *Shaper) SetQuotas(qs []Quota) error {
	seen := make(map[int64]bool, len(qs))
	for _, q := range qs {
		if err := q.Validate(); err != nil {
			return err
		}
		if seen[q.ID] {
			return fmt.Errorf("%w: quota ID %d is used twice; give every quota its own ID", ErrInvalid, q.ID)
		}
		seen[q.ID] = true
	}
	now := s.clock.Now()
	var evs []events
	s.mu.Lock()
	list := make([]*quota, 0, len(qs))
	byID := make(map[int64]*quota, len(qs))
	for _, cfg := range qs {
		var ev events
		nq := &quota{q: cfg, loc: cfg.Loc, meter: Meter{window: quotaMeterWindow}}
		if nq.loc == nil {
			nq.loc = s.loc
		}
		nq.external = s.external && cfg.Sel.Scope() == Iface
		nq.start, nq.end = periodBounds(cfg.Period, cfg.ResetDay, nq.loc, now)
		nq.mu.Lock()
		if old := s.byID[cfg.ID]; old != nil {
			// Take over the counters and retire the old version: paths
			// still holding it are forwarded here.
			old.mu.Lock()
			nq.used, nq.granted, nq.inflight = old.used, old.granted, old.inflight
			nq.warned, nq.exhausted = old.warned, old.exhausted
			if old.q.Period == cfg.Period && old.q.ResetDay == cfg.ResetDay && old.loc.String() == nq.loc.String() {
				nq.start, nq.end = old.start, old.end
			}
			if old.throttle != nil && old.q.ThrottleRate == cfg.ThrottleRate {
				nq.throttle = old.throttle
			}
			nq.meter.copyFrom(&old.meter)
			old.next = nq
			old.mu.Unlock()
			if nq.exhausted && nq.used < nq.q.Limit+nq.granted {
				nq.exhausted = false
				ev.add(nq.event(QuotaRestored))
			}
		}
		if cfg.ThrottleRate > 0 && nq.throttle == nil {
			nq.throttle = newBucket(bucketKey{owner: ^cfg.ID, dir: cfg.Dir}, cfg.ThrottleRate, now)
		}
		nq.rollLocked(now, &ev)
		nq.checkLocked(&ev)
		nq.mu.Unlock()
		list = append(list, nq)
		byID[cfg.ID] = nq
		if ev.n > 0 {
			evs = append(evs, ev)
		}
	}
	s.quotas, s.byID = list, byID
	s.unhostedQuotas = nil
	for _, q := range list {
		if q.q.Sel.Host == "" {
			s.unhostedQuotas = append(s.unhostedQuotas, q)
		}
	}
	s.mu.Unlock()
	for i := range evs {
		evs[i].changed = false
		s.emit(&evs[i])
	}
	s.bump()
	s.log.Debug("quotas set", "count", len(qs))
	return nil
}

// Grant adds bytes to quota id's budget for the current period ("give me
// 1 GB more"). A quota that was used up and is now below its limit lets flows
// pass again.
func (s *Shaper) Grant(id int64, bytes int64) error {
	if bytes < 1 {
		return fmt.Errorf("%w: grant of %d bytes to quota %d must be positive", ErrInvalid, bytes, id)
	}
	s.mu.Lock()
	q := s.byID[id]
	s.mu.Unlock()
	if q == nil {
		return fmt.Errorf("grant %d bytes to quota %d: %w; list quotas to see their IDs", bytes, id, ErrUnknownQuota)
	}
	var ev events
	q.grant(s.clock.Now(), bytes, &ev)
	s.emit(&ev)
	return nil
}

// QuotaStates returns the counters to persist. It also starts new periods
// that are due (raising QuotaReset), so calling it every few seconds is what
// lifts an exhausted quota at its period's end even without traffic.
func (s *Shaper) QuotaStates() []QuotaState {
	now := s.clock.Now()
	s.mu.Lock()
	qs := append([]*quota(nil), s.quotas...)
	s.mu.Unlock()
	out := make([]QuotaState, 0, len(qs))
	for _, q := range qs {
		var ev events
		out = append(out, q.state(now, &ev))
		s.emit(&ev)
	}
	return out
}

// Restore loads persisted counters for quotas set with SetQuotas. States of
// unknown quotas and of periods that are over are ignored; a state whose
// period lies ahead of the clock (the clock went back) is kept, so a clock
// jump never refills a quota.
func (s *Shaper) Restore(states []QuotaState) {
	now := s.clock.Now()
	for _, st := range states {
		s.mu.Lock()
		q := s.byID[st.ID]
		s.mu.Unlock()
		if q == nil {
			s.log.Debug("quota state for unknown quota ignored", "quota", st.ID)
			continue
		}
		var ev events
		q.restore(now, st, &ev)
		s.emit(&ev)
	}
}

// Quotas returns every quota with its counters, rate and forecast.
func (s *Shaper) Quotas() []QuotaStatus {
	now := s.clock.Now()
	s.mu.Lock()
	qs := append([]*quota(nil), s.quotas...)
	s.mu.Unlock()
	out := make([]QuotaStatus, 0, len(qs))
	for _, q := range qs {
		var ev events
		out = append(out, q.status(now, &ev))
		s.emit(&ev)
	}
	return out
}

// AddIfaceBytes counts n bytes that crossed iface outside the proxy towards
// the interface quotas (selector with only Iface set) of that direction. It
// does nothing unless Options.ExternalIfaceBytes is set. When such a quota runs
// out a QuotaExhausted event with Quota.Sel.Iface set tells the daemon to
// block the interface.
func (s *Shaper) AddIfaceBytes(iface string, dir Dir, n int64) {
	if !s.external || n <= 0 {
		return
	}
	now := s.clock.Now()
	s.mu.Lock()
	qs := s.quotas
	s.mu.Unlock()
	for _, q := range qs {
		if !q.external || q.q.Sel.Iface != iface || (q.q.Dir != Total && q.q.Dir != dir) {
			continue
		}
		var ev events
		q.add(now, n, &ev)
		s.emit(&ev)
	}
}

// eachKey is the flow attribute that picks a bucket of a Limit with Each.
func eachKey(e Scope, f *flow.Flow) string {
	switch e {
	case Iface:
		return f.Iface
	case App:
		return f.App()
	case Host:
		return f.Name()
	case Flow:
		return strconv.FormatUint(f.ID, 10)
	}
	return ""
}

// build resolves the buckets and quotas of flow f. It takes references on
// the buckets; release gives them back.
func (s *Shaper) build(f *flow.Flow, now time.Time, ev *events) *pathCfg {
	c := &pathCfg{gen: s.gen.Load()}
	s.mu.Lock()
	defer s.mu.Unlock()
	type ranked struct {
		b     *bucket
		scope Scope
	}
	var dirs [2][]ranked
	ref := func(b *bucket) {
		b.refs++
		c.held = append(c.held, b)
	}
	limits, quotas := s.allLimits, s.quotas
	mayHost := s.mayHost == nil || s.mayHost(f)
	if !mayHost {
		limits, quotas = s.unhostedLimits, s.unhostedQuotas
	}
	for _, l := range limits {
		if !s.matches(l.Sel, f, mayHost) {
			continue
		}
		each := eachKey(l.Each, f)
		for _, d := range []Dir{In, Out, Total} {
			r := l.rate(d)
			if r == 0 {
				continue
			}
			k := bucketKey{owner: l.ID, dir: d, each: each}
			b := s.buckets[k]
			if b == nil {
				b = newBucket(k, r, now)
				s.buckets[k] = b
			}
			ref(b)
			rk := ranked{b, l.Scope()}
			if d == Total {
				dirs[In] = append(dirs[In], rk)
				dirs[Out] = append(dirs[Out], rk)
			} else {
				dirs[d] = append(dirs[d], rk)
			}
		}
	}
	for _, q := range quotas {
		if !s.matches(q.q.Sel, f, mayHost) {
			continue
		}
		q.mu.Lock()
		q.rollLocked(now, ev)
		exhausted := q.exhausted
		if q.cutsLocked() && c.refused == nil {
			c.refused = fmt.Errorf("%w: %w", ErrRefused, q.errExceededLocked())
		}
		q.mu.Unlock()
		for _, d := range []Dir{In, Out} {
			if q.q.Dir != Total && q.q.Dir != d {
				continue
			}
			c.dir[d].quotas = append(c.dir[d].quotas, q)
			if exhausted && q.throttle != nil {
				dirs[d] = append(dirs[d], ranked{q.throttle, q.q.Scope()})
			}
		}
		if exhausted && q.throttle != nil {
			ref(q.throttle)
		}
	}
	for d := range dirs {
		sort.SliceStable(dirs[d], func(i, j int) bool { return dirs[d][i].scope < dirs[d][j].scope })
		dc := &c.dir[d]
		dc.chunk = maxChunk
		for _, rk := range dirs[d] {
			dc.buckets = append(dc.buckets, rk.b)
			dc.chunk = min(dc.chunk, int(rk.b.chunk.Load()))
		}
		dc.free = len(dc.buckets) == 0 && len(dc.quotas) == 0
	}
	s.sweepLocked(now)
	return c
}

// release gives back the bucket references of a path configuration.
func (s *Shaper) release(c *pathCfg, now time.Time) {
	if c == nil || len(c.held) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range c.held {
		b.refs--
		if b.refs == 0 && !b.idle {
			b.idle = true
			s.idle = append(s.idle, b)
		}
	}
	s.sweepLocked(now)
}

// sweepLocked forgets unreferenced buckets once they are full again: until
// then a new flow must find the same bucket, or a stream of short flows
// would each get a fresh burst.
func (s *Shaper) sweepLocked(now time.Time) {
	kept := s.idle[:0]
	for _, b := range s.idle {
		switch {
		case b.refs > 0 || !b.idle:
			b.idle = false
		case b.full(now):
			b.idle = false
			if s.buckets[b.key] == b {
				delete(s.buckets, b.key)
			}
		default:
			kept = append(kept, b)
		}
	}
	clear(s.idle[len(kept):])
	s.idle = kept
}

// Attach returns the path of flow f for the relay. When a quota in f's scope
// is used up (and cuts rather than throttles) it returns a nil Path and an
// error wrapping both ErrRefused and ErrQuotaExceeded; the flow must not
// start. A nil Path is valid and limits nothing.
func (s *Shaper) Attach(f *flow.Flow) (*Path, error) {
	p := &Path{s: s, f: *f}
	now := s.clock.Now()
	var ev events
	c := s.build(&p.f, now, &ev)
	s.emit(&ev)
	if c.refused != nil {
		s.release(c, now)
		return nil, c.refused
	}
	p.cfg.Store(c)
	return p, nil
}
