package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sp(med, lo, hi float64) Spread { return Spread{Median: med, Min: lo, Max: hi, N: 5} }

// benchRun is a run's JSON with netshape's and gobare's figures as given.
func benchRun(nsTput1, nsP50, nsCPU, bareTput1 Spread) *Results {
	return &Results{
		Contenders: []string{cDirect, cNetshape, cGoBare},
		Summary: map[string]map[string]Spread{
			cDirect:   {"tput1_gbps": sp(15, 14, 16)},
			cNetshape: {"rate_cpu_us_per_conn": nsCPU},
			cGoBare:   {"rate_cpu_us_per_conn": sp(180, 170, 190)},
		},
		VsDirect: map[string]map[string]Spread{
			cNetshape: {"tput1_x": nsTput1, "lat_p50_added_us": nsP50},
			cGoBare:   {"tput1_x": bareTput1},
		},
	}
}

func find(rows []cmpRow, c, m string) cmpRow {
	for _, r := range rows {
		if r.Contender == c && r.Metric == m {
			return r
		}
	}
	return cmpRow{Contender: "missing"}
}

func TestCompareResults(t *testing.T) {
	old := benchRun(sp(0.55, 0.50, 0.60), sp(300, 280, 340), sp(250, 240, 260), sp(0.55, 0.50, 0.60))
	cur := benchRun(
		sp(0.40, 0.38, 0.45), // 27% slower and below the old spread: worse
		sp(330, 300, 350),    // 10% more latency but inside the old spread: noise
		sp(200, 195, 210),    // 20% less CPU, below the old spread: better
		sp(0.61, 0.58, 0.66), // gobare 11% faster, above its spread: better
	)
	rows := compareResults(old, cur, 0.10, "")
	if r := find(rows, cNetshape, "tput1_x"); !r.Worse || r.Better || r.Change < 0.27 || r.Change > 0.28 {
		t.Errorf("netshape tput1_x: %+v, want worse by 27%%", r)
	}
	if r := find(rows, cNetshape, "lat_p50_added_us"); r.Worse || r.Better || r.Contender == "missing" {
		t.Errorf("netshape added p50 inside the old spread: %+v, want neither worse nor better", r)
	}
	if r := find(rows, cNetshape, "rate_cpu_us_per_conn"); !r.Better || r.Worse {
		t.Errorf("netshape CPU per connection: %+v, want better", r)
	}
	if r := find(rows, cGoBare, "tput1_x"); !r.Better {
		t.Errorf("gobare tput1_x: %+v, want better", r)
	}
	if r := find(rows, cDirect, "tput1_gbps"); r.Contender != "missing" {
		t.Errorf("direct's absolute speed was compared: %+v (machine drift, not a regression)", r)
	}
	// A tolerance above every change flags nothing.
	for _, r := range compareResults(old, cur, 0.5, "") {
		if r.Worse || r.Better {
			t.Errorf("tolerance 0.5 flagged %+v", r)
		}
	}
}

// A move the reference contender made too is the machine's, not netshape's.
func TestCompareSubtractsTheReference(t *testing.T) {
	old := benchRun(sp(0.59, 0.53, 0.60), sp(300, 280, 340), sp(250, 240, 260), sp(0.63, 0.56, 0.67))
	cur := benchRun(sp(0.50, 0.47, 0.54), sp(300, 280, 340), sp(250, 240, 260), sp(0.52, 0.51, 0.56))
	if r := find(compareResults(old, cur, 0.10, ""), cNetshape, "tput1_x"); !r.Worse {
		t.Errorf("without a reference: %+v, want worse", r)
	}
	r := find(compareResults(old, cur, 0.10, cGoBare), cNetshape, "tput1_x")
	if r.Worse || r.Net > 0.05 || r.Net < -0.05 {
		t.Errorf("gobare slowed as much: %+v, want a net change near 0 and not worse", r)
	}
	if g := find(compareResults(old, cur, 0.10, cGoBare), cGoBare, "tput1_x"); g.Net != g.Change || !g.Worse {
		t.Errorf("the reference itself: %+v, want its raw change, worse", g)
	}
}

func writeRun(t *testing.T, r *Results) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "run.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompareCommand(t *testing.T) {
	good := writeRun(t, benchRun(sp(0.55, 0.50, 0.60), sp(300, 280, 340), sp(250, 240, 260), sp(0.55, 0.50, 0.60)))
	slowNS := writeRun(t, benchRun(sp(0.40, 0.38, 0.45), sp(300, 280, 340), sp(250, 240, 260), sp(0.55, 0.50, 0.60)))
	slowBare := writeRun(t, benchRun(sp(0.55, 0.50, 0.60), sp(300, 280, 340), sp(250, 240, 260), sp(0.30, 0.28, 0.33)))

	if err := compare([]string{good, good}); err != nil {
		t.Errorf("a run against itself: %v", err)
	}
	err := compare([]string{good, slowNS})
	if err == nil || !strings.Contains(err.Error(), "netshape tput1_x") {
		t.Errorf("netshape slower: err %v, want it named", err)
	}
	if err := compare([]string{good, slowBare}); err != nil {
		t.Errorf("only gobare slower (reported, not failing): %v", err)
	}
	if err := compare([]string{"-fail", cGoBare, good, slowBare}); err == nil {
		t.Error("-fail gobare: a slower gobare passed")
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"contenders": []}`), 0o644)
	for _, args := range [][]string{{good}, {good, bad}, {good, filepath.Join(t.TempDir(), "none.json")}, {"-tolerance", "-1", good, good}} {
		if err := compare(args); err == nil {
			t.Errorf("compare %q: no error", args)
		}
	}
}

func TestPrintTargets(t *testing.T) {
	old := []Target{{Name: "p99", Want: "<= 1.00", Got: 0.99, Met: true}, {Name: "rate", Want: ">= 1.00", Got: 0.9}}
	cur := []Target{{Name: "p99", Want: "<= 1.00", Got: 1.7}, {Name: "rate", Want: ">= 1.00", Got: 1.1, Met: true}, {Name: "new one", Got: 1}}
	var b strings.Builder
	printTargets(&b, old, cur)
	out := b.String()
	for _, want := range []string{"p99", "0.99", "1.70", "no longer met", "now met"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "new one") {
		t.Errorf("a target only the new run has was compared:\n%s", out)
	}
}
