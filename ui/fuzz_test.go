package ui

import (
	"strings"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

// FuzzMetricsNames feeds process and host names (which come from the
// machine and the network) through the tracker into /metrics: every line
// must still parse and no series may repeat.
func FuzzMetricsNames(f *testing.F) {
	for _, s := range []string{"curl", `we"ird`, "new\nline", `back\slash`, "\xff\xfe", "", "other", "a=b,c=\"d\"}"} {
		f.Add(s, s+".example")
	}
	f.Fuzz(func(t *testing.T, app, host string) {
		tr := NewTracker(TrackerOptions{MaxApps: 1, MaxHosts: 1})
		tr.Sample(time.Unix(0, 0), nil)
		tr.Sample(time.Unix(1, 0), []flow.Flow{
			{ID: 1, Exe: "/bin/" + app, Host: host, Iface: app, BytesIn: 1, BytesOut: 2, State: flow.StateOpen},
			{ID: 2, Exe: "/bin/x", Host: "y", BytesIn: 3, State: flow.StateClosed},
		})
		var sb strings.Builder
		if err := WriteMetrics(&sb, &fakeBackend{}, tr); err != nil {
			t.Fatal(err)
		}
		parseMetrics(t, sb.String())
	})
}
