package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// A compared metric: where it lives in the JSON and which way is better.
// Ratios to direct and added latency are paired within each run, so they
// compare across runs on a machine whose speed drifts; the CPU and memory
// figures are the relay's own and steadier than its speed.
type cmpMetric struct {
	name   string
	vs     bool // in vs_direct (else in summary)
	higher bool // higher is better
}

var cmpMetrics = []cmpMetric{
	{"tput1_x", true, true},
	{"tput8_x", true, true},
	{"rate_x", true, true},
	{"lat_p50_added_us", true, false},
	{"lat_p99_added_us", true, false},
	{"cpu1_s_per_gb", false, false},
	{"cpu8_s_per_gb", false, false},
	{"rate_cpu_us_per_conn", false, false},
	{"rss_kib_per_conn", false, false},
}

// cmpRow is one contender's metric in both runs.
type cmpRow struct {
	Contender, Metric string
	Old, New          Spread
	Change            float64 // (new - old) / old, signed so that > 0 is worse
	// Net is Change less the reference contender's change of the same
	// metric (what the machine itself did between the runs); Change when
	// there is no reference.
	Net           float64
	Worse, Better bool
}

// compareResults lines up the metrics of the contenders both runs have. A
// metric is worse (or better) when its median moved the wrong (right) way
// out of the old run's min–max spread (a move inside the spread the old run
// saw between its own repetitions is noise by that run's own measure) and
// by more than tol of the old median beyond what the reference contender's
// same metric moved (ref, e.g. gobare: a relay that did not change, so its
// move is the machine's; "" for none).
func compareResults(old, cur *Results, tol float64, ref string) []cmpRow {
	var rows []cmpRow
	refChange := map[string]float64{}
	for _, c := range cur.Contenders {
		if !slices.Contains(old.Contenders, c) {
			continue
		}
		for _, m := range cmpMetrics {
			get := func(r *Results) (Spread, bool) {
				src := r.Summary
				if m.vs {
					src = r.VsDirect
				}
				s, ok := src[c][m.name]
				return s, ok && s.N > 0 && !math.IsNaN(s.Median)
			}
			o, ok1 := get(old)
			n, ok2 := get(cur)
			if !ok1 || !ok2 || o.Median == 0 {
				continue
			}
			ch := (n.Median - o.Median) / math.Abs(o.Median)
			if m.higher {
				ch = -ch
			}
			rows = append(rows, cmpRow{Contender: c, Metric: m.name, Old: o, New: n, Change: ch})
			if c == ref {
				refChange[m.name] = ch
			}
		}
	}
	for i := range rows {
		r := &rows[i]
		r.Net = r.Change
		if rc, ok := refChange[r.Metric]; ok && r.Contender != ref {
			r.Net -= rc
		}
		outside := r.New.Median < r.Old.Min || r.New.Median > r.Old.Max
		r.Worse = r.Change > 0 && r.Net > tol && outside
		r.Better = r.Change < 0 && r.Net < -tol && outside
	}
	return rows
}

// compare is `nsbench compare [-tolerance F] [-ref C] [-fail C,...] OLD.json NEW.json`:
// it prints every metric of both runs side by side and fails when one of
// the -fail contenders got worse.
func compare(args []string) error {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	tol := fs.Float64("tolerance", 0.10, "a change smaller than this fraction of the old median is never flagged")
	ref := fs.String("ref", cGoBare, "reference contender: its change of a metric is taken as the machine's and subtracted (\"\" for none)")
	failOn := fs.String("fail", cNetshape+","+cNetshapeR, "comma-separated contenders whose regressions fail the command (the others are reported)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: nsbench compare [-tolerance F] [-ref C] [-fail C,...] OLD.json NEW.json")
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("compare needs two JSON files written by nsbench run")
	}
	if *tol < 0 {
		return fmt.Errorf("-tolerance %v: must be 0 or more", *tol)
	}
	old, err := readResults(fs.Arg(0))
	if err != nil {
		return err
	}
	cur, err := readResults(fs.Arg(1))
	if err != nil {
		return err
	}
	rows := compareResults(old, cur, *tol, *ref)
	if len(rows) == 0 {
		return fmt.Errorf("%s and %s have no contender and metric in common", fs.Arg(0), fs.Arg(1))
	}
	printComparison(os.Stdout, rows, *tol, *ref)
	printTargets(os.Stdout, old.Targets, cur.Targets)
	var bad []string
	fail := strings.Split(*failOn, ",")
	for _, r := range rows {
		if r.Worse && slices.Contains(fail, r.Contender) {
			bad = append(bad, r.Contender+" "+r.Metric)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("worse than %s: %s", fs.Arg(0), strings.Join(bad, ", "))
	}
	return nil
}

func readResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: not an nsbench run's JSON: %w", path, err)
	}
	if len(r.Contenders) == 0 || (r.Summary == nil && r.VsDirect == nil) {
		return nil, fmt.Errorf("%s: not an nsbench run's JSON (no contenders or summaries)", path)
	}
	return &r, nil
}

func printComparison(w io.Writer, rows []cmpRow, tol float64, ref string) {
	fmt.Fprintf(w, "%-10s %-21s %-24s %-24s %8s %8s\n", "contender", "metric", "old median [min–max]", "new median [min–max]", "change", "net")
	for _, r := range rows {
		mark := ""
		switch {
		case r.Worse:
			mark = "  WORSE"
		case r.Better:
			mark = "  better"
		}
		fmt.Fprintf(w, "%-10s %-21s %-24s %-24s %+7.0f%% %+7.0f%%%s\n", r.Contender, r.Metric, f2(r.Old, "%.3g"), f2(r.New, "%.3g"), 100*r.Change, 100*r.Net, mark)
	}
	fmt.Fprintf(w, "change: + is worse (slower, more CPU or memory); net: less %s's change, the machine's own drift\n", ref)
	fmt.Fprintf(w, "flagged when the net change is over %.0f%% and the median left the old run's spread\n", 100*tol)
}

// printTargets lines up the targets of both runs. They are ratios to
// HAProxy-t or to direct within each run, so they move less with the
// machine than the figures above; a target that stopped being met is named.
func printTargets(w io.Writer, old, cur []Target) {
	if len(old) == 0 || len(cur) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%-44s %-9s %8s %8s\n", "target (netshape)", "want", "old", "new")
	for _, n := range cur {
		i := slices.IndexFunc(old, func(o Target) bool { return o.Name == n.Name })
		if i < 0 {
			continue
		}
		o := old[i]
		mark := ""
		switch {
		case o.Met && !n.Met:
			mark = "  no longer met"
		case !o.Met && n.Met:
			mark = "  now met"
		}
		fmt.Fprintf(w, "%-44s %-9s %8.2f %8.2f%s\n", n.Name, n.Want, o.Got, n.Got, mark)
	}
}
