package store

import (
	"path/filepath"
	"testing"

	"github.com/netshape/netshape/flow"
)

// BenchmarkAddFlows writes flow records in the batches the daemon flushes
// (every closed flow of the last interval in one call): per flow, since the
// flush is a burst of CPU on the daemon beside the relay.
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
	for range b.N {
		if err := s.AddFlows(flows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/flow")
}
