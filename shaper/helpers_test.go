package shaper

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

// fakeClock is a manual clock. In auto mode After advances the clock by d
// and fires at once, so a single goroutine can simulate seconds of traffic
// exactly; waits are recorded.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	auto   bool
	waits  []time.Duration
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t0 time.Time, auto bool) *fakeClock { return &fakeClock{now: t0, auto: auto} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waits = append(c.waits, d)
	if c.auto {
		c.now = c.now.Add(d)
		ch <- c.now
		return ch, func() {}
	}
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	return ch, func() {}
}

// Advance moves the clock (backwards too) and fires due timers.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

func (c *fakeClock) Set(t time.Time) { c.Advance(t.Sub(c.Now())) }

func (c *fakeClock) takeWaits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.waits
	c.waits = nil
	return w
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// eventLog collects events.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) kinds() []EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var k []EventKind
	for _, e := range l.evs {
		k = append(k, e.Kind)
	}
	return k
}

func (l *eventLog) reset() {
	l.mu.Lock()
	l.evs = nil
	l.mu.Unlock()
}

var t0 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

func testFlow(id uint64, exe, host, iface string) *flow.Flow {
	return &flow.Flow{ID: id, Exe: exe, Host: host, Iface: iface}
}

// pump runs Grant/Done on p in direction d until the fake clock reaches end
// and returns the bytes passed. read(n) says how many of n bytes were copied.
func pump(t testing.TB, c *fakeClock, p *Path, d Dir, end time.Time, max int) int64 {
	t.Helper()
	var total int64
	for c.Now().Before(end) {
		n, err := p.Grant(context.Background(), d, max)
		if err != nil {
			t.Fatalf("Grant: %v", err)
		}
		if err := p.Done(d, n); err != nil {
			t.Fatalf("Done: %v", err)
		}
		total += int64(n)
	}
	return total
}

func mustAttach(t testing.TB, s *Shaper, f *flow.Flow) *Path {
	t.Helper()
	p, err := s.Attach(f)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}

func mustAddrPort(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
