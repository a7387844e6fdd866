package daemon

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
)

func TestRuleFromSpec(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r, err := ruleFromSpec(control.RuleSpec{Host: "*.youtube.com", Action: "allow", RateIn: "2MB/s",
		Quota: "2GB", Period: "month", ResetDay: 5, Over: "throttle:100KB/s", For: "2h"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.RateIn != 2e6 || r.Quota != 2e9 || r.Period != policy.PeriodMonth || r.Over.Throttle != 1e5 || !r.Expires.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("rule %+v", r)
	}
	for _, s := range []control.RuleSpec{
		{Action: "maybe"},
		{Action: "allow", Rate: "fast"},
		{Action: "allow", Quota: "-3MB"},
		{Action: "allow", Period: "fortnight"},
		{Action: "allow", Host: "bad..name"},
		{Action: "allow", Port: "70000"},
		{Action: "allow", For: "-1h"},
		{Action: "allow", Over: "explode"},
	} {
		if _, err := ruleFromSpec(s, now); !errors.Is(err, policy.ErrInvalidRule) {
			t.Errorf("ruleFromSpec(%+v) = %v, want ErrInvalidRule", s, err)
		}
	}
}

func TestShaperResetDay(t *testing.T) {
	for _, tc := range []struct {
		p    policy.Period
		day  int
		want int
	}{
		{policy.PeriodWeek, 0, 1}, // Monday by default
		{policy.PeriodWeek, 1, 1}, // Monday
		{policy.PeriodWeek, 7, 0}, // Sunday
		{policy.PeriodMonth, 0, 1},
		{policy.PeriodMonth, 5, 5},
	} {
		if got := shaperResetDay(policy.Rule{Period: tc.p, ResetDay: tc.day}); got != tc.want {
			t.Errorf("%s day %d -> %d, want %d", tc.p, tc.day, got, tc.want)
		}
	}
}

// A flow waits for the name its client sends only when a host-name rule
// could match it, or when it is headed for a prompt while such rules exist.
func TestNeedsHost(t *testing.T) {
	ssh := &flow.Flow{Exe: "/usr/bin/ssh", PID: 7, UID: 1000, User: "alice", Dst: netip.MustParseAddrPort("198.18.0.1:22")}
	firefox := &flow.Flow{Exe: "/usr/bin/firefox", PID: 8, UID: 1000, User: "alice", Dst: netip.MustParseAddrPort("198.18.0.1:443")}
	for _, tc := range []struct {
		name         string
		rules        []policy.Rule
		def          policy.Action
		ssh, firefox bool
	}{
		{"no rules", nil, policy.Allow, false, false},
		{"address and app rules only", []policy.Rule{{ID: 1, Host: "198.18.0.0/16", Action: policy.Deny}, {ID: 2, App: "ssh", Action: policy.Allow}}, policy.Ask, false, false},
		{"a name rule for every app", []policy.Rule{{ID: 1, Host: "*.example.test", Action: policy.Deny}}, policy.Allow, true, true},
		{"a name rule for firefox", []policy.Rule{{ID: 1, App: "firefox", Host: "*.youtube.com", Action: policy.Allow, Rate: 2e6}}, policy.Allow, false, true},
		{"a name rule for port 443", []policy.Rule{{ID: 1, Host: "*.example.test", Port: "443", Action: policy.Deny}}, policy.Allow, false, true},
		{"headed for a prompt", []policy.Rule{{ID: 1, App: "firefox", Host: "*.youtube.com", Action: policy.Allow}}, policy.Ask, true, true},
		{"allowed by its app while others prompt", []policy.Rule{{ID: 1, App: "firefox", Host: "*.youtube.com", Action: policy.Allow}, {ID: 2, App: "ssh", Action: policy.Allow}}, policy.Ask, false, true},
	} {
		r, err := compileRules(tc.rules, tc.def)
		if err != nil {
			t.Fatal(err)
		}
		d := &Daemon{pol: &policy.Config{DefaultAction: tc.def}}
		d.rules.Store(r)
		if got := d.needsHost(ssh); got != tc.ssh {
			t.Errorf("%s: ssh needs its host: %v, want %v", tc.name, got, tc.ssh)
		}
		if got := d.needsHost(firefox); got != tc.firefox {
			t.Errorf("%s: firefox needs its host: %v, want %v", tc.name, got, tc.firefox)
		}
	}
}

// The shaper skips the daemon's host selectors for a flow that no rule limit,
// one-off rate or run can match (mayMatchSelector), and still applies each of
// them to the flows they select.
func TestLimitsWithHostSelectorsSkipped(t *testing.T) {
	rs := []policy.Rule{
		{ID: 1, App: "firefox", Action: policy.Allow, RateIn: 1e6},
		{ID: 2, App: "curl", Action: policy.Allow, Quota: 1e9, Period: policy.PeriodMonth},
		{ID: 3, Host: "*.example.test", Action: policy.Allow, RateOut: 1e6},
	}
	r, err := compileRules(rs, policy.Allow)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{pol: &policy.Config{DefaultAction: policy.Allow}, log: slog.New(slog.DiscardHandler)}
	d.rules.Store(r)
	d.newShaper()
	d.runs.m = map[int64]control.Run{}
	d.applyLimits(r)
	dst := netip.MustParseAddrPort("198.18.0.1:443")
	waits := func(f *flow.Flow) (in, out bool) {
		t.Helper()
		lim, err := d.limit(f)
		if err != nil {
			t.Fatal(err)
		}
		if lim == nil {
			return false, false
		}
		defer lim.Close()
		w := lim.(pathLimiter)
		return w.Waits(proxy.In), w.Waits(proxy.Out)
	}
	if in, out := waits(&flow.Flow{ID: 10, Exe: "/usr/bin/firefox", PID: 10, Dst: dst}); !in || out {
		t.Errorf("firefox's rate: waits in %v out %v, want in only", in, out)
	}
	if in, out := waits(&flow.Flow{ID: 11, Exe: "/usr/bin/wget", PID: 11, Dst: dst, Host: "dl.example.test"}); in || !out {
		t.Errorf("a host rule's rate: waits in %v out %v, want out only", in, out)
	}
	if in, out := waits(&flow.Flow{ID: 12, Exe: "/usr/bin/wget", PID: 12, Dst: dst}); in || out {
		t.Errorf("a flow no limit selects: waits in %v out %v, want neither", in, out)
	}

	// A one-off rate from a prompt answer, for a flow no rule limits.
	d.oneOff.m[13] = 5e5
	d.applyLimits(r)
	if in, out := waits(&flow.Flow{ID: 13, Exe: "/usr/bin/wget", PID: 13, Dst: dst}); !in || !out {
		t.Errorf("a one-off rate: waits in %v out %v, want both", in, out)
	}
	// A run's rate (netshape run), for the processes in its cgroup.
	d.runs.m[1] = control.Run{Cgroup: "/netshape.slice/run-1", Rate: 5e5}
	d.applyLimits(r)
	if in, out := waits(&flow.Flow{ID: 14, Exe: "/usr/bin/wget", Cgroup: "/netshape.slice/run-1", Dst: dst}); !in || !out {
		t.Errorf("a run's rate: waits in %v out %v, want both", in, out)
	}
	if in, out := waits(&flow.Flow{ID: 15, Exe: "/usr/bin/wget", Cgroup: "/user.slice", Dst: dst}); in || out {
		t.Errorf("a flow outside the run: waits in %v out %v, want neither", in, out)
	}
}
