package procmap

import (
	"encoding/binary"
	"fmt"
)

// FreeBSD layout (FreeBSD 12 and later; amd64/arm64, natural alignment), from
// sys/netinet/in_pcb.h, sys/sys/socketvar.h, sys/netinet/tcp_var.h,
// sys/sys/file.h and sys/sys/user.h. Host byte order, ports network order.
//
// struct xinpgen { ksize_t xig_len; u32 xig_count, _spare; u64 xig_gen,
// xig_sogen; u64 _spare64[4]; } // 64 bytes
//
// struct xtcpcb { ksize_t xt_len; struct xinpcb xt_inp; ... } // xt_len strides
//
// struct xinpcb {                      // 400 bytes
//
//		ksize_t xi_len;                  // 0
//		struct xsocket xi_socket;        // 8 (240 bytes):
//		    ksize_t xso_len;             //   +0
//		    kvaddr_t xso_so;             //   +8   → 16
//		    kvaddr_t so_pcb;             //   +16
//		    u64 so_oobmark;              //   +24
//		    i64 so_spare64[8];           //   +32  (14+: so_splice_so + [7])
//		    i32 xso_protocol, xso_family;//   +96
//		    u32 so_qlen, incqlen, qlimit;//   +104
//		    pid_t so_pgid;               //   +116
//		    uid_t so_uid;                //   +120 → 128
//		    ...
//		struct in_conninfo inp_inc;      // 248:
//		    u8 inc_flags;                //   +0   INC_ISIPV6 0x01
//		    u8 inc_len; u16 inc_fibnum;  //   +1
//		    u16 ie_fport, ie_lport;      //   +4   → 252, 254
//		    union ie_dependfaddr;        //   +8   → 256 (in_addr_4in6 | in6_addr)
//		    union ie_dependladdr;        //   +24  → 272
//		    u32 ie6_zoneid;              //   +40
//		u64 inp_gencnt;                  // 296
//		...
//		u8 inp_vflag;                    // 392  INP_IPV4 0x1, INP_IPV6 0x2
//		...
//	};
//
// struct xfile {                       // 128 bytes
//
//		ksize_t xf_size;     // 0
//		pid_t xf_pid;        // 8
//		uid_t xf_uid;        // 12
//		int xf_fd;           // 16
//		int _pad1;           // 20
//		kvaddr_t xf_file;    // 24
//		short xf_type;       // 32  DTYPE_SOCKET 2
//		short _pad;          // 34
//		int xf_count, xf_msgcount, _pad2; // 36
//		off_t xf_offset;     // 48
//		kvaddr_t xf_data;    // 56  struct socket * for sockets
//		...
//	};
const (
	fbsdXinpgenLen = 64
	fbsdXinpcbLen  = 400
	fbsdXfileMin   = 64
	dtypeSocket    = 2
)

// parseFreeBSDPcbList parses the output of sysctl net.inet.tcp.pcblist.
func parseFreeBSDPcbList(b []byte) ([]pcbEntry, error) {
	ne := binary.NativeEndian
	if len(b) < fbsdXinpgenLen {
		return nil, fmt.Errorf("xinpgen header of %d bytes: %w", len(b), errBadPcbList)
	}
	hl := ne.Uint64(b)
	if hl < fbsdXinpgenLen || hl > uint64(len(b)) {
		return nil, fmt.Errorf("xinpgen length %d of %d bytes: %w", hl, len(b), errBadPcbList)
	}
	var out []pcbEntry
	off := int(hl)
	for off+8 <= len(b) {
		l := ne.Uint64(b[off:])
		if l <= hl {
			break // the closing xinpgen
		}
		if l > uint64(len(b)-off) {
			return out, fmt.Errorf("xtcpcb of %d bytes at offset %d of %d: %w", l, off, len(b), errBadPcbList)
		}
		rec := b[off : off+int(l)]
		off += int(l)
		if len(rec) < 8+fbsdXinpcbLen {
			return out, fmt.Errorf("xtcpcb of %d bytes, want at least %d: %w", len(rec), 8+fbsdXinpcbLen, errBadPcbList)
		}
		inp := rec[8:]
		v6 := inp[392]&inpIPv6 != 0 || inp[248]&0x01 != 0
		out = append(out, pcbEntry{
			so:     ne.Uint64(inp[16:]),
			uid:    int(ne.Uint32(inp[128:])),
			remote: pcbAddr(inp[256:272], binary.BigEndian.Uint16(inp[252:]), v6),
			local:  pcbAddr(inp[272:288], binary.BigEndian.Uint16(inp[254:]), v6),
		})
	}
	return out, nil
}

// findFreeBSDFileOwner scans sysctl kern.file output for the socket file
// whose xf_data is so and returns its pid and uid.
func findFreeBSDFileOwner(b []byte, so uint64) (pid, uid int, ok bool, err error) {
	ne := binary.NativeEndian
	for off := 0; off+8 <= len(b); {
		sz := ne.Uint64(b[off:])
		if sz < fbsdXfileMin || sz > uint64(len(b)-off) {
			return 0, 0, false, fmt.Errorf("xfile of %d bytes at offset %d of %d: %w", sz, off, len(b), errBadPcbList)
		}
		rec := b[off : off+int(sz)]
		off += int(sz)
		if int16(ne.Uint16(rec[32:])) == dtypeSocket && ne.Uint64(rec[56:]) == so {
			return int(int32(ne.Uint32(rec[8:]))), int(ne.Uint32(rec[12:])), true, nil
		}
	}
	return 0, 0, false, nil
}

// fbsdKinfo is what procmap reads from a FreeBSD struct kinfo_proc.
type fbsdKinfo struct{ pid, ppid, uid, ruid int }

// parseFreeBSDKinfoProcs parses one or more struct kinfo_proc (sysctl
// kern.proc.pid.N or kern.proc.proc), each ki_structsize long:
//
//	int ki_structsize;            // 0
//	int ki_layout;                // 4
//	8 pointers (ki_args … ki_wchan) // 8
//	pid_t ki_pid;                 // 8+8p      (72 on LP64)
//	pid_t ki_ppid;                // +4
//	pid_t ki_pgid, ki_tpgid, ki_sid, ki_tsid; // +8..+24
//	short ki_jobc, ki_spare_short1; // +24
//	u32 ki_tdev_freebsd11;        // +28
//	sigset_t ki_siglist, ki_sigmask, ki_sigignore, ki_sigcatch; // +32, 16 bytes each
//	uid_t ki_uid;                 // +96       (168 on LP64)
//	uid_t ki_ruid;                // +100
//
// ptrSize is the kernel's pointer size (8 on amd64/arm64).
func parseFreeBSDKinfoProcs(b []byte, ptrSize int) ([]fbsdKinfo, error) {
	ne := binary.NativeEndian
	base := 8 + 8*ptrSize
	var out []fbsdKinfo
	for off := 0; off+4 <= len(b); {
		sz := int(int32(ne.Uint32(b[off:])))
		if sz < base+104 || sz > len(b)-off {
			return out, fmt.Errorf("kinfo_proc of %d bytes at offset %d of %d: %w", sz, off, len(b), errBadPcbList)
		}
		r := b[off : off+sz]
		off += sz
		out = append(out, fbsdKinfo{
			pid:  int(int32(ne.Uint32(r[base:]))),
			ppid: int(int32(ne.Uint32(r[base+4:]))),
			uid:  int(ne.Uint32(r[base+96:])),
			ruid: int(ne.Uint32(r[base+100:])),
		})
	}
	return out, nil
}
