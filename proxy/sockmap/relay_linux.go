package sockmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Relay moves bytes between pairs of TCP sockets inside the kernel. One
// goroutine watches all pairs through an epoll set of its own; an idle pair
// costs no goroutine.
type Relay struct {
	log  *slog.Logger
	obj  *objects
	epfd int
	wake int // eventfd that interrupts the loop on Close

	// afterTargets, when set (by tests), runs between linking the
	// redirect targets and the verdicts, under mu.
	afterTargets func()

	mu     sync.Mutex
	closed bool
	nextID uint32
	sides  map[uint32]*side   // by epoll id
	pairs  map[*Pair]struct{} // live pairs
	flush  map[*Pair]struct{} // pairs with a FIN waiting for the peer to catch up
	done   chan struct{}      // loop ended
}

// Pair is one relayed connection: two sockets the Relay owns until Wait
// returns.
type Pair struct {
	r      *Relay
	a, b   side
	stop   func() bool // stops the context watcher
	done   chan struct{}
	kernel bool // false: relayed by a user-space copy

	ua, ub atomic.Int64 // user-space copy: bytes so far

	// Set before done is closed.
	aToB, bToA int64
	err        error
}

// side is one socket of a pair. Fields other than conn, fd, cookie and
// prefix are guarded by Relay.mu.
type side struct {
	p      *Pair
	conn   *net.TCPConn
	fd     int
	cookie uint64
	id     uint32       // epoll data
	prefix atomic.Int64 // bytes user space moved to the peer (drainToEOF)

	rbase    uint64 // data bytes received that the flush need not wait for
	wbase    uint64 // bytes written to this socket at hand-off
	fin      bool   // a FIN arrived on this side
	draining bool   // the kernel refused it; user space moves its last bytes
	shut     bool   // its bytes all reached the peer and the peer was shut for writing
	next     time.Time
	period   time.Duration
}

func (s *side) peer() *side {
	if s == &s.p.a {
		return &s.p.b
	}
	return &s.p.a
}

// Open loads the BPF program and maps and starts the watcher. It returns an
// error wrapping ErrUnsupported when the kernel refuses them.
func Open(log *slog.Logger, opt Options) (*Relay, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.MaxPairs <= 0 {
		opt.MaxPairs = 65536
	}
	obj, err := loadObjects(opt.MaxPairs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (needs Linux >= 5.13 with CONFIG_NET_SOCK_MSG and CAP_BPF+CAP_NET_ADMIN)", ErrUnsupported, err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		obj.close()
		return nil, fmt.Errorf("create the epoll set: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		obj.close()
		unix.Close(epfd)
		return nil, fmt.Errorf("create the wake eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}); err != nil {
		obj.close()
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("watch the wake eventfd: %w", err)
	}
	r := &Relay{
		log: log, obj: obj, epfd: epfd, wake: wake, nextID: 1,
		sides: map[uint32]*side{}, pairs: map[*Pair]struct{}{}, flush: map[*Pair]struct{}{},
		done: make(chan struct{}),
	}
	go r.loop()
	return r, nil
}

// Close resets every pair still relayed (their Wait returns ErrClosed),
// stops the watcher and unloads the program. It is idempotent.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	for p := range r.pairs {
		r.finishLocked(p, ErrClosed, true)
	}
	r.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(r.wake, one[:])
	<-r.done
	unix.Close(r.epfd)
	unix.Close(r.wake)
	return r.obj.close()
}

// Splice hands a and b to the kernel: from now on what one receives is sent
// by the other. Bytes already queued on either socket are moved first, in
// order. The Relay owns a and b from now on and closes them when both
// directions ended; on an error return they are the caller's again, in an
// unknown state: close them.
//
// Precondition for the kernel relay: nobody has read from a or b yet
// (peeking with MSG_PEEK is fine, and so is writing). The stream verdict
// program takes every queued skb whole, bytes already read included
// (TestPartlyReadSkbRedirectedWhole), so a socket that was read from would
// need a user-space drain racing its writer. Splice checks the
// precondition (TCP_INFO bytes received minus SIOCINQ must be 0) and
// relays such a pair, like one whose socket already received its FIN, with
// a user-space copy instead; those bytes are exact. Pair.Kernel reports
// which. Kernel-relayed bytes can be repeated after a retransmission: see
// the package doc.
//
// Cancelling ctx resets both connections.
func (r *Relay) Splice(ctx context.Context, a, b *net.TCPConn) (*Pair, error) {
	p := &Pair{r: r, done: make(chan struct{}), kernel: true}
	p.a = side{p: p, conn: a}
	p.b = side{p: p, conn: b}
	kernel := true
	for _, s := range []*side{&p.a, &p.b} {
		fd, err := connFD(s.conn)
		if err != nil {
			return nil, err
		}
		s.fd = fd
		if s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
			return nil, fmt.Errorf("read the socket cookie: %w", err)
		}
		read, state, err := readSoFar(fd)
		if err != nil {
			return nil, err
		}
		// Not established (a FIN arrived): the kernel refuses it.
		// Read from: the kernel would repeat what was read.
		kernel = kernel && state == tcpEstablished && read == 0
	}
	if !kernel {
		return r.userSpace(ctx, p)
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	if err := r.linkTargetsLocked(p); err != nil {
		r.unlinkLocked(p)
		r.mu.Unlock()
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A FIN arrived since readSoFar: its socket cannot be a
			// redirect target. Nothing moved in the kernel yet.
			return r.userSpace(ctx, p)
		}
		return nil, err
	}
	if r.afterTargets != nil {
		r.afterTargets()
	}
	if err := r.linkVerdictsLocked(p); err != nil {
		r.unlinkLocked(p)
		r.mu.Unlock()
		return nil, err
	}
	r.pairs[p] = struct{}{}
	p.stop = context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.pairs[p]; ok {
			r.finishLocked(p, fmt.Errorf("relay stopped: %w", context.Cause(ctx)), true)
		}
	})
	r.mu.Unlock()
	for _, s := range []*side{&p.a, &p.b} {
		if s.draining {
			r.drainToEOF(ctx, s)
		}
	}
	r.mu.Lock()
	if p.a.fin || p.b.fin {
		r.flush[p] = struct{}{} // ended during the hand-off
		r.flushLocked(time.Now())
		var one = [8]byte{1}
		unix.Write(r.wake, one[:]) // the loop recomputes its timeout
	}
	r.mu.Unlock()
	return p, nil
}

const tcpEstablished = 1

// linkTargetsLocked makes both sockets redirect targets and measures what
// was written to them so far.
func (r *Relay) linkTargetsLocked(p *Pair) error {
	for _, s := range []*side{&p.a, &p.b} {
		if err := r.obj.counts.Update(s.cookie, uint64(0), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("add a byte counter: %w", mapErr(err))
		}
		if err := r.obj.targets.Update(s.cookie, uint64(s.peer().fd), ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("add the redirect target: %w", mapErr(err))
		}
	}
	for _, s := range []*side{&p.a, &p.b} {
		w, err := written(s.fd, true)
		if err != nil {
			return err
		}
		s.wbase = w
	}
	return nil
}

// linkVerdictsLocked puts the sockets under the verdict program, watches
// them, and kicks them so bytes that arrived since the hand-off are
// redirected too. A socket that received a FIN since the targets were
// linked is refused by the kernel; it is marked draining: the caller moves
// its last bytes in user space (drainToEOF).
func (r *Relay) linkVerdictsLocked(p *Pair) error {
	for _, s := range []*side{&p.a, &p.b} {
		s.id = r.nextID
		r.nextID++
		if r.nextID == 0 {
			r.nextID = 1
		}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, s.fd, &unix.EpollEvent{
			Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.id),
		}); err != nil {
			s.id = 0
			return fmt.Errorf("watch the socket: %w", err)
		}
		r.sides[s.id] = s
	}
	for _, s := range []*side{&p.a, &p.b} {
		err := r.obj.verdict.Update(s.cookie, uint64(s.fd), ebpf.UpdateNoExist)
		if errors.Is(err, unix.EOPNOTSUPP) {
			s.draining = true
			continue
		}
		if err != nil {
			return fmt.Errorf("add the socket to the verdict sockhash: %w", mapErr(err))
		}
		// Setting SO_RCVLOWAT runs sk_data_ready, which makes the verdict
		// program read what is queued (TestQueuedBytesNeedKick).
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
			return fmt.Errorf("kick the socket: %w", err)
		}
	}
	return nil
}

// drainToEOF moves the last bytes of a side the kernel refused (its FIN
// arrived between linkTargetsLocked and linkVerdictsLocked) to the peer in
// user space. The side is not under the verdict program, so its queue is
// intact and nothing else writes to the peer; the verdict program of the
// other side may already redirect the other direction.
func (r *Relay) drainToEOF(ctx context.Context, s *side) {
	err := moveToEOF(ctx, s, s.peer())
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pairs[s.p]; !ok {
		return
	}
	if err == nil {
		var w uint64
		var ti *unix.TCPInfo
		if w, err = written(s.peer().fd, true); err == nil {
			if ti, err = unix.GetsockoptTCPInfo(s.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				// Everything s received is in the peer's send
				// queue: the flush has nothing left to wait for.
				s.rbase = dataReceived(ti)
				s.peer().wbase = w
				s.draining = false
				s.fin = true
				return
			}
		}
	}
	r.finishLocked(s.p, fmt.Errorf("%w: move the last bytes: %w", ErrReset, err), true)
}

// unlinkLocked removes the pair from the maps and the epoll set and reads
// its byte counters.
func (r *Relay) unlinkLocked(p *Pair) (aToB, bToA int64) {
	counts := [2]int64{}
	for _, s := range []*side{&p.a, &p.b} {
		if s.id != 0 {
			unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
			delete(r.sides, s.id)
		}
		r.obj.verdict.Delete(s.cookie)
	}
	for i, s := range []*side{&p.a, &p.b} {
		r.obj.targets.Delete(s.cookie)
		var n uint64
		if r.obj.counts.Lookup(s.cookie, &n) == nil {
			counts[i] = int64(n)
		}
		r.obj.counts.Delete(s.cookie)
	}
	return p.a.prefix.Load() + counts[0], p.b.prefix.Load() + counts[1]
}

// Wait returns when both directions ended (or the pair was reset) with the
// bytes moved each way, including those handed over by user space.
func (p *Pair) Wait() (aToB, bToA int64, err error) {
	<-p.done
	return p.aToB, p.bToA, p.err
}

// Kernel reports whether the kernel relays the pair; false when a socket
// was read from or no longer established and a user-space copy relays it.
func (p *Pair) Kernel() bool { return p.kernel }

// Done is closed when the pair ended; Wait then returns at once.
func (p *Pair) Done() <-chan struct{} { return p.done }

// Bytes returns the bytes moved so far each way.
func (p *Pair) Bytes() (aToB, bToA int64) {
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-p.done:
		return p.aToB, p.bToA
	default:
	}
	if !p.kernel {
		return p.a.prefix.Load() + p.ua.Load(), p.b.prefix.Load() + p.ub.Load()
	}
	var na, nb uint64
	r.obj.counts.Lookup(p.a.cookie, &na)
	r.obj.counts.Lookup(p.b.cookie, &nb)
	return p.a.prefix.Load() + int64(na), p.b.prefix.Load() + int64(nb)
}

// userSpace relays p with a user-space copy (splice(2) under io.Copy), for
// sockets the kernel does not take. Each direction ends with a half-close
// of the other side; a failure resets both.
func (r *Relay) userSpace(ctx context.Context, p *Pair) (*Pair, error) {
	p.kernel = false
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.pairs[p] = struct{}{}
	r.mu.Unlock()
	var once sync.Once
	var wg sync.WaitGroup
	reset := func(err error) {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.finishLocked(p, fmt.Errorf("%w: %w", ErrReset, err), true)
		})
	}
	p.stop = context.AfterFunc(ctx, func() { reset(context.Cause(ctx)) })
	copyDir := func(dst, src *net.TCPConn, n *atomic.Int64) {
		defer wg.Done()
		for {
			m, err := io.CopyN(dst, src, 1<<20)
			n.Add(m)
			if err == io.EOF {
				if err := dst.CloseWrite(); err != nil {
					reset(err)
				}
				return
			}
			if err != nil {
				reset(err)
				return
			}
		}
	}
	wg.Add(2)
	go copyDir(p.b.conn, p.a.conn, &p.ua)
	go copyDir(p.a.conn, p.b.conn, &p.ub)
	go func() {
		wg.Wait()
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.finishLocked(p, nil, false)
		})
	}()
	return p, nil
}

// finishLocked ends a pair: out of the maps and the epoll set, counters
// read, both sockets closed (reset when reset is true).
func (r *Relay) finishLocked(p *Pair, err error, reset bool) {
	if _, ok := r.pairs[p]; !ok {
		return
	}
	delete(r.pairs, p)
	delete(r.flush, p)
	if p.kernel {
		p.aToB, p.bToA = r.unlinkLocked(p)
	} else {
		p.aToB, p.bToA = p.a.prefix.Load()+p.ua.Load(), p.b.prefix.Load()+p.ub.Load()
	}
	for _, s := range []*side{&p.a, &p.b} {
		if reset {
			s.conn.SetLinger(0)
		}
		s.conn.Close()
	}
	p.err = err
	if p.stop != nil {
		p.stop()
	}
	if err != nil {
		r.log.Debug("sockmap pair reset", "err", err, "a_to_b", p.aToB, "b_to_a", p.bToA)
	}
	close(p.done)
}

func (r *Relay) loop() {
	defer close(r.done)
	events := make([]unix.EpollEvent, 128)
	timeout := -1
	for {
		n, err := unix.EpollWait(r.epfd, events, timeout)
		if err == unix.EINTR {
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		if err != nil {
			r.log.Error("sockmap watcher failed; resetting its pairs", "err", err)
			for p := range r.pairs {
				r.finishLocked(p, fmt.Errorf("%w: watcher failed: %w", ErrReset, err), true)
			}
			r.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				var b [8]byte
				unix.Read(r.wake, b[:])
				continue
			}
			if s := r.sides[uint32(ev.Fd)]; s != nil {
				r.eventLocked(s, ev.Events)
			}
		}
		timeout = r.flushLocked(time.Now())
		r.mu.Unlock()
	}
}

// eventLocked handles an end of stream on s: a reset resets the pair, a FIN
// queues the direction for flushing.
func (r *Relay) eventLocked(s *side, ev uint32) {
	p := s.p
	if ev&(unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) == 0 {
		return
	}
	if soerr, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
		if err == nil {
			err = syscall.Errno(soerr)
		}
		r.finishLocked(p, fmt.Errorf("%w: %w", ErrReset, err), true)
		return
	}
	if s.fin {
		return
	}
	ti, err := unix.GetsockoptTCPInfo(s.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		r.finishLocked(p, fmt.Errorf("%w: read TCP_INFO: %w", ErrReset, err), true)
		return
	}
	if finReceived(ti.State) {
		s.fin = true
		s.period = time.Millisecond
		s.next = time.Time{}
		r.flush[p] = struct{}{}
	}
}

// flushLocked shuts the peer of every side whose FIN arrived once all the
// bytes that side received are in the peer's send queue, and ends pairs
// whose both directions are done. It returns the epoll timeout until the
// next check (-1: none pending).
func (r *Relay) flushLocked(now time.Time) int {
	timeout := -1
	for p := range r.flush {
		for _, s := range []*side{&p.a, &p.b} {
			if !s.fin || s.shut || s.draining {
				continue
			}
			if now.Before(s.next) {
				timeout = minTimeout(timeout, s.next.Sub(now))
				continue
			}
			done, err := r.flushed(s)
			if err != nil {
				r.finishLocked(p, fmt.Errorf("%w: %w", ErrReset, err), true)
				break
			}
			if done {
				if err := unix.Shutdown(s.peer().fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
					r.finishLocked(p, fmt.Errorf("%w: half-close the peer: %w", ErrReset, err), true)
					break
				}
				s.shut = true
				continue
			}
			s.next = now.Add(s.period)
			s.period = min(2*s.period, 100*time.Millisecond)
			timeout = minTimeout(timeout, s.period)
		}
		if p.a.shut && p.b.shut {
			r.finishLocked(p, nil, false)
		}
	}
	return timeout
}

func minTimeout(t int, d time.Duration) int {
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	if t < 0 || ms < t {
		return ms
	}
	return t
}

// flushed reports whether every byte s received since the hand-off is in
// its peer's send queue.
func (r *Relay) flushed(s *side) (bool, error) {
	ti, err := unix.GetsockoptTCPInfo(s.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false, fmt.Errorf("read TCP_INFO: %w", err)
	}
	want := dataReceived(ti) - s.rbase
	w, err := written(s.peer().fd, false)
	if err != nil {
		return false, err
	}
	got := w - s.peer().wbase
	if got > want {
		r.log.Warn("sockmap: peer sent more than its side received", "want", want, "got", got)
	}
	return got >= want, nil
}

// TCP states (include/net/tcp_states.h) in which a FIN has arrived. CLOSE
// counts: a socket we did not close gets there by a FIN in FIN_WAIT2 (the
// socket becomes a time-wait mini socket), the ACK of its FIN in LAST_ACK,
// or a reset, which the caller tells apart by SO_ERROR first.
func finReceived(state uint8) bool {
	switch state {
	case 8, 9, 11, 6, 7: // CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT, CLOSE
		return true
	}
	return false
}

// dataReceived is tcpi_bytes_received without the FIN, which it counts as
// a byte (TestBytesReceivedCountsFIN).
func dataReceived(ti *unix.TCPInfo) uint64 {
	if finReceived(ti.State) && ti.Bytes_received > 0 {
		return ti.Bytes_received - 1
	}
	return ti.Bytes_received
}

// written is how many bytes were ever written to fd: acknowledged plus
// still queued (tcpi_bytes_acked + SIOCOUTQ; both count the SYN, only
// differences matter). The two reads are not atomic; an ACK between them
// makes the sum too small, never too large. exact retries until SIOCOUTQ
// did not move around TCP_INFO.
func written(fd int, exact bool) (uint64, error) {
	for i := 0; ; i++ {
		o1, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return 0, fmt.Errorf("read SIOCOUTQ: %w", err)
		}
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, fmt.Errorf("read TCP_INFO: %w", err)
		}
		o2, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return 0, fmt.Errorf("read SIOCOUTQ: %w", err)
		}
		if o1 == o2 || (!exact && i >= 2) {
			return ti.Bytes_acked + uint64(o2), nil
		}
		if i > 1000 {
			return 0, errors.New("the send queue never held still long enough to measure it")
		}
	}
}

// moveToEOF copies from to to in user space until from's end of stream.
// Cancelling ctx unblocks it.
func moveToEOF(ctx context.Context, from, to *side) error {
	rc, err := from.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("get the socket: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		from.conn.SetReadDeadline(time.Unix(1, 0))
		to.conn.SetWriteDeadline(time.Unix(1, 0))
	})
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Read(int(fd), buf)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN // EAGAIN: wait for more
				}
			}
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return fmt.Errorf("read the queued bytes: %w", err)
		}
		if n == 0 {
			return nil
		}
		if _, err := to.conn.Write(buf[:n]); err != nil {
			return fmt.Errorf("write the queued bytes to the peer: %w", err)
		}
		from.prefix.Add(int64(n))
	}
}

// readSoFar returns how many data bytes were read from fd (TCP_INFO's
// bytes received minus SIOCINQ; peeking reads nothing) and its TCP state.
// The two reads are not atomic: it retries until the receive queue did not
// grow around TCP_INFO. Valid only while nobody reads fd meanwhile.
func readSoFar(fd int) (read uint64, state uint8, err error) {
	for i := 0; ; i++ {
		q1, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return 0, 0, fmt.Errorf("read SIOCINQ: %w", err)
		}
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, 0, fmt.Errorf("read TCP_INFO: %w", err)
		}
		q2, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return 0, 0, fmt.Errorf("read SIOCINQ: %w", err)
		}
		if q1 == q2 {
			return dataReceived(ti) - uint64(q2), ti.State, nil
		}
		if i > 1000 {
			return 0, 0, errors.New("the receive queue never held still long enough to measure it; try again")
		}
	}
}

func connFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("get the socket: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, fmt.Errorf("get the socket: %w", err)
	}
	return fd, nil
}

// mapErr explains the usual reason a socket does not enter a sockhash.
func mapErr(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("%w (the socket is not an established TCP socket)", err)
	}
	return err
}
