package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/internal/nstest"
)

// --max-conns: past the cap a new connection is reset at once and counted,
// `netshape status` says so, and a connection fits again once one ends.
func TestMaxConnsRefusesPastTheCap(t *testing.T) {
	e := newEnv(t)
	e.start("--max-conns", "2")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8097)
	l := listen(t, e.Srv, dst)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	roundTrip := func(c *net.TCPConn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	var open []*net.TCPConn
	for range 2 {
		c, err := dial(e.Cli, dst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := roundTrip(c); err != nil {
			t.Fatalf("connection under the cap: %v", err)
		}
		open = append(open, c)
	}
	c, err := dial(e.Cli, dst)
	if err == nil {
		err = roundTrip(c)
		c.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("third connection: %v, want a reset", err)
	}
	var st control.Status
	if err := control.NewClient(e.socket).Get(context.Background(), "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Refused != 1 || st.MaxConns != 2 {
		t.Fatalf("status refused %d, max_conns %d; want 1 and 2", st.Refused, st.MaxConns)
	}
	if out := e.mustNetshape("status"); !strings.Contains(out, "refused") || !strings.Contains(out, "--max-conns") {
		t.Fatalf("status does not mention the refused connection:\n%s", out)
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dial(e.Cli, dst)
		if err == nil {
			err = roundTrip(c)
			c.Close()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a flow ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
