package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/netshape/netshape/policy"
)

// AddRule validates, normalizes and stores a rule and returns its new id. A
// zero Created is set to now. Times are kept to the second.
func (s *Store) AddRule(r policy.Rule) (int64, error) {
	ids, err := s.AddRules([]policy.Rule{r})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// AddRules stores several rules in one transaction: all or none. Invalid
// rules fail the whole call with an error wrapping policy.ErrInvalidRule.
func (s *Store) AddRules(rules []policy.Rule) ([]int64, error) {
	norm := make([]policy.Rule, len(rules))
	for i, r := range rules {
		n, err := r.Normalize()
		if err != nil {
			return nil, fmt.Errorf("store: add rule #%d: %w", i+1, err)
		}
		if n.Created.IsZero() {
			n.Created = s.now()
		}
		norm[i] = n
	}
	ids := make([]int64, 0, len(norm))
	ctx := context.Background()
	err := s.tx(ctx, "add rules", func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO rules
			(app, user, host, port, iface, action, rate, rate_in, rate_out, quota, period, reset_day, over, expires, note, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, r := range norm {
			res, err := st.ExecContext(ctx, r.App, r.User, r.Host, r.Port, r.Iface, string(r.Action),
				r.Rate, r.RateIn, r.RateOut, r.Quota, string(r.Period), r.ResetDay, r.Over.String(),
				nullTime(r.Expires), r.Note, r.Created.Unix())
			if err != nil {
				return err
			}
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// Rules returns every stored rule, expired ones included (policy ignores
// them; Rollup or PruneExpiredRules deletes them), in id order.
func (s *Store) Rules() ([]policy.Rule, error) {
	rows, err := s.db.Query(`SELECT id, app, user, host, port, iface, action, rate, rate_in, rate_out,
		quota, period, reset_day, over, expires, note, created FROM rules ORDER BY id`)
	if err != nil {
		return nil, wrap("list rules", err)
	}
	defer rows.Close()
	var out []policy.Rule
	for rows.Next() {
		var r policy.Rule
		var action, period, over string
		var expires sql.NullInt64
		var created int64
		if err := rows.Scan(&r.ID, &r.App, &r.User, &r.Host, &r.Port, &r.Iface, &action, &r.Rate, &r.RateIn,
			&r.RateOut, &r.Quota, &period, &r.ResetDay, &over, &expires, &r.Note, &created); err != nil {
			return nil, wrap("list rules", err)
		}
		r.Action, r.Period = policy.Action(action), policy.Period(period)
		if r.Over, err = policy.ParseOver(over); err != nil {
			return nil, fmt.Errorf("store: rule %d: %w (edit or delete the row)", r.ID, err)
		}
		if expires.Valid {
			r.Expires = time.Unix(expires.Int64, 0).UTC()
		}
		r.Created = time.Unix(created, 0).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list rules", err)
	}
	return out, nil
}

// DeleteRule deletes a rule and its quota counter. An unknown id gives an
// error wrapping ErrNotFound.
func (s *Store) DeleteRule(id int64) error {
	ctx := context.Background()
	return s.tx(ctx, fmt.Sprintf("delete rule %d", id), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM rules WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: no rule has id %d (see netshape rules)", ErrNotFound, id)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM quota_state WHERE rule_id = ?`, id)
		return err
	})
}

// PruneExpiredRules deletes rules that expired at or before now, with their
// quota counters, and says how many went.
func (s *Store) PruneExpiredRules(now time.Time) (int, error) {
	var n int64
	ctx := context.Background()
	err := s.tx(ctx, "prune expired rules", func(tx *sql.Tx) error {
		var err error
		n, err = pruneRules(ctx, tx, now)
		return err
	})
	return int(n), err
}

func pruneRules(ctx context.Context, tx *sql.Tx, now time.Time) (int64, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM quota_state WHERE rule_id IN
		(SELECT id FROM rules WHERE expires IS NOT NULL AND expires <= ?)`, now.Unix()); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM rules WHERE expires IS NOT NULL AND expires <= ?`, now.Unix())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Unix()
}
