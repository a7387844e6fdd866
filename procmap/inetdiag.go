package procmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// inet_diag wire format (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h).
// Netlink header fields and the uid/inode are in host byte order; ports and
// addresses in the socket id are in network byte order.
const (
	nlmsgHdrLen       = 16 // struct nlmsghdr
	nlmsgError        = 2  // NLMSG_ERROR
	nlmsgDone         = 3  // NLMSG_DONE
	nlmFRequest       = 0x1
	sockDiagByFamily  = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagReqV2Len  = 56 // struct inet_diag_req_v2
	inetDiagMsgLen    = 72 // struct inet_diag_msg
	inetDiagNoCookie  = 0xFFFFFFFF
	ipprotoTCP        = 6
	afInet            = 2  // AF_INET
	afInet6           = 10 // AF_INET6 (Linux value)
	diagRequestLength = nlmsgHdrLen + inetDiagReqV2Len
)

var (
	errShortDiag = errors.New("short inet_diag message")
	// errNoAnswer: the bytes held no message with the wanted sequence number.
	errNoAnswer = errors.New("no inet_diag answer for this request")
)

// diagSock is what inet_diag says about one socket.
type diagSock struct {
	uid   int
	inode uint64
}

// encodeDiagRequest builds an exact-match SOCK_DIAG_BY_FAMILY request for the
// TCP socket with the given local (src) and remote (dst) address. Both must
// be of the same family (IPv4 addresses unmapped).
//
// struct inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states;
// struct inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4];
// u32 if; u32 cookie[2]; } id; }
func encodeDiagRequest(seq uint32, local, remote netip.AddrPort) []byte {
	b := make([]byte, diagRequestLength)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], diagRequestLength)
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], 0) // pid: the kernel fills ours in
	r := b[nlmsgHdrLen:]
	if local.Addr().Is4() {
		r[0] = afInet
	} else {
		r[0] = afInet6
	}
	r[1] = ipprotoTCP
	ne.PutUint32(r[4:], 0xFFFFFFFF) // all states
	binary.BigEndian.PutUint16(r[8:], local.Port())
	binary.BigEndian.PutUint16(r[10:], remote.Port())
	putDiagAddr(r[12:28], local.Addr())
	putDiagAddr(r[28:44], remote.Addr())
	ne.PutUint32(r[44:], 0) // any interface
	ne.PutUint32(r[48:], inetDiagNoCookie)
	ne.PutUint32(r[52:], inetDiagNoCookie)
	return b
}

// putDiagAddr writes an IPv4 address into the first 4 bytes, IPv6 into all 16.
func putDiagAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
		return
	}
	v := a.As16()
	copy(dst, v[:])
}

// parseDiagResponse reads the reply to one exact request. It returns
// found=false for ENOENT (no such socket), an error for other failures.
// A reply may hold several netlink messages; the first inet_diag_msg whose
// sequence number is seq wins.
func parseDiagResponse(b []byte, seq uint32) (diagSock, bool, error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		mseq := ne.Uint32(b[8:])
		if l < nlmsgHdrLen || l > len(b) {
			return diagSock{}, false, fmt.Errorf("netlink message length %d of %d bytes: %w", l, len(b), errShortDiag)
		}
		body := b[nlmsgHdrLen:l]
		next := (l + 3) &^ 3
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
		if mseq != seq {
			continue // a late answer to an earlier request
		}
		switch typ {
		case nlmsgError:
			if len(body) < 4 {
				return diagSock{}, false, fmt.Errorf("netlink error message: %w", errShortDiag)
			}
			errno := -int32(ne.Uint32(body))
			if errno == 0 {
				continue // an ACK
			}
			if syscall.Errno(errno) == syscall.ENOENT {
				return diagSock{}, false, nil
			}
			return diagSock{}, false, fmt.Errorf("inet_diag request failed: %w", syscall.Errno(errno))
		case nlmsgDone:
			return diagSock{}, false, nil
		case sockDiagByFamily:
			if len(body) < inetDiagMsgLen {
				return diagSock{}, false, fmt.Errorf("inet_diag_msg of %d bytes: %w", len(body), errShortDiag)
			}
			// struct inet_diag_msg { u8 family, state, timer, retrans;
			// sockid id (48 bytes); u32 expires, rqueue, wqueue, uid, inode; }
			return diagSock{uid: int(ne.Uint32(body[64:])), inode: uint64(ne.Uint32(body[68:]))}, true, nil
		}
	}
	return diagSock{}, false, fmt.Errorf("sequence %d: %w", seq, errNoAnswer)
}
