package daemon

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/netshape/netshape/bpfacct"
	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/store"
)

func (d *Daemon) accountRoutes() {
	d.ctl.Handle("GET /v1/usage", func(r *http.Request) (any, error) {
		q, err := usageQuery(r)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "%v", err)
		}
		d.flushUsage(time.Now())
		ts, err := d.store.Usage(q)
		if err != nil {
			return nil, err
		}
		if ts == nil {
			ts = []store.UsageTotal{}
		}
		return ts, nil
	})
	d.ctl.Handle("GET /v1/iface", func(r *http.Request) (any, error) { return d.ifaceReport() })
}

func usageQuery(r *http.Request) (store.UsageQuery, error) {
	v := r.URL.Query()
	q := store.UsageQuery{App: v.Get("app"), Host: v.Get("host"), Iface: v.Get("iface"), Category: v.Get("category")}
	switch by := store.Group(v.Get("by")); by {
	case store.ByApp, store.ByHost, store.ByIface, store.ByCategory, store.ByDay, store.ByNone:
		q.By = by
	default:
		return q, fmt.Errorf("--by %q: use app, host, iface, category or day", by)
	}
	for _, x := range []struct {
		key string
		t   *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if s := v.Get(x.key); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return q, fmt.Errorf("%s %q: want RFC 3339", x.key, s)
			}
			*x.t = t
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("limit %q: want a number", s)
		}
		q.Limit = n
	}
	return q, nil
}

func (d *Daemon) ifaceReport() (control.IfaceReport, error) {
	rep := control.IfaceReport{Time: time.Now(), Capture: d.acct != nil}
	ks, err := bpfacct.IfaceCounters()
	if err != nil {
		return rep, fmt.Errorf("read interface counters: %w", err)
	}
	var snap bpfacct.Snapshot
	if d.acct != nil {
		snap = d.acct.Snapshot()
	}
	d.usage.mu.Lock()
	proxied := make(map[string][2]int64, len(d.usage.proxied))
	for k, v := range d.usage.proxied {
		proxied[k] = v
	}
	d.usage.mu.Unlock()
	d.blockMu.Lock()
	blocked := slices.Clone(d.blocked)
	d.blockMu.Unlock()
	for _, k := range ks {
		e := control.IfaceEntry{Name: k.Name, Up: k.Up, KernelIn: int64(k.RxBytes), KernelOut: int64(k.TxBytes),
			ProxiedIn: proxied[k.Name][0], ProxiedOut: proxied[k.Name][1], Blocked: slices.Contains(blocked, k.Name)}
		if c, ok := snap.Iface(k.Name); ok {
			e.CapturedIn, e.CapturedOut, e.Drops, e.Capturing = c.BytesIn, c.BytesOut, c.Drops, c.Capturing
			e.ByProto = map[string][2]int64{}
			for p, t := range c.ByProto {
				e.ByProto[p.String()] = [2]int64{t.BytesIn, t.BytesOut}
			}
		}
		rep.Ifaces = append(rep.Ifaces, e)
	}
	return rep, nil
}
