package shaper

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMeterWindow is the time constant of a Meter's smoothed rate when
// none is given.
const DefaultMeterWindow = 2 * time.Second

// Meter counts bytes and gives a smoothed rate. Add is one atomic add; the
// rate is an exponentially weighted moving average updated when Rate is read,
// so reading it about once per window is enough. The zero value is ready with
// DefaultMeterWindow.
type Meter struct {
	total atomic.Int64

	mu     sync.Mutex
	window time.Duration
	lastT  time.Time
	lastB  int64
	rate   float64
}

// NewMeter returns a meter whose rate averages over about window.
func NewMeter(window time.Duration) *Meter {
	return &Meter{window: window}
}

// Add counts n bytes.
func (m *Meter) Add(n int64) { m.total.Add(n) }

// Total is every byte counted so far.
func (m *Meter) Total() int64 { return m.total.Load() }

// Rate is the smoothed rate in bytes per second at now. The first call only
// starts the measurement and returns 0. Calls closer than 1/20 of the window
// return the last value.
func (m *Meter) Rate(now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.total.Load()
	w := m.window
	if w <= 0 {
		w = DefaultMeterWindow
	}
	if m.lastT.IsZero() {
		m.lastT, m.lastB = now, b
		return 0
	}
	dt := now.Sub(m.lastT)
	if dt < 0 { // the clock went back: restart the interval
		m.lastT, m.lastB = now, b
		return m.rate
	}
	if dt < w/20 {
		return m.rate
	}
	inst := float64(b-m.lastB) / dt.Seconds()
	alpha := 1 - math.Exp(-dt.Seconds()/w.Seconds())
	m.rate += alpha * (inst - m.rate)
	m.lastT, m.lastB = now, b
	return m.rate
}

// copyFrom takes over o's count and rate.
func (m *Meter) copyFrom(o *Meter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total.Store(o.total.Load())
	m.lastT, m.lastB, m.rate = o.lastT, o.lastB, o.rate
}
