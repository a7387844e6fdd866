package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/netshape/netshape/flow"
)

// flowCols are the columns AddFlows writes, one placeholder each.
const flowCols = `flow_id, start_ms, end_ms, state, src, dst, pid, ppid, exe, cmdline, uid, user, cgroup, host,
	host_source, iface, verdict, rule_id, bytes_in, bytes_out, error`

const nFlowCols = 21 // TestAddFlowsBatchSizes counts flowCols

// flowsPerInsert is how many rows one INSERT statement carries. Rows bound
// in one statement share its parse, step and reset (a third less per flow
// than one statement a row in BenchmarkAddFlows); much longer statements
// cost more than they save.
const flowsPerInsert = 16

// insertFlows is the INSERT statement for n rows.
func insertFlows(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO flows (" + flowCols + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(" + strings.Repeat("?,", nFlowCols-1) + "?)")
	}
	return b.String()
}

// AddFlows stores closed flows in one transaction (all or none). Call it
// with a batch every few seconds rather than once per flow.
func (s *Store) AddFlows(flows []flow.Flow) error {
	if len(flows) == 0 {
		return nil
	}
	ctx := context.Background()
	return s.tx(ctx, fmt.Sprintf("add %d flows", len(flows)), func(tx *sql.Tx) error {
		var full *sql.Stmt
		if len(flows) >= flowsPerInsert {
			st, err := tx.PrepareContext(ctx, insertFlows(flowsPerInsert))
			if err != nil {
				return err
			}
			defer st.Close()
			full = st
		}
		args := make([]any, 0, nFlowCols*min(len(flows), flowsPerInsert))
		for rest := flows; len(rest) > 0; {
			n := min(len(rest), flowsPerInsert)
			args = args[:0]
			for i := range rest[:n] {
				args = appendFlowArgs(args, &rest[i])
			}
			var err error
			if n == flowsPerInsert {
				_, err = full.ExecContext(ctx, args...)
			} else {
				_, err = tx.ExecContext(ctx, insertFlows(n), args...)
			}
			if err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
}

// appendFlowArgs appends f's values in flowCols' order.
func appendFlowArgs(args []any, f *flow.Flow) []any {
	state := f.State
	if state == "" {
		state = flow.StateClosed
	}
	return append(args, int64(f.ID), msec(f.Start), msec(f.End), string(state), f.Src.String(), f.Dst.String(),
		f.PID, f.PPID, f.Exe, f.Cmdline, f.UID, f.User, f.Cgroup, f.Host, f.HostSource, f.Iface, f.Verdict,
		f.RuleID, f.BytesIn, f.BytesOut, f.Err)
}

// RecentFlows returns up to limit stored flows, the most recently ended first.
func (s *Store) RecentFlows(limit int) ([]flow.Flow, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.db.Query(`SELECT `+flowCols+` FROM flows ORDER BY end_ms DESC, id DESC LIMIT ?`, limit)
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
