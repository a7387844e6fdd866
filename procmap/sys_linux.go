package procmap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// linuxBackend takes the BPF connect record when there is one (Options.BPF),
// else asks inet_diag for the socket and procFS for its process.
type linuxBackend struct {
	fs   *procFS
	diag *diagConn
	log  *slog.Logger

	bpf    *bpfTracker // nil: fallback only
	bpfErr error       // why bpf is nil although asked for
	live   *liveCache  // process details for the BPF path

	hits, misses, stale, errs atomic.Uint64
}

func newBackend(o Options) backend {
	b := &linuxBackend{fs: newProcFS(o.ProcRoot, o.MaxProcs, o.MaxSockets), diag: newDiagConn(4), log: o.Logger}
	if o.BPF {
		t, err := openBPFTracker(o.ProcRoot, o.BPFIgnoreSelf)
		if err != nil {
			b.bpfErr = fmt.Errorf("%w: %w", ErrBPFUnavailable, err)
			o.Logger.Debug("procmap: BPF fast path unavailable", "err", err)
		} else {
			b.bpf, b.live = t, newLiveCache()
		}
	}
	return b
}

func (b *linuxBackend) describe() (string, error) {
	if b.bpf != nil {
		return "bpf", nil
	}
	return "sock_diag", b.bpfErr
}

func (b *linuxBackend) stats() Stats {
	return Stats{BPFHits: b.hits.Load(), BPFMisses: b.misses.Load(), BPFStale: b.stale.Load(), BPFErrors: b.errs.Load()}
}

func (b *linuxBackend) lookup(local, remote netip.AddrPort) (Proc, error) {
	if b.bpf != nil {
		if p, ok := b.lookupBPF(local, remote); ok {
			return p, nil
		}
	}
	return b.lookupDiag(local, remote)
}

func (b *linuxBackend) lookupFast(local, remote netip.AddrPort) (Proc, bool) {
	if b.bpf == nil {
		return Proc{UID: -1}, false
	}
	return b.lookupBPF(local, remote)
}

// lookupBPF answers from the connect record, if there is one whose process
// still runs: the pid must be held by a process that started no later than
// the connect, so a reused pid is not taken for the one that connected (see
// liveCache). The uid is the one that connected.
func (b *linuxBackend) lookupBPF(local, remote netip.AddrPort) (Proc, bool) {
	rec, ok, err := b.bpf.take(local, remote)
	if err != nil {
		b.errs.Add(1)
		b.log.Debug("procmap: BPF lookup failed, falling back", "local", local, "remote", remote, "err", err)
		return Proc{}, false
	}
	if !ok {
		b.misses.Add(1)
		return Proc{}, false
	}
	p, ok := b.live.get(rec)
	if !ok {
		p, ok = b.live.fill(b.fs, rec)
	}
	if !ok {
		// Exited or replaced: the socket may live on in a child that
		// inherited it, which the fallback can find.
		b.stale.Add(1)
		return Proc{}, false
	}
	p.UID = rec.uid
	b.hits.Add(1)
	return p, true
}

func (b *linuxBackend) lookupDiag(local, remote netip.AddrPort) (Proc, error) {
	s, found, err := b.diag.query(local, remote)
	if err != nil {
		return Proc{UID: -1}, fmt.Errorf("procmap: sock_diag %v → %v: %w", local, remote, err)
	}
	if !found {
		return Proc{UID: -1}, fmt.Errorf("procmap: no TCP socket %v → %v in this network namespace: %w", local, remote, ErrNotFound)
	}
	if s.inode == 0 {
		// The socket lives on but no file holds it: its owner closed it or exited.
		return Proc{UID: s.uid}, fmt.Errorf("procmap: TCP socket %v → %v (uid %d) has no owner left (closed or exited): %w", local, remote, s.uid, ErrNotFound)
	}
	pid, err := b.fs.findPID(s.inode)
	if err != nil {
		return Proc{UID: s.uid}, err
	}
	p, err := b.fs.proc(pid)
	if err != nil {
		// It exited between the scan and now.
		return Proc{UID: s.uid}, fmt.Errorf("procmap: owner pid %d of %v → %v vanished: %w: %w", pid, local, remote, ErrNotFound, err)
	}
	if p.UID < 0 {
		p.UID = s.uid
	}
	return p, nil
}

func (b *linuxBackend) ppid(pid int) (int, error)     { return b.fs.ppid(pid) }
func (b *linuxBackend) parents() (map[int]int, error) { return b.fs.parents() }

func (b *linuxBackend) close() error {
	if b.bpf != nil {
		b.bpf.close()
		b.live.close()
	}
	return b.diag.close()
}

// diagConn is a small pool of NETLINK_SOCK_DIAG sockets: one request and its
// answer per socket at a time, so concurrent lookups do not serialize.
type diagConn struct {
	mu     sync.Mutex
	idle   []int
	max    int
	closed bool
	seq    atomic.Uint32
}

func newDiagConn(max int) *diagConn { return &diagConn{max: max} }

func (d *diagConn) get() (int, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return -1, ErrClosed
	}
	if n := len(d.idle); n > 0 {
		fd := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return fd, nil
	}
	d.mu.Unlock()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("open NETLINK_SOCK_DIAG socket (is the kernel built with CONFIG_INET_DIAG?): %w", err)
	}
	// A lost answer must not hang a connection forever.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set receive timeout on netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind netlink socket: %w", err)
	}
	return fd, nil
}

func (d *diagConn) put(fd int, broken bool) {
	d.mu.Lock()
	if broken || d.closed || len(d.idle) >= d.max {
		d.mu.Unlock()
		unix.Close(fd)
		return
	}
	d.idle = append(d.idle, fd)
	d.mu.Unlock()
}

func (d *diagConn) query(local, remote netip.AddrPort) (diagSock, bool, error) {
	fd, err := d.get()
	if err != nil {
		return diagSock{}, false, err
	}
	seq := d.seq.Add(1)
	req := encodeDiagRequest(seq, local, remote)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		d.put(fd, true)
		return diagSock{}, false, fmt.Errorf("send inet_diag request: %w", err)
	}
	var buf [8192]byte
	for {
		n, _, err := unix.Recvfrom(fd, buf[:], 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			d.put(fd, true)
			return diagSock{}, false, fmt.Errorf("receive inet_diag answer: %w", err)
		}
		s, found, err := parseDiagResponse(buf[:n], seq)
		if errors.Is(err, errNoAnswer) {
			continue // only stale answers in this datagram; read on
		}
		d.put(fd, err != nil)
		return s, found, err
	}
}

func (d *diagConn) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, fd := range d.idle {
		unix.Close(fd)
	}
	d.idle = nil
	return nil
}
