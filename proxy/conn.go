package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/proxy/sniff"
)

// chunk is the largest copy between two counter updates, and what a
// direction asks its limiter for: it matches the 1 MiB pipe, so a splice
// moves what the pipe holds, and is under a millisecond at 10 Gbit/s, so
// counters and quota checks stay current. A limiter grants less where it
// must (a bucket's chunk, a quota's 256 KiB). Asking every limiter for 256
// KiB instead cost the daemon, whose flows all have one (to meter them and
// to apply rules added later), 0.2 s/GB more CPU and ~15% of one stream's
// throughput (namespace pair, same run).
const chunk = 1 << 20

// conn is one live flow.
type conn struct {
	p      *Proxy
	client *net.TCPConn
	up     atomic.Pointer[net.TCPConn]
	ctx    context.Context
	cancel context.CancelFunc

	in, out atomic.Int64

	mu sync.Mutex
	f  flow.Flow // ID, Src, Dst never change after handle starts

	// sniffDone: the client's first bytes were seen and name no host (or
	// it closed). Touched by the setup goroutine, then the upload direction.
	sniffDone bool

	abortOnce sync.Once
	dir       [2]*direction // set when relaying; guarded by mu

	// lp is the event loop that set the flow up (Linux), nil on the
	// goroutine path and once the loop handed the flow to it (client, up,
	// ctx and cancel are set before lp is cleared); lf is the loop's state
	// of the flow, touched only on the loop's goroutine.
	lp atomic.Pointer[loop]
	lf *lflow
}

// noCancel is the cancel function of flows that have no context of their
// own (event-loop flows use the proxy's).
func noCancel() {}

func (c *conn) snapshot() flow.Flow {
	c.mu.Lock()
	f := c.f
	c.mu.Unlock()
	f.BytesIn = c.in.Load()
	f.BytesOut = c.out.Load()
	return f
}

func (c *conn) update(fn func(f *flow.Flow)) {
	c.mu.Lock()
	fn(&c.f)
	c.mu.Unlock()
}

func (c *conn) setErr(s string) {
	c.update(func(f *flow.Flow) {
		if f.Err == "" {
			f.Err = s
		}
	})
}

// abort resets both sides: the client and the server see an RST, not a FIN.
func (c *conn) abort(reason string) {
	if l := c.lp.Load(); l != nil {
		l.post(func() { l.abortOwned(c, reason) }) // false: the loop stopped, and reset its flows
		return
	}
	c.abortGo(reason)
}

// abortGo is abort on the goroutine path.
func (c *conn) abortGo(reason string) {
	c.abortOnce.Do(func() {
		c.setErr(reason)
		c.cancel()
		// Parked directions get no event once their socket is closed:
		// resume them first, so they see the abort and end the flow.
		c.mu.Lock()
		dirs := c.dir
		c.mu.Unlock()
		for _, x := range dirs {
			if x != nil {
				c.p.wake(x)
			}
		}
		reset(c.client)
		if u := c.up.Load(); u != nil {
			reset(u)
		}
	})
}

// reset closes a connection with an RST (SO_LINGER 0).
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (p *Proxy) handle(cc *net.TCPConn) {
	c := p.accepted(cc)
	if c == nil {
		p.wg.Done()
		return
	}
	c.carry(c.run)
}

// accepted makes a registered flow of a connection the accept loop took, or
// resets the connection and returns nil.
func (p *Proxy) accepted(cc *net.TCPConn) *conn {
	dst, err := p.cfg.OriginalDst(cc)
	if err != nil {
		p.log.Debug("dropping connection without original destination", "client", cc.RemoteAddr(), "err", err)
		reset(cc)
		return nil
	}
	if slices.Contains(p.cfg.Listen, dst) {
		// Redirected to ourselves: someone dialled the proxy port through the redirect.
		reset(cc)
		return nil
	}
	src := cc.RemoteAddr().(*net.TCPAddr).AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	c := &conn{p: p, client: cc}
	c.ctx, c.cancel = context.WithCancel(p.ctx)
	c.f = flow.Flow{ID: p.nextID.Add(1), Src: src, Dst: dst, Start: time.Now(), State: flow.StateDialing, UID: -1}
	p.total.Add(1)
	if !p.register(c) {
		c.cancel()
		reset(cc)
		return nil
	}
	return c
}

// carry runs step, the flow's setup from some point on (all of it, or what
// is left when an event loop hands the flow over), and ends the flow unless
// step handed it to the relay goroutines, which then end it.
func (c *conn) carry(step func() bool) {
	if !c.setup(step) {
		c.cancel()
		c.p.unregister(c)
		c.p.wg.Done()
	}
}

// setup runs step with a panic in it resetting the flow, not the daemon.
func (c *conn) setup(step func() bool) (relaying bool) {
	defer c.p.recoverFlow(c)
	return step()
}

func (c *conn) run() bool {
	p, h := c.p, &c.p.cfg.Hooks
	f := c.snapshot()
	if h.Identify != nil {
		h.Identify(&f)
	}
	if h.Name != nil {
		f.Host, f.HostSource = h.Name(f.Dst.Addr())
	}
	// The client's first bytes (TLS SNI, HTTP Host) say best which host it
	// meant. When a decision or a limit depends on it, look now and wait
	// (bounded) for them; else look once the upstream is dialled, when they
	// have more likely arrived: a peek is a syscall on the setup path.
	sniffed := false
	if h.NeedsHost != nil && h.NeedsHost(&f) {
		sniffed = c.sniff(&f, p.cfg.PeekWait, splitWait)
		if !sniffed && f.Host == "" && h.Name != nil {
			// A client that sends nothing (server speaks first) was waited
			// for: the DNS answer it resolved may have been learnt meanwhile.
			f.Host, f.HostSource = h.Name(f.Dst.Addr())
		}
	}
	return c.decided(&f, sniffed, c.decide(&f))
}

// decide finds the interface when a rule needs it, records what was learnt
// about the flow and asks policy. The event loops call it too.
func (c *conn) decide(f *flow.Flow) Action {
	p, h := c.p, &c.p.cfg.Hooks
	if h.NeedsIface != nil && h.NeedsIface() {
		f.Iface = p.routeIface(f.Dst)
	}
	c.update(func(cf *flow.Flow) { copyIdentity(cf, f) })
	if h.Decide == nil {
		return Allow
	}
	return h.Decide(f)
}

// decided carries a flow on from its decision (holding it for an answer
// first when it is Ask): limits, dial, relay. It reports whether the relay
// goroutines took the flow. The event loops hand flows here that must wait.
func (c *conn) decided(f *flow.Flow, sniffed bool, action Action) bool {
	if action == Ask {
		action = c.hold(f)
	}
	lim, ok := c.allowed(f, action, c.abort)
	if !ok {
		return false
	}
	return c.dialRelay(f, sniffed, lim)
}

// allowed records the verdict on f and, when the flow may go on, attaches
// its limiter; else it counts the flow as denied and resets it with abort (a
// flow refused by an exhausted quota too). The event loops share it.
func (c *conn) allowed(f *flow.Flow, action Action, abort func(reason string)) (Limiter, bool) {
	p, h := c.p, &c.p.cfg.Hooks
	c.update(func(cf *flow.Flow) { cf.Verdict, cf.RuleID = f.Verdict, f.RuleID })
	if action != Allow {
		p.denied.Add(1)
		if f.Verdict == "" {
			c.update(func(cf *flow.Flow) { cf.Verdict = "deny" })
		}
		abort("denied")
		return nil, false
	}
	if h.Limit == nil {
		return nil, true
	}
	lim, err := h.Limit(f)
	if err != nil {
		p.denied.Add(1)
		abort(err.Error())
		return nil, false
	}
	return lim, true
}

// dialRelay dials an allowed flow and relays it; see decided.
func (c *conn) dialRelay(f *flow.Flow, sniffed bool, lim Limiter) bool {
	p, h := c.p, &c.p.cfg.Hooks
	c.update(func(cf *flow.Flow) { cf.State = flow.StateDialing })
	up, err := c.dial()
	if err != nil {
		p.failed.Add(1)
		c.abort(err.Error())
		if lim != nil {
			lim.Close()
		}
		return false
	}
	if !sniffed {
		sniffed = c.sniff(f, 0, 0)
	}
	if f.Host == "" && h.NameLater != nil {
		f.Host, f.HostSource = h.NameLater(f.Dst.Addr())
	}
	iface := p.ifaces.name(up.LocalAddr().(*net.TCPAddr).AddrPort().Addr())
	c.update(func(cf *flow.Flow) {
		cf.Host, cf.HostSource, cf.Iface, cf.State = f.Host, f.HostSource, iface, flow.StateOpen
	})
	c.relay(up, lim, !sniffed && !c.sniffDone)
	return true
}

// lateSniff waits (bounded by PeekWait) for the first bytes of a client that
// had sent nothing by the time its flow was decided and dialled, so the
// record still gets its TLS SNI or HTTP Host. Only the upload direction
// waits here, and it has nothing to copy until those bytes arrive.
func (c *conn) lateSniff() {
	f := c.snapshot()
	// Nothing waits on the name here, but the client's bytes wait on the
	// sniff: give a message split over segments only a moment to complete.
	if c.sniff(&f, c.p.cfg.PeekWait, lateSniffMore) {
		c.update(func(cf *flow.Flow) { cf.Host, cf.HostSource = f.Host, f.HostSource })
	}
}

// copyIdentity copies what run learnt about the flow before it was decided.
func copyIdentity(dst, src *flow.Flow) {
	dst.PID, dst.PPID, dst.Exe, dst.Cmdline = src.PID, src.PPID, src.Exe, src.Cmdline
	dst.UID, dst.User, dst.Cgroup = src.UID, src.User, src.Cgroup
	dst.Host, dst.HostSource, dst.Iface = src.Host, src.HostSource, src.Iface
}

func (c *conn) dial() (*net.TCPConn, error) {
	// Not Dialer.DialTCP: its zero local address becomes a non-nil one, and
	// the socket is bound (port chosen by bind, not shared across
	// destinations by connect) before it connects.
	nc, err := c.p.dialer.DialContext(c.ctx, "tcp", c.f.Dst.String())
	if err != nil {
		if c.ctx.Err() == nil {
			c.p.log.Info("upstream unreachable; client reset", "flow", c.f.ID, "dst", c.f.Dst, "err", err)
		}
		return nil, err
	}
	up := nc.(*net.TCPConn)
	c.up.Store(up)
	if c.ctx.Err() != nil { // aborted while dialling
		reset(up)
		return nil, c.ctx.Err()
	}
	return up, nil
}

// sniff looks at the client's first bytes without consuming them and, when
// they name a host (TLS SNI, HTTP Host), sets f.Host. It waits up to wait for
// the first bytes to arrive, and once some have, up to more for the rest of a
// message split over segments. It reports whether it found a name.
func (c *conn) sniff(f *flow.Flow, wait, more time.Duration) bool {
	if f.HostSource == flow.HostSNI || f.HostSource == flow.HostHTTP {
		return true
	}
	if c.sniffDone {
		return false
	}
	// Most first messages fit in 4 KiB; a larger ClientHello (post-quantum
	// key shares, many extensions) gets 16 KiB.
	pool := &c.p.peekBufs.small
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	buf := *bp
	deadline := time.Now().Add(wait)
	started := false
	for {
		n, err := peek(c.client, buf, wait > 0, deadline)
		if err != nil {
			return false
		}
		if n == 0 {
			c.sniffDone = true // the client closed: no name will come
			return false
		}
		host, src, says := nameIn(buf[:n])
		switch says {
		case namesHost:
			c.named(f, host, src)
			return true
		case namesNothing:
			c.sniffDone = true // looking again finds nothing
			return false
		}
		if n == len(buf) {
			if pool == &c.p.peekBufs.big {
				c.sniffDone = true
				return false
			}
			pool.Put(bp)
			pool = &c.p.peekBufs.big
			bp = pool.Get().(*[]byte)
			buf = *bp
			continue
		}
		if !started {
			started = true
			if d := time.Now().Add(more); d.Before(deadline) {
				deadline = d
			}
		}
		if wait <= 0 || !time.Now().Before(deadline) {
			return false
		}
		// A ClientHello split over segments: wait for the rest.
		time.Sleep(200 * time.Microsecond)
	}
}

// firstBytes is what a client's first bytes say about the host it meant.
type firstBytes uint8

const (
	namesNothing firstBytes = iota // neither TLS nor HTTP, or an address literal: looking again finds nothing
	namesHost                      // a TLS SNI or HTTP Host name
	namesMaybe                     // the start of a message: its rest may name a host
)

// nameIn reads a client's first bytes b for the host it meant (TLS SNI,
// HTTP Host). An address literal (Host: 10.0.0.1) names nothing.
func nameIn(b []byte) (host, src string, says firstBytes) {
	host, src, err := sniff.Detect(b)
	switch {
	case errors.Is(err, sniff.ErrNeedMore):
		return "", "", namesMaybe
	case err != nil || host == "":
		return "", "", namesNothing
	}
	if _, perr := netip.ParseAddr(host); perr == nil {
		return "", "", namesNothing
	}
	return host, src, namesHost
}

// named records the host the client's first bytes named on f and tells
// the Sniffed hook.
func (c *conn) named(f *flow.Flow, host, src string) {
	f.Host, f.HostSource = host, src
	if h := c.p.cfg.Hooks.Sniffed; h != nil {
		h(f)
	}
}

// splitWait bounds the wait for the rest of a first message the decision
// needs (a ClientHello over two segments) once its first bytes are in: a
// client writes it at once, so the rest follows within microseconds.
const splitWait = 10 * time.Millisecond

// lateSniffMore bounds how long a relayed client's first message may wait for
// its rest while nothing depends on its name.
const lateSniffMore = 0

// peekBufs are the proxy's pools of peek buffers: 4 KiB, and 16 KiB for a
// first message that needs more.
type peekBufs struct{ small, big sync.Pool }

func newPeekBufs() *peekBufs {
	return &peekBufs{
		small: sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }},
		big:   sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }},
	}
}

// hold keeps the flow until Ask answers, the client gives up, or the daemon stops.
func (c *conn) hold(f *flow.Flow) Action {
	h := c.p.cfg.Hooks
	if h.Ask == nil {
		return Deny
	}
	c.update(func(cf *flow.Flow) { cf.State = flow.StateHeld })
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if clientGone(c.client) {
					c.setErr("client gave up while held")
					cancel()
					return
				}
			}
		}
	}()
	a := h.Ask(ctx, f)
	if ctx.Err() != nil && a == Allow {
		return Deny // nobody is waiting any more
	}
	return a
}

// direction is one half of a relayed flow: src to dst.
type direction struct {
	c        *conn
	d        Dir
	dst, src *net.TCPConn
	srcRC    syscall.RawConn
	dstRC    syscall.RawConn
	n        *atomic.Int64
	lim      Limiter
	end      func() // the flow's; the second direction to end closes it

	sniffFirst bool // wait (bounded) for the client's first bytes before copying (Out only)

	// Touched only by the running direction:
	deadline time.Time // src's read deadline while lingering, zero when none
	inEpoll  bool      // src is in the parker's epoll set
	noPark   bool      // parking failed: wait on the goroutine

	parkID atomic.Uint64 // the parker's entry while parked

	sp spliceState // transfer's, on Linux
}

// relay copies both directions until both end, then closes both sides.
func (c *conn) relay(up *net.TCPConn, lim Limiter, sniffFirst bool) {
	c.relayFrom(up, lim, sniffFirst, false, false)
}

// relayFrom is relay for a flow whose upload (outDone) or download (inDone)
// direction may have ended already (an event loop handing a flow over):
// that direction reached EOF and its destination was half-closed.
func (c *conn) relayFrom(up *net.TCPConn, lim Limiter, sniffFirst, outDone, inDone bool) {
	var left atomic.Int32
	left.Store(2)
	end := func() {
		if left.Add(-1) != 0 {
			return
		}
		c.client.Close()
		up.Close()
		if lim != nil {
			lim.Close()
		}
		c.cancel()
		c.p.unregister(c)
		c.p.wg.Done()
	}
	in := &direction{c: c, d: In, dst: c.client, src: up, n: &c.in, lim: lim, end: end}
	out := &direction{c: c, d: Out, dst: up, src: c.client, n: &c.out, lim: lim, end: end, sniffFirst: sniffFirst}
	for _, x := range c.dirs(in, out) {
		// Taken once: SyscallConn allocates, and transfer runs per burst.
		x.srcRC, _ = x.src.SyscallConn() // fails only for a nil conn
		x.dstRC, _ = x.dst.SyscallConn()
	}
	if outDone || inDone {
		if outDone {
			end()
		} else {
			go out.run()
		}
		if inDone {
			end()
		} else {
			go in.run()
		}
		return
	}
	// Each direction lingers a moment for bytes on its goroutine, then
	// parks. The upload side carries on here: the setup goroutine, whose
	// stack grew while identifying and dialling, ends when it parks. Without
	// a parker it would hold that stack for the life of the flow.
	go in.run()
	if c.p.parker == nil {
		go out.run()
		return
	}
	out.run()
}

// dirs stores both directions on c so abort can wake them, and returns them.
func (c *conn) dirs(in, out *direction) [2]*direction {
	c.mu.Lock()
	c.dir = [2]*direction{in, out}
	c.mu.Unlock()
	return c.dir
}

// run carries the direction on until it ends or parks.
func (x *direction) run() {
	ended := true // also when copy panics: recoverFlow aborts the flow, then it ends
	defer func() {
		if ended {
			x.end()
		}
	}()
	defer x.c.p.recoverFlow(x.c)
	if x.sniffFirst {
		x.sniffFirst = false
		x.c.lateSniff()
	}
	ended = x.copy()
}

// copy moves src to dst in chunks until EOF, then half-closes dst. Any other
// error resets both sides, so a reset on one side reaches the other. When src
// has nothing to read, the direction parks and copy returns false: the
// parker runs it again on a new goroutine once src is readable.
func (x *direction) copy() (ended bool) {
	c := x.c
	// Waiting is always right: transfer tries src first and waits only when
	// it has nothing, so a readable src (after a wake, or a client's first
	// bytes) costs nothing, and an empty one costs one splice, not two.
	wait := true
	for {
		want := chunk
		if x.lim != nil {
			g, err := x.lim.Grant(c.ctx, x.d, chunk)
			if err != nil {
				if c.ctx.Err() != nil {
					c.abort(err.Error())
				} else {
					c.cut(err)
				}
				return true
			}
			want = g
		}
		if wait {
			x.linger()
		}
		w, drained, err := c.p.transfer(x, want, wait)
		x.n.Add(w)
		if x.lim != nil {
			if qerr := x.lim.Done(x.d, int(w)); qerr != nil {
				c.cut(qerr)
				return true
			}
		}
		switch {
		case err == nil && drained && wait && w == 0:
			// Nothing for a linger: idle. The next read after a wake must
			// not fail on the old deadline.
			x.deadline = time.Time{}
			x.src.SetReadDeadline(time.Time{})
			if c.p.parkNow(x) {
				return false
			}
			x.noPark = true // wait on this goroutine from now on
		case err == nil:
			wait = drained
		case err == io.EOF:
			x.dst.CloseWrite()
			return true
		default:
			if c.ctx.Err() == nil {
				c.setErr(err.Error())
			}
			c.abort(err.Error())
			return true
		}
	}
}

// lingerTime is how long a drained direction waits for more bytes on its
// goroutine before it parks. A busy flow's gaps are microseconds and waiting
// in the runtime's poller costs nothing; parking and resuming costs two
// syscalls and a new goroutine, which would halve a bulk transfer's speed.
const lingerTime = 5 * time.Millisecond

// linger bounds the coming wait for src by a read deadline, so an idle
// direction parks. The deadline moves only when it is getting close: a bulk
// flow waits thousands of times a second.
func (x *direction) linger() {
	d := lingerTime
	if x.noPark || x.c.p.parker == nil {
		// Nothing parks, but transfer returns at the deadline, so the
		// flow's counters still move while bytes trickle.
		d = time.Second
	}
	now := time.Now()
	if x.deadline.Sub(now) < d/2 {
		x.deadline = now.Add(d)
		x.src.SetReadDeadline(x.deadline)
	}
}

// cut ends a flow cleanly (FIN both ways) because the limiter said so: a
// quota ran out. The other direction sees EOF and ends too.
func (c *conn) cut(err error) {
	if l := c.lp.Load(); l != nil {
		l.post(func() { l.cutOwned(c, err) })
		return
	}
	c.cutGo(err)
}

// cutGo is cut on the goroutine path.
func (c *conn) cutGo(err error) {
	c.setErr(err.Error())
	c.client.CloseWrite()
	c.up.Load().CloseWrite()
	c.client.CloseRead()
	c.up.Load().CloseRead()
}

func sortByID(fs []flow.Flow) {
	slices.SortFunc(fs, func(a, b flow.Flow) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
}
