package proxy

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// parker keeps idle relay directions without a goroutine each. A direction
// whose source socket has nothing to read registers the socket in the
// parker's epoll set (one-shot) and its goroutine ends; when the socket turns
// readable (data, EOF, reset) the parker starts a fresh goroutine to carry
// on. So an idle relayed connection costs its sockets and a little heap, as
// in an event-loop proxy, rather than two goroutine stacks (~8 KiB each).
type parker struct {
	epfd int
	// file wraps epfd for the runtime's poller: the wait loop parks its
	// goroutine until the epoll set has events, as a socket read would,
	// rather than holding a thread in a blocking epoll_wait (which the Go
	// scheduler answers by handing the P off and waking sysmon every 20 µs).
	file *os.File
	rc   syscall.RawConn

	mu     sync.Mutex
	parked map[uint64]*direction
	next   uint64 // ids start at 1
	broken bool   // epoll_wait failed: park no more, everything parked was resumed
	log    func(msg string, args ...any)

	done      chan struct{}
	closeOnce sync.Once
}

func newParker(log func(msg string, args ...any)) (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "netshape-parker-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	pk := &parker{epfd: epfd, file: f, rc: rc, parked: make(map[uint64]*direction), done: make(chan struct{}), log: log}
	go pk.loop()
	return pk, nil
}

// The event's 64-bit data word carries the parked entry's id, split over the
// two 32-bit halves x/sys/unix names Fd and Pad.
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park registers x's source socket and reports true when x is now parked: its
// caller must return without touching x again (x may already be running on
// another goroutine). False means x could not be parked (its socket is
// closed, or its flow was aborted meanwhile) and its caller carries on.
func (pk *parker) park(x *direction) bool {
	pk.mu.Lock()
	if pk.broken {
		pk.mu.Unlock()
		return false
	}
	pk.next++
	id := pk.next
	pk.parked[id] = x
	pk.mu.Unlock()
	x.parkID.Store(id)

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, id)
	var cerr error
	err := x.srcRC.Control(func(fd uintptr) {
		// A socket parked before stays in the set, disarmed (one-shot):
		// re-arm it. Its first park adds it. Closing the socket removes it.
		op := unix.EPOLL_CTL_ADD
		if x.inEpoll {
			op = unix.EPOLL_CTL_MOD
		}
		// Set before arming: once armed, x may run on another goroutine.
		x.inEpoll = true
		cerr = unix.EpollCtl(pk.epfd, op, int(fd), &ev)
		switch {
		case cerr == unix.EEXIST && op == unix.EPOLL_CTL_ADD:
			cerr = unix.EpollCtl(pk.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		case cerr == unix.ENOENT && op == unix.EPOLL_CTL_MOD:
			cerr = unix.EpollCtl(pk.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
		if cerr != nil {
			x.inEpoll = false // not armed: x is still ours
		}
	})
	if err == nil && cerr == nil {
		// abort cancels the flow, then wakes parked directions, then closes
		// the sockets, and a closed socket leaves the epoll set without an
		// event. A direction that registered after that wake must not wait.
		if x.c.ctx.Err() == nil {
			return true
		}
	}
	// Not parked after all: take the entry back unless a wake already took it
	// (then that wake resumes x and this caller must let go).
	return pk.take(id) == nil
}

// take removes a parked entry and returns it, or nil when it is gone already.
func (pk *parker) take(id uint64) *direction {
	pk.mu.Lock()
	x := pk.parked[id]
	delete(pk.parked, id)
	pk.mu.Unlock()
	return x
}

// wake resumes x now if it is parked (its flow is being aborted).
func (pk *parker) wake(x *direction) {
	if id := x.parkID.Load(); id != 0 {
		if x := pk.take(id); x != nil {
			go x.run()
		}
	}
}

func (pk *parker) loop() {
	defer close(pk.done)
	evs := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := pk.rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), evs, 0)
			// Nothing ready: wait in the runtime's poller for the set to
			// turn readable, then look again.
			return werr != nil || n > 0
		})
		if err != nil {
			return // closed
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			// EBADF/EINVAL: a bug, not a condition. Do not strand the
			// parked flows: resume them all and wait in the runtime from now on.
			pk.log("epoll_wait of idle connections failed; they wait one goroutine each from now on", "err", werr)
			pk.mu.Lock()
			pk.broken = true
			all := pk.parked
			pk.parked = map[uint64]*direction{}
			pk.mu.Unlock()
			for _, x := range all {
				go x.run()
			}
			return
		}
		for i := range evs[:n] {
			if x := pk.take(eventID(&evs[i])); x != nil {
				go x.run()
			}
		}
	}
}

// close ends the wait loop and closes the epoll set. Every flow has ended by
// then (Proxy.Close waits for them), so nothing is parked.
func (pk *parker) close() {
	pk.closeOnce.Do(func() {
		pk.file.Close() // wakes the loop's wait with an error
		<-pk.done
	})
}
