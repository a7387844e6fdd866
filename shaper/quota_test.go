package shaper

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func TestQuotaValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		q    Quota
		ok   bool
	}{
		{"month", Quota{ID: 1, Limit: 1e9, Dir: Total, Period: Month, ResetDay: 31}, true},
		{"week sunday", Quota{ID: 1, Limit: 1, Dir: In, Period: Week, ResetDay: 0}, true},
		{"zero limit", Quota{ID: 1, Limit: 0}, false},
		{"negative limit", Quota{ID: 1, Limit: -1}, false},
		{"absurd limit", Quota{ID: 1, Limit: 2e15}, false},
		{"bad dir", Quota{ID: 1, Limit: 1, Dir: 7}, false},
		{"bad period", Quota{ID: 1, Limit: 1, Period: 9}, false},
		{"day with reset day", Quota{ID: 1, Limit: 1, Period: Day, ResetDay: 3}, false},
		{"week day 7", Quota{ID: 1, Limit: 1, Period: Week, ResetDay: 7}, false},
		{"month day 32", Quota{ID: 1, Limit: 1, Period: Month, ResetDay: 32}, false},
		{"negative throttle", Quota{ID: 1, Limit: 1, ThrottleRate: -3}, false},
		{"NaN throttle", Quota{ID: 1, Limit: 1, ThrottleRate: math.NaN()}, false},
		{"bad host", Quota{ID: 1, Limit: 1, Sel: Selector{Host: "x*"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.q.Validate()
			if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	s := New(Options{})
	if err := s.SetQuotas([]Quota{{ID: 1, Limit: 5}, {ID: 1, Limit: 6}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate IDs: %v", err)
	}
	if err := s.Grant(9, 100); !errors.Is(err, ErrUnknownQuota) {
		t.Errorf("Grant unknown: %v", err)
	}
	if err := s.SetQuotas([]Quota{{ID: 1, Limit: 5}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Grant(1, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Grant 0: %v", err)
	}
}

// newQuotaShaper returns a shaper on a manual fake clock with one quota.
func newQuotaShaper(t *testing.T, q Quota, o Options) (*Shaper, *fakeClock, *eventLog) {
	t.Helper()
	c := newFakeClock(t0, false)
	log := &eventLog{}
	o.Clock, o.OnEvent = c, log.add
	if o.Loc == nil {
		o.Loc = time.UTC
	}
	s := New(o)
	if err := s.SetQuotas([]Quota{q}); err != nil {
		t.Fatal(err)
	}
	return s, c, log
}

func TestQuotaCut(t *testing.T) {
	s, _, log := newQuotaShaper(t, Quota{ID: 7, Sel: Selector{App: "curl"}, Limit: 10000, Dir: In, Period: Day}, Options{})
	ctx := context.Background()
	p := mustAttach(t, s, testFlow(1, "/usr/bin/curl", "", ""))
	other := mustAttach(t, s, testFlow(2, "/usr/bin/wget", "", ""))

	// Out is not counted by an In quota.
	if n, _ := p.Grant(ctx, Out, 1<<20); n != 1<<20 {
		t.Errorf("Out grant = %d", n)
	}
	p.Done(Out, 1<<20)

	// 7000 then 1000: the 80% warning comes once, at 8000.
	for _, n := range []int{7000, 1000} {
		g, err := p.Grant(ctx, In, n)
		if err != nil || g != n {
			t.Fatalf("Grant(%d) = %d, %v", n, g, err)
		}
		if err := p.Done(In, g); err != nil {
			t.Fatalf("Done: %v", err)
		}
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaWarning}) {
		t.Errorf("events %v, want one warning", k)
	}
	// Asking for more than is left gets only what is left: no overshoot.
	g, err := p.Grant(ctx, In, 1<<20)
	if err != nil || g != 2000 {
		t.Fatalf("Grant = %d, %v; want the 2000 left", g, err)
	}
	if err := p.Done(In, g); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Done at the limit = %v, want ErrQuotaExceeded", err)
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaWarning, QuotaExhausted}) {
		t.Errorf("events %v", k)
	}
	if _, err := p.Grant(ctx, In, 100); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("Grant after exhaustion = %v", err)
	}
	// New flows in scope are refused, others are not.
	if _, err := s.Attach(testFlow(3, "curl", "", "")); !errors.Is(err, ErrRefused) || !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("Attach in scope = %v, want ErrRefused and ErrQuotaExceeded", err)
	}
	if n, err := other.Grant(ctx, In, 100); err != nil || n != 100 {
		t.Errorf("other app: %d, %v", n, err)
	}
	other.Done(In, 100)

	st := s.Quotas()[0]
	if st.Used != 10000 || !st.Exhausted || st.Throttled || st.Scope != App {
		t.Errorf("status %+v", st)
	}

	// Granting more lets flows pass again.
	log.reset()
	if err := s.Grant(7, 5000); err != nil {
		t.Fatal(err)
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaRestored}) {
		t.Errorf("events after Grant %v", k)
	}
	if _, err := s.Attach(testFlow(4, "curl", "", "")); err != nil {
		t.Errorf("Attach after Grant: %v", err)
	}
	if g, err := p.Grant(ctx, In, 1<<20); err != nil || g != 5000 {
		t.Errorf("Grant after Grant = %d, %v", g, err)
	}
	p.Done(In, 0)
}

// TestQuotaConcurrentNoEarlyCut: two flows whose grants together exceed what
// is left are clamped so neither is cut before the quota is really used.
func TestQuotaConcurrentGrants(t *testing.T) {
	s, _, _ := newQuotaShaper(t, Quota{ID: 1, Limit: 1000, Dir: Total}, Options{})
	ctx := context.Background()
	a := mustAttach(t, s, testFlow(1, "a", "", ""))
	b := mustAttach(t, s, testFlow(2, "b", "", ""))
	na, _ := a.Grant(ctx, In, 600)
	nb, err := b.Grant(ctx, Out, 600)
	if na != 600 || nb != 400 || err != nil {
		t.Fatalf("grants %d and %d (%v), want 600 and 400", na, nb, err)
	}
	// a copies only 100: the rest of its grant is free again.
	if err := a.Done(In, 100); err != nil {
		t.Fatal(err)
	}
	if err := b.Done(Out, 400); err != nil {
		t.Fatal(err)
	}
	n, err := a.Grant(ctx, In, 1000)
	if n != 500 || err != nil {
		t.Fatalf("Grant = %d, %v; want the 500 left", n, err)
	}
	if err := a.Done(In, 500); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("Done = %v", err)
	}
	if got := s.Quotas()[0].Used; got != 1000 {
		t.Errorf("used %d, want exactly 1000", got)
	}
}

func TestQuotaThrottle(t *testing.T) {
	s, c, log := newQuotaShaper(t, Quota{ID: 2, Limit: 1000, Dir: Total, ThrottleRate: 1000}, Options{})
	ctx := context.Background()
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(ctx, Out, 1<<20)
	if err := p.Done(Out, n); err != nil {
		t.Fatalf("Done in throttle mode: %v", err)
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaWarning, QuotaExhausted}) || !log.evs[1].Throttled {
		t.Errorf("events %v", log.evs)
	}
	if _, err := s.Attach(testFlow(2, "a", "", "")); err != nil {
		t.Errorf("Attach in throttle mode: %v", err)
	}
	// Now paced at 1000 B/s, both directions through one bucket.
	c.auto = true
	c.takeWaits()
	for _, d := range []Dir{In, Out} {
		n, err := p.Grant(ctx, d, 1<<20)
		if err != nil || n != chunkFor(1000) {
			t.Errorf("%s: grant %d, %v; want a %d chunk", d, n, err, chunkFor(1000))
		}
		p.Done(d, n)
	}
	if w := c.takeWaits(); len(w) != 1 || w[0] != 128*time.Millisecond {
		t.Errorf("waits %v, want one of 128ms (the second direction's chunk)", w)
	}
	start := c.Now()
	got := pump(t, c, p, In, start.Add(10*time.Second), 1<<20)
	if r := float64(got) / c.Now().Sub(start).Seconds(); math.Abs(r/1000-1) > 0.05 {
		t.Errorf("throttled rate %.0f B/s, want 1000", r)
	}
	if st := s.Quotas()[0]; !st.Throttled || st.Used < 1000+got {
		t.Errorf("status %+v", st)
	}
}

func TestQuotaPeriodRollover(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	c := newFakeClock(time.Date(2025, 2, 27, 12, 0, 0, 0, ny), false)
	log := &eventLog{}
	s := New(Options{Clock: c, OnEvent: log.add})
	if err := s.SetQuotas([]Quota{{ID: 3, Limit: 100, Dir: In, Period: Month, ResetDay: 31, Loc: ny}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(ctx, In, 1000)
	if err := p.Done(In, n); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Done = %v", err)
	}
	log.reset()
	// The clock jumps back a month: still exhausted, not refilled.
	c.Set(time.Date(2025, 1, 20, 12, 0, 0, 0, ny))
	if _, err := p.Grant(ctx, In, 10); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("after a clock jump back: %v, want still exceeded", err)
	}
	if st := s.QuotaStates()[0]; st.Used != 100 {
		t.Errorf("state after jump back %+v", st)
	}
	// Reset day 31 in February is the 28th, at midnight New York time.
	c.Set(time.Date(2025, 2, 27, 23, 59, 59, 0, ny))
	if _, err := p.Grant(ctx, In, 10); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("one second before the reset: %v", err)
	}
	c.Set(time.Date(2025, 2, 28, 0, 0, 0, 0, ny))
	states := s.QuotaStates() // the daemon's periodic save starts the period
	if len(states) != 1 || states[0].Used != 0 || !states[0].PeriodStart.Equal(time.Date(2025, 2, 28, 0, 0, 0, 0, ny)) {
		t.Errorf("state after the reset %+v", states)
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaReset}) {
		t.Errorf("events %v, want a reset", k)
	}
	if n, err := p.Grant(ctx, In, 10); err != nil || n != 10 {
		t.Errorf("Grant in the new period = %d, %v", n, err)
	}
	p.Done(In, 10)
	if end := s.Quotas()[0].PeriodEnd; !end.Equal(time.Date(2025, 3, 31, 0, 0, 0, 0, ny)) {
		t.Errorf("period end %v", end)
	}
}

func TestQuotaSnapshotRestore(t *testing.T) {
	q := Quota{ID: 4, Limit: 1000, Dir: Out, Period: Day}
	s, c, _ := newQuotaShaper(t, q, Options{})
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(context.Background(), Out, 300)
	p.Done(Out, n)
	s.Grant(4, 50)
	saved := s.QuotaStates()
	want := QuotaState{ID: 4, PeriodStart: time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), Used: 300, Granted: 50}
	if len(saved) != 1 || saved[0] != want {
		t.Fatalf("states %+v, want %+v", saved, want)
	}
	for _, tc := range []struct {
		name     string
		now      time.Time
		state    QuotaState
		wantUsed int64
	}{
		{"same day", t0.Add(time.Hour), want, 300},
		{"next day: a new period", t0.Add(24 * time.Hour), want, 0},
		{"clock went back before the saved period", t0.Add(-48 * time.Hour), want, 300},
		{"unknown quota", t0, QuotaState{ID: 99, Used: 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s2, c2, log := newQuotaShaper(t, q, Options{})
			c2.Set(tc.now)
			s2.Restore([]QuotaState{tc.state})
			if got := s2.QuotaStates()[0].Used; got != tc.wantUsed {
				t.Errorf("used %d, want %d", got, tc.wantUsed)
			}
			_ = log
		})
	}
	// Restoring an exhausted state refuses flows and raises the event the
	// daemon needs to block again after a restart.
	s3, _, log := newQuotaShaper(t, q, Options{})
	s3.Restore([]QuotaState{{ID: 4, PeriodStart: want.PeriodStart, Used: 1000}})
	if _, err := s3.Attach(testFlow(1, "a", "", "")); !errors.Is(err, ErrRefused) {
		t.Errorf("Attach after restoring an exhausted quota: %v", err)
	}
	if k := log.kinds(); !slices.Contains(k, QuotaExhausted) {
		t.Errorf("events %v", k)
	}
	_ = c
}

func TestQuotaSetQuotasKeepsCounters(t *testing.T) {
	s, _, log := newQuotaShaper(t, Quota{ID: 5, Limit: 1000, Dir: In}, Options{})
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(context.Background(), In, 1000)
	p.Done(In, n)
	if !s.Quotas()[0].Exhausted {
		t.Fatal("not exhausted")
	}
	log.reset()
	if err := s.SetQuotas([]Quota{{ID: 5, Limit: 2000, Dir: In}}); err != nil {
		t.Fatal(err)
	}
	st := s.Quotas()[0]
	if st.Used != 1000 || st.Exhausted {
		t.Errorf("after raising the limit: %+v", st)
	}
	if k := log.kinds(); !slices.Equal(k, []EventKind{QuotaRestored}) {
		t.Errorf("events %v", k)
	}
	if n, err := p.Grant(context.Background(), In, 5000); err != nil || n != 1000 {
		t.Errorf("Grant = %d, %v", n, err)
	}
}

func TestQuotaForecast(t *testing.T) {
	s, c, _ := newQuotaShaper(t, Quota{ID: 6, Limit: 1e12, Dir: In, Period: Day}, Options{})
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	s.Quotas() // starts the rate measurement
	// 1 MB/s for 20 minutes, sampled every 10 s.
	for range 120 {
		c.Advance(10 * time.Second)
		for left := 10_000_000; left > 0; { // in grants of at most quotaChunk, as a relay copies
			n, _ := p.Grant(context.Background(), In, left)
			p.Done(In, n)
			left -= n
		}
		s.QuotaStates()
	}
	st := s.Quotas()[0]
	left := st.PeriodEnd.Sub(c.Now()).Seconds()
	want := float64(st.Used) + 1e6*left
	if math.Abs(float64(st.Forecast)/want-1) > 0.05 {
		t.Errorf("forecast %d, want about %.0f (rate %.0f)", st.Forecast, want, st.Rate)
	}
	none, _, _ := newQuotaShaper(t, Quota{ID: 6, Limit: 10, Dir: In}, Options{})
	if st := none.Quotas()[0]; st.Forecast != 0 || !st.PeriodEnd.IsZero() {
		t.Errorf("no period: %+v", st)
	}
}

func TestIfaceQuotaExternal(t *testing.T) {
	s, _, log := newQuotaShaper(t, Quota{ID: 8, Sel: Selector{Iface: "wwan0"}, Limit: 5000, Dir: Total, Period: Month, ResetDay: 1},
		Options{ExternalIfaceBytes: true})
	ctx := context.Background()
	p := mustAttach(t, s, testFlow(1, "a", "", "wwan0"))
	// Proxied bytes count chunk by chunk; the caller adds only what the
	// proxy did not relay (UDP and the like).
	n, _ := p.Grant(ctx, In, 2000)
	if n != 2000 {
		t.Fatalf("Grant = %d", n)
	}
	if err := p.Done(In, n); err != nil {
		t.Fatal(err)
	}
	if u := s.Quotas()[0].Used; u != 2000 {
		t.Errorf("proxied bytes: used %d, want 2000", u)
	}
	s.AddIfaceBytes("eth0", In, 9999) // another interface
	s.AddIfaceBytes("wwan0", Out, 1000)
	s.AddIfaceBytes("wwan0", In, 2500)
	evs := log.kinds()
	if !slices.Equal(evs, []EventKind{QuotaWarning, QuotaExhausted}) {
		t.Fatalf("events %v", evs)
	}
	if e := log.evs[1]; e.Quota.Sel.Iface != "wwan0" || e.Throttled || e.Used != 5500 {
		t.Errorf("exhausted event %+v", e)
	}
	if _, err := p.Grant(ctx, Out, 10); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("flow on the exhausted iface: %v", err)
	}
	if _, err := s.Attach(testFlow(2, "b", "", "wwan0")); !errors.Is(err, ErrRefused) {
		t.Errorf("new flow on the exhausted iface: %v", err)
	}
	if _, err := s.Attach(testFlow(3, "b", "", "eth0")); err != nil {
		t.Errorf("flow on another iface: %v", err)
	}

	// Without external counting AddIfaceBytes does nothing and the proxy counts.
	s2, _, _ := newQuotaShaper(t, Quota{ID: 8, Sel: Selector{Iface: "wwan0"}, Limit: 5000, Dir: Total}, Options{})
	s2.AddIfaceBytes("wwan0", In, 100)
	p2 := mustAttach(t, s2, testFlow(1, "a", "", "wwan0"))
	n, _ = p2.Grant(ctx, In, 40)
	p2.Done(In, n)
	if u := s2.Quotas()[0].Used; u != 40 {
		t.Errorf("used %d, want 40", u)
	}
}

func TestMeter(t *testing.T) {
	m := NewMeter(time.Second)
	now := t0
	if r := m.Rate(now); r != 0 {
		t.Errorf("first rate %v", r)
	}
	for range 100 {
		now = now.Add(100 * time.Millisecond)
		m.Add(100e3) // 1 MB/s
		m.Rate(now)
	}
	if r := m.Rate(now); math.Abs(r/1e6-1) > 0.01 {
		t.Errorf("rate %v, want 1e6", r)
	}
	if m.Total() != 100*100e3 {
		t.Errorf("total %d", m.Total())
	}
	// Idle: the rate decays.
	now = now.Add(10 * time.Second)
	if r := m.Rate(now); r > 1e3 {
		t.Errorf("rate after 10 s idle %v", r)
	}
	// A clock going back does not produce a negative or huge rate.
	m.Add(5)
	if r := m.Rate(now.Add(-time.Hour)); r < 0 || r > 1e3 {
		t.Errorf("rate after a jump back %v", r)
	}
}

// TestQuotaReplacedMidGrant: bytes of a grant made before SetQuotas and
// reported after it count towards the quota that replaced it.
func TestQuotaReplacedMidGrant(t *testing.T) {
	s, _, _ := newQuotaShaper(t, Quota{ID: 9, Limit: 1000, Dir: In}, Options{})
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(context.Background(), In, 600)
	if err := s.SetQuotas([]Quota{{ID: 9, Limit: 2000, Dir: In}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Done(In, n); err != nil {
		t.Fatal(err)
	}
	st := s.Quotas()[0]
	if st.Used != 600 || st.Limit != 2000 {
		t.Errorf("status %+v, want used 600 of 2000", st)
	}
	// The in-flight reservation was settled too: all 1400 left can be granted.
	if n, _ := p.Grant(context.Background(), In, 5000); n != 1400 {
		t.Errorf("Grant = %d, want 1400", n)
	}
}

// TestManyQuotasRollAtOnce: every quota's reset is announced, however many
// roll over in one call.
func TestManyQuotasRollAtOnce(t *testing.T) {
	c := newFakeClock(t0, false)
	log := &eventLog{}
	s := New(Options{Clock: c, OnEvent: log.add, Loc: time.UTC})
	var qs []Quota
	for i := range 5 {
		qs = append(qs, Quota{ID: int64(i), Limit: 10, Dir: In, Period: Day})
	}
	if err := s.SetQuotas(qs); err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "a", "", ""))
	n, _ := p.Grant(context.Background(), In, 10)
	if err := p.Done(In, n); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Done = %v", err)
	}
	if got := len(log.kinds()); got != 10 {
		t.Errorf("%d events, want a warning and an exhaustion for each of 5 quotas: %v", got, log.kinds())
	}
	log.reset()
	c.Advance(24 * time.Hour)
	mustAttach(t, s, testFlow(2, "a", "", ""))
	if k := log.kinds(); len(k) != 5 || slices.ContainsFunc(k, func(e EventKind) bool { return e != QuotaReset }) {
		t.Errorf("events %v, want 5 resets", k)
	}
}

// A path nothing counts gets the relay's whole request (splice moves 1 MiB at
// a time); under a quota grants stay at quotaChunk, so flows sharing the
// quota overshoot it by little; a direction the quota does not count is free.
func TestGrantSizes(t *testing.T) {
	s, _, _ := newQuotaShaper(t, Quota{ID: 1, Sel: Selector{App: "curl"}, Limit: 1 << 40, Dir: In, Period: Day}, Options{})
	ctx := context.Background()
	counted := mustAttach(t, s, testFlow(1, "/usr/bin/curl", "", ""))
	free := mustAttach(t, s, testFlow(2, "/usr/bin/wget", "", ""))
	for _, c := range []struct {
		name string
		p    *Path
		d    Dir
		want int
	}{
		{"flow outside the quota", free, In, 1 << 20},
		{"direction the quota does not count", counted, Out, 1 << 20},
		{"counted direction", counted, In, quotaChunk},
	} {
		n, err := c.p.Grant(ctx, c.d, 1<<20)
		if err != nil || n != c.want {
			t.Errorf("%s: Grant(1 MiB) = %d, %v; want %d", c.name, n, err, c.want)
		}
		if err := c.p.Done(c.d, n); err != nil {
			t.Errorf("%s: Done: %v", c.name, err)
		}
	}
	if n, _ := counted.Grant(ctx, In, 1000); n != 1000 {
		t.Errorf("a request under quotaChunk is granted whole: got %d", n)
	}
}

// Waits tells a relay that must not block (the proxy's event loops) whether
// Grant may wait: only a rate limit in that direction makes it, and a limit
// added later counts at once; quotas never do.
func TestWaits(t *testing.T) {
	s, _, _ := newQuotaShaper(t, Quota{ID: 1, Sel: Selector{App: "curl"}, Limit: 1 << 40, Dir: In, Period: Day}, Options{})
	p := mustAttach(t, s, testFlow(1, "/usr/bin/curl", "", ""))
	var nilPath *Path
	if p.Waits(In) || p.Waits(Out) || nilPath.Waits(In) {
		t.Fatal("a flow under a quota only (or no path) may wait")
	}
	if err := s.SetLimits([]Limit{{ID: 2, Sel: Selector{App: "curl"}, In: 1e6}}); err != nil {
		t.Fatal(err)
	}
	if !p.Waits(In) || p.Waits(Out) {
		t.Errorf("after a download limit for the app: Waits(In) %v, Waits(Out) %v; want true, false", p.Waits(In), p.Waits(Out))
	}
	if err := s.SetLimits(nil); err != nil {
		t.Fatal(err)
	}
	if p.Waits(In) {
		t.Error("the limit was removed, yet Waits(In)")
	}
}
