package procmap

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
)

// Proc is the process that owns a socket.
type Proc struct {
	PID     int    `json:"pid"`               // 0: unknown
	PPID    int    `json:"ppid,omitempty"`    // parent pid, 0 when unknown
	Exe     string `json:"exe,omitempty"`     // absolute path of the executable
	Cmdline string `json:"cmdline,omitempty"` // argv joined by spaces
	UID     int    `json:"uid"`               // -1: unknown
	User    string `json:"user,omitempty"`    // user name of UID, "" when unknown
	Cgroup  string `json:"cgroup,omitempty"`  // cgroup v2 path (Linux only)
}

var (
	// ErrNotFound means no process owning the socket was found. Lookup still
	// returns the Proc with whatever is known (often the UID).
	ErrNotFound = errors.New("procmap: owning process not found")
	// ErrClosed is returned by Lookup after Close.
	ErrClosed = errors.New("procmap: map is closed")
	// ErrUnsupported is returned on systems without a socket-owner backend.
	ErrUnsupported = errors.New("procmap: not supported on this system")
)

// Options configure a Map. The zero value is usable.
type Options struct {
	// Logger receives debug and warning messages. Nil discards them.
	Logger *slog.Logger
	// ProcRoot is the procfs mount (Linux). Default "/proc". Tests point it at
	// a fake tree.
	ProcRoot string
	// MaxProcs bounds the cached process details. Default 4096.
	MaxProcs int
	// MaxSockets bounds the cached socket inode → pid entries. Default 262144.
	MaxSockets int
	// BPF enables, on Linux, a fast path: a sock_ops program attached to the
	// cgroup2 root records the process of every TCP connect made in the
	// network namespace of the goroutine calling New, and Lookup takes the
	// record (one map syscall) before falling back to sock_diag and /proc.
	// It needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN to mount cgroup2
	// when absent) and the initial pid namespace; when refused, New still
	// succeeds and [Map.Backend] says why. Ignored on other systems.
	BPF bool
	// BPFIgnoreSelf leaves this process's own connects unrecorded: a proxy's
	// upstream sockets, which are never looked up and would only churn the
	// recorder's map (one record per relayed connection).
	BPFIgnoreSelf bool
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.MaxProcs <= 0 {
		o.MaxProcs = 4096
	}
	if o.MaxSockets <= 0 {
		o.MaxSockets = 262144
	}
}

// backend is the per-system part. lookup fills everything but User.
type backend interface {
	lookup(local, remote netip.AddrPort) (Proc, error)
	// ppid returns the parent of pid.
	ppid(pid int) (int, error)
	// parents returns pid → ppid for every process.
	parents() (map[int]int, error)
	close() error
}

// describer is implemented by backends that can tell which lookup they use.
type describer interface {
	describe() (name string, why error)
	stats() Stats
}

// ErrBPFUnavailable wraps the reason the BPF fast path asked for with
// Options.BPF could not be set up; see [Map.Backend].
var ErrBPFUnavailable = errors.New("procmap: BPF connect recorder unavailable, using the slower fallback")

// Stats counts how lookups were answered by the BPF fast path.
type Stats struct {
	BPFHits   uint64 // answered from a BPF connect record
	BPFMisses uint64 // no record (connected before attach, evicted, not a TCP connect of this namespace): fallback used
	BPFStale  uint64 // a record whose process had exited or whose pid was reused: fallback used
	BPFErrors uint64 // the map lookup itself failed: fallback used
}

// Map finds the process behind a socket. It is safe for concurrent use.
type Map struct {
	log    *slog.Logger
	sys    backend
	users  *userCache
	closed atomic.Bool
}

// New returns a Map. It opens what the system needs lazily (Linux: a netlink
// socket per concurrent lookup), so New itself does not fail. With
// Options.BPF it loads and attaches the Linux fast path at once (a few ms);
// Close detaches it.
func New(opts Options) *Map {
	opts.defaults()
	return &Map{
		log:   opts.Logger,
		sys:   newBackend(opts),
		users: newUserCache(1024),
	}
}

// Lookup returns the process owning the TCP socket whose local address is
// local and whose peer is remote. IPv4, IPv6 and v4-mapped IPv6 addresses are
// accepted (mapped ones are unmapped first). When the owner cannot be found
// the returned Proc carries what is known (UID or -1, PID 0) and the error
// wraps ErrNotFound.
func (m *Map) Lookup(local, remote netip.AddrPort) (Proc, error) {
	unknown := Proc{UID: -1}
	if m.closed.Load() {
		return unknown, ErrClosed
	}
	local, remote, ok := pair(local, remote)
	if !ok {
		return unknown, fmt.Errorf("procmap: lookup %v → %v: need two valid addresses of one family: %w", local, remote, ErrNotFound)
	}
	p, err := m.sys.lookup(local, remote)
	if p.UID >= 0 {
		p.User = m.users.name(p.UID)
	}
	if err != nil {
		m.log.Debug("procmap: lookup failed", "local", local, "remote", remote, "uid", p.UID, "err", err)
	}
	return p, err
}

// pair unmaps a connection's two addresses (the BPF records and sock_diag
// know v4-mapped sockets by their IPv4 4-tuple) and reports whether they are
// valid and of one family.
func pair(local, remote netip.AddrPort) (netip.AddrPort, netip.AddrPort, bool) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	return local, remote, local.IsValid() && remote.IsValid() && local.Addr().Is4() == remote.Addr().Is4()
}

// fastLooker is implemented by backends with a lookup that never waits on
// the kernel beyond a map read (Linux's BPF connect records).
type fastLooker interface {
	lookupFast(local, remote netip.AddrPort) (Proc, bool)
}

// LookupFast answers as Lookup does when the BPF connect recorder has the
// connection (a map read, a few µs), and reports false when only Lookup's
// fallback could (sock_diag, /proc: up to milliseconds), or when there is no
// recorder. A record it took is not there for Lookup again. For callers that
// must not block, such as the proxy's event loops: on false they call Lookup
// where waiting is fine.
func (m *Map) LookupFast(local, remote netip.AddrPort) (Proc, bool) {
	fl, ok := m.sys.(fastLooker)
	if !ok || m.closed.Load() {
		return Proc{UID: -1}, false
	}
	local, remote, ok = pair(local, remote)
	if !ok {
		return Proc{UID: -1}, false
	}
	p, ok := fl.lookupFast(local, remote)
	if ok && p.UID >= 0 {
		p.User = m.users.name(p.UID)
	}
	return p, ok
}

// InTree reports whether pid is root or one of its descendants, by walking
// the parent chain. It is meant for `netshape run`: flows of a command and of
// everything it started.
func (m *Map) InTree(pid, root int) bool {
	for range 4096 { // bounded: the chain ends at 1 long before this
		if pid == root {
			return true
		}
		if pid <= 1 {
			return false
		}
		pp, err := m.sys.ppid(pid)
		if err != nil || pp == pid {
			return false
		}
		pid = pp
	}
	return false
}

// Descendants returns the pids of every living descendant of root (root
// itself excluded), in breadth-first order.
func (m *Map) Descendants(root int) ([]int, error) {
	par, err := m.sys.parents()
	if err != nil {
		return nil, fmt.Errorf("procmap: list processes for descendants of %d: %w", root, err)
	}
	return descendants(par, root), nil
}

func descendants(parents map[int]int, root int) []int {
	children := make(map[int][]int, len(parents))
	for pid, pp := range parents {
		if pid != pp {
			children[pp] = append(children[pp], pid)
		}
	}
	for _, c := range children {
		slices.Sort(c)
	}
	var out []int
	seen := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// Backend names the socket-owner lookup in use: "bpf" (BPF connect records,
// sock_diag as fallback) or "sock_diag" on Linux, "sysctl" on macOS and
// FreeBSD, "none" elsewhere. When Options.BPF was set but the fast path could
// not be set up, err wraps [ErrBPFUnavailable] and says why; the daemon logs
// it once.
func (m *Map) Backend() (name string, err error) {
	if d, ok := m.sys.(describer); ok {
		return d.describe()
	}
	switch runtime.GOOS {
	case "darwin", "freebsd":
		return "sysctl", nil
	}
	return "none", nil
}

// Stats returns the fast-path counters (all zero without the BPF backend).
func (m *Map) Stats() Stats {
	if d, ok := m.sys.(describer); ok {
		return d.stats()
	}
	return Stats{}
}

// Close releases the Map's resources. It is idempotent; Lookup fails with
// ErrClosed afterwards.
func (m *Map) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	return m.sys.close()
}
