package bpfacct

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestCounterProgramLoads loads the counter for both link kinds, with and
// without DNS pass-up: the verifier must accept every variant.
func TestCounterProgramLoads(t *testing.T) {
	needRoot(t)
	for _, link := range []LinkType{LinkEthernet, LinkRawIP} {
		for _, dns := range []bool{false, true} {
			p, err := loadCounterProgram(link, 16, dns)
			if err != nil {
				t.Fatalf("link %v dns %v: %+v", link, dns, err)
			}
			p.close()
		}
	}
}

// TestCounterProgramMatchesDecoder runs the counter (the raw-IP variant)
// over every test packet with BPF_PROG_TEST_RUN and checks that it learns
// what decode and classify learn: protocol class, remote, byte count, and
// whether the packet is a DNS answer to pass up. The kernel's test run
// strips the Ethernet header and marks every packet incoming, so frames
// with a VLAN tag are left to the live tests, and the expected direction is
// in.
func TestCounterProgramMatchesDecoder(t *testing.T) {
	needRoot(t)
	p, err := loadCounterProgram(LinkRawIP, 64, true)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	kc := &kernelCounter{fd: -1, prog: p.prog, totals: p.totals, remotes: p.remotes, gen: p.gen}
	defer p.close()
	for _, tp := range allPackets(t) {
		frame := tp.data
		if tp.link == LinkRawIP {
			et := []byte{0x08, 0x00}
			if len(frame) > 0 && frame[0]>>4 == 6 {
				et = []byte{0x86, 0xdd}
			}
			frame = append(append(append([]byte{}, peerMAC...), ourMAC...), et...)
			frame = append(frame, tp.data...)
		}
		if len(frame) < 14 {
			continue
		}
		if et := binary.BigEndian.Uint16(frame[12:14]); et == etherTypeVLAN || et == etherTypeQinQ {
			continue
		}
		t.Run(tp.name, func(t *testing.T) {
			ret, err := p.prog.Run(&ebpf.RunOptions{Data: frame})
			if errors.Is(err, unix.EINVAL) && len(frame) < 64 {
				t.Skipf("the kernel refuses to test-run a %d-byte frame: %v", len(frame), err)
			}
			if err != nil {
				t.Fatalf("test run: %v", err)
			}
			c := newCounters(16)
			if err := errors.Join(kc.collectTotals(c), kc.drainRemotes(c, func(uint8) bool { return true })); err != nil {
				t.Fatal(err)
			}
			var pi packetInfo
			_ = decode(frame[14:], LinkRawIP, &pi)
			o := classify(&pi, len(frame)-14, nil, nil)
			want := Traffic{BytesIn: o.n, PacketsIn: 1}
			for pr := range numProtos {
				w := Traffic{}
				if pr == o.proto {
					w = want
				}
				if c.byProto[pr] != w {
					t.Errorf("%v: program counted %+v, decoder %+v", pr, c.byProto[pr], w)
				}
			}
			var wantRemotes map[remoteKey]*Traffic
			if o.remote.IsValid() {
				wantRemotes = map[remoteKey]*Traffic{{o.remote, o.proto}: &want}
			}
			if len(c.remotes) != len(wantRemotes) {
				t.Errorf("remotes %v, want %v", c.remotes, wantRemotes)
			}
			for k, w := range wantRemotes {
				if g := c.remotes[k]; g == nil || *g != *w {
					t.Errorf("remote %v: %v, want %+v", k, g, *w)
				}
			}
			// The program, like the ring's filter, passes up IPv6 DNS only
			// without extension headers.
			wantDNS := pi.HasPorts && pi.SrcPort == dnsPort && tp.name != "ipv6 hop-by-hop udp dns answer in"
			if (ret == kcDNSSnap) != wantDNS || (ret != 0 && ret != kcDNSSnap) {
				t.Errorf("returned %d, want DNS pass-up %v", ret, wantDNS)
			}
		})
	}
}
