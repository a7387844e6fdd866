//go:build linux

package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
)

// Ports inside the namespaces.
const (
	srvPort      = benchServerPort
	netshapePort = 9040
	relayPort    = 9041
)

// benchRules is how many rules netshape-r loads from its policy file.
const benchRules = 1000

// bareMark is the SO_MARK of gobare's upstream sockets, which its redirect skips.
const bareMark = 0x5e8

type options struct {
	quick      bool
	reps       int
	dur        time.Duration
	latN       int
	latMax     time.Duration
	rateDur    time.Duration
	rateC      int
	idleN      int
	out        string
	netshape   string
	id         string
	contenders string
	keep       bool
	rulesFile  string
	perf       bool
	cloop      string // the C floor relay's binary; "" leaves cloop out
}

type contender struct {
	name   string
	letter string
	ns     string
	cliIP  string
	srvIP  string
	target string // what the clients dial
	cmd    *exec.Cmd
	exited chan struct{}
	socket string // netshape's control socket
}

func (c *contender) pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

type runner struct {
	o     options
	self  string
	tmp   string
	srvNS string
	cs    []*contender
	perfd map[string]bool // profiles taken
	// rulesN is how many rules netshape-r must have loaded from its policy file.
	rulesN int
	procs  []*exec.Cmd
	nss    []string
	mu     sync.Mutex
	once   sync.Once
	// statOnce: the warning that /proc/stat could not be read, once.
	statOnce sync.Once
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.BoolVar(&o.quick, "quick", false, "short run (under 2 minutes): fewer repetitions, shorter tests")
	fs.IntVar(&o.reps, "reps", 0, "repetitions (default 5, quick 3)")
	fs.DurationVar(&o.dur, "t", 0, "duration of each throughput test (default 4s, quick 1s)")
	fs.IntVar(&o.latN, "lat-n", 0, "latency samples per test (default 3000, quick 600)")
	fs.DurationVar(&o.latMax, "lat-t", 0, "most time a latency test may take, with fewer samples if it must (default 15s, quick 3s)")
	fs.DurationVar(&o.rateDur, "rate-t", 0, "duration of each connection-rate test (default 2s, quick 0.8s)")
	fs.IntVar(&o.rateC, "rate-c", 16, "concurrent workers in the connection-rate test")
	fs.IntVar(&o.idleN, "idle-n", 0, "idle connections held for the RSS test (default 10000, quick 3000; netshape-r only without -quick)")
	fs.StringVar(&o.out, "out", "bench/out", "`DIR` for the JSON result")
	fs.StringVar(&o.netshape, "netshape", "bin/netshape", "netshape `binary`")
	fs.StringVar(&o.id, "id", "", "namespace id (hex; default random); namespaces are named tb<id><letter>")
	fs.StringVar(&o.contenders, "contenders", "",
		"comma-separated contenders (direct is always run) from "+strings.Join(allContenders, ", ")+
			" (default "+strings.Join(defaultContenders, ",")+", and "+cGoLoop+" without -quick)")
	fs.BoolVar(&o.perf, "perf", false, "profile netshape with perf(1) during its first 8-stream and connection-rate tests (reports in -out)")
	fs.StringVar(&o.rulesFile, "rules-file", "", "netshape-r's policy `FILE` instead of the generated one (nsbench policy prints that); its rules must not match the bench traffic")
	fs.StringVar(&o.cloop, "cloop", "", "the C reference relay's `binary` (bench/cloop, built by bench/run.sh when a C compiler is there): adds the cloop contender to full runs")
	fs.BoolVar(&o.keep, "keep", false, "leave namespaces and processes up after the run (debugging)")
	fs.Parse(args)
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = map[bool]int{false: full, true: quick}[o.quick]
		}
	}
	defd := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = map[bool]time.Duration{false: full, true: quick}[o.quick]
		}
	}
	if o.contenders == "" {
		// goloop is the evidence for what an event loop buys; -quick leaves
		// it out to stay under 2 minutes.
		o.contenders = strings.Join(defaultContenders, ",")
		if !o.quick {
			o.contenders += "," + cGoLoop
			if o.cloop != "" {
				o.contenders += "," + cCLoop
			}
		}
	}
	def(&o.reps, 5, 3)
	def(&o.latN, 3000, 600)
	def(&o.idleN, 10000, 3000)
	defd(&o.latMax, 15*time.Second, 3*time.Second)
	defd(&o.dur, 4*time.Second, time.Second)
	defd(&o.rateDur, 2*time.Second, 800*time.Millisecond)
	if o.id == "" {
		b := make([]byte, 3)
		rand.Read(b)
		o.id = hex.EncodeToString(b)
	}
	if !regexp.MustCompile(`^[0-9a-f]{1,8}$`).MatchString(o.id) {
		return fmt.Errorf("bad -id %q: want 1-8 lower-case hex digits", o.id)
	}
	if os.Geteuid() != 0 {
		return errors.New("the benchmark builds network namespaces and needs root: sudo make bench")
	}
	for _, tool := range []string{"ip", "haproxy", "socat", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run bench/run.sh, which installs the peers (apt-get install haproxy socat nftables)", tool)
		}
	}
	nsBin, err := filepath.Abs(o.netshape)
	if err != nil {
		return err
	}
	if _, err := os.Stat(nsBin); err != nil {
		return fmt.Errorf("netshape binary: %w (build it with `make build` or pass -netshape)", err)
	}
	o.netshape = nsBin
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// 10,000 relayed connections cost a relay up to 6 descriptors each (two
	// sockets, and Go's splice keeps a pipe per blocked direction); children inherit this.
	// Without CAP_SYS_RESOURCE (containers) the hard limit stays; the idle test
	// then holds as many connections as fit and says so.
	lim := unix.Rlimit{Cur: 262144, Max: 262144}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
		fmt.Fprintf(os.Stderr, "note: cannot raise the open-file limit above %d (%v); relays get %d\n", lim.Max, err, lim.Max)
	}
	tmp, err := os.MkdirTemp("", "nsbench-")
	if err != nil {
		return err
	}
	os.Chmod(tmp, 0o755)
	r := &runner{o: o, self: self, tmp: tmp, srvNS: "tb" + o.id + "s"}

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up")
		r.cleanup()
		os.Exit(130)
	}()
	if !o.keep {
		defer r.cleanup()
	}
	return r.main()
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func cmdIn(ns, name string, args ...string) *exec.Cmd {
	c := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return c
}

func must(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (r *runner) addNS(name string) error {
	r.mu.Lock()
	r.nss = append(r.nss, name)
	r.mu.Unlock()
	if err := must("ip", "netns", "add", name); err != nil {
		return err
	}
	if err := must("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return err
	}
	// Many short connections: let the clients reuse TIME_WAIT ports and use a wide port range.
	return must("ip", "netns", "exec", name, "sh", "-c",
		"echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '1024 65000' > /proc/sys/net/ipv4/ip_local_port_range")
}

// start runs a long-lived process in ns, logging to the temp dir.
func (r *runner) start(ns, logName string, name string, args ...string) (*exec.Cmd, chan struct{}, error) {
	f, err := os.Create(filepath.Join(r.tmp, logName+".log"))
	if err != nil {
		return nil, nil, err
	}
	c := cmdIn(ns, name, args...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("start %s in %s: %w", name, ns, err)
	}
	r.mu.Lock()
	r.procs = append(r.procs, c)
	r.mu.Unlock()
	exited := make(chan struct{})
	go func() { c.Wait(); f.Close(); close(exited) }()
	return c, exited, nil
}

func (r *runner) cleanup() {
	r.once.Do(func() {
		r.mu.Lock()
		procs, nss := r.procs, r.nss
		r.mu.Unlock()
		for _, c := range procs {
			if c.Process != nil {
				c.Process.Signal(syscall.SIGTERM)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, c := range procs {
			for c.ProcessState == nil && time.Now().Before(deadline) {
				if c.Process == nil || syscall.Kill(c.Process.Pid, 0) != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if c.Process != nil {
				c.Process.Kill()
			}
		}
		for _, ns := range nss {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		os.RemoveAll(r.tmp)
	})
}

func (r *runner) main() error {
	o := r.o
	want := map[string]bool{cDirect: true}
	for _, n := range strings.Split(o.contenders, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !contains(allContenders, n) {
			return fmt.Errorf("unknown contender %q: choose from %s", n, strings.Join(allContenders, ", "))
		}
		want[n] = true
	}
	r.logf("namespaces tb%s*: server %s; work dir %s", o.id, r.srvNS, r.tmp)
	if err := r.addNS(r.srvNS); err != nil {
		return err
	}
	letters := map[string]string{cDirect: "d", cNetshape: "n", cNetshapeR: "r", cHAProxyT: "h", cGoBare: "g", cGoLoop: "l", cCLoop: "c", cHAProxy: "p", cSocat: "x"}
	i := 0
	for _, name := range allContenders {
		if !want[name] {
			continue
		}
		c := &contender{name: name, letter: letters[name], ns: "tb" + o.id + letters[name],
			cliIP: fmt.Sprintf("198.18.0.%d", 4*i+1), srvIP: fmt.Sprintf("198.18.0.%d", 4*i+2)}
		i++
		if err := r.addNS(c.ns); err != nil {
			return err
		}
		vc, vs := "tb"+o.id+c.letter+"0", "tb"+o.id+c.letter+"1"
		for _, a := range [][]string{
			{"link", "add", vc, "netns", c.ns, "type", "veth", "peer", "name", vs, "netns", r.srvNS},
			{"-n", c.ns, "addr", "add", c.cliIP + "/30", "dev", vc},
			{"-n", r.srvNS, "addr", "add", c.srvIP + "/30", "dev", vs},
			{"-n", c.ns, "link", "set", vc, "up"},
			{"-n", r.srvNS, "link", "set", vs, "up"},
		} {
			if err := must("ip", a...); err != nil {
				return err
			}
		}
		r.cs = append(r.cs, c)
	}
	if _, _, err := r.start(r.srvNS, "server", r.self, "serve", "-listen", fmt.Sprintf("0.0.0.0:%d", srvPort)); err != nil {
		return err
	}
	var live []*contender
	for _, c := range r.cs {
		if err := r.startContender(c); err != nil {
			if c.name == cDirect {
				return err
			}
			r.logf("WARNING: %s left out: %v", c.name, err)
			continue
		}
		live = append(live, c)
	}
	r.cs = live

	res := newResults(strings.Fields(names(r.cs)))
	res.Machine = machine()
	res.Options = map[string]any{"quick": o.quick, "reps": o.reps, "tput_seconds": o.dur.Seconds(),
		"lat_samples": o.latN, "lat_max_seconds": o.latMax.Seconds(), "rate_seconds": o.rateDur.Seconds(), "rate_workers": o.rateC, "idle_conns": o.idleN}
	if r.find(cNetshapeR) != nil {
		res.Options["rules"] = r.rulesN
		res.Options["rules_file"] = r.o.rulesFile
	}

	// Memory first, on fresh relays: reused heap from earlier tests would hide growth.
	for _, c := range r.cs {
		if c.name == cDirect || c.name == cSocat {
			continue // no relay / one process per connection
		}
		if c.name == cNetshapeR && o.quick {
			continue // the same relay as netshape; its rules cost no memory worth the quick run's time
		}
		ir, err := r.idle(c)
		if err != nil {
			r.logf("WARNING: idle test %s: %v", c.name, err)
			ir = idleResult{math.NaN(), math.NaN(), math.NaN(), 0}
		} else {
			r.logf("idle %s: %.1f KiB and %.1f descriptors per connection (RSS %.0f MiB with %d connections)",
				c.name, ir.perConnKiB, ir.fdsPerConn, ir.totalKiB/1024, ir.conns)
		}
		res.add(c.name, "rss_kib_per_conn", ir.perConnKiB)
		res.add(c.name, "rss_mib_total", ir.totalKiB/1024)
		res.add(c.name, "fds_per_conn", ir.fdsPerConn)
		res.add(c.name, "idle_conns", float64(ir.conns))
	}

	for rep := 0; rep < o.reps; rep++ {
		order := rotate(r.cs, rep)
		r.logf("repetition %d/%d: order %s", rep+1, o.reps, names(order))
		for _, p := range []int{1, 8} {
			for _, c := range order {
				t := r.tput(c, p)
				res.add(c.name, fmt.Sprintf("tput%d_gbps", p), t.gbps)
				if c.name != cDirect {
					res.add(c.name, fmt.Sprintf("cpu%d_s_per_gb", p), t.cpuPerGB)
				}
				res.add(c.name, fmt.Sprintf("machine%d_s_per_gb", p), t.machinePerGB)
				res.add(c.name, fmt.Sprintf("busy%d_frac", p), t.busyFrac)
			}
		}
		// One contender at a time, not interleaved (nsbench latmix): with
		// every relay up, a relay's background work (netshape's flush of
		// thousands of flow records every 2 s) lands in the others' samples
		// and the p99 of all, direct's included, rose 2-3x in a trial run.
		for _, c := range order {
			var l LatResult
			if err := r.client(c, &l, "lat", "-addr", c.target, "-n", strconv.Itoa(o.latN), "-max-t", o.latMax.String()); err != nil {
				r.logf("WARNING: latency %s: %v", c.name, err)
				l = LatResult{P50us: math.NaN(), P99us: math.NaN()}
			}
			res.add(c.name, "lat_n", float64(l.N))
			res.add(c.name, "lat_p50_us", l.P50us)
			res.add(c.name, "lat_p99_us", l.P99us)
		}
		for _, c := range order {
			var rr RateResult
			stopPerf := r.perf(c, "rate")
			var before float64
			if c.pid() > 0 {
				before = cpuSeconds(c.pid())
			}
			m0 := r.machineTimes()
			err := r.client(c, &rr, "rate", "-addr", c.target, "-c", strconv.Itoa(o.rateC), "-t", o.rateDur.String())
			busy, frac := r.machineTimes().since(m0)
			cpuPerConn := math.NaN()
			if c.pid() > 0 && rr.OK > 0 {
				waitChildren(c.pid(), 3*time.Second)
				cpuPerConn = (cpuSeconds(c.pid()) - before) / float64(rr.OK) * 1e6
			}
			stopPerf()
			if err != nil {
				r.logf("WARNING: rate %s: %v", c.name, err)
				rr.PerSec = math.NaN()
			} else if rr.Errors > 0 {
				r.logf("WARNING: rate %s: %d failed connections of %d", c.name, rr.Errors, rr.OK+rr.Errors)
			}
			res.add(c.name, "rate_cps", rr.PerSec)
			if rr.OK > 0 {
				res.add(c.name, "rate_machine_us_per_conn", busy/float64(rr.OK)*1e6)
				res.add(c.name, "rate_idle_frac", 1-frac)
			}
			if c.name != cDirect {
				res.add(c.name, "rate_cpu_us_per_conn", cpuPerConn)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	for _, c := range r.cs {
		if c.name != cNetshape && c.name != cNetshapeR {
			continue
		}
		var st control.Status
		if err := control.NewClient(c.socket).Get(context.Background(), "/v1/status", &st); err == nil {
			if c.name == cNetshape {
				res.NetshapeStatus = &st
			} else {
				res.NetshapeRStatus = &st
			}
			r.logf("%s relayed %d flows, %d failed, %.1f GB out", c.name, st.Total, st.Failed, float64(st.BytesOut)/1e9)
			r.checkFastPaths(c.name, &st)
		}
		// How many of the last bench flows procmap found the owner of.
		if n, known, err := r.identified(c); err != nil {
			r.logf("WARNING: %s flows: %v", c.name, err)
		} else if n > 0 {
			res.add(c.name, "identified_frac", float64(known)/float64(n))
			r.logf("%s: procmap named nsbench as the owner of %d of the last %d bench flows", c.name, known, n)
		}
	}
	res.summarise()
	res.print(os.Stdout)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	suffix := ""
	if o.quick {
		suffix = "-quick"
	}
	path := filepath.Join(o.out, "bench-"+time.Now().UTC().Format("20060102T150405Z")+suffix+".json")
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", path)
	return nil
}

func (r *runner) find(name string) *contender {
	for _, c := range r.cs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// haproxyMaxConn fits 2 descriptors per connection plus maxpipes pipes in a
// 20,000 open-file limit (containers without CAP_SYS_RESOURCE).
const haproxyMaxConn = 9500

var haproxyGlobal = `global
    maxconn ` + strconv.Itoa(haproxyMaxConn) + `
    maxpipes 200
    user haproxy
    group haproxy
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    option splice-auto
`

func (r *runner) startContender(c *contender) error {
	srv := fmt.Sprintf("%s:%d", c.srvIP, srvPort)
	plain := fmt.Sprintf("127.0.0.1:%d", relayPort)
	var err error
	switch c.name {
	case cDirect:
		c.target = srv
	case cNetshape, cNetshapeR:
		c.target = srv
		c.socket = filepath.Join(r.tmp, c.name+".sock")
		args := []string{"start", "--state-dir", filepath.Join(r.tmp, c.name+"-state"),
			"--socket", c.socket, "--port", strconv.Itoa(netshapePort), "--log-level", "warn"}
		if c.name == cNetshapeR {
			// Rules from a policy file, as users load them; capture (dnsmap)
			// and reverse lookups are on by default, said here so it shows.
			text := []byte(benchPolicy(benchRules))
			if r.o.rulesFile != "" {
				if text, err = os.ReadFile(r.o.rulesFile); err != nil {
					return fmt.Errorf("-rules-file: %w", err)
				}
			}
			cfg, err := policy.ParseConfig(text)
			if err != nil {
				return fmt.Errorf("netshape-r policy: %w", err)
			}
			r.rulesN = len(cfg.Rules)
			pf := filepath.Join(r.tmp, "netshape-r.toml")
			if err := os.WriteFile(pf, text, 0o644); err != nil {
				return err
			}
			args = append(args, "--config", pf, "--capture", "--ptr")
		}
		c.cmd, c.exited, err = r.start(c.ns, c.name, r.o.netshape, args...)
		if err != nil {
			return err
		}
		if err := r.waitNetshape(c); err != nil {
			return err
		}
	case cHAProxyT:
		c.target = srv
		cfg := haproxyGlobal + fmt.Sprintf(`frontend transparent
    bind %s
    default_backend original_destination
backend original_destination
    server s 0.0.0.0:0
`, plain)
		// The same kind of redirect netshape installs, with HAProxy's own sockets exempt by owner.
		rules := fmt.Sprintf(`table ip nsbench {
    chain out {
        type nat hook output priority -100; policy accept;
        meta skuid haproxy return
        ip daddr 127.0.0.0/8 return
        meta l4proto tcp counter redirect to :%d
    }
}
`, relayPort)
		rf := filepath.Join(r.tmp, "haproxy-t.nft")
		if err := os.WriteFile(rf, []byte(rules), 0o644); err != nil {
			return err
		}
		if err := must("ip", "netns", "exec", c.ns, "nft", "-f", rf); err != nil {
			return err
		}
		if err := r.startHAProxy(c, cfg); err != nil {
			return err
		}
	case cGoBare, cGoLoop, cCLoop:
		c.target = srv
		// haproxy-t's redirect, with the relay's upstream sockets exempt by their mark.
		rules := fmt.Sprintf(`table ip nsbench {
    chain out {
        type nat hook output priority -100; policy accept;
        meta mark %#x return
        ip daddr 127.0.0.0/8 return
        meta l4proto tcp counter redirect to :%d
    }
}
`, bareMark, relayPort)
		rf := filepath.Join(r.tmp, "gobare.nft")
		if err := os.WriteFile(rf, []byte(rules), 0o644); err != nil {
			return err
		}
		if err := must("ip", "netns", "exec", c.ns, "nft", "-f", rf); err != nil {
			return err
		}
		bin, args := r.self, []string{"bare"}
		switch c.name {
		case cGoLoop:
			args = []string{"loop"}
		case cCLoop:
			if r.o.cloop == "" {
				return errors.New("cloop needs -cloop BINARY (bench/run.sh builds bench/cloop/cloop.c when a C compiler is there)")
			}
			bin, args = r.o.cloop, nil
		}
		args = append(args, "-listen", plain, "-mark", fmt.Sprintf("%#x", bareMark))
		c.cmd, c.exited, err = r.start(c.ns, c.name, bin, args...)
		if err != nil {
			return err
		}
		if err := waitListen(c, plain); err != nil {
			return err
		}
	case cHAProxy:
		c.target = plain
		cfg := haproxyGlobal + fmt.Sprintf(`frontend plain
    bind %s
    default_backend server
backend server
    server s %s
`, plain, srv)
		if err := r.startHAProxy(c, cfg); err != nil {
			return err
		}
	case cSocat:
		c.target = plain
		c.cmd, c.exited, err = r.start(c.ns, "socat", "socat",
			fmt.Sprintf("TCP4-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,backlog=4096", relayPort), "TCP4:"+srv)
		if err != nil {
			return err
		}
	}
	if err := r.client(c, nil, "probe", "-addr", c.target); err != nil {
		return fmt.Errorf("%s does not relay: %w (logs in %s)", c.name, err, r.tmp)
	}
	// Prove the transparent contenders really relayed the probe.
	switch c.name {
	case cNetshape, cNetshapeR:
		var st control.Status
		if err := control.NewClient(c.socket).Get(context.Background(), "/v1/status", &st); err != nil {
			return fmt.Errorf("%s status after the probe: %w", c.name, err)
		}
		if st.Total == 0 {
			return fmt.Errorf("%s saw no flow after the probe (status %+v)", c.name, st)
		}
		if c.name == cNetshapeR {
			if err := r.checkNetshapeR(c); err != nil {
				return fmt.Errorf("netshape-r is not what it claims to measure: %w (logs in %s)", err, r.tmp)
			}
		}
	case cHAProxyT, cGoBare, cGoLoop, cCLoop:
		out, err := cmdIn(c.ns, "nft", "list", "table", "ip", "nsbench").CombinedOutput()
		if err != nil {
			return fmt.Errorf("list the %s redirect: %w\n%s", c.name, err, out)
		}
		if regexp.MustCompile(`counter packets [1-9]`).Find(out) == nil {
			return fmt.Errorf("the %s redirect rule matched nothing:\n%s", c.name, out)
		}
	}
	r.logf("%s up in %s (relay pid %d), clients dial %s", c.name, c.ns, c.pid(), c.target)
	return nil
}

func (r *runner) startHAProxy(c *contender, cfg string) error {
	f := filepath.Join(r.tmp, c.name+".cfg")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := must("haproxy", "-c", "-q", "-f", f); err != nil {
		return fmt.Errorf("haproxy config check: %w", err)
	}
	var err error
	c.cmd, c.exited, err = r.start(c.ns, c.name, "haproxy", "-db", "-f", f)
	return err
}

func (r *runner) waitNetshape(c *contender) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var st control.Status
		if err := control.NewClient(c.socket).Get(context.Background(), "/v1/status", &st); err == nil && st.Running {
			return nil
		}
		select {
		case <-c.exited:
			b, _ := os.ReadFile(filepath.Join(r.tmp, c.name+".log"))
			return fmt.Errorf("%s exited: %s", c.name, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer on its control socket within 15s", c.name)
}

// waitListen waits until a relay started in c's namespace accepts on addr.
func waitListen(c *contender, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "exec", c.ns, "ss", "-Hltn", "src", addr).Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited before it listened on %s", c.name, addr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not listen on %s within 10s", c.name, addr)
}

// checkNetshapeR fails unless netshape-r is what the issue asks for: the
// daemon loaded every rule of the policy file with the default action allow,
// and a bench flow (the probe) carries the bench client's pid and exe
// (procmap found it) and was allowed by the default action, not by a rule.
func (r *runner) checkNetshapeR(c *contender) error {
	cl := control.NewClient(c.socket)
	ctx := context.Background()
	var st control.Status
	if err := cl.Get(ctx, "/v1/status", &st); err != nil {
		return err
	}
	var rules []policy.Rule
	if err := cl.Get(ctx, "/v1/rules", &rules); err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	fromFile := 0
	for _, ru := range rules {
		if ru.ID < 0 {
			fromFile++
		}
	}
	if fromFile != r.rulesN || st.Rules != r.rulesN {
		return fmt.Errorf("the daemon has %d rules from its policy file (status: %d rules), want %d", fromFile, st.Rules, r.rulesN)
	}
	if st.Default != string(policy.Allow) {
		return fmt.Errorf("default action %q, want allow", st.Default)
	}
	fs, err := r.benchFlows(c)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		return errors.New("no flow to the bench server in /v1/flows after the probe")
	}
	f := fs[len(fs)-1]
	if f.PID == 0 || f.Exe != r.self {
		return fmt.Errorf("procmap did not identify the bench client: flow %d has pid %d exe %q, want the pid of %s", f.ID, f.PID, f.Exe, r.self)
	}
	if f.Verdict != string(policy.Allow) || f.RuleID != 0 {
		return fmt.Errorf("flow %d: verdict %q by rule %d, want allow by the default action (no rule may match the bench traffic)", f.ID, f.Verdict, f.RuleID)
	}
	r.logf("netshape-r: %d rules loaded (default allow); probe flow %d: pid %d %s, uid %d, verdict %s by default",
		fromFile, f.ID, f.PID, f.Exe, f.UID, f.Verdict)
	return nil
}

// benchFlows are the live and recently closed flows of c to the bench server, oldest first.
func (r *runner) benchFlows(c *contender) ([]flow.Flow, error) {
	var fs []flow.Flow
	if err := control.NewClient(c.socket).Get(context.Background(), "/v1/flows?closed=1", &fs); err != nil {
		return nil, fmt.Errorf("list flows: %w", err)
	}
	var out []flow.Flow
	for _, f := range fs {
		if f.Dst.Port() == srvPort {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b flow.Flow) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// identified counts the bench flows netshape still lists (the last ~1000) and
// those whose owner procmap found to be the bench client.
func (r *runner) identified(c *contender) (n, known int, err error) {
	fs, err := r.benchFlows(c)
	if err != nil {
		return 0, 0, err
	}
	for _, f := range fs {
		n++
		if f.PID != 0 && f.Exe == r.self {
			known++
		}
	}
	return n, known, nil
}

// client runs a load generator in c's namespace and decodes its JSON line into out.
func (r *runner) client(c *contender, out any, sub string, args ...string) error {
	cmd := cmdIn(c.ns, r.self, append([]string{sub}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", sub, err, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		r.logf("%s %s: %s", c.name, sub, s)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// tputResult is one throughput test: Gbit/s, the relay's CPU seconds per
// GB, and the whole machine's (client, server, relay, softirqs) with the
// fraction of the test it was busy.
type tputResult struct {
	gbps, cpuPerGB, machinePerGB, busyFrac float64
}

// tput runs one throughput test.
func (r *runner) tput(c *contender, streams int) tputResult {
	time.Sleep(200 * time.Millisecond) // let the previous test's sockets drain
	var before float64
	if c.pid() > 0 {
		before = cpuSeconds(c.pid())
	}
	stopPerf := r.perf(c, fmt.Sprintf("tput%d", streams))
	m0 := r.machineTimes()
	var t TputResult
	err := r.client(c, &t, "tput", "-addr", c.target, "-p", strconv.Itoa(streams), "-t", r.o.dur.String())
	busy, frac := r.machineTimes().since(m0)
	stopPerf()
	if err != nil {
		r.logf("WARNING: throughput %s x%d: %v", c.name, streams, err)
		return tputResult{math.NaN(), math.NaN(), math.NaN(), math.NaN()}
	}
	gb := float64(t.Bytes) / 1e9
	res := tputResult{gbps: t.Gbps, cpuPerGB: math.NaN(), machinePerGB: busy / gb, busyFrac: frac}
	if c.pid() > 0 {
		waitChildren(c.pid(), 3*time.Second) // socat's per-connection children count once reaped
		res.cpuPerGB = (cpuSeconds(c.pid()) - before) / gb
	}
	return res
}

// machineTimes reads the whole machine's CPU times; on error (no /proc/stat)
// it warns once and returns zeros, which since turns into NaN.
func (r *runner) machineTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err == nil {
		var t cpuTimes
		if t, err = parseProcStat(b); err == nil {
			return t
		}
	}
	r.statOnce.Do(func() { r.logf("WARNING: no whole-machine CPU figures: %v", err) })
	return cpuTimes{}
}

// perf starts perf(1) on netshape the first time test runs when -perf is set;
// the returned function stops it and writes the report to the output dir.
func (r *runner) perf(c *contender, test string) (stop func()) {
	if !r.o.perf || c.name != cNetshape || r.perfd[test] {
		return func() {}
	}
	if r.perfd == nil {
		r.perfd = map[string]bool{}
	}
	r.perfd[test] = true
	os.MkdirAll(r.o.out, 0o755)
	data := filepath.Join(r.tmp, "perf-"+test+".data")
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(c.pid()), "-o", data)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		r.logf("WARNING: perf: %v", err)
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		out := filepath.Join(r.o.out, "perf-netshape-"+test+".txt")
		rep, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
			"--percent-limit", "0.5", "-g", "none").Output()
		if err != nil {
			r.logf("WARNING: perf report: %v", err)
			return
		}
		// Where the time goes by binary first (netshape vs kernel), then by symbol.
		byDSO, _ := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso", "-g", "none").Output()
		os.WriteFile(out, append(byDSO, rep...), 0o644)
		r.logf("perf profile of netshape during %s: %s", test, out)
	}
}

// idleResult is the memory cost of idle relayed connections.
type idleResult struct {
	perConnKiB float64 // RSS growth per connection
	totalKiB   float64 // RSS with them open
	fdsPerConn float64 // descriptors the relay holds per connection
	conns      int     // how many were held
}

// idle measures the relay's memory per idle connection: a calibration with a
// few connections finds its descriptors per connection, so the main test holds
// as many connections (up to o.idleN) as the open-file limit lets it.
func (r *runner) idle(c *contender) (idleResult, error) {
	fds0 := countFDs(c.pid())
	cal, err := r.holdIdle(c, 200)
	if err != nil {
		return idleResult{}, fmt.Errorf("calibration: %w", err)
	}
	n := r.o.idleN
	if cal.fdsPerConn > 0 {
		var lim unix.Rlimit
		if err := unix.Prlimit(c.pid(), unix.RLIMIT_NOFILE, nil, &lim); err == nil {
			fit := int((float64(lim.Cur) - float64(fds0) - 300) / cal.fdsPerConn)
			if fit < n {
				r.logf("%s holds %.1f descriptors per connection; its open-file limit %d fits %d, not %d: measuring %d",
					c.name, cal.fdsPerConn, lim.Cur, fit, n, fit)
				n = fit
			}
		}
	}
	if c.name == cHAProxyT || c.name == cHAProxy {
		n = min(n, haproxyMaxConn-100)
	}
	return r.holdIdle(c, n)
}

func (r *runner) holdIdle(c *contender, n int) (idleResult, error) {
	time.Sleep(500 * time.Millisecond)
	rss0, fds0 := rssKiB(c.pid()), countFDs(c.pid())
	cmd := cmdIn(c.ns, r.self, "idle", "-addr", c.target, "-n", strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return idleResult{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return idleResult{}, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return idleResult{}, err
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
		time.Sleep(time.Second) // let the relay close its side
	}()
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		return idleResult{}, fmt.Errorf("idle client: %w", err)
	}
	go io.Copy(io.Discard, stdout)
	var ir IdleResult
	if err := json.Unmarshal(line, &ir); err != nil {
		return idleResult{}, err
	}
	if ir.Open < n*99/100 {
		return idleResult{}, fmt.Errorf("only %d of %d connections opened", ir.Open, n)
	}
	time.Sleep(time.Second)
	rss1, fds1 := rssKiB(c.pid()), countFDs(c.pid())
	return idleResult{perConnKiB: (rss1 - rss0) / float64(ir.Open), totalKiB: rss1,
		fdsPerConn: float64(fds1-fds0) / float64(ir.Open), conns: ir.Open}, nil
}

func countFDs(pid int) int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(es)
}

// cpuSeconds is utime+stime of pid plus that of its reaped children.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return math.NaN()
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return math.NaN()
	}
	var t float64
	for _, k := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[k], 64)
		t += v
	}
	return t / clockTicks
}

func rssKiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return math.NaN()
}

func waitChildren(pid int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rotate(cs []*contender, n int) []*contender {
	n %= len(cs)
	return append(append([]*contender{}, cs[n:]...), cs[:n]...)
}

func names(cs []*contender) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.name)
	}
	return strings.Join(s, " ")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func machine() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if out, err := exec.Command("haproxy", "-v").Output(); err == nil {
		m["haproxy"] = strings.SplitN(string(out), "\n", 2)[0]
	}
	if out, err := exec.Command("socat", "-V").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "socat version") {
				m["socat"] = strings.TrimSpace(l)
			}
		}
	}
	return m
}

// checkFastPaths logs how the daemon looked processes up and counted
// packets, and warns when it did not use the fast paths: its figures are
// then those of the fallbacks (sock_diag per connection, a ring that reads
// every packet), not of netshape as this machine kind runs it.
func (r *runner) checkFastPaths(name string, st *control.Status) {
	lookups := "n/a"
	if b := st.ProcmapBPF; b != nil {
		n := b.Hits + b.Misses + b.Stale + b.Errors
		lookups = fmt.Sprintf("%d of %d lookups found by their BPF record", b.Hits, n)
	}
	r.logf("%s: process lookup %s (%s), capture %s", name, st.Procmap, lookups, st.Capture)
	if st.Procmap != "bpf" || st.Capture != "ebpf" {
		r.logf("WARNING: %s ran without a fast path (process lookup %s %s; capture %s %s): these are the fallbacks' figures",
			name, st.Procmap, st.ProcmapNote, st.Capture, st.CaptureNote)
	}
}
