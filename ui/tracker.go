package ui

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/netshape/netshape/flow"
)

// Rate is one app, host or interface: its rate over the last sample interval
// (bytes per second) and its bytes since the tracker started.
type Rate struct {
	Name     string  `json:"name"`
	In       float64 `json:"in"`  // bytes/s, server to client
	Out      float64 `json:"out"` // bytes/s, client to server
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Open     int     `json:"open"` // open flows
}

// Point is one sample of the throughput history: the total rates and the
// rate (in+out) of each of the busiest apps at that time.
type Point struct {
	Time time.Time          `json:"t"`
	In   float64            `json:"in"`
	Out  float64            `json:"out"`
	Apps map[string]float64 `json:"apps,omitempty"`
}

// Live is what a Tracker knows now.
type Live struct {
	Time     time.Time `json:"time"`
	Interval float64   `json:"interval"` // seconds the rates are measured over
	In       float64   `json:"in"`
	Out      float64   `json:"out"`
	BytesIn  int64     `json:"bytes_in"` // since the tracker started
	BytesOut int64     `json:"bytes_out"`
	Open     int       `json:"open"`
	Apps     []Rate    `json:"apps"`
	Hosts    []Rate    `json:"hosts"`
	Ifaces   []Rate    `json:"ifaces"`
	History  []Point   `json:"history,omitempty"`
}

// TrackerOptions bound what a Tracker keeps.
type TrackerOptions struct {
	// MaxApps, MaxHosts and MaxIfaces bound the names that get their own
	// cumulative counter (and metric label); later names count as "other".
	// Defaults 30, 50 and 16.
	MaxApps, MaxHosts, MaxIfaces int
	// History is how many samples of throughput history to keep (default 120).
	History int
	// HistoryApps is how many apps each history point names (default 6).
	HistoryApps int
}

// Other is the name that collects the bytes of names past a bound.
const Other = "other"

// Tracker computes rates from successive flow snapshots. Feed it with
// Sample, about once a second, with the live and recently closed flows; it
// counts each flow's bytes once, including flows that opened and closed
// between two samples. It is safe for concurrent use.
type Tracker struct {
	opt TrackerOptions

	mu       sync.Mutex
	last     map[uint64][2]int64 // flow id -> bytes already counted
	lastTime time.Time
	started  bool
	apps     counters
	hosts    counters
	ifaces   counters
	totIn    int64
	totOut   int64
	live     Live
	hist     []Point // ring
	histPos  int
}

// NewTracker returns an empty tracker.
func NewTracker(opt TrackerOptions) *Tracker {
	opt.MaxApps = cmp.Or(opt.MaxApps, 30)
	opt.MaxHosts = cmp.Or(opt.MaxHosts, 50)
	opt.MaxIfaces = cmp.Or(opt.MaxIfaces, 16)
	opt.History = cmp.Or(opt.History, 120)
	opt.HistoryApps = cmp.Or(opt.HistoryApps, 6)
	return &Tracker{
		opt:    opt,
		last:   map[uint64][2]int64{},
		apps:   newCounters(opt.MaxApps),
		hosts:  newCounters(opt.MaxHosts),
		ifaces: newCounters(opt.MaxIfaces),
	}
}

// counters are cumulative byte counts for at most max names plus Other. A
// name once admitted keeps its counter, so every counter only grows (as
// Prometheus counters must).
type counters struct {
	max int
	m   map[string][2]int64
}

func newCounters(max int) counters { return counters{max: max, m: map[string][2]int64{}} }

func (c *counters) add(name string, in, out int64) {
	if _, ok := c.m[name]; !ok && len(c.m) >= c.max {
		name = Other
	}
	v := c.m[name]
	c.m[name] = [2]int64{v[0] + in, v[1] + out}
}

// Totals returns the cumulative bytes (in, out) by name.
func (c *counters) totals() map[string][2]int64 {
	out := make(map[string][2]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Sample takes a snapshot of flows (live and recently closed, as GET
// /v1/flows?closed=1 returns them) taken at now. The first sample only sets
// the baseline: bytes from before it are not counted as a rate.
func (t *Tracker) Sample(now time.Time, flows []flow.Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := !t.started
	dt := now.Sub(t.lastTime).Seconds()
	if first || dt <= 0 {
		dt = 0
	}
	type acc struct {
		in, out int64
		open    int
	}
	apps, hosts, ifaces := map[string]*acc{}, map[string]*acc{}, map[string]*acc{}
	bump := func(m map[string]*acc, k string, in, out int64, open bool) {
		a := m[k]
		if a == nil {
			a = &acc{}
			m[k] = a
		}
		a.in += in
		a.out += out
		if open {
			a.open++
		}
	}
	seen := make(map[uint64][2]int64, len(flows))
	var sumIn, sumOut int64
	openFlows := 0
	for i := range flows {
		f := &flows[i]
		prev, known := t.last[f.ID]
		seen[f.ID] = [2]int64{f.BytesIn, f.BytesOut}
		din, dout := f.BytesIn-prev[0], f.BytesOut-prev[1]
		if first || (!known && f.State == flow.StateClosed && !f.End.IsZero() && !f.End.After(t.lastTime)) {
			// Baseline, or a closed flow that ended before the last sample
			// and was never seen (it was counted elsewhere or before us).
			din, dout = 0, 0
		}
		if din < 0 || dout < 0 {
			din, dout = 0, 0
		}
		open := f.State != flow.StateClosed
		if open {
			openFlows++
		}
		if din == 0 && dout == 0 && !open {
			continue
		}
		sumIn += din
		sumOut += dout
		bump(apps, f.App(), din, dout, open)
		bump(hosts, f.Name(), din, dout, open)
		iface := f.Iface
		if iface == "" {
			iface = "unknown"
		}
		bump(ifaces, iface, din, dout, open)
		if din != 0 || dout != 0 {
			t.apps.add(f.App(), din, dout)
			t.hosts.add(f.Name(), din, dout)
			t.ifaces.add(iface, din, dout)
		}
	}
	t.last = seen
	t.lastTime = now
	t.started = true
	t.totIn += sumIn
	t.totOut += sumOut

	rate := func(n int64) float64 {
		if dt == 0 {
			return 0
		}
		return float64(n) / dt
	}
	list := func(m map[string]*acc, c *counters) []Rate {
		tot := c.totals()
		out := make([]Rate, 0, len(m))
		for k, a := range m {
			r := Rate{Name: k, In: rate(a.in), Out: rate(a.out), Open: a.open}
			ck := k
			if _, ok := tot[k]; !ok {
				ck = Other
			}
			r.BytesIn, r.BytesOut = tot[ck][0], tot[ck][1]
			out = append(out, r)
		}
		SortRates(out, SortRate)
		return out
	}
	l := Live{Time: now, Interval: dt, In: rate(sumIn), Out: rate(sumOut), BytesIn: t.totIn, BytesOut: t.totOut,
		Open: openFlows, Apps: list(apps, &t.apps), Hosts: list(hosts, &t.hosts), Ifaces: list(ifaces, &t.ifaces)}
	t.live = l
	if first {
		return
	}
	p := Point{Time: now, In: l.In, Out: l.Out}
	for i, a := range l.Apps {
		if i >= t.opt.HistoryApps {
			break
		}
		if a.In+a.Out > 0 {
			if p.Apps == nil {
				p.Apps = map[string]float64{}
			}
			p.Apps[a.Name] = a.In + a.Out
		}
	}
	if len(t.hist) < t.opt.History {
		t.hist = append(t.hist, p)
	} else {
		t.hist[t.histPos] = p
		t.histPos = (t.histPos + 1) % len(t.hist)
	}
}

// Live returns the latest rates, with the throughput history when withHistory.
func (t *Tracker) Live(withHistory bool) Live {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.live
	l.Apps, l.Hosts, l.Ifaces = slices.Clone(l.Apps), slices.Clone(l.Hosts), slices.Clone(l.Ifaces)
	if withHistory {
		l.History = make([]Point, 0, len(t.hist))
		l.History = append(l.History, t.hist[t.histPos:]...)
		l.History = append(l.History, t.hist[:t.histPos]...)
	}
	return l
}

// Totals are the cumulative bytes since the tracker started, by app, host
// and interface, each bounded (see TrackerOptions) with the rest under Other.
type Totals struct {
	Apps, Hosts, Ifaces map[string][2]int64
}

// Totals returns the cumulative counters.
func (t *Tracker) Totals() Totals {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Totals{Apps: t.apps.totals(), Hosts: t.hosts.totals(), Ifaces: t.ifaces.totals()}
}

// SortKey orders rates.
type SortKey int

// Sort orders.
const (
	SortRate  SortKey = iota // in+out rate, largest first
	SortTotal                // cumulative bytes, largest first
	SortName                 // name, A to Z
)

func (k SortKey) String() string {
	switch k {
	case SortTotal:
		return "total"
	case SortName:
		return "name"
	}
	return "rate"
}

// SortRates sorts rs in place by key; ties go by name.
func SortRates(rs []Rate, key SortKey) {
	slices.SortStableFunc(rs, func(a, b Rate) int {
		var c int
		switch key {
		case SortRate:
			c = cmp.Compare(b.In+b.Out, a.In+a.Out)
			if c == 0 {
				c = cmp.Compare(b.BytesIn+b.BytesOut, a.BytesIn+a.BytesOut)
			}
		case SortTotal:
			c = cmp.Compare(b.BytesIn+b.BytesOut, a.BytesIn+a.BytesOut)
		}
		if c == 0 {
			c = cmp.Compare(a.Name, b.Name)
		}
		return c
	})
}
