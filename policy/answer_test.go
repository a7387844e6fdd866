package policy

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

func TestRegistrableDomain(t *testing.T) {
	for in, want := range map[string]string{
		"www.example.com":     "example.com",
		"a.b.c.example.com.":  "example.com",
		"example.com":         "example.com",
		"com":                 "com",
		"news.bbc.co.uk":      "bbc.co.uk",
		"bbc.co.uk":           "bbc.co.uk",
		"co.uk":               "co.uk",
		"WWW.Shop.COM.AU":     "shop.com.au",
		"x.y.example.net.au":  "example.net.au",
		"foo.bar.example.org": "example.org",
	} {
		if got := RegistrableDomain(in); got != want {
			t.Errorf("RegistrableDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRuleFromAnswer(t *testing.T) {
	now := t0
	named := &flow.Flow{PID: 9, Exe: "/usr/bin/curl", Host: "api.Example.co.uk", Dst: netip.MustParseAddrPort("198.18.0.3:443")}
	bare := &flow.Flow{PID: 9, Exe: "/usr/bin/curl", Dst: netip.MustParseAddrPort("[::ffff:198.18.0.3]:443")}
	literal := &flow.Flow{PID: 9, Exe: "/usr/bin/curl", Host: "198.18.0.3", Dst: netip.MustParseAddrPort("198.18.0.3:80")}
	tests := []struct {
		name     string
		f        *flow.Flow
		scope    Scope
		wantHost string
	}{
		{"host", named, ScopeHost, "api.example.co.uk"},
		{"domain", named, ScopeDomain, "*.example.co.uk"},
		{"app", named, ScopeApp, ""},
		{"host unknown: IP", bare, ScopeHost, "198.18.0.3"},
		{"domain of unknown host: IP", bare, ScopeDomain, "198.18.0.3"},
		{"IP literal host", literal, ScopeDomain, "198.18.0.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := RuleFromAnswer(tt.f, tt.scope, Deny, now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if r.App != "/usr/bin/curl" || r.Host != tt.wantHost || r.Action != Deny || !r.Created.Equal(now) ||
				!r.Expires.Equal(now.Add(time.Hour)) || r.Note == "" {
				t.Errorf("got %+v", r)
			}
			// The rule matches the flow it came from.
			if v := Decide([]Rule{r}, tt.f, Allow, now); v.Action != Deny {
				t.Errorf("the rule does not match its own flow: %+v", v)
			}
		})
	}
	// The domain scope reaches siblings, the host scope does not.
	sib := &flow.Flow{PID: 9, Exe: "/usr/bin/curl", Host: "cdn.example.co.uk", Dst: netip.MustParseAddrPort("198.18.0.4:443")}
	d, _ := RuleFromAnswer(named, ScopeDomain, Allow, now, 0)
	h, _ := RuleFromAnswer(named, ScopeHost, Allow, now, 0)
	if Decide([]Rule{d}, sib, Deny, now).Action != Allow || Decide([]Rule{h}, sib, Deny, now).Action != Deny {
		t.Error("domain scope should reach cdn.example.co.uk and host scope should not")
	}
	if !d.Expires.IsZero() {
		t.Error("ttl 0 should make a permanent rule")
	}

	if _, err := RuleFromAnswer(&flow.Flow{Host: "x.com"}, ScopeApp, Allow, now, 0); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("unknown exe: %v", err)
	}
	if _, err := RuleFromAnswer(named, "planet", Allow, now, 0); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("bad scope: %v", err)
	}
	if _, err := RuleFromAnswer(named, ScopeHost, "maybe", now, 0); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("bad action: %v", err)
	}
	if _, err := RuleFromAnswer(&flow.Flow{Exe: "/x"}, ScopeHost, Allow, now, 0); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("no host nor address: %v", err)
	}
	if s, err := ParseScope("Domain"); err != nil || s != ScopeDomain {
		t.Errorf("ParseScope: %v %v", s, err)
	}
	if _, err := ParseScope("world"); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("ParseScope(world): %v", err)
	}
}
