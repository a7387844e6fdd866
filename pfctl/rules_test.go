package pfctl

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./pfctl -run %s -update to create it)", err, t.Name())
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestRulesGolden(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		blocked []string
	}{
		{"darwin_defaults", Config{OS: "darwin", LoopGID: 399}, nil},
		{"darwin_bypass", Config{OS: "darwin", LoopGID: 399, Bypass: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/24"),
			netip.MustParsePrefix("fd00:5e7::/64"), netip.MustParsePrefix("::ffff:172.16.0.0/108"),
			netip.MustParsePrefix("127.0.0.0/8"), // already there: not repeated
		}}, nil},
		{"darwin_ipv4_only", Config{OS: "darwin", LoopGID: 399, NoIPv6: true, ListenPort: 9999}, nil},
		{"darwin_quic_iface_block", Config{OS: "darwin", LoopGID: 399, BlockQUIC: true}, []string{"en0", "utun4"}},
		{"freebsd_defaults", Config{OS: "freebsd", LoopGID: 1001, BlockQUIC: true}, []string{"vtnet0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			blocked, err := cleanIfaces(tt.blocked)
			if err != nil {
				t.Fatal(err)
			}
			got := renderRules(cfg, blocked)
			golden(t, tt.name+".rules.golden", []byte(got))
			checkRuleInvariants(t, got, cfg)
		})
	}
}

// checkRuleInvariants states, independently of the golden text, the
// properties the ruleset must have (DESIGN.md "pf facts").
func checkRuleInvariants(t *testing.T, rules string, cfg Config) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(rules), "\n")
	phase := 0 // 0 tables, 1 translation, 2 filter: pf.conf's required order
	for _, l := range lines {
		if strings.HasPrefix(l, "#") {
			continue
		}
		p := 0
		switch {
		case strings.HasPrefix(l, "table "):
			p = 0
		case strings.HasPrefix(l, "rdr ") || strings.HasPrefix(l, "no rdr "):
			p = 1
			if !strings.Contains(l, " on lo0 ") {
				t.Errorf("translation rule not limited to lo0: %q", l)
			}
		case strings.HasPrefix(l, "pass ") || strings.HasPrefix(l, "block "):
			p = 2
			if !strings.Contains(l, " quick ") {
				t.Errorf("filter rule without quick: %q", l)
			}
		default:
			t.Errorf("unexpected line %q", l)
		}
		if p < phase {
			t.Errorf("line %q is out of pf.conf order", l)
		}
		phase = p
		if strings.Contains(l, "route-to") {
			if !strings.Contains(l, "group != ") || !strings.Contains(l, "flags S/SA") || !strings.Contains(l, "! <"+bypassTable+">") {
				t.Errorf("route-to rule lacks the loop guard, flags S/SA or the bypass: %q", l)
			}
		}
	}
	if got := strings.Count(rules, "route-to"); got != map[bool]int{true: 1, false: 2}[cfg.NoIPv6] {
		t.Errorf("%d route-to rules", got)
	}
	if !strings.Contains(rules, "pass out quick on lo0 all no state\npass out quick route-to") {
		t.Error("the lo0 no-state pass must come right before the route-to rules")
	}
	for _, must := range []string{"127.0.0.0/8", "rdr pass on lo0 inet proto tcp from any to any -> 127.0.0.1 port"} {
		if !strings.Contains(rules, must) {
			t.Errorf("rules lack %q", must)
		}
	}
}
