package procmap

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testExe(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return exe
}

// listen returns a listener on addr that accepts and holds connections until
// the test ends.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	holdConns(t, ln)
	return ln
}

// holdConns accepts connections on ln and holds them, and ln, open until the
// test ends.
func holdConns(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
}

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

func TestLookupOwnSocket(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	exe := testExe(t)
	for _, tc := range []struct{ name, addr string }{
		{"ipv4", "127.0.0.1:0"},
		{"ipv6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, tc.addr)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local, remote := addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
			queries := [][2]netip.AddrPort{{local, remote}}
			if local.Addr().Is4() { // the proxy may see the client as ::ffff:a.b.c.d
				queries = append(queries, [2]netip.AddrPort{
					netip.AddrPortFrom(netip.AddrFrom16(local.Addr().As16()), local.Port()),
					netip.AddrPortFrom(netip.AddrFrom16(remote.Addr().As16()), remote.Port()),
				})
			}
			for _, q := range queries {
				p, err := m.Lookup(q[0], q[1])
				if err != nil {
					t.Fatalf("Lookup(%v, %v): %v", q[0], q[1], err)
				}
				if p.PID != os.Getpid() || p.Exe != exe || p.UID != os.Getuid() || p.PPID != os.Getppid() {
					t.Errorf("Lookup(%v, %v) = %+v, want pid %d ppid %d exe %s uid %d", q[0], q[1], p, os.Getpid(), os.Getppid(), exe, os.Getuid())
				}
				if !strings.Contains(p.Cmdline, filepath.Base(os.Args[0])) {
					t.Errorf("cmdline %q does not name the test binary", p.Cmdline)
				}
				if os.Getuid() == 0 && p.User != "root" {
					t.Errorf("user = %q, want root", p.User)
				}
			}
		})
	}
}

// startHelper re-executes the test binary as a client of addr.
func startHelper(t *testing.T, mode, addr string) (*exec.Cmd, io.WriteCloser, netip.AddrPort) {
	t.Helper()
	cmd := exec.Command(testExe(t), "-test.run=^$")
	stdin, local := runHelper(t, cmd, mode, addr)
	return cmd, stdin, local
}

// runHelper starts cmd (the test binary) as a helper client of addr in the
// given mode (see TestMain) and returns its stdin, which ends it when closed,
// and the local address of its connection.
func runHelper(t *testing.T, cmd *exec.Cmd, mode, addr string) (io.WriteCloser, netip.AddrPort) {
	t.Helper()
	cmd.Env = append(os.Environ(), "PROCMAP_HELPER="+mode, "PROCMAP_ADDR="+addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper said nothing: %v", err)
	}
	local, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	return stdin, local
}

func TestLookupChildProcess(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	// Warm the cache first so the child is a "new pid" for the miss path.
	ln := listen(t, "127.0.0.1:0")
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := m.Lookup(addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())); err != nil {
		t.Fatal(err)
	}

	cmd, _, local := startHelper(t, "hold", ln.Addr().String())
	p, err := m.Lookup(local, addrPort(ln.Addr()))
	if err != nil {
		t.Fatalf("Lookup of the child's socket: %v", err)
	}
	if p.PID != cmd.Process.Pid || p.PPID != os.Getpid() || p.Exe != testExe(t) {
		t.Errorf("got %+v, want pid %d ppid %d exe %s", p, cmd.Process.Pid, os.Getpid(), testExe(t))
	}
	if !m.InTree(p.PID, os.Getpid()) {
		t.Errorf("InTree(%d, %d) = false", p.PID, os.Getpid())
	}
	if m.InTree(os.Getpid(), p.PID) {
		t.Errorf("InTree(parent, child) = true")
	}
	d, err := m.Descendants(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(d, p.PID) {
		t.Errorf("Descendants(%d) = %v, want it to hold %d", os.Getpid(), d, p.PID)
	}
}

func TestLookupExitedChild(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	ln := listen(t, "127.0.0.1:0")
	cmd, _, local := startHelper(t, "exit", ln.Addr().String())
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	// The socket outlives its owner (FIN_WAIT2) but nothing holds it now.
	p, err := m.Lookup(local, addrPort(ln.Addr()))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup after the owner exited: %+v, %v; want ErrNotFound", p, err)
	}
	if p.PID != 0 || p.UID != os.Getuid() {
		t.Errorf("got %+v, want pid 0 and uid %d (still known from the socket)", p, os.Getuid())
	}
}

func TestLookupUnknown(t *testing.T) {
	m := New(Options{})
	defer m.Close()
	ln := listen(t, "127.0.0.1:0")
	// Nobody connected from this port: the socket does not exist.
	p, err := m.Lookup(netip.MustParseAddrPort("127.0.0.1:1"), addrPort(ln.Addr()))
	if !errors.Is(err, ErrNotFound) || p.PID != 0 || p.UID != -1 {
		t.Errorf("Lookup of a missing socket = %+v, %v; want PID 0, UID -1, ErrNotFound", p, err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Lookup(netip.MustParseAddrPort("127.0.0.1:1"), addrPort(ln.Addr())); !errors.Is(err, ErrClosed) {
		t.Errorf("Lookup after Close: %v, want ErrClosed", err)
	}
}
