package ui

import (
	"flag"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/store"
)

var screenshot = flag.String("screenshot", "", "write a screenshot of the dashboard with sample data to this PNG `file` (needs chromium)")

// TestScreenshot renders the dashboard with synthetic data in headless
// Chromium for docs/: go test ./ui -run Screenshot -screenshot=$PWD/docs/dashboard.png
func TestScreenshot(t *testing.T) {
	if *screenshot == "" {
		t.Skip("only with -screenshot=FILE")
	}
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("needs chromium (apt-get install chromium)")
	}
	fb := &fakeBackend{pending: []control.Pending{
		{ID: 12, App: "spotify", Dst: "198.18.0.7", Port: 443, Host: "audio-ak.spotifycdn.example", User: "alice", Count: 3, Deadline: time.Now().Add(25 * time.Second)},
	}}
	tr := NewTracker(TrackerOptions{})
	start := time.Now().Add(-100 * time.Second)
	var in [4]int64
	for i := 0; i <= 100; i++ {
		in[0] += int64(2e6 + 1.5e6*float64(i%20)/20)
		in[1] += int64(4e5 + 3e5*float64((i/7)%2))
		if i > 40 {
			in[2] += 9e5
		}
		in[3] += 6e4
		tr.Sample(start.Add(time.Duration(i)*time.Second), []flow.Flow{
			{ID: 1, Exe: "/usr/lib/firefox/firefox", Host: "video.example.net", Iface: "wlan0", BytesIn: in[0], BytesOut: in[0] / 30, State: flow.StateOpen},
			{ID: 2, Exe: "/usr/bin/apt", Host: "deb.example.org", Iface: "wlan0", BytesIn: in[1], BytesOut: in[1] / 50, State: flow.StateOpen},
			{ID: 3, Exe: "/usr/bin/rsync", Host: "backup.lan.example", Iface: "eth0", BytesIn: in[2] / 20, BytesOut: in[2], State: flow.StateOpen},
			{ID: 4, Exe: "/usr/bin/ssh", Host: "198.18.0.9", Iface: "eth0", BytesIn: in[3], BytesOut: in[3] / 2, State: flow.StateOpen},
		})
	}
	bk := screenshotBackend{fb}
	s, err := NewServer(Config{Addr: "127.0.0.1:0", Token: testToken, Backend: bk, Tracker: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Close()
	cmd := exec.Command(chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(), "--hide-scrollbars",
		"--window-size=1280,1250", "--virtual-time-budget=4000", "--screenshot="+*screenshot, s.URL())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	if st, err := os.Stat(*screenshot); err != nil || st.Size() < 10000 {
		t.Fatalf("screenshot %v %v", st, err)
	}
}

// screenshotBackend adds quotas, rules and history to the fake.
type screenshotBackend struct{ *fakeBackend }

func (screenshotBackend) Quotas() []Quota {
	now := time.Now()
	return []Quota{
		{QuotaStatus: shaper.QuotaStatus{Quota: shaper.Quota{ID: 2, Limit: 50e9}, Used: 31e9, Limit: 50e9, Forecast: 58e9, Rate: 2.1e5,
			PeriodEnd: now.Add(9 * 24 * time.Hour)}, ScopeText: "iface wlan0"},
		{QuotaStatus: shaper.QuotaStatus{Quota: shaper.Quota{ID: 5, Limit: 2e9}, Used: 4e8, Limit: 2e9, Forecast: 9e8, Rate: 1e4,
			PeriodEnd: now.Add(10 * time.Hour)}, ScopeText: "app steam"},
	}
}

func (b screenshotBackend) Usage(q url.Values) ([]store.UsageTotal, error) {
	var out []store.UsageTotal
	day := time.Now().UTC().AddDate(0, 0, -29)
	for i := range 30 {
		d := day.AddDate(0, 0, i)
		w := int64(1)
		if d.Weekday() == time.Saturday || d.Weekday() == time.Sunday {
			w = 3
		}
		out = append(out, store.UsageTotal{Key: d.Format("2006-01-02"), BytesIn: w * (8e8 + int64(i%5)*3e8), BytesOut: w * (6e7 + int64(i%3)*4e7)})
	}
	return out, nil
}

func (b screenshotBackend) Status() control.Status {
	return control.Status{Running: true, Version: "v0.4.0", Backend: "nftables", Active: 4, Total: 1873, Denied: 12,
		BytesIn: 48e9, BytesOut: 3e9, Pending: 1, Default: "ask"}
}

func (b screenshotBackend) Iface() (control.IfaceReport, error) {
	return control.IfaceReport{Capture: true, Ifaces: []control.IfaceEntry{
		{Name: "wlan0", Up: true, KernelIn: 41e9, KernelOut: 2.2e9, ProxiedIn: 39e9, ProxiedOut: 1.9e9, Capturing: true},
		{Name: "eth0", Up: true, KernelIn: 6e9, KernelOut: 9e9, ProxiedIn: 5e9, ProxiedOut: 8e9, Capturing: true, Drops: 3},
	}}, nil
}
