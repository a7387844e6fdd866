package procmap

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// freebsdBackend finds the socket in net.inet.tcp.pcblist, its holder in
// kern.file (xf_data == xso_so) and the process in kern.proc.*.
type freebsdBackend struct{}

func newBackend(Options) backend { return freebsdBackend{} }

const ptrSize = strconv.IntSize / 8

func (freebsdBackend) lookup(local, remote netip.AddrPort) (Proc, error) {
	raw, err := unix.SysctlRaw("net.inet.tcp.pcblist")
	if err != nil {
		return Proc{UID: -1}, fmt.Errorf("procmap: sysctl net.inet.tcp.pcblist: %w", err)
	}
	entries, err := parseFreeBSDPcbList(raw)
	if err != nil {
		return Proc{UID: -1}, fmt.Errorf("procmap: parse net.inet.tcp.pcblist (kernel layout changed?): %w", err)
	}
	e, ok := findPcb(entries, local, remote)
	if !ok {
		return Proc{UID: -1}, fmt.Errorf("procmap: no TCP socket %v → %v: %w", local, remote, ErrNotFound)
	}
	files, err := unix.SysctlRaw("kern.file")
	if err != nil {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: sysctl kern.file: %w", err)
	}
	pid, _, found, err := findFreeBSDFileOwner(files, e.so)
	if err != nil {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: parse kern.file: %w", err)
	}
	if !found {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: TCP socket %v → %v (uid %d) is held by no file (closed or exited): %w", local, remote, e.uid, ErrNotFound)
	}
	kp, err := kinfo(pid)
	if err != nil {
		return Proc{UID: e.uid}, fmt.Errorf("procmap: owner pid %d of %v → %v vanished: %w: %w", pid, local, remote, ErrNotFound, err)
	}
	p := Proc{PID: pid, PPID: kp.ppid, UID: kp.ruid}
	if b, err := unix.SysctlRaw("kern.proc.pathname", pid); err == nil {
		p.Exe = string(bytes.TrimRight(b, "\x00"))
	}
	if b, err := unix.SysctlRaw("kern.proc.args", pid); err == nil {
		p.Cmdline = parseCmdline(b)
	}
	return p, nil
}

func kinfo(pid int) (fbsdKinfo, error) {
	b, err := unix.SysctlRaw("kern.proc.pid", pid)
	if err != nil {
		return fbsdKinfo{}, fmt.Errorf("sysctl kern.proc.pid.%d: %w", pid, err)
	}
	ks, err := parseFreeBSDKinfoProcs(b, ptrSize)
	if err != nil || len(ks) == 0 || ks[0].pid != pid {
		return fbsdKinfo{}, fmt.Errorf("kern.proc.pid.%d: no such process: %w", pid, ErrNotFound)
	}
	return ks[0], nil
}

func (freebsdBackend) ppid(pid int) (int, error) {
	k, err := kinfo(pid)
	if err != nil {
		return 0, fmt.Errorf("procmap: %w", err)
	}
	return k.ppid, nil
}

func (freebsdBackend) parents() (map[int]int, error) {
	b, err := unix.SysctlRaw("kern.proc.proc")
	if err != nil {
		return nil, fmt.Errorf("procmap: sysctl kern.proc.proc: %w", err)
	}
	ks, err := parseFreeBSDKinfoProcs(b, ptrSize)
	if err != nil {
		return nil, fmt.Errorf("procmap: parse kern.proc.proc: %w", err)
	}
	out := make(map[int]int, len(ks))
	for _, k := range ks {
		out[k.pid] = k.ppid
	}
	return out, nil
}

func (freebsdBackend) close() error { return nil }
