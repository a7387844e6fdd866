package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
)

// ErrNoPending is returned for an answer to an id that is not pending.
var ErrNoPending = errors.New("no such pending connection (answered, timed out, or its client left)")

// prompter holds the connections that wait for a user's answer. Connections
// from the same app to the same host share one item; items are capped, and
// past the cap a connection gets the timeout verdict at once.
type prompter struct {
	timeout  time.Duration
	onTime   policy.Action // what a timeout applies, once
	max      int
	publish  func(control.Event)
	today    func(app string) (in, out int64)                       // the app's usage today, for the question
	answered func(it *pendingItem, a control.Answer) (int64, error) // writes a rule for "always" answers

	mu     sync.Mutex
	nextID int64
	items  map[int64]*pendingItem
	byKey  map[pendingKey]*pendingItem
}

type pendingKey struct {
	exe  string
	uid  int
	host string
}

type pendingItem struct {
	control.Pending
	flow    flow.Flow // the first connection's flow, for rules
	key     pendingKey
	waiters int
	done    chan struct{}
	verdict proxy.Action
	rate    float64
	why     string // what resolved it: "timeout", "answered allow", ...
	timer   *time.Timer
}

func newPrompter(timeout time.Duration, onTimeout policy.Action, max int, publish func(control.Event)) *prompter {
	return &prompter{
		timeout: timeout, onTime: onTimeout, max: max, publish: publish,
		items: map[int64]*pendingItem{}, byKey: map[pendingKey]*pendingItem{},
	}
}

func keyOf(f *flow.Flow) pendingKey {
	h := f.Host
	if h == "" {
		h = f.Dst.Addr().String()
	}
	return pendingKey{exe: f.Exe, uid: f.UID, host: h}
}

func toProxy(a policy.Action) proxy.Action {
	switch a {
	case policy.Allow:
		return proxy.Allow
	case policy.Ask:
		return proxy.Ask
	}
	return proxy.Deny
}

// ask holds f until an answer, the timeout, or ctx's end (client gone,
// daemon stopping). It returns the verdict and a rate (0: none) to apply.
func (p *prompter) ask(ctx context.Context, f *flow.Flow) (proxy.Action, float64, string) {
	k := keyOf(f)
	p.mu.Lock()
	it := p.byKey[k]
	if it == nil {
		if len(p.items) >= p.max {
			p.mu.Unlock()
			return toProxy(p.onTime), 0, "timeout:" + string(p.onTime) + " (too many pending)"
		}
		p.nextID++
		now := time.Now()
		var tin, tout int64
		if p.today != nil {
			tin, tout = p.today(f.App())
		}
		it = &pendingItem{
			Pending: control.Pending{
				ID: p.nextID, App: f.App(), Exe: f.Exe, PID: f.PID, Cmdline: f.Cmdline, User: f.User, UID: f.UID,
				Dst: f.Dst.Addr().String(), Port: f.Dst.Port(), Host: f.Host, HostSource: f.HostSource,
				Since: now, Deadline: now.Add(p.timeout), TodayIn: tin, TodayOut: tout,
			},
			flow: *f, key: k, done: make(chan struct{}),
		}
		p.items[it.ID] = it
		p.byKey[k] = it
		id := it.ID
		it.timer = time.AfterFunc(p.timeout, func() { p.resolve(id, toProxy(p.onTime), 0, "timeout") })
	}
	it.waiters++
	it.Count = it.waiters
	snap := it.Pending
	first := it.waiters == 1
	p.mu.Unlock()
	if first {
		p.publish(control.Event{Type: "pending", Pending: &snap, Time: time.Now()})
	}

	select {
	case <-it.done:
		return it.verdict, it.rate, it.why
	case <-ctx.Done():
		p.mu.Lock()
		it.waiters--
		it.Count = it.waiters
		gone := it.waiters == 0 && p.items[it.ID] == it
		if gone {
			p.remove(it)
		}
		p.mu.Unlock()
		if gone {
			it.timer.Stop()
			p.publish(control.Event{Type: "resolved", ID: it.ID, Message: "every waiting client left", Time: time.Now()})
		}
		return proxy.Deny, 0, ""
	}
}

func (p *prompter) remove(it *pendingItem) {
	delete(p.items, it.ID)
	if p.byKey[it.key] == it {
		delete(p.byKey, it.key)
	}
}

// resolve releases an item with a verdict. It reports how many connections it
// released, or ErrNoPending.
func (p *prompter) resolve(id int64, v proxy.Action, rate float64, why string) (int, error) {
	p.mu.Lock()
	it := p.items[id]
	if it == nil {
		p.mu.Unlock()
		return 0, fmt.Errorf("%w: id %d", ErrNoPending, id)
	}
	p.remove(it)
	n := it.waiters
	it.verdict, it.rate, it.why = v, rate, why
	p.mu.Unlock()
	it.timer.Stop()
	close(it.done)
	p.publish(control.Event{Type: "resolved", ID: id, Message: why, Time: time.Now()})
	return n, nil
}

// answer applies a user's answer: for "always"/"for", it writes the rule first
// (via answered), so a failed write leaves the connections held and the
// answer can be retried.
func (p *prompter) answer(id int64, a control.Answer) (control.AnswerResult, error) {
	var act policy.Action
	switch a.Action {
	case "allow":
		act = policy.Allow
	case "deny":
		act = policy.Deny
	default:
		return control.AnswerResult{}, fmt.Errorf("answer action %q: use allow or deny", a.Action)
	}
	p.mu.Lock()
	it := p.items[id]
	p.mu.Unlock()
	if it == nil {
		return control.AnswerResult{}, fmt.Errorf("%w: id %d", ErrNoPending, id)
	}
	var res control.AnswerResult
	if a.Always || a.For != "" {
		rid, err := p.answered(it, a)
		if err != nil {
			return res, err
		}
		res.RuleID = rid
	}
	why := "answered " + a.Action
	n, err := p.resolve(id, toProxy(act), a.Rate, why)
	res.Released = n
	return res, err
}

func (p *prompter) list() []control.Pending {
	p.mu.Lock()
	out := make([]control.Pending, 0, len(p.items))
	for _, it := range p.items {
		out = append(out, it.Pending)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (p *prompter) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items)
}
