package procmap

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxLiveProcs bounds liveCache (and so the pidfds it holds).
const maxLiveProcs = 1024

// liveCache holds the details of processes seen by the BPF fast path, each
// with a pidfd that pins the process it was read from. A hit costs one
// poll(2) instead of reading /proc/PID/stat (~17 µs here):
//   - the pidfd's process is alive now and started no later than the
//     connect, so it held the pid at the connect: a reused pid cannot pass;
//   - the record's exec time and cgroup id equal those the details were
//     read under, so no execve (new exe, cmdline) and no cgroup move
//     happened since.
//
// PPID is the parent when the details were read; a reparented process keeps
// its old PPID here until it execs ([Map.InTree] reads it fresh).
type liveCache struct {
	mu sync.RWMutex // held for reading while a pidfd is polled, so it stays open
	m  map[int]*liveProc
}

type liveProc struct {
	pidfd  int
	start  uint64 // stat start time, clock ticks
	execNS uint64 // record exec time the details belong to
	cgroup uint64 // record cgroup id the details belong to
	p      Proc
}

func newLiveCache() *liveCache { return &liveCache{m: make(map[int]*liveProc)} }

// alive reports whether the process behind pidfd has not exited: a pidfd
// polls readable once it has.
func alive(pidfd int) bool {
	// A raw ppoll with a zero timeout: it never sleeps, and the proxy's
	// event loops call it once per connection (see proxy/rawsys_linux.go for
	// why their calls are raw).
	fds := [1]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	var zero unix.Timespec
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1,
			uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return e == 0 && n == 0
	}
}

// get returns the cached details for rec if they are still valid for it.
func (c *liveCache) get(rec bpfRecord) (Proc, bool) {
	c.mu.RLock()
	lp := c.m[rec.pid]
	if lp == nil || lp.execNS != rec.execNS || lp.cgroup != rec.cgroup || !startedBy(lp.start, rec.bootNS) {
		c.mu.RUnlock()
		return Proc{}, false
	}
	ok := alive(lp.pidfd)
	c.mu.RUnlock()
	if !ok {
		c.drop(rec.pid, lp)
		return Proc{}, false
	}
	return lp.p, true
}

// fill reads the details of rec.pid through fs and caches them. It fails
// when the pid is gone or is no longer the process that connected.
func (c *liveCache) fill(fs *procFS, rec bpfRecord) (Proc, bool) {
	pidfd, err := unix.PidfdOpen(rec.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return Proc{}, false // exited (ESRCH), or pidfds unsupported (< 5.3)
	}
	p, start, err := fs.procStart(rec.pid, true)
	// Checked after reading: while the pidfd's process lives, the pid is
	// its, so what was read belongs to it.
	if err != nil || !startedBy(start, rec.bootNS) || !alive(pidfd) {
		unix.Close(pidfd)
		return Proc{}, false
	}
	lp := &liveProc{pidfd: pidfd, start: start, execNS: rec.execNS, cgroup: rec.cgroup, p: p}
	c.mu.Lock()
	if old := c.m[rec.pid]; old != nil {
		unix.Close(old.pidfd)
	} else if len(c.m) >= maxLiveProcs {
		c.clearLocked()
	}
	c.m[rec.pid] = lp
	c.mu.Unlock()
	return p, true
}

func (c *liveCache) drop(pid int, lp *liveProc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[pid] == lp {
		delete(c.m, pid)
		unix.Close(lp.pidfd)
	}
}

func (c *liveCache) clearLocked() {
	for _, lp := range c.m {
		unix.Close(lp.pidfd)
	}
	clear(c.m)
}

func (c *liveCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
}
