package daemon

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"sync/atomic"

	"errors"
	"fmt"
	"github.com/netshape/netshape/bpfacct"
	"github.com/netshape/netshape/dnsmap"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/procmap"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/store"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/proxy"
)

// Defaults.
const (
	DefaultStateDir = "/var/lib/netshape"
	DefaultPort     = 9040
)

// ErrNotRoot is returned when the daemon is started without the privileges it
// needs to install rules.
var ErrNotRoot = errors.New("netshape start needs root (it installs firewall rules): run `sudo netshape start`")

// Config is everything `netshape start` can be told.
type Config struct {
	StateDir  string
	Socket    string
	Group     string // group (name or gid) admitted to the control socket besides root; "" for none
	Port      uint16
	Bypass    []netip.Prefix
	BlockQUIC bool
	// Policy holds the default action, prompt timeout, config-file rules and
	// categories; nil means policy.DefaultConfig().
	Policy *policy.Config
	// MaxPending caps the questions waiting for an answer (default 64).
	MaxPending int
	// MaxConns caps concurrent relayed connections; the open-file limit is
	// raised to fit them. 0: as many as the open-file limit fits once raised
	// to its hard limit.
	MaxConns int
	// GoroutineRelay relays on a goroutine per connection instead of the
	// proxy's event loops (comparisons; the loops are Linux's).
	GoroutineRelay bool
	// Capture enables interface capture (accounting, DNS names, interface quotas).
	Capture bool
	// Ifaces to capture on; empty means every interface that is up and not loopback.
	Ifaces []string
	// PTR enables background reverse lookups for destinations without a name.
	PTR     bool
	Version string
	Logger  *slog.Logger

	// UI is the dashboard's HOST:PORT (off when empty); UIAllowRemote lets it
	// listen on other than loopback.
	UI            string
	UIAllowRemote bool
}

func (c *Config) fill() error {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Socket == "" {
		c.Socket = control.DefaultSocket
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if last := int(c.Port) + proxyPorts - 1; last > 65535 {
		return fmt.Errorf("--port %d: the proxy listens on %d ports from it, up to %d; use at most %d", c.Port, proxyPorts, last, 65536-proxyPorts)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Policy == nil {
		c.Policy = policy.DefaultConfig()
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 64
	}
	for _, p := range c.Bypass {
		if !p.IsValid() {
			return fmt.Errorf("invalid --bypass prefix %v", p)
		}
	}
	return nil
}

// LookupGroup resolves a group name or numeric id; "" gives -1 (no group).
func LookupGroup(g string) (int, error) {
	if g == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return -1, fmt.Errorf("unknown group %q for --group: %w", g, err)
	}
	n, _ := strconv.Atoi(grp.Gid)
	return n, nil
}

// Daemon is a running netshape.
type Daemon struct {
	cfg     Config
	pol     *policy.Config
	log     *slog.Logger
	red     Redirector
	proxy   *proxy.Proxy
	ctl     *control.Server
	store   *store.Store
	procs   *procmap.Map
	names   *dnsmap.Map
	acct    *bpfacct.Accounter
	shaper  *shaper.Shaper
	prompts *prompter
	events  *hub
	started time.Time
	wg      sync.WaitGroup

	ruleMu  sync.Mutex // serializes rule changes
	rules   atomic.Pointer[rules]
	oneOff  flowRates
	limMemo limitMemo
	// maxConns is the proxy's cap on concurrent flows (--max-conns, or what
	// the open-file limit fits).
	maxConns int
	// attaching is the flow limit is attaching to the shaper (attachMu
	// serialises limit's Attach calls, which the shaper serialises anyway).
	attachMu  sync.Mutex
	attaching atomic.Pointer[attachCtx]
	runs      runs
	usage     usage

	ifaceLive sync.Map // iface name -> *ifaceCount

	blockMu sync.Mutex
	blocked []string

	stopOnce sync.Once
	stopc    chan struct{}

	warnMu   sync.Mutex
	warnings []string

	ui uiState
}

// warn logs a problem and shows it in `netshape status`.
func (d *Daemon) warn(msg string) {
	d.log.Warn(msg)
	d.warnMu.Lock()
	defer d.warnMu.Unlock()
	if len(d.warnings) < 20 {
		d.warnings = append(d.warnings, msg)
	}
}

// warnOnce is warn for problems that repeat every few seconds.
func (d *Daemon) warnOnce(msg string) {
	d.warnMu.Lock()
	seen := slices.Contains(d.warnings, msg)
	d.warnMu.Unlock()
	if !seen {
		d.warn(msg)
	}
}

// Run starts netshape and blocks until ctx ends, `netshape stop` asks, or a
// fatal error. The redirect rules are removed on every way out of Run,
// including a panic; a SIGKILL leaves them for the next start or `netshape
// cleanup`.
func Run(ctx context.Context, cfg Config) (err error) {
	if err := cfg.fill(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	log := cfg.Logger
	gid, err := LookupGroup(cfg.Group)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w (choose another with --state-dir)", cfg.StateDir, err)
	}
	lock, err := acquireLock(cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.release()
	fl := raiseFileLimit(cfg.MaxConns, nrOpenPath)
	log.Debug("open-file limit", "limit", fl.limit, "max_conns", fl.maxConns)

	red, err := newRedirector(cfg, log)
	if err != nil {
		return err
	}
	if err := red.Cleanup(); err != nil {
		return fmt.Errorf("remove rules left by a previous run: %w", err)
	}

	d := &Daemon{cfg: cfg, pol: cfg.Policy, log: log, red: red, started: time.Now(), stopc: make(chan struct{}), events: newHub()}
	d.maxConns = fl.maxConns
	if fl.warning != "" {
		d.warn(fl.warning)
	}
	d.runs.m = map[int64]control.Run{}
	d.runs.flows = map[int64]map[uint64]bool{}
	dbPath := filepath.Join(cfg.StateDir, "netshape.db")
	if d.store, err = store.Open(dbPath); err != nil {
		return fmt.Errorf("open database %s: %w (check --state-dir)", dbPath, err)
	}
	defer d.store.Close()
	d.usage.init(d.store)
	d.newNameMaps()
	defer d.procs.Close()
	defer d.names.Close()
	d.newShaper()
	d.prompts = newPrompter(d.pol.PromptTimeout, d.pol.TimeoutAction, cfg.MaxPending, d.events.publish)
	d.prompts.answered = d.writeAnswerRule
	d.prompts.today = d.appToday
	if err := d.reloadRules(); err != nil {
		return fmt.Errorf("load rules: %w", err)
	}
	if qs, err := d.store.QuotaStates(); err != nil {
		d.warn("quota counters not restored: " + err.Error())
	} else {
		d.shaper.Restore(fromStoreQuotas(qs))
	}

	if !hasIPv6Loopback() {
		d.warn("no IPv6 loopback (::1): the proxy listens on 127.0.0.1 only, and redirected IPv6 connections are refused")
	}
	pcfg := proxy.Config{
		Listen:         listenAddrs(cfg.Port),
		OriginalDst:    red.OriginalDst,
		DialControl:    red.DialControl,
		MaxConns:       fl.maxConns,
		GoroutineRelay: cfg.GoroutineRelay,
		Logger:         log,
		Hooks:          d.hooks(),
	}
	if name, _ := d.procs.Backend(); name != "bpf" && !pcfg.GoroutineRelay {
		// The event loops run the hooks inline; without the BPF recorder a
		// process lookup (sock_diag, /proc) can take milliseconds, which
		// would stall every flow of a loop. Goroutines wait in parallel.
		log.Info("relaying on goroutines: process lookup has no BPF fast path", "procmap", name)
		pcfg.GoroutineRelay = true
	}
	if r, ok := red.(interface {
		OriginalDstFD(fd int, v6 bool) (netip.AddrPort, error)
	}); ok {
		pcfg.OriginalDstFD = r.OriginalDstFD // the event loops' (Linux)
	}
	if r, ok := red.(interface{ MarkFD(fd int) error }); ok {
		pcfg.MarkFD = r.MarkFD
	}
	p, err := proxy.New(pcfg)
	if err != nil {
		return err
	}
	if err := p.Listen(); err != nil {
		return err
	}
	defer p.Close()
	d.proxy = p

	d.ctl = control.NewServer(gid, log)
	d.routes()
	if err := d.ctl.Listen(cfg.Socket); err != nil {
		return err
	}
	defer d.ctl.Close()
	if err := d.listenUI(); err != nil {
		return err
	}
	defer d.closeUI()

	// From here on the network depends on us: every exit path removes the rules.
	if err := red.Install(); err != nil {
		red.Remove()
		return fmt.Errorf("install redirect rules: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			red.Remove()
			panic(r)
		}
		if rerr := red.Remove(); rerr != nil {
			log.Error("remove redirect rules failed; run `netshape cleanup`", "err", rerr)
			if err == nil {
				err = rerr
			}
		}
	}()

	bg, stopBG := context.WithCancel(context.Background())
	d.startCapture(bg)
	d.startUI(bg)
	d.wg.Add(1)
	go d.housekeeping(bg)
	defer func() {
		stopBG()
		d.wg.Wait()
		// The flows cut by stopping are recorded too (Close is idempotent).
		p.Close()
		d.flushUsage(time.Now())
		d.saveQuotas()
	}()

	errc := make(chan error, 2)
	go func() { errc <- p.Serve() }()
	go func() { errc <- d.ctl.Serve() }()
	log.Info("netshape started", "pid", os.Getpid(), "backend", red.Name(), "listen", p.Addrs(),
		"socket", cfg.Socket, "state_dir", cfg.StateDir)

	select {
	case <-ctx.Done():
		log.Info("stopping", "reason", context.Cause(ctx))
	case <-d.stopc:
		log.Info("stopping", "reason", "netshape stop")
	case err := <-errc:
		if err != nil {
			log.Error("fatal", "err", err)
			// Rules first here too: closing the proxy (a deferred call that
			// runs before the deferred removal) waits for its flows.
			red.Remove()
			return err
		}
	}
	// Rules first, so new connections go direct while we close ours.
	if err := red.Remove(); err != nil {
		log.Error("remove redirect rules failed; run `netshape cleanup`", "err", err)
	}
	return nil
}

// listenAddrs are the proxy's addresses: proxyPorts ports from port, on
// 127.0.0.1 and, when it is configured, ::1.
func listenAddrs(port uint16) []netip.AddrPort {
	var as []netip.AddrPort
	v6 := hasIPv6Loopback()
	for i := range proxyPorts {
		p := port + uint16(i)
		as = append(as, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p))
		if v6 {
			as = append(as, netip.AddrPortFrom(netip.IPv6Loopback(), p))
		}
	}
	return as
}

// hasIPv6Loopback reports whether ::1 is configured (a namespace whose lo is
// down, or a system without IPv6, has none).
func hasIPv6Loopback() bool {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv6loopback) {
			return true
		}
	}
	return false
}

func (d *Daemon) stop() { d.stopOnce.Do(func() { close(d.stopc) }) }

func (d *Daemon) hooks() proxy.Hooks {
	h := proxy.Hooks{
		Identify:     d.identify,
		IdentifyFast: d.identifyFast,
		Name:         d.dnsName,
		NameLater:    d.laterName,
		NeedsHost:    d.needsHost,
		NeedsIface:   func() bool { return d.rules.Load().needsIface },
		Decide:       d.decide,
		Ask:          d.ask,
		Limit:        d.limit,
		Closed:       func(f flow.Flow) { d.flowClosed(&f) },
	}
	return h
}

// ask is the proxy's Ask hook: hold until the user answers.
func (d *Daemon) ask(ctx context.Context, f *flow.Flow) proxy.Action {
	v, rate, why := d.prompts.ask(ctx, f)
	if why == "" {
		why = "prompt"
	}
	if v == proxy.Allow {
		f.Verdict = "allow (" + why + ")"
		if rate > 0 {
			d.oneOff.mu.Lock()
			d.oneOff.m[f.ID] = rate
			d.oneOff.mu.Unlock()
			d.applyLimits(d.rules.Load())
		}
	} else {
		f.Verdict = "deny (" + why + ")"
	}
	return v
}

// housekeeping writes usage and quota counters every few seconds and prunes
// expired rules.
func (d *Daemon) housekeeping(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(usageInterval)
	defer t.Stop()
	lastRollup := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.flushUsage(now)
			d.saveQuotas()
			if now.Sub(lastRollup) > 10*time.Minute {
				lastRollup = now
				if err := d.store.Rollup(now, store.DefaultRetention()); err != nil {
					d.warnOnce("usage rollup: " + err.Error())
				}
				d.ruleMu.Lock()
				if err := d.reloadRules(); err != nil {
					d.warnOnce("reload rules: " + err.Error())
				}
				d.ruleMu.Unlock()
			}
		}
	}
}

// usageInterval bounds what a crash loses: usage and quota counters are
// written this often.
const usageInterval = 2 * time.Second

func (d *Daemon) routes() {
	d.ruleRoutes()
	d.runRoutes()
	d.accountRoutes()
	d.quotaRoutes()
	d.uiRoutes()
	d.ctl.Handle("GET /v1/status", func(r *http.Request) (any, error) { return d.status(), nil })
	d.ctl.Handle("GET /v1/flows", func(r *http.Request) (any, error) {
		fs := d.proxy.Flows(r.URL.Query().Get("closed") != "")
		if fs == nil {
			fs = []flow.Flow{}
		}
		return fs, nil
	})
	d.ctl.Handle("POST /v1/stop", func(r *http.Request) (any, error) {
		d.stop()
		return map[string]bool{"stopping": true}, nil
	})
}

func (d *Daemon) status() control.Status {
	st := d.proxy.Stats()
	s := control.Status{
		Running:  true,
		PID:      os.Getpid(),
		Version:  d.cfg.Version,
		Backend:  d.red.Name(),
		Started:  d.started,
		StateDir: d.cfg.StateDir,
		Active:   st.Active,
		Total:    st.Total,
		Denied:   st.Denied,
		Failed:   st.Failed,
		Refused:  st.Refused,
		MaxConns: d.maxConns,
		BytesIn:  st.BytesIn,
		BytesOut: st.BytesOut,
		Default:  string(d.pol.DefaultAction),
		Pending:  d.prompts.len(),
		Rules:    len(d.rules.Load().all),
	}
	d.warnMu.Lock()
	s.Warnings = slices.Clone(d.warnings)
	d.warnMu.Unlock()
	for _, a := range d.proxy.Addrs() {
		s.Listen = append(s.Listen, a.String())
	}
	d.fastPaths(&s)
	return s
}

// fastPaths tells in s how process lookup and interface capture run.
func (d *Daemon) fastPaths(s *control.Status) {
	s.Relay = d.proxy.Relay()
	if d.procs != nil {
		name, err := d.procs.Backend()
		s.Procmap = name
		if err != nil {
			s.ProcmapNote = err.Error()
		}
		if name == "bpf" {
			ps := d.procs.Stats()
			s.ProcmapBPF = &control.ProcmapBPF{Hits: ps.BPFHits, Misses: ps.BPFMisses, Stale: ps.BPFStale, Errors: ps.BPFErrors}
		}
	}
	s.Capture = "off"
	if d.acct != nil {
		name, err := d.acct.Backend()
		s.Capture = name
		if err != nil {
			s.CaptureNote = err.Error()
		}
	}
}

// Cleanup removes what a crashed daemon left: redirect rules, a stale control
// socket and pid file. It refuses while a daemon is running.
func Cleanup(cfg Config) (string, error) {
	if err := cfg.fill(); err != nil {
		return "", err
	}
	if os.Geteuid() != 0 {
		return "", errors.New("netshape cleanup needs root (it removes firewall rules): run `sudo netshape cleanup`")
	}
	if pid := runningPid(cfg.StateDir); pid > 0 {
		return "", fmt.Errorf("netshape is running (pid %d): stop it with `netshape stop` (it removes its rules itself)", pid)
	}
	red, err := newRedirector(cfg, cfg.Logger)
	if err != nil {
		return "", err
	}
	if err := red.Cleanup(); err != nil {
		return "", fmt.Errorf("remove leftover rules: %w", err)
	}
	os.Remove(lockPath(cfg.StateDir))
	if c := control.NewClient(cfg.Socket); c != nil {
		if err := c.Get(context.Background(), "/v1/status", nil); errors.Is(err, control.ErrNotRunning) {
			os.Remove(cfg.Socket)
		}
	}
	return fmt.Sprintf("removed netshape's %s rules (if any) and stale state in %s", red.Name(), cfg.StateDir), nil
}
