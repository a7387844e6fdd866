package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      Rule
		want    Rule   // checked when wantErr is ""
		wantErr string // substring of the error
	}{
		{"minimal", Rule{Action: "ALLOW"}, Rule{Action: Allow, Period: PeriodNone}, ""},
		{"canonical host and port", Rule{Host: " WWW.Example.com. ", Port: " 8000-8080 ", Action: Deny, User: "007"},
			Rule{Host: "www.example.com", Port: "8000-8080", Action: Deny, User: "7", Period: PeriodNone}, ""},
		{"CIDR masked", Rule{Host: "10.1.2.3/8", Action: Allow}, Rule{Host: "10.0.0.0/8", Action: Allow, Period: PeriodNone}, ""},
		{"single-IP CIDR is an IP", Rule{Host: "10.1.2.3/32", Action: Allow}, Rule{Host: "10.1.2.3", Action: Allow, Period: PeriodNone}, ""},
		{"mapped IP unmapped", Rule{Host: "::ffff:10.1.2.3", Action: Allow}, Rule{Host: "10.1.2.3", Action: Allow, Period: PeriodNone}, ""},
		{"mapped CIDR unmapped", Rule{Host: "::ffff:10.0.0.0/104", Action: Allow}, Rule{Host: "10.0.0.0/8", Action: Allow, Period: PeriodNone}, ""},
		{"bracketed IPv6", Rule{Host: "[2001:db8::1]", Action: Allow}, Rule{Host: "2001:db8::1", Action: Allow, Period: PeriodNone}, ""},
		{"quota month", Rule{Action: Allow, Quota: 10, Period: "Month", ResetDay: 28, Over: Over{Throttle: 1000}},
			Rule{Action: Allow, Quota: 10, Period: PeriodMonth, ResetDay: 28, Over: Over{Throttle: 1000}}, ""},

		{"no action", Rule{}, Rule{}, "action"},
		{"bad action", Rule{Action: "block"}, Rule{}, "action \"block\""},
		{"bad host space", Rule{Host: "a b.com", Action: Allow}, Rule{}, "host"},
		{"bad host star inside", Rule{Host: "a.*.com", Action: Allow}, Rule{}, "host"},
		{"bad host empty label", Rule{Host: "a..com", Action: Allow}, Rule{}, "label"},
		{"bad CIDR", Rule{Host: "10.0.0.0/33", Action: Allow}, Rule{}, "CIDR"},
		{"zone", Rule{Host: "fe80::1%eth0", Action: Allow}, Rule{}, "zone"},
		{"bad port 0", Rule{Port: "0", Action: Allow}, Rule{}, "port"},
		{"bad port big", Rule{Port: "65536", Action: Allow}, Rule{}, "port"},
		{"bad port text", Rule{Port: "https", Action: Allow}, Rule{}, "port"},
		{"bad port range order", Rule{Port: "90-80", Action: Allow}, Rule{}, "first port"},
		{"bad port sign", Rule{Port: "+80", Action: Allow}, Rule{}, "port"},
		{"bad user", Rule{User: "a b", Action: Allow}, Rule{}, "user"},
		{"bad uid", Rule{User: "99999999999", Action: Allow}, Rule{}, "uid"},
		{"bad iface", Rule{Iface: "eth 0", Action: Allow}, Rule{}, "iface"},
		{"bad app", Rule{App: "a\x00b", Action: Allow}, Rule{}, "app"},
		{"relative app path", Rule{App: "bin/curl", Action: Allow}, Rule{}, "absolute"},
		{"negative rate", Rule{Rate: -1, Action: Allow}, Rule{}, "rate"},
		{"tiny rate_in", Rule{RateIn: 0.5, Action: Allow}, Rule{}, "rate_in"},
		{"huge rate_out", Rule{RateOut: 2e15, Action: Allow}, Rule{}, "rate_out"},
		{"negative quota", Rule{Quota: -1, Action: Allow}, Rule{}, "quota"},
		{"period without quota", Rule{Period: PeriodDay, Action: Allow}, Rule{}, "need a quota"},
		{"over without quota", Rule{Over: Over{Throttle: 100}, Action: Allow}, Rule{}, "need a quota"},
		{"bad period", Rule{Quota: 1, Period: "year", Action: Allow}, Rule{}, "period"},
		{"month reset day 29", Rule{Quota: 1, Period: PeriodMonth, ResetDay: 29, Action: Allow}, Rule{}, "day 1-28"},
		{"week reset day 8", Rule{Quota: 1, Period: PeriodWeek, ResetDay: 8, Action: Allow}, Rule{}, "1-7"},
		{"day reset day", Rule{Quota: 1, Period: PeriodDay, ResetDay: 2, Action: Allow}, Rule{}, "reset day"},
		{"deny with rate", Rule{Rate: 100, Action: Deny}, Rule{}, "deny rule cannot"},
		{"long note", Rule{Note: strings.Repeat("x", 1025), Action: Allow}, Rule{}, "note"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Normalize()
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidRule) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want ErrInvalidRule containing %q", err, tt.wantErr)
				}
				if tt.in.Validate() == nil {
					t.Fatal("Validate accepted what Normalize rejected")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			// Normalizing is idempotent.
			if again, err := got.Normalize(); err != nil || again != got {
				t.Errorf("second Normalize: %+v, %v", again, err)
			}
		})
	}
}

func TestParseHelpers(t *testing.T) {
	if a, err := ParseAction(" Deny "); err != nil || a != Deny {
		t.Errorf("ParseAction: %v %v", a, err)
	}
	if _, err := ParseAction("drop"); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("ParseAction(drop): %v", err)
	}
	hosts := map[string]Host{
		"":                {},
		"*.Example.com":   {Kind: HostWildcard, Name: "example.com"},
		"example.com.":    {Kind: HostName, Name: "example.com"},
		"198.18.0.1":      {Kind: HostIP, Prefix: netip.MustParsePrefix("198.18.0.1/32")},
		"198.18.0.77/24":  {Kind: HostCIDR, Prefix: netip.MustParsePrefix("198.18.0.0/24")},
		"fd00:5e7::/64":   {Kind: HostCIDR, Prefix: netip.MustParsePrefix("fd00:5e7::/64")},
		"_srv.example.io": {Kind: HostName, Name: "_srv.example.io"},
	}
	for in, want := range hosts {
		if got, err := ParseHost(in); err != nil || got != want {
			t.Errorf("ParseHost(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"*", "*.", "a.*", "**.a", "a b", "/8", "1.2.3.4/", strings.Repeat("a", 64) + ".com"} {
		if _, err := ParseHost(bad); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("ParseHost(%q) accepted", bad)
		}
	}
	if p, err := ParsePort("443"); err != nil || p != (PortRange{443, 443}) || p.String() != "443" {
		t.Errorf("ParsePort(443) = %v %v", p, err)
	}
	if p, err := ParsePort("1-65535"); err != nil || p != (PortRange{1, 65535}) || p.String() != "1-65535" {
		t.Errorf("ParsePort(1-65535) = %v %v", p, err)
	}
	for _, bad := range []string{"", "-", "1-", "-5", "1-2-3", "a", "70000"} {
		if _, err := ParsePort(bad); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
	overs := map[string]Over{"": {}, "cut": {}, "CUT": {}, "throttle:64KB/s": {Throttle: 64000}, "throttle: 1MB/s": {Throttle: 1e6}}
	for in, want := range overs {
		if got, err := ParseOver(in); err != nil || got != want {
			t.Errorf("ParseOver(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"slow", "throttle", "throttle:", "throttle:fast", "cut:1"} {
		if _, err := ParseOver(bad); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("ParseOver(%q) accepted", bad)
		}
	}
	if r, err := ParseRate("2MB/s"); err != nil || r != 2e6 {
		t.Errorf("ParseRate: %v %v", r, err)
	}
	if _, err := ParseRate("fast"); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("ParseRate(fast): %v", err)
	}
	if n, err := ParseSize("10GB"); err != nil || n != 1e10 {
		t.Errorf("ParseSize: %v %v", n, err)
	}
	if _, err := ParseSize("-1"); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("ParseSize(-1): %v", err)
	}
	if p, err := ParsePeriod(""); err != nil || p != PeriodNone {
		t.Errorf("ParsePeriod(\"\") = %v %v", p, err)
	}
}

func TestOverStringRoundTrip(t *testing.T) {
	for _, o := range []Over{{}, {Throttle: 1}, {Throttle: 64000}, {Throttle: 1.5e6}} {
		got, err := ParseOver(o.String())
		if err != nil || got != o {
			t.Errorf("ParseOver(%q) = %v, %v; want %v", o.String(), got, err, o)
		}
	}
}

func TestParseExpires(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"never", time.Time{}, false},
		{"30m", t0.Add(30 * time.Minute), false},
		{"7d", t0.AddDate(0, 0, 7), false},
		{"2030-01-02T03:04:05Z", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), false},
		{"-5m", time.Time{}, true},
		{"0s", time.Time{}, true},
		{"tomorrow", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseExpires(tt.in, t0)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("ParseExpires(%q) = %v, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRule) {
			t.Errorf("ParseExpires(%q): error does not wrap ErrInvalidRule", tt.in)
		}
	}
}

func TestRates(t *testing.T) {
	r := Rule{Rate: 100, RateIn: 50}
	if in, out := r.Rates(); in != 50 || out != 100 {
		t.Errorf("Rates = %v, %v; want 50, 100", in, out)
	}
	if !r.HasLimit() || (&Rule{}).HasLimit() {
		t.Error("HasLimit wrong")
	}
}

func TestPeriodStart(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	at := time.Date(2025, 3, 12, 15, 30, 0, 0, loc) // a Wednesday
	tests := []struct {
		r    Rule
		want time.Time
	}{
		{Rule{Period: PeriodNone}, time.Time{}},
		{Rule{Period: PeriodDay}, time.Date(2025, 3, 12, 0, 0, 0, 0, loc)},
		{Rule{Period: PeriodWeek}, time.Date(2025, 3, 10, 0, 0, 0, 0, loc)},              // Monday
		{Rule{Period: PeriodWeek, ResetDay: 3}, time.Date(2025, 3, 12, 0, 0, 0, 0, loc)}, // Wednesday itself
		{Rule{Period: PeriodWeek, ResetDay: 4}, time.Date(2025, 3, 6, 0, 0, 0, 0, loc)},  // last Thursday
		{Rule{Period: PeriodWeek, ResetDay: 7}, time.Date(2025, 3, 9, 0, 0, 0, 0, loc)},  // Sunday
		{Rule{Period: PeriodMonth}, time.Date(2025, 3, 1, 0, 0, 0, 0, loc)},
		{Rule{Period: PeriodMonth, ResetDay: 12}, time.Date(2025, 3, 12, 0, 0, 0, 0, loc)},
		{Rule{Period: PeriodMonth, ResetDay: 15}, time.Date(2025, 2, 15, 0, 0, 0, 0, loc)},
	}
	for _, tt := range tests {
		if got := tt.r.PeriodStart(at); !got.Equal(tt.want) {
			t.Errorf("%s/%d: PeriodStart = %v, want %v", tt.r.Period, tt.r.ResetDay, got, tt.want)
		}
	}
	// January with reset day 15 on Jan 3 goes back into December of the year before.
	r := Rule{Period: PeriodMonth, ResetDay: 15}
	if got := r.PeriodStart(time.Date(2025, 1, 3, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2024, 12, 15, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("January: %v", got)
	}
}

// FuzzParseHost feeds arbitrary text (rules come from files and the control
// socket) and checks that a parsed pattern's canonical text parses back to
// the same pattern.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"example.com", "*.Example.COM.", "10.0.0.0/8", "::ffff:1.2.3.4/120", "[::1]", "a..b", "*", "fe80::1%lo"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHost(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRule) {
				t.Fatalf("error does not wrap ErrInvalidRule: %v", err)
			}
			return
		}
		again, err := ParseHost(h.String())
		if err != nil || again != h {
			t.Fatalf("ParseHost(%q) = %+v; its String %q parses to %+v, %v", s, h, h.String(), again, err)
		}
	})
}
