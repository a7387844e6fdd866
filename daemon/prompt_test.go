package daemon

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
)

type events struct {
	mu sync.Mutex
	es []control.Event
}

func (e *events) publish(ev control.Event) {
	e.mu.Lock()
	e.es = append(e.es, ev)
	e.mu.Unlock()
}

func (e *events) count(typ string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.es {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func testFlow(id uint64, exe, host string) *flow.Flow {
	return &flow.Flow{ID: id, Exe: exe, UID: 1000, Host: host, Dst: netip.MustParseAddrPort("198.18.0.2:443")}
}

func waitPending(t *testing.T, p *prompter, n int) []control.Pending {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps := p.list()
		if len(ps) == n || time.Now().After(deadline) {
			return ps
		}
		time.Sleep(time.Millisecond)
	}
}

// Connections of one app to one host share a question; one answer releases all.
func TestPromptGroupsAndReleases(t *testing.T) {
	var ev events
	p := newPrompter(time.Minute, policy.Deny, 8, ev.publish)
	const n = 50
	results := make(chan proxy.Action, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			a, _, _ := p.ask(context.Background(), testFlow(uint64(i), "/usr/bin/curl", "files.example.test"))
			results <- a
		}(i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps := p.list()
		if len(ps) == 1 && ps[0].Count == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %+v, want one item with %d connections", ps, n)
		}
		time.Sleep(time.Millisecond)
	}
	if ev.count("pending") != 1 {
		t.Fatalf("%d pending events, want 1", ev.count("pending"))
	}
	res, err := p.answer(p.list()[0].ID, control.Answer{Action: "allow"})
	if err != nil || res.Released != n || res.RuleID != 0 {
		t.Fatalf("answer: %+v %v", res, err)
	}
	for i := 0; i < n; i++ {
		if a := <-results; a != proxy.Allow {
			t.Fatalf("released with %v", a)
		}
	}
	if _, err := p.answer(1, control.Answer{Action: "allow"}); !errors.Is(err, ErrNoPending) {
		t.Fatalf("second answer: %v", err)
	}
}

// A timeout applies the timeout action once and writes no rule; past the cap
// a connection gets it at once.
func TestPromptTimeoutAndCap(t *testing.T) {
	var ev events
	p := newPrompter(50*time.Millisecond, policy.Deny, 1, ev.publish)
	p.answered = func(*pendingItem, control.Answer) (int64, error) {
		t.Error("a timeout wrote a rule")
		return 0, nil
	}
	done := make(chan proxy.Action, 1)
	go func() {
		a, _, why := p.ask(context.Background(), testFlow(1, "/usr/bin/a", "one.test"))
		if why != "timeout" {
			t.Errorf("reason %q", why)
		}
		done <- a
	}()
	waitPending(t, p, 1)
	// Another app and host while the cap (1) is reached: the timeout verdict now.
	a, _, why := p.ask(context.Background(), testFlow(2, "/usr/bin/b", "two.test"))
	if a != proxy.Deny || why == "" {
		t.Fatalf("over the cap: %v %q", a, why)
	}
	if got := <-done; got != proxy.Deny {
		t.Fatalf("timeout gave %v", got)
	}
	if len(p.list()) != 0 {
		t.Fatal("item left after timeout")
	}
}

// A client that leaves releases its place; the last one removes the item.
func TestPromptClientLeaves(t *testing.T) {
	var ev events
	p := newPrompter(time.Minute, policy.Deny, 8, ev.publish)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan proxy.Action)
	go func() {
		a, _, _ := p.ask(ctx, testFlow(1, "/usr/bin/a", "one.test"))
		done <- a
	}()
	ps := waitPending(t, p, 1)
	cancel()
	if a := <-done; a != proxy.Deny {
		t.Fatalf("left client got %v", a)
	}
	if len(p.list()) != 0 || ev.count("resolved") != 1 {
		t.Fatalf("pending %v, resolved events %d", p.list(), ev.count("resolved"))
	}
	if _, err := p.answer(ps[0].ID, control.Answer{Action: "allow"}); !errors.Is(err, ErrNoPending) {
		t.Fatalf("answer to a gone item: %v", err)
	}
}

// An "always" answer whose rule cannot be written keeps the connections held,
// so the answer can be given again.
func TestPromptRuleWriteFailureKeepsHold(t *testing.T) {
	var ev events
	p := newPrompter(time.Minute, policy.Deny, 8, ev.publish)
	fail := true
	p.answered = func(*pendingItem, control.Answer) (int64, error) {
		if fail {
			return 0, errors.New("disk full")
		}
		return 7, nil
	}
	done := make(chan proxy.Action)
	go func() {
		a, _, _ := p.ask(context.Background(), testFlow(1, "/usr/bin/a", "one.test"))
		done <- a
	}()
	ps := waitPending(t, p, 1)
	if _, err := p.answer(ps[0].ID, control.Answer{Action: "allow", Always: true}); err == nil {
		t.Fatal("answer succeeded although the rule was not written")
	}
	if len(p.list()) != 1 {
		t.Fatal("connection released although the rule was not written")
	}
	fail = false
	res, err := p.answer(ps[0].ID, control.Answer{Action: "allow", Always: true})
	if err != nil || res.RuleID != 7 || res.Released != 1 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if a := <-done; a != proxy.Allow {
		t.Fatalf("got %v", a)
	}
	if _, err := p.answer(99, control.Answer{Action: "maybe"}); err == nil {
		t.Fatal("bad action accepted")
	}
}
