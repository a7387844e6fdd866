package control

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func startServer(t *testing.T, gid int) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "control.sock")
	s := NewServer(gid, nil)
	s.Handle("GET /v1/status", func(r *http.Request) (any, error) {
		c, _ := PeerCred(r)
		return Status{Running: true, PID: c.PID, Backend: "test"}, nil
	})
	s.Handle("POST /v1/fail", func(r *http.Request) (any, error) {
		return nil, Errorf(http.StatusNotFound, "no rule 42")
	})
	if err := s.Listen(path); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestRoundTripAndPeerCred(t *testing.T) {
	_, path := startServer(t, -1)
	c := NewClient(path)
	var st Status
	if err := c.Get(context.Background(), "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.Backend != "test" || st.PID != os.Getpid() {
		t.Fatalf("status %+v (want our own pid %d as peer)", st, os.Getpid())
	}
	err := c.Post(context.Background(), "/v1/fail", map[string]int{"id": 42}, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Message != "no rule 42" {
		t.Fatalf("error = %#v", err)
	}
}

func TestSocketMode(t *testing.T) {
	_, path := startServer(t, -1)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("socket mode %o, want 600", m)
	}
	if os.Geteuid() == 0 {
		_, path2 := startServer(t, 4242)
		fi, _ := os.Stat(path2)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o660 || st.Gid != 4242 {
			t.Fatalf("group socket mode %o gid %d, want 660 gid 4242", fi.Mode().Perm(), st.Gid)
		}
	}
}

func TestNotRunning(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	err := c.Get(context.Background(), "/v1/status", nil)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "sudo netshape start") {
		t.Fatalf("err = %v", err)
	}
}

func TestStaleSocketReplacedLiveRefused(t *testing.T) {
	_, path := startServer(t, -1)
	s2 := NewServer(-1, nil)
	if err := s2.Listen(path); err == nil {
		t.Fatal("second server took over a live socket")
	}
	// A socket file with nobody behind it is stale and gets replaced.
	dir := t.TempDir()
	stale := filepath.Join(dir, "c.sock")
	s3 := NewServer(-1, nil)
	if err := s3.Listen(stale); err != nil {
		t.Fatal(err)
	}
	s3.ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	s3.ln.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket not left for the test: %v", err)
	}
	s4 := NewServer(-1, nil)
	if err := s4.Listen(stale); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	s4.Close()
}

func TestAuthorized(t *testing.T) {
	s := NewServer(100, nil)
	s.inGrp = func(uid, gid int) bool { return uid == 1001 && gid == 100 }
	for _, tc := range []struct {
		c    Cred
		want bool
	}{
		{Cred{UID: 0, GID: 0}, true},
		{Cred{UID: os.Geteuid()}, true},
		{Cred{UID: 1000, GID: 100}, true},  // primary group
		{Cred{UID: 1001, GID: 1001}, true}, // supplementary group
		{Cred{UID: 1002, GID: 1002}, false},
	} {
		if os.Geteuid() == tc.c.UID && !tc.want {
			continue
		}
		if got := s.authorized(tc.c); got != tc.want {
			t.Errorf("authorized(%+v) = %v, want %v", tc.c, got, tc.want)
		}
	}
	s.gid = -1
	if os.Geteuid() != 1000 && s.authorized(Cred{UID: 1000, GID: 100}) {
		t.Error("group member admitted with no group configured")
	}
}

// An unprivileged process that can reach the socket still gets 403.
func TestForeignUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a client as user nobody")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("needs curl")
	}
	_, path := startServer(t, -1)
	// Open the path up so the kernel check passes and ours must refuse.
	for d := filepath.Dir(path); strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.Chmod(path, 0o666)
	cmd := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", path, "http://x/v1/status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl as nobody: %v %s", err, out)
	}
	if string(out) != "403" {
		t.Fatalf("nobody got HTTP %s, want 403", out)
	}
}
