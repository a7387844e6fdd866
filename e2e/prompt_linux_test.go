package e2e

// The interactive `netshape prompt`, driven through a pseudo-terminal.

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/netshape/netshape/internal/nstest"
)

// term is a program running on a pseudo-terminal, with everything it has
// printed so far.
type term struct {
	t    *testing.T
	f    *os.File
	mu   sync.Mutex
	out  strings.Builder
	seen int // output before this offset has been matched already
}

func startOnPTY(t *testing.T, cmd *exec.Cmd) *term {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	tm := &term{t: t, f: f}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
		<-done
	})
	return tm
}

// expect waits until the output after the last match contains all of want,
// in order, and moves past them.
func (tm *term) expect(want ...string) {
	tm.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tm.mu.Lock()
		s := tm.out.String()
		tm.mu.Unlock()
		pos, ok := tm.seen, true
		for _, w := range want {
			i := strings.Index(s[pos:], w)
			if i < 0 {
				ok = false
				break
			}
			pos += i + len(w)
		}
		if ok {
			tm.seen = pos
			return
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("the terminal never showed %q; after the last match it shows:\n%s", want, s[tm.seen:])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tm *term) key(k string) {
	tm.t.Helper()
	if _, err := tm.f.WriteString(k); err != nil {
		tm.t.Fatal(err)
	}
}

func TestInteractivePromptAcrossRestart(t *testing.T) {
	e := newEnv(t)
	e.start("--default", "ask")
	dst := netip.AddrPortFrom(nstest.SrvV4, 8096)
	dataServer(t, listen(t, e.Srv, dst))

	cmd := exec.Command(nsBin, "prompt")
	cmd.Env = append(os.Environ(), "NETSHAPE_SOCKET="+e.socket)
	tm := startOnPTY(t, cmd)
	tm.expect("waiting for connections to answer")

	c := askDownload(t, e.Cli, dst, 1000)
	tm.expect(fmt.Sprintf("(pid %d, root) wants (no name)  %s", os.Getpid(), dst), testExe(t), "[a] allow once")
	tm.key("a")
	tm.expect("allow, released 1 connection")
	expectData(t, c, 1000, "after [a] on the prompt")

	// The daemon goes away and comes back: the same prompt carries on.
	if err := e.stopProcess(); err != nil {
		t.Fatalf("stop: %v\n%s", err, e.log)
	}
	tm.expect("netshape is not answering")
	e.start("--default", "ask")
	c = askDownload(t, e.Cli, dst, 2000)
	tm.expect(fmt.Sprintf("(pid %d, root) wants (no name)  %s", os.Getpid(), dst), testExe(t), "[a] allow once")
	tm.key("a")
	tm.expect("allow, released 1 connection")
	expectData(t, c, 2000, "after [a] on the prompt, after a daemon restart")

	// A deny from the prompt resets the client.
	c = askDownload(t, e.Cli, dst, 10)
	tm.expect("wants", "[d] deny once")
	tm.key("d")
	tm.expect("deny, released 1 connection")
	expectReset(t, c, "after [d] on the prompt")
}
