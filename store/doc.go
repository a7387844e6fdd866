// Package store is netshape's embedded SQLite database (pure Go, through
// modernc.org/sqlite): rules, closed flows, usage history and quota counters.
// The file lives in the state directory; it uses WAL mode and a busy
// timeout, so the CLI or any SQLite client can read it while the daemon
// writes.
//
// Every write that touches more than one row runs in one transaction, so a
// failure (a full disk, say) leaves nothing half written. Errors name the
// operation; a full disk wraps [ErrFull], an unknown rule [ErrNotFound].
//
// # Schema (version 1)
//
// All times are integers in UTC: unix seconds, except the flow times, which
// are unix milliseconds (columns ending in _ms). In sqlite3 try
// datetime(ts, 'unixepoch').
//
//	schema_version(version)            one row: the applied migration count
//
//	rules(id, app, user, host, port, iface, action,
//	      rate, rate_in, rate_out,     bytes per second, 0 = none
//	      quota, period, reset_day,    bytes (0 = none), none|day|week|month, day
//	      over,                        "cut" or "throttle:<bytes per second>"
//	      expires, note, created)      expires NULL = never
//
//	flows(id, flow_id, start_ms, end_ms, state, src, dst, pid, ppid, exe,
//	      cmdline, uid, user, cgroup, host, host_source, iface, verdict,
//	      rule_id, bytes_in, bytes_out, error)
//	                                   closed connections; bytes_in is server
//	                                   to client, bytes_out client to server
//
//	usage_minute(ts, app, host, iface, category, bytes_in, bytes_out)
//	usage_hour  (same columns)
//	usage_day   (same columns)
//	                                   ts is the start of the minute, hour or
//	                                   UTC day; one row per (ts, app, host,
//	                                   iface)
//
//	quota_state(rule_id, period_start, used, granted, updated)
//	                                   rule_id < 0 for rules of the config file
//
// [Store.AddUsage] adds each row to the minute, hour and day tables at once
// (write-through rollup), so the coarse tables are always complete;
// [Store.Rollup] applies the retention: it deletes old minute, hour and day
// rows, old flows and expired rules. [Store.Usage] reads each part of a time
// range from the coarsest table that covers it exactly, so old history keeps
// answering from the day table after the minute rows are gone.
//
// Example: bytes per app today.
//
//	SELECT app, sum(bytes_in + bytes_out) FROM usage_day
//	 WHERE ts = unixepoch('now', 'start of day') GROUP BY app ORDER BY 2 DESC;
package store
