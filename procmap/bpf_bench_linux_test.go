package procmap

import (
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/netshape/netshape/internal/nstest"
)

// BenchmarkLookupBPF compares, on one connection of this process in a
// namespace of its own, a Lookup answered by the BPF connect record with a
// warm Lookup answered by sock_diag + /proc (the fallback). Each BPF lookup
// takes (deletes) its record, so the record is put back before each one,
// outside the timed part: compare the p50-ns/op figures.
func BenchmarkLookupBPF(b *testing.B) {
	p := nstest.NewPair(b, "tprocbpf")
	var ln net.Listener
	var c net.Conn
	var mBPF, mDiag *Map
	err := nstest.Do(p.Cli, func() (err error) {
		// The Maps first: the recorder sees only connections made after it.
		mBPF = New(Options{BPF: true})
		mDiag = New(Options{})
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		holdConns(b, ln)
		c, err = net.Dial("tcp", ln.Addr().String())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); mBPF.Close(); mDiag.Close() })
	if name, err := mBPF.Backend(); name != "bpf" {
		b.Fatalf("Backend() = %q, %v", name, err)
	}
	local, remote := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
	tr := mBPF.sys.(*linuxBackend).bpf
	key := encodeBPFKey(local, remote)
	var val [bpfValueSize]byte
	if err := tr.conns.Lookup(key[:], val[:]); err != nil {
		b.Fatalf("no record of %v → %v: %v", local, remote, err)
	}
	restore := func() {
		if err := tr.conns.Put(key[:], val[:]); err != nil {
			b.Error(err)
		}
	}

	// inNS runs the measurement on a thread of the client namespace (the
	// fallback's netlink sockets must live there). No b.Fatal inside.
	inNS := func(b *testing.B, setup func(), op func() error) {
		var durs []time.Duration
		var opErr error
		err := nstest.Do(p.Cli, func() error {
			durs = make([]time.Duration, 0, 1024)
			for b.Loop() {
				if setup != nil {
					setup()
				}
				t0 := time.Now()
				err := op()
				durs = append(durs, time.Since(t0))
				if err != nil && opErr == nil {
					opErr = err
				}
			}
			return nil
		})
		if err != nil || opErr != nil {
			b.Fatal(err, opErr)
		}
		slices.Sort(durs)
		b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns/op")
	}
	check := func(m *Map) error {
		p, err := m.Lookup(local, remote)
		if err == nil && p.PID != os.Getpid() {
			b.Errorf("Lookup = %+v, want pid %d", p, os.Getpid())
		}
		return err
	}

	b.Run("bpf", func(b *testing.B) {
		before := mBPF.Stats().BPFHits
		inNS(b, restore, func() error { return check(mBPF) })
		if st := mBPF.Stats(); st.BPFHits-before != uint64(b.N) || st.BPFMisses+st.BPFStale+st.BPFErrors != 0 {
			b.Fatalf("stats %+v after %d lookups: not all answered by BPF", st, b.N)
		}
	})
	b.Run("bpf-map-only", func(b *testing.B) {
		inNS(b, restore, func() error {
			_, ok, err := tr.take(local, remote)
			if !ok && err == nil {
				b.Error("no record")
			}
			return err
		})
	})
	b.Run("sock_diag", func(b *testing.B) {
		inNS(b, nil, func() error { return check(mDiag) })
	})
}
