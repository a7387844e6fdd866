package procmap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/internal/nstest"
)

// bpfEnv is a namespace pair with a TCP listener in the server namespace on
// each family.
type bpfEnv struct {
	pair   *nstest.Pair
	ln4    net.Listener
	ln6    net.Listener
	cliLn4 net.Listener // a listener in the client namespace
}

func newBPFEnv(t *testing.T) *bpfEnv {
	t.Helper()
	p := nstest.NewPair(t, "tprocbpf")
	e := &bpfEnv{pair: p}
	listenIn := func(ns, addr string) net.Listener {
		var ln net.Listener
		if err := nstest.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		holdConns(t, ln)
		return ln
	}
	e.ln4 = listenIn(p.Srv, nstest.SrvV4.String()+":0")
	e.ln6 = listenIn(p.Srv, "["+nstest.SrvV6.String()+"]:0")
	e.cliLn4 = listenIn(p.Cli, nstest.CliV4.String()+":0")
	return e
}

// openMap makes a Map in the client namespace, so the BPF recorder keeps
// that namespace's connections.
func (e *bpfEnv) openMap(t *testing.T, bpf bool) *Map {
	t.Helper()
	var m *Map
	if err := nstest.Do(e.pair.Cli, func() error { m = New(Options{BPF: bpf}); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	name, err := m.Backend()
	switch {
	case bpf && (name != "bpf" || err != nil):
		t.Fatalf("Backend() = %q, %v; want bpf", name, err)
	case !bpf && (name != "sock_diag" || err != nil):
		t.Fatalf("Backend() = %q, %v; want sock_diag and no error", name, err)
	}
	return m
}

// lookup runs m.Lookup from the client namespace (the fallback's sock_diag
// socket must live there).
func (e *bpfEnv) lookup(t *testing.T, m *Map, local, remote netip.AddrPort) (Proc, error) {
	t.Helper()
	var p Proc
	var lerr error
	if err := nstest.Do(e.pair.Cli, func() error { p, lerr = m.Lookup(local, remote); return nil }); err != nil {
		t.Fatal(err)
	}
	return p, lerr
}

// startChildIn runs the test binary as a helper client (see TestMain) in
// namespace ns. `ip netns exec` execs in place, so the pid is the helper's.
func startChildIn(t *testing.T, ns, mode string, addr net.Addr) (*exec.Cmd, netip.AddrPort) {
	t.Helper()
	cmd := nstest.Cmd(ns, testExe(t), "-test.run=^$")
	_, local := runHelper(t, cmd, mode, addr.String())
	return cmd, local
}

func wantChild(t *testing.T, p Proc, err error, cmd *exec.Cmd) {
	t.Helper()
	if err != nil {
		t.Fatalf("Lookup of the child's socket: %v", err)
	}
	if p.PID != cmd.Process.Pid || p.Exe != testExe(t) || p.UID != os.Getuid() || p.PPID != os.Getpid() {
		t.Errorf("Lookup = %+v; want pid %d ppid %d exe %s uid %d", p, cmd.Process.Pid, os.Getpid(), testExe(t), os.Getuid())
	}
}

func TestBPFLookupChild(t *testing.T) {
	e := newBPFEnv(t)
	for _, tc := range []struct {
		name string
		ln   net.Listener
	}{{"ipv4", e.ln4}, {"ipv6", e.ln6}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bpf := range []bool{true, false} {
				m := e.openMap(t, bpf)
				cmd, local := startChildIn(t, e.pair.Cli, "hold", tc.ln.Addr())
				p, err := e.lookup(t, m, local, addrPort(tc.ln.Addr()))
				wantChild(t, p, err, cmd)
				st := m.Stats()
				if bpf && st != (Stats{BPFHits: 1}) {
					t.Errorf("bpf: stats after one lookup = %+v, want one hit", st)
				}
				if !bpf && st != (Stats{}) {
					t.Errorf("fallback only: stats = %+v, want zero", st)
				}
				if !bpf {
					if _, ok := m.LookupFast(local, addrPort(tc.ln.Addr())); ok {
						t.Error("LookupFast answered without a BPF recorder")
					}
					continue
				}
				// The record was taken: LookupFast has nothing, a second
				// Lookup is answered by the fallback.
				if _, ok := m.LookupFast(local, addrPort(tc.ln.Addr())); ok {
					t.Error("LookupFast answered for a record already taken")
				}
				p, err = e.lookup(t, m, local, addrPort(tc.ln.Addr()))
				wantChild(t, p, err, cmd)
				if st := m.Stats(); st != (Stats{BPFHits: 1, BPFMisses: 2}) {
					t.Errorf("stats after LookupFast and a second lookup = %+v, want 1 hit, 2 misses", st)
				}
				// A fresh connection: LookupFast names it from its record.
				cmd2, local2 := startChildIn(t, e.pair.Cli, "hold", tc.ln.Addr())
				p, ok := m.LookupFast(local2, addrPort(tc.ln.Addr()))
				if !ok {
					t.Fatal("LookupFast found no record of a fresh connection")
				}
				wantChild(t, p, nil, cmd2)
			}
		})
	}
}

// An IPv6 socket connected to a v4-mapped address is recorded under its
// IPv4 4-tuple, which is what Lookup unmaps queries to.
func TestBPFLookupV4MappedSocket(t *testing.T) {
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	dst := addrPort(e.ln4.Addr())
	var local netip.AddrPort
	err := nstest.Do(e.pair.Cli, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Connect(fd, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: netip.AddrFrom16(dst.Addr().As16()).As16()}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		s6 := sa.(*unix.SockaddrInet6)
		local = netip.AddrPortFrom(netip.AddrFrom16(s6.Addr), uint16(s6.Port))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !local.Addr().Is4In6() {
		t.Fatalf("local address %v is not v4-mapped", local)
	}
	p, err := e.lookup(t, m, local, netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port()))
	if err != nil || p.PID != os.Getpid() {
		t.Fatalf("Lookup = %+v, %v; want pid %d", p, err, os.Getpid())
	}
	if st := m.Stats(); st != (Stats{BPFHits: 1}) {
		t.Errorf("stats = %+v, want one hit", st)
	}
}

func TestBPFConnectedBeforeAttach(t *testing.T) {
	e := newBPFEnv(t)
	cmd, local := startChildIn(t, e.pair.Cli, "hold", e.ln4.Addr())
	m := e.openMap(t, true)
	p, err := e.lookup(t, m, local, addrPort(e.ln4.Addr()))
	wantChild(t, p, err, cmd)
	if st := m.Stats(); st != (Stats{BPFMisses: 1}) {
		t.Errorf("stats = %+v, want one miss (answered by the fallback)", st)
	}
}

// A record whose process has exited is not trusted; the fallback then sees
// a socket without owner, as before.
func TestBPFExitedOwner(t *testing.T) {
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	cmd, local := startChildIn(t, e.pair.Cli, "exit", e.ln4.Addr())
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	p, err := e.lookup(t, m, local, addrPort(e.ln4.Addr()))
	if !errors.Is(err, ErrNotFound) || p.PID != 0 || p.UID != os.Getuid() {
		t.Errorf("Lookup after the owner exited = %+v, %v; want pid 0, uid %d, ErrNotFound", p, err, os.Getuid())
	}
	if st := m.Stats(); st != (Stats{BPFStale: 1}) {
		t.Errorf("stats = %+v, want one stale record", st)
	}
}

// Only connections of the Map's own network namespace are recorded.
func TestBPFOtherNamespacesNotRecorded(t *testing.T) {
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	tr := m.sys.(*linuxBackend).bpf

	dial := func(ns string, addr net.Addr) [2]netip.AddrPort {
		t.Helper()
		var c net.Conn
		if err := nstest.Do(ns, func() (err error) { c, err = net.Dial("tcp", addr.String()); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return [2]netip.AddrPort{addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())}
	}
	own := dial(e.pair.Cli, e.ln4.Addr())
	lo := listen(t, "127.0.0.1:0") // this test's own (host) namespace: loopback only
	others := [][2]netip.AddrPort{
		dial(e.pair.Srv, e.cliLn4.Addr()), // server namespace → client namespace
	}
	c, err := net.Dial("tcp", lo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	others = append(others, [2]netip.AddrPort{addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())})

	// Every entry is a connection from the client namespace.
	var k bpfKey
	var v [bpfValueSize]byte
	n := 0
	for it := tr.conns.Iterate(); it.Next(&k, &v); {
		l, r, err := decodeBPFKey(k[:])
		if err != nil {
			t.Fatalf("kernel wrote a key we cannot decode: % x: %v", k, err)
		}
		if l.Addr() != nstest.CliV4 && l.Addr() != nstest.CliV6 && !l.Addr().IsLoopback() {
			t.Errorf("recorded a connection of another namespace: %v → %v", l, r)
		}
		n++
	}
	if n == 0 {
		t.Error("the map is empty: not even the client namespace's connection was recorded")
	}
	for _, o := range others {
		if _, ok, err := tr.take(o[0], o[1]); ok || err != nil {
			t.Errorf("connection %v → %v of another namespace was recorded (err %v)", o[0], o[1], err)
		}
	}
	rec, ok, err := tr.take(own[0], own[1])
	if !ok || err != nil || rec.pid != os.Getpid() || rec.uid != os.Getuid() {
		t.Errorf("own connection %v → %v: record %+v, %v, %v; want pid %d", own[0], own[1], rec, ok, err, os.Getpid())
	}
}

// With BPFIgnoreSelf the recorder skips this process's own connects (a
// proxy's upstream sockets, never looked up) and records the others'.
// Without it the own connect is recorded: TestBPFOtherNamespacesNotRecorded.
func TestBPFIgnoreSelf(t *testing.T) {
	e := newBPFEnv(t)
	var m *Map
	if err := nstest.Do(e.pair.Cli, func() error { m = New(Options{BPF: true, BPFIgnoreSelf: true}); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if name, err := m.Backend(); name != "bpf" || err != nil {
		t.Fatalf("Backend() = %q, %v; want bpf", name, err)
	}
	var c net.Conn
	if err := nstest.Do(e.pair.Cli, func() (err error) { c, err = net.Dial("tcp", e.ln4.Addr().String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rec, ok, err := m.sys.(*linuxBackend).bpf.take(addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())); ok || err != nil {
		t.Errorf("own connect recorded: %+v, %v", rec, err)
	}
	cmd, local := startChildIn(t, e.pair.Cli, "hold", e.ln4.Addr())
	p, err := e.lookup(t, m, local, addrPort(e.ln4.Addr()))
	wantChild(t, p, err, cmd)
	if st := m.Stats(); st != (Stats{BPFHits: 1}) {
		t.Errorf("stats = %+v, want the child's connect found by BPF", st)
	}
}

// Close detaches the program; so does the death of the process holding it.
func TestBPFDetach(t *testing.T) {
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	id := linkID(t, m)
	if l, err := link.NewFromID(id); err != nil {
		t.Fatalf("link %d of an open Map: %v", id, err)
	} else {
		l.Close()
	}
	m.Close()
	if l, err := link.NewFromID(id); err == nil {
		l.Close()
		t.Errorf("link %d still exists after Close", id)
	}

	// A child holding a Map is killed: the kernel drops its link.
	cmd := nstest.Cmd(e.pair.Cli, testExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROCMAP_HELPER=bpf")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("bpf helper said nothing: %v", err)
	}
	var cid link.ID
	if _, err := fmt.Sscan(line, &cid); err != nil {
		t.Fatalf("bpf helper said %q", line)
	}
	if l, err := link.NewFromID(cid); err != nil {
		t.Fatalf("link %d of the helper: %v", cid, err)
	} else {
		l.Close()
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := link.NewFromID(cid)
		if err != nil {
			break
		}
		l.Close()
		if time.Now().After(deadline) {
			t.Fatalf("link %d survived its process", cid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func linkID(t testing.TB, m *Map) link.ID {
	t.Helper()
	info, err := m.sys.(*linuxBackend).bpf.link.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// A Map asked for BPF in a place that cannot have it still works.
func TestBPFRefusedFallsBack(t *testing.T) {
	m := New(Options{BPF: true, ProcRoot: t.TempDir()})
	defer m.Close()
	name, err := m.Backend()
	if name != "sock_diag" || !errors.Is(err, ErrBPFUnavailable) {
		t.Errorf("Backend() = %q, %v; want sock_diag and ErrBPFUnavailable", name, err)
	}
}

// The offsets the program reads must match the running kernel's struct
// bpf_sock_ops.
func TestSockOpsOffsets(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	var s *btf.Struct
	if err := spec.TypeByName("bpf_sock_ops", &s); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{
		"op": sockOpsOp, "family": sockOpsFamily, "remote_ip4": sockOpsRemoteIP4, "local_ip4": sockOpsLocalIP4,
		"remote_ip6": sockOpsRemoteIP6, "local_ip6": sockOpsLocalIP6, "remote_port": sockOpsRemotePort, "local_port": sockOpsLocalPort,
	}
	for _, mb := range s.Members {
		if w, ok := want[mb.Name]; ok {
			if got := mb.Offset.Bytes(); got != w {
				t.Errorf("bpf_sock_ops.%s at %d, program reads %d", mb.Name, got, w)
			}
			delete(want, mb.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("bpf_sock_ops has no members %v", want)
	}
}

// bpfHelper is the "bpf" helper mode of TestMain: it opens a Map with the
// BPF fast path, prints its link ID and waits for stdin to close.
func bpfHelper() int {
	m := New(Options{BPF: true})
	defer m.Close()
	if name, err := m.Backend(); name != "bpf" {
		fmt.Fprintln(os.Stderr, "bpf helper:", name, err)
		return 2
	}
	info, err := m.sys.(*linuxBackend).bpf.link.Info()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bpf helper:", err)
		return 2
	}
	fmt.Println(info.ID)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// After an execve the cached details of the pid are stale: the exec tracker
// makes the next lookup read them again.
func TestBPFExecRefreshesDetails(t *testing.T) {
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Skip("needs socat")
	}
	if r, err := filepath.EvalSymlinks(socat); err == nil {
		socat = r
	}
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	var ln net.Listener
	accepted := make(chan net.Conn, 4)
	if err := nstest.Do(e.pair.Srv, func() (err error) { ln, err = net.Listen("tcp", nstest.SrvV4.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c
		}
	}()

	cmd := nstest.Cmd(e.pair.Cli, testExe(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROCMAP_HELPER=exec", "PROCMAP_ADDR="+ln.Addr().String())
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("helper said nothing: %v", err)
	}
	first := <-accepted
	p, err := e.lookup(t, m, addrPort(first.RemoteAddr()), addrPort(ln.Addr()))
	wantChild(t, p, err, cmd)

	io.WriteString(stdin, "exec\n")
	var second net.Conn
	select {
	case second = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("socat did not connect")
	}
	p, err = e.lookup(t, m, addrPort(second.RemoteAddr()), addrPort(ln.Addr()))
	if err != nil || p.PID != cmd.Process.Pid || p.Exe != socat || !strings.HasPrefix(p.Cmdline, "socat ") {
		t.Errorf("Lookup after exec = %+v, %v; want pid %d exe %s cmdline socat ...", p, err, cmd.Process.Pid, socat)
	}
	if st := m.Stats(); st != (Stats{BPFHits: 2}) {
		t.Errorf("stats = %+v, want two hits", st)
	}
}

// A cached process that has died is not trusted, even for a record that
// names its pid and fits its start time (as after pid reuse).
func TestBPFCachedProcessDied(t *testing.T) {
	e := newBPFEnv(t)
	m := e.openMap(t, true)
	cmd, local := startChildIn(t, e.pair.Cli, "hold", e.ln4.Addr())
	p, err := e.lookup(t, m, local, addrPort(e.ln4.Addr()))
	wantChild(t, p, err, cmd)
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	live := m.sys.(*linuxBackend).live
	live.mu.RLock()
	lp := live.m[cmd.Process.Pid]
	live.mu.RUnlock()
	if lp == nil {
		t.Fatal("the child's details are not cached")
	}
	rec := bpfRecord{pid: cmd.Process.Pid, uid: os.Getuid(), bootNS: uint64(ts.Nano()), execNS: lp.execNS, cgroup: lp.cgroup}
	if _, ok := live.get(rec); !ok {
		t.Fatalf("the living child's details are not cached")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if p, ok := live.get(rec); ok {
		t.Errorf("details of a dead process served: %+v", p)
	}
	if _, ok := live.fill(m.sys.(*linuxBackend).fs, rec); ok {
		t.Errorf("details of a dead process cached again")
	}
}
