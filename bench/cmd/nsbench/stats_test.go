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
