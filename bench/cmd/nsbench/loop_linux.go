//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/nftctl"
)

// loop is the goloop contender: the leanest transparent relay Go can be, to
// show what the goroutine-per-connection design costs. It has no goroutine
// per connection and goes through no runtime poller: each of -threads event
// loops (one locked OS thread each) owns a SO_REUSEPORT listener and an
// edge-triggered epoll set, accepts, reads SO_ORIGINAL_DST
// (nftctl.OriginalDstFD, as netshape does), dials with SO_MARK (non-blocking
// connect) and copies with read(2)/write(2) through one scratch buffer per
// loop, keeping only bytes a peer would not take yet. It is HAProxy's design in Go, with nothing a firewall needs
// (no identification, decision, records or shaping). Not a target: a
// reference for what an event loop would buy.
func loop(args []string) error {
	fs, addr, mark := relayFlags("loop")
	threads := fs.Int("threads", runtime.GOMAXPROCS(0), "event loops, each on its own thread and listener")
	fs.Parse(args)
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("loop relay: -listen %q: want an IPv4 address:port", *addr)
	}
	errc := make(chan error, *threads)
	for i := 0; i < *threads; i++ {
		el, err := newEventLoop(ap, *mark)
		if err != nil {
			return fmt.Errorf("loop relay: %w", err)
		}
		go func() { errc <- el.run() }()
	}
	return <-errc
}

// lside is one socket of a relayed pair.
type lside struct {
	fd      int
	peer    *lside
	pending []byte // read from this side's peer, not yet written here
	eof     bool   // this side sent EOF (read returned 0)
	shut    bool   // this side was half-closed after its peer's EOF
	dialing bool   // upstream connect in progress
	gen     int32  // in the epoll event too: an event queued for a closed socket whose fd was reused must not reach the new one
}

type eventLoop struct {
	ep, lfd int
	mark    int
	conns   map[int]*lside
	gen     int32
	scratch []byte
}

func newEventLoop(ap netip.AddrPort, mark int) (*eventLoop, error) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, err
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return nil, fmt.Errorf("bind %s: %w", ap, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return nil, err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return nil, err
	}
	return &eventLoop{ep: ep, lfd: lfd, mark: mark, conns: make(map[int]*lside), scratch: make([]byte, 256<<10)}, nil
}

func (el *eventLoop) run() error {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(el.ep, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == el.lfd {
				el.accept()
				continue
			}
			s := el.conns[fd]
			if s == nil || s.gen != ev.Pad {
				continue
			}
			if s.dialing {
				if e, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 || ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
					el.closePair(s)
					continue
				}
				if ev.Events&unix.EPOLLOUT == 0 {
					continue
				}
				s.dialing = false
			}
			el.pump(s)
		}
	}
}

func (el *eventLoop) accept() {
	for {
		cfd, _, err := unix.Accept4(el.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or EMFILE and the like: the next event tries again
		}
		od, err := nftctl.OriginalDstFD(cfd, false)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		dst := &unix.SockaddrInet4{Addr: od.Addr().As4(), Port: int(od.Port())}
		ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		unix.SetsockoptInt(ufd, unix.SOL_SOCKET, unix.SO_MARK, el.mark)
		unix.SetsockoptInt(ufd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		if err := unix.Connect(ufd, dst); err != nil && err != unix.EINPROGRESS {
			unix.Close(cfd)
			unix.Close(ufd)
			continue
		}
		el.gen++
		c := &lside{fd: cfd, gen: el.gen}
		u := &lside{fd: ufd, peer: c, dialing: true, gen: el.gen}
		c.peer = u
		el.conns[cfd], el.conns[ufd] = c, u
		const evs = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
		unix.EpollCtl(el.ep, unix.EPOLL_CTL_ADD, cfd, &unix.EpollEvent{Events: evs, Fd: int32(cfd), Pad: el.gen})
		unix.EpollCtl(el.ep, unix.EPOLL_CTL_ADD, ufd, &unix.EpollEvent{Events: evs, Fd: int32(ufd), Pad: el.gen})
	}
}

// pump moves what it can both ways of s's pair, until each direction has
// nothing to read or its destination is full (edge-triggered: every event
// pumps both directions to EAGAIN).
func (el *eventLoop) pump(s *lside) {
	c, u := s, s.peer
	if c.dialing || u.dialing {
		return
	}
	if err := el.move(c, u); err != nil {
		el.closePair(s)
		return
	}
	if err := el.move(u, c); err != nil {
		el.closePair(s)
		return
	}
	if c.eof && u.eof && c.shut && u.shut {
		el.closePair(s)
	}
}

// move copies src to dst until src has nothing or dst takes no more.
func (el *eventLoop) move(src, dst *lside) error {
	for {
		if len(dst.pending) > 0 {
			n, err := unix.Write(dst.fd, dst.pending)
			if err == unix.EAGAIN {
				return nil
			}
			if err != nil {
				return err
			}
			dst.pending = dst.pending[n:]
			if len(dst.pending) > 0 {
				return nil
			}
			dst.pending = nil
		}
		if src.eof {
			if !dst.shut {
				dst.shut = true
				return unix.Shutdown(dst.fd, unix.SHUT_WR)
			}
			return nil
		}
		n, err := unix.Read(src.fd, el.scratch)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return err
		}
		if n == 0 {
			src.eof = true
			continue
		}
		w, err := unix.Write(dst.fd, el.scratch[:n])
		if err == unix.EAGAIN {
			w, err = 0, nil
		}
		if err != nil {
			return err
		}
		if w < n {
			dst.pending = append([]byte(nil), el.scratch[w:n]...)
			return nil
		}
	}
}

func (el *eventLoop) closePair(s *lside) {
	for _, x := range []*lside{s, s.peer} {
		if el.conns[x.fd] == x {
			delete(el.conns, x.fd)
			unix.Close(x.fd) // also leaves the epoll set
		}
	}
}
