package policy

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

func TestLoadExampleConfig(t *testing.T) {
	c, err := LoadConfig(filepath.Join("testdata", "example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultAction != Allow || c.PromptTimeout != 30*time.Second || c.TimeoutAction != Deny || !c.BlockQUIC {
		t.Errorf("settings: %+v", c)
	}
	wantBypass := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(c.Bypass, wantBypass) || !slices.Equal(c.Ifaces, []string{"eth0", "wlan0"}) {
		t.Errorf("bypass %v ifaces %v", c.Bypass, c.Ifaces)
	}
	if len(c.Rules) != 6 {
		t.Fatalf("got %d rules, want 6", len(c.Rules))
	}
	for i, r := range c.Rules {
		if r.ID != -int64(i+1) {
			t.Errorf("rule %d has id %d, want %d", i, r.ID, -(i + 1))
		}
	}
	yt := c.Rules[2]
	if yt.App != "/usr/lib/firefox/firefox" || yt.Host != "*.youtube.com" || yt.RateIn != 2e6 || yt.Action != Allow {
		t.Errorf("youtube rule: %+v", yt)
	}
	steam := c.Rules[3]
	if steam.Quota != 50e9 || steam.Period != PeriodMonth || steam.ResetDay != 1 || steam.Over.Throttle != 500e3 {
		t.Errorf("steam rule: %+v", steam)
	}
	if c.Rules[4].Port != "8000-8080" || c.Rules[5].Port != "25" || c.Rules[5].User != "guest" ||
		!c.Rules[5].Expires.Equal(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("rules 5, 6: %+v %+v", c.Rules[4], c.Rules[5])
	}
	// The file's rules compile and decide.
	s, err := Compile(c.Rules)
	if err != nil {
		t.Fatal(err)
	}
	f := &flow.Flow{PID: 1, Exe: "/usr/lib/firefox/firefox", Host: "www.youtube.com", Dst: netip.MustParseAddrPort("198.18.0.1:443")}
	if v := s.Decide(f, c.DefaultAction, t0); v.RuleID != -3 || v.Action != Allow || !slices.Equal(v.Limits, []int64{-3}) {
		t.Errorf("firefox to youtube: %+v", v)
	}
	// Categories: the file's plus the built-ins.
	for host, want := range map[string]string{
		"team.slack.com": "work", "github.com": "work", "api.github.com": "", "www.youtube.com": "video",
		"rr3.googlevideo.com": "video", "WWW.Reddit.com.": "social", "deb.debian.org": "updates", "": "",
		"example.org": "", "com": "",
	} {
		if got := c.Category(host); got != want {
			t.Errorf("Category(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.DefaultAction != Allow || c.PromptTimeout != DefaultPromptTimeout || c.TimeoutAction != Deny || len(c.Rules) != 0 {
		t.Errorf("%+v", c)
	}
	// The built-in categories are valid and disjoint.
	if _, err := buildCatIndex(DefaultCategories(), nil); err != nil {
		t.Fatal(err)
	}
	if got := c.Category("www.netflix.com"); got != "video" {
		t.Errorf("Category = %q", got)
	}
	// A Config built by hand still answers.
	hand := &Config{Categories: map[string][]string{"x": {"*.x.org"}}}
	if got := hand.Category("a.x.org"); got != "x" {
		t.Errorf("hand-built Category = %q", got)
	}
}

func TestCategoryPrecedence(t *testing.T) {
	c, err := ParseConfig([]byte(`[categories]
kids = ["*.youtube.com", "www.youtube.com"]
deep = ["*.music.youtube.com"]
`))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"www.youtube.com":     "kids", // exact, and moved from built-in video
		"m.youtube.com":       "kids",
		"x.music.youtube.com": "deep", // longer wildcard
		"googlevideo.com":     "video",
	} {
		if got := c.Category(host); got != want {
			t.Errorf("Category(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
		sentinel         error
	}{
		{"unknown top key", `default_acton = "deny"`, "default_acton", ErrInvalidConfig},
		{"unknown rule key", "[[rule]]\naction = \"allow\"\nhots = \"x.com\"", "rule.hots", ErrInvalidConfig},
		{"bad syntax", `default_action = `, "", ErrInvalidConfig},
		{"bad default action", `default_action = "drop"`, "default_action", ErrInvalidRule},
		{"ask on timeout", `timeout_action = "ask"`, "timeout_action", ErrInvalidConfig},
		{"bad timeout", `prompt_timeout = "forever"`, "prompt_timeout", ErrInvalidConfig},
		{"timeout too long", `prompt_timeout = "1h"`, "prompt_timeout", ErrInvalidConfig},
		{"bad bypass", `bypass = ["lan"]`, "bypass", ErrInvalidConfig},
		{"bad iface", `ifaces = [""]`, "ifaces", ErrInvalidConfig},
		{"rule without action", "[[rule]]\nhost = \"x.com\"", "[[rule]] #1: ", ErrInvalidRule},
		{"second rule bad host", "[[rule]]\naction = \"deny\"\n[[rule]]\naction = \"deny\"\nhost = \"x y\"", "[[rule]] #2", ErrInvalidRule},
		{"bad rate", "[[rule]]\naction = \"allow\"\nrate = \"fast\"", "rate", ErrInvalidRule},
		{"bad rate_out", "[[rule]]\naction = \"allow\"\nrate_out = \"-1\"", "rate_out", ErrInvalidRule},
		{"bad quota", "[[rule]]\naction = \"allow\"\nquota = \"lots\"", "quota", ErrInvalidRule},
		{"bad over", "[[rule]]\naction = \"allow\"\nquota = \"1GB\"\nover = \"stop\"", "over", ErrInvalidRule},
		{"bad port type", "[[rule]]\naction = \"allow\"\nport = 1.5", "port", ErrInvalidConfig},
		{"bad category pattern", "[categories]\nx = [\"10.0.0.0/8\"]", "category x", ErrInvalidConfig},
		{"pattern in two file categories", "[categories]\na = [\"*.x.com\"]\nb = [\"*.x.com\"]", "keep it in one", ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.text))
			if err == nil || !errors.Is(err, tt.sentinel) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %v containing %q", err, tt.sentinel, tt.want)
			}
		})
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
	p := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(p, []byte("x = 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("error should name the file: %v", err)
	}
}

// FuzzParseConfig: the policy file is user input; it must never panic, and
// whatever it accepts must compile.
func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "example.toml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("[[rule]]\nhost = \"*.a.b\"\nport = 80\naction = \"deny\"\n"))
	f.Add([]byte("[categories]\nx = [\"a.b\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		if _, err := Compile(c.Rules); err != nil {
			t.Fatalf("accepted rules do not compile: %v", err)
		}
		c.Category("www.example.com")
	})
}
