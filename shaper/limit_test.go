package shaper

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

func TestChunkFor(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want int
	}{
		{1, minChunk},
		{32e3, 640},
		{1e6, 20000},
		{1e9, maxChunk},
		{1e15, maxChunk},
	} {
		if got := chunkFor(tc.rate); got != tc.want {
			t.Errorf("chunkFor(%v) = %d, want %d", tc.rate, got, tc.want)
		}
	}
}

func TestLimitValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Limit
		ok   bool
	}{
		{"zero is no limit", Limit{ID: 1}, true},
		{"normal", Limit{ID: 1, In: 32e3, Out: 1e9, Total: 5e6}, true},
		{"negative", Limit{ID: 1, In: -5}, false},
		{"below one byte", Limit{ID: 1, Out: 0.5}, false},
		{"NaN", Limit{ID: 1, Total: math.NaN()}, false},
		{"Inf", Limit{ID: 1, In: math.Inf(1)}, false},
		{"absurd", Limit{ID: 1, In: 2e15}, false},
		{"bad each", Limit{ID: 1, In: 1e3, Each: Flow + 1}, false},
		{"wildcard host", Limit{ID: 1, In: 1e3, Sel: Selector{Host: "*.example.com"}}, true},
		{"bare star", Limit{ID: 1, In: 1e3, Sel: Selector{Host: "*"}}, false},
		{"inner star", Limit{ID: 1, In: 1e3, Sel: Selector{Host: "a.*.com"}}, false},
		{"double star", Limit{ID: 1, In: 1e3, Sel: Selector{Host: "*.*.com"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
	s := New(Options{})
	if err := s.SetLimits([]Limit{{ID: 1, In: 1e3}, {ID: 1, Out: 1e3}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate IDs: %v, want ErrInvalid", err)
	}
	if err := s.SetLimits([]Limit{{ID: 1, In: 1e3}, {ID: 2, Out: -1}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("one bad limit: %v, want ErrInvalid", err)
	}
	if len(s.limits) != 0 {
		t.Errorf("a rejected SetLimits changed the limits: %v", s.limits)
	}
}

func TestMatch(t *testing.T) {
	f := &flow.Flow{Exe: "/usr/bin/curl", Host: "Dl.Example.com.", Iface: "eth0"}
	ipf := &flow.Flow{Exe: "/usr/bin/curl", Iface: "wlan0"}
	ipf.Dst = mustAddrPort(t, "198.18.0.7:443")
	s := New(Options{})
	for _, tc := range []struct {
		sel  Selector
		f    *flow.Flow
		want bool
	}{
		{Selector{}, f, true},
		{Selector{App: "curl"}, f, true},
		{Selector{App: "/usr/bin/curl"}, f, true},
		{Selector{App: "wget"}, f, false},
		{Selector{Host: "dl.example.com"}, f, true},
		{Selector{Host: "*.example.com"}, f, true},
		{Selector{Host: "*.example.com"}, &flow.Flow{Host: "example.com"}, true},
		{Selector{Host: "*.example.com"}, &flow.Flow{Host: "badexample.com"}, false},
		{Selector{Host: "*.dl.example.com"}, f, true},
		{Selector{Host: "example.com"}, f, false},
		{Selector{Host: "198.18.0.7"}, ipf, true},
		{Selector{Host: "*.example.com"}, ipf, false},
		{Selector{Iface: "eth0"}, f, true},
		{Selector{Iface: "eth0"}, ipf, false},
		{Selector{Iface: "eth0", App: "curl", Host: "*.example.com"}, f, true},
		{Selector{Iface: "eth0", App: "wget", Host: "*.example.com"}, f, false},
	} {
		if got := s.matches(tc.sel, tc.f, true); got != tc.want {
			t.Errorf("matches(%v, exe=%q host=%q) = %v, want %v", tc.sel, tc.f.Exe, tc.f.Host, got, tc.want)
		}
		// When MayMatchHost said no, host selectors fail and the rest do not change.
		if got, want := s.matches(tc.sel, tc.f, false), tc.want && tc.sel.Host == ""; got != want {
			t.Errorf("matches(%v, exe=%q host=%q) without host matches = %v, want %v", tc.sel, tc.f.Exe, tc.f.Host, got, want)
		}
	}
}

// MayMatchHost is asked once per flow resolved: when it says no, no host
// selector applies and MatchHost is not asked; when it says yes, they are.
func TestMayMatchHost(t *testing.T) {
	var asked int
	s := New(Options{
		MatchHost:    func(pattern string, f *flow.Flow) bool { asked++; return true },
		MayMatchHost: func(f *flow.Flow) bool { return f.ID == 2 },
	})
	if err := s.SetLimits([]Limit{
		{ID: 1, Sel: Selector{Host: "rule:1"}, In: 1000},
		{ID: 2, Sel: Selector{Host: "rule:2"}, Out: 1000},
		{ID: 3, Sel: Selector{Iface: "eth0"}, Out: 5000},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuotas([]Quota{
		{ID: 10, Sel: Selector{Iface: "eth0"}, Limit: 1e9},
		{ID: 11, Sel: Selector{Host: "rule:11"}, Limit: 1e9},
	}); err != nil {
		t.Fatal(err)
	}
	quotas := func(p *Path) int { return len(p.cfg.Load().dir[In].quotas) } // Dir In, the zero value
	no, err := s.Attach(&flow.Flow{ID: 1, Iface: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	defer no.Close()
	if asked != 0 || no.Waits(In) || !no.Waits(Out) || quotas(no) != 1 {
		t.Errorf("flow MayMatchHost refused: MatchHost asked %d times, waits in %v (want false), out %v (want true: the interface's limit), %d quotas (want the interface's)",
			asked, no.Waits(In), no.Waits(Out), quotas(no))
	}
	yes, err := s.Attach(&flow.Flow{ID: 2, Iface: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	defer yes.Close()
	if asked != 3 || !yes.Waits(In) || !yes.Waits(Out) || quotas(yes) != 2 {
		t.Errorf("flow MayMatchHost allowed: MatchHost asked %d times (want 3), waits in %v, out %v (want both), %d quotas (want 2)",
			asked, yes.Waits(In), yes.Waits(Out), quotas(yes))
	}
}

// TestTokenArithmetic pins exact grants and waits with a fake clock.
func TestTokenArithmetic(t *testing.T) {
	c := newFakeClock(t0, true)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, In: 10000}}); err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "/bin/a", "", ""))
	ctx := context.Background()
	// chunk = 10000 B/s * 20 ms = 200 B; a new bucket holds one chunk, then
	// one chunk every 20 ms.
	var got []int
	for range 5 {
		n, err := p.Grant(ctx, In, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		p.Done(In, n)
	}
	for i, n := range got {
		if n != 200 {
			t.Errorf("grant %d = %d bytes, want 200", i, n)
		}
	}
	waits := c.takeWaits()
	want := []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}
	if len(waits) != len(want) {
		t.Fatalf("waits = %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("wait %d = %v, want %v", i, waits[i], want[i])
		}
	}
	// A flow that wakes late keeps the tokens that accrued meanwhile, up to
	// a burst of 100 ms (1000 B): 60 ms late gives three chunks at once.
	c.Advance(60 * time.Millisecond)
	for i := range 3 {
		n, _ := p.Grant(ctx, In, 1<<20)
		p.Done(In, n)
		if w := c.takeWaits(); n != 200 || len(w) != 0 {
			t.Errorf("late grant %d: %d B after waiting %v; want 200 B at once", i, n, w)
		}
	}
	// Hours late, at most the burst.
	c.Advance(3 * time.Hour)
	var free int
	for len(c.takeWaits()) == 0 {
		n, _ := p.Grant(ctx, In, 1<<20)
		p.Done(In, n)
		free += n
	}
	if free != 1000+200 { // the burst, then one chunk that had to wait
		t.Errorf("after hours idle %d B, want the 1000 B burst and one chunk", free)
	}
	// Out is not limited: the full max at once.
	if n, _ := p.Grant(ctx, Out, 1<<20); n != 1<<20 {
		t.Errorf("Out grant = %d, want %d", n, 1<<20)
	}
	p.Done(Out, 1<<20)
	// A short read gives the rest back: the next grant is the unused part, at once.
	n, _ := p.Grant(ctx, In, 1<<20)
	p.Done(In, n/4)
	n2, _ := p.Grant(ctx, In, 1<<20)
	if n2 != n-n/4 {
		t.Errorf("grant after short read = %d, want the unused %d", n2, n-n/4)
	}
	if w := c.takeWaits(); len(w) != 1 { // only the first of the two waited
		t.Errorf("waits = %v, want one", w)
	}
	p.Done(In, n2)
	// A smaller max is honoured.
	if n, _ := p.Grant(ctx, In, 10); n != 10 {
		t.Errorf("grant with max 10 = %d", n)
	}
	p.Done(In, 10)
}

// TestAccuracyFakeClock simulates 10 s of a busy flow per rate.
func TestAccuracyFakeClock(t *testing.T) {
	for _, rate := range []float64{32e3, 100e3, 1e6, 10e6, 100e6, 1e9} {
		for _, d := range []Dir{In, Out} {
			c := newFakeClock(t0, true)
			s := New(Options{Clock: c})
			l := Limit{ID: 1}
			if d == In {
				l.In = rate
			} else {
				l.Total = rate
			}
			if err := s.SetLimits([]Limit{l}); err != nil {
				t.Fatal(err)
			}
			p := mustAttach(t, s, testFlow(1, "/bin/a", "", ""))
			got := float64(pump(t, c, p, d, t0.Add(10*time.Second), 1<<20))
			elapsed := c.Now().Sub(t0).Seconds()
			ratio := got / elapsed / rate
			if math.Abs(ratio-1) > 0.02 {
				t.Errorf("rate %v %s: achieved %.0f B/s over %.2fs, ratio %.4f", rate, d, got/elapsed, elapsed, ratio)
			}
		}
	}
}

// TestHierarchy checks that the slowest bucket on the path rules and that
// flows of other apps only share the global bucket.
func TestHierarchy(t *testing.T) {
	c := newFakeClock(t0, true)
	s := New(Options{Clock: c})
	err := s.SetLimits([]Limit{
		{ID: 1, In: 1e6}, // global
		{ID: 2, Sel: Selector{Iface: "eth0"}, In: 500e3},       // iface
		{ID: 3, Sel: Selector{App: "curl"}, In: 100e3},         // app
		{ID: 4, Sel: Selector{Host: "*.example.com"}, In: 1e9}, // host
	})
	if err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "/usr/bin/curl", "a.example.com", "eth0"))
	cfg := p.cfg.Load()
	if n := len(cfg.dir[In].buckets); n != 4 {
		t.Fatalf("path has %d buckets, want 4", n)
	}
	var owners []int64
	for _, b := range cfg.dir[In].buckets {
		owners = append(owners, b.key.owner)
	}
	if owners[0] != 1 || owners[1] != 2 || owners[2] != 3 || owners[3] != 4 {
		t.Errorf("bucket order %v, want global, iface, app, host", owners)
	}
	got := float64(pump(t, c, p, In, t0.Add(10*time.Second), 1<<20)) / c.Now().Sub(t0).Seconds()
	if math.Abs(got/100e3-1) > 0.02 {
		t.Errorf("curl got %.0f B/s, want 100e3 (its app limit)", got)
	}
	// Another app on wlan0 only meets the global bucket.
	q := mustAttach(t, s, testFlow(2, "/usr/bin/wget", "b.example.org", "wlan0"))
	if n := len(q.cfg.Load().dir[In].buckets); n != 1 {
		t.Errorf("wget path has %d buckets, want 1", n)
	}
}

// TestFairnessFakeClock: flows sharing one bucket that each ask in turn
// get equal shares.
func TestFairnessFakeClock(t *testing.T) {
	c := newFakeClock(t0, true)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, Sel: Selector{App: "x"}, In: 1e6}}); err != nil {
		t.Fatal(err)
	}
	var ps []*Path
	for i := range 8 {
		ps = append(ps, mustAttach(t, s, testFlow(uint64(i), "x", "", "")))
	}
	got := make([]float64, len(ps))
	ctx := context.Background()
	for c.Now().Before(t0.Add(10 * time.Second)) {
		for i, p := range ps {
			n, err := p.Grant(ctx, In, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			p.Done(In, n)
			got[i] += float64(n)
		}
	}
	if j := jain(got); j < 0.98 {
		t.Errorf("Jain index %.4f < 0.98: %v", j, got)
	}
	var sum float64
	for _, g := range got {
		sum += g
	}
	if r := sum / c.Now().Sub(t0).Seconds() / 1e6; math.Abs(r-1) > 0.02 {
		t.Errorf("shared rate ratio %.4f", r)
	}
}

// TestIdleNoHoard: a flow idle for a long time gets at most one burst before
// it is paced again.
func TestIdleNoHoard(t *testing.T) {
	c := newFakeClock(t0, false)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, Each: Flow, In: 1e6}}); err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "x", "", ""))
	c.Advance(time.Minute)
	var free int
	for {
		// Manual clock: a grant that has to wait leaves a timer pending.
		done := make(chan int)
		go func() {
			n, _ := p.Grant(context.Background(), In, 1<<20)
			done <- n
		}()
		select {
		case n := <-done:
			p.Done(In, n)
			free += n
			continue
		case <-time.After(50 * time.Millisecond):
		}
		if c.pending() == 0 {
			t.Fatal("grant neither returned nor waits on the clock")
		}
		c.Advance(time.Second)
		p.Done(In, <-done)
		break
	}
	if burst := burstFor(1e6, chunkFor(1e6)); free > burst {
		t.Errorf("after a minute idle the flow got %d bytes at once, more than a burst of %d", free, burst)
	}
}

// TestEachSplitsBuckets: Each gives every app its own bucket; sequential
// short flows of one app reuse the bucket rather than each getting a burst.
func TestEachSplitsBuckets(t *testing.T) {
	c := newFakeClock(t0, true)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, Each: App, In: 10e3}}); err != nil {
		t.Fatal(err)
	}
	a := mustAttach(t, s, testFlow(1, "/bin/a", "", ""))
	b := mustAttach(t, s, testFlow(2, "/bin/b", "", ""))
	a2 := mustAttach(t, s, testFlow(3, "/bin/a", "", ""))
	ba, bb, ba2 := a.cfg.Load().dir[In].buckets[0], b.cfg.Load().dir[In].buckets[0], a2.cfg.Load().dir[In].buckets[0]
	if ba == bb || ba != ba2 {
		t.Errorf("buckets: a=%p b=%p a2=%p; want a==a2!=b", ba, bb, ba2)
	}
	a.Close()
	a2.Close()
	// Many short flows of app a, one chunk each: paced, not a burst each.
	var got int64
	for i := range 100 {
		p := mustAttach(t, s, testFlow(uint64(10+i), "/bin/a", "", ""))
		n, _ := p.Grant(context.Background(), In, 1<<20)
		p.Done(In, n)
		got += int64(n)
		p.Close()
	}
	if rate := float64(got) / c.Now().Sub(t0).Seconds(); rate > 10e3*1.1 {
		t.Errorf("100 short flows reached %.0f B/s; the app limit is 10e3", rate)
	}
	// Once the bucket refilled and nobody holds it, it is forgotten.
	b.Close()
	c.Advance(time.Minute)
	s.mu.Lock()
	s.sweepLocked(c.Now()) // what the next Attach or Close does
	n := len(s.buckets)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d buckets left after every flow closed", n)
	}
}

// TestLiveChange: a flow waiting for tokens follows a rule change at once.
func TestLiveChange(t *testing.T) {
	c := newFakeClock(t0, false)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, In: 1000}}); err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "x", "", ""))
	ctx := context.Background()
	for range 1 { // the first chunk
		n, _ := p.Grant(ctx, In, 1<<20)
		p.Done(In, n)
	}
	done := make(chan int)
	go func() {
		n, err := p.Grant(ctx, In, 1<<20)
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	waitFor(t, func() bool { return c.pending() > 0 })
	// Raise the rate a lot: the waiter is woken and takes the new chunk size.
	if err := s.SetLimits([]Limit{{ID: 1, In: 1e6}}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-done:
		if n != chunkFor(1e6) {
			t.Errorf("grant after raising the rate = %d, want a chunk of %d", n, chunkFor(1e6))
		}
		p.Done(In, n)
	case <-time.After(5 * time.Second):
		t.Fatal("waiting flow did not follow the rule change")
	}
	// Remove the limit: fast path.
	if err := s.SetLimits(nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.Grant(ctx, In, 1<<20); n != 1<<20 {
		t.Errorf("grant without limits = %d", n)
	}
	p.Done(In, 1<<20)
	if !p.cfg.Load().dir[In].free {
		t.Error("path not on the fast path after the limits were removed")
	}
}

func TestGrantContextCancel(t *testing.T) {
	c := newFakeClock(t0, false)
	s := New(Options{Clock: c})
	if err := s.SetLimits([]Limit{{ID: 1, Out: 1000}}); err != nil {
		t.Fatal(err)
	}
	p := mustAttach(t, s, testFlow(1, "x", "", ""))
	ctx, cancel := context.WithCancel(context.Background())
	for range 1 { // the first chunk
		n, _ := p.Grant(ctx, Out, 1<<20)
		p.Done(Out, n)
	}
	errc := make(chan error)
	go func() {
		_, err := p.Grant(ctx, Out, 1<<20)
		errc <- err
	}()
	waitFor(t, func() bool { return c.pending() > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Grant after cancel = %v, want context.Canceled", err)
	}
}

func TestUnlimitedFastPath(t *testing.T) {
	s := New(Options{})
	p := mustAttach(t, s, testFlow(1, "x", "", ""))
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		n, _ := p.Grant(ctx, In, 1<<20)
		p.Done(In, n)
	})
	if allocs != 0 {
		t.Errorf("unlimited Grant+Done allocates %v times", allocs)
	}
	if got := p.Meter(In).Total(); got < 100<<20 {
		t.Errorf("meter counted %d bytes", got)
	}
	var nilPath *Path
	if n, err := nilPath.Grant(ctx, Out, 5); n != 5 || err != nil {
		t.Errorf("nil path Grant = %d, %v", n, err)
	}
	if err := nilPath.Done(Out, 5); err != nil {
		t.Error(err)
	}
	if err := nilPath.Close(); err != nil {
		t.Error(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
