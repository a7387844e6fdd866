package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Wire protocol of the bench server. The client's first byte picks the mode:
//
//	modeEcho: the server echoes every byte (the first one included) until EOF.
//	modeSink: the server discards everything until EOF, then writes the count
//	          of bytes it received (after the mode byte) as 8 bytes big endian.
const (
	modeEcho = 'E'
	modeSink = 'S'
)

// listenTCP listens with plain TCP. Go's listeners accept MPTCP by default
// (Go 1.24+), so every plain TCP connection a client makes would be served
// through the kernel's MPTCP fallback: not what a typical server does, and a
// cost every contender's connections (direct's too) would pay.
func listenTCP(network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), network, addr)
}

// serve runs the bench server until killed.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("listen", "0.0.0.0:7000", "listen `address`")
	fs.Parse(args)
	l, err := listenTCP("tcp", *addr)
	if err != nil {
		return fmt.Errorf("bench server: listen on %s: %w", *addr, err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		go serveConn(c)
	}
}

func serveConn(c net.Conn) {
	defer c.Close()
	var m [1]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return
	}
	switch m[0] {
	case modeEcho:
		if _, err := c.Write(m[:]); err != nil {
			return
		}
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case modeSink:
		buf := make([]byte, 256<<10)
		var total uint64
		for {
			n, err := c.Read(buf)
			total += uint64(n)
			if err != nil {
				break
			}
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], total)
		c.Write(out[:])
	}
}

func emit(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

// roundTrip dials addr, sends the echo mode byte and waits for it to come back.
func roundTrip(d *net.Dialer, addr string) (net.Conn, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	var b = [1]byte{modeEcho}
	if _, err := c.Write(b[:]); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, err
	}
	if b[0] != modeEcho {
		c.Close()
		return nil, fmt.Errorf("echo returned %q, want %q", b[0], modeEcho)
	}
	return c, nil
}

// TputResult is what `nsbench tput` prints.
type TputResult struct {
	Streams int     `json:"streams"`
	Bytes   uint64  `json:"bytes"`   // received by the server
	Seconds float64 `json:"seconds"` // first dial to last count
	Gbps    float64 `json:"gbps"`
}

func tput(args []string) error {
	fs := flag.NewFlagSet("tput", flag.ExitOnError)
	addr := fs.String("addr", "", "server `address`")
	streams := fs.Int("p", 1, "parallel streams")
	dur := fs.Duration("t", 3*time.Second, "how long to send")
	fs.Parse(args)
	buf := make([]byte, 128<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var (
		wg    sync.WaitGroup
		total atomic.Uint64
		errs  = make(chan error, *streams)
	)
	start := time.Now()
	deadline := start.Add(*dur)
	for range *streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if _, err := c.Write([]byte{modeSink}); err != nil {
				errs <- err
				return
			}
			for time.Now().Before(deadline) {
				if _, err := c.Write(buf); err != nil {
					errs <- err
					return
				}
			}
			c.(*net.TCPConn).CloseWrite()
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				errs <- fmt.Errorf("read byte count: %w", err)
				return
			}
			total.Add(binary.BigEndian.Uint64(n[:]))
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("throughput to %s: %w", *addr, err)
	}
	secs := time.Since(start).Seconds()
	return emit(TputResult{Streams: *streams, Bytes: total.Load(), Seconds: secs, Gbps: float64(total.Load()) * 8 / secs / 1e9})
}

// LatResult is what `nsbench lat` prints: connect + 1-byte round trip, one at a time.
type LatResult struct {
	N      int     `json:"n"`
	P50us  float64 `json:"p50_us"`
	P90us  float64 `json:"p90_us"`
	P99us  float64 `json:"p99_us"`
	MeanUs float64 `json:"mean_us"`
}

func lat(args []string) error {
	fs := flag.NewFlagSet("lat", flag.ExitOnError)
	addr := fs.String("addr", "", "server `address`")
	n := fs.Int("n", 2000, "samples")
	warm := fs.Int("warm", 50, "unrecorded warm-up connections")
	maxT := fs.Duration("max-t", 0, "stop after this long with fewer samples (0: no limit); warm-up gets a tenth of it")
	fs.Parse(args)
	d := &net.Dialer{Timeout: 5 * time.Second}
	ds := make([]time.Duration, 0, *n)
	start := time.Now()
	over := func(frac float64) bool {
		return *maxT > 0 && time.Since(start) >= time.Duration(frac*float64(*maxT))
	}
	warming := *warm > 0
	for i := 0; len(ds) < *n; i++ {
		if warming && (i >= *warm || over(0.1)) {
			warming = false
		}
		if !warming && len(ds) > 0 && over(1) {
			fmt.Fprintf(os.Stderr, "nsbench lat: stopped after %v with %d of %d samples\n", *maxT, len(ds), *n)
			break
		}
		t0 := time.Now()
		c, err := roundTrip(d, *addr)
		el := time.Since(t0)
		if err != nil {
			return fmt.Errorf("latency probe %d to %s: %w", i, *addr, err)
		}
		c.Close()
		if !warming {
			ds = append(ds, el)
		}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	return emit(LatResult{N: len(ds), P50us: us(quantile(ds, 0.50)), P90us: us(quantile(ds, 0.90)),
		P99us: us(quantile(ds, 0.99)), MeanUs: us(sum / time.Duration(len(ds)))})
}

// RateResult is what `nsbench rate` prints.
type RateResult struct {
	Workers int     `json:"workers"`
	OK      int64   `json:"ok"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"conns_per_sec"`
}

func rate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	addr := fs.String("addr", "", "server `address`")
	workers := fs.Int("c", 16, "concurrent workers")
	dur := fs.Duration("t", 2*time.Second, "duration")
	fs.Parse(args)
	var ok, bad atomic.Int64
	var firstErr atomic.Value
	d := &net.Dialer{Timeout: 5 * time.Second}
	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				c, err := roundTrip(d, *addr)
				if err != nil {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				c.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Fprintf(os.Stderr, "nsbench rate: %d errors, first: %s\n", bad.Load(), e)
	}
	return emit(RateResult{Workers: *workers, OK: ok.Load(), Errors: bad.Load(), Seconds: secs, PerSec: float64(ok.Load()) / secs})
}

// IdleResult is the line `nsbench idle` prints once its connections are up.
type IdleResult struct {
	Open   int `json:"open"`
	Errors int `json:"errors"`
}

// idle opens n connections, each with one echoed byte so the relay has dialled
// upstream, prints an IdleResult and holds them until stdin closes.
func idle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	addr := fs.String("addr", "", "server `address`")
	n := fs.Int("n", 10000, "connections")
	par := fs.Int("par", 32, "concurrent dials")
	fs.Parse(args)
	d := &net.Dialer{Timeout: 10 * time.Second}
	var (
		mu    sync.Mutex
		conns []net.Conn
		bad   int
		first error
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*n) {
				c, err := roundTrip(d, *addr)
				mu.Lock()
				if err != nil {
					bad++
					if first == nil {
						first = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		fmt.Fprintf(os.Stderr, "nsbench idle: %d errors, first: %v\n", bad, first)
	}
	if err := emit(IdleResult{Open: len(conns), Errors: bad}); err != nil {
		return err
	}
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// probe waits until a round trip to addr works.
func probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	addr := fs.String("addr", "", "server `address`")
	wait := fs.Duration("wait", 10*time.Second, "give up after")
	fs.Parse(args)
	d := &net.Dialer{Timeout: time.Second}
	deadline := time.Now().Add(*wait)
	for {
		c, err := roundTrip(d, *addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo from %s after %v: %w", *addr, *wait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
