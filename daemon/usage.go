package daemon

import (
	"sync"
	"time"

	"github.com/netshape/netshape/bpfacct"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/store"
)

// usage turns the proxy's per-flow byte counters into per-minute usage rows
// (app, host, interface) and stores closed flows, in one batch per tick.
type usage struct {
	// flushMu serialises flushes: a report that flushes before it reads the
	// store (netshape usage) waits for a flush under way to be written.
	flushMu sync.Mutex
	// sink is where flushes write: the store (a test's fake in tests).
	sink usageSink
	// unstored are flow records a failed write left, their bytes already
	// counted. Guarded by flushMu, as is last.
	unstored []flow.Flow
	last     map[uint64][2]int64 // flow id -> bytes in/out already counted
	// spare is the last flush's closed buffer, emptied, for the next one:
	// flowClosed appends on the event loops, and a buffer grown afresh each
	// flush (doubling, copying, first-touch page faults) costs them.
	spare []flow.Flow

	// mu guards the counters below. It is held only to swap or add up
	// small maps, never across a flush's pass over its flows or a write to
	// the sink: the event loops take it at the end of every flow
	// (flowClosed), and a loop waiting for it waits with all its flows.
	mu     sync.Mutex
	closed []flow.Flow // flows closed since the last flush
	unsent map[usageKey][2]int64
	// proxied counts, per interface, every byte the proxy relayed; capLast,
	// per interface and protocol, the unattributed bytes already written.
	proxied map[string][2]int64
	capLast map[string]map[string][2]int64
}

// usageSink is what flushUsage writes to; *store.Store is one.
type usageSink interface {
	AddUsage(rows []store.UsageRow) error
	AddFlows(fs []flow.Flow) error
}

// maxUnstoredFlows bounds the closed flows kept in memory while the store
// fails: the oldest go first.
const maxUnstoredFlows = 10000

// maxSpareFlows bounds the buffer a flush keeps for the next (~5 MB): a
// burst past it is not held on to.
const maxSpareFlows = 16384

// init readies u to count and to write to sink. Call it before any use.
func (u *usage) init(sink usageSink) {
	u.sink = sink
	u.last = map[uint64][2]int64{}
	u.unsent = map[usageKey][2]int64{}
	u.proxied = map[string][2]int64{}
	u.capLast = map[string]map[string][2]int64{}
}

// unattributedApp names usage rows for bytes the capture saw that no proxied
// flow explains: UDP, ICMP, other protocols, TCP that bypassed the proxy, and
// TCP/IP header overhead. Host holds the protocol.
const unattributedApp = "unattributed"

type usageKey struct{ app, host, iface string }

func (d *Daemon) flowClosed(f *flow.Flow) {
	d.usage.mu.Lock()
	d.usage.closed = append(d.usage.closed, *f)
	d.usage.mu.Unlock()
	d.oneOff.mu.Lock()
	_, had := d.oneOff.m[f.ID]
	delete(d.oneOff.m, f.ID)
	d.oneOff.mu.Unlock()
	if had {
		d.applyLimits(d.rules.Load())
	}
}

// flushUsage writes what flowed since the last call. It takes the counts
// and closed flows under the lock and writes them after releasing it; a
// failed write puts them back for the next flush (a full disk loses nothing
// while memory lasts, and at most maxUnstoredFlows flow records).
func (d *Daemon) flushUsage(now time.Time) {
	d.usage.flushMu.Lock()
	defer d.usage.flushMu.Unlock()
	u := &d.usage
	// Only the live flows that moved since the last flush: an idle one
	// would add nothing, and a daemon may hold thousands.
	live := d.proxy.ChangedFlows(u.last)
	u.mu.Lock()
	closed := u.closed
	u.closed, u.spare = u.spare, nil
	sums := u.unsent
	u.unsent = make(map[usageKey][2]int64, len(sums))
	u.mu.Unlock()
	proxied := map[string][2]int64{}
	add := func(f *flow.Flow, final bool) {
		prev := u.last[f.ID]
		din, dout := f.BytesIn-prev[0], f.BytesOut-prev[1]
		if final {
			delete(u.last, f.ID)
		} else {
			u.last[f.ID] = [2]int64{f.BytesIn, f.BytesOut}
		}
		if din == 0 && dout == 0 {
			return
		}
		k := usageKey{f.App(), f.Name(), f.Iface}
		s := sums[k]
		sums[k] = [2]int64{s[0] + din, s[1] + dout}
		if f.Iface != "" {
			p := proxied[f.Iface]
			proxied[f.Iface] = [2]int64{p[0] + din, p[1] + dout}
		}
	}
	for i := range live {
		add(&live[i], false)
	}
	for i := range closed {
		add(&closed[i], true)
	}
	u.mu.Lock()
	for ifc, v := range proxied {
		p := u.proxied[ifc]
		u.proxied[ifc] = [2]int64{p[0] + v[0], p[1] + v[1]}
	}
	d.addUnattributed(sums)
	u.mu.Unlock()

	if len(sums) > 0 {
		rows := make([]store.UsageRow, 0, len(sums))
		for k, s := range sums {
			rows = append(rows, store.UsageRow{Minute: now, App: k.app, Host: k.host, Iface: k.iface,
				Category: d.pol.Category(k.host), BytesIn: s[0], BytesOut: s[1]})
		}
		if err := u.sink.AddUsage(rows); err != nil {
			d.warnOnce("store usage: " + err.Error() + " (kept in memory; retrying)")
			u.mu.Lock()
			for k, s := range sums {
				t := u.unsent[k]
				u.unsent[k] = [2]int64{t[0] + s[0], t[1] + s[1]}
			}
			u.mu.Unlock()
		}
	}
	// Records a failed write left go first: they closed earlier. Their
	// bytes were counted when they closed, so they are not counted again.
	records, own := closed, true // own: records is closed's buffer
	if len(u.unstored) > 0 {
		records, own = append(u.unstored, closed...), false
		u.unstored = nil
	}
	if len(records) > 0 {
		if err := u.sink.AddFlows(records); err != nil {
			d.warnOnce("store closed flows: " + err.Error())
			if n := len(records); n > maxUnstoredFlows {
				records = records[n-maxUnstoredFlows:]
			}
			u.unstored = records
			if own {
				closed = nil // kept for the retry
			}
		}
	}
	u.keepSpare(closed)
}

// keepSpare keeps b, a buffer of closed flows the flush is done with, as
// the next flush's (cleared: its strings are not held on to).
func (u *usage) keepSpare(b []flow.Flow) {
	if cap(b) == 0 || cap(b) > maxSpareFlows {
		return
	}
	clear(b)
	u.spare = b[:0]
}

// appToday is what app used since local midnight, for a prompt.
func (d *Daemon) appToday(app string) (in, out int64) {
	now := time.Now()
	mid := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	ts, err := d.store.Usage(store.UsageQuery{From: mid, By: store.ByApp, App: app})
	if err != nil {
		return 0, 0
	}
	for _, t := range ts {
		in += t.BytesIn
		out += t.BytesOut
	}
	return in, out
}

func toStoreQuotas(qs []shaper.QuotaState) []store.QuotaState {
	out := make([]store.QuotaState, len(qs))
	for i, q := range qs {
		out[i] = store.QuotaState{RuleID: q.ID, PeriodStart: q.PeriodStart, Used: q.Used, Granted: q.Granted}
	}
	return out
}

func fromStoreQuotas(qs []store.QuotaState) []shaper.QuotaState {
	out := make([]shaper.QuotaState, len(qs))
	for i, q := range qs {
		out[i] = shaper.QuotaState{ID: q.RuleID, PeriodStart: q.PeriodStart, Used: q.Used, Granted: q.Granted}
	}
	return out
}

// addUnattributed adds, per interface and protocol, what the capture counted
// beyond the proxied bytes, so usage by app reconciles with the interface
// totals. Called with d.usage.mu held.
func (d *Daemon) addUnattributed(sums map[usageKey][2]int64) {
	if d.acct == nil {
		return
	}
	for _, ifc := range d.acct.Snapshot().Ifaces {
		last := d.usage.capLast[ifc.Name]
		if last == nil {
			last = map[string][2]int64{}
			d.usage.capLast[ifc.Name] = last
		}
		for proto, t := range ifc.ByProto {
			cum := [2]int64{t.BytesIn, t.BytesOut}
			if proto == bpfacct.ProtoTCP {
				p := d.usage.proxied[ifc.Name]
				cum = [2]int64{max(0, cum[0]-p[0]), max(0, cum[1]-p[1])}
			}
			name := proto.String()
			prev := last[name]
			din, dout := max(0, cum[0]-prev[0]), max(0, cum[1]-prev[1])
			last[name] = [2]int64{max(prev[0], cum[0]), max(prev[1], cum[1])}
			if din == 0 && dout == 0 {
				continue
			}
			k := usageKey{unattributedApp, name, ifc.Name}
			s := sums[k]
			sums[k] = [2]int64{s[0] + din, s[1] + dout}
		}
	}
}
