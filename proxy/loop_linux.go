package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/flow"
)

// The event loops: on Linux the proxy accepts, identifies, decides, dials
// and relays its flows on one goroutine per CPU, each with an
// edge-triggered epoll set, as HAProxy does with a thread each, instead of a
// goroutine per connection and direction. A loop waits for its set in the
// runtime's poller and makes its other system calls raw (rawsys_linux.go):
// on a locked thread blocked in epoll_wait, with the runtime's entry and
// exit around every call, sysmon and thread hand-offs cost ~40 µs of CPU per
// connection (BENCHMARKS.md round 6). Every hook runs inline (they must not
// block: the process lookup is IdentifyFast, a BPF map read, the decision
// and the limiter's attach are in memory); a flow the fast lookup cannot
// name is identified on a goroutine. Over the goroutine design, in namespace
// pairs with every feature on: added p50 latency 20-90 µs lower, ~15% more
// connections per second at ~35 µs less CPU each (BENCHMARKS.md round 5,
// before round 6's changes). When a decision may depend on the host name, the loop itself waits (bounded by
// PeekWait) for the client's first bytes. A flow goes to the goroutine path
// (conn.go) when it needs to block: a prompt (Ask) or a rate limit
// (Limiter.Grant may wait), also when a rate rule starts to apply mid-flow.
// A burst's first 16 KiB are copied with read(2) and write(2) through the
// loop's buffer (copyBuf); the rest of a larger burst moves with splice(2)
// through a pipe per direction, taken only while bytes wait in it.

// waiter is implemented by limiters that can tell whether Grant may wait in
// direction d now (a rate limit applies); quotas never make it wait. Flows
// whose limiter cannot tell stay on goroutines.
type waiter interface {
	Waits(d Dir) bool
}

// lside is one socket of a flow relayed by a loop.
type lside struct {
	fd   int
	peer *lside
	fl   *lflow
	d    Dir // the direction of the bytes read from this socket

	pp     pipe // holds bytes read here, not yet written to peer
	havePP bool
	inPipe int

	eof   bool // read returned 0
	rdhup bool // an event said the peer shut down its side: read on to EOF
	shut  bool // this socket was half-closed after its peer's EOF
	bulk  bool // this burst filled the copy buffer: splice the rest of it
}

// loopConn is a loop flow's conn and lflow, one allocation.
type loopConn struct {
	c  conn
	fl lflow
}

// lflow is a flow owned by a loop.
type lflow struct {
	c        *conn
	cli, up  lside
	lim      Limiter
	gen      uint32 // in the epoll events too: an event for a closed socket whose fd was reused must not reach the new one
	dialing  bool
	deadline time.Time // of the dial
	sniffed  bool      // the client's first bytes were looked at

	// Waiting for the client's first bytes before the decision (a rule
	// may depend on the host name): until sniffBy, or splitWait after a
	// first message began to arrive.
	sniffing bool
	sniffBy  time.Time
	begun    bool
	f        flow.Flow // the flow as identified, for its decision (on the goroutine path too after a hand-off)
	toGo     bool      // hand to the goroutine path once the pipes are empty
	cutErr   error     // the limiter cut the flow: end it once the pipes are empty
	queued   bool      // in the loop's ready list: it stopped moving bytes with more to read
	done     bool
}

// loop is one event loop.
type loop struct {
	buf   []byte // small bursts are copied through it (see move)
	p     *Proxy
	ep    int
	epf   *os.File        // ep for the runtime's poller (see wait)
	eprc  syscall.RawConn // epf's
	timed bool            // epf has a read deadline set
	// wait's arguments and results for waitFn (l.waitOnce).
	waitFn  func(uintptr) bool
	waitEvs []unix.EpollEvent
	waitN   int
	waitErr error
	wake    int   // eventfd: requests and Close
	lfds    []int // this loop's duplicates of the listening sockets
	flows   map[int]*lside
	gen     uint32

	dialing    map[*lflow]struct{}
	sniffing   map[*lflow]struct{}
	budget     int      // reads per direction and turn: moveBudget
	ready      []*lflow // flows to pump again after this round of events (fairness)
	spare      []*lflow
	pausedTill time.Time // accepting paused (out of descriptors) until then
	paused     bool

	mu   sync.Mutex
	reqs []func()
	quit bool
}

// loopsWanted reports whether Serve should use event loops.
func (p *Proxy) loopsWanted() bool {
	return p.cfg.OriginalDstFD != nil && !p.cfg.GoroutineRelay
}

// startLoops starts one loop per CPU on the listeners. On error nothing was
// started and the listeners are untouched.
func (p *Proxy) startLoops() ([]*loop, error) {
	p.mu.Lock()
	ls := p.listeners
	p.mu.Unlock()
	n := runtime.GOMAXPROCS(0)
	var loops []*loop
	fail := func(err error) ([]*loop, error) {
		for _, l := range loops {
			l.closeFDs()
		}
		return nil, err
	}
	for range n {
		l := &loop{p: p, buf: make([]byte, copyBuf), flows: map[int]*lside{}, dialing: map[*lflow]struct{}{}, sniffing: map[*lflow]struct{}{},
			budget: moveBudget, ep: -1, wake: -1}
		l.waitFn = l.waitOnce
		loops = append(loops, l)
		var err error
		if l.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			return fail(fmt.Errorf("epoll_create1: %w", err))
		}
		if err := unix.SetNonblock(l.ep, true); err != nil {
			return fail(fmt.Errorf("epoll fd non-blocking: %w", err))
		}
		l.epf = os.NewFile(uintptr(l.ep), "netshape-loop-epoll")
		if l.eprc, err = l.epf.SyscallConn(); err != nil {
			return fail(fmt.Errorf("epoll fd: %w", err))
		}
		if l.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
			return fail(fmt.Errorf("eventfd: %w", err))
		}
		if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.wake)}); err != nil {
			return fail(fmt.Errorf("epoll_ctl: %w", err))
		}
		for _, tl := range ls {
			rc, err := tl.SyscallConn()
			if err != nil {
				return fail(err)
			}
			var fd int
			var derr error
			rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
			if derr != nil {
				return fail(fmt.Errorf("dup listener: %w", derr))
			}
			l.lfds = append(l.lfds, fd)
			// Every loop waits on every listener. EPOLLEXCLUSIVE would wake
			// one loop per new connection, but the kernel honours it only
			// for a set that a thread waits on itself; ours are watched
			// through the runtime's poller, so every idle loop wakes and
			// all but one find EAGAIN. A SO_REUSEPORT listener per loop
			// measured no better (BENCHMARKS.md round 7).
			if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)}); err != nil {
				return fail(fmt.Errorf("epoll_ctl listener: %w", err))
			}
		}
	}
	return loops, nil
}

// listenControl sets TCP_NODELAY on a listening socket the loops will
// serve: accepted sockets inherit it, a system call less per connection
// (TestNoDelay).
func (p *Proxy) listenControl() func(network, address string, c syscall.RawConn) error {
	if !p.loopsWanted() {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("TCP_NODELAY: %w", serr)
		}
		return nil
	}
}

// serveLoops runs the loops until Close. The runtime's listeners stay open
// (Addrs and Close use them) but nothing accepts on them but the loops.
func (p *Proxy) serveLoops(loops []*loop) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		for _, l := range loops {
			l.closeFDs()
		}
		return nil
	}
	p.loops = loops
	done := make(chan struct{})
	p.loopsDone = done
	p.mu.Unlock()
	defer close(done)
	// The runtime's listeners close: its poller would wake for every new
	// connection that nobody accepts there. The loops' duplicates keep the
	// sockets listening, and Addrs still answers.
	p.closeListeners()
	var wg sync.WaitGroup
	errc := make(chan error, len(loops))
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.run()
			if err != nil {
				p.log.Error("an event loop stopped; its flows were reset, the other loops go on", "err", err)
			}
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

// stopLoops makes the loops stop accepting and, once their flows have ended
// (Close aborts them first), return.
func (p *Proxy) stopLoops() {
	p.mu.Lock()
	loops, done := p.loops, p.loopsDone
	p.mu.Unlock()
	for _, l := range loops {
		l.post(nil)
	}
	if done != nil {
		<-done
	}
}

// post runs fn on the loop's goroutine (nil: stop). It reports false when the
// loop has stopped.
func (l *loop) post(fn func()) bool {
	l.mu.Lock()
	if l.quit {
		l.mu.Unlock()
		return false
	}
	if fn == nil {
		l.quit = true
	} else {
		l.reqs = append(l.reqs, fn)
	}
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.wake, one[:])
	return true
}

func (l *loop) closeFDs() {
	for _, fd := range l.lfds {
		unix.Close(fd)
	}
	l.lfds = nil
	if l.wake >= 0 {
		unix.Close(l.wake)
		l.wake = -1
	}
	if l.epf != nil {
		l.epf.Close() // closes ep
		l.epf = nil
		l.ep = -1
	} else if l.ep >= 0 {
		unix.Close(l.ep)
		l.ep = -1
	}
}

func (l *loop) run() error {
	defer l.closeFDs()
	evs := make([]unix.EpollEvent, 128)
	var lastScan time.Time
	for {
		timeout := -1
		if len(l.dialing) > 0 || l.paused {
			timeout = 100
		}
		if len(l.sniffing) > 0 {
			timeout = l.sniffTimeout(timeout)
		}
		if len(l.ready) > 0 {
			timeout = 0 // flows with bytes left: poll, then carry on with them
		}
		n, err := l.wait(evs, timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.failed()
			return fmt.Errorf("proxy event loop: epoll_wait: %w", err)
		}
		for i := range evs[:n] {
			ev := &evs[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.wake:
				var b [8]byte
				unix.Read(l.wake, b[:])
				if l.requests() {
					return nil
				}
			case slices.Contains(l.lfds, fd):
				l.accept(fd)
			default:
				s := l.flows[fd]
				if s == nil || s.fl.gen != uint32(ev.Pad) {
					continue // closed earlier in this batch
				}
				l.event(s, ev.Events)
			}
		}
		if len(l.ready) > 0 {
			l.runReady()
		}
		if len(l.sniffing) > 0 {
			l.sniffTimers(time.Now())
		}
		if now := time.Now(); now.Sub(lastScan) >= 100*time.Millisecond {
			lastScan = now
			l.timers(now)
		}
	}
}

// wait returns the events ready in the loop's epoll set, waiting up to
// timeout ms (-1: no limit) for one. The goroutine waits in the runtime's
// poller, as a socket read does (the set is a non-blocking fd there, as the
// parker's), not in a blocking epoll_wait on a locked thread: a thread
// blocked in a system call has its P handed off by sysmon and must win one
// back when the call returns, and keeps sysmon polling (rawsys_linux.go).
func (l *loop) wait(evs []unix.EpollEvent, timeout int) (int, error) {
	if timeout == 0 {
		return rawEpollWait(l.ep, evs)
	}
	if timeout > 0 {
		// Look before arming a deadline: under load events are there.
		if n, err := rawEpollWait(l.ep, evs); n != 0 || err != nil {
			return n, err
		}
		l.epf.SetReadDeadline(time.Now().Add(time.Duration(timeout) * time.Millisecond))
		l.timed = true
	} else if l.timed {
		l.epf.SetReadDeadline(time.Time{})
		l.timed = false
	}
	// Read calls the function first, so ready events cost no wait.
	l.waitEvs = evs
	rerr := l.eprc.Read(l.waitFn)
	l.waitEvs = nil
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	return l.waitN, l.waitErr
}

// waitOnce is wait's look at the set for the runtime's poller (made once
// per loop as l.waitFn: a closure per wait would be an allocation).
func (l *loop) waitOnce(fd uintptr) bool {
	l.waitN, l.waitErr = rawEpollWait(int(fd), l.waitEvs)
	return l.waitN != 0 || l.waitErr != nil
}

// requests runs what other goroutines posted; true means stop.
func (l *loop) requests() bool {
	l.mu.Lock()
	reqs, quit := l.reqs, l.quit
	l.reqs = nil
	l.mu.Unlock()
	for _, fn := range reqs {
		fn()
	}
	if quit && len(l.lfds) > 0 {
		for _, fd := range l.lfds {
			unix.Close(fd) // leaves the epoll set: accept no more
		}
		l.lfds = nil
	}
	// Close aborts every flow before it stops the loops; any flow left
	// (accepted meanwhile) is reset here.
	if quit {
		for _, s := range l.flows {
			if !s.fl.done {
				l.abortFlow(s.fl, "daemon stopping")
			}
		}
	}
	return quit
}

// failed ends a loop that cannot wait any more (epoll_wait failed: a bug,
// not a condition): its flows are reset rather than stranded, so Close does
// not wait for them forever, and nothing is posted to it from now on.
func (l *loop) failed() {
	l.mu.Lock()
	l.quit = true
	l.mu.Unlock()
	for _, s := range l.flows {
		if !s.fl.done {
			l.abortFlow(s.fl, "proxy event loop failed")
		}
	}
}

// timers fails dials past their deadline and resumes accepting after a pause.
func (l *loop) timers(now time.Time) {
	for fl := range l.dialing {
		if now.After(fl.deadline) {
			l.dialFailed(fl, errors.New("dial tcp "+fl.c.f.Dst.String()+": i/o timeout"))
		}
	}
	if l.paused && now.After(l.pausedTill) {
		l.paused = false
		for _, fd := range l.lfds {
			unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)})
		}
	}
}

// acceptBudget bounds the connections one turn accepts, so a burst of new
// connections does not keep a loop from its flows' events; the listener is
// level-triggered, so the rest are reported again at once.
const acceptBudget = 64

func (l *loop) accept(lfd int) {
	p := l.p
	for range acceptBudget {
		fd, src, err := rawAccept(lfd)
		switch err {
		case nil:
		case unix.EAGAIN, unix.EINTR, unix.ECONNABORTED:
			return
		default:
			// Out of descriptors and the like: stop accepting for a while
			// (the listener is level-triggered) rather than spin.
			p.log.Warn("accept failed; retrying", "err", err, "retry_in", "100ms")
			for _, x := range l.lfds {
				unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, x, nil)
			}
			l.paused, l.pausedTill = true, time.Now().Add(100*time.Millisecond)
			return
		}
		l.newFlow(fd, src)
	}
}

// resetFD closes fd with an RST.
func resetFD(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
	rawClose(fd) // sends the RST: see rawsys_linux.go
}

// newFlow sets up an accepted connection: the same steps as handle and run,
// inline, up to the non-blocking connect.
func (l *loop) newFlow(fd int, src netip.AddrPort) {
	p, h := l.p, &l.p.cfg.Hooks
	dst, err := p.cfg.OriginalDstFD(fd, src.Addr().Is6())
	if err != nil {
		p.log.Debug("dropping connection without original destination", "client", src, "err", err)
		resetFD(fd)
		return
	}
	if slices.Contains(p.cfg.Listen, dst) {
		resetFD(fd)
		return
	}
	lc := &loopConn{}
	c, fl := &lc.c, &lc.fl
	c.p, c.ctx, c.cancel = p, p.ctx, noCancel
	c.f = flow.Flow{ID: p.nextID.Add(1), Src: src, Dst: dst, Start: time.Now(), State: flow.StateDialing, UID: -1}
	fl.c = c
	c.lf = fl
	c.lp.Store(l) // from now on abort and cut come to this loop
	p.total.Add(1)
	p.wg.Add(1)
	if !p.register(c) {
		p.wg.Done()
		resetFD(fd)
		return
	}
	fl.cli = lside{fd: fd, fl: fl, d: Out}
	fl.up = lside{fd: -1, fl: fl, d: In}
	fl.cli.peer, fl.up.peer = &fl.up, &fl.cli
	defer l.recoverFlow(fl)
	fl.f = c.snapshot()
	f := &fl.f
	switch {
	case h.IdentifyFast != nil:
		if !h.IdentifyFast(f) {
			// Only the slow lookup could name the process (no BPF
			// record): it runs on a goroutine, not on the loop.
			l.handOff(fl, c.run)
			return
		}
	case h.Identify != nil:
		h.Identify(f)
	}
	if h.Name != nil {
		f.Host, f.HostSource = h.Name(f.Dst.Addr())
	}
	if h.NeedsHost != nil && h.NeedsHost(f) {
		// A decision may depend on the host name: wait (bounded) for the
		// client's first bytes, TLS SNI or HTTP Host, before deciding.
		l.startSniff(fl)
		return
	}
	l.decide(fl, false)
}

// decide carries a flow on from its identification (fl.f): interface,
// decision, limiter, dial, or a hand-off to goroutines when it must wait.
func (l *loop) decide(fl *lflow, sniffed bool) {
	c, f := fl.c, &fl.f
	defer l.recoverFlow(fl)
	action := c.decide(f)
	if action == Ask {
		c.update(func(cf *flow.Flow) { cf.Verdict, cf.RuleID = f.Verdict, f.RuleID })
		l.handOff(fl, func() bool { return c.decided(f, sniffed, Ask) })
		return
	}
	lim, ok := c.allowed(f, action, func(reason string) { l.abortFlow(fl, reason) })
	if !ok {
		return
	}
	if lim != nil && !l.mayRun(lim) {
		l.handOff(fl, func() bool { return c.dialRelay(f, sniffed, lim) })
		return
	}
	fl.lim = lim
	l.dial(fl)
}

// recoverFlow keeps a panic in one flow (a hook's, or the loop's) from
// killing the loop and the daemon: the flow is reset, the loop goes on.
// Deferred by each entry into a flow's code.
func (l *loop) recoverFlow(fl *lflow) {
	if r := recover(); r != nil {
		l.p.log.Error("panic in flow; flow reset, daemon continues", "flow", fl.c.f.ID, "panic", r, "stack", string(debug.Stack()))
		fl.c.setErr(fmt.Sprintf("internal error: %v", r))
		l.abortFlow(fl, "internal error")
	}
}

// mayRun reports whether a flow with limiter lim may stay on the loop:
// nothing can make its Grant wait.
func (l *loop) mayRun(lim Limiter) bool {
	w, ok := lim.(waiter)
	return ok && !w.Waits(In) && !w.Waits(Out)
}

// dial starts the upstream connect.
func (l *loop) dial(fl *lflow) {
	p, c := l.p, fl.c
	dst := c.f.Dst
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := rawSocket(family)
	if err != nil {
		l.dialFailed(fl, os.NewSyscallError("socket", err))
		return
	}
	fl.up.fd = fd
	if p.cfg.MarkFD != nil {
		if err := p.cfg.MarkFD(fd); err != nil {
			l.dialFailed(fl, err)
			return
		}
	} else if p.cfg.DialControl != nil {
		network := "tcp4"
		if family == unix.AF_INET6 {
			network = "tcp6"
		}
		if err := p.cfg.DialControl(network, dst.String(), fdConn(fd)); err != nil {
			l.dialFailed(fl, err)
			return
		}
	}
	// As net.Dialer with the proxy's settings: no Nagle delay, keep-alive
	// with the system's timing.
	rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	rawSetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	// The client's socket has TCP_NODELAY from its listener (listenControl).
	if err := rawConnect(fd, dst); err != nil && err != unix.EINPROGRESS {
		l.dialFailed(fl, os.NewSyscallError("connect", err))
		return
	}
	fl.dialing, fl.deadline = true, time.Now().Add(p.cfg.DialTimeout)
	l.dialing[fl] = struct{}{}
	if fl.gen == 0 { // else the client is registered already (it was sniffed)
		l.register(fl, &fl.cli)
	}
	l.flows[fd] = &fl.up
	rawEpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: sideEvents, Fd: int32(fd), Pad: int32(fl.gen)})
}

// sideEvents: what a flow's sockets are watched for, edge-triggered.
const sideEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// register gives fl its generation and watches its client socket s.
func (l *loop) register(fl *lflow, s *lside) {
	l.gen++
	if l.gen == 0 {
		l.gen++ // 0 means unregistered
	}
	fl.gen = l.gen
	l.flows[s.fd] = s
	rawEpollCtl(l.ep, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{Events: sideEvents, Fd: int32(s.fd), Pad: int32(fl.gen)})
}

// fdConn is a syscall.RawConn for a socket the loop owns, for DialControl.
type fdConn int

func (f fdConn) Control(fn func(uintptr)) error { fn(uintptr(f)); return nil }
func (f fdConn) Read(func(uintptr) bool) error  { return errors.ErrUnsupported }
func (f fdConn) Write(func(uintptr) bool) error { return errors.ErrUnsupported }

func (l *loop) dialFailed(fl *lflow, err error) {
	p := l.p
	p.failed.Add(1)
	p.log.Info("upstream unreachable; client reset", "flow", fl.c.f.ID, "dst", fl.c.f.Dst, "err", err)
	l.abortFlow(fl, err.Error())
}

// connected finishes the setup once the upstream connect completed.
func (l *loop) connected(fl *lflow) {
	p, c, h := l.p, fl.c, &l.p.cfg.Hooks
	fl.dialing = false
	delete(l.dialing, fl)
	f := c.snapshot()
	if f.Host == "" && h.NameLater != nil {
		f.Host, f.HostSource = h.NameLater(f.Dst.Addr())
	}
	var iface string
	if la, err := rawLocalAddr(fl.up.fd); err == nil {
		iface = p.ifaces.name(la.Addr())
	}
	c.update(func(cf *flow.Flow) {
		cf.Host, cf.HostSource, cf.Iface, cf.State = f.Host, f.HostSource, iface, flow.StateOpen
	})
}

// event handles readiness of one socket of a flow.
func (l *loop) event(s *lside, events uint32) {
	fl := s.fl
	defer l.recoverFlow(fl)
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.rdhup = true // edge-triggered: no other event will say so
	}
	if fl.sniffing {
		if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.sniffSetup(fl, time.Now())
		}
		return
	}
	if fl.dialing {
		if s != &fl.up {
			return // the client's bytes wait for the upstream
		}
		// A failed connect reports EPOLLERR or EPOLLHUP (a connect in
		// progress reports no EPOLLOUT): only then is SO_ERROR worth a
		// system call.
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			if e := rawSoError(s.fd); e != 0 {
				l.dialFailed(fl, os.NewSyscallError("connect", e))
			} else {
				l.dialFailed(fl, errors.New("connect: connection refused"))
			}
			return
		}
		if events&unix.EPOLLOUT == 0 {
			return
		}
		l.connected(fl)
		// The client may have sent while we dialled. The upstream has bytes
		// only if this event says so: what arrives later is another event.
		var up *lside
		if events&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
			up = &fl.up
		}
		l.pump(fl, &fl.cli, up)
		return
	}
	// Move only what the event can have changed: the bytes s has to read,
	// and the peer's bytes waiting for room in s. Each other direction is
	// at EAGAIN on its read, at EOF, or waits for its own socket's event
	// (edge-triggered: every arrival is one), so a read of it would only
	// find nothing. Internal calls (events 0) and errors move both.
	if events == 0 || events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		l.pump(fl, &fl.cli, &fl.up)
		return
	}
	var a, b *lside
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
		a = s
	}
	if events&unix.EPOLLOUT != 0 && s.peer.inPipe > 0 {
		b = s.peer
	}
	l.pump(fl, a, b)
}

// runReady pumps the flows that stopped with bytes left in the last round,
// after every other flow's events had their turn.
func (l *loop) runReady() {
	rd := l.ready
	l.ready = l.spare[:0]
	for i, fl := range rd {
		rd[i] = nil
		fl.queued = false
		if fl.done || fl.dialing || fl.sniffing || l.flows[fl.cli.fd] != &fl.cli {
			continue // ended or handed over meanwhile
		}
		l.event(&fl.cli, 0)
	}
	l.spare = rd[:0]
}

// pump moves what it can in the directions read from a and b (either may
// be nil), until each has nothing to read or its destination is full, and
// ends the flow once both directions ended.
func (l *loop) pump(fl *lflow, a, b *lside) {
	for _, s := range [2]*lside{a, b} {
		if s == nil {
			continue
		}
		if err := l.move(s); err != nil {
			if errors.Is(err, errCut) {
				return
			}
			if fl.c.f.Err == "" {
				fl.c.setErr(err.Error())
			}
			l.abortFlow(fl, err.Error())
			return
		}
	}
	switch {
	case fl.cli.eof && fl.up.eof && fl.cli.shut && fl.up.shut:
		l.closeFlow(fl)
	case fl.cutErr != nil && fl.cli.inPipe == 0 && fl.up.inPipe == 0:
		l.cutFlow(fl, fl.cutErr)
	case fl.toGo && fl.cli.inPipe == 0 && fl.up.inPipe == 0:
		lim := fl.lim
		fl.lim = nil
		l.handOffRelay(fl, lim)
	}
}

// errCut: move cut the flow (a quota ran out); it is being closed.
var errCut = errors.New("cut")

// moveBudget is how many reads one direction may do per turn: 8 MiB, under
// 10 ms at the speeds measured here, so a bulk flow does not keep a loop's
// other flows waiting for as long as its sender keeps up. A direction with
// more to read goes to the ready list and carries on after the others'
// events.
const moveBudget = 8

// move copies from s to its peer until s has nothing or the peer takes no
// more, then half-closes the peer once s reached EOF.
func (l *loop) move(s *lside) error {
	dst, fl := s.peer, s.fl
	for reads := 0; ; {
		if s.inPipe > 0 {
			n, err := spliceNB(s.pp.r, dst.fd, s.inPipe)
			if err == unix.EAGAIN {
				return nil // the peer is full: its EPOLLOUT resumes
			}
			if err != nil {
				return wrapSplice("write", err)
			}
			s.inPipe -= n
			continue
		}
		if s.havePP {
			l.p.pipes.put(s.pp)
			s.havePP = false
		}
		if s.eof {
			if !dst.shut {
				dst.shut = true
				// When the other direction is over too, pump closes
				// both sockets next, and close sends the FIN
				// (both were read to EOF: nothing unread makes it
				// an RST).
				if !(dst.eof && dst.inPipe == 0 && s.shut) {
					if err := rawShutdown(dst.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
						return os.NewSyscallError("shutdown", err)
					}
				}
			}
			return nil
		}
		if fl.toGo || fl.cutErr != nil {
			return nil // read no more: the goroutines will, or the flow ends
		}
		if reads == l.budget {
			if !fl.queued {
				fl.queued = true
				l.ready = append(l.ready, fl)
			}
			return nil
		}
		reads++
		want := chunk
		if fl.lim != nil {
			if w, ok := fl.lim.(waiter); ok && w.Waits(s.d) {
				// A rate limit applies from now on: hand the flow to
				// goroutines, which may wait, once the pipes are empty.
				fl.toGo = true
				return nil
			}
			g, err := fl.lim.Grant(l.p.ctx, s.d, chunk)
			if err != nil {
				l.cutFlow(fl, err)
				return errCut
			}
			// At least 1 (Limiter's contract): a read of 0 bytes would
			// look like EOF.
			want = max(g, 1)
		}
		if !s.bulk {
			more, err := l.copyBurst(s, want)
			if err != nil || !more {
				return err
			}
			continue
		}
		if !s.havePP {
			pp, err := l.p.pipes.get()
			if err != nil {
				fl.unread(s)
				// Out of descriptors for a pipe: let goroutines copy
				// through user space.
				fl.toGo = true
				return nil
			}
			s.pp, s.havePP = pp, true
		}
		n, err := spliceNB(s.fd, s.pp.w, want)
		if err == unix.EAGAIN {
			s.bulk = false // the next burst starts with a copy
			fl.unread(s)
			// Nothing to read: the empty pipe goes back, so idle flows
			// hold none.
			l.p.pipes.put(s.pp)
			s.havePP = false
			return nil
		}
		if err != nil {
			fl.unread(s)
			return wrapSplice("read", err)
		}
		fl.count(s, n)
		if n == 0 {
			s.eof = true
			continue
		}
		s.inPipe = n
	}
}

// count settles a read of n bytes from s: the flow's byte counter, and the
// limiter's grant; a quota that ran out ends the flow once what was read is
// forwarded (cutErr).
func (fl *lflow) count(s *lside, n int) {
	if s.d == Out {
		fl.c.out.Add(int64(n))
	} else {
		fl.c.in.Add(int64(n))
	}
	if fl.lim != nil {
		if qerr := fl.lim.Done(s.d, n); qerr != nil {
			fl.cutErr = qerr
		}
	}
}

// unread settles a grant for a read of s that read nothing.
func (fl *lflow) unread(s *lside) {
	if fl.lim != nil {
		fl.lim.Done(s.d, 0)
	}
}

// sniffed names the flow's host from the client's first bytes b (TLS SNI,
// HTTP Host), as the goroutine path does after its dial: the first read
// from the client is a copy (copyBurst), so the bytes are at hand without a
// peek; a first message split over segments is not waited for.
func (l *loop) sniffed(fl *lflow, b []byte) {
	fl.sniffed = true
	host, src, says := nameIn(b)
	if says != namesHost {
		return
	}
	c := fl.c
	f := c.snapshot()
	if f.HostSource == flow.HostSNI || f.HostSource == flow.HostHTTP {
		return
	}
	c.named(&f, host, src)
	c.update(func(cf *flow.Flow) { cf.Host, cf.HostSource = host, src })
}

// release takes fl's sockets out of the loop and gives its pipes back;
// bytes in a pipe are lost, so callers only release flows whose pipes are
// empty or that are being reset. With closing, the caller closes both
// sockets next, which takes them out of the epoll set (nothing else holds
// them), so they are not taken out here: a system call saved per socket.
func (l *loop) release(fl *lflow, closing bool) {
	delete(l.dialing, fl)
	delete(l.sniffing, fl)
	for _, s := range []*lside{&fl.cli, &fl.up} {
		if s.fd >= 0 && l.flows[s.fd] == s {
			delete(l.flows, s.fd)
			if !closing {
				rawEpollCtl(l.ep, unix.EPOLL_CTL_DEL, s.fd, nil)
			}
		}
		if s.havePP {
			if s.inPipe == 0 {
				l.p.pipes.put(s.pp)
			} else {
				s.pp.close()
			}
			s.havePP, s.inPipe = false, 0
		}
	}
}

// end finishes a flow the loop owned: both sockets closed, limiter closed,
// the flow recorded.
func (l *loop) end(fl *lflow) {
	if fl.done {
		return
	}
	fl.done = true
	if fl.lim != nil {
		fl.lim.Close()
	}
	l.p.unregister(fl.c)
	l.p.wg.Done()
}

// closeFlow ends a flow whose both directions ended.
func (l *loop) closeFlow(fl *lflow) {
	l.release(fl, true)
	rawClose(fl.cli.fd)
	rawClose(fl.up.fd)
	l.end(fl)
}

// abortFlow resets both sides: they see an RST, not a FIN.
func (l *loop) abortFlow(fl *lflow, reason string) {
	if fl.done {
		return
	}
	fl.c.setErr(reason)
	l.release(fl, true)
	resetFD(fl.cli.fd)
	if fl.up.fd >= 0 {
		resetFD(fl.up.fd)
	}
	l.end(fl)
}

// cutFlow ends a flow cleanly (FIN both ways) because its limiter said so.
func (l *loop) cutFlow(fl *lflow, err error) {
	fl.c.setErr(err.Error())
	for _, s := range []*lside{&fl.cli, &fl.up} {
		rawShutdown(s.fd, unix.SHUT_WR)
		rawShutdown(s.fd, unix.SHUT_RD)
	}
	l.closeFlow(fl)
}

// owned returns the loop's state of c while the loop owns c's flow, on the
// loop's goroutine.
func (l *loop) owned(c *conn) *lflow {
	if fl := c.lf; fl != nil && !fl.done {
		return fl
	}
	return nil
}

// abortOwned is conn.abort on the loop's goroutine; a flow the loop handed to
// goroutines meanwhile is aborted there.
func (l *loop) abortOwned(c *conn, reason string) {
	if fl := l.owned(c); fl != nil {
		l.abortFlow(fl, reason)
	} else if c.lp.Load() == nil { // handed to goroutines; else it ended here
		c.abortGo(reason)
	}
}

// cutOwned is conn.cut on the loop's goroutine.
func (l *loop) cutOwned(c *conn, err error) {
	if fl := l.owned(c); fl != nil {
		l.cutFlow(fl, err)
	} else if c.lp.Load() == nil && c.up.Load() != nil {
		c.cutGo(err)
	}
}

// asTCP turns a socket the loop owned into a *net.TCPConn for the
// goroutine path (a duplicate in the runtime's poller; fd is closed).
func asTCP(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, errors.New("not a TCP socket")
	}
	return tc, nil
}

// handOff passes a decided flow, not yet dialled, to the goroutine path,
// which runs step and then owns the flow.
func (l *loop) handOff(fl *lflow, step func() bool) {
	c := fl.c
	l.release(fl, false)
	tc, err := asTCP(fl.cli.fd)
	if err != nil {
		c.setErr("cannot pass the connection to the goroutine path: " + err.Error())
		resetFD(fl.cli.fd)
		l.end(fl)
		return
	}
	fl.done = true // the goroutine path ends it now
	c.client = tc
	c.ctx, c.cancel = context.WithCancel(l.p.ctx)
	c.lp.Store(nil)
	go c.carry(step)
}

// handOffRelay passes a relaying flow, its pipes empty, to the goroutine
// relay (a rate limit now applies, or no pipe could be had).
func (l *loop) handOffRelay(fl *lflow, lim Limiter) {
	c := fl.c
	l.release(fl, false)
	cli, err := asTCP(fl.cli.fd)
	var up *net.TCPConn
	if err == nil {
		if up, err = asTCP(fl.up.fd); err != nil {
			reset(cli)
		}
	} else {
		resetFD(fl.up.fd)
	}
	if err != nil {
		c.setErr("cannot pass the connection to the goroutine path: " + err.Error())
		fl.lim = lim
		l.end(fl)
		return
	}
	fl.done = true
	c.client = cli
	c.ctx, c.cancel = context.WithCancel(l.p.ctx)
	c.up.Store(up)
	c.sniffDone = true
	c.lp.Store(nil)
	// Half-closes already done stay done; an ended direction ends at once.
	go c.relayFrom(up, lim, false, fl.cli.eof, fl.up.eof)
}

// startSniff waits for the client's first bytes before the decision.
func (l *loop) startSniff(fl *lflow) {
	fl.sniffing, fl.sniffBy = true, time.Now().Add(l.p.cfg.PeekWait)
	l.sniffing[fl] = struct{}{}
	// Watched as it will be while relaying: the registration stays.
	l.register(fl, &fl.cli)
	l.sniffSetup(fl, time.Now()) // the bytes may be there already
}

// sniffSetup looks at the client's first bytes of a flow waiting for them
// and, once they name a host, show that none will come, or the wait is
// over, decides the flow. As conn.sniff with splitWait.
func (l *loop) sniffSetup(fl *lflow, now time.Time) {
	f := &fl.f
	pool := &l.p.peekBufs.big // 16 KiB: a large ClientHello whole
	bp := pool.Get().(*[]byte)
	n, err := rawPeek(fl.cli.fd, *bp)
	done, found := false, false
	switch {
	case err == unix.EAGAIN:
	case err != nil || n == 0:
		done = true // the client closed or failed: no name will come
		fl.sniffed = true
	default:
		host, src, says := nameIn((*bp)[:n])
		switch {
		case says == namesHost:
			fl.c.named(f, host, src)
			done, found = true, true
		case says == namesMaybe && n < len(*bp):
			if !fl.begun { // a message split over segments: its rest comes at once
				fl.begun = true
				if d := now.Add(splitWait); d.Before(fl.sniffBy) {
					fl.sniffBy = d
				}
			}
		default:
			done = true // neither TLS nor HTTP, or an address literal: nothing to wait for
			fl.sniffed = true
		}
	}
	pool.Put(bp)
	if !done && now.Before(fl.sniffBy) {
		return
	}
	fl.sniffing = false
	delete(l.sniffing, fl)
	if found {
		fl.sniffed = true
	} else if f.Host == "" && l.p.cfg.Hooks.Name != nil {
		// A client that sent nothing was waited for: the DNS answer it
		// resolved may have been learnt meanwhile.
		f.Host, f.HostSource = l.p.cfg.Hooks.Name(f.Dst.Addr())
	}
	l.decide(fl, found)
}

// sniffTimeout shortens an epoll_wait timeout (ms, -1 none) to the earliest
// end of a wait for a client's first bytes.
func (l *loop) sniffTimeout(timeout int) int {
	now := time.Now()
	for fl := range l.sniffing {
		ms := int(fl.sniffBy.Sub(now)/time.Millisecond) + 1
		if ms < 0 {
			ms = 0
		}
		if timeout < 0 || ms < timeout {
			timeout = ms
		}
	}
	return timeout
}

// sniffTimers decides the flows whose wait for their first bytes is over.
func (l *loop) sniffTimers(now time.Time) {
	for fl := range l.sniffing {
		if !now.Before(fl.sniffBy) {
			l.sniffSetup(fl, now)
		}
	}
}

// copyBuf is the loop's copy buffer: a burst's first read goes through it
// with read(2) and write(2), as HAProxy's splice-auto does; a read that
// fills it marks the burst bulk, and the rest of the burst is spliced.
// Small exchanges skip the pipe (taking one from the pool, and a splice in
// and out of it, cost more than a read and a write of a few bytes): rate
// test 5978 -> 6087 and 5625 -> 6339 connections/s, 6-12% less CPU each;
// bulk flows pay one 16 KiB copy per burst, within noise (1 stream 13.1 ->
// 13.6 Gbit/s at 0.26 -> 0.25 s/GB; BENCHMARKS.md round 6).
const copyBuf = 16 << 10

// copyBurst reads what s has (up to want, at most the loop's buffer) and
// writes it to the peer; what the peer does not take goes into a pipe, which
// move drains as it drains spliced bytes. more is false when s had nothing
// to read, or when a short read emptied it and its peer has not shut down
// (the next bytes are a new event).
func (l *loop) copyBurst(s *lside, want int) (more bool, err error) {
	dst, fl := s.peer, s.fl
	b := l.buf
	if want < len(b) {
		b = b[:want]
	}
	n, err := rawRead(s.fd, b)
	if err != nil {
		fl.unread(s)
		if err == unix.EAGAIN {
			return false, nil
		}
		return false, wrapSplice("read", err)
	}
	fl.count(s, n)
	if n == 0 {
		s.eof = true
		if s == &fl.cli {
			fl.sniffed = true // no first bytes will come
		}
		return true, nil
	}
	if s == &fl.cli && !fl.sniffed {
		l.sniffed(fl, b[:n])
	}
	s.bulk = n == len(l.buf)
	// A read shorter than asked emptied the socket; what arrives later is
	// another edge-triggered event, so a read now would find nothing
	// (HAProxy skips it too). Only a shut-down peer's EOF has to be read.
	more = n == len(b) || s.rdhup
	w, err := rawWrite(dst.fd, b[:n])
	if err != nil && err != unix.EAGAIN {
		return false, wrapSplice("write", err)
	}
	if w < n {
		// The peer is full: keep the rest in a pipe (empty, 1 MiB or
		// 64 KiB: it takes the whole rest) until the peer's EPOLLOUT.
		pp, err := l.p.pipes.get()
		if err != nil {
			// Out of descriptors: the bytes have nowhere to wait.
			return false, wrapSplice("write", fmt.Errorf("no pipe to hold %d bytes for a full peer: %w", n-w, err))
		}
		m, err := rawWrite(pp.w, b[w:n])
		if err == nil && m != n-w {
			err = io.ErrShortWrite
		}
		if err != nil {
			pp.close()
			return false, wrapSplice("write", fmt.Errorf("holding %d bytes for a full peer in a pipe: %w", n-w, err))
		}
		s.pp, s.havePP, s.inPipe = pp, true, m
		return true, nil // the pipe waits for the peer's room
	}
	return more, nil
}
