package pfctl

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrUnsupported: this system has no pf backend (not macOS or FreeBSD).
	ErrUnsupported = errors.New("the pf backend needs macOS or FreeBSD")
	// ErrBadConfig: a Config or interface list field is invalid.
	ErrBadConfig = errors.New("invalid pf configuration")
	// ErrAnchorNotReferenced: the main ruleset does not evaluate our anchor, so
	// rules loaded there would do nothing.
	ErrAnchorNotReferenced = errors.New("the main pf ruleset does not reference the netshape anchor")
	// ErrPFDisabled: pf is off and this OS gives us no reference-counted way to
	// turn it on (FreeBSD).
	ErrPFDisabled = errors.New("pf is not enabled")
	// ErrAlreadyInstalled: Install was called twice without Remove.
	ErrAlreadyInstalled = errors.New("pf rules are already installed")
	// ErrLoopGuard: an upstream dial would not satisfy the loop guard and would
	// be redirected back to the proxy.
	ErrLoopGuard = errors.New("loop guard not in effect")
	// ErrUnsafeCommand: a pfctl call would touch the main ruleset or pf's
	// global state; it is refused before it runs.
	ErrUnsafeCommand = errors.New("refusing pfctl command outside our anchor")
)

// NatLooker answers DIOCNATLOOK: which destination a redirected connection,
// seen by the proxy as client -> proxy, was originally going to.
type NatLooker interface {
	NatLook(client, proxy netip.AddrPort) (netip.AddrPort, error)
}

// creds is the process credential seam for the loop guard (faked in tests so
// they never change the test process's gid).
type creds interface {
	Getegid() int
	Setegid(gid int) error
}

type osCreds struct{}

func (osCreds) Getegid() int          { return syscall.Getegid() }
func (osCreds) Setegid(gid int) error { return syscall.Setegid(gid) }

// tokenFile is the name, in Config.StateDir, of the file holding the pf enable
// reference token of the running (or crashed) daemon.
const tokenFile = "pf.token"

// PF is the pf Redirector for macOS and FreeBSD. Its methods are safe for
// concurrent use.
type PF struct {
	cfg     Config
	cfgErr  error
	run     Runner
	natlook NatLooker
	log     *slog.Logger
	creds   creds

	guarded atomic.Bool // egid switched: DialControl checks it

	mu        sync.Mutex
	loaded    bool   // our rules are in the anchor
	token     string // pf enable reference we hold ("" none)
	savedEGID int    // egid before Install, valid when guarded
	blocked   []string
}

// NewWithRunner builds a PF that runs pfctl through r and looks up original
// destinations through natlook. Config errors are reported by Install.
func NewWithRunner(cfg Config, r Runner, natlook NatLooker, log *slog.Logger) *PF {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := cfg.withDefaults()
	return &PF{cfg: c, cfgErr: err, run: r, natlook: natlook, log: log.With("backend", "pf", "anchor", c.Anchor), creds: osCreds{}}
}

// newForOS is New on the pf systems: the real runner and /dev/pf.
func newForOS(goos string, cfg Config, log *slog.Logger) (*PF, error) {
	if cfg.OS == "" {
		cfg.OS = goos
	}
	layout, err := layoutFor(cfg.OS)
	if err != nil {
		return nil, err
	}
	p := NewWithRunner(cfg, ExecRunner{}, &devNatLooker{layout: layout}, log)
	if p.cfgErr != nil {
		return nil, p.cfgErr
	}
	return p, nil
}

// Name implements daemon.Redirector.
func (p *PF) Name() string { return "pf" }

// Rules returns the ruleset Install loads (or has loaded) into the anchor.
func (p *PF) Rules() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfgErr != nil {
		return "", p.cfgErr
	}
	return renderRules(p.cfg, p.blocked), nil
}

// Install puts the redirect in place: it clears what a crashed run left,
// checks the main ruleset evaluates our anchor, switches the process's
// effective gid to the loop-guard group, loads the anchor, and (macOS) takes a
// pf enable reference whose token it saves in the state dir. On error nothing
// is left installed.
func (p *PF) Install() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfgErr != nil {
		return p.cfgErr
	}
	if p.loaded || p.token != "" || p.guarded.Load() {
		return fmt.Errorf("pf install into anchor %q: %w; call Remove first", p.cfg.Anchor, ErrAlreadyInstalled)
	}
	if err := p.cleanupStaleLocked(); err != nil {
		return fmt.Errorf("pf install: clearing a previous run: %w", err)
	}
	if err := p.checkMainRulesetLocked(); err != nil {
		return err
	}
	if p.cfg.OS == "freebsd" {
		if err := p.checkEnabledLocked(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(p.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("pf install: creating state dir: %w", err)
	}

	old := p.creds.Getegid()
	if err := p.creds.Setegid(p.cfg.LoopGID); err != nil {
		return fmt.Errorf("pf install: switching the effective gid to loop-guard group %d (run as root; does the group exist?): %w", p.cfg.LoopGID, err)
	}
	p.savedEGID = old
	p.guarded.Store(true)

	if err := p.loadLocked(p.blocked); err != nil {
		// pfctl -f commits atomically, so the anchor should still be empty;
		// flush anyway so a half-understood failure cannot leave rules behind.
		return errors.Join(fmt.Errorf("pf install: %w", err), p.flushLocked(), p.removeLocked())
	}
	if p.cfg.OS == "darwin" {
		token, err := p.enableRefLocked()
		if err != nil {
			return errors.Join(fmt.Errorf("pf install: enabling pf: %w", err), p.removeLocked())
		}
		p.token = token
		if token != "" {
			if err := writeFileAtomic(filepath.Join(p.cfg.StateDir, tokenFile), []byte(token+"\n")); err != nil {
				return errors.Join(fmt.Errorf("pf install: saving the pf enable token: %w", err), p.removeLocked())
			}
		}
	}
	p.log.Info("pf redirect installed", "loop_gid", p.cfg.LoopGID, "port", p.cfg.ListenPort,
		"token", p.token != "", "blocked_ifaces", p.blocked)
	return nil
}

// Remove flushes our anchor, releases our pf enable reference and restores the
// effective gid. It is idempotent; a step that fails is retried by the next call.
func (p *PF) Remove() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removeLocked()
}

func (p *PF) removeLocked() error {
	var errs []error
	if p.loaded {
		if err := p.flushLocked(); err != nil {
			errs = append(errs, fmt.Errorf("pf remove: flushing anchor %q (retry, or run `pfctl -a %s -F all`): %w", p.cfg.Anchor, p.cfg.Anchor, err))
		} else {
			p.loaded = false
		}
	}
	if p.token != "" && !p.loaded {
		if err := p.releaseLocked(p.token); err != nil {
			errs = append(errs, fmt.Errorf("pf remove: releasing pf enable token (kept in %s for the next cleanup): %w", p.cfg.StateDir, err))
		} else {
			p.token = ""
			if err := os.Remove(filepath.Join(p.cfg.StateDir, tokenFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("pf remove: deleting token file: %w", err))
			}
		}
	}
	if p.guarded.Load() && !p.loaded {
		if err := p.creds.Setegid(p.savedEGID); err != nil {
			errs = append(errs, fmt.Errorf("pf remove: restoring effective gid %d: %w", p.savedEGID, err))
		} else {
			p.guarded.Store(false)
		}
	}
	if c, ok := p.natlook.(io.Closer); ok && !p.loaded {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("pf remove: closing /dev/pf: %w", err))
		}
	}
	if len(errs) == 0 {
		p.log.Debug("pf redirect removed")
	}
	return errors.Join(errs...)
}

// Cleanup removes what a previous run that died without Remove left: it
// releases the enable token saved in the state dir and flushes our anchor. If
// this PF has rules installed, it removes them first. Safe when nothing is left.
func (p *PF) Cleanup() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfgErr != nil {
		return p.cfgErr
	}
	if err := p.removeLocked(); err != nil {
		return err
	}
	return p.cleanupStaleLocked()
}

func (p *PF) cleanupStaleLocked() error {
	path := filepath.Join(p.cfg.StateDir, tokenFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading stale token file: %w", err)
	default:
		stale := strings.TrimSpace(string(data))
		if tokenRE.MatchString(stale) {
			if err := p.releaseLocked(stale); err != nil {
				// After a reboot the kernel no longer knows the token; pfctl
				// says "Invalid argument". Nothing else can be done with it.
				p.log.Warn("could not release a stale pf enable token; if pf stays enabled, release it by hand",
					"token", stale, "cmd", "pfctl -X "+stale, "err", err)
			} else {
				p.log.Info("released stale pf enable token of a previous run", "token", stale)
			}
		} else {
			p.log.Warn("ignoring malformed pf token file", "path", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("deleting stale token file: %w", err)
		}
	}
	if err := p.flushLocked(); err != nil {
		return fmt.Errorf("flushing anchor %q: %w", p.cfg.Anchor, err)
	}
	return nil
}

// SetBlockedIfaces replaces the set of interfaces on which all outbound
// traffic is blocked (their quota ran out); an empty list unblocks all. When
// the rules are installed the anchor is reloaded atomically (pfctl -f loads a
// ruleset in one transaction); on error the previous rules stay.
func (p *PF) SetBlockedIfaces(ifaces []string) error {
	clean, err := cleanIfaces(ifaces)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfgErr != nil {
		return p.cfgErr
	}
	if p.loaded {
		if err := p.loadLocked(clean); err != nil {
			return fmt.Errorf("pf: blocking interfaces %v: %w", clean, err)
		}
		p.log.Info("pf interface blocks updated", "blocked_ifaces", clean)
	}
	p.blocked = clean
	return nil
}

// OriginalDst implements daemon.Redirector with DIOCNATLOOK.
func (p *PF) OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	if c == nil {
		return netip.AddrPort{}, errors.New("pf original destination: nil connection")
	}
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return netip.AddrPort{}, errors.New("pf original destination: connection has no TCP addresses (closed?)")
	}
	client, proxy := unmapAP(ra.AddrPort()), unmapAP(la.AddrPort())
	dst, err := p.natlook.NatLook(client, proxy)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("pf original destination of %v -> %v: %w", client, proxy, err)
	}
	return dst, nil
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// DialControl implements daemon.Redirector. The loop guard works per process
// (the effective gid every new socket is stamped with), so there is nothing to
// set per socket; DialControl refuses the dial when the rules are installed
// but the guard is not in effect, instead of letting the connection loop back
// into the proxy.
func (p *PF) DialControl(network, address string, _ syscall.RawConn) error {
	if !p.guarded.Load() {
		return nil
	}
	if g := p.creds.Getegid(); g != p.cfg.LoopGID {
		return fmt.Errorf("upstream dial %s %s: effective gid is %d, not loop-guard group %d, so pf would redirect it back to the proxy: %w",
			network, address, g, p.cfg.LoopGID, ErrLoopGuard)
	}
	return nil
}

// ---- pfctl calls ----

// pfctl runs pfctl after checking the call cannot touch the main ruleset or
// switch pf off: -f and -F need -a with our anchor, and -d / -e are refused.
func (p *PF) pfctl(stdin []byte, args ...string) (string, string, error) {
	if err := checkScoped(p.cfg.Anchor, args); err != nil {
		return "", "", err
	}
	out, errOut, err := p.run.Run(stdin, "pfctl", args...)
	if err != nil {
		return out, errOut, &CommandError{Cmd: "pfctl " + strings.Join(args, " "), Stderr: errOut, Err: err}
	}
	return out, errOut, nil
}

func checkScoped(anchor string, args []string) error {
	scoped := false
	for i, a := range args {
		if a == "-a" && i+1 < len(args) && args[i+1] == anchor {
			scoped = true
		}
	}
	for _, a := range args {
		switch {
		case a == "-d" || a == "-e":
			return fmt.Errorf("pfctl %s: %w: netshape never switches pf on or off except through -E/-X references", strings.Join(args, " "), ErrUnsafeCommand)
		case (strings.HasPrefix(a, "-f") || strings.HasPrefix(a, "-F")) && !scoped:
			return fmt.Errorf("pfctl %s: %w %q", strings.Join(args, " "), ErrUnsafeCommand, anchor)
		}
	}
	return nil
}

func (p *PF) loadLocked(blocked []string) error {
	rules := renderRules(p.cfg, blocked)
	if _, _, err := p.pfctl([]byte(rules), "-a", p.cfg.Anchor, "-f", "-"); err != nil {
		// pfctl -f commits in one transaction: a failed load leaves the
		// previous anchor contents, so only mark loaded on success.
		return fmt.Errorf("loading anchor %q: %w", p.cfg.Anchor, err)
	}
	p.loaded = true
	return nil
}

func (p *PF) flushLocked() error {
	_, _, err := p.pfctl(nil, "-a", p.cfg.Anchor, "-F", "all")
	return err
}

func (p *PF) releaseLocked(token string) error {
	_, _, err := p.pfctl(nil, "-X", token)
	return err
}

// tokenRE matches what pfctl -E prints on macOS: "Token : 13845789437398547195".
var tokenRE = regexp.MustCompile(`^[0-9]{1,20}$`)
var tokenLineRE = regexp.MustCompile(`(?m)^\s*Token\s*:\s*([0-9]{1,20})\s*$`)

// parseEnableToken finds the reference token in pfctl -E output (macOS prints
// it on stderr after "pf enabled" or "pf already enabled").
func parseEnableToken(output string) string {
	m := tokenLineRE.FindStringSubmatch(output)
	if m == nil {
		return ""
	}
	return m[1]
}

// enableRefLocked takes a pf enable reference (macOS pfctl -E) and returns its
// token. pf stays enabled until every holder releases its reference with -X,
// so we never switch pf off under the Application Firewall or a VPN.
func (p *PF) enableRefLocked() (string, error) {
	out, errOut, err := p.pfctl(nil, "-E")
	token := parseEnableToken(errOut + "\n" + out)
	if err != nil && token == "" {
		// "pf already enabled" without a token: pf is on, but we hold no
		// reference of our own. Proceed; the rules work while pf stays on.
		if !strings.Contains(errOut, "already enabled") {
			return "", err
		}
	}
	if token == "" {
		p.log.Warn("pfctl -E printed no reference token; pf will stay enabled after netshape stops", "stderr", pfctlNoise(errOut))
	}
	return token, nil
}

// checkEnabledLocked (FreeBSD) reads "Status: Enabled" from pfctl -s info. We
// do not enable pf there: FreeBSD pfctl has no reference-counted -E, and pf
// is the admin's to switch on (pf_enable=YES).
func (p *PF) checkEnabledLocked() error {
	out, _, err := p.pfctl(nil, "-s", "info")
	if err != nil {
		return fmt.Errorf("pf install: reading pf status (is pf loaded? kldload pf): %w", err)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Status:" {
			if f[1] == "Enabled" {
				return nil
			}
			break
		}
	}
	return fmt.Errorf("pf install: %w: set pf_enable=\"YES\" in /etc/rc.conf and run `service pf start` (see docs/packaging.md)", ErrPFDisabled)
}

// checkMainRulesetLocked makes sure the main ruleset evaluates our anchor for
// both translation (rdr-anchor) and filter (anchor) rules; otherwise loading
// it would silently do nothing.
func (p *PF) checkMainRulesetLocked() error {
	rules, _, err := p.pfctl(nil, "-s", "rules")
	if err != nil {
		return fmt.Errorf("pf install: reading the main ruleset (is pf available? FreeBSD: kldload pf): %w", err)
	}
	nat, _, err := p.pfctl(nil, "-s", "nat")
	if err != nil {
		return fmt.Errorf("pf install: reading the main translation rules: %w", err)
	}
	var missing []string
	if !referencesAnchor(nat, "rdr-anchor", p.cfg.Anchor) {
		missing = append(missing, fmt.Sprintf("rdr-anchor %q", p.cfg.Anchor))
	}
	if !referencesAnchor(rules, "anchor", p.cfg.Anchor) {
		missing = append(missing, fmt.Sprintf("anchor %q", p.cfg.Anchor))
	}
	if len(missing) == 0 {
		return nil
	}
	fix := "add these lines to /etc/pf.conf (rdr-anchor with the translation rules, anchor with the filter rules) and run `service pf reload`"
	if p.cfg.OS == "darwin" {
		fix = "the stock /etc/pf.conf references com.apple/*; restore it and run `sudo pfctl -f /etc/pf.conf`"
	}
	return fmt.Errorf("pf install: %w: missing %s; %s", ErrAnchorNotReferenced, strings.Join(missing, " and "), fix)
}

// referencesAnchor reports whether pfctl -s rules / -s nat output has a line
// `<kw> "NAME" ...` that evaluates anchor: the same name, or a wildcard
// "parent/*" whose direct child it is, or "*".
func referencesAnchor(output, kw, anchor string) bool {
	prefix := kw + ` "`
	for line := range strings.SplitSeq(output, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		name, _, ok := strings.Cut(rest, `"`)
		if !ok {
			continue
		}
		if name == anchor || name == "*" {
			return true
		}
		if parent, ok := strings.CutSuffix(name, "/*"); ok {
			if child, ok := strings.CutPrefix(anchor, parent+"/"); ok && !strings.Contains(child, "/") {
				return true
			}
		}
	}
	return false
}

func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
