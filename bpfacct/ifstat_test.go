package bpfacct

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"syscall"
	"testing"
	"testing/fstest"
)

func TestReadSysClassNet(t *testing.T) {
	fsys := fstest.MapFS{
		"eth0/flags":                 {Data: []byte("0x1003\n")},
		"eth0/ifindex":               {Data: []byte("2\n")},
		"eth0/statistics/rx_bytes":   {Data: []byte("1000\n")},
		"eth0/statistics/tx_bytes":   {Data: []byte("2000\n")},
		"eth0/statistics/rx_packets": {Data: []byte("10\n")},
		"eth0/statistics/tx_packets": {Data: []byte("20\n")},
		"eth0/statistics/rx_dropped": {Data: []byte("1\n")},
		"wg0/flags":                  {Data: []byte("0x1090\n")}, // down
		"wg0/statistics/rx_bytes":    {Data: []byte("5\n")},
		"bonding_masters":            {Data: []byte("\n")}, // not an interface
	}
	got, err := readSysClassNet(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []IfaceStat{
		{Name: "eth0", Index: 2, Up: true, RxBytes: 1000, TxBytes: 2000, RxPackets: 10, TxPackets: 20, RxDropped: 1},
		{Name: "wg0", RxBytes: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %+v, want %+v", got[i], want[i])
		}
	}
	fsys["eth0/statistics/tx_bytes"] = &fstest.MapFile{Data: []byte("lots\n")}
	if _, err := readSysClassNet(fsys); err == nil {
		t.Error("no error for a non-numeric counter")
	}
}

// ifMsg builds one interface message of the given layout, followed by a
// sockaddr_dl naming it, as the routing sysctl returns it.
func ifMsg(l ifListLayout, index uint16, flags uint32, name string, rxB, txB, rxP, txP uint64) []byte {
	le := binary.LittleEndian
	sdl := make([]byte, (8+len(name)+6+3)&^3) // name + 6-byte MAC, 4-byte aligned
	sdl[0] = byte(len(sdl))
	sdl[1] = 18 // AF_LINK
	le.PutUint16(sdl[2:], index)
	sdl[4] = 6 // IFT_ETHER
	sdl[5] = byte(len(name))
	sdl[6] = 6
	copy(sdl[8:], name)
	m := make([]byte, l.hdrLen+len(sdl))
	le.PutUint16(m[0:], uint16(len(m)))
	m[2] = 5 // RTM_VERSION
	m[3] = l.msgType
	le.PutUint32(m[4:], rtaIFP)
	le.PutUint32(m[8:], flags)
	le.PutUint16(m[12:], index)
	d := m[l.dataOff:]
	d[0] = 6
	le.PutUint64(d[24:], rxP)
	le.PutUint64(d[40:], txP)
	le.PutUint64(d[64:], rxB)
	le.PutUint64(d[72:], txB)
	copy(m[l.hdrLen:], sdl)
	return m
}

// addrMsg is an RTM_NEWADDR (0xc) message, which the parser must skip.
func addrMsg() []byte {
	m := make([]byte, 20)
	binary.LittleEndian.PutUint16(m, 20)
	m[2], m[3] = 5, 0xc
	return m
}

func TestParseIfList(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    ifListLayout
	}{{"darwin", darwinIfList()}, {"freebsd", freebsdIfList()}} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			b = append(b, ifMsg(tc.l, 1, 0x8049, "lo0", 100, 100, 1, 1)...)
			b = append(b, addrMsg()...)
			b = append(b, ifMsg(tc.l, 4, 0x8862, "en0", 1<<40, 7, 3, 4)...) // down
			got, err := parseIfList(b, tc.l)
			if err != nil {
				t.Fatal(err)
			}
			want := []IfaceStat{
				{Name: "lo0", Index: 1, Up: true, RxBytes: 100, TxBytes: 100, RxPackets: 1, TxPackets: 1},
				{Name: "en0", Index: 4, RxBytes: 1 << 40, TxBytes: 7, RxPackets: 3, TxPackets: 4},
			}
			if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			for _, bad := range []struct {
				name string
				b    []byte
			}{
				{"cut message", b[:len(b)-3]},
				{"zero length", []byte{0, 0, 5, tc.l.msgType}},
				{"short interface message", ifMsg(tc.l, 1, 0, "x", 0, 0, 0, 0)[:tc.l.hdrLen-1]},
			} {
				m := append([]byte(nil), bad.b...)
				if bad.name == "short interface message" {
					binary.LittleEndian.PutUint16(m, uint16(len(m)))
				}
				if _, err := parseIfList(m, tc.l); !errors.Is(err, errBadIfList) {
					t.Errorf("%s: err %v, want errBadIfList", bad.name, err)
				}
			}
		})
	}
}

func FuzzParseIfList(f *testing.F) {
	f.Add(append(ifMsg(darwinIfList(), 1, 1, "en0", 1, 2, 3, 4), addrMsg()...), false)
	f.Add(ifMsg(freebsdIfList(), 2, 0, "vtnet0", 1, 2, 3, 4), true)
	f.Fuzz(func(t *testing.T, b []byte, freebsd bool) {
		l := darwinIfList()
		if freebsd {
			l = freebsdIfList()
		}
		st, err := parseIfList(b, l)
		if err != nil && !errors.Is(err, errBadIfList) {
			t.Fatalf("error not wrapping errBadIfList: %v", err)
		}
		for _, s := range st {
			if s.Name == "" {
				t.Fatal("interface without a name")
			}
		}
	})
}

func TestSetLinkUpMsgGolden(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian")
	}
	for _, tc := range []struct {
		up   bool
		want string
	}{
		// len=32 type=16 (RTM_NEWLINK) flags=5 (REQUEST|ACK) seq=9 pid=0 |
		// family=0 pad type=0 index=7 flags=IFF_UP or 0 change=IFF_UP
		{true, "20000000" + "1000" + "0500" + "09000000" + "00000000" + "00000000" + "07000000" + "01000000" + "01000000"},
		{false, "20000000" + "1000" + "0500" + "09000000" + "00000000" + "00000000" + "07000000" + "00000000" + "01000000"},
	} {
		if got := hex.EncodeToString(setLinkUpMsg(7, tc.up, 9)); got != tc.want {
			t.Errorf("up=%v:\n got %s\nwant %s", tc.up, got, tc.want)
		}
	}
}

func TestParseNetlinkAck(t *testing.T) {
	msg := func(seq uint32, typ uint16, errno int32) []byte {
		b := make([]byte, 36)
		ne := binary.NativeEndian
		ne.PutUint32(b[0:], 36)
		ne.PutUint16(b[4:], typ)
		ne.PutUint32(b[8:], seq)
		ne.PutUint32(b[16:], uint32(errno))
		return b
	}
	for _, tc := range []struct {
		name   string
		b      []byte
		ok     bool
		errno  syscall.Errno
		anyErr bool
	}{
		{"ack", msg(1, nlmsgError, 0), true, 0, false},
		{"eperm", msg(1, nlmsgError, -1), true, syscall.EPERM, true},
		{"other seq then ack", append(msg(2, nlmsgError, -1), msg(1, nlmsgError, 0)...), true, 0, false},
		{"not an error message", msg(1, 16, 0), false, 0, false},
		{"bad length", []byte{200, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, false, 0, true},
	} {
		ok, err := parseNetlinkAck(tc.b, 1)
		if ok != tc.ok || (err != nil) != tc.anyErr || (tc.errno != 0 && !errors.Is(err, tc.errno)) {
			t.Errorf("%s: ok=%v err=%v", tc.name, ok, err)
		}
	}
}
