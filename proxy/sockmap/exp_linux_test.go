package sockmap

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func tcpPair(t *testing.T) (client, accepted *net.TCPConn) {
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); a.Close() })
	return c, a
}

func rawfd(t *testing.T, c *net.TCPConn) int {
	rc, _ := c.SyscallConn()
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func cookieOf(t *testing.T, fd int) uint64 {
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestExperiment(t *testing.T) {
	o, err := loadObjects(16)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	cli, a := tcpPair(t)
	b, srv := tcpPair(t)
	cli.Write([]byte("hello "))
	cli.Write([]byte("world "))
	time.Sleep(10 * time.Millisecond)
	var p [3]byte
	io.ReadFull(a, p[:]) // partial consumption
	fa, fb := rawfd(t, a), rawfd(t, b)
	ca, cb := cookieOf(t, fa), cookieOf(t, fb)
	for _, c := range []uint64{ca, cb} {
		if err := o.counts.Put(c, uint64(0)); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(o.targets.Update(ca, uint64(fb), ebpf.UpdateNoExist))
	must(o.targets.Update(cb, uint64(fa), ebpf.UpdateNoExist))
	must(o.verdict.Update(ca, uint64(fa), ebpf.UpdateNoExist))
	must(o.verdict.Update(cb, uint64(fb), ebpf.UpdateNoExist))
	got := make(chan string)
	go func() {
		srv.SetReadDeadline(time.Now().Add(time.Second))
		var all []byte
		buf := make([]byte, 100)
		for {
			n, err := srv.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- string(all)
	}()
	time.Sleep(100 * time.Millisecond)
	var n uint64
	o.counts.Lookup(ca, &n)
	t.Logf("before kick: count %d", n)
	must(unix.SetsockoptInt(fa, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1))
	time.Sleep(100 * time.Millisecond)
	o.counts.Lookup(ca, &n)
	t.Logf("after kick: count %d", n)
	cli.Write([]byte("again"))
	t.Logf("server got %q", <-got)
	o.counts.Lookup(ca, &n)
	t.Logf("final count %d", n)
	ti, _ := unix.GetsockoptTCPInfo(fb, unix.IPPROTO_TCP, unix.TCP_INFO)
	t.Logf("b: sent %d retrans %d notsent %d", ti.Bytes_sent, ti.Bytes_retrans, ti.Notsent_bytes)
	ti, _ = unix.GetsockoptTCPInfo(fa, unix.IPPROTO_TCP, unix.TCP_INFO)
	t.Logf("a: received %d", ti.Bytes_received)
}
