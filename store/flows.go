package store

import (
	"context"
	"database/sql/driver"
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
//
// It binds through the SQLite driver itself, not database/sql, which checks
// and copies every value into a new argument list per statement (13 KiB per
// 16 flows, half of what a flow's insert allocated): the daemon writes
// thousands of flows a second under load, and its GC pays for the garbage.
func (s *Store) AddFlows(flows []flow.Flow) error {
	if len(flows) == 0 {
		return nil
	}
	op := fmt.Sprintf("add %d flows", len(flows))
	ctx := context.Background()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return wrap(op, err)
	}
	defer c.Close()
	return wrap(op, c.Raw(func(dc any) error { return addFlows(ctx, dc, flows) }))
}

// addFlows is AddFlows on the driver's connection dc.
func addFlows(ctx context.Context, dc any, flows []flow.Flow) error {
	conn, ok := dc.(interface {
		driver.ConnBeginTx
		driver.ConnPrepareContext
	})
	if !ok {
		return fmt.Errorf("the SQLite driver's connection (%T) cannot begin or prepare", dc)
	}
	tx, err := conn.BeginTx(ctx, driver.TxOptions{})
	if err != nil {
		return err
	}
	if err := insertAll(ctx, conn, flows); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		tx.Rollback() // a COMMIT that failed may leave the transaction open
		return err
	}
	return nil
}

// insertAll inserts flows, flowsPerInsert rows to a statement prepared once,
// and the rest in one more.
func insertAll(ctx context.Context, conn driver.ConnPrepareContext, flows []flow.Flow) error {
	args := make([]driver.NamedValue, nFlowCols*min(len(flows), flowsPerInsert))
	for i := range args {
		args[i].Ordinal = i + 1
	}
	var full driver.StmtExecContext
	for rest := flows; len(rest) > 0; {
		n := min(len(rest), flowsPerInsert)
		for i := range rest[:n] {
			setFlowArgs(args[i*nFlowCols:(i+1)*nFlowCols], &rest[i])
		}
		st := full
		if st == nil || n < flowsPerInsert {
			ps, err := conn.PrepareContext(ctx, insertFlows(n))
			if err != nil {
				return err
			}
			defer ps.Close()
			var ok bool
			if st, ok = ps.(driver.StmtExecContext); !ok {
				return fmt.Errorf("the SQLite driver's statement (%T) cannot execute with a context", ps)
			}
			if n == flowsPerInsert {
				full = st
			}
		}
		if _, err := st.ExecContext(ctx, args[:n*nFlowCols]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// setFlowArgs sets f's values in flowCols' order into args, as the values
// the driver binds (int64, string).
func setFlowArgs(args []driver.NamedValue, f *flow.Flow) {
	state := f.State
	if state == "" {
		state = flow.StateClosed
	}
	vals := [nFlowCols]any{int64(f.ID), msec(f.Start), msec(f.End), string(state), f.Src.String(), f.Dst.String(),
		int64(f.PID), int64(f.PPID), f.Exe, f.Cmdline, int64(f.UID), f.User, f.Cgroup, f.Host, f.HostSource, f.Iface,
		f.Verdict, f.RuleID, f.BytesIn, f.BytesOut, f.Err}
	for i, v := range vals {
		args[i].Value = v
	}
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
