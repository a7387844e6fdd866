package bpfacct

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// dnsSnaplen is the snap length the filter gives DNS answers: the largest
// UDP payload plus headers, so EDNS answers and TCP segments arrive whole.
const dnsSnaplen = 65535

// snapFilter builds the classic BPF program attached to the capture socket.
// It accepts every packet (all of them are counted) and only chooses how
// much of it is copied to the ring: dnsSnap bytes for IPv4/IPv6 UDP or TCP
// packets from source port 53 (IPv4 first fragments only; IPv6 only when the
// transport header follows the fixed header directly), snap bytes for
// everything else. AF_PACKET and BSD bpf both use the program's return value
// as the capture length, so one socket serves both needs.
//
// Frames with an 802.1Q tag still in the data (no VLAN offload) get snap bytes.
func snapFilter(link LinkType, snap, dnsSnap int) ([]bpf.Instruction, error) {
	l := uint32(link.headerLen())
	var a asm
	if link == LinkEthernet {
		a.op(bpf.LoadAbsolute{Off: 12, Size: 2})
		a.jif(bpf.JumpEqual, etherTypeIPv4, "ipv4", "")
		a.jif(bpf.JumpEqual, etherTypeIPv6, "ipv6", "snap")
	} else { // raw IP and DLT_NULL: the version is the first nibble
		a.op(bpf.LoadAbsolute{Off: l, Size: 1})
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
		a.jif(bpf.JumpEqual, 4, "ipv4", "")
		a.jif(bpf.JumpEqual, 6, "ipv6", "snap")
	}
	a.label("ipv4")
	a.op(bpf.LoadAbsolute{Off: l + 9, Size: 1}) // protocol
	a.jif(bpf.JumpEqual, ipProtoTCP, "v4ports", "")
	a.jif(bpf.JumpEqual, ipProtoUDP, "", "snap")
	a.label("v4ports")
	a.op(bpf.LoadAbsolute{Off: l + 6, Size: 2}) // flags and fragment offset
	a.jif(bpf.JumpBitsSet, 0x1fff, "snap", "")
	a.op(bpf.LoadMemShift{Off: l})          // X = IHL*4
	a.op(bpf.LoadIndirect{Off: l, Size: 2}) // source port
	a.jif(bpf.JumpEqual, dnsPort, "dns", "snap")
	a.label("ipv6")
	a.op(bpf.LoadAbsolute{Off: l + 6, Size: 1}) // next header
	a.jif(bpf.JumpEqual, ipProtoTCP, "v6ports", "")
	a.jif(bpf.JumpEqual, ipProtoUDP, "", "snap")
	a.label("v6ports")
	a.op(bpf.LoadAbsolute{Off: l + 40, Size: 2}) // source port
	a.jif(bpf.JumpEqual, dnsPort, "dns", "snap")
	a.label("snap")
	a.op(bpf.RetConstant{Val: uint32(snap)})
	a.label("dns")
	a.op(bpf.RetConstant{Val: uint32(dnsSnap)})
	return a.program()
}

// asm is a tiny label assembler for forward-only classic BPF jumps.
type asm struct {
	ins    []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at          int
	true, false string // "" means the next instruction
}

func (a *asm) op(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) jif(cond bpf.JumpTest, val uint32, t, f string) {
	a.fixups = append(a.fixups, fixup{at: len(a.ins), true: t, false: f})
	a.ins = append(a.ins, bpf.JumpIf{Cond: cond, Val: val})
}

func (a *asm) program() ([]bpf.Instruction, error) {
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := a.labels[label]
		if !ok {
			return 0, fmt.Errorf("bpfacct: filter label %q undefined", label)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("bpfacct: filter jump to %q out of range (%d)", label, d)
		}
		return uint8(d), nil
	}
	for _, f := range a.fixups {
		j := a.ins[f.at].(bpf.JumpIf)
		var err error
		if j.SkipTrue, err = skip(f.at, f.true); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = skip(f.at, f.false); err != nil {
			return nil, err
		}
		a.ins[f.at] = j
	}
	return a.ins, nil
}
