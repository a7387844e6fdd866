package daemon

import (
	"context"
	"errors"
	"fmt"
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
	Version   string
	Logger    *slog.Logger
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
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
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
	log     *slog.Logger
	red     Redirector
	proxy   *proxy.Proxy
	ctl     *control.Server
	started time.Time

	stopOnce sync.Once
	stopc    chan struct{}
	warnings []string
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
	if msg := raiseFileLimit(); msg != "" {
		log.Warn(msg)
	}

	red, err := newRedirector(cfg, log)
	if err != nil {
		return err
	}
	if err := red.Cleanup(); err != nil {
		return fmt.Errorf("remove rules left by a previous run: %w", err)
	}

	d := &Daemon{cfg: cfg, log: log, red: red, started: time.Now(), stopc: make(chan struct{})}
	p, err := proxy.New(proxy.Config{
		Listen:      listenAddrs(cfg.Port),
		OriginalDst: red.OriginalDst,
		DialControl: red.DialControl,
		Logger:      log,
		Hooks:       d.hooks(),
	})
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
			return err
		}
	}
	// Rules first, so new connections go direct while we close ours.
	if err := red.Remove(); err != nil {
		log.Error("remove redirect rules failed; run `netshape cleanup`", "err", err)
	}
	return nil
}

// listenAddrs are the proxy's addresses: IPv4 and, where the system has it,
// IPv6 loopback.
func listenAddrs(port uint16) []netip.AddrPort {
	as := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
	if hasIPv6Loopback() {
		as = append(as, netip.AddrPortFrom(netip.IPv6Loopback(), port))
	}
	return as
}

func (d *Daemon) stop() { d.stopOnce.Do(func() { close(d.stopc) }) }

func (d *Daemon) hooks() proxy.Hooks {
	return proxy.Hooks{}
}

func (d *Daemon) routes() {
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
		BytesIn:  st.BytesIn,
		BytesOut: st.BytesOut,
		Warnings: d.warnings,
	}
	for _, a := range d.proxy.Addrs() {
		s.Listen = append(s.Listen, a.String())
	}
	return s
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
