package procmap

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestBPFKeyEncoding(t *testing.T) {
	ne := binary.NativeEndian
	v4 := func(fam uint32, lp, rp uint16, la, ra []byte) bpfKey {
		var k bpfKey
		ne.PutUint32(k[0:], fam)
		ne.PutUint16(k[4:], lp)
		ne.PutUint16(k[6:], rp)
		copy(k[8:], la)
		copy(k[24:], ra)
		return k
	}
	for _, tc := range []struct {
		name          string
		local, remote string
		want          bpfKey
	}{
		{"ipv4", "198.18.0.1:40000", "198.18.0.2:443",
			v4(2, 40000, 443, []byte{198, 18, 0, 1}, []byte{198, 18, 0, 2})},
		{"ipv6", "[fd00:5e7::1]:1", "[fd00:5e7::2]:65535",
			v4(10, 1, 65535,
				[]byte{0xfd, 0, 0x05, 0xe7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
				[]byte{0xfd, 0, 0x05, 0xe7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})},
		{"ports zero", "127.0.0.1:0", "127.0.0.1:0",
			v4(2, 0, 0, []byte{127, 0, 0, 1}, []byte{127, 0, 0, 1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, r := netip.MustParseAddrPort(tc.local), netip.MustParseAddrPort(tc.remote)
			got := encodeBPFKey(l, r)
			if got != tc.want {
				t.Fatalf("encodeBPFKey(%v, %v) =\n% x\nwant\n% x", l, r, got, tc.want)
			}
			gl, gr, err := decodeBPFKey(got[:])
			if err != nil || gl != l || gr != r {
				t.Errorf("decodeBPFKey = %v, %v, %v; want %v, %v", gl, gr, err, l, r)
			}
		})
	}
}

func TestBPFKeyDecodeRejects(t *testing.T) {
	good := encodeBPFKey(netip.MustParseAddrPort("198.18.0.1:1"), netip.MustParseAddrPort("198.18.0.2:2"))
	mapped := encodeBPFKey(netip.MustParseAddrPort("[::ffff:198.18.0.1]:1"), netip.MustParseAddrPort("[fd00:5e7::2]:2"))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"short", good[:39]},
		{"long", append(good[:], 0)},
		{"family", func() []byte { k := good; k[0], k[1], k[2], k[3] = 7, 7, 7, 7; return k[:] }()},
		{"ipv4 with junk after the address", func() []byte { k := good; k[20] = 1; return k[:] }()},
		{"ipv6 holding a v4-mapped address", mapped[:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if l, r, err := decodeBPFKey(tc.b); err == nil {
				t.Errorf("decodeBPFKey(% x) = %v, %v; want an error", tc.b, l, r)
			}
		})
	}
}

func FuzzBPFKey(f *testing.F) {
	k4 := encodeBPFKey(netip.MustParseAddrPort("198.18.0.1:40000"), netip.MustParseAddrPort("198.18.0.2:80"))
	k6 := encodeBPFKey(netip.MustParseAddrPort("[fd00:5e7::1]:40000"), netip.MustParseAddrPort("[fd00:5e7::2]:80"))
	f.Add(k4[:])
	f.Add(k6[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		l, r, err := decodeBPFKey(b)
		if err != nil {
			return
		}
		if l.Addr().Is4() != r.Addr().Is4() {
			t.Fatalf("decoded mixed families %v, %v", l, r)
		}
		if k := encodeBPFKey(l, r); string(k[:]) != string(b) {
			t.Fatalf("round trip of % x gave % x", b, k)
		}
	})
}

func TestBPFRecordDecoding(t *testing.T) {
	var b [bpfValueSize]byte
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], 4242)
	ne.PutUint32(b[4:], 1000)
	ne.PutUint64(b[8:], 123456789012)
	ne.PutUint64(b[16:], 123456789000)
	ne.PutUint64(b[24:], 77)
	r, ok := decodeBPFRecord(b[:])
	if !ok || r != (bpfRecord{pid: 4242, uid: 1000, bootNS: 123456789012, execNS: 123456789000, cgroup: 77}) {
		t.Errorf("decodeBPFRecord = %+v, %v", r, ok)
	}
	if _, ok := decodeBPFRecord(b[:16]); ok {
		t.Error("decodeBPFRecord accepted 16 bytes")
	}
}

func TestStartedBy(t *testing.T) {
	for _, tc := range []struct {
		ticks, bootNS uint64
		want          bool
	}{
		{100, 1_000_000_000, true},   // started at 1 s, connected at 1 s
		{100, 1_009_999_999, true},   // same tick
		{101, 1_009_999_999, false},  // started in the next tick: a reused pid
		{99, 1_000_000_000, true},    // started earlier
		{5000, 1_000_000_000, false}, // started much later
		{0, 0, true},
	} {
		if got := startedBy(tc.ticks, tc.bootNS); got != tc.want {
			t.Errorf("startedBy(%d, %d) = %v, want %v", tc.ticks, tc.bootNS, got, tc.want)
		}
	}
}

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, want string
		ok                    bool
	}{
		{"hybrid", `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup/unified", true},
		{"unified with optional fields", "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", true},
		{"escaped space", `50 23 0:26 / /mnt/my\040cg rw - cgroup2 none rw`, "/mnt/my cg", true},
		{"subtree bind only", "50 23 0:26 /system.slice /mnt/sub rw - cgroup2 cgroup2 rw\n", "", false},
		{"subtree then root", "50 23 0:26 /a /mnt/sub rw - cgroup2 cgroup2 rw\n51 23 0:26 / /mnt/root rw - cgroup2 cgroup2 rw\n", "/mnt/root", true},
		{"none", "22 1 0:21 / /proc rw - proc proc rw\n", "", false},
		{"v1 only", "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "", false},
		{"garbage", "cgroup2\n - cgroup2\n", "", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := cgroup2Mount([]byte(tc.mountinfo))
			if got != tc.want || ok != tc.ok {
				t.Errorf("cgroup2Mount = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzCgroup2Mount(f *testing.F) {
	f.Add([]byte("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"))
	f.Add([]byte(`50 23 0:26 / /mnt/my\040cg\134 rw - cgroup2 none rw`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir, ok := cgroup2Mount(b)
		if !ok {
			return
		}
		// Unescaping only shrinks, and a hit needs a cgroup2 line.
		if len(dir) == 0 || len(dir) > len(b) || !bytes.Contains(b, []byte(" - cgroup2")) {
			t.Fatalf("cgroup2Mount(%q) = %q", b, dir)
		}
	})
}
