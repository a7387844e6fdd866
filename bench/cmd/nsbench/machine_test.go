package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	// A 6.x kernel's first lines (user nice system idle iowait irq softirq
	// steal guest guest_nice).
	const stat = "cpu  1000 20 300 5000 40 6 70 8 0 0\ncpu0 500 10 150 2500 20 3 35 4 0 0\nintr 1 2 3\n"
	got, err := parseProcStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := (cpuTimes{busy: 1000 + 20 + 300 + 6 + 70, idle: 5000 + 40}); got != want {
		t.Errorf("parseProcStat = %+v, want %+v (steal and guest in neither)", got, want)
	}
	for _, bad := range []string{
		"",
		"cpu0 1 2 3 4 5 6 7 8\n",          // a per-CPU line first
		"cpu 1 2 3 4 5 6\n",               // too few fields
		"cpu 1 2 x 4 5 6 7 8 9 10\n",      // not a number
		"cpu 1 2 -3 4 5 6 7 8 9 10\n",     // negative
		"intr 1 2 3\ncpu 1 2 3 4 5 6 7\n", // not first
	} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) succeeded", bad)
		}
	}
}

func TestCPUTimesSince(t *testing.T) {
	t0 := cpuTimes{busy: 1000, idle: 4000}
	busy, frac := (cpuTimes{busy: 1150, idle: 4050}).since(t0)
	if !near(busy, 1.5) || !near(frac, 0.75) {
		t.Errorf("since = %v s, %v busy; want 1.5 s, 0.75", busy, frac)
	}
	// A failed reading (zeros: the second, the first, both), readings out
	// of order, or no tick between them give NaN, not a figure the summary
	// would take for a measurement.
	for _, c := range [][2]cpuTimes{{{}, t0}, {t0, {}}, {{}, {}}, {t0, {busy: 2000}}, {t0, t0}} {
		if b, f := c[0].since(c[1]); !math.IsNaN(b) || !math.IsNaN(f) {
			t.Errorf("%+v.since(%+v) = %v, %v; want NaN", c[0], c[1], b, f)
		}
	}
}

// The cost ratio is direct's machine CPU per GB over the contender's, paired
// by repetition, and the throughput targets carry it in their note.
func TestCostRatioPaired(t *testing.T) {
	r := newResults([]string{cDirect, cNetshape, cHAProxyT})
	for _, rep := range []struct{ d, n float64 }{{0.5, 1.0}, {0.6, 1.0}, {0.4, 1.6}} {
		for c, v := range map[string]float64{cDirect: rep.d, cNetshape: rep.n, cHAProxyT: 2} {
			r.add(c, "machine8_s_per_gb", v)
			r.add(c, "busy8_frac", 0.98)
			r.add(c, "tput8_gbps", 10/v)
		}
	}
	r.summarise()
	s := r.VsDirect[cNetshape]["cost8_x"]
	if !near(s.Median, 0.5) || !near(s.Min, 0.25) || !near(s.Max, 0.6) || s.N != 3 {
		t.Errorf("cost8_x = %+v, want 0.5 [0.25-0.6] of 3", s)
	}
	var note string
	for _, tg := range r.Targets {
		if strings.HasPrefix(tg.Name, "8-stream throughput") {
			note = tg.Note
		}
	}
	if !strings.Contains(note, "0.50") || !strings.Contains(note, "98% busy") {
		t.Errorf("8-stream target note %q: want the cost ratio 0.50 and direct's 98%% busy", note)
	}
	var out bytes.Buffer
	r.print(&out)
	if !strings.Contains(out.String(), "Whole machine") {
		t.Errorf("no whole-machine table in:\n%s", out.String())
	}
}
