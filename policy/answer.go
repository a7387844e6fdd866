package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/netshape/netshape/flow"
)

// Scope is how far a prompt answer reaches when it becomes a rule.
type Scope string

// The scopes. Each keeps the app (exe path) of the flow.
const (
	ScopeHost   Scope = "host"   // this app to this host name (or IP when the name is unknown)
	ScopeDomain Scope = "domain" // this app to the host's registrable domain and everything below it
	ScopeApp    Scope = "app"    // this app to anywhere
)

// ParseScope parses "host", "domain" or "app".
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(strings.ToLower(strings.TrimSpace(s))); sc {
	case ScopeHost, ScopeDomain, ScopeApp:
		return sc, nil
	}
	return "", fmt.Errorf("%w: scope %q: use host, domain or app", ErrInvalidRule, s)
}

// RuleFromAnswer widens a prompt answer about f into a rule: the app by exe
// path (base name when only that is known), plus the host, the domain or
// nothing, per scope. ttl > 0 makes the rule expire ttl after now. The rule
// has no id; store it to get one. It fails (ErrInvalidRule) when the app is
// unknown, since a rule without it would match far more than the user saw.
func RuleFromAnswer(f *flow.Flow, scope Scope, action Action, now time.Time, ttl time.Duration) (Rule, error) {
	if f.Exe == "" {
		return Rule{}, fmt.Errorf("%w: the flow's program is unknown, so an answer cannot become a rule; answer once instead", ErrInvalidRule)
	}
	r := Rule{App: f.Exe, Action: action, Created: now}
	if ttl > 0 {
		r.Expires = now.Add(ttl)
	}
	host := normName(f.Host)
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		host = "" // an IP literal as the host name: use the address
	}
	switch scope {
	case ScopeHost, ScopeDomain:
		switch {
		case host != "" && scope == ScopeDomain:
			r.Host = "*." + RegistrableDomain(host)
		case host != "":
			r.Host = host
		case f.Dst.Addr().IsValid():
			r.Host = f.Dst.Addr().Unmap().String()
		default:
			return Rule{}, fmt.Errorf("%w: the flow has neither a host name nor an address", ErrInvalidRule)
		}
		r.Note = fmt.Sprintf("prompt answer: %s %s %s", action, f.App(), r.Host)
	case ScopeApp:
		r.Note = fmt.Sprintf("prompt answer: %s %s to any host", action, f.App())
	default:
		return Rule{}, fmt.Errorf("%w: scope %q: use host, domain or app", ErrInvalidRule, scope)
	}
	return r.Normalize()
}

// isTwoLevel reports whether s is a public suffix with two labels under
// which names are registered (example.co.uk). A short, common list, not the
// Public Suffix List: for anything else the last two labels are the domain.
func isTwoLevel(s string) bool {
	switch s {
	case "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "com.au", "net.au", "org.au",
		"edu.au", "gov.au", "co.nz", "org.nz", "net.nz", "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp",
		"co.kr", "or.kr", "com.br", "net.br", "org.br", "com.cn", "net.cn", "org.cn", "com.hk", "com.tw",
		"com.sg", "com.my", "co.in", "net.in", "org.in", "co.za", "com.mx", "com.ar", "com.tr", "co.il",
		"com.ua", "co.id", "com.vn", "com.ph", "com.pk":
		return true
	}
	return false
}

// RegistrableDomain is the registrable-ish parent of a name: the last two
// labels, or the last three when the last two are a known two-level suffix
// such as co.uk. A name with no more labels than that is returned as is.
func RegistrableDomain(host string) string {
	h := normName(host)
	labels := strings.Split(h, ".")
	n := 2
	if len(labels) >= 3 && isTwoLevel(strings.Join(labels[len(labels)-2:], ".")) {
		n = 3
	}
	if len(labels) <= n {
		return h
	}
	return strings.Join(labels[len(labels)-n:], ".")
}
