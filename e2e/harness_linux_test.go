package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/internal/nstest"
)

// nsBin is the netshape binary built once for the package.
var nsBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips with its own message
		}
		dir, err := os.MkdirTemp("", "netshape-e2e")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755) // tests also run the CLI as an unprivileged user
		nsBin = filepath.Join(dir, "netshape")
		build := exec.Command("go", "build", "-o", nsBin, "github.com/netshape/netshape/cmd/netshape")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // the binary as shipped, also under `make test-race`
		out, err := build.CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build netshape: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// env is a namespace pair with netshape running in the client namespace.
type env struct {
	t *testing.T
	*nstest.Pair
	dir      string // state dir and socket live here
	socket   string
	stateDir string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	p := nstest.NewPair(t, "te")
	dir := t.TempDir()
	return &env{t: t, Pair: p, dir: dir, socket: filepath.Join(dir, "ctl.sock"), stateDir: filepath.Join(dir, "state")}
}

// start runs `netshape start` in the client namespace and waits until it answers.
func (e *env) start(args ...string) {
	e.t.Helper()
	if err := e.tryStart(args...); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.logDaemon()
		}
		e.stopProcess()
	})
}

// logDaemon puts the daemon's status (how process lookups were answered,
// among others) and the end of its debug log in a failed test's output.
func (e *env) logDaemon() {
	var st control.Status
	if err := control.NewClient(e.socket).Get(context.Background(), "/v1/status", &st); err != nil {
		e.t.Logf("daemon status: %v", err)
	} else if b, err := json.Marshal(st); err == nil {
		e.t.Logf("daemon status: %s", b)
	}
	log := e.log.String()
	if i := len(log) - 8<<10; i > 0 {
		log = "..." + log[i:]
	}
	e.t.Logf("daemon log:\n%s", log)
}

func (e *env) tryStart(args ...string) error {
	a := append([]string{"start", "--socket", e.socket, "--state-dir", e.stateDir, "--log-level", "debug"}, args...)
	e.cmd = nstest.Cmd(e.Cli, nsBin, a...)
	e.log = &syncBuffer{}
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		return err
	}
	e.exited = make(chan error, 1)
	go func() { e.exited <- e.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var st control.Status
		if err := control.NewClient(e.socket).Get(context.Background(), "/v1/status", &st); err == nil && st.Running {
			return nil
		}
		select {
		case err := <-e.exited:
			e.exited <- err
			return fmt.Errorf("netshape start exited: %v\n%s", err, e.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("netshape did not come up\n%s", e.log)
}

// stopProcess ends the daemon with SIGTERM and waits for it.
func (e *env) stopProcess() error {
	if e.cmd == nil || e.cmd.Process == nil {
		return nil
	}
	select {
	case err := <-e.exited:
		e.exited <- err
		return err
	default:
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.exited:
		e.exited <- err
		return err
	case <-time.After(15 * time.Second):
		e.cmd.Process.Kill()
		return errors.New("netshape did not exit on SIGTERM")
	}
}

// netshape runs a CLI command against the daemon and returns its stdout.
func (e *env) netshape(args ...string) (string, error) {
	cmd := exec.Command(nsBin, args...)
	cmd.Env = append(os.Environ(), "NETSHAPE_SOCKET="+e.socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("netshape %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (e *env) mustNetshape(args ...string) string {
	e.t.Helper()
	out, err := e.netshape(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) closedFlows() []flow.Flow {
	e.t.Helper()
	var fs []flow.Flow
	if err := json.Unmarshal([]byte(e.mustNetshape("flows", "--closed", "--json")), &fs); err != nil {
		e.t.Fatal(err)
	}
	var closed []flow.Flow
	for _, f := range fs {
		if f.State == flow.StateClosed {
			closed = append(closed, f)
		}
	}
	return closed
}

// waitFlows waits until n flows have closed.
func (e *env) waitFlows(n int) []flow.Flow {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs := e.closedFlows()
		if len(fs) >= n || time.Now().After(deadline) {
			return fs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tableExists reports whether netshape's nftables table is in namespace ns.
func tableExists(t *testing.T, ns string) bool {
	t.Helper()
	fd, err := nstest.FD(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range ts {
		if tb.Name == "netshape" {
			return true
		}
	}
	return false
}

// listen opens a TCP listener inside namespace ns.
func listen(t *testing.T, ns string, addr netip.AddrPort) *net.TCPListener {
	t.Helper()
	var l *net.TCPListener
	err := nstest.Do(ns, func() error {
		var err error
		l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects from inside namespace ns.
func dial(ns string, addr netip.AddrPort) (*net.TCPConn, error) {
	var c net.Conn
	err := nstest.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// syncBuffer is the daemon's output: exec's copy goroutine writes it while a
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
