//go:build linux || darwin || freebsd

package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
)

// fakeDaemon serves canned answers on a unix socket, as the daemon's control
// API would; flow 1's byte counters grow on every poll.
func fakeDaemon(t *testing.T) (string, *[]control.Answer, *sync.Mutex) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var answers []control.Answer
	polls := 0
	pending := []control.Pending{{ID: 3, App: "ptyclient", Dst: "198.18.0.2", Port: 80, Count: 1, Deadline: time.Now().Add(time.Minute)}}
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, v any) { json.NewEncoder(w).Encode(v) }
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		polls++
		n := int64(polls) * 100000
		mu.Unlock()
		js(w, []flow.Flow{{ID: 1, Exe: "/usr/bin/ptyfetch", Host: "mirror.test", State: flow.StateOpen, BytesIn: n, BytesOut: n / 10}})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { js(w, control.Status{Running: true, Version: "fake"}) })
	mux.HandleFunc("GET /v1/quotas", func(w http.ResponseWriter, r *http.Request) { js(w, []any{}) })
	mux.HandleFunc("GET /v1/pending", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		js(w, pending)
	})
	mux.HandleFunc("POST /v1/pending/{id}", func(w http.ResponseWriter, r *http.Request) {
		var a control.Answer
		json.NewDecoder(r.Body).Decode(&a)
		mu.Lock()
		answers = append(answers, a)
		pending = nil
		mu.Unlock()
		js(w, control.AnswerResult{Released: 1})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, &answers, &mu
}

// buildNetshape builds the real binary once per test run.
func buildNetshape(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "netshape")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build netshape: %v\n%s", err, out)
	}
	return bin
}

// TestTopPTY runs `netshape top` in an 80×24 pseudo-terminal against a fake
// daemon: the screen shows the app and its rate, a key answers the pending
// connection, q exits cleanly.
func TestTopPTY(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	sock, answers, mu := fakeDaemon(t)
	bin := buildNetshape(t)
	cmd := exec.Command(bin, "top", "--socket", sock, "--interval", "200ms")
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var outMu sync.Mutex
	var out strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			outMu.Lock()
			out.Write(buf[:n])
			outMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			outMu.Lock()
			s := out.String()
			outMu.Unlock()
			if ok(s) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		outMu.Lock()
		defer outMu.Unlock()
		t.Fatalf("screen never showed %s:\n%q", what, out.String())
	}
	waitFor("the app with a rate", func(s string) bool {
		return strings.Contains(s, "ptyfetch") && strings.Contains(s, "KB/s") && strings.Contains(s, "ptyclient")
	})
	f.Write([]byte("a"))
	waitFor("the answer", func(s string) bool { return strings.Contains(s, "released 1") })
	mu.Lock()
	if len(*answers) != 1 || (*answers)[0].Action != "allow" {
		t.Errorf("daemon got answers %+v", *answers)
	}
	mu.Unlock()
	f.Write([]byte("q"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("top exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("top did not exit on q")
	}
}

func TestTopNeedsTerminal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	sock, _, _ := fakeDaemon(t)
	bin := buildNetshape(t)
	out, err := exec.Command(bin, "top", "--socket", sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--once --json") {
		t.Fatalf("without a terminal: %v %s", err, out)
	}
	out, err = exec.Command(bin, "top", "--socket", sock, "--once", "--json", "--interval", "200ms").Output()
	if err != nil {
		t.Fatal(err)
	}
	var d topData
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("--once --json: %v\n%s", err, out)
	}
	if len(d.Live.Apps) != 1 || d.Live.Apps[0].Name != "ptyfetch" || d.Live.Apps[0].In <= 0 || len(d.Pending) != 1 {
		t.Fatalf("--once --json report: %+v", d)
	}
}
