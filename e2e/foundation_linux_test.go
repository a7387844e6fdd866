package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/internal/nstest"
)

// dataServer serves a tiny protocol: "D"+size: send size bytes of the
// deterministic stream; "U"+size+bytes: reply with their SHA-256.
func dataServer(t *testing.T, l *net.TCPListener) {
	go func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [9]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := int64(binary.BigEndian.Uint64(hdr[1:]))
				switch hdr[0] {
				case 'D':
					io.CopyN(c, stream(), n)
				case 'U':
					h := sha256.New()
					io.CopyN(h, c, n)
					c.Write(h.Sum(nil))
				}
			}()
		}
	}()
}

func stream() io.Reader { return rand.NewChaCha8([32]byte{'n', 's'}) }

func hashOf(n int64) []byte {
	h := sha256.New()
	io.CopyN(h, stream(), n)
	return h.Sum(nil)
}

func request(c net.Conn, mode byte, n int64) {
	var hdr [9]byte
	hdr[0] = mode
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	c.Write(hdr[:])
}

func TestTransferThroughProxy(t *testing.T) {
	e := newEnv(t)
	e.start()
	const size = 64 << 20
	want := hashOf(size)
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(nstest.SrvV4, 8080),
		netip.AddrPortFrom(nstest.SrvV6, 8080),
	} {
		dataServer(t, listen(t, e.Srv, dst))
		// Download.
		c, err := dial(e.Cli, dst)
		if err != nil {
			t.Fatal(err)
		}
		request(c, 'D', size)
		h := sha256.New()
		if n, err := io.Copy(h, c); err != nil || n != size || !bytes.Equal(h.Sum(nil), want) {
			t.Fatalf("download from %v: %d bytes, %v, hash ok %v", dst, n, err, bytes.Equal(h.Sum(nil), want))
		}
		c.Close()
		// Upload.
		c, err = dial(e.Cli, dst)
		if err != nil {
			t.Fatal(err)
		}
		request(c, 'U', size)
		if _, err := io.CopyN(c, stream(), size); err != nil {
			t.Fatalf("upload to %v: %v", dst, err)
		}
		got := make([]byte, 32)
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("upload to %v: server hash differs (%v)", dst, err)
		}
		c.Close()
	}
	fs := e.waitFlows(4)
	if len(fs) != 4 {
		t.Fatalf("closed flows = %d, want exactly 4 (one per connection, no loop): %+v", len(fs), fs)
	}
	for i, f := range fs {
		wantDst := netip.AddrPortFrom(nstest.SrvV4, 8080)
		if i >= 2 {
			wantDst = netip.AddrPortFrom(nstest.SrvV6, 8080)
		}
		if f.Dst != wantDst {
			t.Errorf("flow %d dst %v, want %v", f.ID, f.Dst, wantDst)
		}
		if i%2 == 0 && f.BytesIn != size || i%2 == 1 && f.BytesOut != size+9 {
			t.Errorf("flow %d counted in=%d out=%d", f.ID, f.BytesIn, f.BytesOut)
		}
		if f.Src.Addr() != nstest.CliV4 && f.Src.Addr() != nstest.CliV6 {
			t.Errorf("flow %d src %v is not the client", f.ID, f.Src)
		}
	}
	// The per-connection fast paths ran, and status says so: each flow's
	// process was found by its BPF connect record, and capture counted in
	// the kernel (this machine kind allows both; a note would say why not).
	var st control.Status
	if err := control.NewClient(e.socket).Get(context.Background(), "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Procmap != "bpf" || st.ProcmapBPF == nil || st.ProcmapBPF.Hits < 4 {
		t.Errorf("status: process lookup %q (%s), BPF lookups %+v; want bpf with a hit for each of the 4 flows", st.Procmap, st.ProcmapNote, st.ProcmapBPF)
	}
	if !strings.HasPrefix(st.Relay, "event loops") {
		t.Errorf("status: relay %q, want the event loops", st.Relay)
	}
	if st.Capture != "ebpf" {
		t.Errorf("status: capture %q (%s), want ebpf", st.Capture, st.CaptureNote)
	}
	out := e.mustNetshape("status")
	if !regexp.MustCompile(`process lookup +bpf \([1-9][0-9]* found by their connect record`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^capture +ebpf$`).MatchString(out) {
		t.Errorf("netshape status does not tell how lookup and capture run:\n%s", out)
	}
}

// A client that speaks MPTCP (mptcpize, a Go dialer with SetMultipathTCP)
// is relayed like any other: its SYN reaches the proxy's plain TCP listener
// through the redirect and falls back to TCP there. (On Go's default MPTCP
// listener it became an MPTCP socket without SO_ORIGINAL_DST, and was reset.)
func TestMPTCPClient(t *testing.T) {
	e := newEnv(t)
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skip("this kernel has no MPTCP (net.mptcp.enabled):", err)
	}
	e.start()
	dst := netip.AddrPortFrom(nstest.SrvV4, 8082)
	dataServer(t, listen(t, e.Srv, dst))
	// Several connections: the kernel does not always start the first one
	// with MPTCP.
	const conns, size = 4, 256 << 10
	for i := range conns {
		var c net.Conn
		err := nstest.Do(e.Cli, func() error {
			d := net.Dialer{Timeout: 10 * time.Second}
			d.SetMultipathTCP(true)
			var err error
			c, err = d.Dial("tcp", dst.String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		request(c, 'D', size)
		h := sha256.New()
		n, err := io.Copy(h, c)
		c.Close()
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), hashOf(size)) {
			t.Fatalf("download %d over an MPTCP client: %d bytes, %v", i, n, err)
		}
	}
	fs := e.waitFlows(conns)
	if len(fs) != conns {
		t.Fatalf("%d flows, want %d", len(fs), conns)
	}
	for _, f := range fs {
		if f.Dst != dst || f.BytesIn != size {
			t.Errorf("flow %+v, want one to %v with %d bytes in", f, dst, size)
		}
	}
}

func TestSIGTERMRemovesRules(t *testing.T) {
	e := newEnv(t)
	e.start()
	if !tableExists(t, e.Cli) {
		t.Fatal("no nftables table while running")
	}
	if err := e.stopProcess(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, e.log)
	}
	if tableExists(t, e.Cli) {
		t.Fatal("table left after SIGTERM")
	}
	if _, err := os.Stat(e.socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
}

func TestStopCommand(t *testing.T) {
	e := newEnv(t)
	e.start()
	out := e.mustNetshape("stop")
	if !strings.Contains(out, "stopped") {
		t.Fatalf("stop said %q", out)
	}
	select {
	case err := <-e.exited:
		e.exited <- err
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon still running after stop")
	}
	if tableExists(t, e.Cli) {
		t.Fatal("table left after stop")
	}
}

func TestKill9ThenCleanupAndRestart(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	e.exited <- nil
	if !tableExists(t, e.Cli) {
		t.Fatal("expected the table to survive kill -9 (this test checks its cleanup)")
	}
	// Restart cleans up the leftovers itself and works.
	e.start()
	dst := netip.AddrPortFrom(nstest.SrvV4, 8081)
	dataServer(t, listen(t, e.Srv, dst))
	c, err := dial(e.Cli, dst)
	if err != nil {
		t.Fatal(err)
	}
	request(c, 'D', 1000)
	if n, _ := io.Copy(io.Discard, c); n != 1000 {
		t.Fatalf("after restart got %d bytes", n)
	}
	c.Close()
	e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	e.exited <- nil
	// cleanup removes them, and is idempotent.
	for i := 0; i < 2; i++ {
		cmd := nstest.Cmd(e.Cli, nsBin, "cleanup", "--state-dir", e.stateDir, "--socket", e.socket)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cleanup #%d: %v\n%s", i, err, out)
		}
	}
	if tableExists(t, e.Cli) {
		t.Fatal("table left after cleanup")
	}
	if _, err := os.Stat(e.socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket left after cleanup: %v", err)
	}
}

func TestStartTwiceRefused(t *testing.T) {
	e := newEnv(t)
	e.start()
	cmd := nstest.Cmd(e.Cli, nsBin, "start", "--socket", e.socket+"2", "--state-dir", e.stateDir, "--port", "9050")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already running, pid") {
		t.Fatalf("second start: %v %s", err, out)
	}
	// The first one is untouched.
	if !tableExists(t, e.Cli) {
		t.Fatal("second start removed the first one's rules")
	}
	cmd = nstest.Cmd(e.Cli, nsBin, "cleanup", "--state-dir", e.stateDir, "--socket", e.socket)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "is running") {
		t.Fatalf("cleanup while running: %v %s", err, out)
	}
}

func TestPortInUseLeavesNoRules(t *testing.T) {
	e := newEnv(t)
	l := listen(t, e.Cli, netip.MustParseAddrPort("127.0.0.1:9040"))
	_ = l
	err := e.tryStart()
	if err == nil {
		t.Fatal("started although the port is taken")
	}
	if !strings.Contains(err.Error(), "port in use") {
		t.Fatalf("error does not say the port is in use: %v", err)
	}
	if tableExists(t, e.Cli) {
		t.Fatal("rules left after a failed start")
	}
}

func TestBadFlagsClearErrors(t *testing.T) {
	nstest.Require(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"start", "--bypass", "10.0.0.0/33"}, "bad --bypass"},
		{[]string{"start", "--port", "70000"}, "bad --port"},
		{[]string{"start", "--log-level", "loud"}, "bad --log-level"},
	} {
		out, err := exec.Command(nsBin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
			t.Errorf("%v: %v %q, want one line with %q", tc.args, err, out, tc.want)
		}
	}
}

func TestNotRootRefused(t *testing.T) {
	nstest.Require(t)
	cmd := exec.Command(nsBin, "start", "--state-dir", t.TempDir(), "--socket", t.TempDir()+"/s")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs root") {
		t.Fatalf("start as nobody: %v %s", err, out)
	}
}

func TestControlSocketIsPrivate(t *testing.T) {
	e := newEnv(t)
	e.start()
	fi, err := os.Stat(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %o, want 600", fi.Mode().Perm())
	}
	// Someone else cannot use it.
	cmd := exec.Command(nsBin, "status", "--socket", e.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("status as nobody: %v %s", err, out)
	}
}
