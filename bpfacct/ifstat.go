package bpfacct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// IfaceStat is one interface's kernel counters.
type IfaceStat struct {
	Name       string `json:"name"`
	Index      int    `json:"index,omitempty"`
	Up         bool   `json:"up"` // administratively up (IFF_UP)
	RxBytes    uint64 `json:"rx_bytes"`
	TxBytes    uint64 `json:"tx_bytes"`
	RxPackets  uint64 `json:"rx_packets"`
	TxPackets  uint64 `json:"tx_packets"`
	RxDropped  uint64 `json:"rx_dropped"`
	TxDropped  uint64 `json:"tx_dropped"`
	RxErrors   uint64 `json:"rx_errors"`
	TxErrors   uint64 `json:"tx_errors"`
	Multicasts uint64 `json:"multicast,omitempty"`
}

// errBadIfList: the routing sysctl answer could not be parsed.
var errBadIfList = errors.New("bpfacct: malformed interface list from the routing sysctl")

// iffUp is IFF_UP, the same bit on Linux, darwin and freebsd.
const iffUp = 0x1

// readSysClassNet reads Linux's /sys/class/net layout from fsys (rooted at
// /sys/class/net): DIR/flags (hex), DIR/ifindex and DIR/statistics/*.
// Interfaces that vanish while being read are skipped.
func readSysClassNet(fsys fs.FS) ([]IfaceStat, error) {
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("bpfacct: list interfaces in /sys/class/net: %w", err)
	}
	var out []IfaceStat
	for _, e := range ents {
		name := e.Name()
		st := IfaceStat{Name: name}
		flags, err := readSysUint(fsys, name+"/flags")
		if err != nil {
			continue // vanished meanwhile, or not an interface (bonding_masters)
		}
		st.Up = flags&iffUp != 0
		if idx, err := readSysUint(fsys, name+"/ifindex"); err == nil {
			st.Index = int(idx)
		}
		for _, f := range []struct {
			file string
			dst  *uint64
		}{
			{"rx_bytes", &st.RxBytes}, {"tx_bytes", &st.TxBytes},
			{"rx_packets", &st.RxPackets}, {"tx_packets", &st.TxPackets},
			{"rx_dropped", &st.RxDropped}, {"tx_dropped", &st.TxDropped},
			{"rx_errors", &st.RxErrors}, {"tx_errors", &st.TxErrors},
			{"multicast", &st.Multicasts},
		} {
			v, err := readSysUint(fsys, name+"/statistics/"+f.file)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			*f.dst = v
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b IfaceStat) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// readSysUint reads one sysfs number, decimal or 0x-prefixed hex.
func readSysUint(fsys fs.FS, name string) (uint64, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("bpfacct: parse /sys/class/net/%s %q: %w", name, s, err)
	}
	return v, nil
}

// ifListLayout describes where the routing sysctl's interface messages keep
// their fields.
type ifListLayout struct {
	msgType uint8 // RTM_IFINFO2 (darwin) or RTM_IFINFO (freebsd)
	dataOff int   // offset of the if_data(64) struct in the message
	hdrLen  int   // length of the message header up to the end of if_data
}

// Layouts of the interface messages. Offsets from the system headers:
//
// darwin, <net/if.h> and <net/if_var.h> (xnu), sysctl NET_RT_IFLIST2:
//
//	struct if_msghdr2 {                 // #pragma pack(4)
//	  u_short ifm_msglen;               //  0
//	  u_char  ifm_version, ifm_type;    //  2, 3 (RTM_IFINFO2 = 0x12)
//	  int     ifm_addrs;                //  4
//	  int     ifm_flags;                //  8 (IFF_UP = 0x1)
//	  u_short ifm_index;                // 12
//	  int     ifm_snd_len, ifm_snd_maxlen, ifm_snd_drops, ifm_timer; // 16..31
//	  struct if_data64 ifm_data;        // 32, 128 bytes
//	};                                  // 160 = unix.SizeofIfMsghdr2
//
// freebsd (11 and later), <net/if.h>, sysctl NET_RT_IFLIST:
//
//	struct if_msghdr {
//	  u_short ifm_msglen;               //  0
//	  u_char  ifm_version, ifm_type;    //  2, 3 (RTM_IFINFO = 0xe)
//	  int     ifm_addrs;                //  4
//	  int     ifm_flags;                //  8
//	  u_short ifm_index;                // 12
//	  u_short _ifm_spare1;              // 14
//	  struct if_data ifm_data;          // 16, 152 bytes
//	};
//
// In both if_data64 (darwin) and if_data (freebsd 11+) the counters are
// 64-bit at the same offsets: ifi_ipackets 24, ifi_ierrors 32, ifi_opackets
// 40, ifi_oerrors 48, ifi_collisions 56, ifi_ibytes 64, ifi_obytes 72,
// ifi_imcasts 80, ifi_omcasts 88, ifi_iqdrops 96. Each interface message is
// followed by its sockaddr_dl (sdl_len 0, sdl_family 1, sdl_index 2,
// sdl_type 4, sdl_nlen 5, sdl_alen 6, sdl_slen 7, sdl_data 8: name first)
// when ifm_addrs has RTA_IFP (0x10). Address messages (RTM_NEWADDR,
// RTM_NEWMADDR2) in the same list are skipped by their length.
func darwinIfList() ifListLayout  { return ifListLayout{msgType: 0x12, dataOff: 32, hdrLen: 32 + 128} }
func freebsdIfList() ifListLayout { return ifListLayout{msgType: 0x0e, dataOff: 16, hdrLen: 16 + 152} }

const rtaIFP = 0x10

// parseIfList parses the answer of the routing sysctl listing interfaces.
func parseIfList(b []byte, l ifListLayout) ([]IfaceStat, error) {
	var out []IfaceStat
	le := binary.LittleEndian // both supported targets are little-endian (amd64, arm64)
	for len(b) > 0 {
		if len(b) < 4 {
			return out, fmt.Errorf("%w: %d trailing bytes", errBadIfList, len(b))
		}
		mlen := int(le.Uint16(b[0:2]))
		if mlen < 4 || mlen > len(b) {
			return out, fmt.Errorf("%w: message length %d with %d bytes left", errBadIfList, mlen, len(b))
		}
		m := b[:mlen]
		b = b[mlen:]
		if m[3] != l.msgType {
			continue
		}
		if mlen < l.hdrLen {
			return out, fmt.Errorf("%w: interface message of %d bytes, want at least %d", errBadIfList, mlen, l.hdrLen)
		}
		d := m[l.dataOff:]
		st := IfaceStat{
			Index:      int(le.Uint16(m[12:14])),
			Up:         le.Uint32(m[8:12])&iffUp != 0,
			RxPackets:  le.Uint64(d[24:]),
			RxErrors:   le.Uint64(d[32:]),
			TxPackets:  le.Uint64(d[40:]),
			TxErrors:   le.Uint64(d[48:]),
			RxBytes:    le.Uint64(d[64:]),
			TxBytes:    le.Uint64(d[72:]),
			Multicasts: le.Uint64(d[80:]),
			RxDropped:  le.Uint64(d[96:]),
		}
		if le.Uint32(m[4:8])&rtaIFP != 0 && mlen >= l.hdrLen+8 {
			sdl := m[l.hdrLen:]
			sl, nlen := int(sdl[0]), int(sdl[5])
			if sl > len(sdl) || 8+nlen > sl || sdl[1] != 18 /* AF_LINK */ {
				return out, fmt.Errorf("%w: bad link address after interface %d", errBadIfList, st.Index)
			}
			st.Name = string(sdl[8 : 8+nlen])
		}
		if st.Name == "" {
			st.Name = "if" + strconv.Itoa(st.Index)
		}
		out = append(out, st)
	}
	return out, nil
}
