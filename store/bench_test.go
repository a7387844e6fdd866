package store

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
)

// BenchmarkAddFlows writes flow records in the batches the daemon flushes
// (every closed flow of the last interval in one call): per flow, since the
// flush is a burst of CPU on the daemon beside the relay. Each batch ends
// later than the one before, as the daemon's do: repeating the same end
// times would measure the flows_end index's inserts into its middle.
func BenchmarkAddFlows(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 1000
	flows := make([]flow.Flow, batch)
	for i := range flows {
		flows[i] = mkFlow(i + 1)
	}
	b.ResetTimer()
	for n := range b.N {
		for i := range flows {
			f := &flows[i]
			f.ID = uint64(n*batch + i + 1)
			f.Start = t0.Add(time.Duration(f.ID) * time.Millisecond)
			f.End = f.Start.Add(1500 * time.Millisecond)
		}
		if err := s.AddFlows(flows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/flow")
}
