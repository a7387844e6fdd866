package shaper

import (
	"fmt"
	"sync"
	"time"

	"github.com/netshape/netshape/units"
)

// EventKind says what happened to a quota.
type EventKind int

const (
	// QuotaWarning: 80% of the quota is used.
	QuotaWarning EventKind = iota + 1
	// QuotaExhausted: the quota is used up; flows in scope are cut and new
	// ones refused, or slowed when Throttled.
	QuotaExhausted
	// QuotaReset: a new period started; the count is back to zero.
	QuotaReset
	// QuotaRestored: a Grant lifted an exhausted quota below its limit.
	QuotaRestored
)

func (k EventKind) String() string {
	switch k {
	case QuotaWarning:
		return "warning"
	case QuotaExhausted:
		return "exhausted"
	case QuotaReset:
		return "reset"
	case QuotaRestored:
		return "restored"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change of a quota, given to Options.OnEvent.
type Event struct {
	Kind      EventKind
	Quota     Quota
	Used      int64     // bytes counted this period
	Limit     int64     // Quota.Limit plus bytes granted this period
	PeriodEnd time.Time // zero for Period None
	Throttled bool      // the quota slows its flows instead of cutting them
}

// QuotaState is what the daemon persists for a quota.
type QuotaState struct {
	ID          int64     `json:"id"`
	PeriodStart time.Time `json:"period_start"`
	Used        int64     `json:"used"`
	Granted     int64     `json:"granted"`
}

// QuotaStatus is a quota with its live counters, for display.
type QuotaStatus struct {
	Quota       Quota     `json:"quota"`
	Scope       Scope     `json:"scope"`
	Used        int64     `json:"used"`
	Granted     int64     `json:"granted"`
	Limit       int64     `json:"limit"` // Quota.Limit + Granted
	PeriodStart time.Time `json:"period_start,omitzero"`
	PeriodEnd   time.Time `json:"period_end,omitzero"`
	Rate        float64   `json:"rate"`     // recent bytes per second
	Forecast    int64     `json:"forecast"` // expected use at period end at the recent rate
	Exhausted   bool      `json:"exhausted"`
	Throttled   bool      `json:"throttled"` // exhausted and slowing rather than cutting
}

// quotaMeterWindow smooths the rate a forecast extrapolates.
const quotaMeterWindow = 5 * time.Minute

// quota is a Quota with its counters.
type quota struct {
	q        Quota
	loc      *time.Location
	external bool    // also counts bytes reported by AddIfaceBytes
	throttle *bucket // nil unless q.ThrottleRate > 0; guarded by Shaper.mu
	meter    Meter

	mu         sync.Mutex
	start, end time.Time // current period; zero for None
	used       int64
	granted    int64
	inflight   int64 // granted to paths, not yet reported by Done
	warned     bool
	exhausted  bool
	// next is the quota that replaced this one in SetQuotas (same ID). Paths
	// resolved before the change still hold this one; their calls go on to
	// next so no byte is lost.
	next *quota
}

// lockLive locks and returns the current version of the quota.
func (q *quota) lockLive() *quota {
	for {
		q.mu.Lock()
		n := q.next
		if n == nil {
			return q
		}
		q.mu.Unlock()
		q = n
	}
}

// events collects the events of one update without allocating in the common
// case (a rollover, a warning and an exhaustion fit inline).
type events struct {
	n    int
	ev   [3]Event
	more []Event
	// changed means a quota's exhausted state flipped: paths must re-resolve.
	changed bool
}

func (e *events) add(ev Event) {
	if e.n < len(e.ev) {
		e.ev[e.n] = ev
		e.n++
		return
	}
	e.more = append(e.more, ev)
}

func (q *quota) event(k EventKind) Event {
	return Event{Kind: k, Quota: q.q, Used: q.used, Limit: q.q.Limit + q.granted, PeriodEnd: q.end, Throttled: q.q.ThrottleRate > 0}
}

// rollLocked starts a new period when now has reached the end of the current
// one. A clock that went back never moves to an earlier period, so it cannot
// refill the quota.
func (q *quota) rollLocked(now time.Time, ev *events) {
	if q.q.Period == None || now.Before(q.end) {
		return
	}
	q.start, q.end = periodBounds(q.q.Period, q.q.ResetDay, q.loc, now)
	q.used, q.granted, q.warned = 0, 0, false
	if q.exhausted {
		q.exhausted = false
		ev.changed = true
	}
	ev.add(q.event(QuotaReset))
}

// checkLocked raises the 80% and 100% events once per period.
func (q *quota) checkLocked(ev *events) {
	lim := q.q.Limit + q.granted
	if !q.warned && q.used*5 >= lim*4 {
		q.warned = true
		ev.add(q.event(QuotaWarning))
	}
	if !q.exhausted && q.used >= lim {
		q.exhausted = true
		ev.changed = true
		ev.add(q.event(QuotaExhausted))
	}
}

// cuts reports whether the quota is exhausted and cuts rather than throttles.
func (q *quota) cutsLocked() bool { return q.exhausted && q.q.ThrottleRate == 0 }

// available is how much of want a path may take now: want itself unless the
// quota cuts, else at most what is left. It returns an error wrapping
// ErrQuotaExceeded when nothing is left.
func (q *quota) available(now time.Time, want int, ev *events) (int, error) {
	q = q.lockLive()
	defer q.mu.Unlock()
	q.rollLocked(now, ev)
	if q.cutsLocked() {
		return 0, q.errExceededLocked()
	}
	if q.exhausted {
		return want, nil
	}
	lim := q.q.Limit + q.granted
	left := lim - q.used - q.inflight
	if left <= 0 {
		// Other flows hold grants for the rest; allow at most what is
		// really left so none is cut early (the overshoot stays within one
		// chunk per flow).
		left = lim - q.used
	}
	return int(min(int64(want), left)), nil
}

func (q *quota) reserve(n int) {
	q = q.lockLive()
	q.inflight += int64(n)
	q.mu.Unlock()
}

// commit settles a grant of n bytes of which c were used. It returns an
// error wrapping ErrQuotaExceeded when the flow must be cut now.
func (q *quota) commit(n, c int, ev *events) error {
	q = q.lockLive()
	defer q.mu.Unlock()
	q.meter.Add(int64(c))
	q.inflight -= int64(n)
	if q.inflight < 0 {
		q.inflight = 0
	}
	q.used += int64(c)
	q.checkLocked(ev)
	if q.cutsLocked() {
		return q.errExceededLocked()
	}
	return nil
}

// add counts n bytes seen outside the proxy.
func (q *quota) add(now time.Time, n int64, ev *events) {
	q = q.lockLive()
	q.meter.Add(n)
	defer q.mu.Unlock()
	q.rollLocked(now, ev)
	q.used += n
	q.checkLocked(ev)
}

func (q *quota) errExceededLocked() error {
	return fmt.Errorf("quota %d (%s, %s %s per %s) is used up: %w",
		q.q.ID, q.q.Sel, units.FormatSize(q.q.Limit+q.granted), q.q.Dir, q.q.Period, ErrQuotaExceeded)
}

// grant adds bytes to this period's budget.
func (q *quota) grant(now time.Time, bytes int64, ev *events) {
	q = q.lockLive()
	defer q.mu.Unlock()
	q.rollLocked(now, ev)
	q.granted += bytes
	lim := q.q.Limit + q.granted
	if q.exhausted && q.used < lim {
		q.exhausted = false
		ev.changed = true
		ev.add(q.event(QuotaRestored))
	}
	if q.warned && q.used*5 < lim*4 {
		q.warned = false
	}
}

func (q *quota) state(now time.Time, ev *events) QuotaState {
	q.meter.Rate(now) // keep the forecast's rate fresh between status reads
	q = q.lockLive()
	defer q.mu.Unlock()
	q.rollLocked(now, ev)
	return QuotaState{ID: q.q.ID, PeriodStart: q.start, Used: q.used, Granted: q.granted}
}

// restore takes persisted counters if their period is still current. A
// period that began after now (the clock went back since) is kept as well.
func (q *quota) restore(now time.Time, st QuotaState, ev *events) {
	q = q.lockLive()
	defer q.mu.Unlock()
	if q.q.Period != None {
		s, e := periodBounds(q.q.Period, q.q.ResetDay, q.loc, st.PeriodStart)
		if !now.Before(e) {
			return // that period is over; the current one starts from zero
		}
		q.start, q.end = s, e
	}
	q.used, q.granted = st.Used, st.Granted
	q.warned, q.exhausted = false, false
	ev.changed = true
	q.checkLocked(ev)
}

func (q *quota) status(now time.Time, ev *events) QuotaStatus {
	r := q.meter.Rate(now)
	q = q.lockLive()
	defer q.mu.Unlock()
	q.rollLocked(now, ev)
	st := QuotaStatus{
		Quota: q.q, Scope: q.q.Scope(), Used: q.used, Granted: q.granted, Limit: q.q.Limit + q.granted,
		PeriodStart: q.start, PeriodEnd: q.end, Rate: r, Forecast: q.used,
		Exhausted: q.exhausted, Throttled: q.exhausted && q.q.ThrottleRate > 0,
	}
	if q.q.Period != None && now.Before(q.end) {
		st.Forecast += int64(r * q.end.Sub(now).Seconds())
	}
	return st
}
