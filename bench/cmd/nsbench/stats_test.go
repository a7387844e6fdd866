package main

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(i + 1)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}, {0.001, 1}} {
		if got := quantile(ds, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile(nil) = %v", got)
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want Spread
	}{
		{"odd", []float64{3, 1, 2}, Spread{2, 1, 3, 3}},
		{"even", []float64{4, 1, 3, 2}, Spread{2.5, 1, 4, 4}},
		{"nan skipped", []float64{math.NaN(), 5, 1}, Spread{3, 1, 5, 2}},
		{"inf skipped", []float64{math.Inf(1), 7}, Spread{7, 7, 7, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := spread(tc.in); got != tc.want {
				t.Errorf("spread(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
	if s := spread([]float64{math.NaN()}); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("all-NaN spread = %+v, want N 0 and NaN median", s)
	}
}

func TestRatiosDiffsPaired(t *testing.T) {
	r := ratios([]float64{2, 9, 1}, []float64{1, 3})
	if len(r) != 2 || r[0] != 2 || r[1] != 3 {
		t.Errorf("ratios = %v", r)
	}
	d := diffs([]float64{5, 7}, []float64{1, 10})
	if len(d) != 2 || d[0] != 4 || d[1] != -3 {
		t.Errorf("diffs = %v", d)
	}
}

func TestSpreadJSON(t *testing.T) {
	b, err := json.Marshal(map[string]Spread{"none": spread(nil), "one": spread([]float64{2})})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"none":null,"one":{"median":2,"min":2,"max":2,"n":1}}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// Every relay is lined up against HAProxy-t on the setup targets, paired by
// repetition: added latency is each one's minus direct's of the same
// repetition, then divided by HAProxy-t's added latency of that repetition.
func TestVsHAProxyTPaired(t *testing.T) {
	r := newResults([]string{cDirect, cNetshape, cHAProxyT, cCLoop})
	for _, rep := range []struct{ d, n, h, c, nr, hr, cr float64 }{
		{d: 100, n: 400, h: 300, c: 250, nr: 3000, hr: 6000, cr: 6600},
		{d: 200, n: 400, h: 300, c: 280, nr: 2000, hr: 4000, cr: 3000},
		{d: 100, n: 250, h: 200, c: 160, nr: 1000, hr: 1000, cr: 900},
	} {
		for c, v := range map[string][2]float64{cDirect: {rep.d, 9000}, cNetshape: {rep.n, rep.nr}, cHAProxyT: {rep.h, rep.hr}, cCLoop: {rep.c, rep.cr}} {
			r.add(c, "lat_p50_us", v[0])
			r.add(c, "lat_p99_us", 2*v[0])
			r.add(c, "rate_cps", v[1])
		}
	}
	r.summarise()
	if _, ok := r.VsHAProxyT[cHAProxyT]; ok {
		t.Error("HAProxy-t is lined up against itself")
	}
	for _, x := range []struct {
		c, m          string
		med, min, max float64
	}{
		// netshape: added 300/200, 200/100, 150/100; rate 0.5, 0.5, 1.
		{cNetshape, "lat_p50_added_x", 1.5, 1.5, 2},
		{cNetshape, "rate_x", 0.5, 0.5, 1},
		// cloop: added 150/200, 80/100, 60/100; rate 1.1, 0.75, 0.9.
		{cCLoop, "lat_p50_added_x", 0.75, 0.6, 0.8},
		{cCLoop, "lat_p99_added_x", 0.75, 0.6, 0.8},
		{cCLoop, "rate_x", 0.9, 0.75, 1.1},
	} {
		s := r.VsHAProxyT[x.c][x.m]
		if !near(s.Median, x.med) || !near(s.Min, x.min) || !near(s.Max, x.max) || s.N != 3 {
			t.Errorf("%s %s = %+v, want median %v [%v-%v] of 3", x.c, x.m, s, x.med, x.min, x.max)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
