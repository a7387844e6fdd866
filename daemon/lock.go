package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrAlreadyRunning is returned when another daemon holds the state directory.
var ErrAlreadyRunning = errors.New("netshape is already running")

// lockFile is the state directory's pid file, held with flock(2) for the
// daemon's life. The kernel drops the lock when the process dies, even by
// SIGKILL, so a stale file never blocks a new start.
type lockFile struct {
	f    *os.File
	path string
}

func lockPath(stateDir string) string { return filepath.Join(stateDir, "netshape.pid") }

func acquireLock(stateDir string) (*lockFile, error) {
	p := lockPath(stateDir)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			if pid := readPid(p); pid > 0 {
				return nil, fmt.Errorf("%w, pid %d (stop it with `netshape stop`)", ErrAlreadyRunning, pid)
			}
			return nil, ErrAlreadyRunning
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &lockFile{f: f, path: p}, nil
}

// release removes the pid file and drops the lock.
func (l *lockFile) release() {
	if l == nil || l.f == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
	l.f = nil
}

// runningPid returns the pid of a live daemon holding stateDir, or 0.
func runningPid(stateDir string) int {
	p := lockPath(stateDir)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0 // nobody holds it: stale
	}
	return readPid(p)
}

func readPid(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
