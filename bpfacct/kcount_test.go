package bpfacct

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestDecodeRemoteKey(t *testing.T) {
	v6 := netip.MustParseAddr("fd00:5e7::2")
	key := func(addr []byte, fam, proto, gen byte) []byte {
		k := make([]byte, kcRemoteKeySize)
		copy(k, addr)
		k[kcKeyFamilyOff], k[kcKeyProtoOff], k[kcKeyGenOff] = fam, proto, gen
		return k
	}
	for _, tc := range []struct {
		name string
		k    []byte
		want remoteKey
		gen  uint8
		ok   bool
	}{
		{"ipv4", key([]byte{198, 18, 0, 2}, 4, byte(ProtoTCP), 1), remoteKey{netip.MustParseAddr("198.18.0.2"), ProtoTCP}, 1, true},
		{"ipv6", key(v6.AsSlice(), 6, byte(ProtoICMP), 0), remoteKey{v6, ProtoICMP}, 0, true},
		{"no family", key(nil, 0, 0, 0), remoteKey{}, 0, false},
		{"bad proto", key(nil, 4, byte(numProtos), 0), remoteKey{}, 0, false},
		{"short", make([]byte, 8), remoteKey{}, 0, false},
	} {
		got, gen, ok := decodeRemoteKey(tc.k)
		if got != tc.want || gen != tc.gen || ok != tc.ok {
			t.Errorf("%s: got %v gen %d ok %v, want %v %d %v", tc.name, got, gen, ok, tc.want, tc.gen, tc.ok)
		}
	}
}

// TestTotalsDelta sums two CPUs' raw values and takes the difference from
// an earlier reading, for the totals and the overflow slots.
func TestTotalsDelta(t *testing.T) {
	raw := func(slot int, bytes, pkts uint64) []byte {
		b := make([]byte, kcTotalsSize)
		binary.NativeEndian.PutUint64(b[slot*kcSlotSize:], bytes)
		binary.NativeEndian.PutUint64(b[slot*kcSlotSize+8:], pkts)
		return b
	}
	var prev, now kcTotals
	prev.addPerCPU(raw(int(ProtoUDP)*2+1, 100, 1))
	now.addPerCPU(raw(int(ProtoUDP)*2+1, 1100, 3))            // CPU 0: udp out
	now.addPerCPU(raw(int(ProtoTCP)*2, 60, 1))                // CPU 1: tcp in
	now.addPerCPU(raw(kcOverflowSlot+int(ProtoICMP)*2, 9, 1)) // CPU 2: icmp in, overflowed
	d := now.deltaTraffic(&prev, 0)
	if want := (Traffic{BytesOut: 1000, PacketsOut: 2}); d[ProtoUDP] != want {
		t.Errorf("udp %+v, want %+v", d[ProtoUDP], want)
	}
	if want := (Traffic{BytesIn: 60, PacketsIn: 1}); d[ProtoTCP] != want {
		t.Errorf("tcp %+v, want %+v", d[ProtoTCP], want)
	}
	if d[ProtoICMP] != (Traffic{}) || d[ProtoOther] != (Traffic{}) {
		t.Errorf("icmp %+v other %+v, want nothing", d[ProtoICMP], d[ProtoOther])
	}
	if o := now.deltaTraffic(&prev, kcOverflowSlot); o[ProtoICMP] != (Traffic{BytesIn: 9, PacketsIn: 1}) {
		t.Errorf("overflow icmp %+v", o[ProtoICMP])
	}
	c := newCounters(1)
	c.addRemotes(map[remoteKey]Traffic{
		{netip.MustParseAddr("198.18.0.2"), ProtoTCP}: {BytesOut: 10, PacketsOut: 1},
	})
	c.addRemotes(map[remoteKey]Traffic{
		{netip.MustParseAddr("198.18.0.3"), ProtoTCP}: {BytesOut: 5, PacketsOut: 1}, // table full: other
	})
	if len(c.remotes) != 1 || c.other[ProtoTCP] != (Traffic{BytesOut: 5, PacketsOut: 1}) {
		t.Errorf("remotes %v other %+v", c.remotes, c.other[ProtoTCP])
	}
}
