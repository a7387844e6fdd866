package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"time"

	"github.com/netshape/netshape/flow"
)

// AddFlows stores closed flows in one transaction (all or none). Call it
// with a batch every few seconds rather than once per flow.
func (s *Store) AddFlows(flows []flow.Flow) error {
	if len(flows) == 0 {
		return nil
	}
	ctx := context.Background()
	return s.tx(ctx, fmt.Sprintf("add %d flows", len(flows)), func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO flows (flow_id, start_ms, end_ms, state, src, dst, pid, ppid,
			exe, cmdline, uid, user, cgroup, host, host_source, iface, verdict, rule_id, bytes_in, bytes_out, error)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := range flows {
			f := &flows[i]
			state := f.State
			if state == "" {
				state = flow.StateClosed
			}
			if _, err := st.ExecContext(ctx, int64(f.ID), msec(f.Start), msec(f.End), string(state),
				f.Src.String(), f.Dst.String(), f.PID, f.PPID, f.Exe, f.Cmdline, f.UID, f.User, f.Cgroup,
				f.Host, f.HostSource, f.Iface, f.Verdict, f.RuleID, f.BytesIn, f.BytesOut, f.Err); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecentFlows returns up to limit stored flows, the most recently ended first.
func (s *Store) RecentFlows(limit int) ([]flow.Flow, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.db.Query(`SELECT flow_id, start_ms, end_ms, state, src, dst, pid, ppid, exe, cmdline, uid, user,
		cgroup, host, host_source, iface, verdict, rule_id, bytes_in, bytes_out, error
		FROM flows ORDER BY end_ms DESC, id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, wrap("list flows", err)
	}
	defer rows.Close()
	var out []flow.Flow
	for rows.Next() {
		var f flow.Flow
		var id, start, end int64
		var state, src, dst string
		if err := rows.Scan(&id, &start, &end, &state, &src, &dst, &f.PID, &f.PPID, &f.Exe, &f.Cmdline, &f.UID,
			&f.User, &f.Cgroup, &f.Host, &f.HostSource, &f.Iface, &f.Verdict, &f.RuleID, &f.BytesIn, &f.BytesOut,
			&f.Err); err != nil {
			return nil, wrap("list flows", err)
		}
		f.ID, f.State = uint64(id), flow.State(state)
		f.Start, f.End = fromMsec(start), fromMsec(end)
		// Invalid addresses were stored as "invalid AddrPort"; they stay zero.
		f.Src, _ = netip.ParseAddrPort(src)
		f.Dst, _ = netip.ParseAddrPort(dst)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list flows", err)
	}
	return out, nil
}

func msec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMsec(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
