//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/nftctl"
)

// relayFlags are the flags of the bench's own relays (bare, loop): where the
// nft redirect sends connections and the SO_MARK it lets through, by default
// what `nsbench run` sets up for them.
func relayFlags(name string) (fs *flag.FlagSet, listen *string, mark *int) {
	fs = flag.NewFlagSet(name, flag.ExitOnError)
	listen = fs.String("listen", fmt.Sprintf("127.0.0.1:%d", relayPort), "listen `address` (the nft redirect's target)")
	mark = fs.Int("mark", bareMark, "SO_MARK of upstream sockets (the redirect must return for it)")
	return fs, listen, mark
}

// bare is the gobare contender: the reference "bare Go prototype" of
// a transparent relay, as plain as it can be. It accepts connections an nft
// redirect sends it, reads SO_ORIGINAL_DST (nftctl.OriginalDst, as netshape does), dials that destination
// with SO_MARK set (the redirect returns early for the mark, so the upstream
// connection is not redirected again), and copies each direction on its own
// goroutine with io.CopyN in 1 MiB steps, which Go turns into splice(2).
// At EOF it half-closes the other side; on an error it closes both.
func bare(args []string) error {
	fs, addr, mark := relayFlags("bare")
	fs.Parse(args)
	l, err := listenTCP("tcp4", *addr)
	if err != nil {
		return fmt.Errorf("bare relay: listen on %s: %w", *addr, err)
	}
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, *mark)
		}); err != nil {
			return err
		}
		return serr
	}}
	for {
		c, err := l.Accept()
		if err != nil {
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		go bareConn(c.(*net.TCPConn), d)
	}
}

func bareConn(c *net.TCPConn, d *net.Dialer) {
	defer c.Close()
	dst, err := nftctl.OriginalDst(c)
	if err != nil {
		return
	}
	uc, err := d.Dial("tcp4", dst.String())
	if err != nil {
		return
	}
	u := uc.(*net.TCPConn)
	defer u.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); bareCopy(u, c) }()
	bareCopy(c, u)
	wg.Wait()
}

// bareCopy copies src to dst until EOF, then half-closes dst.
func bareCopy(dst, src *net.TCPConn) {
	for {
		_, err := io.CopyN(dst, src, 1<<20)
		if errors.Is(err, io.EOF) {
			dst.CloseWrite()
			return
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}
