package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/proxy"
	"github.com/netshape/netshape/store"
)

// fakeSink records what flushes write. A write fails while fail is set,
// and waits while block is non-nil (until it is closed).
type fakeSink struct {
	mu    sync.Mutex
	fail  bool
	block chan struct{}
	// entered is signalled when AddFlows starts waiting on block.
	entered chan struct{}
	usage   map[usageKey][2]int64
	flows   []uint64
}

func (s *fakeSink) AddUsage(rows []store.UsageRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("disk full")
	}
	for _, r := range rows {
		k := usageKey{r.App, r.Host, r.Iface}
		t := s.usage[k]
		s.usage[k] = [2]int64{t[0] + r.BytesIn, t[1] + r.BytesOut}
	}
	return nil
}

func (s *fakeSink) AddFlows(fs []flow.Flow) error {
	s.mu.Lock()
	block, fail := s.block, s.fail
	s.mu.Unlock()
	if block != nil {
		s.entered <- struct{}{}
		<-block
	}
	if fail {
		return errors.New("disk full")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range fs {
		s.flows = append(s.flows, f.ID)
	}
	return nil
}

func (s *fakeSink) set(fail bool, block chan struct{}) {
	s.mu.Lock()
	s.fail, s.block = fail, block
	s.mu.Unlock()
}

func usageDaemon(t *testing.T, sink usageSink) *Daemon {
	t.Helper()
	p, err := proxy.New(proxy.Config{
		Listen:      []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")},
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("unused") },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d := &Daemon{pol: policy.DefaultConfig(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), proxy: p}
	d.usage.init(sink)
	return d
}

func closedFlow(id uint64, exe string, in, out int64) *flow.Flow {
	f := testFlow(id, exe, "a.example")
	f.BytesIn, f.BytesOut = in, out
	return f
}

// A failed write keeps the usage and the flow records for the next flush,
// which writes each byte and each flow once, oldest flow first.
func TestFlushUsageKeepsWhatFailed(t *testing.T) {
	sink := &fakeSink{usage: map[usageKey][2]int64{}, fail: true}
	d := usageDaemon(t, sink)
	d.flowClosed(closedFlow(1, "/usr/bin/curl", 100, 10))
	d.flowClosed(closedFlow(2, "/usr/bin/wget", 200, 20))
	d.flushUsage(time.Now())
	if len(sink.usage) != 0 || len(sink.flows) != 0 {
		t.Fatalf("a failing store recorded %v %v", sink.usage, sink.flows)
	}
	if len(d.warnings) == 0 {
		t.Fatal("a failed write was not reported")
	}

	sink.set(false, nil)
	d.flowClosed(closedFlow(3, "/usr/bin/curl", 1000, 1))
	d.flushUsage(time.Now())
	d.flushUsage(time.Now()) // nothing new: writes nothing twice
	want := map[usageKey][2]int64{
		{"curl", "a.example", ""}: {1100, 11},
		{"wget", "a.example", ""}: {200, 20},
	}
	if len(sink.usage) != len(want) {
		t.Fatalf("usage %v, want %v", sink.usage, want)
	}
	for k, v := range want {
		if sink.usage[k] != v {
			t.Errorf("usage %v = %v, want %v", k, sink.usage[k], v)
		}
	}
	if got := sink.flows; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("flows stored %v, want [1 2 3]", got)
	}
}

// While the store fails, at most maxUnstoredFlows flow records are kept:
// the newest.
func TestFlushUsageBoundsUnstoredFlows(t *testing.T) {
	sink := &fakeSink{usage: map[usageKey][2]int64{}, fail: true}
	d := usageDaemon(t, sink)
	n := maxUnstoredFlows + 5
	for i := 1; i <= n; i++ {
		d.flowClosed(closedFlow(uint64(i), "/usr/bin/curl", 1, 1))
		if i%4000 == 0 {
			d.flushUsage(time.Now())
		}
	}
	d.flushUsage(time.Now())
	sink.set(false, nil)
	d.flushUsage(time.Now())
	if len(sink.flows) != maxUnstoredFlows {
		t.Fatalf("stored %d flows, want %d", len(sink.flows), maxUnstoredFlows)
	}
	if first, last := sink.flows[0], sink.flows[len(sink.flows)-1]; first != uint64(n-maxUnstoredFlows+1) || last != uint64(n) {
		t.Errorf("stored flows %d..%d, want the newest %d..%d", first, last, n-maxUnstoredFlows+1, n)
	}
	if got := sink.usage[usageKey{"curl", "a.example", ""}]; got != [2]int64{int64(n), int64(n)} {
		t.Errorf("usage %v, want every byte (%d each way)", got, n)
	}
}

// A flow that ends while a flush is writing does not wait for the write,
// and a second flush waits for the first instead of running beside it.
func TestFlushUsageWritesOutsideTheLock(t *testing.T) {
	sink := &fakeSink{usage: map[usageKey][2]int64{}, entered: make(chan struct{}, 1)}
	d := usageDaemon(t, sink)
	d.flowClosed(closedFlow(1, "/usr/bin/curl", 1, 1))
	block := make(chan struct{})
	sink.set(false, block)
	flushed := make(chan struct{})
	go func() {
		d.flushUsage(time.Now())
		close(flushed)
	}()
	<-sink.entered // the first flush is writing flow 1

	closed := make(chan struct{})
	go func() {
		d.flowClosed(closedFlow(2, "/usr/bin/curl", 2, 2))
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("flowClosed waited for the store write")
	}
	second := make(chan struct{})
	go func() {
		d.flushUsage(time.Now())
		close(second)
	}()
	select {
	case <-second:
		t.Fatal("a second flush ran while the first was writing")
	case <-sink.entered:
		t.Fatal("a second flush wrote while the first was writing")
	case <-time.After(50 * time.Millisecond):
	}
	sink.set(false, nil)
	close(block)
	<-flushed
	<-second
	if got := sink.flows; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("flows stored %v, want [1 2]", got)
	}
}

// A flush hands its emptied buffer to the next one: the event loops' appends
// (flowClosed) do not grow a fresh buffer every flush, and the buffer keeps
// no old record's strings alive.
func TestFlushUsageReusesItsBuffer(t *testing.T) {
	sink := &fakeSink{usage: map[usageKey][2]int64{}}
	d := usageDaemon(t, sink)
	for i := 1; i <= 100; i++ {
		d.flowClosed(closedFlow(uint64(i), "/usr/bin/curl", 1, 1))
	}
	d.flushUsage(time.Now())
	spare := d.usage.spare
	if cap(spare) < 100 {
		t.Fatalf("the flush kept a buffer of %d records, want the 100 it wrote", cap(spare))
	}
	if f := spare[:cap(spare)][0]; f.Exe != "" || f.ID != 0 {
		t.Errorf("the kept buffer still holds a record: %+v", f)
	}
	f := closedFlow(101, "/usr/bin/curl", 1, 1)
	if n := testing.AllocsPerRun(50, func() { d.flowClosed(f) }); n != 0 {
		t.Errorf("flowClosed allocated %v times per flow into the kept buffer", n)
	}
	d.flushUsage(time.Now())
	if got := len(sink.flows); got != 151 {
		t.Fatalf("stored %d flows, want 151", got)
	}
	for i, id := range sink.flows {
		if want := min(uint64(i+1), 101); id != want {
			t.Fatalf("flow %d stored as %d, want %d", i, id, want)
		}
	}
	// A buffer grown past maxSpareFlows by a burst is let go.
	for i := range maxSpareFlows + 1 {
		d.flowClosed(closedFlow(uint64(1000+i), "/usr/bin/curl", 1, 1))
	}
	d.flushUsage(time.Now())
	if d.usage.spare != nil {
		t.Errorf("kept a buffer of %d records past the bound", cap(d.usage.spare))
	}
}
