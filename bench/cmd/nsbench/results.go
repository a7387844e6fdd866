package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Contender names.
const (
	cDirect    = "direct"
	cNetshape  = "netshape"
	cNetshapeR = "netshape-r" // netshape with 1,000 rules that do not match the bench traffic
	cHAProxyT  = "haproxy-t"  // transparent, under an nft redirect: the fair peer
	cHAProxy   = "haproxy"    // plain relay to a fixed server
	cSocat     = "socat"      // plain relay, one process per connection
	cGoBare    = "gobare"     // the bare Go splice relay (nsbench bare) under an nft redirect: a reference
	cGoLoop    = "goloop"     // an epoll event-loop Go relay (nsbench loop) under the same redirect: a reference
	cCLoop     = "cloop"      // goloop's design in C (bench/cloop), under the same redirect: the floor of any relay here
)

// allContenders in table order; defaultContenders run unless -contenders says otherwise.
var (
	allContenders     = []string{cDirect, cNetshape, cNetshapeR, cHAProxyT, cGoBare, cGoLoop, cCLoop, cHAProxy, cSocat}
	defaultContenders = []string{cDirect, cNetshape, cNetshapeR, cHAProxyT, cGoBare}
)

// Results is the JSON a run writes: raw samples per contender and metric (one
// per repetition, NaN-free: failed samples are dropped by spread), summaries,
// and the targets.
type Results struct {
	Machine         map[string]string                `json:"machine"`
	Options         map[string]any                   `json:"options"`
	Contenders      []string                         `json:"contenders"`
	Raw             map[string]map[string][]float64  `json:"-"`
	Samples         map[string]map[string][]*float64 `json:"samples"`
	Summary         map[string]map[string]Spread     `json:"summary"`
	VsDirect        map[string]map[string]Spread     `json:"vs_direct"`
	VsHAProxyT      map[string]map[string]Spread     `json:"vs_haproxy_t,omitempty"`
	Targets         []Target                         `json:"targets"`
	NetshapeStatus  any                              `json:"netshape_status,omitempty"`
	NetshapeRStatus any                              `json:"netshape_r_status,omitempty"`
}

// Target is one goal from the issue, checked against this run.
type Target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
	Note string  `json:"note,omitempty"`
}

func newResults(contenders []string) *Results {
	r := &Results{Raw: map[string]map[string][]float64{}, Contenders: contenders}
	for _, c := range contenders {
		r.Raw[c] = map[string][]float64{}
	}
	return r
}

func (r *Results) add(contender, metric string, v float64) {
	if r.Raw[contender] == nil {
		r.Raw[contender] = map[string][]float64{}
	}
	r.Raw[contender][metric] = append(r.Raw[contender][metric], v)
}

// Derived, per repetition against direct in the same repetition:
//
//	tputN_x, rate_x: ratio to direct (1.0 = as fast as no proxy)
//	lat_p50_added_us, lat_p99_added_us: latency minus direct's
func (r *Results) summarise() {
	r.Summary = map[string]map[string]Spread{}
	r.VsDirect = map[string]map[string]Spread{}
	r.Samples = map[string]map[string][]*float64{}
	d := r.Raw[cDirect]
	for _, c := range r.Contenders {
		r.Summary[c] = map[string]Spread{}
		r.Samples[c] = map[string][]*float64{}
		for m, vs := range r.Raw[c] {
			r.Summary[c][m] = spread(vs)
			for _, v := range vs {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					r.Samples[c][m] = append(r.Samples[c][m], nil) // JSON has no NaN
				} else {
					r.Samples[c][m] = append(r.Samples[c][m], &v)
				}
			}
		}
		if c == cDirect {
			continue
		}
		v := map[string]Spread{}
		for _, m := range []string{"tput1_gbps", "tput8_gbps", "rate_cps"} {
			v[strings.TrimSuffix(strings.TrimSuffix(m, "_gbps"), "_cps")+"_x"] = spread(ratios(r.Raw[c][m], d[m]))
		}
		// What the machine spends per GB, direct's over the relay's: the
		// throughput ratio the two would reach using the same CPU time (with
		// 8 streams both keep the VM busy, so it is the ceiling of tput8_x).
		for _, p := range []string{"1", "8"} {
			m := "machine" + p + "_s_per_gb"
			v["cost"+p+"_x"] = spread(ratios(d[m], r.Raw[c][m]))
		}
		v["lat_p50_added_us"] = spread(diffs(r.Raw[c]["lat_p50_us"], d["lat_p50_us"]))
		v["lat_p99_added_us"] = spread(diffs(r.Raw[c]["lat_p99_us"], d["lat_p99_us"]))
		r.VsDirect[c] = v
	}
	r.vsHAProxyT()
	r.targets()
}

// vsHAProxyT lines every relay up against HAProxy-t on the setup
// targets, paired by repetition: added p50 and p99 latency (x < 1: adds
// less) and connection rate (x > 1: faster). The reference relays' rows show
// where the floor of each metric is on this machine.
func (r *Results) vsHAProxyT() {
	h := r.Raw[cHAProxyT]
	if h == nil {
		return
	}
	d := r.Raw[cDirect]
	r.VsHAProxyT = map[string]map[string]Spread{}
	for _, c := range r.Contenders {
		if c == cDirect || c == cHAProxyT || c == cHAProxy || c == cSocat {
			continue
		}
		x := r.Raw[c]
		r.VsHAProxyT[c] = map[string]Spread{
			"lat_p50_added_x": spread(ratios(diffs(x["lat_p50_us"], d["lat_p50_us"]), diffs(h["lat_p50_us"], d["lat_p50_us"]))),
			"lat_p99_added_x": spread(ratios(diffs(x["lat_p99_us"], d["lat_p99_us"]), diffs(h["lat_p99_us"], d["lat_p99_us"]))),
			"rate_x":          spread(ratios(x["rate_cps"], h["rate_cps"])),
		}
	}
}

func (r *Results) targets() {
	n, h := r.VsDirect[cNetshape], r.VsDirect[cHAProxyT]
	if n == nil {
		return
	}
	add := func(name, want string, got float64, met bool, note string) {
		if math.IsNaN(got) || math.IsInf(got, 0) {
			got, met, note = 0, false, "not measured"
		}
		r.Targets = append(r.Targets, Target{name, want, got, met, note})
	}
	defer func() {
		// Rules, procmap and dnsmap on cost ≤ 10%: netshape-r against netshape,
		// paired by repetition.
		nr := r.VsDirect[cNetshapeR]
		if nr == nil {
			return
		}
		rr := spread(ratios(r.Raw[cNetshapeR]["rate_cps"], r.Raw[cNetshape]["rate_cps"]))
		add("rules on: conn rate netshape-r / netshape", ">= 0.90", rr.Median, rr.Median >= 0.90,
			fmt.Sprintf("paired by repetition, %d rules", r.Options["rules"]))
		lr := spread(ratios(diffs(r.Raw[cNetshapeR]["lat_p50_us"], r.Raw[cDirect]["lat_p50_us"]),
			diffs(r.Raw[cNetshape]["lat_p50_us"], r.Raw[cDirect]["lat_p50_us"])))
		add("rules on: added p50 netshape-r / netshape", "<= 1.10", lr.Median, lr.Median <= 1.10,
			fmt.Sprintf("paired by repetition; netshape-r +%.1f µs, netshape +%.1f µs",
				nr["lat_p50_added_us"].Median, n["lat_p50_added_us"].Median))
	}()
	costNote := func(p string) string {
		c, b := n["cost"+p+"_x"], r.Summary[cDirect]["busy"+p+"_frac"]
		if c.N == 0 || b.N == 0 {
			return ""
		}
		return fmt.Sprintf("machine CPU per GB, direct's / netshape's: %.2f; direct kept the VM %.0f%% busy", c.Median, 100*b.Median)
	}
	add("single-stream throughput vs direct", ">= 0.90", n["tput1_x"].Median, n["tput1_x"].Median >= 0.90, costNote("1"))
	add("8-stream throughput vs direct", ">= 0.85", n["tput8_x"].Median, n["tput8_x"].Median >= 0.85, costNote("8"))
	if h != nil {
		hp50, hp99 := h["lat_p50_added_us"].Median, h["lat_p99_added_us"].Median
		np50, np99 := n["lat_p50_added_us"].Median, n["lat_p99_added_us"].Median
		add("added p50 latency / HAProxy-t's", "<= 0.75", np50/hp50, np50 <= 0.75*hp50,
			fmt.Sprintf("netshape +%.1f µs, HAProxy +%.1f µs", np50, hp50))
		add("added p99 latency / HAProxy-t's", "<= 1.00", np99/hp99, np99 <= hp99,
			fmt.Sprintf("netshape +%.1f µs, HAProxy +%.1f µs", np99, hp99))
		rr := spread(ratios(r.Raw[cNetshape]["rate_cps"], r.Raw[cHAProxyT]["rate_cps"]))
		add("connection rate / HAProxy-t's", ">= 1.00", rr.Median, rr.Median >= 1, "paired by repetition")
		for _, p := range []string{"1", "8"} {
			m := "cpu" + p + "_s_per_gb"
			nc, hc := r.Summary[cNetshape][m].Median, r.Summary[cHAProxyT][m].Median
			add(p+"-stream CPU per GB / HAProxy-t's", "<= 1.00", nc/hc, nc <= hc,
				fmt.Sprintf("netshape %.2f s/GB, HAProxy %.2f s/GB", nc, hc))
		}
	}
	rss := r.Summary[cNetshape]["rss_kib_per_conn"].Median
	add("RSS per idle relayed connection (KiB)", "<= 12", rss, rss <= 12, "")
}

func f2(s Spread, format string) string {
	if s.N == 0 {
		return "n/a"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Median, s.Min, s.Max)
}

func (r *Results) print(w io.Writer) {
	fmt.Fprintf(w, "\nnetshape bench: %s, %s CPUs (%s), kernel %s, %s; %v repetitions\n",
		r.Machine["cpu"], r.Machine["nproc"], "median [min–max] over repetitions", r.Machine["kernel"], r.Machine["go"], r.Options["reps"])
	fmt.Fprintf(w, "\nRatios to direct (paired per repetition):\n")
	fmt.Fprintf(w, "%-10s %-22s %-22s %-22s %-22s %-22s\n", "contender", "1-stream ×direct", "8-stream ×direct", "conn/s ×direct", "+p50 µs", "+p99 µs")
	for _, c := range r.Contenders {
		if c == cDirect {
			continue
		}
		v := r.VsDirect[c]
		fmt.Fprintf(w, "%-10s %-22s %-22s %-22s %-22s %-22s\n", c, f2(v["tput1_x"], "%.2f"), f2(v["tput8_x"], "%.2f"),
			f2(v["rate_x"], "%.2f"), f2(v["lat_p50_added_us"], "%.0f"), f2(v["lat_p99_added_us"], "%.0f"))
	}
	if len(r.VsHAProxyT) > 0 {
		fmt.Fprintf(w, "\nAgainst HAProxy-t (paired per repetition; targets: netshape's added p50 <= 0.75, p99 <= 1, conn/s >= 1):\n")
		fmt.Fprintf(w, "%-10s %-22s %-22s %-22s\n", "contender", "+p50 ×HAProxy-t", "+p99 ×HAProxy-t", "conn/s ×HAProxy-t")
		for _, c := range r.Contenders {
			if v, ok := r.VsHAProxyT[c]; ok {
				fmt.Fprintf(w, "%-10s %-22s %-22s %-22s\n", c, f2(v["lat_p50_added_x"], "%.2f"), f2(v["lat_p99_added_x"], "%.2f"), f2(v["rate_x"], "%.2f"))
			}
		}
	}
	fmt.Fprintf(w, "\nAbsolute medians:\n")
	fmt.Fprintf(w, "%-10s %9s %9s %9s %9s %9s %10s %10s %10s %9s %8s %8s %8s\n", "contender", "1s Gb/s", "8s Gb/s", "conn/s",
		"p50 µs", "p99 µs", "CPU1 s/GB", "CPU8 s/GB", "CPU µs/c", "KiB/conn", "fds/conn", "idle n", "RSS MiB")
	for _, c := range r.Contenders {
		s := r.Summary[c]
		cell := func(m, f string) string {
			if sp, ok := s[m]; ok && sp.N > 0 {
				return fmt.Sprintf(f, sp.Median)
			}
			return "n/a"
		}
		fmt.Fprintf(w, "%-10s %9s %9s %9s %9s %9s %10s %10s %10s %9s %8s %8s %8s\n", c, cell("tput1_gbps", "%.2f"), cell("tput8_gbps", "%.2f"),
			cell("rate_cps", "%.0f"), cell("lat_p50_us", "%.0f"), cell("lat_p99_us", "%.0f"), cell("cpu1_s_per_gb", "%.2f"),
			cell("cpu8_s_per_gb", "%.2f"), cell("rate_cpu_us_per_conn", "%.0f"), cell("rss_kib_per_conn", "%.1f"), cell("fds_per_conn", "%.1f"),
			cell("idle_conns", "%.0f"), cell("rss_mib_total", "%.0f"))
	}
	fmt.Fprintf(w, "\nWhole machine (/proc/stat: client, server, relay, softirqs, and anything else the VM ran), medians:\n")
	fmt.Fprintf(w, "%-10s %11s %11s %8s %8s %13s %13s %11s %11s\n", "contender", "mach1 s/GB", "mach8 s/GB", "busy1 %", "busy8 %",
		"cost1 ×direct", "cost8 ×direct", "mach µs/c", "rate idle %")
	for _, c := range r.Contenders {
		s, v := r.Summary[c], r.VsDirect[c]
		cell := func(src map[string]Spread, m, f string, k float64) string {
			if sp, ok := src[m]; ok && sp.N > 0 {
				return fmt.Sprintf(f, k*sp.Median)
			}
			return "–"
		}
		fmt.Fprintf(w, "%-10s %11s %11s %8s %8s %13s %13s %11s %11s\n", c, cell(s, "machine1_s_per_gb", "%.2f", 1),
			cell(s, "machine8_s_per_gb", "%.2f", 1), cell(s, "busy1_frac", "%.0f", 100), cell(s, "busy8_frac", "%.0f", 100),
			cell(v, "cost1_x", "%.2f", 1), cell(v, "cost8_x", "%.2f", 1), cell(s, "rate_machine_us_per_conn", "%.0f", 1),
			cell(s, "rate_idle_frac", "%.1f", 100))
	}
	fmt.Fprintf(w, "(cost ×direct: direct's machine CPU per GB over the contender's, paired; the throughput ratio at equal CPU use)\n")
	for _, c := range r.Contenders {
		if sp, ok := r.Summary[c]["identified_frac"]; ok && sp.N > 0 {
			fmt.Fprintf(w, "%s: procmap named the bench client as the owner of %.1f%% of its last bench flows\n", c, 100*sp.Median)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\nTargets (netshape):\n")
		for _, t := range r.Targets {
			mark := "MET    "
			if !t.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(w, "  %s %-40s want %-8s got %.2f  %s\n", mark, t.Name, t.Want, t.Got, t.Note)
		}
	}
}
