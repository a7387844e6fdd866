package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/ui"
	"github.com/netshape/netshape/units"
)

// Rules are matched by policy alone (app, user, host, port, iface, with
// CIDRs and wildcards): the shaper's selector for a rule is "rule:ID", and
// matchHost asks policy whether the rule matches the flow. Interface-only
// quotas use a plain interface selector so bytes the capture counts outside
// the proxy (UDP, ICMP) count too. A prompt answer's one-off rate is a
// per-flow limit "flow:ID".
const (
	selRule = "rule:"
	selFlow = "flow:"
)

// flowRates holds one-off rates from prompt answers, by flow id.
type flowRates struct {
	mu sync.Mutex
	m  map[uint64]float64
}

func (d *Daemon) newShaper() {
	d.shaper = shaper.New(shaper.Options{
		Logger:             d.log.With("part", "shaper"),
		OnEvent:            d.quotaEvent,
		MatchHost:          d.matchSelector,
		MayMatchHost:       d.mayMatchSelector,
		ExternalIfaceBytes: d.cfg.Capture,
	})
	d.oneOff.m = map[uint64]float64{}
}

func (d *Daemon) matchSelector(pattern string, f *flow.Flow) bool {
	if id, ok := strings.CutPrefix(pattern, selRule); ok {
		// The shaper asks about its own copy of the flow: match by ID (one
		// flow's path is not rebuilt while it is being attached). Most flows
		// match no limit or quota rule: answer those without parsing.
		a := d.attaching.Load()
		if a != nil && a.id == f.ID && len(a.ids) == 0 {
			return false
		}
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			return false
		}
		if a != nil && a.id == f.ID {
			return slices.Contains(a.ids, n)
		}
		return slices.Contains(d.limitIDs(f), n)
	}
	if id, ok := strings.CutPrefix(pattern, selFlow); ok {
		return id == strconv.FormatUint(f.ID, 10)
	}
	if id, ok := strings.CutPrefix(pattern, selRun); ok {
		n, err := strconv.ParseInt(id, 10, 64)
		return err == nil && d.inRun(n, f)
	}
	return false
}

// mayMatchSelector tells the shaper when none of the daemon's host
// selectors (rule:N, flow:N, run:N) can match f, so it need not ask about
// each: the flow being attached matched no rule's limit or quota, has no
// one-off rate from a prompt, and no `netshape run` is under way. Any other
// time (a path rebuilt after a rule change) it says maybe.
func (d *Daemon) mayMatchSelector(f *flow.Flow) bool {
	a := d.attaching.Load()
	if a == nil || a.id != f.ID || len(a.ids) > 0 {
		return true
	}
	d.oneOff.mu.Lock()
	_, oneOff := d.oneOff.m[f.ID]
	d.oneOff.mu.Unlock()
	if oneOff {
		return true
	}
	d.runs.mu.Lock()
	runs := len(d.runs.m)
	d.runs.mu.Unlock()
	return runs > 0
}

// limitMemo remembers the limit ids of the last flow decided: the proxy's
// decision hands them to limit, and a path rebuilt after a rule change asks
// about one flow once per rule limit and quota (hundreds with many rules),
// which would each be a full decision over every rule.
type limitMemo struct {
	mu  sync.Mutex
	r   *rules
	key limitKey
	at  time.Time
	ids []int64
}

// attachCtx is the flow whose path the shaper is building in limit, with the
// ids of the rule limits that apply to it.
type attachCtx struct {
	id  uint64
	ids []int64
}

// limitKey is every field of a flow a decision reads.
type limitKey struct {
	id              uint64
	exe, user, host string
	iface           string
	pid, uid        int
	dst             netip.AddrPort
}

// limitIDs returns the ids of the rules whose limits apply to f, deciding
// once per flow (and rule set, and second: rules expire).
func (d *Daemon) limitIDs(f *flow.Flow) []int64 {
	r := d.rules.Load()
	now := time.Now()
	k := limitKeyOf(f)
	m := &d.limMemo
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.r == r && m.key == k && now.Sub(m.at) < time.Second {
		return m.ids
	}
	v := r.set.Decide(f, d.pol.DefaultAction, now)
	m.r, m.key, m.at, m.ids = r, k, now, v.Limits
	return v.Limits
}

func limitKeyOf(f *flow.Flow) limitKey {
	return limitKey{id: f.ID, exe: f.Exe, user: f.User, host: f.Host, iface: f.Iface, pid: f.PID, uid: f.UID, dst: f.Dst}
}

// remember stores a decision made elsewhere (the proxy's Decide hook).
func (m *limitMemo) remember(r *rules, f *flow.Flow, at time.Time, ids []int64) {
	k := limitKeyOf(f)
	m.mu.Lock()
	m.r, m.key, m.at, m.ids = r, k, at, ids
	m.mu.Unlock()
}

// applyLimits turns the rules' rate and quota fields into shaper limits and
// quotas; running flows pick them up within a second.
func (d *Daemon) applyLimits(r *rules) {
	var ls []shaper.Limit
	var qs []shaper.Quota
	for _, ru := range r.all {
		if ru.Action == policy.Deny {
			continue
		}
		sel := shaper.Selector{Host: selRule + strconv.FormatInt(ru.ID, 10)}
		if ru.Iface != "" && ru.App == "" && ru.User == "" && ru.Host == "" && ru.Port == "" {
			sel = shaper.Selector{Iface: ru.Iface}
		}
		if in, out := ru.Rates(); in > 0 || out > 0 {
			ls = append(ls, shaper.Limit{ID: ru.ID, Sel: sel, In: in, Out: out})
		}
		if ru.Quota > 0 {
			qs = append(qs, shaper.Quota{
				ID: ru.ID, Sel: sel, Limit: ru.Quota, Dir: shaper.Total,
				Period: shaperPeriod(ru.Period), ResetDay: shaperResetDay(ru),
				ThrottleRate: ru.Over.Throttle,
			})
		}
	}
	d.oneOff.mu.Lock()
	for id, rate := range d.oneOff.m {
		ls = append(ls, shaper.Limit{ID: -1<<40 - int64(id), Sel: shaper.Selector{Host: selFlow + strconv.FormatUint(id, 10)}, Each: shaper.Flow, In: rate, Out: rate})
	}
	d.oneOff.mu.Unlock()
	rls, rqs := d.runLimits()
	ls, qs = append(ls, rls...), append(qs, rqs...)
	if err := d.shaper.SetLimits(ls); err != nil {
		d.warn("rate limits not applied: " + err.Error())
	}
	if err := d.shaper.SetQuotas(qs); err != nil {
		d.warn("quotas not applied: " + err.Error())
	}
	d.updateIfaceBlocks()
}

func shaperPeriod(p policy.Period) shaper.Period {
	switch p {
	case policy.PeriodDay:
		return shaper.Day
	case policy.PeriodWeek:
		return shaper.Week
	case policy.PeriodMonth:
		return shaper.Month
	}
	return shaper.None
}

// shaperResetDay converts policy's reset day (week: 1 = Monday … 7 = Sunday;
// month: 1-28) to the shaper's (week: 0 = Sunday … 6 = Saturday).
func shaperResetDay(r policy.Rule) int {
	switch r.Period {
	case policy.PeriodWeek:
		d := r.ResetDay
		if d == 0 {
			d = 1
		}
		return d % 7
	case policy.PeriodMonth:
		if r.ResetDay == 0 {
			return 1
		}
	}
	return r.ResetDay
}

// limit is the proxy's Limit hook.
func (d *Daemon) limit(f *flow.Flow) (proxy.Limiter, error) {
	// The shaper asks matchSelector about every rule limit and quota while it
	// builds f's path (hundreds with many rules): answer them from one
	// decision, without a lock or a clock read per question.
	ids := d.limitIDs(f)
	d.attachMu.Lock()
	d.attaching.Store(&attachCtx{id: f.ID, ids: ids})
	p, err := d.shaper.Attach(f)
	d.attaching.Store(nil)
	d.attachMu.Unlock()
	if err != nil {
		if errors.Is(err, shaper.ErrRefused) {
			return nil, err
		}
		d.log.Warn("shaper attach failed; flow unshaped", "flow", f.ID, "err", err)
		return nil, nil
	}
	if p == nil {
		return nil, nil
	}
	return pathLimiter{p: p, ctr: d.ifaceCounter(f.Iface)}, nil
}

// ifaceCounter is the live count of bytes the proxy relayed over iface
// through shaped paths, which interface quotas need to tell proxied bytes
// from the rest the capture sees.
func (d *Daemon) ifaceCounter(iface string) *ifaceCount {
	if iface == "" {
		return nil
	}
	if c, ok := d.ifaceLive.Load(iface); ok {
		return c.(*ifaceCount)
	}
	c, _ := d.ifaceLive.LoadOrStore(iface, &ifaceCount{})
	return c.(*ifaceCount)
}

type ifaceCount struct {
	proxied [2]atomic.Int64 // in, out
	// Owned by the capture goroutine of the interface:
	captured [2]int64 // every byte the capture reported
	reported [2]int64 // unattributed bytes already given to the shaper
}

// pathLimiter adapts a shaper path to the proxy's Limiter.
type pathLimiter struct {
	p   *shaper.Path
	ctr *ifaceCount
}

func dirOf(d proxy.Dir) shaper.Dir {
	if d == proxy.In {
		return shaper.In
	}
	return shaper.Out
}

func (l pathLimiter) Grant(ctx context.Context, d proxy.Dir, max int) (int, error) {
	return l.p.Grant(ctx, dirOf(d), max)
}

func (l pathLimiter) Done(d proxy.Dir, n int) error {
	if l.ctr != nil {
		l.ctr.proxied[d].Add(int64(n))
	}
	return l.p.Done(dirOf(d), n)
}

func (l pathLimiter) Close() { l.p.Close() }

// Waits tells the proxy's event loops whether Grant may wait (a rate limit).
func (l pathLimiter) Waits(d proxy.Dir) bool { return l.p.Waits(dirOf(d)) }

// ifaceBytes receives what the capture saw on an interface (every 250 ms) and
// gives interface quotas the part the proxy did not relay: UDP, ICMP, TCP
// that bypassed the proxy, and header overhead.
func (d *Daemon) ifaceBytes(iface string, in, out int64) {
	c := d.ifaceCounter(iface)
	c.captured[0] += in
	c.captured[1] += out
	for i, dir := range []shaper.Dir{shaper.In, shaper.Out} {
		un := max(0, c.captured[i]-c.proxied[i].Load())
		if add := un - c.reported[i]; add > 0 {
			c.reported[i] = un
			d.shaper.AddIfaceBytes(iface, dir, add)
		}
	}
}

// quotaEvent publishes quota warnings and, for interface quotas, blocks or
// unblocks the interface in the kernel.
func (d *Daemon) quotaEvent(e shaper.Event) {
	var msg string
	scope := describeSel(e.Quota.Sel)
	switch e.Kind {
	case shaper.QuotaWarning:
		msg = "quota of " + scope + " is 80% used: " + units.FormatSize(e.Used) + " of " + units.FormatSize(e.Limit)
	case shaper.QuotaExhausted:
		msg = "quota of " + scope + " is used up (" + units.FormatSize(e.Limit) + ")"
		if e.Throttled {
			msg += ": slowed to " + units.FormatRate(e.Quota.ThrottleRate)
		} else {
			msg += ": its connections are cut"
		}
	case shaper.QuotaReset:
		msg = "quota of " + scope + " starts a new period"
	case shaper.QuotaRestored:
		msg = "quota of " + scope + " has room again"
	}
	d.events.publish(control.Event{Type: "quota", ID: e.Quota.ID, Message: msg, Time: time.Now()})
	// Flows in scope are cut by the shaper at their next chunk (cleanly, FIN);
	// an idle one, or one whose packets an interface block now drops, would
	// never get there, so they are cut here too. New ones are refused at Attach.
	if e.Kind == shaper.QuotaExhausted {
		d.log.Warn(msg, "rule", e.Quota.ID)
		if !e.Throttled && d.proxy != nil {
			q := e.Quota
			go d.proxy.CutFlows(func(f *flow.Flow) bool { return d.inQuotaScope(q, f) }, "quota used up")
		}
	} else {
		d.log.Info(msg, "rule", e.Quota.ID)
	}
	if e.Quota.Sel.Iface != "" {
		go d.updateIfaceBlocks()
	}
}

func (d *Daemon) inQuotaScope(q shaper.Quota, f *flow.Flow) bool {
	if q.Sel.Iface != "" && q.Sel.Host == "" {
		return f.Iface == q.Sel.Iface
	}
	return d.matchSelector(q.Sel.Host, f)
}

func describeSel(s shaper.Selector) string {
	switch {
	case s.Iface != "" && s.Host == "":
		return "interface " + s.Iface
	case strings.HasPrefix(s.Host, selRule):
		return "rule " + strings.TrimPrefix(s.Host, selRule)
	case strings.HasPrefix(s.Host, selRun):
		return "netshape run " + strings.TrimPrefix(s.Host, selRun)
	}
	return "flow"
}

// updateIfaceBlocks makes the kernel drop traffic on interfaces whose quota is
// used up (and not throttled), and lets it through again after a grant or a
// new period.
func (d *Daemon) updateIfaceBlocks() {
	b, ok := d.red.(interface{ SetBlockedIfaces([]string) error })
	if !ok {
		return
	}
	var ifs []string
	for _, q := range d.shaper.Quotas() {
		if q.Exhausted && !q.Throttled && q.Quota.Sel.Iface != "" && q.Quota.Sel.Host == "" {
			ifs = append(ifs, q.Quota.Sel.Iface)
		}
	}
	d.blockMu.Lock()
	defer d.blockMu.Unlock()
	if strings.Join(ifs, ",") == strings.Join(d.blocked, ",") {
		return
	}
	if err := b.SetBlockedIfaces(ifs); err != nil {
		d.warn("cannot block interfaces whose quota is used up: " + err.Error())
		return
	}
	d.blocked = ifs
	if len(ifs) > 0 {
		d.log.Warn("interfaces blocked: quota used up", "ifaces", ifs)
	}
}

// saveQuotas persists quota counters every few seconds, so a crash loses at
// most that much counting.
func (d *Daemon) saveQuotas() {
	if err := d.store.SaveQuotaStates(toStoreQuotas(d.shaper.QuotaStates())); err != nil {
		d.warnOnce("save quota counters: " + err.Error() + " (counting continues in memory; retrying)")
	}
}

// quotaViews is every quota with its scope in words (GET /v1/quotas, the
// dashboard).
func (d *Daemon) quotaViews() []ui.Quota {
	qs := d.shaper.Quotas()
	out := make([]ui.Quota, 0, len(qs))
	for _, q := range qs {
		out = append(out, ui.Quota{QuotaStatus: q, ScopeText: d.describeQuota(q.Quota)})
	}
	return out
}

func (d *Daemon) quotaRoutes() {
	d.ctl.Handle("GET /v1/quotas", func(r *http.Request) (any, error) { return d.quotaViews(), nil })
	d.ctl.Handle("POST /v1/quotas/{id}/grant", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "quota id %q is not a number", r.PathValue("id"))
		}
		var body struct {
			Bytes int64 `json:"bytes"`
		}
		if err := decodeBody(r, &body); err != nil {
			return nil, err
		}
		if body.Bytes <= 0 {
			return nil, control.Errorf(http.StatusBadRequest, "grant must be at least 1 byte")
		}
		if err := d.shaper.Grant(id, body.Bytes); err != nil {
			if errors.Is(err, shaper.ErrUnknownQuota) {
				return nil, control.Errorf(http.StatusNotFound, "no quota with id %d (netshape quotas lists them)", id)
			}
			return nil, control.Errorf(http.StatusBadRequest, "%v", err)
		}
		d.saveQuotas()
		go d.updateIfaceBlocks()
		return map[string]int64{"granted": body.Bytes}, nil
	})
}

// describeQuota says what a quota covers, from its rule.
func (d *Daemon) describeQuota(q shaper.Quota) string {
	if ru, ok := d.rules.Load().byID[q.ID]; ok {
		var parts []string
		for _, kv := range [][2]string{{"app", ru.App}, {"user", ru.User}, {"host", ru.Host}, {"port", ru.Port}, {"iface", ru.Iface}} {
			if kv[1] != "" {
				parts = append(parts, kv[0]+" "+kv[1])
			}
		}
		if len(parts) == 0 {
			return "everything"
		}
		return strings.Join(parts, ", ")
	}
	return describeSel(q.Sel)
}
