package bpfacct

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

func allPackets(t testing.TB) []testPacket {
	return append(etherPackets(t), rawPackets(t)...)
}

func ourAddrs() *atomic.Pointer[[]netip.Addr] {
	p := new(atomic.Pointer[[]netip.Addr])
	as := []netip.Addr{our4, our6}
	p.Store(&as)
	return p
}

func TestDecodeAndClassify(t *testing.T) {
	for _, tp := range allPackets(t) {
		t.Run(tp.name, func(t *testing.T) {
			var p packetInfo
			err := decode(tp.data, tp.link, &p)
			if (err != nil) != tp.badDeco {
				t.Fatalf("decode error = %v, want error: %v", err, tp.badDeco)
			}
			o := classify(&p, tp.wireLen(), ourMAC, []netip.Addr{our4, our6})
			if o.out != tp.out || o.proto != tp.proto || o.remote != tp.remote || o.n != int64(tp.wireLen()) {
				t.Errorf("got out=%v proto=%v remote=%v n=%d, want out=%v proto=%v remote=%v n=%d",
					o.out, o.proto, o.remote, o.n, tp.out, tp.proto, tp.remote, tp.wireLen())
			}
			gotDNS := p.HasPorts && p.SrcPort == dnsPort && p.Complete && len(p.Payload) > 0
			if gotDNS != tp.dns || (gotDNS && p.TCP != tp.dnsTCP) {
				t.Errorf("dns answer = %v (tcp %v), want %v (tcp %v)", gotDNS, p.TCP, tp.dns, tp.dnsTCP)
			}
		})
	}
}

// TestDNSPayloadExact checks that the payload handed over is exactly the DNS
// message (UDP) or the length-prefixed message (TCP), without padding.
func TestDNSPayloadExact(t *testing.T) {
	dns := dnsAnswer(t)
	for _, tp := range allPackets(t) {
		if !tp.dns {
			continue
		}
		var p packetInfo
		_ = decode(tp.data, tp.link, &p)
		want := dns
		if tp.dnsTCP {
			want = append([]byte{byte(len(dns) >> 8), byte(len(dns))}, dns...)
		}
		if !bytes.Equal(p.Payload, want) {
			t.Errorf("%s: payload %x, want %x", tp.name, p.Payload, want)
		}
	}
	// Ethernet pads short frames to 60 bytes: the padding is not payload.
	var p packetInfo
	frame := ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 53, DstPort: 1}, payload(2))
	frame = append(frame, make([]byte, 60-len(frame))...)
	if err := decode(frame, LinkEthernet, &p); err != nil || len(p.Payload) != 2 {
		t.Fatalf("padded frame: err %v payload %d bytes, want 2", err, len(p.Payload))
	}
}

// TestPcapReplay drives the recorded pcap files through countFrame, the
// function the live capture uses, and checks every counter.
func TestPcapReplay(t *testing.T) {
	for _, tc := range []struct {
		file string
		lt   layers.LinkType
		ps   []testPacket
	}{
		{"ether.pcap", layers.LinkTypeEthernet, etherPackets(t)},
		{"rawip.pcap", layers.LinkTypeRaw, rawPackets(t)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			if *update {
				writePcap(t, pcapPath(tc.file), tc.lt, tc.ps)
			}
			frames, wires, lt := readPcap(t, pcapPath(tc.file))
			if lt != tc.lt || len(frames) != len(tc.ps) {
				t.Fatalf("pcap has %d frames of link type %v, want %d of %v (rerun with -update?)", len(frames), lt, len(tc.ps), tc.lt)
			}
			link := LinkEthernet
			if lt == layers.LinkTypeRaw {
				link = LinkRawIP
			}
			c := newCounters(100)
			var got []string
			onDNS := func(b []byte, tcp bool) {
				if tcp {
					b = b[2:]
				}
				var d layers.DNS
				if err := d.DecodeFromBytes(b, nil); err != nil || len(d.Answers) != 1 || string(d.Answers[0].Name) != dnsQName {
					t.Errorf("OnDNS got an undecodable answer (%v)", err)
				}
				got = append(got, "dns")
			}
			var p packetInfo
			var want [numProtos]Traffic
			wantRemotes := map[remoteKey]Traffic{}
			wantDNS := 0
			for i, fr := range frames {
				countFrame(c, &p, fr, wires[i], link, ourMAC, ourAddrs(), onDNS)
				tp := tc.ps[i]
				want[tp.proto].count(tp.out, int64(tp.wireLen()))
				if tp.remote.IsValid() {
					r := wantRemotes[remoteKey{tp.remote, tp.proto}]
					r.count(tp.out, int64(tp.wireLen()))
					wantRemotes[remoteKey{tp.remote, tp.proto}] = r
				}
				if tp.dns {
					wantDNS++
				}
			}
			if c.byProto != want {
				t.Errorf("per-protocol counters\n got %+v\nwant %+v", c.byProto, want)
			}
			if len(c.remotes) != len(wantRemotes) {
				t.Errorf("%d remotes, want %d", len(c.remotes), len(wantRemotes))
			}
			for k, w := range wantRemotes {
				if g := c.remotes[k]; g == nil || *g != w {
					t.Errorf("remote %v/%v = %+v, want %+v", k.addr, k.proto, g, w)
				}
			}
			if len(got) != wantDNS {
				t.Errorf("OnDNS called %d times, want %d", len(got), wantDNS)
			}
		})
	}
}

// TestSnapFilter runs the kernel filter in x/net/bpf's VM over the recorded
// frames: DNS answers get the large snap length, everything else the small one.
func TestSnapFilter(t *testing.T) {
	for _, link := range []LinkType{LinkEthernet, LinkRawIP, LinkNull} {
		prog, err := snapFilter(link, 128, dnsSnaplen)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bpf.Assemble(prog); err != nil {
			t.Fatalf("%v: assemble: %v", link, err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%v: %v", link, err)
		}
		for _, tp := range allPackets(t) {
			data := tp.data
			switch {
			case link == LinkNull && tp.link == LinkRawIP:
				fam := []byte{2, 0, 0, 0}
				if data[0]>>4 == 6 {
					fam = []byte{30, 0, 0, 0}
				}
				data = append(fam, data...)
			case link != tp.link:
				continue
			}
			if len(data) < 60 && link == LinkEthernet { // the VM drops on out-of-range loads, like the kernel
				continue
			}
			got, err := vm.Run(data)
			if err != nil {
				t.Fatalf("%s: %v", tp.name, err)
			}
			// The filter recognises IPv6 DNS only without extension headers.
			wantDNS := tp.dns && tp.name != "ipv6 hop-by-hop udp dns answer in"
			if tp.name == "dns answer cut" || tp.name == "ipv4 udp dns query out (not an answer)" {
				wantDNS = tp.name == "dns answer cut"
			}
			want := 128
			if wantDNS {
				want = dnsSnaplen
			}
			if got != want && !(tp.badDeco && got == 0) {
				t.Errorf("%v %s: filter keeps %d bytes, want %d", link, tp.name, got, want)
			}
		}
	}
}

func BenchmarkCountFrame(b *testing.B) {
	ps := etherPackets(b)
	c := newCounters(DefaultMaxRemotes)
	addrs := ourAddrs()
	var p packetInfo
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		tp := &ps[i%len(ps)]
		countFrame(c, &p, tp.data, tp.wireLen(), LinkEthernet, ourMAC, addrs, nil)
	}
}

func FuzzDecode(f *testing.F) {
	for _, tp := range allPackets(f) {
		f.Add(tp.data, uint8(tp.link))
	}
	f.Fuzz(func(t *testing.T, data []byte, link uint8) {
		lt := LinkType(link % 3)
		var p packetInfo
		_ = decode(data, lt, &p)
		if p.Proto >= numProtos {
			t.Fatalf("proto %d out of range", p.Proto)
		}
		if len(p.Payload) > len(data) {
			t.Fatalf("payload longer than the frame")
		}
		if len(p.Payload) > 0 && !p.HasPorts {
			t.Fatalf("payload without ports")
		}
		if p.Src.IsValid() != p.Dst.IsValid() {
			t.Fatalf("one address without the other")
		}
		c := newCounters(4)
		countFrame(c, &p, data, len(data), lt, ourMAC, ourAddrs(), func([]byte, bool) {})
		tt := c.totalsLocked()
		if tt.Bytes() != int64(len(data)) || tt.PacketsIn+tt.PacketsOut != 1 {
			t.Fatalf("frame counted as %+v, want %d bytes in one packet", tt, len(data))
		}
		prog, err := snapFilter(lt, 128, dnsSnaplen)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := vm.Run(data); n != 0 && n != 128 && n != dnsSnaplen {
			t.Fatalf("filter returned %d", n)
		}
	})
}
