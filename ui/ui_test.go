package ui

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/store"
)

// fakeBackend is a Backend with canned data that records answers.
type fakeBackend struct {
	mu      sync.Mutex
	flows   []flow.Flow
	pending []control.Pending
	answers []control.Answer
	usageQ  url.Values
}

func (f *fakeBackend) Status() control.Status {
	return control.Status{Running: true, Version: "test", Backend: "fake", Active: 2, Total: 7, Denied: 1, BytesIn: 1000, BytesOut: 500, Pending: len(f.Pending()), Started: time.Unix(1700000000, 0),
		Relay: "event loops (2)", Procmap: "bpf", ProcmapBPF: &control.ProcmapBPF{Hits: 40, Misses: 2, Errors: 1}, Capture: "ring", CaptureNote: "no CAP_BPF"}
}
func (f *fakeBackend) Flows(closed bool) []flow.Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]flow.Flow(nil), f.flows...)
}
func (f *fakeBackend) Pending() []control.Pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]control.Pending(nil), f.pending...)
}
func (f *fakeBackend) Answer(id int64, a control.Answer) (control.AnswerResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.pending {
		if p.ID == id {
			f.answers = append(f.answers, a)
			f.pending = append(f.pending[:i], f.pending[i+1:]...)
			return control.AnswerResult{Released: p.Count}, nil
		}
	}
	return control.AnswerResult{}, fmt.Errorf("%w: no pending %d", ErrNotFound, id)
}
func (f *fakeBackend) Rules() []policy.Rule {
	return []policy.Rule{{ID: 1, App: "curl", Host: "*.example.com", Action: policy.Allow, Rate: 1e5}}
}
func (f *fakeBackend) Quotas() []Quota {
	return []Quota{{QuotaStatus: shaper.QuotaStatus{Quota: shaper.Quota{ID: 3, Limit: 1e9}, Used: 4e8, Limit: 1e9, Forecast: 9e8,
		PeriodEnd: time.Now().Add(24 * time.Hour)}, ScopeText: `app "fire\fox"`}}
}
func (f *fakeBackend) Usage(q url.Values) ([]store.UsageTotal, error) {
	f.mu.Lock()
	f.usageQ = q
	f.mu.Unlock()
	if q.Get("by") == "bogus" {
		return nil, fmt.Errorf("%w: by %q", ErrBadRequest, "bogus")
	}
	return []store.UsageTotal{{Key: "2025-06-01", BytesIn: 10, BytesOut: 20}, {Key: "=cmd()", BytesIn: 1, BytesOut: 2}}, nil
}
func (f *fakeBackend) Iface() (control.IfaceReport, error) {
	return control.IfaceReport{Ifaces: []control.IfaceEntry{{Name: "eth0", Up: true, KernelIn: 5, KernelOut: 6, Drops: 2, Capturing: true}}}, nil
}

const testToken = "0123456789abcdef0123456789abcdef"

func newTestServer(t *testing.T) (*Server, *fakeBackend, *httptest.Server) {
	t.Helper()
	fb := &fakeBackend{pending: []control.Pending{{ID: 5, App: "curl", Dst: "198.18.0.2", Port: 443, Count: 2}}}
	tr := NewTracker(TrackerOptions{})
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Token: testToken, Backend: fb, Tracker: tr})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, fb, ts
}

func do(t *testing.T, method, u string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&sb)
	return resp, sb.String()
}

func TestAuth(t *testing.T) {
	_, _, ts := newTestServer(t)
	cookie := "netshape_ui=" + testToken
	for _, tc := range []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		want   int
	}{
		{"page without token", "GET", "/", nil, 401},
		{"api without token", "GET", "/api/live", nil, 401},
		{"metrics without token", "GET", "/metrics", nil, 401},
		{"static without token", "GET", "/static/app.js", nil, 401},
		{"wrong token in url", "GET", "/?token=ffffffffffffffffffffffffffffffff", nil, 401},
		{"short token header", "GET", "/api/live", map[string]string{"X-Netshape-Token": "0123"}, 401},
		{"wrong cookie", "GET", "/api/live", map[string]string{"Cookie": "netshape_ui=nope"}, 401},
		{"token in url logs in", "GET", "/?token=" + testToken, nil, 303},
		{"cookie", "GET", "/api/live", map[string]string{"Cookie": cookie}, 200},
		{"bearer", "GET", "/metrics", map[string]string{"Authorization": "Bearer " + testToken}, 200},
		{"header", "GET", "/api/rules", map[string]string{"X-Netshape-Token": testToken}, 200},
		{"page with cookie", "GET", "/", map[string]string{"Cookie": cookie}, 200},
		{"static with cookie", "GET", "/static/style.css", map[string]string{"Cookie": cookie}, 200},
		{"rebinding host", "GET", "/api/live", map[string]string{"X-Netshape-Token": testToken, "Host": "evil.example:9041"}, 421},
		{"unknown path", "GET", "/nope", map[string]string{"Cookie": cookie}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
			for k, v := range tc.hdr {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestLoginSetsStrictCookieAndDropsToken(t *testing.T) {
	_, _, ts := newTestServer(t)
	resp, _ := do(t, "GET", ts.URL+"/?token="+testToken+"&x=1", nil, "")
	if loc := resp.Header.Get("Location"); strings.Contains(loc, "token") || !strings.HasPrefix(loc, "/") {
		t.Fatalf("redirect to %q: want the page without the token", loc)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == cookieName {
			c = k
		}
	}
	if c == nil || c.Value != testToken || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict with the token", c)
	}
	_, page := do(t, "GET", ts.URL+"/", map[string]string{"Cookie": cookieName + "=" + testToken}, "")
	if !strings.Contains(page, `content="`+testToken+`"`) || !strings.Contains(page, "/static/app.js") {
		t.Fatalf("page lacks the token meta tag or the script:\n%s", page)
	}
}

func TestAnswerCSRF(t *testing.T) {
	_, fb, ts := newTestServer(t)
	cookie := cookieName + "=" + testToken
	body := `{"action":"allow"}`
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"cookie only (a cross-site form)", map[string]string{"Cookie": cookie, "Content-Type": "application/json"}, 403},
		{"header but foreign origin", map[string]string{"Cookie": cookie, "X-Netshape-Token": testToken, "Origin": "http://evil.example"}, 403},
		{"header but null origin", map[string]string{"X-Netshape-Token": testToken, "Origin": "null"}, 403},
		{"header but cross-site fetch", map[string]string{"X-Netshape-Token": testToken, "Sec-Fetch-Site": "cross-site"}, 403},
		{"wrong header token", map[string]string{"Cookie": cookie, "X-Netshape-Token": strings.Repeat("f", 32)}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, out := do(t, "POST", ts.URL+"/api/pending/5", tc.hdr, body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, out, tc.want)
			}
		})
	}
	if len(fb.answers) != 0 {
		t.Fatalf("a refused request answered: %+v", fb.answers)
	}
	origin := strings.TrimSuffix(ts.URL, "/")
	resp, out := do(t, "POST", ts.URL+"/api/pending/5", map[string]string{"Cookie": cookie, "X-Netshape-Token": testToken,
		"Origin": origin, "Sec-Fetch-Site": "same-origin"}, `{"action":"allow","always":true,"scope":"host"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("same-origin answer: %d %s", resp.StatusCode, out)
	}
	var res control.AnswerResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Released != 2 {
		t.Fatalf("answer result %s (%v): want released 2", out, err)
	}
	if len(fb.answers) != 1 || fb.answers[0].Action != "allow" || !fb.answers[0].Always {
		t.Fatalf("backend got %+v", fb.answers)
	}
	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{"/api/pending/5", `{"action":"allow"}`, 404}, // already answered
		{"/api/pending/x", `{"action":"allow"}`, 400},
		{"/api/pending/5", `{"action":"maybe"}`, 400},
		{"/api/pending/5", `{"action":"allow","evil":1}`, 400},
	} {
		resp, out := do(t, "POST", ts.URL+tc.path, map[string]string{"Authorization": "Bearer " + testToken}, tc.body)
		if resp.StatusCode != tc.want {
			t.Errorf("POST %s %s: %d %s, want %d", tc.path, tc.body, resp.StatusCode, out, tc.want)
		}
	}
}

func TestUsageCSV(t *testing.T) {
	_, fb, ts := newTestServer(t)
	h := map[string]string{"X-Netshape-Token": testToken}
	resp, out := do(t, "GET", ts.URL+"/api/usage.csv?by=day&from=2025-06-01T00:00:00Z", h, "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	want := "day,bytes_in,bytes_out,bytes_total\n2025-06-01,10,20,30\n'=cmd(),1,2,3\n"
	if out != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", out, want)
	}
	if fb.usageQ.Get("from") != "2025-06-01T00:00:00Z" {
		t.Fatalf("query not passed on: %v", fb.usageQ)
	}
	if resp, _ := do(t, "GET", ts.URL+"/api/usage?by=bogus", h, ""); resp.StatusCode != 400 {
		t.Fatalf("bad by: %d, want 400", resp.StatusCode)
	}
}

func TestCheckAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		remote bool
		ok     bool
		remErr bool
	}{
		{"127.0.0.1:9041", false, true, false},
		{"[::1]:9041", false, true, false},
		{"localhost:9041", false, true, false},
		{"127.0.0.2:9041", false, true, false},
		{"0.0.0.0:9041", false, false, true},
		{":9041", false, false, true},
		{"192.168.1.5:9041", false, false, true},
		{"192.168.1.5:9041", true, true, false},
		{":9041", true, true, false},
		{"myhost:9041", true, false, false},
		{"127.0.0.1", false, false, false},
		{"127.0.0.1:", false, false, false},
	} {
		err := CheckAddr(tc.addr, tc.remote)
		if (err == nil) != tc.ok || errors.Is(err, ErrRemote) != tc.remErr {
			t.Errorf("CheckAddr(%q, %v) = %v", tc.addr, tc.remote, err)
		}
	}
	if _, err := NewServer(Config{Addr: "0.0.0.0:1", Token: testToken, Backend: &fakeBackend{}, Tracker: NewTracker(TrackerOptions{})}); !errors.Is(err, ErrRemote) {
		t.Fatalf("NewServer on 0.0.0.0 without AllowRemote: %v", err)
	}
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, TokenFile)
	a, err := LoadOrCreateToken(p)
	if err != nil {
		t.Fatal(err)
	}
	if !validToken(a) {
		t.Fatalf("token %q", a)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := LoadOrCreateToken(p)
	if a != b {
		t.Fatal("token not kept across restarts")
	}
	os.Chmod(p, 0o644)
	c, _ := LoadOrCreateToken(p)
	if c == a {
		t.Fatal("a token others could read was reused")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v after replace", st.Mode().Perm())
	}
	os.WriteFile(p, []byte("short\n"), 0o600)
	if d, _ := LoadOrCreateToken(p); !validToken(d) {
		t.Fatalf("malformed token file kept: %q", d)
	}
	if _, err := LoadOrCreateToken(filepath.Join(dir, "missing", TokenFile)); err == nil {
		t.Fatal("no error for an unwritable path")
	}
}

func mkFlow(id uint64, exe, host, iface string, in, out int64, st flow.State) flow.Flow {
	return flow.Flow{ID: id, Exe: exe, Host: host, Iface: iface, BytesIn: in, BytesOut: out, State: st,
		Dst: netip.MustParseAddrPort("198.18.0.2:443")}
}

func TestTrackerRates(t *testing.T) {
	tr := NewTracker(TrackerOptions{MaxApps: 2, History: 3})
	t0 := time.Unix(1000, 0)
	// Bytes before the first sample are a baseline, not a rate.
	tr.Sample(t0, []flow.Flow{mkFlow(1, "/usr/bin/curl", "a.example", "eth0", 5000, 100, flow.StateOpen)})
	if l := tr.Live(false); l.In != 0 || l.BytesIn != 0 {
		t.Fatalf("baseline counted: %+v", l)
	}
	// Flow 1 grows; flow 2 opened and closed between samples; flow 3 is new and open.
	tr.Sample(t0.Add(2*time.Second), []flow.Flow{
		mkFlow(2, "/usr/bin/wget", "b.example", "eth0", 400, 40, flow.StateClosed),
		mkFlow(1, "/usr/bin/curl", "a.example", "eth0", 7000, 300, flow.StateOpen),
		mkFlow(3, "/opt/ff/firefox", "a.example", "wlan0", 600, 0, flow.StateOpen),
	})
	l := tr.Live(true)
	if l.In != (2000+400+600)/2.0 || l.Out != (200+40)/2.0 {
		t.Fatalf("total rate in %v out %v", l.In, l.Out)
	}
	if l.Open != 2 {
		t.Fatalf("open %d, want 2", l.Open)
	}
	byName := map[string]Rate{}
	for _, r := range l.Apps {
		byName[r.Name] = r
	}
	if r := byName["curl"]; r.In != 1000 || r.Out != 100 || r.BytesIn != 2000 || r.Open != 1 {
		t.Fatalf("curl %+v", r)
	}
	if l.Apps[0].Name != "curl" {
		t.Fatalf("apps not sorted by rate: %+v", l.Apps)
	}
	// MaxApps 2: firefox came third and counts as other.
	tot := tr.Totals()
	if len(tot.Apps) != 3 || tot.Apps[Other] != [2]int64{600, 0} || tot.Apps["wget"] != [2]int64{400, 40} {
		t.Fatalf("app totals %+v", tot.Apps)
	}
	if tot.Hosts["a.example"] != [2]int64{2600, 200} || tot.Ifaces["wlan0"] != [2]int64{600, 0} {
		t.Fatalf("host/iface totals %+v %+v", tot.Hosts, tot.Ifaces)
	}
	// The closed flow stays in the ring: not counted twice.
	tr.Sample(t0.Add(3*time.Second), []flow.Flow{
		mkFlow(2, "/usr/bin/wget", "b.example", "eth0", 400, 40, flow.StateClosed),
		mkFlow(1, "/usr/bin/curl", "a.example", "eth0", 7000, 300, flow.StateOpen),
	})
	if tot := tr.Totals(); tot.Apps["wget"] != [2]int64{400, 40} {
		t.Fatalf("closed flow counted twice: %+v", tot.Apps)
	}
	for i := 0; i < 5; i++ {
		tr.Sample(t0.Add(time.Duration(4+i)*time.Second), nil)
	}
	h := tr.Live(true).History
	if len(h) != 3 || !h[0].Time.Before(h[2].Time) {
		t.Fatalf("history ring: %+v", h)
	}
}

func TestSortRates(t *testing.T) {
	rs := []Rate{{Name: "b", In: 1, BytesIn: 50}, {Name: "a", In: 1, BytesIn: 10}, {Name: "c", In: 5}}
	SortRates(rs, SortRate)
	if got := rs[0].Name + rs[1].Name + rs[2].Name; got != "cba" {
		t.Fatalf("by rate: %s", got)
	}
	SortRates(rs, SortName)
	if got := rs[0].Name + rs[1].Name + rs[2].Name; got != "abc" {
		t.Fatalf("by name: %s", got)
	}
	SortRates(rs, SortTotal)
	if got := rs[0].Name + rs[1].Name + rs[2].Name; got != "bac" {
		t.Fatalf("by total: %s", got)
	}
}

var (
	reHelp   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$`)
	reType   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|untyped)$`)
	reSample = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$`)
)

// parseMetrics checks the text format line by line and returns the samples.
func parseMetrics(t *testing.T, text string) map[string]string {
	t.Helper()
	types := map[string]string{}
	samples := map[string]string{}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case reHelp.MatchString(line):
		case reType.MatchString(line):
			m := reType.FindStringSubmatch(line)
			if _, dup := types[m[1]]; dup {
				t.Errorf("line %d: second TYPE for %s", i+1, m[1])
			}
			types[m[1]] = m[2]
		case reSample.MatchString(line):
			m := reSample.FindStringSubmatch(line)
			if types[m[1]] == "" {
				t.Errorf("line %d: sample of %s before its TYPE", i+1, m[1])
			}
			if types[m[1]] == "counter" && !strings.HasSuffix(m[1], "_total") {
				t.Errorf("line %d: counter %s without _total", i+1, m[1])
			}
			key := m[1] + m[2]
			if _, dup := samples[key]; dup {
				t.Errorf("line %d: duplicate series %s", i+1, key)
			}
			samples[key] = m[3]
		default:
			t.Errorf("line %d does not parse: %q", i+1, line)
		}
	}
	return samples
}

func TestMetrics(t *testing.T) {
	_, fb, ts := newTestServer(t)
	_ = fb
	tr := NewTracker(TrackerOptions{MaxHosts: 1})
	tr.Sample(time.Unix(0, 0), nil)
	tr.Sample(time.Unix(1, 0), []flow.Flow{
		mkFlow(1, "/bin/we\"ird\napp", "a.example", "eth0", 10, 20, flow.StateOpen),
		mkFlow(2, "/bin/x", "b.example", "eth0", 1, 2, flow.StateClosed),
	})
	var sb strings.Builder
	if err := WriteMetrics(&sb, fb, tr); err != nil {
		t.Fatal(err)
	}
	s := parseMetrics(t, sb.String())
	for k, v := range map[string]string{
		`netshape_flows_active`: "2",
		`netshape_flows_total`:  "7",
		`netshape_pending`:      "1",
		`netshape_app_bytes_total{app="we\"ird\napp",direction="in"}`:                    "10",
		`netshape_host_bytes_total{host="other",direction="out"}`:                        "2",
		`netshape_quota_used_bytes{quota="3",scope="app \"fire\\fox\""}`:                 "4e+08",
		`netshape_capture_drops_total{iface="eth0"}`:                                     "2",
		`netshape_proxy_bytes_total{direction="in"}`:                                     "1000",
		`netshape_iface_bytes_total{iface="eth0",direction="in"}`:                        "11",
		`netshape_quota_limit_bytes{quota="3",scope="app \"fire\\fox\""}`:                "1e+09",
		`netshape_fast_paths_info{relay="event loops (2)",procmap="bpf",capture="ring"}`: "1",
		`netshape_procmap_bpf_lookups_total{result="hit"}`:                               "40",
		`netshape_procmap_bpf_lookups_total{result="miss"}`:                              "2",
		`netshape_procmap_bpf_lookups_total{result="stale"}`:                             "0",
		`netshape_procmap_bpf_lookups_total{result="error"}`:                             "1",
	} {
		if s[k] != v {
			t.Errorf("%s = %q, want %q", k, s[k], v)
		}
	}
	if t.Failed() {
		t.Log(sb.String())
	}
	// Served with the token on the dashboard listener.
	resp, out := do(t, "GET", ts.URL+"/metrics", map[string]string{"Authorization": "Bearer " + testToken}, "")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	parseMetrics(t, out)
}

func TestAPIJSON(t *testing.T) {
	_, fb, ts := newTestServer(t)
	fb.pending = nil
	h := map[string]string{"X-Netshape-Token": testToken}
	for _, p := range []string{"/api/live?history=1", "/api/status", "/api/pending", "/api/rules", "/api/quotas", "/api/iface", "/api/usage?by=day"} {
		resp, out := do(t, "GET", ts.URL+p, h, "")
		var v any
		if resp.StatusCode != 200 || json.Unmarshal([]byte(out), &v) != nil {
			t.Errorf("%s: %d %s", p, resp.StatusCode, out)
		}
		if p == "/api/pending" && strings.TrimSpace(out) != "[]" {
			t.Errorf("empty pending list is %s, want []", out)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
	}
}
