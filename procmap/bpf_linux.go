package procmap

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// bpfMaxEntries bounds the pending connect records. The proxy takes each
// record at accept, so the map holds only connections not yet looked up
// (and those never redirected, which the LRU evicts).
const bpfMaxEntries = 65536

// initPIDNSInode is PROC_PID_INIT_INO, the inode of the initial pid
// namespace as seen through /proc/PID/ns/pid.
const initPIDNSInode = 0xEFFFFFFC

// Offsets in struct bpf_sock_ops (include/uapi/linux/bpf.h, stable ABI;
// TestSockOpsOffsets checks them against the running kernel's BTF).
const (
	sockOpsOp         = 0
	sockOpsFamily     = 20
	sockOpsRemoteIP4  = 24
	sockOpsLocalIP4   = 28
	sockOpsRemoteIP6  = 32
	sockOpsLocalIP6   = 48
	sockOpsRemotePort = 64
	sockOpsLocalPort  = 68

	sockOpsTCPConnectCB = 3 // BPF_SOCK_OPS_TCP_CONNECT_CB
)

// bpfTracker is a sock_ops program on the cgroup2 root that records, at
// every TCP connect in our network namespace, the 4-tuple → {tgid, uid,
// time}. It runs inside connect(2) after the local port is chosen, in the
// connecting process's context, so the record exists before the SYN leaves.
//
// A second program, on the sched_process_exec raw tracepoint, records
// tgid → time of its last execve, and the connect record carries that time:
// user space caches a process's details per pid and knows from it, without
// a syscall, when an exec made them stale.
type bpfTracker struct {
	conns    *ebpf.Map
	execs    *ebpf.Map
	prog     *ebpf.Program
	execProg *ebpf.Program
	link     link.Link
	execLink link.Link
	once     sync.Once
	bufs     sync.Pool // of *elemBuf, for take
}

// openBPFTracker loads and attaches the recorder. procRoot must be the real
// /proc: the recorded pids are those of the initial pid namespace.
// With ignoreSelf, the recorder skips this process's own connects.
func openBPFTracker(procRoot string, ignoreSelf bool) (_ *bpfTracker, err error) {
	if procRoot != "/proc" {
		return nil, fmt.Errorf("procfs root is %s, not /proc: recorded pids would not match it", procRoot)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return nil, fmt.Errorf("stat /proc/self/ns/pid: %w", err)
	}
	if st.Ino != initPIDNSInode {
		return nil, fmt.Errorf("netshape runs in a child pid namespace (inode %d): the kernel records pids of the initial one; run it in the host pid namespace", st.Ino)
	}
	cookie, err := ownNetnsCookie()
	if err != nil {
		return nil, err
	}

	self := 0 // no tgid is 0
	if ignoreSelf {
		self = os.Getpid() // a pid of the initial namespace, checked above
	}
	t := &bpfTracker{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	t.conns, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "netshape_conns",
		Type:       ebpf.LRUHash,
		KeySize:    bpfKeySize,
		ValueSize:  bpfValueSize,
		MaxEntries: bpfMaxEntries,
	})
	if err != nil {
		return nil, fmt.Errorf("create BPF LRU hash map (needs CAP_BPF or root): %w", err)
	}
	t.execs, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "netshape_execs",
		Type:       ebpf.LRUHash,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: bpfMaxEntries,
	})
	if err != nil {
		return nil, fmt.Errorf("create BPF LRU hash map of execs: %w", err)
	}
	t.execProg, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "netshape_exec",
		Type:         ebpf.RawTracepoint,
		Instructions: execRecorder(t.execs.FD()),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load raw_tracepoint program (needs CAP_PERFMON and CAP_BPF, or root): %w", err)
	}
	t.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "netshape_connect",
		Type:         ebpf.SockOps,
		AttachType:   ebpf.AttachCGroupSockOps,
		Instructions: connectRecorder(t.conns.FD(), t.execs.FD(), cookie, self),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		// A *ebpf.VerifierError prints the verifier log with %+v.
		return nil, fmt.Errorf("load sock_ops program (kernel too old to allow bpf_get_current_pid_tgid in sock_ops?): %w", err)
	}
	// The exec tracker first, so no connect is recorded without it.
	el, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: t.execProg})
	if err != nil {
		return nil, fmt.Errorf("attach raw tracepoint sched_process_exec: %w", err)
	}
	t.execLink = el
	dir, err := openCgroup2Root()
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	// A raw BPF link, never the legacy PROG_ATTACH fallback: a link is
	// detached by the kernel when its last fd closes, so nothing stays
	// attached after this process dies.
	l, err := link.AttachRawLink(link.RawLinkOptions{
		Target:  int(dir.Fd()),
		Program: t.prog,
		Attach:  ebpf.AttachCGroupSockOps,
	})
	if err != nil {
		return nil, fmt.Errorf("attach sock_ops program to the cgroup2 root %s with a BPF link (kernel ≥ 5.7): %w", dir.Name(), err)
	}
	t.link = l
	return t, nil
}

// ownNetnsCookie returns the cookie of the calling thread's network
// namespace (SO_NETNS_COOKIE, Linux ≥ 5.14).
func ownNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open a socket to read the network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read SO_NETNS_COOKIE (Linux ≥ 5.14): %w", err)
	}
	return c, nil
}

// openCgroup2Root opens the root of the cgroup2 hierarchy. When this mount
// namespace has none (`ip netns exec` remounts /sys), it mounts cgroup2 on a
// private temporary directory, opens it and detaches the mount at once; the
// open directory keeps the cgroup usable for attaching.
func openCgroup2Root() (*os.File, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo to find cgroup2: %w", err)
	}
	if dir, ok := cgroup2Mount(mi); ok {
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("open cgroup2 root %s: %w", dir, err)
		}
		return f, nil
	}
	tmp, err := os.MkdirTemp("", "netshape-cgroup2-")
	if err != nil {
		return nil, fmt.Errorf("no cgroup2 mounted; make a directory to mount it: %w", err)
	}
	defer os.Remove(tmp)
	if err := unix.Mount("cgroup2", tmp, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("no cgroup2 mounted, and mounting it on %s failed (needs CAP_SYS_ADMIN and CONFIG_CGROUPS): %w", tmp, err)
	}
	f, err := os.Open(tmp)
	if uerr := unix.Unmount(tmp, unix.MNT_DETACH); uerr != nil && err == nil {
		f.Close()
		return nil, fmt.Errorf("unmount temporary cgroup2 mount %s: %w", tmp, uerr)
	}
	if err != nil {
		return nil, fmt.Errorf("open temporary cgroup2 mount %s: %w", tmp, err)
	}
	return f, nil
}

// connectRecorder returns the sock_ops program. In C it would read:
//
//	if (ctx->op != BPF_SOCK_OPS_TCP_CONNECT_CB) return 1;
//	if (bpf_get_netns_cookie(ctx) != NETNS) return 1;
//	key = {0}; key.lport = ctx->local_port; key.rport = ntohl(ctx->remote_port);
//	if (family == AF_INET || (family == AF_INET6 && v4mapped(ctx->remote_ip6)))
//	        key.family = AF_INET, key.laddr = local_ip4, key.raddr = remote_ip4;
//	else if (family == AF_INET6)
//	        key.family = AF_INET6, key.laddr = local_ip6, key.raddr = remote_ip6;
//	else return 1;
//	tgid = pid_tgid >> 32; if (tgid == SELF) return 1;
//	exec = bpf_map_lookup_elem(&execs, &tgid);
//	val = {tgid, (u32)uid_gid, ktime_get_boot_ns(), exec ? *exec : 0, cgroup_id};
//	bpf_map_update_elem(&conns, &key, &val, BPF_ANY);
//	return 1;
//
// SELF is self, the tgid whose connects are not recorded (0: none).
//
// It always returns 1: it only observes and never changes a connection.
func connectRecorder(mapFD, execsFD int, netnsCookie uint64, self int) asm.Instructions {
	const (
		key  = -bpfKeySize        // fp offset of the key
		val  = key - bpfValueSize // fp offset of the value
		tgid = val - 4            // fp offset of the exec map key
		ctx  = asm.R6             // saved context
		// labels
		out, v4, v6, put, noexec = "out", "v4", "v6", "put", "noexec"
	)
	insns := asm.Instructions{
		asm.Mov.Reg(ctx, asm.R1),
		asm.LoadMem(asm.R2, ctx, sockOpsOp, asm.Word),
		asm.JNE.Imm(asm.R2, sockOpsTCPConnectCB, out),

		asm.Mov.Reg(asm.R1, ctx),
		asm.FnGetNetnsCookie.Call(),
		asm.LoadImm(asm.R2, int64(netnsCookie), asm.DWord),
		asm.JNE.Reg(asm.R0, asm.R2, out),

		asm.Mov.Imm(asm.R3, 0),
		asm.StoreMem(asm.RFP, key, asm.R3, asm.DWord),
		asm.StoreMem(asm.RFP, key+8, asm.R3, asm.DWord),
		asm.StoreMem(asm.RFP, key+16, asm.R3, asm.DWord),
		asm.StoreMem(asm.RFP, key+24, asm.R3, asm.DWord),
		asm.StoreMem(asm.RFP, key+32, asm.R3, asm.DWord),
		asm.LoadMem(asm.R3, ctx, sockOpsLocalPort, asm.Word), // host order
		asm.StoreMem(asm.RFP, key+4, asm.R3, asm.Half),
		asm.LoadMem(asm.R3, ctx, sockOpsRemotePort, asm.Word), // network order, as a u32
		asm.HostTo(asm.BE, asm.R3, asm.Word),
		asm.StoreMem(asm.RFP, key+6, asm.R3, asm.Half),

		asm.LoadMem(asm.R2, ctx, sockOpsFamily, asm.Word),
		asm.JEq.Imm(asm.R2, afInet, v4),
		asm.JNE.Imm(asm.R2, afInet6, out),
		// An IPv6 socket talking to ::ffff:a.b.c.d keeps its real addresses in the IPv4 fields.
		asm.LoadMem(asm.R3, ctx, sockOpsRemoteIP6, asm.Word),
		asm.JNE.Imm(asm.R3, 0, v6),
		asm.LoadMem(asm.R3, ctx, sockOpsRemoteIP6+4, asm.Word),
		asm.JNE.Imm(asm.R3, 0, v6),
		asm.LoadMem(asm.R3, ctx, sockOpsRemoteIP6+8, asm.Word),
		asm.HostTo(asm.BE, asm.R3, asm.Word),
		asm.JEq.Imm32(asm.R3, 0xffff, v4),

		asm.StoreImm(asm.RFP, key, afInet6, asm.Word).WithSymbol(v6),
	}
	for i := int16(0); i < 16; i += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R3, ctx, sockOpsLocalIP6+i, asm.Word),
			asm.StoreMem(asm.RFP, key+8+i, asm.R3, asm.Word),
			asm.LoadMem(asm.R3, ctx, sockOpsRemoteIP6+i, asm.Word),
			asm.StoreMem(asm.RFP, key+24+i, asm.R3, asm.Word),
		)
	}
	insns = append(insns,
		asm.Ja.Label(put),

		asm.StoreImm(asm.RFP, key, afInet, asm.Word).WithSymbol(v4),
		asm.LoadMem(asm.R3, ctx, sockOpsLocalIP4, asm.Word),
		asm.StoreMem(asm.RFP, key+8, asm.R3, asm.Word),
		asm.LoadMem(asm.R3, ctx, sockOpsRemoteIP4, asm.Word),
		asm.StoreMem(asm.RFP, key+24, asm.R3, asm.Word),

		asm.FnGetCurrentPidTgid.Call().WithSymbol(put),
		asm.RSh.Imm(asm.R0, 32),
		asm.JEq.Imm(asm.R0, int32(self), out),
		asm.StoreMem(asm.RFP, val, asm.R0, asm.Word),
		asm.StoreMem(asm.RFP, tgid, asm.R0, asm.Word),
		asm.Mov.Imm(asm.R3, 0),
		asm.StoreMem(asm.RFP, val+16, asm.R3, asm.DWord),
		asm.LoadMapPtr(asm.R1, execsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, tgid),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, noexec),
		asm.LoadMem(asm.R3, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, val+16, asm.R3, asm.DWord),
		asm.FnGetCurrentUidGid.Call().WithSymbol(noexec),
		asm.StoreMem(asm.RFP, val+4, asm.R0, asm.Word),
		asm.FnKtimeGetBootNs.Call(),
		asm.StoreMem(asm.RFP, val+8, asm.R0, asm.DWord),
		asm.FnGetCurrentCgroupId.Call(),
		asm.StoreMem(asm.RFP, val+24, asm.R0, asm.DWord),

		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, val),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),

		asm.Mov.Imm(asm.R0, 1).WithSymbol(out),
		asm.Return(),
	)
	return insns
}

// execRecorder returns the sched_process_exec program:
//
//	u32 tgid = bpf_get_current_pid_tgid() >> 32; u64 now = bpf_ktime_get_boot_ns();
//	bpf_map_update_elem(&execs, &tgid, &now, BPF_ANY); return 0;
func execRecorder(execsFD int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.FnKtimeGetBootNs.Call(),
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, execsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// take returns and deletes the record of the socket local → remote, in one
// BPF_MAP_LOOKUP_AND_DELETE_ELEM: the proxy looks each connection up once,
// so the map keeps only pending ones.
func (t *bpfTracker) take(local, remote netip.AddrPort) (bpfRecord, bool, error) {
	b, _ := t.bufs.Get().(*elemBuf)
	if b == nil {
		b = new(elemBuf)
	}
	defer t.bufs.Put(b)
	b.k = encodeBPFKey(local, remote)
	// BPF_MAP_LOOKUP_AND_DELETE_ELEM as a raw system call, not through
	// ebpf.Map: it never sleeps, and the proxy's event loops call it once
	// per connection (proxy/rawsys_linux.go says why their calls are raw).
	// The key and value are in b, on the heap, which does not move: the
	// kernel reads them through plain integers.
	attr := mapElemAttr{
		mapFD: uint32(t.conns.FD()),
		key:   uint64(uintptr(unsafe.Pointer(&b.k))),
		value: uint64(uintptr(unsafe.Pointer(&b.v))),
	}
	_, _, e := unix.RawSyscall(unix.SYS_BPF, bpfMapLookupAndDeleteElem, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(b)
	switch e {
	case 0:
	case unix.ENOENT:
		return bpfRecord{}, false, nil
	default:
		return bpfRecord{}, false, fmt.Errorf("look up BPF connect record: bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM): %w", e)
	}
	r, _ := decodeBPFRecord(b.v[:])
	return r, true, nil
}

// bpfMapLookupAndDeleteElem is the bpf(2) command (linux/bpf.h), and
// mapElemAttr the part of union bpf_attr its map element commands read.
const bpfMapLookupAndDeleteElem = 21

type mapElemAttr struct {
	mapFD uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

type elemBuf struct {
	k bpfKey
	v [bpfValueSize]byte
}

// close detaches the program and frees the map. Idempotent.
func (t *bpfTracker) close() {
	t.once.Do(func() {
		for _, l := range []link.Link{t.link, t.execLink} {
			if l != nil {
				l.Close()
			}
		}
		for _, p := range []*ebpf.Program{t.prog, t.execProg} {
			if p != nil {
				p.Close()
			}
		}
		for _, m := range []*ebpf.Map{t.conns, t.execs} {
			if m != nil {
				m.Close()
			}
		}
	})
}
