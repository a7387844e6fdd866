package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netshape/netshape/flow"
)

// Action is what policy says about a connection.
type Action uint8

const (
	Allow Action = iota
	Deny
	Ask // hold the connection and ask the user (Hooks.Ask)
)

// Dir is a direction of a flow: In is server to client (download), Out is
// client to server (upload).
type Dir uint8

const (
	In Dir = iota
	Out
)

// Limiter shapes and meters one flow; the shaper implements it. Grant returns
// how many bytes (1 to max) may be copied now, waiting if a bucket is empty;
// Done reports how many were copied and returns an error when a quota ran out,
// which cuts the flow.
type Limiter interface {
	Grant(ctx context.Context, d Dir, max int) (int, error)
	Done(d Dir, n int) error
	Close()
}

// Hooks connect the proxy to the rest of netshape. Every hook is optional.
type Hooks struct {
	// Identify fills in the owning process of f (PID, Exe, User, ...). It must not fail the flow.
	Identify func(f *flow.Flow)
	// IdentifyFast is Identify when that needs no wait (a BPF record) and
	// reports whether it did; when it reports false the event loops hand
	// the flow to a goroutine, which calls Identify. Optional: without it the
	// loops call Identify.
	IdentifyFast func(f *flow.Flow) bool
	// Name returns a host name for ip that was learnt before the connection (DNS answers),
	// and its source, or "" when none is known.
	Name func(ip netip.Addr) (host, source string)
	// NameLater returns a name that may be found without delaying the flow (reverse DNS).
	NameLater func(ip netip.Addr) (host, source string)
	// NeedsHost reports whether f's decision may depend on its host name, so
	// the proxy waits (bounded) for the client's first bytes before deciding.
	// f is identified, with any name learnt before the connection. It must
	// not block.
	NeedsHost func(f *flow.Flow) bool
	// NeedsIface reports whether a decision or a limit may depend on the
	// interface, so the proxy finds the egress interface by a route lookup
	// before deciding (else it learns it from the upstream socket after dialling).
	NeedsIface func() bool
	// Decide returns the verdict for f and may set f.Verdict and f.RuleID. It must not block.
	Decide func(f *flow.Flow) Action
	// Ask holds f until the user answers or ctx ends (the client gave up, or the
	// daemon stops); it returns Allow or Deny.
	Ask func(ctx context.Context, f *flow.Flow) Action
	// Limit returns the limiter for an allowed flow, or nil for none. An error
	// refuses the flow (an exhausted quota).
	Limit func(f *flow.Flow) (Limiter, error)
	// Sniffed is told the host name found in the client's first bytes (TLS SNI or
	// HTTP Host) so it may be remembered; optional.
	Sniffed func(f *flow.Flow)
	// Closed receives every flow when it ends. By value: a pointer passed
	// through a hook escapes, which cost a heap copy of every closed flow.
	Closed func(f flow.Flow)
}

// Config configures a Proxy.
type Config struct {
	// Listen addresses; the redirect rules send connections here.
	Listen []netip.AddrPort
	// OriginalDst recovers a redirected connection's destination (the Redirector's).
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// OriginalDstFD is OriginalDst for a socket the event loops accepted
	// (Linux: SO_ORIGINAL_DST); without it flows are relayed on goroutines.
	OriginalDstFD func(fd int, v6 bool) (netip.AddrPort, error)
	// GoroutineRelay relays every flow on goroutines, without the event loops.
	GoroutineRelay bool
	// DialControl marks upstream sockets so the redirect skips them (the loop guard).
	DialControl func(network, address string, c syscall.RawConn) error
	// MarkFD is DialControl for a socket the event loops made (Linux:
	// SO_MARK), without a closure or an address string per connection;
	// without it the loops call DialControl.
	MarkFD func(fd int) error
	// DialTimeout bounds the upstream connect; default 15s.
	DialTimeout time.Duration
	// PeekWait bounds how long a flow waits for the client's first bytes when a
	// decision depends on the host name; default 150ms. Server-speaks-first
	// protocols (SSH, SMTP) pay this at most once, and only then.
	PeekWait time.Duration
	// MaxClosed is how many closed flows are kept for `flows --closed`; default 1000.
	MaxClosed int
	// MaxConns caps concurrent flows (0: no cap). Past it a new connection
	// is reset at once: better one refused connection than a daemon out of
	// descriptors for its database, its control socket and every flow.
	MaxConns int
	Hooks    Hooks
	Logger   *slog.Logger
}

// Stats are the proxy's counters.
type Stats struct {
	Active   int   `json:"active_flows"`
	Total    int64 `json:"total_flows"`
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	Denied   int64 `json:"denied_flows"`
	Failed   int64 `json:"failed_flows"`
	Refused  int64 `json:"refused_flows,omitempty"` // over MaxConns
}

// Proxy is the transparent proxy. Create it with New, start it with Serve.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	dialer   net.Dialer
	ifaces   ifaceCache
	routes   routeCache
	pipes    pipePool
	parker   *parker // nil: idle relay directions wait on their own goroutine
	peekBufs *peekBufs

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // flows and accept loops

	nextID atomic.Uint64
	total  atomic.Int64
	denied atomic.Int64
	failed atomic.Int64
	// refused counts connections reset over MaxConns; fullWarned is when
	// that was last logged (unix ns), at most every 10 s.
	refused    atomic.Int64
	fullWarned atomic.Int64
	// bytes of flows that have ended; live flows add their own counters in Stats.
	closedIn, closedOut atomic.Int64

	mu        sync.Mutex
	listeners []*net.TCPListener
	loops     []*loop       // the event loops, when Serve runs them
	loopsDone chan struct{} // closed when they have returned
	live      map[uint64]*conn
	closed    []flow.Flow // ring of the last MaxClosed
	closedPos int
	stopped   bool
}

// New checks cfg and returns a Proxy. It does not listen yet.
func New(cfg Config) (*Proxy, error) {
	if len(cfg.Listen) == 0 {
		return nil, errors.New("proxy: no listen address")
	}
	if cfg.OriginalDst == nil {
		return nil, errors.New("proxy: no OriginalDst function")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.PeekWait <= 0 {
		cfg.PeekWait = 150 * time.Millisecond
	}
	if cfg.MaxClosed <= 0 {
		cfg.MaxClosed = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg:    cfg,
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		live:   make(map[uint64]*conn),
		// Upstream keep-alive with the system's timing (Linux: probes after
		// 2 h idle), as an app that asks for keep-alive gets; Go's default of
		// 15 s would probe every idle connection of the machine (tethered
		// data) and costs 3 more setsockopts per connection.
		dialer: net.Dialer{Timeout: cfg.DialTimeout, Control: cfg.DialControl,
			KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: -1, Interval: -1, Count: -1}},
		pipes:    newPipePool(),
		peekBufs: newPeekBufs(),
	}
	if pk, err := newParker(p.log.Warn); err == nil {
		p.parker = pk
	} else if !errors.Is(err, errors.ErrUnsupported) {
		p.log.Warn("idle connections will cost a goroutine each", "err", err)
	}
	return p, nil
}

// Listen opens every listen address. On error none stays open.
func (p *Proxy) Listen() error {
	var ls []*net.TCPListener
	for _, a := range p.cfg.Listen {
		// Accepted sockets are local clients, whose end the kernel reports
		// even when they crash: no keep-alive probes (4 setsockopts each).
		lc := net.ListenConfig{KeepAlive: -1, Control: p.listenControl()}
		// Plain TCP, not Go's default MPTCP listener: there a redirected
		// MPTCP client's connection would be an MPTCP socket, which has
		// no SO_ORIGINAL_DST; here it falls back to TCP.
		lc.SetMultipathTCP(false)
		nl, err := lc.Listen(context.Background(), "tcp", a.String())
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listen on %s: port in use (another proxy running? pick another with --port): %w", a, err)
			}
			return fmt.Errorf("listen on %s: %w", a, err)
		}
		ls = append(ls, nl.(*net.TCPListener))
	}
	p.mu.Lock()
	p.listeners = ls
	p.mu.Unlock()
	return nil
}

// Addrs returns the addresses the proxy listens on.
func (p *Proxy) Addrs() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	var as []netip.AddrPort
	for _, l := range p.listeners {
		as = append(as, l.Addr().(*net.TCPAddr).AddrPort())
	}
	return as
}

// Serve accepts connections on every listener until Close. Call Listen first.
func (p *Proxy) Serve() error {
	p.mu.Lock()
	ls := p.listeners
	p.mu.Unlock()
	if len(ls) == 0 {
		return errors.New("proxy: Serve before Listen")
	}
	if p.loopsWanted() {
		loops, err := p.startLoops()
		if err == nil {
			return p.serveLoops(loops)
		}
		p.log.Warn("event loops unavailable; relaying on goroutines", "err", err)
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			errc <- p.acceptLoop(l)
		}()
	}
	var first error
	for range ls {
		if err := <-errc; err != nil && first == nil {
			first = err
			p.closeListeners()
		}
	}
	return first
}

func (p *Proxy) acceptLoop(l *net.TCPListener) error {
	var backoff time.Duration
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off as net/http does.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			p.log.Warn("accept failed; retrying", "addr", l.Addr(), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) closeListeners() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.listeners {
		l.Close()
	}
}

// Close stops accepting, resets every live flow and waits for their goroutines.
// It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.stopped = true
	live := p.liveConns()
	p.mu.Unlock()
	p.cancel()
	p.closeListeners()
	for _, c := range live {
		c.abort("daemon stopping")
	}
	p.wg.Wait()
	p.stopLoops()
	p.pipes.drain()
	if p.parker != nil {
		p.parker.close()
	}
	return nil
}

// Relay says how flows are relayed: "event loops" (Linux, once Serve runs
// them) or "goroutines".
func (p *Proxy) Relay() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.loops) > 0 {
		return fmt.Sprintf("event loops (%d)", len(p.loops))
	}
	return "goroutines"
}

// Stats returns the counters now.
func (p *Proxy) Stats() Stats {
	s := Stats{
		Total:    p.total.Load(),
		Denied:   p.denied.Load(),
		Failed:   p.failed.Load(),
		Refused:  p.refused.Load(),
		BytesIn:  p.closedIn.Load(),
		BytesOut: p.closedOut.Load(),
	}
	p.mu.Lock()
	s.Active = len(p.live)
	for _, c := range p.live {
		s.BytesIn += c.in.Load()
		s.BytesOut += c.out.Load()
	}
	p.mu.Unlock()
	return s
}

// Flows returns a snapshot of the live flows, and with closed also the last
// closed ones, oldest first.
func (p *Proxy) Flows(closed bool) []flow.Flow {
	p.mu.Lock()
	out := make([]flow.Flow, 0, len(p.live))
	if closed {
		n := len(p.closed)
		for i := 0; i < n; i++ {
			out = append(out, p.closed[(p.closedPos+i)%n])
		}
	}
	live := p.liveConns()
	p.mu.Unlock()
	start := len(out)
	for _, c := range live {
		out = append(out, c.snapshot())
	}
	sortByID(out[start:])
	return out
}

// ChangedFlows returns snapshots of the live flows whose byte counts differ
// from seen (flow id -> bytes in, out), and of those seen lacks, in no
// particular order. For a periodic pass that wants what moved (the usage
// flush): an idle flow costs it two atomic loads instead of a snapshot.
func (p *Proxy) ChangedFlows(seen map[uint64][2]int64) []flow.Flow {
	p.mu.Lock()
	live := p.liveConns()
	p.mu.Unlock()
	var out []flow.Flow
	for _, c := range live {
		// c.f.ID never changes once c is live: no need for c.mu.
		if v, ok := seen[c.f.ID]; ok && v == [2]int64{c.in.Load(), c.out.Load()} {
			continue
		}
		out = append(out, c.snapshot())
	}
	return out
}

// liveConns returns the live flows; the caller holds p.mu. Callers look at
// them after releasing it: the event loops take p.mu for every flow that
// starts or ends, and a snapshot of thousands of flows under it (every 2 s,
// for the usage flush) held them all up for milliseconds.
func (p *Proxy) liveConns() []*conn {
	cs := make([]*conn, 0, len(p.live))
	for _, c := range p.live {
		cs = append(cs, c)
	}
	return cs
}

// CloseFlows resets every live flow for which match returns true (a new deny
// rule, an exhausted quota) and returns how many it cut.
func (p *Proxy) CloseFlows(match func(f *flow.Flow) bool, reason string) int {
	cut := p.matching(match)
	for _, c := range cut {
		c.abort(reason)
	}
	return len(cut)
}

// matching returns the live flows for which match returns true, looking at
// each after p.mu is released (see liveConns).
func (p *Proxy) matching(match func(f *flow.Flow) bool) []*conn {
	p.mu.Lock()
	live := p.liveConns()
	p.mu.Unlock()
	var out []*conn
	for _, c := range live {
		s := c.snapshot()
		if match(&s) {
			out = append(out, c)
		}
	}
	return out
}

// CutFlows ends every open flow for which match returns true cleanly (FIN
// both ways, as when a quota runs out mid-transfer) and returns how many.
func (p *Proxy) CutFlows(match func(f *flow.Flow) bool, reason string) int {
	cut := p.matching(func(f *flow.Flow) bool { return f.State == flow.StateOpen && match(f) })
	for _, c := range cut {
		c.cut(errors.New(reason))
	}
	return len(cut)
}

func (p *Proxy) register(c *conn) bool {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return false
	}
	if max := p.cfg.MaxConns; max > 0 && len(p.live) >= max {
		p.mu.Unlock()
		p.refused.Add(1)
		now := time.Now().UnixNano()
		if last := p.fullWarned.Load(); now-last > int64(10*time.Second) && p.fullWarned.CompareAndSwap(last, now) {
			p.log.Warn("connection limit reached: new connections are reset", "max_conns", max, "refused_so_far", p.refused.Load())
		}
		return false
	}
	p.live[c.f.ID] = c
	p.mu.Unlock()
	return true
}

func (p *Proxy) unregister(c *conn) {
	f := c.snapshot()
	f.State = flow.StateClosed
	f.End = time.Now()
	p.closedIn.Add(f.BytesIn)
	p.closedOut.Add(f.BytesOut)
	p.mu.Lock()
	delete(p.live, f.ID)
	if len(p.closed) < p.cfg.MaxClosed {
		p.closed = append(p.closed, f)
	} else {
		p.closed[p.closedPos] = f
		p.closedPos = (p.closedPos + 1) % len(p.closed)
	}
	p.mu.Unlock()
	if h := p.cfg.Hooks.Closed; h != nil {
		h(f)
	}
}

// parkNow parks x until its source is readable and reports whether it did.
func (p *Proxy) parkNow(x *direction) bool {
	return p.parker != nil && p.parker.park(x)
}

// wake resumes x if it is parked.
func (p *Proxy) wake(x *direction) {
	if p.parker != nil {
		p.parker.wake(x)
	}
}

// recoverFlow keeps a panic in one flow from killing the daemon.
func (p *Proxy) recoverFlow(c *conn) {
	if r := recover(); r != nil {
		p.log.Error("panic in flow; flow reset, daemon continues", "flow", c.f.ID, "panic", r, "stack", string(debug.Stack()))
		c.setErr(fmt.Sprintf("internal error: %v", r))
		c.abort("internal error")
	}
}
