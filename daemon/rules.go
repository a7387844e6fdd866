package daemon

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
	"github.com/netshape/netshape/store"
)

// rules is the compiled rule set the proxy decides with, swapped whole on
// every change so a decision never sees half a change.
type rules struct {
	all        []policy.Rule
	byID       map[int64]policy.Rule
	set        *policy.Set
	needsIface bool // some rule matches an interface: find it before deciding
	mayAsk     bool // the default action or some rule is ask
}

// reloadRules recompiles config rules plus stored ones. Callers hold d.ruleMu.
func (d *Daemon) reloadRules() error {
	if _, err := d.store.PruneExpiredRules(time.Now()); err != nil {
		d.log.Warn("prune expired rules", "err", err)
	}
	stored, err := d.store.Rules()
	if err != nil {
		return err
	}
	r, err := compileRules(append(append([]policy.Rule(nil), d.pol.Rules...), stored...), d.pol.DefaultAction)
	if err != nil {
		return err
	}
	d.rules.Store(r)
	d.rulesChanged(r)
	return nil
}

// compileRules builds the rule set all with default action def.
func compileRules(all []policy.Rule, def policy.Action) (*rules, error) {
	set, err := policy.Compile(all)
	if err != nil {
		return nil, err
	}
	r := &rules{all: all, set: set, byID: make(map[int64]policy.Rule, len(all)), mayAsk: def == policy.Ask}
	for _, ru := range all {
		r.byID[ru.ID] = ru
		if ru.Action == policy.Ask {
			r.mayAsk = true
		}
		if ru.Iface != "" {
			r.needsIface = true
		}
	}
	return r, nil
}

// needsHost is the proxy's NeedsHost hook. A flow waits (bounded) for the
// name its client sends (TLS SNI, HTTP Host) before it is decided only when
// a rule naming a host could match it, so that the name can change its
// verdict or its limits, or when such rules exist and it is headed for a
// prompt (the user answers for the host it names). Every other flow is
// decided at once: one rule for a host must not hold up every connection of
// the machine, a server-speaks-first protocol's (SSH, SMTP) for the whole wait.
func (d *Daemon) needsHost(f *flow.Flow) bool {
	r := d.rules.Load()
	if !r.set.NamesHosts() {
		return false
	}
	now := time.Now()
	if r.set.HostMatters(f, now) {
		return true
	}
	return r.mayAsk && r.set.Decide(f, d.pol.DefaultAction, now).Action == policy.Ask
}

// decide is the proxy's Decide hook: pure policy over the flow.
func (d *Daemon) decide(f *flow.Flow) proxy.Action {
	r, now := d.rules.Load(), time.Now()
	v := r.set.Decide(f, d.pol.DefaultAction, now)
	d.limMemo.remember(r, f, now, v.Limits) // the shaper asks for them next
	f.RuleID = v.RuleID
	f.Verdict = string(v.Action)
	return toProxy(v.Action)
}

// rulesChanged applies a new rule set to live flows: flows a rule now denies
// are cut at once, and shaping follows the new limits.
func (d *Daemon) rulesChanged(r *rules) {
	d.applyLimits(r)
	if d.proxy == nil {
		return
	}
	now := time.Now()
	n := d.proxy.CloseFlows(func(f *flow.Flow) bool {
		if f.State != flow.StateOpen && f.State != flow.StateDialing {
			return false
		}
		return r.set.Decide(f, d.pol.DefaultAction, now).Action == policy.Deny
	}, "denied by a new rule")
	if n > 0 {
		d.log.Info("cut live flows a new rule denies", "flows", n)
	}
}

func ruleFromSpec(s control.RuleSpec, now time.Time) (policy.Rule, error) {
	r := policy.Rule{App: s.App, User: s.User, Host: s.Host, Port: s.Port, Iface: s.Iface, ResetDay: s.ResetDay, Note: s.Note, Created: now}
	var err error
	if r.Action, err = policy.ParseAction(s.Action); err != nil {
		return r, err
	}
	for _, x := range []struct {
		in  string
		out *float64
	}{{s.Rate, &r.Rate}, {s.RateIn, &r.RateIn}, {s.RateOut, &r.RateOut}} {
		if x.in != "" {
			if *x.out, err = policy.ParseRate(x.in); err != nil {
				return r, err
			}
		}
	}
	if s.Quota != "" {
		if r.Quota, err = policy.ParseSize(s.Quota); err != nil {
			return r, err
		}
	}
	if s.Period != "" {
		if r.Period, err = policy.ParsePeriod(s.Period); err != nil {
			return r, err
		}
	}
	if s.Over != "" {
		if r.Over, err = policy.ParseOver(s.Over); err != nil {
			return r, err
		}
	}
	if r.Expires, err = policy.ParseExpires(s.For, now); err != nil {
		return r, err
	}
	return r.Normalize()
}

// addRule stores r and applies it at once.
func (d *Daemon) addRule(r policy.Rule) (int64, error) {
	d.ruleMu.Lock()
	defer d.ruleMu.Unlock()
	id, err := d.store.AddRule(r)
	if err != nil {
		return 0, err
	}
	if err := d.reloadRules(); err != nil {
		return id, err
	}
	d.log.Info("rule added", "id", id, "action", r.Action, "app", r.App, "host", r.Host)
	return id, nil
}

func (d *Daemon) ruleRoutes() {
	d.ctl.Handle("GET /v1/rules", func(r *http.Request) (any, error) {
		return d.rules.Load().all, nil
	})
	d.ctl.Handle("POST /v1/rules", func(r *http.Request) (any, error) {
		var s control.RuleSpec
		if err := decodeBody(r, &s); err != nil {
			return nil, err
		}
		ru, err := ruleFromSpec(s, time.Now())
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "%v", err)
		}
		id, err := d.addRule(ru)
		if err != nil {
			return nil, err
		}
		return map[string]int64{"id": id}, nil
	})
	d.ctl.Handle("DELETE /v1/rules/{id}", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "rule id %q is not a number", r.PathValue("id"))
		}
		if id < 0 {
			return nil, control.Errorf(http.StatusBadRequest, "rule %d comes from the config file: edit the file and restart", id)
		}
		d.ruleMu.Lock()
		defer d.ruleMu.Unlock()
		if err := d.store.DeleteRule(id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, control.Errorf(http.StatusNotFound, "no rule %d (netshape rule list shows the ids)", id)
			}
			return nil, err
		}
		return map[string]int64{"deleted": id}, d.reloadRules()
	})
	d.ctl.Handle("GET /v1/pending", func(r *http.Request) (any, error) { return d.prompts.list(), nil })
	d.ctl.Handle("POST /v1/pending/{id}", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "pending id %q is not a number", r.PathValue("id"))
		}
		var a control.Answer
		if err := decodeBody(r, &a); err != nil {
			return nil, err
		}
		res, err := d.prompts.answer(id, a)
		if errors.Is(err, ErrNoPending) {
			return nil, control.Errorf(http.StatusNotFound, "%v", err)
		}
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "%v", err)
		}
		return res, nil
	})
	d.ctl.HandleRaw("GET /v1/events", http.HandlerFunc(d.serveEvents))
}

// writeAnswerRule turns an "always"/"for" answer into a stored rule.
func (d *Daemon) writeAnswerRule(it *pendingItem, a control.Answer) (int64, error) {
	scope := policy.ScopeHost
	if a.Scope != "" {
		s, err := policy.ParseScope(a.Scope)
		if err != nil {
			return 0, err
		}
		scope = s
	}
	var ttl time.Duration
	if a.For != "" {
		exp, err := policy.ParseExpires(a.For, time.Now())
		if err != nil {
			return 0, err
		}
		ttl = time.Until(exp)
	}
	act := policy.Deny
	if a.Action == "allow" {
		act = policy.Allow
	}
	f := it.flow
	ru, err := policy.RuleFromAnswer(&f, scope, act, time.Now(), ttl)
	if err != nil {
		return 0, err
	}
	if a.Rate > 0 && act == policy.Allow {
		ru.Rate = a.Rate
	}
	return d.addRule(ru)
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return control.Errorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}
