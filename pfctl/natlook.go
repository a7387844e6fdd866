package pfctl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// natlookLayout is where struct pfioc_natlook keeps each field on one OS.
// Building and parsing the struct with explicit offsets (instead of a Go struct
// passed through unsafe) keeps the layout in one table that the golden tests
// pin, and lets those tests run on Linux.
//
// Darwin, xnu bsd/net/pfvar.h (apple-oss-distributions/xnu, checked at
// e3723e1f17661b24996789d8afc084c0c3303b26):
//
//	struct pfioc_natlook {
//		struct pf_addr saddr, daddr, rsaddr, rdaddr;           // 4 x 16 bytes: 0, 16, 32, 48
//		union pf_state_xport sxport, dxport, rsxport, rdxport; // 4 x 4 bytes: 64, 68, 72, 76
//		sa_family_t af;                                        // 80 (u_int8_t on Darwin)
//		u_int8_t proto, proto_variant, direction;              // 81, 82, 83
//	};                                                         // 84 bytes
//	union pf_state_xport { u_int16_t port; u_int16_t call_id; u_int32_t spi; };
//	#define DIOCNATLOOK _IOWR('D', 23, struct pfioc_natlook)   // 0xC0544417
//
// FreeBSD, sys/net/pfvar.h (freebsd/freebsd-src):
//
//	struct pfioc_natlook {
//		struct pf_addr saddr, daddr, rsaddr, rdaddr;  // 0, 16, 32, 48
//		u_int16_t sport, dport, rsport, rdport;       // 64, 66, 68, 70
//		sa_family_t af;                               // 72 (u_int8_t on FreeBSD)
//		u_int8_t proto, direction;                    // 73, 74; 1 byte of tail padding
//	};                                                // 76 bytes (pf_addr aligns to 4)
//	#define DIOCNATLOOK _IOWR('D', 23, struct pfioc_natlook) // 0xC04C4417
//
// Addresses and ports are in network byte order; an IPv4 address fills the
// first 4 bytes of its 16-byte pf_addr. enum { PF_INOUT, PF_IN, PF_OUT } makes
// PF_OUT 2 on both systems.
type natlookLayout struct {
	name      string
	size      int
	ports     [4]int // sport, dport, rsport, rdport offsets
	af        int
	proto     int
	direction int
	afInet6   byte // AF_INET6: 30 on Darwin, 28 on FreeBSD
}

const (
	natlookAddrSaddr  = 0
	natlookAddrDaddr  = 16
	natlookAddrRsaddr = 32
	natlookAddrRdaddr = 48

	afInet     = 2 // AF_INET on both
	ipprotoTCP = 6
	pfOut      = 2
)

func darwinLayout() natlookLayout {
	return natlookLayout{name: "darwin", size: 84, ports: [4]int{64, 68, 72, 76}, af: 80, proto: 81, direction: 83, afInet6: 30}
}

func freebsdLayout() natlookLayout {
	return natlookLayout{name: "freebsd", size: 76, ports: [4]int{64, 66, 68, 70}, af: 72, proto: 73, direction: 74, afInet6: 28}
}

func layoutFor(goos string) (natlookLayout, error) {
	switch goos {
	case "darwin":
		return darwinLayout(), nil
	case "freebsd":
		return freebsdLayout(), nil
	}
	return natlookLayout{}, fmt.Errorf("pf DIOCNATLOOK on %q: %w", goos, ErrUnsupported)
}

// ioctlRequest is _IOWR('D', 23, struct pfioc_natlook) as sys/ioccom.h builds it
// on both systems: IOC_INOUT | (size & IOCPARM_MASK) << 16 | group << 8 | num.
func (l natlookLayout) ioctlRequest() uint {
	const iocInout = 0xC0000000
	const iocparmMask = 0x1fff
	return iocInout | uint(l.size&iocparmMask)<<16 | uint('D')<<8 | 23
}

// ErrNotRedirected is returned when pf has no redirect state for a connection
// (DIOCNATLOOK answered ENOENT, or the reply held no address): the connection
// reached the listener directly, not through the rdr rule.
var ErrNotRedirected = errors.New("pf has no redirect state for this connection")

// buildNatlook returns the DIOCNATLOOK request that asks which destination the
// connection client -> proxy was redirected from: direction PF_OUT, saddr the
// client, daddr the proxy's listen address, proto TCP.
func (l natlookLayout) buildNatlook(client, proxy netip.AddrPort) ([]byte, error) {
	c, p := client.Addr().Unmap(), proxy.Addr().Unmap()
	if !c.IsValid() || !p.IsValid() {
		return nil, fmt.Errorf("natlook %v -> %v: both addresses must be valid", client, proxy)
	}
	if c.Is4() != p.Is4() {
		return nil, fmt.Errorf("natlook %v -> %v: address families differ", client, proxy)
	}
	if client.Port() == 0 || proxy.Port() == 0 {
		return nil, fmt.Errorf("natlook %v -> %v: ports must be non-zero (the kernel answers EINVAL)", client, proxy)
	}
	b := make([]byte, l.size)
	putAddr(b[natlookAddrSaddr:], c)
	putAddr(b[natlookAddrDaddr:], p)
	binary.BigEndian.PutUint16(b[l.ports[0]:], client.Port())
	binary.BigEndian.PutUint16(b[l.ports[1]:], proxy.Port())
	if c.Is4() {
		b[l.af] = afInet
	} else {
		b[l.af] = l.afInet6
	}
	b[l.proto] = ipprotoTCP
	b[l.direction] = pfOut
	return b, nil
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst[:4], v[:])
		return
	}
	v := a.As16()
	copy(dst[:16], v[:])
}

// parseNatlook reads the original destination (rdaddr, rdport) from a
// DIOCNATLOOK reply. The reply is untrusted kernel memory as far as this code
// is concerned: every field is checked.
func (l natlookLayout) parseNatlook(b []byte) (netip.AddrPort, error) {
	if len(b) != l.size {
		return netip.AddrPort{}, fmt.Errorf("natlook reply is %d bytes, want %d for %s", len(b), l.size, l.name)
	}
	var a netip.Addr
	switch b[l.af] {
	case afInet:
		a = netip.AddrFrom4([4]byte(b[natlookAddrRdaddr : natlookAddrRdaddr+4]))
	case l.afInet6:
		a = netip.AddrFrom16([16]byte(b[natlookAddrRdaddr : natlookAddrRdaddr+16]))
	default:
		return netip.AddrPort{}, fmt.Errorf("natlook reply has address family %d, want %d or %d", b[l.af], afInet, l.afInet6)
	}
	port := binary.BigEndian.Uint16(b[l.ports[3]:])
	if a.IsUnspecified() || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("natlook reply %v:%d: %w", a, port, ErrNotRedirected)
	}
	return netip.AddrPortFrom(a, port), nil
}
