package procmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// pcbEntry is one TCP socket of a BSD pcb list.
type pcbEntry struct {
	local, remote netip.AddrPort
	uid           int    // socket owner's uid
	pid           int    // owning pid when the list says (macOS); 0 otherwise
	so            uint64 // kernel address of the socket (FreeBSD: key into kern.file)
}

var errBadPcbList = errors.New("malformed pcb list")

// findPcb returns the entry with exactly this local and remote address.
func findPcb(entries []pcbEntry, local, remote netip.AddrPort) (pcbEntry, bool) {
	for _, e := range entries {
		if e.local == local && e.remote == remote {
			return e, true
		}
	}
	return pcbEntry{}, false
}

// pcbAddr reads a 16-byte address union (in_addr_4in6 / in6_addr): IPv6 when
// v6, else the IPv4 address in its last 4 bytes. Mapped addresses are unmapped
// so that dual-stack sockets compare equal to what the proxy sees.
func pcbAddr(b []byte, port uint16, v6 bool) netip.AddrPort {
	var a netip.Addr
	if v6 {
		a = netip.AddrFrom16([16]byte(b[:16])).Unmap()
	} else {
		a = netip.AddrFrom4([4]byte(b[12:16]))
	}
	return netip.AddrPortFrom(a, port)
}

// xnu layout, from bsd/netinet/in_pcb.h and bsd/sys/socketvar.h; both
// declare these structs under #pragma pack(4), so 8-byte members sit on
// 4-byte boundaries. Byte order is the host's, ports are network order.
//
// struct xinpgen { u32 xig_len; u32 xig_count; u64 xig_gen; u64 xig_sogen; } // 24
//
// struct xinpcb_n {                  // 104 bytes
//
//		u32 xi_len;        // 0
//		u32 xi_kind;       // 4   XSO_INPCB
//		u64 xi_inpp;       // 8
//		u16 inp_fport;     // 16  network order
//		u16 inp_lport;     // 18
//		u64 inp_ppcb;      // 20
//		u64 inp_gencnt;    // 28
//		int inp_flags;     // 36
//		u32 inp_flow;      // 40
//		u8  inp_vflag;     // 44  INP_IPV4 0x1, INP_IPV6 0x2
//		u8  inp_ip_ttl;    // 45
//		u8  inp_ip_p;      // 46
//		union inp_dependfaddr;  // 48 (in_addr_4in6: 12 pad bytes + in_addr | in6_addr)
//		union inp_dependladdr;  // 64
//		...                     // depend4, depend6, flowhash, flags2
//	};
//
// struct xsocket_n {                 // 104 bytes (76 before so_gencnt was added)
//
//		u32 xso_len;       // 0
//		u32 xso_kind;      // 4   XSO_SOCKET
//		u64 xso_so;        // 8
//		short so_type;     // 16
//		u32 so_options;    // 20
//		short so_linger;   // 24
//		short so_state;    // 26
//		u64 so_pcb;        // 28
//		int xso_protocol;  // 36
//		int xso_family;    // 40
//		short so_qlen, so_incqlen, so_qlimit, so_timeo; // 44..52
//		u16 so_error;      // 52
//		pid_t so_pgid;     // 56
//		u32 so_oobmark;    // 60
//		uid_t so_uid;      // 64
//		pid_t so_last_pid; // 68
//		pid_t so_e_pid;    // 72
//		...
//	};
//
// net.inet.tcp.pcblist_n (bsd/netinet/in_pcblist.c, get_pcblist_n) returns an
// xinpgen, then per socket the items xinpcb_n, xsocket_n, xsockbuf_n (rcv),
// xsockbuf_n (snd), xsockstat_n, xtcpcb_n, each starting with {u32 len; u32
// kind} and padded to 8 bytes, then a closing xinpgen.
const (
	xsoSocket      = 0x001
	xsoInpcb       = 0x010
	xnuXinpgenLen  = 24
	xnuXinpcbNMin  = 80 // through inp_dependladdr
	xnuXsocketNMin = 76 // through so_e_pid
	inpIPv4        = 0x1
	inpIPv6        = 0x2
)

// parseXNUPcbList parses the output of sysctl net.inet.tcp.pcblist_n.
// Entries without both an xinpcb_n and an xsocket_n item are skipped.
func parseXNUPcbList(b []byte) ([]pcbEntry, error) {
	ne := binary.NativeEndian
	if len(b) < xnuXinpgenLen {
		return nil, fmt.Errorf("xinpgen header of %d bytes: %w", len(b), errBadPcbList)
	}
	hl := int(ne.Uint32(b))
	if hl < xnuXinpgenLen || hl > len(b) {
		return nil, fmt.Errorf("xinpgen length %d of %d bytes: %w", hl, len(b), errBadPcbList)
	}
	var out []pcbEntry
	var inp, so []byte
	flush := func() {
		if inp != nil && so != nil {
			out = append(out, xnuEntry(inp, so))
		}
		inp, so = nil, nil
	}
	off := roundup8(hl)
	for off+8 <= len(b) {
		l := int(ne.Uint32(b[off:]))
		kind := ne.Uint32(b[off+4:])
		if l <= xnuXinpgenLen {
			break // the closing xinpgen
		}
		if l > len(b)-off {
			return out, fmt.Errorf("item of %d bytes at offset %d of %d: %w", l, off, len(b), errBadPcbList)
		}
		rec := b[off : off+l]
		switch kind {
		case xsoInpcb:
			if inp != nil {
				flush()
			}
			if l >= xnuXinpcbNMin {
				inp = rec
			}
		case xsoSocket:
			if so != nil {
				flush()
			}
			if l >= xnuXsocketNMin {
				so = rec
			}
		}
		off += roundup8(l)
	}
	flush()
	return out, nil
}

func xnuEntry(inp, so []byte) pcbEntry {
	ne := binary.NativeEndian
	v6 := inp[44]&inpIPv6 != 0
	e := pcbEntry{
		remote: pcbAddr(inp[48:64], binary.BigEndian.Uint16(inp[16:]), v6),
		local:  pcbAddr(inp[64:80], binary.BigEndian.Uint16(inp[18:]), v6),
		so:     ne.Uint64(so[8:]),
		uid:    int(ne.Uint32(so[64:])),
	}
	// so_e_pid is the effective owner (differs from so_last_pid only for
	// sockets delegated by a daemon on an app's behalf); prefer it.
	if pid := int(int32(ne.Uint32(so[72:]))); pid > 0 {
		e.pid = pid
	} else if pid := int(int32(ne.Uint32(so[68:]))); pid > 0 {
		e.pid = pid
	}
	return e
}

func roundup8(n int) int { return (n + 7) &^ 7 }

// parseProcArgs2 parses sysctl kern.procargs2 output: int32 argc, the exec
// path NUL-terminated, NUL padding, then argc NUL-terminated arguments (the
// environment follows and is ignored).
func parseProcArgs2(b []byte) (exe, cmdline string, err error) {
	if len(b) < 4 {
		return "", "", fmt.Errorf("procargs2 of %d bytes: %w", len(b), errBadPcbList)
	}
	argc := int(int32(binary.NativeEndian.Uint32(b)))
	if argc < 0 {
		return "", "", fmt.Errorf("procargs2 argc %d: %w", argc, errBadPcbList)
	}
	b = b[4:]
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), "", nil
	}
	exe = string(b[:i])
	b = b[i:]
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	args := make([]string, 0, min(argc, 64))
	for len(args) < argc && len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			args = append(args, string(b))
			break
		}
		args = append(args, string(b[:i]))
		b = b[i+1:]
	}
	return exe, strings.Join(args, " "), nil
}
