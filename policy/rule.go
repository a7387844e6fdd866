package policy

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/netshape/netshape/units"
)

// ErrInvalidRule is wrapped by every validation and parse error of this package.
var ErrInvalidRule = errors.New("invalid rule")

// Action is what a rule says to do with a matching connection.
type Action string

// The actions. The zero Action is invalid in a rule.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
	Ask   Action = "ask"
)

// rank orders actions at equal specificity: deny > ask > allow.
func (a Action) rank() uint64 {
	switch a {
	case Deny:
		return 3
	case Ask:
		return 2
	case Allow:
		return 1
	}
	return 0
}

// ParseAction parses "allow", "deny" or "ask" (case-insensitive).
func ParseAction(s string) (Action, error) {
	a := Action(strings.ToLower(strings.TrimSpace(s)))
	if a.rank() == 0 {
		return "", fmt.Errorf("%w: action %q: use allow, deny or ask", ErrInvalidRule, s)
	}
	return a, nil
}

// Period is how often a quota starts again.
type Period string

// The periods. PeriodNone (or "") means the quota is a total that never resets.
const (
	PeriodNone  Period = "none"
	PeriodDay   Period = "day"
	PeriodWeek  Period = "week"
	PeriodMonth Period = "month"
)

// ParsePeriod parses "none", "day", "week" or "month"; "" is none.
func ParsePeriod(s string) (Period, error) {
	switch p := Period(strings.ToLower(strings.TrimSpace(s))); p {
	case "", PeriodNone:
		return PeriodNone, nil
	case PeriodDay, PeriodWeek, PeriodMonth:
		return p, nil
	}
	return "", fmt.Errorf("%w: quota period %q: use none, day, week or month", ErrInvalidRule, s)
}

// Over is what happens to a rule's flows once its quota is used up: they are
// cut (Throttle 0) or slowed to Throttle bytes per second.
type Over struct {
	Throttle float64
}

// String is "cut" or "throttle:RATE" (RATE in bytes per second), the form
// ParseOver reads and the store keeps.
func (o Over) String() string {
	if o.Throttle <= 0 {
		return "cut"
	}
	return "throttle:" + strconv.FormatFloat(o.Throttle, 'f', -1, 64)
}

// ParseOver parses "cut" (or "") and "throttle:RATE", RATE as units.ParseRate
// reads it ("throttle:64KB/s").
func ParseOver(s string) (Over, error) {
	t := strings.TrimSpace(s)
	if t == "" || strings.EqualFold(t, "cut") {
		return Over{}, nil
	}
	name, rate, ok := strings.Cut(t, ":")
	if !ok || !strings.EqualFold(strings.TrimSpace(name), "throttle") {
		return Over{}, fmt.Errorf("%w: over %q: use cut or throttle:RATE, e.g. throttle:64KB/s", ErrInvalidRule, s)
	}
	r, err := units.ParseRate(rate)
	if err != nil {
		return Over{}, fmt.Errorf("%w: over %q: %w", ErrInvalidRule, s, err)
	}
	return Over{Throttle: r}, nil
}

// Rule is one line of policy. Empty match fields match anything; a rule with
// no match field at all matches every flow.
type Rule struct {
	// ID is the store's id (> 0), or a config rule's position (< 0); 0 until stored.
	ID int64 `json:"id"`

	App   string `json:"app,omitempty"`   // exe path (contains "/") or base name
	User  string `json:"user,omitempty"`  // user name or numeric uid
	Host  string `json:"host,omitempty"`  // name, *.name, IP or CIDR (see ParseHost)
	Port  string `json:"port,omitempty"`  // "443" or "8000-8080"
	Iface string `json:"iface,omitempty"` // interface name, e.g. "wlan0"

	Action Action `json:"action"`

	// Rates in bytes per second, 0 for none. Rate applies to each direction;
	// RateIn (server to client) and RateOut override it. See Rates.
	Rate    float64 `json:"rate,omitempty"`
	RateIn  float64 `json:"rate_in,omitempty"`
	RateOut float64 `json:"rate_out,omitempty"`

	// Quota is a byte budget (both directions together), 0 for none. It starts
	// again each Period; ResetDay picks the day: 1-28 for a month (0 = 1), 1-7
	// for a week with 1 = Monday (0 = Monday). Over says what happens when
	// the budget is spent.
	Quota    int64  `json:"quota,omitempty"`
	Period   Period `json:"period,omitempty"`
	ResetDay int    `json:"reset_day,omitempty"`
	Over     Over   `json:"over,omitzero"`

	// Expires, when set, is when the rule stops applying.
	Expires time.Time `json:"expires,omitzero"`
	Note    string    `json:"note,omitempty"`
	Created time.Time `json:"created,omitzero"`
}

// HasLimit reports whether the rule carries a rate or a quota.
func (r *Rule) HasLimit() bool {
	return r.Rate > 0 || r.RateIn > 0 || r.RateOut > 0 || r.Quota > 0
}

// Rates is the limit in each direction in bytes per second (0: none): RateIn
// or RateOut when set, else Rate.
func (r *Rule) Rates() (in, out float64) {
	in, out = r.Rate, r.Rate
	if r.RateIn > 0 {
		in = r.RateIn
	}
	if r.RateOut > 0 {
		out = r.RateOut
	}
	return in, out
}

// Expired reports whether the rule has an expiry time and now is at or after it.
func (r *Rule) Expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// PeriodStart is the start of the quota period that contains t, in t's
// location: midnight for a day, the reset weekday's midnight for a week, the
// reset day of the month's midnight for a month. For PeriodNone it is the
// zero time (the quota never resets).
func (r *Rule) PeriodStart(t time.Time) time.Time {
	y, m, d := t.Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, t.Location())
	switch r.Period {
	case PeriodDay:
		return day
	case PeriodWeek:
		want := r.ResetDay % 7 // 1..6 = Mon..Sat, 0 (or 7) = Sunday
		if r.ResetDay == 0 {
			want = 1
		}
		back := (int(t.Weekday()) - want + 7) % 7
		return day.AddDate(0, 0, -back)
	case PeriodMonth:
		rd := max(r.ResetDay, 1)
		start := time.Date(y, m, rd, 0, 0, 0, 0, t.Location())
		if start.After(t) {
			start = start.AddDate(0, -1, 0)
		}
		return start
	}
	return time.Time{}
}

// Normalize checks every field and returns the rule in canonical form: host
// lowercased without a trailing dot, CIDRs masked, port ranges as "lo-hi",
// the action lowercased, an empty period made PeriodNone when a quota is set.
// Its errors wrap ErrInvalidRule and name the field.
func (r Rule) Normalize() (Rule, error) {
	var err error
	r.App = strings.TrimSpace(r.App)
	if strings.ContainsAny(r.App, "\x00\n") {
		return r, fmt.Errorf("%w: app %q contains a control character", ErrInvalidRule, r.App)
	}
	if strings.Contains(r.App, "/") && !strings.HasPrefix(r.App, "/") {
		return r, fmt.Errorf("%w: app %q: give an absolute exe path or a bare program name", ErrInvalidRule, r.App)
	}
	if r.User, err = normUser(r.User); err != nil {
		return r, err
	}
	if r.Host != "" {
		h, err := ParseHost(r.Host)
		if err != nil {
			return r, err
		}
		r.Host = h.String()
	}
	if r.Port != "" {
		p, err := ParsePort(r.Port)
		if err != nil {
			return r, err
		}
		r.Port = p.String()
	}
	r.Iface = strings.TrimSpace(r.Iface)
	if len(r.Iface) > 64 || strings.ContainsAny(r.Iface, " /\x00\n") {
		return r, fmt.Errorf("%w: iface %q is not an interface name", ErrInvalidRule, r.Iface)
	}
	if r.Action, err = ParseAction(string(r.Action)); err != nil {
		return r, err
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"rate", r.Rate}, {"rate_in", r.RateIn}, {"rate_out", r.RateOut}, {"over throttle", r.Over.Throttle}} {
		if f.v < 0 || f.v > units.MaxBytes || math.IsNaN(f.v) || (f.v > 0 && f.v < 1) {
			return r, fmt.Errorf("%w: %s %v B/s: must be between 1 B/s and 1 PB/s, or 0 for none", ErrInvalidRule, f.name, f.v)
		}
	}
	if r.Quota < 0 || r.Quota > units.MaxBytes {
		return r, fmt.Errorf("%w: quota %d bytes: must be between 1 B and 1 PB, or 0 for none", ErrInvalidRule, r.Quota)
	}
	if r.Period, err = ParsePeriod(string(r.Period)); err != nil {
		return r, err
	}
	if r.Quota == 0 && (r.Period != PeriodNone || r.ResetDay != 0 || r.Over.Throttle != 0) {
		return r, fmt.Errorf("%w: period, reset_day and over need a quota", ErrInvalidRule)
	}
	switch {
	case r.Period == PeriodMonth && (r.ResetDay < 0 || r.ResetDay > 28):
		return r, fmt.Errorf("%w: reset_day %d: a monthly quota resets on day 1-28", ErrInvalidRule, r.ResetDay)
	case r.Period == PeriodWeek && (r.ResetDay < 0 || r.ResetDay > 7):
		return r, fmt.Errorf("%w: reset_day %d: a weekly quota resets on day 1-7 (1 = Monday)", ErrInvalidRule, r.ResetDay)
	case (r.Period == PeriodDay || r.Period == PeriodNone) && r.ResetDay != 0:
		return r, fmt.Errorf("%w: reset_day %d: only week and month quotas have a reset day", ErrInvalidRule, r.ResetDay)
	}
	if r.Action == Deny && r.HasLimit() {
		return r, fmt.Errorf("%w: a deny rule cannot carry a rate or quota (nothing flows to limit)", ErrInvalidRule)
	}
	if len(r.Note) > 1024 {
		return r, fmt.Errorf("%w: note is %d bytes, at most 1024", ErrInvalidRule, len(r.Note))
	}
	return r, nil
}

// Validate reports the first invalid field, wrapping ErrInvalidRule.
func (r Rule) Validate() error {
	_, err := r.Normalize()
	return err
}

func normUser(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if isDigits(s) {
		uid, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return "", fmt.Errorf("%w: user %q: uid out of range", ErrInvalidRule, s)
		}
		return strconv.FormatUint(uid, 10), nil
	}
	if len(s) > 256 || strings.ContainsAny(s, " :/\x00\n") {
		return "", fmt.Errorf("%w: user %q is not a user name or uid", ErrInvalidRule, s)
	}
	return s, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// PortRange is an inclusive range of TCP ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// String is "443" or "8000-8080".
func (p PortRange) String() string {
	if p.Lo == p.Hi {
		return strconv.Itoa(int(p.Lo))
	}
	return strconv.Itoa(int(p.Lo)) + "-" + strconv.Itoa(int(p.Hi))
}

// ParsePort parses "443" or "8000-8080" (1-65535, lo <= hi).
func ParsePort(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		hi = lo
	}
	l, err1 := parsePortNum(lo)
	h, err2 := parsePortNum(hi)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%w: port %q: use a port 1-65535 or a range like 8000-8080", ErrInvalidRule, s)
	}
	if l > h {
		return PortRange{}, fmt.Errorf("%w: port range %q: the first port must not be above the second", ErrInvalidRule, s)
	}
	return PortRange{l, h}, nil
}

func parsePortNum(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if !isDigits(s) {
		return 0, ErrInvalidRule
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, ErrInvalidRule
	}
	return uint16(n), nil
}

// HostKind says what a host pattern is.
type HostKind uint8

// Host pattern kinds, in increasing order of specificity.
const (
	HostAny      HostKind = iota // empty pattern
	HostCIDR                     // 10.0.0.0/8, fd00::/8
	HostIP                       // 192.0.2.1, 2001:db8::1
	HostWildcard                 // *.example.com
	HostName                     // www.example.com
)

// Host is a parsed host pattern.
type Host struct {
	Kind HostKind
	// Name is the lowercased name for HostName, the suffix without "*." for
	// HostWildcard.
	Name string
	// Prefix is the address (as a full-length prefix) for HostIP, the masked
	// prefix for HostCIDR. IPv4-mapped IPv6 forms are unmapped.
	Prefix netip.Prefix
}

// String is the canonical pattern text.
func (h Host) String() string {
	switch h.Kind {
	case HostName:
		return h.Name
	case HostWildcard:
		return "*." + h.Name
	case HostIP:
		return h.Prefix.Addr().String()
	case HostCIDR:
		return h.Prefix.String()
	}
	return ""
}

// ParseHost parses a host pattern: a DNS name ("www.example.com"), a wildcard
// ("*.example.com": the name and everything below it), an IP address or a
// CIDR ("10.0.0.0/8"; host bits are masked off).
func ParseHost(s string) (Host, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Host{}, nil
	}
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return Host{}, fmt.Errorf("%w: host %q is not a valid CIDR (e.g. 10.0.0.0/8): %w", ErrInvalidRule, s, err)
		}
		if p.Addr().Zone() != "" {
			return Host{}, fmt.Errorf("%w: host %q: zones are not supported", ErrInvalidRule, s)
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return Host{}, fmt.Errorf("%w: host %q: an IPv4-mapped CIDR needs at least /96", ErrInvalidRule, s)
			}
			a, bits = a.Unmap(), bits-96
		}
		p = netip.PrefixFrom(a, bits).Masked()
		if p.IsSingleIP() {
			return Host{Kind: HostIP, Prefix: p}, nil
		}
		return Host{Kind: HostCIDR, Prefix: p}, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(t, "[]")); err == nil {
		if a.Zone() != "" {
			return Host{}, fmt.Errorf("%w: host %q: zones are not supported", ErrInvalidRule, s)
		}
		a = a.Unmap()
		return Host{Kind: HostIP, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	kind := HostName
	name := strings.TrimSuffix(strings.ToLower(t), ".")
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		kind, name = HostWildcard, rest
	}
	if err := checkName(name); err != nil {
		return Host{}, fmt.Errorf("%w: host %q: %w", ErrInvalidRule, s, err)
	}
	return Host{Kind: kind, Name: name}, nil
}

// checkName accepts DNS names leniently (underscores are common in the wild)
// but rejects what can never be a host: empty labels, spaces, stray '*'.
func checkName(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("a host name must be 1-253 characters; use *.example.com, a name, an IP or a CIDR")
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or overlong label; use *.example.com, a name, an IP or a CIDR")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed (a wildcard is only allowed as a leading \"*.\")", c)
			}
		}
	}
	return nil
}

// normName lowercases a flow's host name and drops a trailing dot, without
// allocating when it is already canonical.
func normName(s string) string {
	s = strings.TrimSuffix(s, ".")
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// ParseExpires reads an expiry for the CLI: a duration from now ("1h",
// "30m", "7d" for days) or an RFC 3339 time. "" means never (zero time).
func ParseExpires(s string, now time.Time) (time.Time, error) {
	t := strings.TrimSpace(s)
	if t == "" || t == "never" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(t, "d"); ok && isDigits(days) {
		n, err := strconv.Atoi(days)
		if err == nil && n > 0 && n <= 3650 {
			return now.AddDate(0, 0, n), nil
		}
	}
	if d, err := time.ParseDuration(t); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%w: expiry %q must be in the future", ErrInvalidRule, s)
		}
		return now.Add(d), nil
	}
	if at, err := time.Parse(time.RFC3339, t); err == nil {
		return at, nil
	}
	return time.Time{}, fmt.Errorf("%w: expiry %q: use a duration (30m, 2h, 7d) or an RFC 3339 time", ErrInvalidRule, s)
}

// ParseRate and ParseSize wrap the units parsers so CLI errors also match ErrInvalidRule.

// ParseRate parses a rate such as "2MB/s" into bytes per second.
func ParseRate(s string) (float64, error) {
	v, err := units.ParseRate(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidRule, err)
	}
	return v, nil
}

// ParseSize parses a size such as "10GB" into bytes.
func ParseSize(s string) (int64, error) {
	v, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidRule, err)
	}
	return v, nil
}
