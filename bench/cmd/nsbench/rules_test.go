package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
)

// TestBenchPolicy: the netshape-r policy file loads as netshape loads it, holds
// every kind of rule, and lets the benchmark's flows through by the default
// action (no rule matches them), while flows of the apps, hosts and ports it
// names do match.
func TestBenchPolicy(t *testing.T) {
	const n = 1000
	cfg, err := policy.ParseConfig([]byte(benchPolicy(n)))
	if err != nil {
		t.Fatalf("policy file does not load: %v", err)
	}
	if len(cfg.Rules) != n {
		t.Fatalf("%d rules, want %d", len(cfg.Rules), n)
	}
	if cfg.DefaultAction != policy.Allow {
		t.Fatalf("default action %q, want allow", cfg.DefaultAction)
	}
	kinds := map[string]int{}
	limits := 0
	for _, r := range cfg.Rules {
		var k []string
		for _, f := range []struct{ name, v string }{{"app", r.App}, {"user", r.User}, {"host", r.Host}, {"port", r.Port}, {"iface", r.Iface}} {
			if f.v != "" {
				k = append(k, f.name)
			}
		}
		kinds[strings.Join(k, "+")+"/"+string(r.Action)]++
		if r.HasLimit() {
			limits++
		}
	}
	for _, want := range []string{"app/deny", "app/allow", "app/ask", "host/deny", "host/allow", "host/ask",
		"host+port/deny", "host+port/allow", "user+port/deny", "iface/allow", "port/ask", "app+host/allow"} {
		if kinds[want] == 0 {
			t.Errorf("no %s rule (kinds: %v)", want, kinds)
		}
	}
	if limits < n/10 {
		t.Errorf("%d rules with a rate or quota, want at least %d", limits, n/10)
	}

	set, err := policy.Compile(cfg.Rules)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		f        flow.Flow
		defaults bool // decided by the default action
	}{
		{"bench client", benchFlow("198.18.0.2", benchServerPort), true},
		{"bench client, other server", benchFlow("198.18.0.30", benchServerPort), true},
		{"bench client with a host name", func() flow.Flow {
			f := benchFlow("198.18.0.2", benchServerPort)
			f.Host, f.HostSource = "bench.example.net", flow.HostPTR
			return f
		}(), true},
		{"bench network, a port a rule names", benchFlow("198.18.0.2", 1+(7*37)%65535), false},
		{"another app", func() flow.Flow {
			f := benchFlow("198.18.0.2", benchServerPort)
			f.Exe = "/usr/bin/firefox-0"
			return f
		}(), false},
		{"another host", func() flow.Flow {
			f := benchFlow("198.18.0.2", benchServerPort)
			f.Host = "x.cdn3.example.org"
			return f
		}(), false},
		{"another network", benchFlow("10.5.0.9", 443), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := set.Decide(&tc.f, policy.Allow, now)
			if tc.defaults && (v.RuleID != 0 || v.Action != policy.Allow || len(v.Limits) != 0) {
				t.Errorf("verdict %+v, want the default allow with no rule and no limit", v)
			}
			if !tc.defaults && v.RuleID == 0 {
				t.Errorf("verdict %+v, want a rule to match", v)
			}
			// The one-shot scan agrees with the indexed set.
			if w := policy.Decide(cfg.Rules, &tc.f, policy.Allow, now); w.RuleID != v.RuleID || w.Action != v.Action {
				t.Errorf("Decide %+v, Set.Decide %+v", w, v)
			}
		})
	}
}

// benchFlow is a flow as netshape sees the benchmark's client: nsbench, root.
func benchFlow(dst string, port int) flow.Flow {
	return flow.Flow{
		Src:   netip.MustParseAddrPort("198.18.0.1:40000"),
		Dst:   netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(port)),
		PID:   4242,
		Exe:   "/work/netshape/bin/nsbench",
		UID:   0,
		User:  "root",
		Iface: "tb1a2b3cr0",
	}
}
