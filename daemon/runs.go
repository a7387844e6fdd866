package daemon

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/shaper"
)

// runs are commands started by `netshape run`: each is a quota and a rate on
// the flows of one process tree (or cgroup).
type runs struct {
	mu   sync.Mutex
	next int64
	m    map[int64]control.Run
	// flows remembers which flows matched each run when they were attached,
	// so their bytes still count after their process is gone.
	flows map[int64]map[uint64]bool
}

const selRun = "run:"

// runQuotaID keeps run quota ids apart from rule ids (positive) and config
// rule ids (small negative).
func runQuotaID(id int64) int64 { return -(1 << 41) - id }

func (d *Daemon) inRun(id int64, f *flow.Flow) bool {
	d.runs.mu.Lock()
	r, ok := d.runs.m[id]
	seen := d.runs.flows[id][f.ID]
	d.runs.mu.Unlock()
	if !ok {
		return false
	}
	if seen {
		return true
	}
	in := r.Cgroup != "" && (f.Cgroup == r.Cgroup || strings.HasPrefix(f.Cgroup, r.Cgroup+"/")) ||
		f.PID > 0 && (f.PID == r.RootPID || d.procs.InTree(f.PID, r.RootPID))
	if in && f.ID != 0 {
		d.runs.mu.Lock()
		if d.runs.flows[id] != nil {
			d.runs.flows[id][f.ID] = true
		}
		d.runs.mu.Unlock()
	}
	return in
}

// runLimits are the shaper limits and quotas of the registered runs.
func (d *Daemon) runLimits() ([]shaper.Limit, []shaper.Quota) {
	d.runs.mu.Lock()
	defer d.runs.mu.Unlock()
	var ls []shaper.Limit
	var qs []shaper.Quota
	for id, r := range d.runs.m {
		sel := shaper.Selector{Host: selRun + strconv.FormatInt(id, 10)}
		if r.Rate > 0 {
			ls = append(ls, shaper.Limit{ID: runQuotaID(id), Sel: sel, In: r.Rate, Out: r.Rate})
		}
		if r.Limit > 0 {
			qs = append(qs, shaper.Quota{ID: runQuotaID(id), Sel: sel, Limit: r.Limit, Dir: shaper.Total, Period: shaper.None})
		}
	}
	return ls, qs
}

func (d *Daemon) runRoutes() {
	d.ctl.Handle("POST /v1/runs", func(r *http.Request) (any, error) {
		var ru control.Run
		if err := decodeBody(r, &ru); err != nil {
			return nil, err
		}
		if ru.RootPID <= 0 {
			return nil, control.Errorf(http.StatusBadRequest, "run needs the pid of the process to follow")
		}
		if ru.Limit < 0 || ru.Rate < 0 {
			return nil, control.Errorf(http.StatusBadRequest, "limit and rate must not be negative")
		}
		d.runs.mu.Lock()
		d.runs.next++
		ru.ID = d.runs.next
		d.runs.m[ru.ID] = ru
		d.runs.flows[ru.ID] = map[uint64]bool{}
		d.runs.mu.Unlock()
		d.ruleMu.Lock()
		d.applyLimits(d.rules.Load())
		d.ruleMu.Unlock()
		d.log.Info("run registered", "run", ru.ID, "pid", ru.RootPID, "cgroup", ru.Cgroup, "limit", ru.Limit, "rate", ru.Rate, "command", ru.Command)
		return ru, nil
	})
	d.ctl.Handle("GET /v1/runs/{id}", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "run id %q is not a number", r.PathValue("id"))
		}
		d.runs.mu.Lock()
		ru, ok := d.runs.m[id]
		d.runs.mu.Unlock()
		if !ok {
			return nil, control.Errorf(http.StatusNotFound, "no run %d", id)
		}
		ru.Used = d.runUsed(id)
		for _, q := range d.shaper.Quotas() {
			if q.Quota.ID == runQuotaID(id) {
				ru.Used, ru.Exhausted = q.Used, q.Exhausted
			}
		}
		return ru, nil
	})
	d.ctl.Handle("DELETE /v1/runs/{id}", func(r *http.Request) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, control.Errorf(http.StatusBadRequest, "run id %q is not a number", r.PathValue("id"))
		}
		d.runs.mu.Lock()
		_, ok := d.runs.m[id]
		delete(d.runs.m, id)
		delete(d.runs.flows, id)
		d.runs.mu.Unlock()
		if !ok {
			return nil, control.Errorf(http.StatusNotFound, "no run %d", id)
		}
		d.ruleMu.Lock()
		d.applyLimits(d.rules.Load())
		d.ruleMu.Unlock()
		return map[string]int64{"deleted": id}, nil
	})
}

// runUsed counts the bytes of a run's flows the proxy has seen (for a run
// without a quota).
func (d *Daemon) runUsed(id int64) int64 {
	d.runs.mu.Lock()
	ids := d.runs.flows[id]
	d.runs.mu.Unlock()
	var n int64
	for _, f := range d.proxy.Flows(true) {
		d.runs.mu.Lock()
		in := ids[f.ID]
		d.runs.mu.Unlock()
		if in {
			n += f.BytesIn + f.BytesOut
		}
	}
	return n
}
