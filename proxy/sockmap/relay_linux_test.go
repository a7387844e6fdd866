package sockmap

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and sockhashes (CI runs as root)")
	}
}

func openRelay(t testing.TB) *Relay {
	t.Helper()
	needRoot(t)
	r, err := Open(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})), Options{MaxPairs: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// listener is a loopback listener closed with the test.
func listener(t testing.TB) *net.TCPListener {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// connPair returns both ends of one loopback connection.
func connPair(t testing.TB, l *net.TCPListener) (dialed, accepted *net.TCPConn) {
	t.Helper()
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

// chain is client ⇄ a (relay) b ⇄ server.
type chain struct {
	cli, a, b, srv *net.TCPConn
}

func newChain(t testing.TB, l *net.TCPListener) chain {
	var ch chain
	ch.cli, ch.a = connPair(t, l)
	ch.b, ch.srv = connPair(t, l)
	return ch
}

func fdOf(t testing.TB, c *net.TCPConn) int {
	fd, err := connFD(c)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// mapLen counts the entries of m.
func mapLen(t testing.TB, m *ebpf.Map) int {
	var k, v uint64
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil && m.Type() != ebpf.SockHash {
		t.Fatal(err)
	}
	return n
}

func sockhashLen(t testing.TB, m *ebpf.Map) int {
	// Values of a sockhash cannot be read back; count keys.
	var k, next uint64
	n := 0
	err := m.NextKey(nil, &next)
	for err == nil {
		n++
		k = next
		err = m.NextKey(&k, &next)
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	return n
}

func wantEmpty(t testing.TB, r *Relay) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := sockhashLen(t, r.obj.verdict); n != 0 {
		t.Errorf("verdict sockhash holds %d sockets after the pairs ended", n)
	}
	if n := sockhashLen(t, r.obj.targets); n != 0 {
		t.Errorf("targets sockhash holds %d sockets after the pairs ended", n)
	}
	if n := mapLen(t, r.obj.counts); n != 0 {
		t.Errorf("counts map holds %d counters after the pairs ended", n)
	}
	if len(r.sides)+len(r.pairs)+len(r.flush) != 0 {
		t.Errorf("relay still tracks %d sides, %d pairs, %d flushes", len(r.sides), len(r.pairs), len(r.flush))
	}
}

// readAll reads c to EOF with a deadline.
func readAll(c *net.TCPConn, d time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}

func TestSmoke(t *testing.T) {
	r := openRelay(t)
	ch := newChain(t, listener(t))
	p, err := r.Splice(context.Background(), ch.a, ch.b)
	if err != nil {
		t.Fatal(err)
	}
	ch.cli.Write([]byte("ping"))
	buf := make([]byte, 4)
	ch.srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(ch.srv, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	ch.srv.Write([]byte("pong!"))
	ch.srv.CloseWrite()
	got, err := readAll(ch.cli, 2*time.Second)
	if err != nil || string(got) != "pong!" {
		t.Fatalf("client read %q, %v", got, err)
	}
	ch.cli.Close()
	got, err = readAll(ch.srv, 2*time.Second)
	if err != nil || len(got) != 0 {
		t.Fatalf("server read %q, %v after the client closed", got, err)
	}
	a2b, b2a, err := p.Wait()
	if err != nil || a2b != 4 || b2a != 5 {
		t.Fatalf("Wait = %d, %d, %v; want 4, 5, nil", a2b, b2a, err)
	}
	wantEmpty(t, r)
}
