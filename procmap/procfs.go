//go:build unix

package procmap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// procFS resolves socket inodes to pids and reads process details from a
// procfs tree. It is plain file reading, so it builds everywhere and its
// tests run against a fake tree; only Linux uses it for real.
//
// The inode cache maps a socket inode to the (pid, fd) that held it at the
// last scan. A hit is verified with one readlink of that fd. A miss scans, in
// order of likelihood, stopping as soon as the inode is found:
//  1. pids not seen before (a short-lived client is almost always new),
//  2. known pids whose fd count changed (the size of /proc/PID/fd is the fd
//     count on Linux ≥ 6.2; where it is 0 every known pid qualifies); fds
//     known to hold a non-socket are not read again,
//  3. every remaining pid, every fd.
//
// Dead pids are pruned on every miss.
type procFS struct {
	root       string
	maxProcs   int
	maxSockets int

	mu     sync.Mutex // guards inodes, pids, info
	inodes map[uint64]sockRef
	pids   map[int]*pidFDs
	info   map[int]procInfo

	scanMu sync.Mutex   // one miss scan at a time
	scans  atomic.Int64 // scanPID calls, for tests
	// misses remembers inodes a full scan did not find (sockets of another
	// pid namespace), so their connections do not each pay a full scan.
	misses map[uint64]time.Time
	// recent are the last owners found, newest first: a program that opened
	// one connection usually opens the next, so they are looked at first.
	recent []int
}

const maxRecent = 16

// missTTL is how long an inode no scan found stays unfound.
const missTTL = 2 * time.Second

type sockRef struct{ pid, fd int }

type pidFDs struct {
	nfd int64          // size of the fd directory at the last scan
	fds map[int]uint64 // fd → socket inode; 0 for a non-socket
}

type procInfo struct {
	start uint64 // stat starttime, tells a reused pid apart
	p     Proc
}

func newProcFS(root string, maxProcs, maxSockets int) *procFS {
	return &procFS{
		root:       root,
		maxProcs:   maxProcs,
		maxSockets: maxSockets,
		inodes:     make(map[uint64]sockRef),
		pids:       make(map[int]*pidFDs),
		info:       make(map[int]procInfo),
		misses:     make(map[uint64]time.Time),
	}
}

func (fs *procFS) pidPath(pid int, rest string) string {
	return fs.root + "/" + strconv.Itoa(pid) + "/" + rest
}

// socketInode returns the inode of a "socket:[N]" link target.
func socketInode(target []byte) (uint64, bool) {
	const pre = "socket:["
	if len(target) < len(pre)+2 || string(target[:len(pre)]) != pre || target[len(target)-1] != ']' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(target[len(pre):len(target)-1]), 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// fdInode reads /proc/PID/fd/FD and returns its socket inode (0: not a
// socket) and whether the link could be read at all.
func (fs *procFS) fdInode(pid, fd int, buf []byte) (uint64, bool) {
	n, err := syscall.Readlink(fs.pidPath(pid, "fd/"+strconv.Itoa(fd)), buf)
	if err != nil || n <= 0 {
		return 0, false
	}
	ino, _ := socketInode(buf[:n])
	return ino, true
}

// findPID returns the pid holding socket inode, or ErrNotFound.
func (fs *procFS) findPID(inode uint64) (int, error) {
	var buf [64]byte
	fs.mu.Lock()
	ref, ok := fs.inodes[inode]
	fs.mu.Unlock()
	if ok {
		if ino, _ := fs.fdInode(ref.pid, ref.fd, buf[:]); ino == inode {
			return ref.pid, nil
		}
	}

	fs.scanMu.Lock()
	defer fs.scanMu.Unlock()
	if t, ok := fs.misses[inode]; ok && time.Since(t) < missTTL {
		return 0, fmt.Errorf("procmap: socket inode %d: no owner found in the last %v: %w", inode, missTTL, ErrNotFound)
	}
	// Another lookup may have scanned while this one waited.
	fs.mu.Lock()
	ref, ok = fs.inodes[inode]
	fs.mu.Unlock()
	if ok {
		if ino, _ := fs.fdInode(ref.pid, ref.fd, buf[:]); ino == inode {
			return ref.pid, nil
		}
	}
	for _, pid := range fs.recentPIDs() {
		if fs.scanPID(pid, inode, false) {
			fs.noteOwner(pid)
			return pid, nil
		}
	}
	pid, err := fs.scan(inode)
	if err == nil {
		fs.noteOwner(pid)
	}
	if errors.Is(err, ErrNotFound) {
		if len(fs.misses) > 4096 {
			clear(fs.misses)
		}
		fs.misses[inode] = time.Now()
	}
	return pid, err
}

func (fs *procFS) recentPIDs() []int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]int(nil), fs.recent...)
}

// noteOwner moves pid to the front of the recent owners.
func (fs *procFS) noteOwner(pid int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	r := fs.recent
	for i, p := range r {
		if p == pid {
			copy(r[1:i+1], r[:i])
			r[0] = pid
			return
		}
	}
	if len(r) < maxRecent {
		r = append(r, 0)
	}
	copy(r[1:], r)
	r[0] = pid
	fs.recent = r
}

// scan runs the three passes described on procFS. Must hold scanMu.
func (fs *procFS) scan(inode uint64) (int, error) {
	live, err := fs.listPIDs()
	if err != nil {
		return 0, err
	}
	fs.prune(live)

	var fresh, known []int
	fs.mu.Lock()
	for _, pid := range live {
		if _, ok := fs.pids[pid]; ok {
			known = append(known, pid)
		} else {
			fresh = append(fresh, pid)
		}
	}
	fs.mu.Unlock()

	done := make(map[int]bool, len(live))
	// Pass 1: new pids, fully.
	for _, pid := range fresh {
		done[pid] = true
		if fs.scanPID(pid, inode, true) {
			return pid, nil
		}
	}
	// Pass 2: known pids whose fd count moved; new or socket fds only.
	for _, pid := range known {
		var st syscall.Stat_t
		if syscall.Stat(fs.pidPath(pid, "fd"), &st) != nil {
			continue
		}
		fs.mu.Lock()
		pf := fs.pids[pid]
		changed := pf == nil || st.Size == 0 || pf.nfd != st.Size
		fs.mu.Unlock()
		if changed && fs.scanPID(pid, inode, false) {
			return pid, nil
		}
	}
	// Pass 3: everything else, fully.
	for _, pid := range live {
		if !done[pid] && fs.scanPID(pid, inode, true) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("procmap: no process under %s holds socket inode %d (it may belong to another pid namespace, or its owner exited): %w", fs.root, inode, ErrNotFound)
}

// scanPID reads the fds of pid, records its sockets in the cache, and reports
// whether one of them is want. full=false skips fds known to be non-sockets.
func (fs *procFS) scanPID(pid int, want uint64, full bool) bool {
	fs.scans.Add(1)
	dir := fs.pidPath(pid, "fd")
	f, err := os.Open(dir)
	if err != nil {
		return false // gone, or not ours to read
	}
	names, err := f.Readdirnames(-1)
	var st syscall.Stat_t
	size := int64(-1)
	if syscall.Stat(dir, &st) == nil {
		size = st.Size
	}
	f.Close()
	if err != nil {
		return false
	}

	fs.mu.Lock()
	old := fs.pids[pid]
	fs.mu.Unlock()

	var buf [64]byte
	fds := make(map[int]uint64, len(names))
	found := false
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if !full && old != nil {
			if ino, ok := old.fds[fd]; ok && ino == 0 {
				fds[fd] = 0
				continue
			}
		}
		ino, ok := fs.fdInode(pid, fd, buf[:])
		if !ok {
			continue
		}
		fds[fd] = ino
		if ino == want {
			found = true
		}
	}

	fs.mu.Lock()
	defer fs.mu.Unlock()
	if old != nil {
		for fd, ino := range old.fds {
			if ino != 0 && fds[fd] != ino && fs.inodes[ino] == (sockRef{pid, fd}) {
				delete(fs.inodes, ino)
			}
		}
	}
	for fd, ino := range fds {
		if ino != 0 {
			fs.inodes[ino] = sockRef{pid, fd}
		}
	}
	fs.pids[pid] = &pidFDs{nfd: size, fds: fds}
	if len(fs.inodes) > fs.maxSockets {
		// Over the bound: start over; the next misses rebuild what is used.
		clear(fs.inodes)
		clear(fs.pids)
	}
	return found
}

// prune drops cached state of pids that are gone.
func (fs *procFS) prune(live []int) {
	alive := make(map[int]struct{}, len(live))
	for _, p := range live {
		alive[p] = struct{}{}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for pid, pf := range fs.pids {
		if _, ok := alive[pid]; ok {
			continue
		}
		for fd, ino := range pf.fds {
			if ino != 0 && fs.inodes[ino] == (sockRef{pid, fd}) {
				delete(fs.inodes, ino)
			}
		}
		delete(fs.pids, pid)
	}
	for pid := range fs.info {
		if _, ok := alive[pid]; !ok {
			delete(fs.info, pid)
		}
	}
}

// listPIDs returns the numeric entries of the procfs root.
func (fs *procFS) listPIDs() ([]int, error) {
	f, err := os.Open(fs.root)
	if err != nil {
		return nil, fmt.Errorf("procmap: open %s (is procfs mounted?): %w", fs.root, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("procmap: list %s: %w", fs.root, err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if n == "" || n[0] < '1' || n[0] > '9' {
			continue
		}
		if pid, err := strconv.Atoi(n); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// proc returns the details of pid: PID, PPID, Exe, Cmdline, UID, Cgroup.
// Everything but PPID is cached while the pid's start time stays the same.
func (fs *procFS) proc(pid int) (Proc, error) {
	p, _, err := fs.procStart(pid, false)
	return p, err
}

// procStart is proc that also returns the start time of pid (clock ticks
// since boot, field 22 of /proc/PID/stat). fresh skips the cache (the start
// time does not change at execve; the BPF path knows when one happened).
func (fs *procFS) procStart(pid int, fresh bool) (Proc, uint64, error) {
	stat, err := os.ReadFile(fs.pidPath(pid, "stat"))
	if err != nil {
		return Proc{PID: pid, UID: -1}, 0, fmt.Errorf("procmap: read stat of pid %d: %w", pid, err)
	}
	ppid, start, err := parseStat(stat)
	if err != nil {
		return Proc{PID: pid, UID: -1}, 0, fmt.Errorf("procmap: pid %d: %w", pid, err)
	}
	fs.mu.Lock()
	ci, ok := fs.info[pid]
	fs.mu.Unlock()
	if ok && ci.start == start && !fresh {
		ci.p.PPID = ppid
		return ci.p, start, nil
	}

	p := Proc{PID: pid, PPID: ppid, UID: -1}
	if exe, err := os.Readlink(fs.pidPath(pid, "exe")); err == nil {
		p.Exe = strings.TrimSuffix(exe, " (deleted)")
	}
	if b, err := os.ReadFile(fs.pidPath(pid, "cmdline")); err == nil {
		p.Cmdline = parseCmdline(b)
	}
	if b, err := os.ReadFile(fs.pidPath(pid, "status")); err == nil {
		p.UID = parseStatusUID(b)
	}
	if b, err := os.ReadFile(fs.pidPath(pid, "cgroup")); err == nil {
		p.Cgroup = parseCgroup(b)
	}
	fs.mu.Lock()
	if len(fs.info) >= fs.maxProcs {
		clear(fs.info)
	}
	fs.info[pid] = procInfo{start: start, p: p}
	fs.mu.Unlock()
	return p, start, nil
}

// ppid returns the parent of pid from /proc/PID/stat.
func (fs *procFS) ppid(pid int) (int, error) {
	stat, err := os.ReadFile(fs.pidPath(pid, "stat"))
	if err != nil {
		return 0, fmt.Errorf("procmap: read stat of pid %d: %w", pid, err)
	}
	pp, _, err := parseStat(stat)
	return pp, err
}

// parents returns pid → ppid for every process under the root.
func (fs *procFS) parents() (map[int]int, error) {
	live, err := fs.listPIDs()
	if err != nil {
		return nil, err
	}
	out := make(map[int]int, len(live))
	for _, pid := range live {
		if pp, err := fs.ppid(pid); err == nil {
			out[pid] = pp
		}
	}
	return out, nil
}

var errBadStat = errors.New("malformed /proc/PID/stat")

// parseStat returns ppid (field 4) and starttime (field 22) of a
// /proc/PID/stat line. The comm field may hold spaces and parentheses, so
// fields are counted from the last ')'.
func parseStat(b []byte) (ppid int, start uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errBadStat
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return 0, 0, errBadStat
	}
	pp, err := strconv.Atoi(string(f[1]))
	if err != nil || pp < 0 {
		return 0, 0, errBadStat
	}
	st, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, 0, errBadStat
	}
	return pp, st, nil
}

// parseCmdline turns NUL-separated argv into one space-separated line.
func parseCmdline(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// parseStatusUID returns the real uid from the "Uid:" line of
// /proc/PID/status, or -1.
func parseStatusUID(b []byte) int {
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("Uid:")); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				return -1
			}
			uid, err := strconv.Atoi(string(f[0]))
			if err != nil || uid < 0 {
				return -1
			}
			return uid
		}
	}
	return -1
}

// parseCgroup returns the cgroup v2 path ("0::/path") of /proc/PID/cgroup,
// or, on a v1-only system, the path of the first hierarchy listed.
func parseCgroup(b []byte) string {
	first := ""
	for line := range bytes.Lines(b) {
		line = bytes.TrimRight(line, "\n")
		if rest, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			return string(rest)
		}
		if first == "" {
			if parts := bytes.SplitN(line, []byte(":"), 3); len(parts) == 3 {
				first = string(parts[2])
			}
		}
	}
	return first
}
