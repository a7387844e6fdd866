package bpfacct

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
)

// Traffic is a pair of byte and packet counters per direction. In is what
// arrived on the interface, Out what left by it. Bytes are lengths on the
// wire as the kernel saw them (link header included, FCS excluded), the same
// unit as the kernel's interface counters.
type Traffic struct {
	BytesIn    int64 `json:"bytes_in"`
	BytesOut   int64 `json:"bytes_out"`
	PacketsIn  int64 `json:"packets_in"`
	PacketsOut int64 `json:"packets_out"`
}

func (t *Traffic) add(o Traffic) {
	t.BytesIn += o.BytesIn
	t.BytesOut += o.BytesOut
	t.PacketsIn += o.PacketsIn
	t.PacketsOut += o.PacketsOut
}

func (t *Traffic) count(out bool, n int64) {
	if out {
		t.BytesOut += n
		t.PacketsOut++
	} else {
		t.BytesIn += n
		t.PacketsIn++
	}
}

// Bytes is the total of both directions.
func (t Traffic) Bytes() int64 { return t.BytesIn + t.BytesOut }

type remoteKey struct {
	addr  netip.Addr
	proto Proto
}

// counters is what one interface has counted. The capture goroutine writes
// it under mu; Snapshot reads it under mu.
type counters struct {
	mu         sync.Mutex
	byProto    [numProtos]Traffic
	remotes    map[remoteKey]*Traffic
	other      [numProtos]Traffic // remotes folded out of the table
	maxRemotes int
	drops      uint64 // cumulative capture drops, all captures of this iface
	dropsBase  uint64 // drops of captures that ended
	dnsCut     uint64 // DNS answers not handed over because the snap length cut them
	undecoded  uint64 // frames whose headers could not be read in full
}

func newCounters(maxRemotes int) *counters {
	return &counters{maxRemotes: maxRemotes, remotes: make(map[remoteKey]*Traffic)}
}

// observation is one decoded packet, ready to be counted.
type observation struct {
	out    bool
	proto  Proto
	remote netip.Addr // invalid: not IP
	n      int64      // length on the wire
}

// classify turns a decoded frame into an observation. mac is the interface's
// hardware address (Ethernet links) and addrs its IP addresses (other links).
func classify(p *packetInfo, wireLen int, mac []byte, addrs []netip.Addr) observation {
	o := observation{proto: p.Proto, n: int64(wireLen)}
	switch {
	case p.HasEth && len(mac) == 6:
		o.out = [6]byte(mac) == p.EthSrc
	case p.Src.IsValid():
		for _, a := range addrs {
			if a == p.Src {
				o.out = true
				break
			}
		}
	}
	if p.Src.IsValid() {
		if o.out {
			o.remote = p.Dst
		} else {
			o.remote = p.Src
		}
	}
	return o
}

// record counts one observation.
func (c *counters) record(o observation) {
	c.mu.Lock()
	c.byProto[o.proto].count(o.out, o.n)
	if o.remote.IsValid() {
		k := remoteKey{o.remote, o.proto}
		t := c.remotes[k]
		if t == nil {
			if len(c.remotes) >= c.maxRemotes {
				c.other[o.proto].count(o.out, o.n)
				c.mu.Unlock()
				return
			}
			t = new(Traffic)
			c.remotes[k] = t
		}
		t.count(o.out, o.n)
	}
	c.mu.Unlock()
}

// makeRoom folds the smaller half of a full remote table into the "other"
// rows so new remotes get entries again. Called from the capture goroutine
// at each stats tick, not per packet.
func (c *counters) makeRoom() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.remotes) < c.maxRemotes {
		return
	}
	type kv struct {
		k remoteKey
		t *Traffic
	}
	all := make([]kv, 0, len(c.remotes))
	for k, t := range c.remotes {
		all = append(all, kv{k, t})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(a.t.Bytes(), b.t.Bytes()) })
	for _, e := range all[:len(all)/2+1] {
		c.other[e.k.proto].add(*e.t)
		delete(c.remotes, e.k)
	}
}

// totals is the sum over protocols.
func (c *counters) totalsLocked() Traffic {
	var t Traffic
	for _, p := range c.byProto {
		t.add(p)
	}
	return t
}
