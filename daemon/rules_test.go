package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/policy"
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
