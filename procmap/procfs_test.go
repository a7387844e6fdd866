//go:build unix

package procmap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fakeProc builds a procfs-like tree: one directory per pid with stat,
// cmdline, status, cgroup, an exe link and fd links.
type fakeProc struct {
	t    testing.TB
	root string
}

func newFakeProc(t testing.TB) *fakeProc {
	return &fakeProc{t: t, root: t.TempDir()}
}

func (f *fakeProc) write(pid int, name, body string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.root, strconv.Itoa(pid), name), []byte(body), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeProc) addProc(pid, ppid int, start uint64, exe string, fds map[int]string) {
	f.t.Helper()
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	f.write(pid, "stat", fmt.Sprintf("%d (%s) S %d %d %d 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0", pid, filepath.Base(exe), ppid, pid, pid, start))
	f.write(pid, "cmdline", exe+"\x00--flag\x00")
	f.write(pid, "status", "Name:\tx\nUid:\t1000\t1000\t1000\t1000\n")
	f.write(pid, "cgroup", "0::/user.slice/test.scope\n")
	os.Remove(filepath.Join(dir, "exe"))
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		f.t.Fatal(err)
	}
	for fd, target := range fds {
		f.setFD(pid, fd, target)
	}
}

func (f *fakeProc) setFD(pid, fd int, target string) {
	f.t.Helper()
	p := filepath.Join(f.root, strconv.Itoa(pid), "fd", strconv.Itoa(fd))
	os.Remove(p)
	if target == "" {
		return
	}
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

func sock(ino int) string { return "socket:[" + strconv.Itoa(ino) + "]" }

func TestProcFSFindAndCache(t *testing.T) {
	fp := newFakeProc(t)
	fp.addProc(100, 1, 5000, "/usr/bin/firefox", map[int]string{0: "/dev/null", 3: sock(5001), 4: "pipe:[9]"})
	fp.addProc(200, 100, 6000, "/usr/bin/curl", map[int]string{3: sock(6001)})
	fs := newProcFS(fp.root, 100, 1000)

	steps := []struct {
		name    string
		before  func()
		inode   uint64
		wantPID int
		scans   int // scanPID calls this step may make
	}{
		{"cold miss scans", nil, 5001, 100, 2},
		{"warm hit does not scan", nil, 5001, 100, 0},
		// Each miss first looks at the recent owners (one scan each), then scans.
		{"scan stopped at the first hit, so the other pid is found later", nil, 6001, 200, 1 + 1},
		{"new pid found", func() { fp.addProc(300, 1, 7000, "/bin/nc", map[int]string{5: sock(7001)}) }, 7001, 300, 2 + 1},
		{"a recent owner's new socket takes one scan", func() { fp.setFD(300, 6, sock(7002)) }, 7002, 300, 1},
		{"socket moved to another pid", func() { fp.setFD(100, 3, ""); fp.setFD(200, 9, sock(5001)) }, 5001, 200, 3},
		{"fd reused by a new socket in a known pid", func() { fp.setFD(100, 4, sock(5002)) }, 5002, 100, 3 + 3},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		before := fs.scans.Load()
		pid, err := fs.findPID(s.inode)
		if err != nil || pid != s.wantPID {
			t.Fatalf("%s: findPID(%d) = %d, %v; want %d", s.name, s.inode, pid, err, s.wantPID)
		}
		if n := int(fs.scans.Load() - before); n > s.scans {
			t.Errorf("%s: %d pid scans, want at most %d", s.name, n, s.scans)
		}
	}

	// A dead pid is pruned with its sockets on the next miss.
	if err := os.RemoveAll(filepath.Join(fp.root, "300")); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.findPID(7001); !errors.Is(err, ErrNotFound) {
		t.Errorf("inode of a dead pid: %v, want ErrNotFound", err)
	}
	fs.mu.Lock()
	_, cached := fs.inodes[7001]
	_, known := fs.pids[300]
	fs.mu.Unlock()
	if cached || known {
		t.Errorf("dead pid 300 still cached (inode %v, pid %v)", cached, known)
	}
}

func TestProcFSProcDetails(t *testing.T) {
	fp := newFakeProc(t)
	fp.addProc(100, 1, 5000, "/usr/bin/firefox", nil)
	fs := newProcFS(fp.root, 100, 1000)
	p, err := fs.proc(100)
	want := Proc{PID: 100, PPID: 1, Exe: "/usr/bin/firefox", Cmdline: "/usr/bin/firefox --flag", UID: 1000, Cgroup: "/user.slice/test.scope"}
	if err != nil || p != want {
		t.Fatalf("proc = %+v, %v; want %+v", p, err, want)
	}
	// Reparenting is seen at once; the rest is cached while the start time holds.
	fp.addProc(100, 50, 5000, "/usr/bin/other", nil)
	if p, _ := fs.proc(100); p.PPID != 50 || p.Exe != "/usr/bin/firefox" {
		t.Errorf("after reparent: %+v", p)
	}
	// A reused pid (new start time) is read afresh.
	fp.addProc(100, 1, 9999, "/usr/bin/other", nil)
	if p, _ := fs.proc(100); p.Exe != "/usr/bin/other" {
		t.Errorf("after pid reuse: %+v", p)
	}
	if _, err := fs.proc(4242); err == nil {
		t.Error("proc of a missing pid: no error")
	}
	// Parent chain and descendants over the fake tree.
	fp.addProc(101, 100, 1, "/bin/sh", nil)
	fp.addProc(102, 101, 1, "/bin/cat", nil)
	fp.addProc(103, 1, 1, "/bin/other", nil)
	m := &Map{sys: &linuxLike{fs}}
	for _, tc := range []struct {
		pid, root int
		want      bool
	}{{102, 100, true}, {102, 102, true}, {103, 100, false}, {100, 102, false}, {4242, 100, false}} {
		if got := m.InTree(tc.pid, tc.root); got != tc.want {
			t.Errorf("InTree(%d, %d) = %v", tc.pid, tc.root, got)
		}
	}
	d, err := m.Descendants(100)
	if err != nil || fmt.Sprint(d) != "[101 102]" {
		t.Errorf("Descendants(100) = %v, %v", d, err)
	}
}

// linuxLike serves ppid/parents from a procFS, for tests on any unix.
type linuxLike struct{ fs *procFS }

func (l *linuxLike) lookup(a, b netip.AddrPort) (Proc, error) { return Proc{UID: -1}, ErrUnsupported }
func (l *linuxLike) ppid(pid int) (int, error)                { return l.fs.ppid(pid) }
func (l *linuxLike) parents() (map[int]int, error)            { return l.fs.parents() }
func (l *linuxLike) close() error                             { return nil }
