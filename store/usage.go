package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// UsageRow is the traffic of one app to one host over one interface during
// one minute.
type UsageRow struct {
	Minute   time.Time // any time within the minute; truncated (UTC)
	App      string
	Host     string
	Iface    string
	Category string // "" when unknown; a later non-empty value wins
	BytesIn  int64  // server to client
	BytesOut int64  // client to server
}

// AddUsage adds rows to their minute, hour and day buckets in one
// transaction. Adding the same row twice counts its bytes twice.
func (s *Store) AddUsage(rows []UsageRow) error {
	if len(rows) == 0 {
		return nil
	}
	for i, r := range rows {
		if r.BytesIn < 0 || r.BytesOut < 0 {
			return fmt.Errorf("store: add usage row #%d: negative byte count (%d in, %d out)", i+1, r.BytesIn, r.BytesOut)
		}
		if r.Minute.IsZero() {
			return fmt.Errorf("store: add usage row #%d: no time", i+1)
		}
	}
	ctx := context.Background()
	return s.tx(ctx, fmt.Sprintf("add %d usage rows", len(rows)), func(tx *sql.Tx) error {
		for _, t := range tables() {
			st, err := tx.PrepareContext(ctx, `INSERT INTO `+t.name+` (ts, app, host, iface, category, bytes_in, bytes_out)
				VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (ts, app, host, iface) DO UPDATE SET
					bytes_in = bytes_in + excluded.bytes_in,
					bytes_out = bytes_out + excluded.bytes_out,
					category = CASE WHEN excluded.category <> '' THEN excluded.category ELSE category END`)
			if err != nil {
				return err
			}
			for _, r := range rows {
				ts := floor(r.Minute.Unix(), t.step)
				if _, err := st.ExecContext(ctx, ts, r.App, r.Host, r.Iface, r.Category, r.BytesIn, r.BytesOut); err != nil {
					st.Close()
					return err
				}
			}
			st.Close()
		}
		return nil
	})
}

type table struct {
	name string
	step int64 // bucket width in seconds
}

func tables() [3]table {
	return [3]table{{"usage_minute", 60}, {"usage_hour", 3600}, {"usage_day", 86400}}
}

func floor(ts, step int64) int64 {
	r := ts % step
	if r < 0 {
		r += step
	}
	return ts - r
}

func ceil(ts, step int64) int64 {
	f := floor(ts, step)
	if f == ts {
		return ts
	}
	return f + step
}

// Retention says how long each kind of history is kept; 0 keeps it forever.
type Retention struct {
	Minute time.Duration // usage_minute rows
	Hour   time.Duration // usage_hour rows
	Day    time.Duration // usage_day rows
	Flows  time.Duration // closed flows, by end time
}

// DefaultRetention keeps two days of minutes, 90 days of hours, five years
// of days and a week of flows.
func DefaultRetention() Retention {
	return Retention{Minute: 48 * time.Hour, Hour: 90 * 24 * time.Hour, Day: 5 * 365 * 24 * time.Hour, Flows: 7 * 24 * time.Hour}
}

// Rollup is the periodic maintenance (call it every few minutes): it
// applies ret to the usage tables and flows and deletes expired rules. The
// hour and day tables need no copying: AddUsage writes through to them.
// Everything happens in one transaction.
func (s *Store) Rollup(now time.Time, ret Retention) error {
	ctx := context.Background()
	return s.tx(ctx, "roll up usage", func(tx *sql.Tx) error {
		t := tables()
		for _, d := range []struct {
			table string
			keep  time.Duration
		}{{t[0].name, ret.Minute}, {t[1].name, ret.Hour}, {t[2].name, ret.Day}} {
			if d.keep <= 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+d.table+` WHERE ts < ?`, now.Add(-d.keep).Unix()); err != nil {
				return err
			}
		}
		if ret.Flows > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM flows WHERE end_ms < ?`, now.Add(-ret.Flows).UnixMilli()); err != nil {
				return err
			}
		}
		_, err := pruneRules(ctx, tx, now)
		return err
	})
}

// Group is what Usage totals are grouped by.
type Group string

// The groupings. ByNone gives one total.
const (
	ByNone     Group = ""
	ByApp      Group = "app"
	ByHost     Group = "host"
	ByIface    Group = "iface"
	ByCategory Group = "category"
	ByDay      Group = "day" // UTC days, keys like "2025-06-01"
)

// UsageQuery selects usage history.
type UsageQuery struct {
	From, To time.Time // the range [From, To); zero From: the beginning, zero To: no end
	By       Group
	// Optional filters: only rows with exactly this value.
	App, Host, Iface, Category string
	Limit                      int // 0: all
}

// UsageTotal is one group's bytes.
type UsageTotal struct {
	Key      string `json:"key"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
}

// Usage totals the history in q's range by q.By, the largest total first
// (ByDay: in date order). Each part of the range is read from the coarsest
// table whose buckets fit inside it: whole UTC days from usage_day, whole
// hours from usage_hour, the rest from usage_minute.
func (s *Store) Usage(q UsageQuery) ([]UsageTotal, error) {
	var key string
	switch q.By {
	case ByNone:
		key = "''"
	case ByApp, ByHost, ByIface, ByCategory:
		key = string(q.By)
	case ByDay:
		key = "(ts - ts % 86400)"
	default:
		return nil, fmt.Errorf("store: usage: cannot group by %q: use app, host, iface, category or day", q.By)
	}
	from, to := int64(0), int64(1)<<50
	if !q.From.IsZero() {
		from = q.From.Unix()
	}
	if !q.To.IsZero() {
		to = q.To.Unix()
	}
	if to <= from {
		return nil, nil
	}
	// Split [from, to) into minute, hour and day parts; empty parts are
	// ranges [x, x) and select nothing.
	hF, hT := ceil(from, 3600), floor(to, 3600)
	dF, dT := ceil(from, 86400), floor(to, 86400)
	type span struct{ lo, hi int64 }
	var mins, hours, days [2]span
	switch {
	case hF >= hT: // no whole hour
		mins = [2]span{{from, to}, {0, 0}}
	case dF >= dT: // whole hours, no whole day
		mins = [2]span{{from, hF}, {hT, to}}
		hours = [2]span{{hF, hT}, {0, 0}}
	default:
		mins = [2]span{{from, hF}, {hT, to}}
		hours = [2]span{{hF, dF}, {dT, hT}}
		days = [2]span{{dF, dT}, {0, 0}}
	}
	filter, fargs := "", []any{}
	for _, f := range []struct{ col, v string }{{"app", q.App}, {"host", q.Host}, {"iface", q.Iface}, {"category", q.Category}} {
		if f.v != "" {
			filter += " AND " + f.col + " = ?"
			fargs = append(fargs, f.v)
		}
	}
	var sqlText string
	var args []any
	t := tables()
	for i, part := range [3][2]span{mins, hours, days} {
		if i > 0 {
			sqlText += " UNION ALL "
		}
		sqlText += `SELECT ` + key + ` AS k, bytes_in, bytes_out FROM ` + t[i].name +
			` WHERE ((ts >= ? AND ts < ?) OR (ts >= ? AND ts < ?))` + filter
		args = append(args, part[0].lo, part[0].hi, part[1].lo, part[1].hi)
		args = append(args, fargs...)
	}
	order := "ORDER BY sum(bytes_in) + sum(bytes_out) DESC, k"
	if q.By == ByDay {
		order = "ORDER BY k"
	}
	sqlText = `SELECT k, sum(bytes_in), sum(bytes_out) FROM (` + sqlText + `) GROUP BY k ` + order
	if q.Limit > 0 {
		sqlText += " LIMIT ?"
		args = append(args, q.Limit)
	}
	rows, err := s.db.Query(sqlText, args...)
	if err != nil {
		return nil, wrap("query usage", err)
	}
	defer rows.Close()
	var out []UsageTotal
	for rows.Next() {
		var u UsageTotal
		var k any
		if err := rows.Scan(&k, &u.BytesIn, &u.BytesOut); err != nil {
			return nil, wrap("query usage", err)
		}
		switch v := k.(type) {
		case int64:
			u.Key = time.Unix(v, 0).UTC().Format(time.DateOnly)
		case string:
			u.Key = v
		case []byte:
			u.Key = string(v)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("query usage", err)
	}
	return out, nil
}

// QuotaState is the persisted counter of one quota rule.
type QuotaState struct {
	RuleID      int64     `json:"rule_id"`
	PeriodStart time.Time `json:"period_start"` // zero for a quota that never resets
	Used        int64     `json:"used"`         // bytes used in the period
	Granted     int64     `json:"granted"`      // extra bytes the user granted in the period
}

// SaveQuotaStates writes the counters (insert or replace per rule) in one
// transaction.
func (s *Store) SaveQuotaStates(states []QuotaState) error {
	if len(states) == 0 {
		return nil
	}
	now := s.now().Unix()
	ctx := context.Background()
	return s.tx(ctx, fmt.Sprintf("save %d quota counters", len(states)), func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO quota_state (rule_id, period_start, used, granted, updated)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (rule_id) DO UPDATE SET period_start = excluded.period_start,
			used = excluded.used, granted = excluded.granted, updated = excluded.updated`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, q := range states {
			ps := int64(0)
			if !q.PeriodStart.IsZero() {
				ps = q.PeriodStart.Unix()
			}
			if _, err := st.ExecContext(ctx, q.RuleID, ps, q.Used, q.Granted, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// QuotaStates returns every saved counter, by rule id.
func (s *Store) QuotaStates() ([]QuotaState, error) {
	rows, err := s.db.Query(`SELECT rule_id, period_start, used, granted FROM quota_state ORDER BY rule_id`)
	if err != nil {
		return nil, wrap("list quota counters", err)
	}
	defer rows.Close()
	var out []QuotaState
	for rows.Next() {
		var q QuotaState
		var ps int64
		if err := rows.Scan(&q.RuleID, &ps, &q.Used, &q.Granted); err != nil {
			return nil, wrap("list quota counters", err)
		}
		if ps != 0 {
			q.PeriodStart = time.Unix(ps, 0).UTC()
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list quota counters", err)
	}
	return out, nil
}
