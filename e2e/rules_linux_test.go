package e2e

// Issue 5: rules, held connections and answers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/internal/nstest"
	"github.com/netshape/netshape/policy"
)

func (e *env) pending() []control.Pending {
	e.t.Helper()
	var ps []control.Pending
	if err := json.Unmarshal([]byte(e.mustNetshape("pending", "--json")), &ps); err != nil {
		e.t.Fatal(err)
	}
	return ps
}

// waitPending polls `pending --json` until ok accepts the list.
func (e *env) waitPending(what string, ok func([]control.Pending) bool) []control.Pending {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps := e.pending()
		if ok(ps) {
			return ps
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("pending never became %s: %+v", what, ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) waitOnePending() control.Pending {
	e.t.Helper()
	return e.waitPending("one item", func(ps []control.Pending) bool { return len(ps) == 1 })[0]
}

func (e *env) rules() []policy.Rule {
	e.t.Helper()
	var rs []policy.Rule
	if err := json.Unmarshal([]byte(e.mustNetshape("rule", "list", "--json")), &rs); err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// liveFlow returns the live flow from local address src.
func (e *env) liveFlow(src netip.AddrPort) (flow.Flow, bool) {
	e.t.Helper()
	var fs []flow.Flow
	if err := json.Unmarshal([]byte(e.mustNetshape("flows", "--json")), &fs); err != nil {
		e.t.Fatal(err)
	}
	for _, f := range fs {
		if f.Src == src {
			return f, true
		}
	}
	return flow.Flow{}, false
}

// askDownload dials dst from the client namespace and asks the data server
// for n bytes; the request waits in the socket while the proxy holds it.
func askDownload(t *testing.T, ns string, dst netip.AddrPort, n int64) *net.TCPConn {
	t.Helper()
	c, err := dial(ns, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	request(c, 'D', n)
	return c
}

// expectData reads the whole download, checks it is n bytes and closes c
// (the flow ends when both sides have closed).
func expectData(t *testing.T, c *net.TCPConn, n int64, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.Copy(io.Discard, c)
	c.Close()
	if err != nil || got != n {
		t.Fatalf("%s: read %d of %d bytes: %v", what, got, n, err)
	}
}

// expectReset reads until the connection fails and checks it was reset.
func expectReset(t *testing.T, c *net.TCPConn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s: got %d bytes and %v, want ECONNRESET", what, n, err)
	}
}

func testExe(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	return exe
}

func TestAskAllowThenDeny(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8090)
	dataServer(t, listen(t, e.Srv, dst))

	c := askDownload(t, e.Cli, dst, 1000)
	p := e.waitOnePending()
	if p.Exe != testExe(t) || p.PID != os.Getpid() || p.Dst != nstest.SrvV4.String() || p.Port != 8090 || p.Count != 1 {
		t.Errorf("pending item %+v, want exe %s pid %d dst %v count 1", p, testExe(t), os.Getpid(), dst)
	}
	src := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if f, ok := e.liveFlow(src); !ok || f.State != flow.StateHeld || f.BytesIn != 0 {
		t.Errorf("flow while pending: %+v (found %v), want held with no bytes", f, ok)
	}
	if out := e.mustNetshape("allow", fmt.Sprint(p.ID)); !strings.Contains(out, "released 1 connection") {
		t.Errorf("allow said %q", out)
	}
	expectData(t, c, 1000, "after allow")
	if ps := e.pending(); len(ps) != 0 {
		t.Errorf("still pending after allow: %+v", ps)
	}

	// Allow once wrote no rule: the next connection is asked again; deny it.
	c = askDownload(t, e.Cli, dst, 1000)
	p = e.waitOnePending()
	errc := make(chan error, 1)
	var reset time.Time
	go func() {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		reset = time.Now()
		errc <- err
	}()
	start := time.Now()
	if out := e.mustNetshape("deny", fmt.Sprint(p.ID)); !strings.Contains(out, "released 1 connection") {
		t.Errorf("deny said %q", out)
	}
	if err := <-errc; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after deny: %v, want ECONNRESET", err)
	}
	t.Logf("client reset %v after `netshape deny` started (includes the CLI's own start-up)", reset.Sub(start).Round(time.Millisecond))
	if rs := e.rules(); len(rs) != 0 {
		t.Errorf("answers once wrote rules: %+v", rs)
	}
	fs := e.waitFlows(2)
	if len(fs) != 2 || fs[0].Verdict != "allow (answered allow)" || fs[1].Verdict != "deny (answered deny)" {
		t.Errorf("closed flows %+v, want one allowed then one denied", fs)
	}
}

func TestPromptTimeoutDeniesOnce(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask", "--prompt-timeout", "1s")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8091)
	dataServer(t, listen(t, e.Srv, dst))
	for round := range 2 { // asked again after a timeout: it decided once
		c := askDownload(t, e.Cli, dst, 1000)
		p := e.waitOnePending()
		if d := p.Deadline.Sub(p.Since); d != time.Second {
			t.Errorf("round %d: deadline %v after the question, want 1s", round, d)
		}
		start := time.Now()
		expectReset(t, c, fmt.Sprintf("round %d: after the timeout", round))
		t.Logf("round %d: reset %v after the question was seen", round, time.Since(start).Round(time.Millisecond))
		e.waitPending("empty", func(ps []control.Pending) bool { return len(ps) == 0 })
	}
	if rs := e.rules(); len(rs) != 0 {
		t.Errorf("a timeout wrote rules: %+v", rs)
	}
	for _, f := range e.waitFlows(2) {
		if f.Verdict != "deny (timeout)" {
			t.Errorf("flow %d verdict %q, want a timeout deny", f.ID, f.Verdict)
		}
	}
}

func TestAllowAlwaysSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8092)
	dataServer(t, listen(t, e.Srv, dst))
	c := askDownload(t, e.Cli, dst, 1000)
	p := e.waitOnePending()
	if out := e.mustNetshape("allow", "--always", fmt.Sprint(p.ID)); !strings.Contains(out, "rule") {
		t.Errorf("allow --always said %q", out)
	}
	expectData(t, c, 1000, "after allow --always")
	if rs := e.rules(); len(rs) != 1 || rs[0].Action != policy.Allow {
		t.Fatalf("rules after allow --always: %+v", rs)
	}

	if err := e.stopProcess(); err != nil {
		t.Fatalf("stop: %v\n%s", err, e.log)
	}
	e.start("--default", "ask")
	if rs := e.rules(); len(rs) != 1 {
		t.Fatalf("rules after restart: %+v", rs)
	}
	c = askDownload(t, e.Cli, dst, 1000)
	expectData(t, c, 1000, "after restart") // no one answers: it must pass on the rule
	if ps := e.pending(); len(ps) != 0 {
		t.Errorf("asked again after restart: %+v", ps)
	}
	// A different destination is still asked: the rule is for this host only.
	dst6 := netip.AddrPortFrom(nstest.SrvV6, 8092)
	dataServer(t, listen(t, e.Srv, dst6))
	c = askDownload(t, e.Cli, dst6, 10)
	p = e.waitOnePending()
	if p.Dst != nstest.SrvV6.String() {
		t.Errorf("pending %+v, want the IPv6 destination", p)
	}
	e.mustNetshape("deny", fmt.Sprint(p.ID))
	expectReset(t, c, "other host denied")
}

func TestManyConnectionsOneQuestion(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8093)
	dataServer(t, listen(t, e.Srv, dst))
	const n = 50
	var conns []*net.TCPConn
	if err := nstest.Do(e.Cli, func() error {
		for range n {
			c, err := net.DialTimeout("tcp", dst.String(), 10*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c.(*net.TCPConn))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
		request(c, 'D', 100)
	}
	ps := e.waitPending("one item for all 50", func(ps []control.Pending) bool {
		if len(ps) > 1 {
			t.Fatalf("%d questions for one app and one host: %+v", len(ps), ps)
		}
		return len(ps) == 1 && ps[0].Count == n
	})
	out := e.mustNetshape("allow", fmt.Sprint(ps[0].ID))
	if !strings.Contains(out, fmt.Sprintf("released %d connection", n)) {
		t.Errorf("allow said %q, want %d released", out, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.Copy(io.Discard, c); err != nil || got != 100 {
				errs <- fmt.Errorf("connection %d: %d bytes, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAskRuleForCIDR(t *testing.T) {
	e := newEnv(t)
	e.start() // default allow
	id := strings.TrimSpace(e.mustNetshape("rule", "add", "--host", "198.18.0.0/24", "--action", "ask"))
	in := netip.AddrPortFrom(nstest.SrvV4, 8094)
	out := netip.AddrPortFrom(nstest.SrvV6, 8094)
	dataServer(t, listen(t, e.Srv, in))
	dataServer(t, listen(t, e.Srv, out))

	held := askDownload(t, e.Cli, in, 1000)
	p := e.waitOnePending()
	if p.Dst != nstest.SrvV4.String() {
		t.Fatalf("pending %+v, want the IPv4 server", p)
	}
	// Outside the CIDR: passes while the other is held.
	expectData(t, askDownload(t, e.Cli, out, 1000), 1000, "destination outside the ask rule")
	if f, ok := e.liveFlow(held.LocalAddr().(*net.TCPAddr).AddrPort()); !ok || f.State != flow.StateHeld {
		t.Errorf("connection inside the rule's CIDR: %+v (found %v), want held", f, ok)
	}
	e.mustNetshape("allow", fmt.Sprint(p.ID))
	expectData(t, held, 1000, "after allow")
	for _, f := range e.waitFlows(2) {
		if f.Dst == in && fmt.Sprint(f.RuleID) != id {
			t.Errorf("held flow decided by rule %d, want %s", f.RuleID, id)
		}
		if f.Dst == out && f.RuleID != 0 {
			t.Errorf("outside flow decided by rule %d, want the default", f.RuleID)
		}
	}
}

func TestHeldClientGivesUp(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8095)
	dataServer(t, listen(t, e.Srv, dst))
	c := askDownload(t, e.Cli, dst, 1000)
	p := e.waitOnePending()
	c.Close()
	e.waitPending("empty after the client left", func(ps []control.Pending) bool { return len(ps) == 0 })
	fs := e.waitFlows(1)
	if len(fs) != 1 || fs[0].BytesIn != 0 || !strings.Contains(fs[0].Err, "gave up") {
		t.Errorf("flow of a client that gave up: %+v", fs)
	}
	if _, err := e.netshape("allow", fmt.Sprint(p.ID)); err == nil || !strings.Contains(err.Error(), "no such pending") {
		t.Errorf("allow after the client left: %v", err)
	}
}

func TestBadRuleInputClearErrors(t *testing.T) {
	e := newEnv(t)
	e.start()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rule", "add", "--action", "maybe"}, `action "maybe": use allow, deny or ask`},
		{[]string{"rule", "add", "--host"}, "flag needs an argument"},
		{[]string{"rule", "add", "--host", "example.test"}, `"action" not set`},
		{[]string{"rule", "add", "--action", "deny", "--host", "10.0.0.0/33"}, "not a valid CIDR"},
		{[]string{"rule", "add", "--action", "deny", "--port", "70000"}, "use a port 1-65535"},
		{[]string{"rule", "add", "--action", "deny", "--port", "90-80"}, "must not be above"},
		{[]string{"rule", "add", "--action", "deny", "--app", "bin/curl"}, "absolute exe path"},
		{[]string{"rule", "add", "--action", "allow", "--rate", "fast"}, "rate"},
		{[]string{"rule", "add", "--action", "allow", "--quota", "lots"}, "lots"},
		{[]string{"rule", "add", "--action", "allow", "--quota", "1GB", "--period", "fortnight"}, "fortnight"},
		{[]string{"rule", "add", "--action", "allow", "--for", "soon"}, "soon"},
		{[]string{"rule", "add", "--action", "deny", "extra"}, `unexpected argument "extra"`},
		{[]string{"rule", "rm", "999"}, "no rule 999"},
		{[]string{"rule", "rm", "abc"}, `rule id "abc" is not a number`},
		{[]string{"rule", "rm"}, "give one rule id"},
		{[]string{"allow", "999"}, "no such pending connection"},
		{[]string{"deny", "999"}, "no such pending connection"},
		{[]string{"allow", "x"}, `pending id "x" is not a number`},
	} {
		out, err := e.netshape(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("netshape %s: %v (stdout %q), want a failure saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		} else {
			t.Logf("netshape %s: %v", strings.Join(tc.args, " "), err)
		}
	}
	if rs := e.rules(); len(rs) != 0 {
		t.Errorf("bad input wrote rules: %+v", rs)
	}
}
