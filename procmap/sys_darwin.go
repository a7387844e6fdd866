package procmap

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// darwinBackend reads the TCP pcb list and process table through sysctl. No
// cache: the pcb list is read once per lookup.
type darwinBackend struct{}

func newBackend(Options) backend { return darwinBackend{} }

func (darwinBackend) lookup(local, remote netip.AddrPort) (Proc, error) {
	raw, err := unix.SysctlRaw("net.inet.tcp.pcblist_n")
	if err != nil {
		return Proc{UID: -1}, fmt.Errorf("procmap: sysctl net.inet.tcp.pcblist_n: %w", err)
	}
	entries, err := parseXNUPcbList(raw)
	if err != nil {
		return Proc{UID: -1}, fmt.Errorf("procmap: parse net.inet.tcp.pcblist_n (kernel layout changed?): %w", err)
	}
	e, ok := findPcb(entries, local, remote)
	if !ok {
		return Proc{UID: -1}, fmt.Errorf("procmap: no TCP socket %v → %v: %w", local, remote, ErrNotFound)
	}
	if e.pid <= 0 {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: TCP socket %v → %v (uid %d) names no pid: %w", local, remote, e.uid, ErrNotFound)
	}
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", e.pid)
	if err != nil || int(kp.Proc.P_pid) != e.pid {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: owner pid %d of %v → %v vanished: %w", e.pid, local, remote, ErrNotFound)
	}
	p := Proc{PID: e.pid, PPID: int(kp.Eproc.Ppid), UID: int(kp.Eproc.Pcred.P_ruid)}
	if args, err := unix.SysctlRaw("kern.procargs2", e.pid); err == nil {
		p.Exe, p.Cmdline, _ = parseProcArgs2(args)
	}
	return p, nil
}

func (darwinBackend) ppid(pid int) (int, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return 0, fmt.Errorf("procmap: sysctl kern.proc.pid.%d: %w", pid, err)
	}
	if int(kp.Proc.P_pid) != pid {
		return 0, fmt.Errorf("procmap: pid %d: %w", pid, ErrNotFound)
	}
	return int(kp.Eproc.Ppid), nil
}

func (darwinBackend) parents() (map[int]int, error) {
	all, err := unix.SysctlKinfoProcSlice("kern.proc.all")
	if err != nil {
		return nil, fmt.Errorf("procmap: sysctl kern.proc.all: %w", err)
	}
	out := make(map[int]int, len(all))
	for _, kp := range all {
		out[int(kp.Proc.P_pid)] = int(kp.Eproc.Ppid)
	}
	return out, nil
}

func (darwinBackend) close() error { return nil }
