// Package policy holds netshape's rules and the decision made for each
// connection.
//
// A [Rule] matches a flow on any combination of app, user, host, port and
// interface (an empty field matches anything) and says allow, deny or ask. It
// may also carry rate limits and a byte quota, which the shaper applies to
// every flow the rule matches.
//
// [Decide] and [Set.Decide] are pure: no I/O, no clock, no logging. The proxy
// compiles the rules once with [Compile] and asks the [Set] per connection.
//
// # Precedence
//
// Among the rules that match a flow and have not expired, the most specific
// wins. Specificity is compared field by field, in this order, the first
// difference deciding:
//
//  1. the number of match fields set (app, user, host, port, iface): more wins;
//  2. the kind of host pattern: exact name > wildcard *.name > IP > CIDR > none;
//     between two wildcards the longer suffix wins, between two CIDRs the
//     narrower (longer prefix) wins;
//  3. the kind of app pattern: exe path > base name > none;
//  4. the port: a single port > a range > none; between two ranges the
//     narrower wins.
//
// At equal specificity deny beats ask beats allow, and then the oldest rule
// (lowest id) wins so that the result never depends on the order of the
// slice. When nothing matches, the default action applies (Verdict.RuleID 0).
//
// A host rule that is a name (exact or wildcard) matches Flow.Host; an IP or
// CIDR host rule matches the destination address Flow.Dst, so it works even
// when the host name is unknown. Names compare case-insensitively without a
// trailing dot. A wildcard *.example.com matches example.com itself and every
// name below it (a.example.com, a.b.example.com).
//
// A user rule that is a number matches Flow.UID; a name matches Flow.User.
// An app rule containing a "/" matches Flow.Exe exactly; otherwise it matches
// the base name of Flow.Exe ([flow.Flow.App]).
//
// # Limits
//
// Rate and quota fields are modifiers, not decisions: Verdict.Limits lists the
// ids of every matching, unexpired rule that carries a rate or a quota, most
// specific first, whatever rule decided the action. The shaper stacks them.
//
// # Rule ids
//
// Rules stored in the database have positive ids. Rules from the config file
// get negative ids by position (-1 for the first [[rule]]), so both sets can be
// compiled together and a verdict always names its rule; 0 means the default.
package policy
