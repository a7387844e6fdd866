// Package shaper limits and counts the bytes of proxied flows.
//
// Rate limits form a tree of token buckets, per direction: global ⊃ interface
// ⊃ app ⊃ host ⊃ flow, plus "total" buckets shared by both directions. A
// Limit selects the flows it applies to (Selector) and says whether all of
// them share one bucket or each interface, app, host or flow gets its own
// (Limit.Each). A chunk of a flow passes only when every bucket on its path
// grants it; buckets are golang.org/x/time/rate limiters whose burst and
// chunk size follow the rate (small chunks keep slow rates smooth, large
// chunks keep fast flows on splice).
//
// Quotas count bytes (in, out or total) of a selector per period (none, day,
// week, month with a reset day, in a time zone). When a quota runs out the
// flows in its scope are cut and new ones refused, or, with a throttle rate,
// slowed instead. Counters are saved and restored by the daemon
// (QuotaStates, Restore); events at 80% and 100% go to Options.OnEvent.
//
// The relay asks per chunk:
//
//	p, err := sh.Attach(f) // err wraps ErrRefused when a quota in scope is exhausted
//	defer p.Close()
//	n, err := p.Grant(ctx, shaper.In, 1<<20) // may wait
//	c, _ := io.CopyN(dst, src, int64(n))
//	if err := p.Done(shaper.In, int(c)); err != nil { /* quota exhausted: cut */ }
//
// Grant and Done cost a few atomic loads when nothing limits or counts the
// path, and take no lock and allocate nothing then. Rule changes (SetLimits,
// SetQuotas, quota state changes) bump a generation counter; paths re-resolve
// on their next call and flows waiting for tokens are woken at once.
package shaper
