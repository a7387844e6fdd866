package pfctl

import (
	"fmt"
	"strings"
)

// bypassTable is the anchor-private table of destinations never redirected.
const bypassTable = "netshape_bypass"

// renderRules returns the ruleset loaded into our anchor. cfg must have been
// through withDefaults. The order inside the text is the one pf.conf demands:
// tables, then translation (rdr), then filter rules.
//
// Translation rules are first-match: the two "no rdr" rules keep bypassed and
// local destinations (the machine's own addresses arrive on lo0 too) away from
// the catch-all rdr, which sends everything else that comes in on lo0 to the
// proxy. Only route-to puts non-local destinations on lo0, so "everything
// else" is exactly the redirected traffic.
//
// Filter rules all carry quick, so the first match ends evaluation:
//  1. pass out on lo0, stateless: packets leaving on lo0 (route-to'd SYNs
//     re-entering pf, the proxy's replies) never match the route-to rule again
//     and leave no floating state that would swallow them before rdr on lo0.
//  2. route-to lo0 for new outbound TCP (flags S/SA: replies of inbound
//     connections are not new) to anything outside the bypass table, unless
//     the socket's effective gid is the loop-guard group (the proxy's own
//     upstream dials).
//  3. block return out on each interface whose quota ran out (all protocols,
//     the proxy's upstream sockets too).
//  4. block return outbound UDP 443 (QUIC) when asked.
func renderRules(cfg Config, blockedIfaces []string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	w("# netshape anchor %q, generated; do not edit (netshape owns and flushes it).", cfg.Anchor)
	w("# Proxy %s:%d and [%s]:%d; loop guard: group %d.", cfg.ListenV4, cfg.ListenPort, cfg.ListenV6, cfg.ListenPort, cfg.LoopGID)
	bypass := make([]string, 0, len(cfg.Bypass))
	for _, p := range cfg.Bypass {
		if cfg.NoIPv6 && p.Addr().Is6() {
			continue
		}
		bypass = append(bypass, p.String())
	}
	w("table <%s> const { %s }", bypassTable, strings.Join(bypass, ", "))

	type fam struct {
		af, listen string
	}
	fams := []fam{{"inet", cfg.ListenV4.String()}}
	if !cfg.NoIPv6 {
		fams = append(fams, fam{"inet6", cfg.ListenV6.String()})
	}
	for _, f := range fams {
		w("no rdr on lo0 %s proto tcp from any to <%s>", f.af, bypassTable)
		w("no rdr on lo0 %s proto tcp from any to (self)", f.af)
		w("rdr pass on lo0 %s proto tcp from any to any -> %s port %d", f.af, f.listen, cfg.ListenPort)
	}

	w("pass out quick on lo0 all no state")
	for _, f := range fams {
		w("pass out quick route-to (lo0 %s) %s proto tcp from any to ! <%s> group != %d flags S/SA keep state",
			f.listen, f.af, bypassTable, cfg.LoopGID)
	}
	for _, ifc := range blockedIfaces {
		w("block return out quick on %s all", ifc)
	}
	if cfg.BlockQUIC {
		w("block return out quick proto udp from any to any port 443")
	}
	return b.String()
}
