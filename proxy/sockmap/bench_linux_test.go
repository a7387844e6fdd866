package sockmap

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSockmapVsSplice streams over loopback client → relay → server
// with 1 and 8 streams at once, three ways in every iteration so all see
// the same machine load: direct (no relay), splice (the user-space relay:
// io.Copy between TCPConns, which splices through a pipe) and sockmap
// (this package). It reports MB/s for each, CPU seconds per GB of this
// process (getrusage) and of the whole machine (/proc/stat, which also sees
// the kernel workers sockmap sends from, and other users' load), and the
// ratios.
//
//	go test -run '^$' -bench SockmapVsSplice -benchtime 3x -count 3 ./proxy/sockmap
func BenchmarkSockmapVsSplice(b *testing.B) {
	needRoot(b)
	for _, streams := range []int{1, 8} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			r := openRelay(b)
			l := listener(b)
			per := int64(64<<20) / int64(streams) * 2 // 128 MiB in total per run
			modes := []string{"direct", "splice", "sockmap"}
			var wall [3]time.Duration
			var cpu, sys [3]float64
			for b.Loop() {
				for i, mode := range modes {
					w, c, s := streamRun(b, r, l, mode, streams, per)
					wall[i] += w
					cpu[i] += c
					sys[i] += s
				}
			}
			gb := float64(per) * float64(streams) * float64(b.N) / 1e9
			for i, mode := range modes {
				b.ReportMetric(gb*1e3/wall[i].Seconds(), mode+"-MB/s")
				b.ReportMetric(cpu[i]/gb, mode+"-cpu-s/GB")
				b.ReportMetric(sys[i]/gb, mode+"-sys-cpu-s/GB")
			}
			b.ReportMetric(wall[1].Seconds()/wall[2].Seconds(), "sockmap/splice-speed")
			b.ReportMetric(cpu[2]/cpu[1], "sockmap/splice-cpu")
			b.ReportMetric(sys[2]/sys[1], "sockmap/splice-sys-cpu")
		})
	}
}

// streamRun sets up streams connections for mode, then times n bytes on
// each from client to server.
func streamRun(b *testing.B, r *Relay, l *net.TCPListener, mode string, streams int, n int64) (time.Duration, float64, float64) {
	type conn struct{ cli, srv *net.TCPConn }
	conns := make([]conn, streams)
	var pairs []*Pair
	var relays sync.WaitGroup
	for i := range conns {
		if mode == "direct" {
			conns[i].cli, conns[i].srv = connPair(b, l)
			continue
		}
		ch := newChain(b, l)
		conns[i] = conn{ch.cli, ch.srv}
		switch mode {
		case "splice":
			relays.Add(2)
			go func() { defer relays.Done(); io.Copy(ch.b, ch.a); ch.b.CloseWrite() }()
			go func() { defer relays.Done(); io.Copy(ch.a, ch.b); ch.a.CloseWrite() }()
		case "sockmap":
			p, err := r.Splice(context.Background(), ch.a, ch.b)
			if err != nil {
				b.Fatal(err)
			}
			pairs = append(pairs, p)
		}
	}
	buf := make([]byte, 256<<10)
	cpu0, sys0 := processCPU(), machineCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for sent := int64(0); sent < n; sent += int64(len(buf)) {
				if _, err := c.cli.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
			c.cli.CloseWrite()
		}()
		go func() {
			defer wg.Done()
			got, err := io.Copy(io.Discard, c.srv)
			if err != nil || got != n {
				b.Errorf("server got %d bytes, %v; want %d", got, err, n)
			}
			c.srv.Close()
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	cpu, sys := processCPU()-cpu0, machineCPU()-sys0
	for _, c := range conns {
		c.cli.Close()
	}
	relays.Wait()
	for _, p := range pairs {
		p.Wait()
	}
	return wall, cpu, sys
}

// processCPU is this process's user+system CPU seconds.
func processCPU() float64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// machineCPU is the machine's busy CPU seconds from /proc/stat (all but
// idle and iowait), at USER_HZ = 100.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // steal, guest (guest is inside user)
			break
		}
		busy += v
	}
	return busy / 100
}
