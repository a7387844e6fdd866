//go:build unix

package procmap

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// reportP50 times each call of op and reports the median as p50-ns/op.
func reportP50(b *testing.B, op func()) {
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		op()
		durs = append(durs, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns/op")
}

// BenchmarkProcFS measures the inode → pid part against a fake /proc of 2,000
// processes holding 10 sockets (and 2 other files) each: 20,000 sockets.
func BenchmarkProcFS(b *testing.B) {
	const nproc, nsock = 2000, 10
	fp := newFakeProc(b)
	for pid := 1000; pid < 1000+nproc; pid++ {
		fds := map[int]string{0: "/dev/null", 1: "pipe:[1]"}
		for i := range nsock {
			fds[3+i] = sock(pid*100 + i)
		}
		fp.addProc(pid, 1, uint64(pid), "/usr/bin/app", fds)
	}
	last := uint64((1000+nproc-1)*100 + nsock - 1)

	b.Run("warm", func(b *testing.B) {
		fs := newProcFS(fp.root, 4096, 1<<20)
		if _, err := fs.findPID(last); err != nil {
			b.Fatal(err)
		}
		reportP50(b, func() {
			if _, err := fs.findPID(last); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("warm+details", func(b *testing.B) {
		fs := newProcFS(fp.root, 4096, 1<<20)
		reportP50(b, func() {
			pid, err := fs.findPID(last)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := fs.proc(pid); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("miss-new-pid", func(b *testing.B) {
		// The common miss: a client process that did not exist at the last scan.
		fs := newProcFS(fp.root, 4096, 1<<20)
		if _, err := fs.findPID(last); err != nil {
			b.Fatal(err)
		}
		pid := 900000
		reportP50(b, func() {
			b.StopTimer()
			pid++
			fp.addProc(pid, 1, 1, "/usr/bin/new", map[int]string{3: sock(pid)})
			b.StartTimer()
			if got, err := fs.findPID(uint64(pid)); err != nil || got != pid {
				b.Fatal(got, err)
			}
			b.StopTimer()
			os.RemoveAll(filepath.Join(fp.root, strconv.Itoa(pid)))
			b.StartTimer()
		})
	})
	b.Run("cold-full-scan", func(b *testing.B) {
		// Worst case: empty cache, the socket is in the last pid read.
		reportP50(b, func() {
			fs := newProcFS(fp.root, 4096, 1<<20)
			if _, err := fs.findPID(last); err != nil {
				b.Fatal(err)
			}
		})
	})
}
