package bpfacct

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// Netlink numbers (linux/netlink.h, linux/rtnetlink.h). The message builder
// and the ack parser are pure so they are tested on every OS.
const (
	nlmsgHdrLen    = 16
	ifinfomsgLen   = 16
	rtmNewLink     = 16
	nlmsgError     = 2
	nlmFRequest    = 0x1
	nlmFAck        = 0x4
	setLinkMsgSize = nlmsgHdrLen + ifinfomsgLen
)

// setLinkUpMsg builds an RTM_NEWLINK request that sets (up) or clears IFF_UP
// on interface index, asking for an ack:
//
//	struct nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
//	struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; }
//
// ifi_change = IFF_UP limits the change to that one flag.
func setLinkUpMsg(index int32, up bool, seq uint32) []byte {
	b := make([]byte, setLinkMsgSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], setLinkMsgSize)
	ne.PutUint16(b[4:], rtmNewLink)
	ne.PutUint16(b[6:], nlmFRequest|nlmFAck)
	ne.PutUint32(b[8:], seq)
	// pid 0: the kernel fills in the port id.
	b[16] = 0 // AF_UNSPEC
	ne.PutUint32(b[20:], uint32(index))
	if up {
		ne.PutUint32(b[24:], iffUp)
	}
	ne.PutUint32(b[28:], iffUp)
	return b
}

// parseNetlinkAck finds the NLMSG_ERROR answer to seq in b and returns its
// errno (nil for an ack). ok is false when b holds no answer to seq.
func parseNetlinkAck(b []byte, seq uint32) (ok bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			return false, fmt.Errorf("bpfacct: malformed netlink answer (length %d of %d bytes)", l, len(b))
		}
		m := b[:l]
		b = b[(l+3)&^3:]
		if ne.Uint32(m[8:12]) != seq || ne.Uint16(m[4:6]) != nlmsgError {
			continue
		}
		if l < nlmsgHdrLen+4 {
			return true, fmt.Errorf("bpfacct: short netlink error message (%d bytes)", l)
		}
		if e := int32(ne.Uint32(m[16:20])); e != 0 {
			return true, syscall.Errno(-e)
		}
		return true, nil
	}
	return false, nil
}
