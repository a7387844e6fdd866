//go:build linux

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// latmix measures connect + 1-byte round trip latency for several targets
// interleaved in short blocks (latBlock samples of A, then of C, then of B,
// the order shuffled every round), so drift on a shared machine falls on
// every target alike; with -dump it writes every sample with its time, to
// line a tail up with what caused it. Each target is probed from a thread of
// its own that stays in the target's client namespace, with blocking
// syscalls: no runtime poller or goroutine hand-off in the timed part. It
// runs from the host namespace but opens every socket inside a bench
// namespace, so no traffic leaves those.
//
// `nsbench run` does not use it: with every relay up at once, one relay's
// background work (netshape's flush of thousands of flow records every 2 s)
// lands in the others' samples; in a trial full run the p99 of every
// contender, direct's included, rose 2-3x. It is a tool for by-hand runs:
//
//	nsbench latmix -n 6000 -target a=NETNS=198.18.0.2:7000 [-target ...] [-dump FILE]
//
// It prints a JSON object: target name → LatResult.
func latmix(args []string) error {
	fs := flag.NewFlagSet("latmix", flag.ExitOnError)
	var targets []string
	fs.Func("target", "`NAME=NETNS=ADDR:PORT` of one contender (repeatable)", func(s string) error {
		targets = append(targets, s)
		return nil
	})
	n := fs.Int("n", 2000, "samples per contender")
	warm := fs.Int("warm", 50, "unrecorded warm-up rounds")
	maxT := fs.Duration("max-t", 0, "stop after this long with fewer samples (0: no limit)")
	dump := fs.String("dump", "", "also write every sample to `FILE` (contender, start µs since the first, latency µs)")
	fs.Parse(args)
	var dumpW *bufio.Writer
	if *dump != "" {
		f, err := os.Create(*dump)
		if err != nil {
			return err
		}
		defer f.Close()
		dumpW = bufio.NewWriter(f)
		defer dumpW.Flush()
	}
	if len(targets) == 0 {
		return errors.New("latmix: no -target")
	}
	type probe struct {
		name string
		addr netip.AddrPort
		req  chan struct{}
		res  chan probeResult
		ds   []time.Duration
	}
	var ps []*probe
	for _, t := range targets {
		parts := strings.SplitN(t, "=", 3)
		if len(parts) != 3 {
			return fmt.Errorf("latmix: -target %q: want NAME=NETNS=ADDR:PORT", t)
		}
		ap, err := netip.ParseAddrPort(parts[2])
		if err != nil || !ap.Addr().Is4() {
			return fmt.Errorf("latmix: -target %q: want an IPv4 ADDR:PORT", t)
		}
		p := &probe{name: parts[0], addr: ap, req: make(chan struct{}), res: make(chan probeResult), ds: make([]time.Duration, 0, *n)}
		if err := startProber(parts[1], p.addr, p.req, p.res); err != nil {
			return fmt.Errorf("latmix: %s: %w", p.name, err)
		}
		ps = append(ps, p)
	}
	defer func() {
		for _, p := range ps {
			close(p.req)
		}
	}()
	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2)) // a fixed order sequence: runs compare alike
	order := slices.Clone(ps)
	for i := 0; ; i += latBlock {
		if i >= *warm && len(ps[0].ds) >= *n {
			break
		}
		if i >= *warm && *maxT > 0 && time.Since(start) >= *maxT {
			fmt.Fprintf(os.Stderr, "nsbench latmix: stopped after %v with %d of %d samples each\n", *maxT, len(ps[0].ds), *n)
			break
		}
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, p := range order {
			for k := i; k < i+latBlock; k++ {
				t := time.Since(start)
				p.req <- struct{}{}
				r := <-p.res
				if dumpW != nil {
					fmt.Fprintf(dumpW, "%s %d %.1f\n", p.name, t.Microseconds(), float64(r.d)/1e3)
				}
				if r.err != nil {
					return fmt.Errorf("latency probe %d of %s to %s: %w", k, p.name, p.addr, r.err)
				}
				if k >= *warm && len(p.ds) < *n {
					p.ds = append(p.ds, r.d)
				}
			}
		}
	}
	out := map[string]LatResult{}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	for _, p := range ps {
		slices.Sort(p.ds)
		var sum time.Duration
		for _, d := range p.ds {
			sum += d
		}
		out[p.name] = LatResult{N: len(p.ds), P50us: us(quantile(p.ds, 0.50)), P90us: us(quantile(p.ds, 0.90)),
			P99us: us(quantile(p.ds, 0.99)), MeanUs: us(sum / time.Duration(max(1, len(p.ds))))}
	}
	return emit(out)
}

// latBlock is how many samples a contender takes in a row: ~10 ms, short
// against the drift it evens out.
const latBlock = 20

type probeResult struct {
	d   time.Duration
	err error
}

// startProber starts a thread that enters namespace ns and, for each
// request, times one blocking connect + 1-byte echo round trip to addr.
func startProber(ns string, addr netip.AddrPort, req <-chan struct{}, res chan<- probeResult) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- nil
		sa := &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}
		for range req {
			t0 := time.Now()
			err := rawRoundTrip(sa)
			res <- probeResult{time.Since(t0), err}
		}
	}()
	return <-errc
}

// rawRoundTrip is roundTrip with blocking syscalls on the calling thread.
func rawRoundTrip(sa *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 10}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	b := [1]byte{modeEcho}
	if _, err := unix.Write(fd, b[:]); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	n, err := unix.Read(fd, b[:])
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != 1 || b[0] != modeEcho {
		return fmt.Errorf("echo returned %q, want %q", b[:n], modeEcho)
	}
	return nil
}
