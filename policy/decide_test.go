package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fl builds a flow: exe, host name, destination "ip:port".
func fl(exe, host, dst string) *flow.Flow {
	return &flow.Flow{Exe: exe, Host: host, Dst: netip.MustParseAddrPort(dst), PID: 42, UID: 1000, User: "alice", Iface: "eth0"}
}

func TestDecidePrecedence(t *testing.T) {
	ff := fl("/usr/bin/firefox", "www.example.com", "93.184.216.34:443")
	tests := []struct {
		name   string
		rules  []Rule
		f      *flow.Flow
		def    Action
		want   Action
		wantID int64
	}{
		{"no rules: default", nil, ff, Ask, Ask, 0},
		{"no match: default", []Rule{{ID: 1, Host: "other.org", Action: Deny}}, ff, Allow, Allow, 0},
		{"match-all rule beats default", []Rule{{ID: 1, Action: Deny}}, ff, Allow, Deny, 1},
		{"two fields beat one", []Rule{
			{ID: 1, Host: "www.example.com", Action: Deny},
			{ID: 2, App: "firefox", Host: "*.example.com", Action: Allow}}, ff, Ask, Allow, 2},
		{"three fields beat two", []Rule{
			{ID: 1, App: "firefox", Host: "www.example.com", Action: Allow},
			{ID: 2, App: "firefox", Host: "*.com", Port: "1-65535", Action: Deny}}, ff, Ask, Deny, 2},
		{"exact name beats wildcard", []Rule{
			{ID: 1, Host: "*.www.example.com", Action: Deny},
			{ID: 2, Host: "www.example.com", Action: Allow}}, ff, Ask, Allow, 2},
		{"longer wildcard beats shorter", []Rule{
			{ID: 1, Host: "*.example.com", Action: Allow},
			{ID: 2, Host: "*.www.example.com", Action: Ask},
			{ID: 3, Host: "*.com", Action: Deny}}, ff, Allow, Ask, 2},
		{"wildcard beats IP", []Rule{
			{ID: 1, Host: "93.184.216.34", Action: Deny},
			{ID: 2, Host: "*.example.com", Action: Allow}}, ff, Ask, Allow, 2},
		{"IP beats CIDR", []Rule{
			{ID: 1, Host: "93.184.216.0/24", Action: Deny},
			{ID: 2, Host: "93.184.216.34", Action: Allow}}, ff, Ask, Allow, 2},
		{"narrower CIDR beats wider", []Rule{
			{ID: 1, Host: "93.0.0.0/8", Action: Deny},
			{ID: 2, Host: "93.184.0.0/16", Action: Allow},
			{ID: 3, Host: "0.0.0.0/0", Action: Deny}}, ff, Ask, Allow, 2},
		{"host kind decides before app kind", []Rule{
			{ID: 1, App: "/usr/bin/firefox", Action: Deny},
			{ID: 2, Host: "93.184.0.0/16", Action: Allow}}, ff, Ask, Allow, 2},
		{"app path beats app name", []Rule{
			{ID: 1, App: "firefox", Action: Deny},
			{ID: 2, App: "/usr/bin/firefox", Action: Allow}}, ff, Ask, Allow, 2},
		{"app path must be exact", []Rule{
			{ID: 1, App: "/opt/firefox", Action: Deny}}, ff, Allow, Allow, 0},
		{"single port beats range", []Rule{
			{ID: 1, Port: "1-1024", Action: Deny},
			{ID: 2, Port: "443", Action: Allow}}, ff, Ask, Allow, 2},
		{"narrower range beats wider", []Rule{
			{ID: 1, Port: "1-65535", Action: Deny},
			{ID: 2, Port: "400-500", Action: Allow}}, ff, Ask, Allow, 2},
		{"port out of range does not match", []Rule{
			{ID: 1, Port: "8000-8080", Action: Deny}}, ff, Allow, Allow, 0},
		{"equal: deny beats allow", []Rule{
			{ID: 1, Host: "*.example.com", Action: Allow},
			{ID: 2, Host: "*.example.com", Action: Deny}}, ff, Ask, Deny, 2},
		{"equal: deny beats ask", []Rule{
			{ID: 1, App: "firefox", Action: Deny},
			{ID: 2, App: "firefox", Action: Ask}}, ff, Allow, Deny, 1},
		{"equal: ask beats allow", []Rule{
			{ID: 1, User: "alice", Action: Allow},
			{ID: 2, User: "1000", Action: Ask}}, ff, Deny, Ask, 2},
		{"equal fields of different kinds: action decides", []Rule{
			{ID: 1, User: "alice", Action: Deny},
			{ID: 2, Iface: "eth0", Action: Allow}}, ff, Ask, Deny, 1},
		{"equal everything: lowest id", []Rule{
			{ID: 7, Host: "*.example.com", Action: Allow, Note: "b"},
			{ID: 3, Host: "*.example.com", Action: Allow, Note: "a"}}, ff, Ask, Allow, 3},
		{"expired rule ignored", []Rule{
			{ID: 1, Host: "www.example.com", Action: Deny, Expires: t0.Add(-time.Second)},
			{ID: 2, Action: Ask}}, ff, Allow, Ask, 2},
		{"expiring exactly now is expired", []Rule{
			{ID: 1, Action: Deny, Expires: t0}}, ff, Allow, Allow, 0},
		{"not yet expired applies", []Rule{
			{ID: 1, Action: Deny, Expires: t0.Add(time.Nanosecond)}}, ff, Allow, Deny, 1},
		{"unknown host: CIDR matches Dst", []Rule{
			{ID: 1, Host: "93.184.216.0/24", Action: Deny}}, fl("/usr/bin/x", "", "93.184.216.34:443"), Allow, Deny, 1},
		{"unknown host: name rule does not match", []Rule{
			{ID: 1, Host: "93.example.com", Action: Deny}}, fl("/usr/bin/x", "", "93.184.216.34:443"), Allow, Allow, 0},
		{"known host: IP rule still matches Dst", []Rule{
			{ID: 1, Host: "93.184.216.34", Action: Deny}}, ff, Allow, Deny, 1},
		{"IP literal host: name rule does not match", []Rule{
			{ID: 1, Host: "*.34", Action: Deny},
			{ID: 2, Host: "93.184.216.34", Action: Ask}}, fl("/usr/bin/x", "93.184.216.34", "93.184.216.34:80"), Allow, Ask, 2},
		{"IPv6 CIDR", []Rule{
			{ID: 1, Host: "2001:db8::/32", Action: Deny}}, fl("/usr/bin/x", "", "[2001:db8::1]:443"), Allow, Deny, 1},
		{"IPv4-mapped destination matches IPv4 rule", []Rule{
			{ID: 1, Host: "198.18.0.0/24", Action: Deny}}, fl("/usr/bin/x", "", "[::ffff:198.18.0.9]:443"), Allow, Deny, 1},
		{"wildcard matches apex", []Rule{
			{ID: 1, Host: "*.example.com", Action: Deny}}, fl("/usr/bin/x", "example.com", "198.18.0.1:443"), Allow, Deny, 1},
		{"wildcard needs a label boundary", []Rule{
			{ID: 1, Host: "*.example.com", Action: Deny}}, fl("/usr/bin/x", "notexample.com", "198.18.0.1:443"), Allow, Allow, 0},
		{"wildcard matches deep names", []Rule{
			{ID: 1, Host: "*.example.com", Action: Deny}}, fl("/usr/bin/x", "a.b.c.example.com", "198.18.0.1:443"), Allow, Deny, 1},
		{"host case and trailing dot ignored", []Rule{
			{ID: 1, Host: "WWW.Example.COM.", Action: Deny}}, fl("/usr/bin/x", "www.EXAMPLE.com.", "198.18.0.1:443"), Allow, Deny, 1},
		{"user by name", []Rule{{ID: 1, User: "alice", Action: Deny}}, ff, Allow, Deny, 1},
		{"user by name, other user", []Rule{{ID: 1, User: "bob", Action: Deny}}, ff, Allow, Allow, 0},
		{"user by uid", []Rule{{ID: 1, User: "1000", Action: Deny}}, ff, Allow, Deny, 1},
		{"uid 0 of an unknown process is not root", []Rule{{ID: 1, User: "0", Action: Deny}},
			&flow.Flow{Dst: netip.MustParseAddrPort("198.18.0.1:443")}, Allow, Allow, 0},
		{"uid 0 of a known process", []Rule{{ID: 1, User: "0", Action: Deny}},
			&flow.Flow{PID: 1, Exe: "/sbin/init", Dst: netip.MustParseAddrPort("198.18.0.1:443")}, Allow, Deny, 1},
		{"app name does not match unknown exe", []Rule{{ID: 1, App: "unknown", Action: Deny}},
			&flow.Flow{Dst: netip.MustParseAddrPort("198.18.0.1:443")}, Allow, Allow, 0},
		{"iface", []Rule{
			{ID: 1, Iface: "wlan0", Action: Deny},
			{ID: 2, Iface: "eth0", Action: Ask}}, ff, Allow, Ask, 2},
		{"every field of a rule must match", []Rule{
			{ID: 1, App: "firefox", Host: "www.example.com", Port: "80", Action: Deny}}, ff, Allow, Allow, 0},
		{"config rules (negative ids) and store rules together", []Rule{
			{ID: -1, Host: "*.example.com", Action: Deny},
			{ID: 5, App: "firefox", Host: "*.example.com", Action: Allow}}, ff, Ask, Allow, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(how string, v Verdict) {
				t.Helper()
				if v.Action != tt.want || v.RuleID != tt.wantID {
					t.Errorf("%s: got %s by rule %d, want %s by rule %d", how, v.Action, v.RuleID, tt.want, tt.wantID)
				}
			}
			check("Decide", Decide(tt.rules, tt.f, tt.def, t0))
			s, err := Compile(tt.rules)
			if err != nil {
				t.Fatal(err)
			}
			check("Set.Decide", s.Decide(tt.f, tt.def, t0))
			// The order of the rules never matters.
			rev := slices.Clone(tt.rules)
			slices.Reverse(rev)
			check("Decide reversed", Decide(rev, tt.f, tt.def, t0))
			s, _ = Compile(rev)
			check("Set.Decide reversed", s.Decide(tt.f, tt.def, t0))
		})
	}
}

func TestDecideLimits(t *testing.T) {
	ff := fl("/usr/bin/firefox", "www.youtube.com", "198.18.0.5:443")
	rules := []Rule{
		{ID: 1, App: "firefox", Action: Allow, Rate: 1e6},
		{ID: 2, Host: "*.youtube.com", Action: Allow, Quota: 1e9, Period: PeriodDay},
		{ID: 3, App: "firefox", Host: "www.youtube.com", Action: Ask},           // decides, no limit
		{ID: 4, Host: "*.other.com", Action: Allow, RateOut: 5e5},               // does not match
		{ID: 5, Action: Allow, RateIn: 1e7, Expires: t0.Add(-time.Hour)},        // expired
		{ID: 6, Iface: "eth0", Action: Allow, RateIn: 2e7},                      // matches, least specific
		{ID: 7, App: "/usr/bin/firefox", Port: "443", Action: Allow, Rate: 3e6}, // two fields
	}
	want := Verdict{Action: Ask, RuleID: 3, Limits: []int64{7, 2, 1, 6}}
	check := func(how string, v Verdict) {
		t.Helper()
		if v.Action != want.Action || v.RuleID != want.RuleID || !slices.Equal(v.Limits, want.Limits) {
			t.Errorf("%s: got %+v, want %+v", how, v, want)
		}
	}
	check("Decide", Decide(rules, ff, Deny, t0))
	s, err := Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	check("Set.Decide", s.Decide(ff, Deny, t0))

	// A limit rule can also decide; every matching limit still applies.
	other := fl("/usr/bin/wget", "a.other.com", "198.18.0.6:80")
	v := s.Decide(other, Allow, t0)
	if v.RuleID != 4 || !slices.Equal(v.Limits, []int64{4, 6}) {
		t.Errorf("wget: got %+v, want rule 4 and limits [4 6]", v)
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	_, err := Compile([]Rule{{ID: 1, Action: Allow}, {ID: 9, Host: "bad host", Action: Allow}})
	if err == nil || !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), "rule 9") {
		t.Fatalf("got %v, want ErrInvalidRule naming rule 9", err)
	}
	_, err = Compile([]Rule{{Action: "maybe"}})
	if err == nil || !strings.Contains(err.Error(), "rule #1") {
		t.Fatalf("got %v, want an error naming rule #1", err)
	}
	// Decide skips invalid rules rather than failing.
	v := Decide([]Rule{{ID: 1, Host: "bad host", Action: Deny}}, fl("/x", "", "198.18.0.1:1"), Allow, t0)
	if v.RuleID != 0 {
		t.Errorf("Decide used an invalid rule: %+v", v)
	}
}

// randomRules builds rules from small pools so that many of them overlap.
func randomRules(rng *rand.Rand, n int) []Rule {
	apps := []string{"", "", "firefox", "curl", "/usr/bin/firefox", "/usr/bin/curl", "app42"}
	users := []string{"", "", "", "alice", "1000", "bob"}
	hosts := []string{"", "", "www.example.com", "*.example.com", "*.com", "example.com", "198.18.0.1",
		"198.18.0.0/24", "198.18.0.0/16", "2001:db8::/32", "2001:db8::1", "*.b.example.com", "cdn.net"}
	ports := []string{"", "", "443", "80", "1-1024", "400-500"}
	ifaces := []string{"", "", "", "eth0", "wlan0"}
	actions := []Action{Allow, Deny, Ask}
	rules := make([]Rule, n)
	for i := range rules {
		r := Rule{
			ID: int64(i + 1), App: apps[rng.IntN(len(apps))], User: users[rng.IntN(len(users))],
			Host: hosts[rng.IntN(len(hosts))], Port: ports[rng.IntN(len(ports))], Iface: ifaces[rng.IntN(len(ifaces))],
			Action: actions[rng.IntN(3)],
		}
		if rng.IntN(4) == 0 {
			r.Expires = t0.Add(time.Duration(rng.IntN(3)-1) * time.Hour)
		}
		if r.Action != Deny && rng.IntN(3) == 0 {
			r.Rate = 1000
		}
		rules[i] = r
	}
	return rules
}

func randomFlow(rng *rand.Rand) *flow.Flow {
	exes := []string{"", "/usr/bin/firefox", "/usr/bin/curl", "/opt/firefox", "/bin/app42"}
	hosts := []string{"", "www.example.com", "example.com", "a.b.example.com", "cdn.net", "x.org", "198.18.0.1"}
	dsts := []string{"198.18.0.1:443", "198.18.0.9:80", "198.18.5.1:8080", "[2001:db8::1]:443", "[::ffff:198.18.0.1]:443"}
	f := &flow.Flow{
		Exe: exes[rng.IntN(len(exes))], Host: hosts[rng.IntN(len(hosts))],
		Dst: netip.MustParseAddrPort(dsts[rng.IntN(len(dsts))]), Iface: []string{"eth0", "wlan0", ""}[rng.IntN(3)],
	}
	if f.Exe != "" {
		f.PID = 100
		f.UID, f.User = []int{1000, 1001}[rng.IntN(2)], []string{"alice", "bob"}[rng.IntN(2)]
	}
	return f
}

// eachRandomFlow calls fn for 300 random rule sets, compiled, and 20
// random flows each.
func eachRandomFlow(t *testing.T, seed uint64, fn func(round int, rules []Rule, s *Set, f *flow.Flow)) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for round := range 300 {
		rules := randomRules(rng, 1+rng.IntN(40))
		s, err := Compile(rules)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			fn(round, rules, s, randomFlow(rng))
		}
	}
}

func sameVerdict(a, b Verdict) bool {
	return a.Action == b.Action && a.RuleID == b.RuleID && slices.Equal(a.Limits, b.Limits)
}

// TestSetMatchesDecide checks the indexed Set against the plain scan on many
// random rule sets and flows: the indexes must never change a result.
func TestSetMatchesDecide(t *testing.T) {
	eachRandomFlow(t, 1, func(round int, rules []Rule, s *Set, f *flow.Flow) {
		if a, b := Decide(rules, f, Ask, t0), s.Decide(f, Ask, t0); !sameVerdict(a, b) {
			t.Fatalf("round %d, flow %+v:\nDecide %+v\nSet    %+v\nrules %+v", round, f, a, b, rules)
		}
	})
}

func TestHostMatters(t *testing.T) {
	s, err := Compile([]Rule{
		{ID: 1, App: "firefox", Host: "*.youtube.com", Action: Allow, Rate: 2e6},
		{ID: 2, Host: "*.example.test", Port: "443", Action: Deny},
		{ID: 3, User: "bob", Host: "bob.example", Action: Deny},
		{ID: 4, Iface: "wlan0", Host: "metered.example", Action: Deny},
		{ID: 5, App: "/opt/tool", Host: "tool.example", Action: Allow, Expires: t0.Add(-time.Hour)},
		{ID: 6, Host: "198.18.0.0/16", Action: Allow}, // an address rule: the name cannot change it
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		f     *flow.Flow
		iface string
		want  bool
	}{
		{"the app a name rule names", fl("/usr/bin/firefox", "", "198.18.0.1:443"), "eth0", true},
		{"the port a name rule names", fl("/usr/bin/curl", "", "198.18.0.1:443"), "eth0", true},
		{"another port, app and user", fl("/usr/bin/ssh", "", "198.18.0.1:22"), "eth0", false},
		{"the user a name rule names", &flow.Flow{Exe: "/usr/bin/ssh", PID: 7, UID: 1001, User: "bob", Dst: netip.MustParseAddrPort("198.18.0.1:22")}, "eth0", true},
		{"the interface a name rule names", fl("/usr/bin/ssh", "", "198.18.0.1:22"), "wlan0", true},
		{"an interface not known yet", fl("/usr/bin/ssh", "", "198.18.0.1:22"), "", true},
		{"an expired name rule's app", fl("/opt/tool", "", "198.18.0.1:22"), "eth0", false},
		{"an unidentified process", &flow.Flow{Dst: netip.MustParseAddrPort("198.18.0.1:22"), Iface: "eth0"}, "eth0", false},
	}
	for _, tc := range tests {
		tc.f.Iface = tc.iface
		if got := s.HostMatters(tc.f, t0); got != tc.want {
			t.Errorf("%s: HostMatters = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !s.NamesHosts() {
		t.Error("NamesHosts is false for a set with name rules")
	}
	none, _ := Compile([]Rule{{ID: 1, App: "curl", Action: Deny}, {ID: 2, Host: "10.0.0.0/8", Action: Ask}})
	if none.NamesHosts() || none.HostMatters(fl("/usr/bin/curl", "", "10.0.0.1:443"), t0) {
		t.Error("NamesHosts or HostMatters with no name rules")
	}
}

// When HostMatters says no, no host name the client could send changes the
// verdict, the deciding rule or the limits, whatever interface the flow
// turns out to use (random rule sets, as TestSetMatchesDecide).
func TestHostMattersNeverHidesAName(t *testing.T) {
	names := []string{"", "www.example.com", "example.com", "a.b.example.com", "cdn.net", "x.org", "b.example.com", "198.18.0.1"}
	var yes, no int
	eachRandomFlow(t, 5, func(round int, rules []Rule, s *Set, f *flow.Flow) {
		f.Host, f.Iface = "", ""
		if s.HostMatters(f, t0) {
			yes++
			return
		}
		no++
		for _, iface := range []string{"", "eth0", "wlan0"} {
			g := *f
			g.Iface = iface
			want := s.Decide(&g, Ask, t0)
			for _, h := range names {
				g.Host = h
				if got := s.Decide(&g, Ask, t0); !sameVerdict(got, want) {
					t.Fatalf("round %d: HostMatters said no, but host %q on %q gives %+v, without %+v\nflow %+v\nrules %+v",
						round, h, iface, got, want, g, rules)
				}
			}
		}
	})
	if yes < 100 || no < 100 {
		t.Errorf("HostMatters said yes %d and no %d times of %d: the random rules test too little", yes, no, yes+no)
	}
}

// mixedRules is a realistic mix of 1,000 rules: mostly per-app host rules
// from prompt answers; the blocklist-style wildcards (no app) name port.
func mixedRules(port string) []Rule {
	var rules []Rule
	for i := range 1000 {
		r := Rule{ID: int64(i + 1), Action: []Action{Allow, Deny, Ask}[i%3]}
		switch i % 10 {
		case 0:
			r.Host = fmt.Sprintf("198.18.%d.0/24", i%256)
		case 1:
			r.Host, r.Port = fmt.Sprintf("*.site%d.com", i), port
		case 2:
			r.App = fmt.Sprintf("app%d", i%50)
		case 3:
			r.Port = fmt.Sprint(1000 + i)
		default:
			r.App = fmt.Sprintf("/usr/bin/app%d", i%50)
			r.Host = fmt.Sprintf("host%d.example%d.com", i, i%20)
		}
		if r.Action != Deny && i%7 == 0 {
			r.Rate = 1e6
		}
		rules = append(rules, r)
	}
	return rules
}

func BenchmarkSetDecide1000(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	s, err := Compile(mixedRules(""))
	if err != nil {
		b.Fatal(err)
	}
	flows := make([]*flow.Flow, 64)
	for i := range flows {
		n := rng.IntN(1000)
		flows[i] = fl(fmt.Sprintf("/usr/bin/app%d", n%50), fmt.Sprintf("host%d.example%d.com", n, n%20),
			fmt.Sprintf("198.18.%d.%d:%d", n%256, n%200+1, 443))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Decide(flows[i%len(flows)], Ask, t0)
	}
}

// BenchmarkHostMatters1000 is the question every flow asks before it is
// decided when host-name rules exist, for a flow none of them can match (an
// app no rule names, to a port the wildcards do not): the slowest answer,
// after every rule naming a host without an app.
func BenchmarkHostMatters1000(b *testing.B) {
	s, err := Compile(mixedRules("443"))
	if err != nil {
		b.Fatal(err)
	}
	f := fl("/usr/bin/ssh", "", "198.18.0.1:22")
	if s.HostMatters(f, t0) {
		b.Fatal("a name rule matches the benchmark's flow")
	}
	b.ReportAllocs()
	for b.Loop() {
		s.HostMatters(f, t0)
	}
}

func BenchmarkDecideScan1000(b *testing.B) {
	rules := randomRules(rand.New(rand.NewPCG(5, 6)), 1000)
	f := fl("/usr/bin/firefox", "www.example.com", "198.18.0.1:443")
	for b.Loop() {
		Decide(rules, f, Ask, t0)
	}
}
