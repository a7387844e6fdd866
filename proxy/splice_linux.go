package proxy

import (
	"errors"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// The Linux relay moves bytes socket → pipe → socket with splice(2), like
// net.TCPConn.ReadFrom, but it never waits for its source with a pipe taken:
// transfer moves what the source has and returns when it has no more, so an
// idle connection holds no pipe (2 descriptors, not 6) and counters move
// with every burst rather than every chunk. The caller then waits (lingers,
// then parks: park_linux.go).
//
// Pipes are enlarged to 1 MiB (pipeSize), as Go's own splice does. With the
// default 64 KiB every splice moves at most 64 KiB, so a bulk flow makes 4×
// the splice calls, each with its own TCP push, ACK and wake-up work in the
// kernel, charged to the daemon: in nsbench namespace pairs (1 stream, same
// run, alternated) 64 KiB pipes cost 0.91 CPU s/GB, 1 MiB pipes 0.61 (0.52
// with the caller's chunk at 1 MiB too), against 0.42 for gobare's io.CopyN
// relay. Summed over relay, client, server and ksoftirqd: 1.96 s/GB at
// 64 KiB, 1.64 at 1 MiB, gobare 1.69 (direct 0.69); what is left of the
// per-process gap is kernel work gobare's client pays for (0.55 vs 0.28
// s/GB). In-process loopback benchmarks (BenchmarkRelayVsDirect,
// BenchmarkRelayCPU) do not show the gain: there the upstream is loopback
// too and client, server and relay share one runtime. A pipe's size is only
// the most it may hold: its pages are the sockets' own while they pass.

type pipe struct{ r, w int }

// pipeSize is the capacity asked for each new pipe (F_SETPIPE_SZ): 1 MiB,
// the default /proc/sys/fs/pipe-max-size and what Go's splice uses.
const pipeSize = 1 << 20

// pipePool keeps a few drained pipes for the next burst. It is a bounded
// channel, not a sync.Pool, which would drop pipes without closing them.
type pipePool struct {
	free chan pipe
	size int // F_SETPIPE_SZ of new pipes; 0 keeps the kernel's 64 KiB
}

func (pp pipePool) get() (pipe, error) {
	select {
	case p := <-pp.free:
		return p, nil
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return pipe{}, err
	}
	if pp.size > 0 {
		// It fails (EPERM) when the user's pipes are over
		// fs.pipe-user-pages-soft and it lacks CAP_SYS_RESOURCE, or when
		// pipe-max-size is lower: the default pipe still works, with
		// more splice calls.
		unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pp.size)
	}
	return pipe{r: fds[0], w: fds[1]}, nil
}

// put returns a drained pipe to the pool, or closes it.
func (pp pipePool) put(p pipe) {
	select {
	case pp.free <- p:
	default:
		p.close()
	}
}

func (p pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

func (pp pipePool) drain() {
	for {
		select {
		case p := <-pp.free:
			p.close()
		default:
			return
		}
	}
}

// newPipePool keeps up to 16 drained pipes: enough for the directions moving
// bytes at once on a few cores, few enough (32 descriptors) not to matter.
func newPipePool() pipePool { return pipePool{free: make(chan pipe, 16), size: pipeSize} }

// spliceState is a direction's splice bookkeeping, kept on the direction so
// the callbacks handed to RawConn.Read and Write are bound once per
// direction rather than allocated as closures on every transfer (they were
// a fifth of a relayed connection's allocations). Only the goroutine running
// the direction touches it.
type spliceState struct {
	p       *Proxy
	pp      pipe
	have    bool // pp is ours
	wait    bool
	want    int // what the next read splice may move
	n       int // what the last read splice moved
	inPipe  int
	m       int // what the last write splice moved
	serr    error
	perr    error
	werr    error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// read is the RawConn.Read callback: one splice from src into the pipe,
// taking a pipe first if the direction has none.
func (s *spliceState) read(fd uintptr) bool {
	if !s.have {
		if s.pp, s.perr = s.p.pipes.get(); s.perr != nil {
			return true
		}
		s.have = true
	}
	s.n, s.serr = spliceNB(int(fd), s.pp.w, s.want)
	if s.wait && s.serr == unix.EAGAIN {
		// Nothing to read now: give the empty pipe back and wait in the
		// runtime's poller (until src's read deadline, if any); this runs
		// again when src is readable. Waiting here rather than returning
		// saves the splice that would only find src empty again on the
		// next call (the poller forgets readiness when a read begins, so a
		// read must try first).
		s.p.pipes.put(s.pp)
		s.have = false
		return false
	}
	return true
}

// write is the RawConn.Write callback: one splice from the pipe into dst.
func (s *spliceState) write(fd uintptr) bool {
	s.m, s.werr = spliceNB(s.pp.r, int(fd), s.inPipe)
	return s.werr != unix.EAGAIN
}

// transfer moves up to max bytes from src to dst and returns when max is
// reached, src ended (io.EOF), something failed, or src has nothing to read:
// without wait at once (drained), with wait once src's read deadline passes
// (drained; the caller's linger, so counters move at least that often). It
// always waits for dst to take the bytes.
func (p *Proxy) transfer(x *direction, max int, wait bool) (moved int64, drained bool, err error) {
	s := &x.sp
	if s.readFn == nil {
		s.p, s.readFn, s.writeFn = p, s.read, s.write
	}
	s.wait, s.inPipe = wait, 0
	// The pipe is taken only while bytes move: a direction waiting for src
	// (up to its linger) gives it back, so waiting flows hold none.
	defer func() {
		switch {
		case !s.have:
		case s.inPipe == 0:
			p.pipes.put(s.pp)
		default:
			s.pp.close() // bytes stuck in it belong to a failed flow
		}
		s.have = false
	}()
	for moved < int64(max) {
		s.want, s.serr, s.perr = max-int(moved), nil, nil
		err := x.srcRC.Read(s.readFn)
		if s.perr != nil {
			if moved > 0 {
				return moved, false, nil
			}
			// Out of descriptors for a pipe: copy through user space
			// instead. This blocks until src has bytes, like a wait.
			n, err := io.CopyN(x.dst, x.src, int64(max))
			return n, false, err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Nothing came before src's read deadline (the caller's
			// linger), or it had passed already.
			return moved, true, nil
		}
		if err != nil {
			return moved, false, err
		}
		if s.serr == unix.EAGAIN {
			return moved, true, nil
		}
		if s.serr != nil {
			return moved, false, wrapSplice("read", s.serr)
		}
		if s.n == 0 {
			return moved, false, io.EOF
		}
		s.inPipe = s.n
		for s.inPipe > 0 {
			s.werr = nil
			if err := x.dstRC.Write(s.writeFn); err != nil {
				return moved, false, err
			}
			if s.werr != nil {
				return moved, false, wrapSplice("write", s.werr)
			}
			s.inPipe -= s.m
			moved += int64(s.m)
		}
	}
	return moved, false, nil
}

// spliceNB moves up to n bytes without ever blocking: both ends are
// non-blocking (sockets by the runtime, pipes by pipe2) and it passes
// SPLICE_F_NONBLOCK. So it is a raw syscall, which keeps the goroutine's P:
// through the runtime's Syscall a 1 MiB splice (~100 µs) outlives the 20 µs
// sysmon allows a P in a syscall when work is queued, and each time the P
// was handed to another thread and taken back after. One stream through the
// daemon, namespace pair, binaries alternated: 0.46 -> 0.39 CPU s/GB (8
// streams 0.36-0.43 -> 0.27-0.33) at the same or higher speed.
func spliceNB(in, out, n int) (int, error) {
	for {
		m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
			unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch e {
		case 0:
			return int(m), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

func wrapSplice(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Err: err}
}
