package bpfacct

import (
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var update = flag.Bool("update", false, "rewrite the pcap files under testdata from the packet builders")

// Addresses of the recorded packets: us and two remotes in the test ranges.
var (
	ourMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	peerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	our4     = netip.MustParseAddr("198.18.0.1")
	peer4    = netip.MustParseAddr("198.18.0.2")
	our6     = netip.MustParseAddr("fd00:5e7::1")
	peer6    = netip.MustParseAddr("fd00:5e7::2")
	dnsQName = "example.test"
)

// testPacket is one recorded frame and what the counting must learn from it.
type testPacket struct {
	name    string
	data    []byte
	wire    int // length on the wire (0: len(data))
	link    LinkType
	out     bool
	proto   Proto
	remote  netip.Addr // invalid: not IP
	dns     bool       // handed to OnDNS
	dnsTCP  bool
	badDeco bool // decode reports an error
}

func (tp testPacket) wireLen() int {
	if tp.wire != 0 {
		return tp.wire
	}
	return len(tp.data)
}

func ser(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if n, ok := l.(gopacket.NetworkLayer); ok {
			for _, x := range ls {
				switch tl := x.(type) {
				case *layers.TCP:
					_ = tl.SetNetworkLayerForChecksum(n)
				case *layers.UDP:
					_ = tl.SetNetworkLayerForChecksum(n)
				case *layers.ICMPv6:
					_ = tl.SetNetworkLayerForChecksum(n)
				}
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst net.HardwareAddr, et layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: et}
}

func ip4(src, dst netip.Addr, p layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

func ip6(src, dst netip.Addr, p layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

func dnsAnswer(t testing.TB) []byte {
	t.Helper()
	d := &layers.DNS{
		ID: 7, QR: true, RD: true, RA: true,
		Questions: []layers.DNSQuestion{{Name: []byte(dnsQName), Type: layers.DNSTypeA, Class: layers.DNSClassIN}},
		Answers: []layers.DNSResourceRecord{{
			Name: []byte(dnsQName), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 60,
			IP: net.IP(peer4.AsSlice()),
		}},
	}
	return ser(t, d)
}

func payload(n int) gopacket.Payload {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// etherPackets are the frames of testdata/ether.pcap, captured on an
// Ethernet interface whose MAC is ourMAC.
func etherPackets(t testing.TB) []testPacket {
	dns := dnsAnswer(t)
	tcpDNS := append([]byte{byte(len(dns) >> 8), byte(len(dns))}, dns...)
	var ps []testPacket
	add := func(tp testPacket) { ps = append(ps, tp) }

	add(testPacket{name: "ipv4 tcp out", out: true, proto: ProtoTCP, remote: peer4,
		data: ser(t, eth(ourMAC, peerMAC, layers.EthernetTypeIPv4), ip4(our4, peer4, layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, PSH: true, Window: 500}, payload(1000))})
	add(testPacket{name: "ipv4 tcp in", proto: ProtoTCP, remote: peer4,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 443, DstPort: 40000, ACK: true, Window: 500})})
	add(testPacket{name: "ipv4 udp dns answer in", proto: ProtoUDP, remote: peer4, dns: true,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 53, DstPort: 33333}, gopacket.Payload(dns))})
	add(testPacket{name: "ipv4 udp dns query out (not an answer)", out: true, proto: ProtoUDP, remote: peer4,
		data: ser(t, eth(ourMAC, peerMAC, layers.EthernetTypeIPv4), ip4(our4, peer4, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 33333, DstPort: 53}, gopacket.Payload(dns))})
	add(testPacket{name: "ipv6 udp dns answer in", proto: ProtoUDP, remote: peer6, dns: true,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv6), ip6(peer6, our6, layers.IPProtocolUDP),
			&layers.UDP{SrcPort: 53, DstPort: 33333}, gopacket.Payload(dns))})
	add(testPacket{name: "ipv6 tcp dns answer in", proto: ProtoTCP, remote: peer6, dns: true, dnsTCP: true,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv6), ip6(peer6, our6, layers.IPProtocolTCP),
			&layers.TCP{SrcPort: 53, DstPort: 40001, ACK: true, PSH: true, Window: 500}, gopacket.Payload(tcpDNS))})
	add(testPacket{name: "ipv4 icmp echo in", proto: ProtoICMP, remote: peer4,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}, payload(56))})
	add(testPacket{name: "ipv6 icmpv6 out", out: true, proto: ProtoICMP, remote: peer6,
		data: ser(t, eth(ourMAC, peerMAC, layers.EthernetTypeIPv6), ip6(our6, peer6, layers.IPProtocolICMPv6),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}, payload(8))})
	add(testPacket{name: "arp request out", out: true, proto: ProtoOther,
		data: ser(t, eth(ourMAC, layers.EthernetBroadcast, layers.EthernetTypeARP), &layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: ourMAC, SourceProtAddress: our4.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: peer4.AsSlice()})})
	add(testPacket{name: "vlan ipv4 udp in", proto: ProtoUDP, remote: peer4,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeDot1Q),
			&layers.Dot1Q{VLANIdentifier: 5, Type: layers.EthernetTypeIPv4},
			ip4(peer4, our4, layers.IPProtocolUDP), &layers.UDP{SrcPort: 5000, DstPort: 6000}, payload(100))})
	hop := ip6(peer6, our6, layers.IPProtocolIPv6HopByHop)
	add(testPacket{name: "ipv6 hop-by-hop udp dns answer in", proto: ProtoUDP, remote: peer6, dns: true,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv6), hop,
			hopByHop(),
			&layers.UDP{SrcPort: 53, DstPort: 33333}, gopacket.Payload(dns))})

	// A later IPv4 fragment: protocol known, no ports.
	frag := ip4(peer4, our4, layers.IPProtocolUDP)
	frag.FragOffset = 185
	add(testPacket{name: "ipv4 later fragment in", proto: ProtoUDP, remote: peer4,
		data: ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), frag, payload(200))})

	// A 1400-byte TCP packet cut at 128 bytes by the snap length.
	full := ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolTCP),
		&layers.TCP{SrcPort: 443, DstPort: 40000, ACK: true, Window: 500}, payload(1400))
	add(testPacket{name: "ipv4 tcp in cut by snaplen", proto: ProtoTCP, remote: peer4, data: full[:128], wire: len(full)})

	// A DNS answer cut by a (misconfigured) snap length: counted, not handed over.
	dfull := ser(t, eth(peerMAC, ourMAC, layers.EthernetTypeIPv4), ip4(peer4, our4, layers.IPProtocolUDP),
		&layers.UDP{SrcPort: 53, DstPort: 33333}, gopacket.Payload(dns))
	add(testPacket{name: "dns answer cut", proto: ProtoUDP, remote: peer4, data: dfull[:50], wire: len(dfull)})

	// Cut inside the IPv4 header: counted as other, no remote.
	add(testPacket{name: "truncated ipv4 header", proto: ProtoOther, data: full[:20], wire: len(full), badDeco: true})

	// IHL 3 (12 bytes) is impossible: addresses are read, ports are not.
	bad := append([]byte(nil), full[:80]...)
	bad[14] = 0x43
	add(testPacket{name: "malformed ipv4 ihl", proto: ProtoTCP, remote: peer4, data: bad, wire: len(full), badDeco: true})

	// TCP data offset below 5 words.
	badTCP := append([]byte(nil), full[:80]...)
	badTCP[14+20+12] = 0x20
	add(testPacket{name: "malformed tcp offset", proto: ProtoTCP, remote: peer4, data: badTCP, wire: len(full), badDeco: true})

	// Runt frame shorter than an Ethernet header: counted, nothing else.
	add(testPacket{name: "runt", proto: ProtoOther, data: []byte{1, 2, 3, 4, 5}, badDeco: true})
	for i := range ps {
		ps[i].link = LinkEthernet
	}
	return ps
}

// rawPackets are the frames of testdata/rawip.pcap: a tun-like interface
// without link header whose address is our4/our6.
func rawPackets(t testing.TB) []testPacket {
	dns := dnsAnswer(t)
	ps := []testPacket{
		{name: "raw ipv4 udp out", out: true, proto: ProtoUDP, remote: peer4,
			data: ser(t, ip4(our4, peer4, layers.IPProtocolUDP), &layers.UDP{SrcPort: 1000, DstPort: 2000}, payload(300))},
		{name: "raw ipv4 udp dns in", proto: ProtoUDP, remote: peer4, dns: true,
			data: ser(t, ip4(peer4, our4, layers.IPProtocolUDP), &layers.UDP{SrcPort: 53, DstPort: 2000}, gopacket.Payload(dns))},
		{name: "raw ipv6 tcp out", out: true, proto: ProtoTCP, remote: peer6,
			data: ser(t, ip6(our6, peer6, layers.IPProtocolTCP), &layers.TCP{SrcPort: 1000, DstPort: 443, SYN: true, Window: 100})},
		{name: "raw garbage version", proto: ProtoOther, data: []byte{0x10, 0, 0, 0}},
	}
	for i := range ps {
		ps[i].link = LinkRawIP
	}
	return ps
}

func writePcap(t *testing.T, path string, lt layers.LinkType, ps []testPacket) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	for i, p := range ps {
		ci := gopacket.CaptureInfo{Timestamp: ts.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(p.data), Length: p.wireLen()}
		if err := w.WritePacket(ci, p.data); err != nil {
			t.Fatal(err)
		}
	}
}

// readPcap returns the frames of a pcap file with their wire lengths.
func readPcap(t *testing.T, path string) (frames [][]byte, wires []int, lt layers.LinkType) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestPcapReplay -update to create it)", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		frames = append(frames, data)
		wires = append(wires, ci.Length)
	}
	return frames, wires, r.LinkType()
}

func pcapPath(name string) string { return filepath.Join("testdata", name) }

func hopByHop() *layers.IPv6HopByHop {
	h := &layers.IPv6HopByHop{}
	h.NextHeader = layers.IPProtocolUDP
	h.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionData: []byte{0, 0, 0, 0}}}
	return h
}
