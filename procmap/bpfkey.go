package procmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
)

// The layout shared by the Linux BPF connect recorder (bpf_linux.go) and
// the user-space lookup. It is plain bytes so it builds and is tested
// everywhere.
//
// Key, 40 bytes, filled by the program at BPF_SOCK_OPS_TCP_CONNECT_CB:
//
//	0  u32 family  AF_INET (2) or AF_INET6 (10), host byte order
//	4  u16 local port, host byte order
//	6  u16 remote port, host byte order
//	8  [16]byte local address  (IPv4: 4 bytes, then 12 zero bytes)
//	24 [16]byte remote address (IPv4: 4 bytes, then 12 zero bytes)
//
// An IPv6 socket connected to a v4-mapped address is recorded as IPv4, the
// form Lookup unmaps every query to.
//
// Value, 32 bytes:
//
//	0  u32 tgid (pid in the initial pid namespace)
//	4  u32 uid (real uid in the initial user namespace)
//	8  u64 CLOCK_BOOTTIME nanoseconds of the connect
//	16 u64 CLOCK_BOOTTIME nanoseconds of the process's last execve seen by
//	       the exec tracker, 0 if none since it was attached
//	24 u64 cgroup v2 id of the connecting task
const (
	bpfKeySize   = 40
	bpfValueSize = 32

	// afInet and afInet6 (Linux values) are declared in inetdiag.go.

	// userHZ is the unit of the start time in /proc/PID/stat (clock ticks,
	// USER_HZ, 100 on every Linux architecture Go supports but alpha).
	userHZ = 100
)

type bpfKey [bpfKeySize]byte

// bpfRecord is a decoded map value.
type bpfRecord struct {
	pid    int
	uid    int
	bootNS uint64 // CLOCK_BOOTTIME of the connect
	execNS uint64 // CLOCK_BOOTTIME of the last exec of pid, 0: none seen
	cgroup uint64 // cgroup v2 id
}

var errBadBPFKey = errors.New("malformed BPF connection key")

// encodeBPFKey builds the key of the socket local → remote. Addresses must
// be unmapped and of one family (Lookup ensures both).
func encodeBPFKey(local, remote netip.AddrPort) bpfKey {
	var k bpfKey
	ne := binary.NativeEndian
	if local.Addr().Is4() {
		ne.PutUint32(k[0:], afInet)
		l, r := local.Addr().As4(), remote.Addr().As4()
		copy(k[8:], l[:])
		copy(k[24:], r[:])
	} else {
		ne.PutUint32(k[0:], afInet6)
		l, r := local.Addr().As16(), remote.Addr().As16()
		copy(k[8:], l[:])
		copy(k[24:], r[:])
	}
	ne.PutUint16(k[4:], local.Port())
	ne.PutUint16(k[6:], remote.Port())
	return k
}

// decodeBPFKey is the inverse of encodeBPFKey, for keys the kernel wrote.
// IPv6 zones are not recorded, so none is returned.
func decodeBPFKey(b []byte) (local, remote netip.AddrPort, err error) {
	if len(b) != bpfKeySize {
		return local, remote, errBadBPFKey
	}
	ne := binary.NativeEndian
	lp, rp := ne.Uint16(b[4:]), ne.Uint16(b[6:])
	var la, ra netip.Addr
	switch ne.Uint32(b[0:]) {
	case afInet:
		var zero [12]byte
		if !bytes.Equal(b[12:24], zero[:]) || !bytes.Equal(b[28:40], zero[:]) {
			return local, remote, errBadBPFKey
		}
		la, ra = netip.AddrFrom4([4]byte(b[8:12])), netip.AddrFrom4([4]byte(b[24:28]))
	case afInet6:
		la, ra = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		if la.Is4In6() || ra.Is4In6() {
			return local, remote, errBadBPFKey // the program records those as IPv4
		}
	default:
		return local, remote, errBadBPFKey
	}
	return netip.AddrPortFrom(la, lp), netip.AddrPortFrom(ra, rp), nil
}

// decodeBPFRecord decodes a map value.
func decodeBPFRecord(b []byte) (bpfRecord, bool) {
	if len(b) != bpfValueSize {
		return bpfRecord{}, false
	}
	ne := binary.NativeEndian
	return bpfRecord{
		pid:    int(ne.Uint32(b[0:])),
		uid:    int(ne.Uint32(b[4:])),
		bootNS: ne.Uint64(b[8:]),
		execNS: ne.Uint64(b[16:]),
		cgroup: ne.Uint64(b[24:]),
	}, true
}

// startedBy reports whether a process whose /proc/PID/stat start time is
// startTicks could have made a connection recorded at bootNS. A pid reused
// by a process started after the connect fails it. Both clocks count from
// boot including suspend; the tick is truncated, so no slack is needed.
func startedBy(startTicks, bootNS uint64) bool {
	const nsPerTick = 1_000_000_000 / userHZ
	return startTicks <= bootNS/nsPerTick
}

// cgroup2Mount returns the mount point of the first cgroup2 file system in
// a /proc/self/mountinfo text whose root is the hierarchy's root, and
// whether there is one. Mount points with
// escaped characters (\040 for a space, ...) are unescaped.
func cgroup2Mount(mountinfo []byte) (string, bool) {
	for line := range bytes.Lines(mountinfo) {
		line = bytes.TrimRight(line, "\n")
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := bytes.Cut(line, []byte(" - "))
		if !ok {
			continue
		}
		f := bytes.Fields(pre)
		g := bytes.Fields(post)
		// Only a mount of the hierarchy's root (field 4 "/") sees every cgroup.
		if len(f) < 5 || len(g) < 1 || string(g[0]) != "cgroup2" || string(f[3]) != "/" {
			continue
		}
		return unescapeMountinfo(string(f[4])), true
	}
	return "", false
}

// unescapeMountinfo undoes the octal escapes (\ooo) the kernel writes for
// space, tab, newline and backslash.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOct(s[i+2]) && isOct(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOct(c byte) bool { return c >= '0' && c <= '7' }
