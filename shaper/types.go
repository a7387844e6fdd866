package shaper

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/units"
)

// Errors returned by the shaper; test them with errors.Is.
var (
	// ErrQuotaExceeded is wrapped when a quota in the flow's scope is used up.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrRefused is wrapped by Attach when a new flow may not start.
	ErrRefused = errors.New("flow refused")
	// ErrInvalid is wrapped by every validation error of a Limit or Quota.
	ErrInvalid = errors.New("invalid shaping rule")
	// ErrUnknownQuota is returned by Grant for an ID no quota has.
	ErrUnknownQuota = errors.New("unknown quota")
)

// Dir is a direction of traffic. In is from the server to the client
// (download), Out from the client to the server (upload). Total counts both
// and is only meaningful for quotas and AddIfaceBytes callers never pass it.
type Dir int

const (
	In Dir = iota
	Out
	Total
)

func (d Dir) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	case Total:
		return "total"
	}
	return fmt.Sprintf("Dir(%d)", int(d))
}

// Scope is a level of the bucket tree, from widest to narrowest.
type Scope int

const (
	Global Scope = iota
	Iface
	App
	Host
	Flow
)

func (s Scope) String() string {
	switch s {
	case Global:
		return "global"
	case Iface:
		return "iface"
	case App:
		return "app"
	case Host:
		return "host"
	case Flow:
		return "flow"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Selector picks flows. Empty fields match everything, so the zero Selector
// matches every flow. App matches the flow's App() (base name) or its full
// Exe path. Host matches the flow's Host or destination IP: exactly
// (case-insensitive), or "*.example.com" for example.com and every name under
// it, unless Options.MatchHost decides instead.
type Selector struct {
	App   string `json:"app,omitempty"`
	Host  string `json:"host,omitempty"`
	Iface string `json:"iface,omitempty"`
}

// Scope is the narrowest level the selector names.
func (s Selector) Scope() Scope {
	switch {
	case s.Host != "":
		return Host
	case s.App != "":
		return App
	case s.Iface != "":
		return Iface
	}
	return Global
}

func (s Selector) String() string {
	var parts []string
	if s.Iface != "" {
		parts = append(parts, "iface="+s.Iface)
	}
	if s.App != "" {
		parts = append(parts, "app="+s.App)
	}
	if s.Host != "" {
		parts = append(parts, "host="+s.Host)
	}
	if len(parts) == 0 {
		return "global"
	}
	return strings.Join(parts, ",")
}

func (s Selector) validate() error {
	if h := s.Host; h != "" {
		rest, wild := strings.CutPrefix(h, "*.")
		if rest == "" || strings.Contains(rest, "*") {
			return fmt.Errorf("%w: host pattern %q: use an exact name, an IP or *.example.com", ErrInvalid, h)
		}
		if !wild && strings.Contains(h, "*") {
			return fmt.Errorf("%w: host pattern %q: a wildcard is only allowed as a leading \"*.\"", ErrInvalid, h)
		}
	}
	return nil
}

// matchHostPattern is the default host matcher: exact, or "*.example.com"
// matching example.com and every name below it. Comparison ignores case and a
// trailing dot.
func matchHostPattern(pattern string, f *flow.Flow) bool {
	name := strings.TrimSuffix(f.Host, ".")
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		rest = strings.TrimSuffix(rest, ".")
		if name == "" {
			return false
		}
		if strings.EqualFold(name, rest) {
			return true
		}
		return len(name) > len(rest)+1 && name[len(name)-len(rest)-1] == '.' &&
			strings.EqualFold(name[len(name)-len(rest):], rest)
	}
	p := strings.TrimSuffix(pattern, ".")
	if name != "" && strings.EqualFold(name, p) {
		return true
	}
	return f.Dst.IsValid() && f.Dst.Addr().Unmap().String() == p
}

// Limit is a rate limit in bytes per second; 0 means no limit in that
// direction. Total limits both directions together.
type Limit struct {
	ID  int64    `json:"id"`
	Sel Selector `json:"sel"`
	// Each splits the limit: Global (the zero value) means all matching flows
	// share one bucket; Iface, App, Host or Flow give each interface, app,
	// host or flow its own bucket at the full rate.
	Each  Scope   `json:"each,omitempty"`
	In    float64 `json:"in,omitempty"`
	Out   float64 `json:"out,omitempty"`
	Total float64 `json:"total,omitempty"`
}

// Scope is the level of the tree the limit's buckets sit at.
func (l Limit) Scope() Scope { return max(l.Sel.Scope(), l.Each) }

func validRate(what string, r float64) error {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return fmt.Errorf("%w: %s rate %v is not a number", ErrInvalid, what, r)
	case r < 0:
		return fmt.Errorf("%w: %s rate %v B/s is negative; use 0 for no limit", ErrInvalid, what, r)
	case r > 0 && r < 1:
		return fmt.Errorf("%w: %s rate %v B/s is below 1 B/s; use 0 for no limit or block the flow", ErrInvalid, what, r)
	case r > units.MaxBytes:
		return fmt.Errorf("%w: %s rate %v B/s is above 1 PB/s", ErrInvalid, what, r)
	}
	return nil
}

// Validate reports what is wrong with the limit, if anything.
func (l Limit) Validate() error {
	if err := l.Sel.validate(); err != nil {
		return fmt.Errorf("limit %d: %w", l.ID, err)
	}
	if l.Each < Global || l.Each > Flow {
		return fmt.Errorf("%w: limit %d: Each %d is not a scope", ErrInvalid, l.ID, l.Each)
	}
	for _, r := range []struct {
		what string
		v    float64
	}{{"in", l.In}, {"out", l.Out}, {"total", l.Total}} {
		if err := validRate(r.what, r.v); err != nil {
			return fmt.Errorf("limit %d: %w", l.ID, err)
		}
	}
	return nil
}

// Period is how often a quota starts again from zero.
type Period int

const (
	None  Period = iota // never resets
	Day                 // at local midnight
	Week                // at midnight starting ResetDay (0 Sunday … 6 Saturday)
	Month               // at midnight of ResetDay (1…31; the last day in shorter months)
)

func (p Period) String() string {
	switch p {
	case None:
		return "none"
	case Day:
		return "day"
	case Week:
		return "week"
	case Month:
		return "month"
	}
	return fmt.Sprintf("Period(%d)", int(p))
}

// Quota is a byte budget for the flows its selector picks.
type Quota struct {
	ID    int64    `json:"id"`
	Sel   Selector `json:"sel"`
	Limit int64    `json:"limit"` // bytes per period
	Dir   Dir      `json:"dir"`
	// Period, ResetDay and Loc say when the count starts again. Loc nil means
	// Options.Loc (the user's time zone).
	Period   Period         `json:"period"`
	ResetDay int            `json:"reset_day,omitempty"`
	Loc      *time.Location `json:"-"`
	// ThrottleRate, when not 0, slows the flows in scope to this many bytes
	// per second once the quota is used up, instead of cutting them.
	ThrottleRate float64 `json:"throttle_rate,omitempty"`
}

// Scope is the level of the quota's selector.
func (q Quota) Scope() Scope { return q.Sel.Scope() }

// Validate reports what is wrong with the quota, if anything.
func (q Quota) Validate() error {
	if err := q.Sel.validate(); err != nil {
		return fmt.Errorf("quota %d: %w", q.ID, err)
	}
	if q.Limit < 1 || q.Limit > units.MaxBytes {
		return fmt.Errorf("%w: quota %d: limit %d bytes must be between 1 B and 1 PB", ErrInvalid, q.ID, q.Limit)
	}
	if q.Dir < In || q.Dir > Total {
		return fmt.Errorf("%w: quota %d: direction %d must be in, out or total", ErrInvalid, q.ID, q.Dir)
	}
	switch q.Period {
	case None, Day:
		if q.ResetDay != 0 {
			return fmt.Errorf("%w: quota %d: a %s period takes no reset day (got %d)", ErrInvalid, q.ID, q.Period, q.ResetDay)
		}
	case Week:
		if q.ResetDay < 0 || q.ResetDay > 6 {
			return fmt.Errorf("%w: quota %d: weekly reset day %d must be 0 (Sunday) to 6 (Saturday)", ErrInvalid, q.ID, q.ResetDay)
		}
	case Month:
		if q.ResetDay < 0 || q.ResetDay > 31 {
			return fmt.Errorf("%w: quota %d: monthly reset day %d must be 1 to 31 (0 means 1)", ErrInvalid, q.ID, q.ResetDay)
		}
	default:
		return fmt.Errorf("%w: quota %d: period %d must be none, day, week or month", ErrInvalid, q.ID, q.Period)
	}
	if q.ThrottleRate != 0 {
		if err := validRate("throttle", q.ThrottleRate); err != nil {
			return fmt.Errorf("quota %d: %w", q.ID, err)
		}
	}
	return nil
}
