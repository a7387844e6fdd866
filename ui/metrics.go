package ui

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MetricsHandler serves /metrics in the Prometheus text format (version 0.0.4).
func MetricsHandler(b Backend, t *Tracker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		WriteMetrics(w, b, t)
	})
}

// metricWriter writes metric families; the first error sticks.
type metricWriter struct {
	w   *bufio.Writer
	err error
}

func (m *metricWriter) family(name, typ, help string) {
	m.printf("# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

func (m *metricWriter) sample(name string, v float64, labels ...string) {
	var sb strings.Builder
	sb.WriteString(name)
	if len(labels) > 0 {
		sb.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(labels[i])
			sb.WriteString(`="`)
			sb.WriteString(escapeLabel(labels[i+1]))
			sb.WriteByte('"')
		}
		sb.WriteByte('}')
	}
	sb.WriteByte(' ')
	sb.WriteString(formatValue(v))
	sb.WriteByte('\n')
	m.printf("%s", sb.String())
}

func (m *metricWriter) printf(format string, args ...any) {
	if m.err == nil {
		_, m.err = fmt.Fprintf(m.w, format, args...)
	}
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabel escapes a label value; invalid UTF-8 (names come from the
// network and from process names) is replaced.
func escapeLabel(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func escapeHelp(s string) string { return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s) }

// WriteMetrics writes every netshape metric. Byte counters by app, host and
// interface are the Tracker's: bounded label sets, the rest under "other".
func WriteMetrics(w io.Writer, b Backend, t *Tracker) error {
	m := &metricWriter{w: bufio.NewWriter(w)}
	st := b.Status()
	m.family("netshape_up", "gauge", "1 while the daemon answers.")
	m.sample("netshape_up", 1)
	m.family("netshape_start_time_seconds", "gauge", "When the daemon started, in Unix seconds.")
	m.sample("netshape_start_time_seconds", float64(st.Started.Unix()))

	m.family("netshape_proxy_bytes_total", "counter", "Bytes the proxy relayed since the daemon started, by direction (in: server to client).")
	m.sample("netshape_proxy_bytes_total", float64(st.BytesIn), "direction", "in")
	m.sample("netshape_proxy_bytes_total", float64(st.BytesOut), "direction", "out")

	tot := t.Totals()
	for _, x := range []struct {
		name, label, help string
		m                 map[string][2]int64
	}{
		{"netshape_app_bytes_total", "app", "Proxied bytes by app and direction since the daemon started; the busiest apps first seen get a label, the rest count as app=\"other\".", tot.Apps},
		{"netshape_host_bytes_total", "host", "Proxied bytes by remote host and direction since the daemon started; bounded like the app counter.", tot.Hosts},
		{"netshape_iface_bytes_total", "iface", "Proxied bytes by outgoing interface and direction since the daemon started.", tot.Ifaces},
	} {
		m.family(x.name, "counter", x.help)
		keys := make([]string, 0, len(x.m))
		for k := range x.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			m.sample(x.name, float64(x.m[k][0]), x.label, k, "direction", "in")
			m.sample(x.name, float64(x.m[k][1]), x.label, k, "direction", "out")
		}
	}

	m.family("netshape_flows_active", "gauge", "Connections open or being set up now.")
	m.sample("netshape_flows_active", float64(st.Active))
	m.family("netshape_flows_total", "counter", "Connections seen since the daemon started.")
	m.sample("netshape_flows_total", float64(st.Total))
	m.family("netshape_flows_denied_total", "counter", "Connections refused by a rule, an answer or a quota.")
	m.sample("netshape_flows_denied_total", float64(st.Denied))
	m.family("netshape_flows_failed_total", "counter", "Connections whose upstream dial failed.")
	m.sample("netshape_flows_failed_total", float64(st.Failed))
	m.family("netshape_flows_refused_total", "counter", "Connections reset at once because --max-conns flows were open.")
	m.sample("netshape_flows_refused_total", float64(st.Refused))
	m.family("netshape_pending", "gauge", "Questions waiting for an answer.")
	m.sample("netshape_pending", float64(st.Pending))
	m.family("netshape_rules", "gauge", "Rules loaded (config file and stored).")
	m.sample("netshape_rules", float64(st.Rules))
	if st.Procmap != "" || st.Capture != "" {
		m.family("netshape_fast_paths_info", "gauge", "1, labelled with how flows are relayed (event loops, or goroutines), process lookup (bpf is its fast path) and interface capture (ebpf counts in the kernel) run.")
		m.sample("netshape_fast_paths_info", 1, "relay", st.Relay, "procmap", st.Procmap, "capture", st.Capture)
	}
	if b := st.ProcmapBPF; b != nil {
		m.family("netshape_procmap_bpf_lookups_total", "counter", "Process lookups by how the BPF connect record answered (hit; else a sock_diag fallback: miss, stale, error).")
		m.sample("netshape_procmap_bpf_lookups_total", float64(b.Hits), "result", "hit")
		m.sample("netshape_procmap_bpf_lookups_total", float64(b.Misses), "result", "miss")
		m.sample("netshape_procmap_bpf_lookups_total", float64(b.Stale), "result", "stale")
		m.sample("netshape_procmap_bpf_lookups_total", float64(b.Errors), "result", "error")
	}

	qs := b.Quotas()
	slices.SortFunc(qs, func(a, b Quota) int { return int(a.Quota.ID - b.Quota.ID) })
	for _, f := range []struct {
		name, typ, help string
		v               func(q Quota) float64
	}{
		{"netshape_quota_used_bytes", "gauge", "Bytes a quota counted this period.", func(q Quota) float64 { return float64(q.Used) }},
		{"netshape_quota_limit_bytes", "gauge", "A quota's limit this period, grants included.", func(q Quota) float64 { return float64(q.Limit) }},
		{"netshape_quota_forecast_bytes", "gauge", "Expected use at the end of the period at the recent rate.", func(q Quota) float64 { return float64(q.Forecast) }},
		{"netshape_quota_exhausted", "gauge", "1 when a quota is used up.", func(q Quota) float64 { return b2f(q.Exhausted) }},
	} {
		m.family(f.name, f.typ, f.help)
		for _, q := range qs {
			m.sample(f.name, f.v(q), "quota", strconv.FormatInt(q.Quota.ID, 10), "scope", q.ScopeText)
		}
	}

	rep, err := b.Iface()
	m.family("netshape_capture_drops_total", "counter", "Packets the interface capture dropped (accounting lost them).")
	if err == nil {
		for _, e := range rep.Ifaces {
			if e.Capturing || e.Drops > 0 {
				m.sample("netshape_capture_drops_total", float64(e.Drops), "iface", e.Name)
			}
		}
	}
	m.family("netshape_iface_kernel_bytes_total", "counter", "The kernel's byte counters of each interface.")
	if err == nil {
		for _, e := range rep.Ifaces {
			m.sample("netshape_iface_kernel_bytes_total", float64(e.KernelIn), "iface", e.Name, "direction", "in")
			m.sample("netshape_iface_kernel_bytes_total", float64(e.KernelOut), "iface", e.Name, "direction", "out")
		}
	}
	m.family("netshape_iface_blocked", "gauge", "1 when an interface quota ran out and the interface is blocked.")
	if err == nil {
		for _, e := range rep.Ifaces {
			m.sample("netshape_iface_blocked", b2f(e.Blocked), "iface", e.Name)
		}
	}
	if m.err == nil {
		m.err = m.w.Flush()
	}
	return m.err
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
