package bpfacct

import (
	"encoding/binary"
	"net/netip"
)

// Layout shared by the in-kernel counter (kcount_linux.go) and the code that
// folds its maps into counters. It builds everywhere so its tests run on any
// OS.
//
// The totals map is a one-entry per-CPU array whose value holds 16 slots of
// {bytes, packets} (two little-endian u64 each, in host order): slot
// proto*2+dir counts every packet, slot 8+proto*2+dir the packets of remotes
// that did not fit in the remote map. dir is 0 for in, 1 for out.
//
// The remote map is a hash from remoteKeyBPF to {bytes in, bytes out,
// packets in, packets out} (u64 each, updated with atomic adds).
const (
	kcSlots          = 2 * 2 * int(numProtos) // totals, then overflowed remotes
	kcSlotSize       = 16
	kcTotalsSize     = kcSlots * kcSlotSize
	kcOverflowSlot   = 2 * int(numProtos)
	kcRemoteKeySize  = 20 // addr[16], family (0 none, 4, 6), proto, generation, pad
	kcRemoteValSize  = 32
	kcKeyFamilyOff   = 16
	kcKeyProtoOff    = 17
	kcKeyGenOff      = 18
	kcDNSSnap        = dnsSnaplen // what the program returns for a DNS answer it passes up
	kcPacketOutgoing = 4          // PACKET_OUTGOING, __sk_buff.pkt_type of a sent frame
)

// kcTotals is the sum over CPUs of the totals map's value.
type kcTotals [kcSlots]struct{ bytes, packets uint64 }

// addPerCPU adds one CPU's raw totals value (kcTotalsSize bytes, host order).
func (t *kcTotals) addPerCPU(b []byte) {
	for i := range t {
		if len(b) < (i+1)*kcSlotSize {
			return
		}
		t[i].bytes += binary.NativeEndian.Uint64(b[i*kcSlotSize:])
		t[i].packets += binary.NativeEndian.Uint64(b[i*kcSlotSize+8:])
	}
}

// deltaTraffic returns, per protocol, what now holds beyond prev in the
// slots starting at base (0: totals, kcOverflowSlot: overflowed remotes).
func (t *kcTotals) deltaTraffic(prev *kcTotals, base int) [numProtos]Traffic {
	var d [numProtos]Traffic
	for p := range int(numProtos) {
		in, out := base+p*2, base+p*2+1
		d[p] = Traffic{
			BytesIn:    int64(t[in].bytes - prev[in].bytes),
			BytesOut:   int64(t[out].bytes - prev[out].bytes),
			PacketsIn:  int64(t[in].packets - prev[in].packets),
			PacketsOut: int64(t[out].packets - prev[out].packets),
		}
	}
	return d
}

// decodeRemoteKey reads the remote address, protocol and generation of a
// remote map key. ok is false for a key the program never writes.
func decodeRemoteKey(k []byte) (rk remoteKey, gen uint8, ok bool) {
	if len(k) != kcRemoteKeySize || k[kcKeyProtoOff] >= uint8(numProtos) {
		return remoteKey{}, 0, false
	}
	switch k[kcKeyFamilyOff] {
	case 4:
		rk.addr = netip.AddrFrom4([4]byte(k[:4]))
	case 6:
		rk.addr = netip.AddrFrom16([16]byte(k[:16]))
	default:
		return remoteKey{}, 0, false
	}
	rk.proto = Proto(k[kcKeyProtoOff])
	return rk, k[kcKeyGenOff], true
}

// decodeRemoteVal reads a remote map value.
func decodeRemoteVal(v []byte) Traffic {
	if len(v) < kcRemoteValSize {
		return Traffic{}
	}
	u := func(i int) int64 { return int64(binary.NativeEndian.Uint64(v[i*8:])) }
	return Traffic{BytesIn: u(0), BytesOut: u(1), PacketsIn: u(2), PacketsOut: u(3)}
}

// addTotals adds per-protocol deltas (the in-kernel totals) to c.
func (c *counters) addTotals(d [numProtos]Traffic, overflow [numProtos]Traffic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range d {
		c.byProto[p].add(d[p])
		c.other[p].add(overflow[p])
	}
}

// addRemotes adds per-remote traffic learnt from the kernel; remotes beyond
// the table's bound fold into the "other" rows as record does.
func (c *counters) addRemotes(rs map[remoteKey]Traffic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range rs {
		r := c.remotes[k]
		if r == nil {
			if len(c.remotes) >= c.maxRemotes {
				c.other[k.proto].add(t)
				continue
			}
			r = new(Traffic)
			c.remotes[k] = r
		}
		r.add(t)
	}
}
