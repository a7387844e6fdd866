package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netshape/netshape/flow"
)

// Verdict is the decision for one flow.
type Verdict struct {
	Action Action `json:"action"`
	// RuleID is the rule that decided, 0 when the default action applied.
	RuleID int64 `json:"rule_id"`
	// Limits are the ids of every matching unexpired rule with a rate or a
	// quota, most specific first. Nil when there are none.
	Limits []int64 `json:"limits,omitempty"`
}

// compiled is a Rule ready to match: patterns parsed, the specificity packed
// into one number so that comparing two matches is one integer compare.
type compiled struct {
	id      int64
	action  Action
	spec    uint64 // specificity and action rank; higher wins
	expires int64  // unix nanoseconds, 0 for never
	limit   bool

	app       string
	appIsPath bool
	user      string
	uid       int
	userIsUID bool
	host      Host
	port      PortRange
	hasPort   bool
	iface     string
}

// Specificity layout, most significant first:
//
//	bits 60-62 fields set (0-5)
//	bits 57-59 host kind
//	bits 49-56 host detail: wildcard suffix length (capped at 255) or CIDR prefix bits
//	bits 47-48 app kind (2 path, 1 name)
//	bits 46    port set
//	bits 29-45 port narrowness: 65536 - range width (a single port gives 65535)
//	bits 2-28  unused
//	bits 0-1   action rank (deny 3, ask 2, allow 1)
func specificity(c *compiled) uint64 {
	var fields, appKind, portBit, narrow, detail uint64
	if c.app != "" {
		fields++
		appKind = 1
		if c.appIsPath {
			appKind = 2
		}
	}
	if c.user != "" {
		fields++
	}
	if c.host.Kind != HostAny {
		fields++
		switch c.host.Kind {
		case HostWildcard:
			detail = uint64(min(len(c.host.Name), 255))
		case HostCIDR:
			detail = uint64(c.host.Prefix.Bits())
		}
	}
	if c.hasPort {
		fields++
		portBit = 1
		narrow = 65536 - (uint64(c.port.Hi) - uint64(c.port.Lo) + 1)
	}
	if c.iface != "" {
		fields++
	}
	return fields<<60 | uint64(c.host.Kind)<<57 | detail<<49 | appKind<<47 | portBit<<46 | narrow<<29 | c.action.rank()
}

// compile validates r and builds its matcher.
func compile(r Rule) (compiled, error) {
	n, err := r.Normalize()
	if err != nil {
		if r.ID != 0 {
			return compiled{}, fmt.Errorf("rule %d: %w", r.ID, err)
		}
		return compiled{}, err
	}
	c := compiled{
		id:        n.ID,
		action:    n.Action,
		limit:     n.HasLimit(),
		app:       n.App,
		appIsPath: strings.Contains(n.App, "/"),
		user:      n.User,
		iface:     n.Iface,
	}
	if !n.Expires.IsZero() {
		c.expires = n.Expires.UnixNano()
	}
	if isDigits(n.User) {
		c.userIsUID = true
		c.uid, _ = strconv.Atoi(n.User) // Normalize checked the range
	}
	c.host, _ = ParseHost(n.Host) // Normalize checked it
	if n.Port != "" {
		c.port, _ = ParsePort(n.Port)
		c.hasPort = true
	}
	c.spec = specificity(&c)
	return c, nil
}

// query is the part of a flow the matchers read, normalized once per decision.
type query struct {
	f    *flow.Flow
	app  string // base name of Exe
	host string // lowercased, no trailing dot; "" when unknown or an IP literal
	dst  netip.Addr
	now  int64
}

func newQuery(f *flow.Flow, now time.Time) query {
	q := query{f: f, app: f.App(), dst: f.Dst.Addr().Unmap(), now: now.UnixNano()}
	if f.Host != "" {
		if _, err := netip.ParseAddr(strings.Trim(f.Host, "[]")); err != nil {
			q.host = normName(f.Host)
		}
	}
	return q
}

func (c *compiled) matches(q *query) bool {
	return c.matchesBesidesHost(q, false) && c.matchesHost(q)
}

// matchesBesidesHost checks every field but the host. With anyIface a rule
// naming an interface matches a flow whose interface is not known yet.
func (c *compiled) matchesBesidesHost(q *query, anyIface bool) bool {
	if c.expires != 0 && q.now >= c.expires {
		return false
	}
	if c.app != "" {
		if c.appIsPath {
			if q.f.Exe != c.app {
				return false
			}
		} else if q.f.Exe == "" || q.app != c.app {
			return false
		}
	}
	if c.user != "" {
		if c.userIsUID {
			if q.f.UID != c.uid || (q.f.PID == 0 && q.f.User == "") {
				return false // uid 0 of an unknown process is not root
			}
		} else if q.f.User != c.user {
			return false
		}
	}
	if c.hasPort {
		p := q.f.Dst.Port()
		if p < c.port.Lo || p > c.port.Hi {
			return false
		}
	}
	if c.iface != "" && q.f.Iface != c.iface && (!anyIface || q.f.Iface != "") {
		return false
	}
	return true
}

func (c *compiled) matchesHost(q *query) bool {
	switch c.host.Kind {
	case HostName:
		return q.host == c.host.Name
	case HostWildcard:
		return underDomain(q.host, c.host.Name)
	case HostIP, HostCIDR:
		return q.dst.IsValid() && c.host.Prefix.Contains(q.dst)
	}
	return true
}

// underDomain reports whether name is domain or a name below it.
func underDomain(name, domain string) bool {
	if len(name) == len(domain) {
		return name == domain
	}
	return len(name) > len(domain) && name[len(name)-len(domain)-1] == '.' && name[len(name)-len(domain):] == domain
}

// better reports whether a beats b: higher specificity, then lower id.
func better(a, b *compiled) bool {
	if a.spec != b.spec {
		return a.spec > b.spec
	}
	return a.id < b.id
}

// Set is a compiled, immutable rule set. It is safe for concurrent use.
type Set struct {
	rules []compiled // sorted best first, so the first match decides

	// Indexes of rules by their most selective field; every rule is in
	// exactly one of them. Values are positions in rules, ascending.
	byName     map[string][]int32 // exact host name
	byWildcard map[string][]int32 // wildcard suffix
	byIP       map[netip.Addr][]int32
	byExe      map[string][]int32       // exe path
	byApp      map[string][]int32       // exe base name
	byCIDR     map[netip.Prefix][]int32 // CIDR, by its masked prefix
	cidrBits   []cidrLen                // the prefix lengths byCIDR holds, to look each up once
	byPort     map[uint16][]int32       // one destination port (and no host or app)
	byIface    map[string][]int32       // interface (and no host, app or single port)
	rest       []int32                  // everything else (user, port range, match-all)
	hasLimits  bool

	// The rules naming a host by name or wildcard again, by their app, for
	// HostMatters.
	namedByExe map[string][]int32
	namedByApp map[string][]int32
	namedAny   []int32
}

// cidrLen is a prefix length of one address family.
type cidrLen struct {
	is4  bool
	bits int
}

// Compile validates and compiles rules. It fails on the first invalid rule,
// naming it; the error wraps ErrInvalidRule.
func Compile(rules []Rule) (*Set, error) {
	s := &Set{
		byName:     map[string][]int32{},
		byWildcard: map[string][]int32{},
		byIP:       map[netip.Addr][]int32{},
		byExe:      map[string][]int32{},
		byApp:      map[string][]int32{},
		byCIDR:     map[netip.Prefix][]int32{},
		byPort:     map[uint16][]int32{},
		byIface:    map[string][]int32{},
		namedByExe: map[string][]int32{},
		namedByApp: map[string][]int32{},
	}
	s.rules = make([]compiled, 0, len(rules))
	for i, r := range rules {
		c, err := compile(r)
		if err != nil {
			if r.ID == 0 {
				return nil, fmt.Errorf("rule #%d: %w", i+1, err)
			}
			return nil, err
		}
		s.rules = append(s.rules, c)
		s.hasLimits = s.hasLimits || c.limit
	}
	slices.SortStableFunc(s.rules, func(a, b compiled) int {
		switch {
		case better(&a, &b):
			return -1
		case better(&b, &a):
			return 1
		}
		return 0
	})
	for i := range s.rules {
		c := &s.rules[i]
		pos := int32(i)
		switch {
		case c.host.Kind == HostName:
			s.byName[c.host.Name] = append(s.byName[c.host.Name], pos)
			s.indexNamed(c, pos)
		case c.host.Kind == HostWildcard:
			s.byWildcard[c.host.Name] = append(s.byWildcard[c.host.Name], pos)
			s.indexNamed(c, pos)
		case c.host.Kind == HostIP:
			a := c.host.Prefix.Addr()
			s.byIP[a] = append(s.byIP[a], pos)
		case c.app != "" && c.appIsPath:
			s.byExe[c.app] = append(s.byExe[c.app], pos)
		case c.app != "":
			s.byApp[c.app] = append(s.byApp[c.app], pos)
		case c.host.Kind == HostCIDR:
			p := c.host.Prefix.Masked()
			if _, ok := s.byCIDR[p]; !ok {
				if l := (cidrLen{p.Addr().Is4(), p.Bits()}); !slices.Contains(s.cidrBits, l) {
					s.cidrBits = append(s.cidrBits, l)
				}
			}
			s.byCIDR[p] = append(s.byCIDR[p], pos)
		case c.hasPort && c.port.Lo == c.port.Hi:
			s.byPort[c.port.Lo] = append(s.byPort[c.port.Lo], pos)
		case c.iface != "":
			s.byIface[c.iface] = append(s.byIface[c.iface], pos)
		default:
			s.rest = append(s.rest, pos)
		}
	}
	return s, nil
}

func (s *Set) indexNamed(c *compiled, pos int32) {
	switch {
	case c.app != "" && c.appIsPath:
		s.namedByExe[c.app] = append(s.namedByExe[c.app], pos)
	case c.app != "":
		s.namedByApp[c.app] = append(s.namedByApp[c.app], pos)
	default:
		s.namedAny = append(s.namedAny, pos)
	}
}

// NamesHosts reports whether some rule names a host by name or wildcard (so
// a flow's host name may matter; see HostMatters).
func (s *Set) NamesHosts() bool {
	return len(s.namedAny) > 0 || len(s.namedByExe) > 0 || len(s.namedByApp) > 0
}

// HostMatters reports whether f's host name can change its verdict or its
// limits at time now: whether some unexpired rule that names a host (an
// exact name or a wildcard) matches f on every other field. A rule naming
// an interface counts when f's interface is not known yet. When it reports
// false, waiting for the name the client sends (TLS SNI, HTTP Host) cannot
// change the decision.
func (s *Set) HostMatters(f *flow.Flow, now time.Time) bool {
	if !s.NamesHosts() {
		return false
	}
	q := query{f: f, app: f.App(), now: now.UnixNano()} // what matchesBesidesHost reads
	some := func(list []int32) bool {
		for _, p := range list {
			if s.rules[p].matchesBesidesHost(&q, true) {
				return true
			}
		}
		return false
	}
	if f.Exe != "" && (some(s.namedByExe[f.Exe]) || some(s.namedByApp[q.app])) {
		return true
	}
	return some(s.namedAny)
}

// Len is the number of rules in the set.
func (s *Set) Len() int { return len(s.rules) }

// Decide returns the verdict for f at time now: the action of the most
// specific matching unexpired rule (see the package documentation), or def
// when none matches. It does no I/O and does not modify f.
func (s *Set) Decide(f *flow.Flow, def Action, now time.Time) Verdict {
	q := newQuery(f, now)
	// Gather candidate positions from the indexes; because positions are in
	// best-first order, the smallest matching position decides.
	best := int32(-1)
	var limits []int32
	consider := func(list []int32) {
		for _, p := range list {
			c := &s.rules[p]
			if best >= 0 && p > best {
				if !s.hasLimits {
					return // lists are ascending: nothing later can win
				}
				if !c.limit {
					continue // cannot win, adds no limit
				}
			}
			if !c.matches(&q) {
				continue
			}
			if best < 0 || p < best {
				best = p
			}
			if c.limit {
				limits = append(limits, p)
			}
		}
	}
	if q.host != "" {
		consider(s.byName[q.host])
		for suffix := q.host; ; {
			consider(s.byWildcard[suffix])
			i := strings.IndexByte(suffix, '.')
			if i < 0 {
				break
			}
			suffix = suffix[i+1:]
		}
	}
	if q.dst.IsValid() && len(s.byIP) > 0 {
		consider(s.byIP[q.dst])
	}
	if f.Exe != "" {
		consider(s.byExe[f.Exe])
		consider(s.byApp[q.app])
	}
	if q.dst.IsValid() {
		for _, l := range s.cidrBits {
			if l.is4 == q.dst.Is4() {
				p, _ := q.dst.Prefix(l.bits)
				consider(s.byCIDR[p])
			}
		}
	}
	if len(s.byPort) > 0 {
		consider(s.byPort[f.Dst.Port()])
	}
	if len(s.byIface) > 0 && f.Iface != "" {
		consider(s.byIface[f.Iface])
	}
	consider(s.rest)

	if best < 0 {
		return Verdict{Action: def, Limits: s.limitIDs(limits)}
	}
	c := &s.rules[best]
	return Verdict{Action: c.action, RuleID: c.id, Limits: s.limitIDs(limits)}
}

func (s *Set) limitIDs(pos []int32) []int64 {
	if len(pos) == 0 {
		return nil
	}
	slices.Sort(pos)
	ids := make([]int64, len(pos))
	for i, p := range pos {
		ids[i] = s.rules[p].id
	}
	return ids
}

// Decide is the one-shot form of Compile + Set.Decide for callers with few
// rules. Invalid rules are skipped (Compile reports them).
func Decide(rules []Rule, f *flow.Flow, def Action, now time.Time) Verdict {
	q := newQuery(f, now)
	var best *compiled
	var limits []*compiled
	for _, r := range rules {
		c, err := compile(r)
		if err != nil || !c.matches(&q) {
			continue
		}
		if best == nil || better(&c, best) {
			best = &c
		}
		if c.limit {
			limits = append(limits, &c)
		}
	}
	v := Verdict{Action: def}
	if best != nil {
		v.Action, v.RuleID = best.action, best.id
	}
	if len(limits) > 0 {
		slices.SortStableFunc(limits, func(a, b *compiled) int {
			switch {
			case better(a, b):
				return -1
			case better(b, a):
				return 1
			}
			return 0
		})
		for _, c := range limits {
			v.Limits = append(v.Limits, c.id)
		}
	}
	return v
}
