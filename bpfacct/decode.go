package bpfacct

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// LinkType says which header precedes the network header in captured frames.
type LinkType uint8

const (
	// LinkEthernet frames start with a 14-byte Ethernet II header, possibly
	// followed by 802.1Q / 802.1ad tags.
	LinkEthernet LinkType = iota
	// LinkRawIP frames start with the IP header (Linux tun, wireguard, ppp).
	LinkRawIP
	// LinkNull frames start with a 4-byte address family in host byte order
	// (BSD DLT_NULL: lo0, utun, tun, gif).
	LinkNull
)

func (l LinkType) String() string {
	switch l {
	case LinkEthernet:
		return "ethernet"
	case LinkRawIP:
		return "raw-ip"
	case LinkNull:
		return "null"
	}
	return "unknown"
}

// linkHeaderLen is the length of the fixed link header of l (VLAN tags aside).
func (l LinkType) headerLen() int {
	switch l {
	case LinkEthernet:
		return 14
	case LinkNull:
		return 4
	}
	return 0
}

// Proto is the transport protocol class a packet is counted under.
type Proto uint8

const (
	ProtoOther Proto = iota // anything not below, and non-IP frames (ARP, LLDP...)
	ProtoTCP
	ProtoUDP
	ProtoICMP // ICMP and ICMPv6
	numProtos
)

var protoNames = [numProtos]string{"other", "tcp", "udp", "icmp"}

func (p Proto) String() string {
	if p < numProtos {
		return protoNames[p]
	}
	return "invalid"
}

// MarshalText makes Proto a readable JSON string and map key.
func (p Proto) MarshalText() ([]byte, error) {
	if p >= numProtos {
		return nil, errInvalidProto
	}
	return []byte(protoNames[p]), nil
}

// UnmarshalText parses the names MarshalText writes.
func (p *Proto) UnmarshalText(b []byte) error {
	for i, n := range protoNames {
		if n == string(b) {
			*p = Proto(i)
			return nil
		}
	}
	return errInvalidProto
}

var errInvalidProto = errors.New("bpfacct: invalid protocol name (want tcp, udp, icmp or other)")

// Errors decode returns. The packet is still counted (bytes and packets under
// ProtoOther or what was learnt before the error); they only tell why no
// addresses or ports were learnt.
var (
	errTruncated = errors.New("bpfacct: frame truncated before the end of a header")
	errMalformed = errors.New("bpfacct: malformed header")
)

// Ethernet and IP numbers used by the decoder and the BPF filter.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	ipProtoICMP    = 1
	ipProtoTCP     = 6
	ipProtoUDP     = 17
	ipProtoICMPv6  = 58
	ipProtoHopOpts = 0
	ipProtoRouting = 43
	ipProtoFrag    = 44
	ipProtoAH      = 51
	ipProtoDstOpts = 60
	dnsPort        = 53
)

// packetInfo is what decode learns from one frame's headers.
type packetInfo struct {
	// EthSrc is the Ethernet source address (LinkEthernet only, HasEth set).
	EthSrc [6]byte
	HasEth bool
	// Src and Dst are the IP addresses; invalid for non-IP frames.
	Src, Dst netip.Addr
	Proto    Proto
	// HasPorts is set when SrcPort and DstPort were read (TCP or UDP, first
	// fragment, header captured).
	HasPorts         bool
	SrcPort, DstPort uint16
	// Payload is the captured part of the TCP or UDP payload, bounded by the
	// lengths the headers declare. Complete is set when nothing of it was cut
	// by the snap length.
	Payload  []byte
	Complete bool
	TCP      bool
}

// decode reads the link, network and transport headers of one captured
// frame. It never panics and never keeps data. On error, the fields learnt so
// far stay set (for example addresses but no ports).
func decode(data []byte, link LinkType, p *packetInfo) error {
	*p = packetInfo{}
	off := 0
	var version int
	switch link {
	case LinkEthernet:
		if len(data) < 14 {
			return errTruncated
		}
		copy(p.EthSrc[:], data[6:12])
		p.HasEth = true
		et := binary.BigEndian.Uint16(data[12:14])
		off = 14
		for i := 0; i < 2 && (et == etherTypeVLAN || et == etherTypeQinQ); i++ {
			if len(data) < off+4 {
				return errTruncated
			}
			et = binary.BigEndian.Uint16(data[off+2 : off+4])
			off += 4
		}
		switch et {
		case etherTypeIPv4:
			version = 4
		case etherTypeIPv6:
			version = 6
		default:
			return nil // not IP: counted as other, no addresses
		}
	case LinkNull:
		if len(data) < 4 {
			return errTruncated
		}
		// The family is in the sender's byte order; AF_INET is 2 everywhere,
		// AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD) or 30 (darwin).
		fam := binary.LittleEndian.Uint32(data[:4])
		if fam > 0xffff {
			fam = binary.BigEndian.Uint32(data[:4])
		}
		switch fam {
		case 2:
			version = 4
		case 24, 28, 30:
			version = 6
		default:
			return nil
		}
		off = 4
	case LinkRawIP:
		if len(data) < 1 {
			return errTruncated
		}
		version = int(data[0] >> 4)
	default:
		return errMalformed
	}
	ip := data[off:]
	switch version {
	case 4:
		return decodeIPv4(ip, p)
	case 6:
		return decodeIPv6(ip, p)
	}
	return nil // raw link with neither IPv4 nor IPv6: other
}

func decodeIPv4(b []byte, p *packetInfo) error {
	if len(b) < 20 {
		return errTruncated
	}
	if b[0]>>4 != 4 {
		return errMalformed
	}
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto = protoClass(b[9])
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return errMalformed
	}
	// Total length 0 happens for GSO/BIG TCP packets larger than 64 KiB: the
	// packet then ends where the frame does.
	end := int(binary.BigEndian.Uint16(b[2:4]))
	if end == 0 {
		end = -1
	} else if end < ihl {
		return errMalformed
	}
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		return nil // later fragment: no transport header
	}
	if len(b) < ihl {
		return errTruncated
	}
	return decodeTransport(b, ihl, end, b[9], p)
}

func decodeIPv6(b []byte, p *packetInfo) error {
	if len(b) < 40 {
		return errTruncated
	}
	if b[0]>>4 != 6 {
		return errMalformed
	}
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	end := int(binary.BigEndian.Uint16(b[4:6]))
	if end == 0 {
		end = -1 // jumbogram or BIG TCP: to the end of the frame
	} else {
		end += 40
	}
	next := b[6]
	off := 40
	for range 8 { // bounded walk over extension headers
		switch next {
		case ipProtoHopOpts, ipProtoRouting, ipProtoDstOpts:
			if len(b) < off+2 {
				p.Proto = ProtoOther
				return errTruncated
			}
			next, off = b[off], off+(int(b[off+1])+1)*8
			continue
		case ipProtoAH:
			if len(b) < off+2 {
				return errTruncated
			}
			next, off = b[off], off+(int(b[off+1])+2)*4
			continue
		case ipProtoFrag:
			if len(b) < off+8 {
				return errTruncated
			}
			fragOff := binary.BigEndian.Uint16(b[off+2:off+4]) &^ 7
			next, off = b[off], off+8
			if fragOff != 0 {
				p.Proto = protoClass(next)
				return nil
			}
			continue
		}
		break
	}
	p.Proto = protoClass(next)
	if end >= 0 && off > end {
		return errMalformed
	}
	if len(b) < off {
		return errTruncated
	}
	return decodeTransport(b, off, end, next, p)
}

// decodeTransport reads TCP or UDP ports and payload bounds. b is the whole IP
// packet as captured, l4 the transport header's offset, end the IP packet's
// declared end (-1: the frame's end).
func decodeTransport(b []byte, l4, end int, proto uint8, p *packetInfo) error {
	if proto != ipProtoTCP && proto != ipProtoUDP {
		return nil
	}
	h := b[l4:]
	if len(h) < 4 {
		return errTruncated
	}
	p.SrcPort = binary.BigEndian.Uint16(h[0:2])
	p.DstPort = binary.BigEndian.Uint16(h[2:4])
	p.HasPorts = true
	var hl int
	if proto == ipProtoTCP {
		p.TCP = true
		if len(h) < 13 {
			return errTruncated
		}
		hl = int(h[12]>>4) * 4
		if hl < 20 {
			return errMalformed
		}
	} else {
		hl = 8
		if len(h) < 6 {
			return errTruncated
		}
		ul := int(binary.BigEndian.Uint16(h[4:6]))
		if ul != 0 { // 0: jumbogram, keep the IP bound
			if ul < 8 {
				return errMalformed
			}
			if e := l4 + ul; end < 0 || e < end {
				end = e
			}
		}
	}
	start := l4 + hl
	if end < 0 {
		end = len(b)
		p.Complete = true // unknown length: assume the frame is whole
	} else {
		p.Complete = end <= len(b)
	}
	if end < start {
		return errMalformed
	}
	if end > len(b) {
		end = len(b)
	}
	if start > end {
		return errTruncated
	}
	p.Payload = b[start:end:end]
	return nil
}

func protoClass(n uint8) Proto {
	switch n {
	case ipProtoTCP:
		return ProtoTCP
	case ipProtoUDP:
		return ProtoUDP
	case ipProtoICMP, ipProtoICMPv6:
		return ProtoICMP
	}
	return ProtoOther
}
