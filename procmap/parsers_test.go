package procmap

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files and checked-in fuzz seeds")

var ne = binary.NativeEndian

func littleEndianHost(t testing.TB) {
	if ne.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are little-endian; this host is big-endian")
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(hex.Dump(got)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if hex.Dump(got) != string(want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", name, hex.Dump(got), want)
	}
}

func TestEncodeDiagRequestGolden(t *testing.T) {
	littleEndianHost(t)
	for _, tc := range []struct {
		name          string
		local, remote string
	}{
		{"diag_req_v4.hex", "127.0.0.1:40000", "198.18.0.7:443"},
		{"diag_req_v6.hex", "[fd00:5e7::1]:40001", "[fd00:5e7::2]:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeDiagRequest(7, netip.MustParseAddrPort(tc.local), netip.MustParseAddrPort(tc.remote))
			if len(b) != 72 {
				t.Fatalf("request is %d bytes, want 72 (nlmsghdr 16 + inet_diag_req_v2 56)", len(b))
			}
			golden(t, tc.name, b)
		})
	}
}

// diagMsg builds one netlink message as the kernel would send it.
func diagMsg(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, 16+len(body))
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint32(b[8:], seq)
	copy(b[16:], body)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func diagReply(uid, inode uint32) []byte {
	m := make([]byte, 72+8) // inet_diag_msg + one attribute
	m[0], m[1] = afInet, 1  // family, TCP_ESTABLISHED
	ne.PutUint32(m[64:], uid)
	ne.PutUint32(m[68:], inode)
	ne.PutUint16(m[72:], 8) // a trailing rtattr, ignored
	return m
}

func diagErr(errno syscall.Errno) []byte {
	b := make([]byte, 4+16)
	ne.PutUint32(b, uint32(-int32(errno)))
	return b
}

func TestParseDiagResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    diagSock
		found   bool
		wantErr error
	}{
		{"socket", diagMsg(sockDiagByFamily, 9, diagReply(1000, 424242)), diagSock{uid: 1000, inode: 424242}, true, nil},
		{"orphan", diagMsg(sockDiagByFamily, 9, diagReply(0, 0)), diagSock{}, true, nil},
		{"stale then ours", append(diagMsg(sockDiagByFamily, 8, diagReply(1, 1)), diagMsg(sockDiagByFamily, 9, diagReply(2, 2))...), diagSock{uid: 2, inode: 2}, true, nil},
		{"enoent", diagMsg(nlmsgError, 9, diagErr(syscall.ENOENT)), diagSock{}, false, nil},
		{"eperm", diagMsg(nlmsgError, 9, diagErr(syscall.EPERM)), diagSock{}, false, syscall.EPERM},
		{"other seq only", diagMsg(sockDiagByFamily, 3, diagReply(1, 1)), diagSock{}, false, errNoAnswer},
		{"short body", diagMsg(sockDiagByFamily, 9, make([]byte, 20)), diagSock{}, false, errShortDiag},
		{"bad length", []byte{0xff, 0, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0}, diagSock{}, false, errShortDiag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := parseDiagResponse(tc.in, 9)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || found != tc.found || got != tc.want {
				t.Errorf("got %+v %v %v, want %+v %v", got, found, err, tc.want, tc.found)
			}
		})
	}
}

// xnu sample builders; offsets from the layout comment in pcb_xnu.go.

func xnuInpcb(local, remote netip.AddrPort) []byte {
	b := make([]byte, 104)
	ne.PutUint32(b[0:], 104)
	ne.PutUint32(b[4:], xsoInpcb)
	binary.BigEndian.PutUint16(b[16:], remote.Port())
	binary.BigEndian.PutUint16(b[18:], local.Port())
	if local.Addr().Is4() {
		b[44] = inpIPv4
		f, l := remote.Addr().As4(), local.Addr().As4()
		copy(b[48+12:], f[:])
		copy(b[64+12:], l[:])
	} else {
		b[44] = inpIPv6
		f, l := remote.Addr().As16(), local.Addr().As16()
		copy(b[48:], f[:])
		copy(b[64:], l[:])
	}
	return b
}

func xnuSocket(so uint64, uid, lastPID, ePID uint32) []byte {
	b := make([]byte, 104)
	ne.PutUint32(b[0:], 104)
	ne.PutUint32(b[4:], xsoSocket)
	ne.PutUint64(b[8:], so)
	ne.PutUint32(b[64:], uid)
	ne.PutUint32(b[68:], lastPID)
	ne.PutUint32(b[72:], ePID)
	return b
}

func xnuItem(kind uint32, n int) []byte {
	b := make([]byte, roundup8(n))
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint32(b[4:], kind)
	return b
}

func xnuGen(count uint32) []byte {
	b := make([]byte, 24)
	ne.PutUint32(b[0:], 24)
	ne.PutUint32(b[4:], count)
	return b
}

func xnuSample() []byte {
	var b []byte
	b = append(b, xnuGen(2)...)
	b = append(b, xnuInpcb(netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("198.18.0.9:443"))...)
	b = append(b, xnuSocket(0xffffff8001, 501, 321, 321)...)
	b = append(b, xnuItem(0x002, 32)...)  // xsockbuf_n rcv
	b = append(b, xnuItem(0x004, 32)...)  // xsockbuf_n snd
	b = append(b, xnuItem(0x008, 388)...) // xsockstat_n
	b = append(b, xnuItem(0x020, 196)...) // xtcpcb_n
	b = append(b, xnuInpcb(netip.MustParseAddrPort("[fd00:5e7::1]:50001"), netip.MustParseAddrPort("[fd00:5e7::2]:80"))...)
	b = append(b, xnuSocket(0xffffff8002, 0, 77, 88)...) // delegated: e_pid wins
	b = append(b, xnuItem(0x020, 196)...)
	b = append(b, xnuGen(2)...)
	return b
}

func TestParseXNUPcbList(t *testing.T) {
	got, err := parseXNUPcbList(xnuSample())
	if err != nil {
		t.Fatal(err)
	}
	want := []pcbEntry{
		{local: netip.MustParseAddrPort("127.0.0.1:50000"), remote: netip.MustParseAddrPort("198.18.0.9:443"), uid: 501, pid: 321, so: 0xffffff8001},
		{local: netip.MustParseAddrPort("[fd00:5e7::1]:50001"), remote: netip.MustParseAddrPort("[fd00:5e7::2]:80"), uid: 0, pid: 88, so: 0xffffff8002},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if e, ok := findPcb(got, want[1].local, want[1].remote); !ok || e.pid != 88 {
		t.Errorf("findPcb = %+v, %v", e, ok)
	}
	if _, ok := findPcb(got, want[1].remote, want[1].local); ok {
		t.Error("findPcb matched the reversed tuple")
	}
	// A v4-mapped dual-stack socket reports INP_IPV6 with ::ffff:a.b.c.d.
	mapped := xnuInpcb(netip.MustParseAddrPort("[::ffff:127.0.0.1]:1"), netip.MustParseAddrPort("[::ffff:127.0.0.2]:2"))
	b := append(append(append(xnuGen(1), mapped...), xnuSocket(1, 0, 5, 0)...), xnuGen(1)...)
	got, err = parseXNUPcbList(b)
	if err != nil || len(got) != 1 || got[0].local != netip.MustParseAddrPort("127.0.0.1:1") || got[0].pid != 5 {
		t.Errorf("mapped: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, xnuGen(0)[:10], append(xnuGen(1), 0xff, 0xff, 0, 0, 0x10, 0, 0, 0)} {
		if _, err := parseXNUPcbList(bad); !errors.Is(err, errBadPcbList) {
			t.Errorf("parse(% x) err = %v, want errBadPcbList", bad, err)
		}
	}
}

func procArgs2Sample() []byte {
	b := make([]byte, 4)
	ne.PutUint32(b, 3)
	b = append(b, "/usr/bin/curl\x00\x00\x00\x00curl\x00-s\x00https://example.org\x00PATH=/bin\x00"...)
	return b
}

func TestParseProcArgs2(t *testing.T) {
	exe, cmd, err := parseProcArgs2(procArgs2Sample())
	if err != nil || exe != "/usr/bin/curl" || cmd != "curl -s https://example.org" {
		t.Errorf("got %q %q %v", exe, cmd, err)
	}
	if _, _, err := parseProcArgs2([]byte{1}); !errors.Is(err, errBadPcbList) {
		t.Errorf("short: %v", err)
	}
}

// FreeBSD sample builders; offsets from the layout comment in pcb_fbsd.go.

func fbsdGen() []byte {
	b := make([]byte, 64)
	ne.PutUint64(b, 64)
	return b
}

func fbsdTcpcb(local, remote netip.AddrPort, so uint64, uid uint32) []byte {
	const tail = 336 // xt_stack, xt_logid, xt_cc, spares, t_state...: only the length matters
	b := make([]byte, 8+400+tail)
	ne.PutUint64(b, uint64(len(b)))
	inp := b[8:]
	ne.PutUint64(inp[0:], 400)
	ne.PutUint64(inp[8:], 240) // xso_len
	ne.PutUint64(inp[16:], so)
	ne.PutUint32(inp[128:], uid)
	binary.BigEndian.PutUint16(inp[252:], remote.Port())
	binary.BigEndian.PutUint16(inp[254:], local.Port())
	if local.Addr().Is4() {
		inp[392] = inpIPv4
		f, l := remote.Addr().As4(), local.Addr().As4()
		copy(inp[256+12:], f[:])
		copy(inp[272+12:], l[:])
	} else {
		inp[248] = 0x01 // INC_ISIPV6
		inp[392] = inpIPv6
		f, l := remote.Addr().As16(), local.Addr().As16()
		copy(inp[256:], f[:])
		copy(inp[272:], l[:])
	}
	return b
}

func fbsdPcbSample() []byte {
	var b []byte
	b = append(b, fbsdGen()...)
	b = append(b, fbsdTcpcb(netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("198.18.0.9:443"), 0xfffff80001, 1001)...)
	b = append(b, fbsdTcpcb(netip.MustParseAddrPort("[fd00:5e7::1]:50001"), netip.MustParseAddrPort("[fd00:5e7::2]:80"), 0xfffff80002, 0)...)
	b = append(b, fbsdGen()...)
	return b
}

func fbsdXfile(pid, uid int32, typ int16, data uint64) []byte {
	b := make([]byte, 128)
	ne.PutUint64(b[0:], 128)
	ne.PutUint32(b[8:], uint32(pid))
	ne.PutUint32(b[12:], uint32(uid))
	ne.PutUint16(b[32:], uint16(typ))
	ne.PutUint64(b[56:], data)
	return b
}

func fbsdFilesSample() []byte {
	var b []byte
	b = append(b, fbsdXfile(10, 0, 1, 0xfffff80002)...) // a vnode with a colliding xf_data: not a socket
	b = append(b, fbsdXfile(11, 0, dtypeSocket, 0xfffff80009)...)
	b = append(b, fbsdXfile(4242, 1001, dtypeSocket, 0xfffff80001)...)
	b = append(b, fbsdXfile(99, 0, dtypeSocket, 0xfffff80002)...)
	return b
}

func fbsdKinfoSample(pid, ppid, uid, ruid int32) []byte {
	b := make([]byte, 1088) // KINFO_PROC_SIZE on amd64
	ne.PutUint32(b[0:], 1088)
	ne.PutUint32(b[72:], uint32(pid))
	ne.PutUint32(b[76:], uint32(ppid))
	ne.PutUint32(b[168:], uint32(uid))
	ne.PutUint32(b[172:], uint32(ruid))
	return b
}

func TestParseFreeBSD(t *testing.T) {
	got, err := parseFreeBSDPcbList(fbsdPcbSample())
	if err != nil {
		t.Fatal(err)
	}
	want := []pcbEntry{
		{local: netip.MustParseAddrPort("127.0.0.1:50000"), remote: netip.MustParseAddrPort("198.18.0.9:443"), uid: 1001, so: 0xfffff80001},
		{local: netip.MustParseAddrPort("[fd00:5e7::1]:50001"), remote: netip.MustParseAddrPort("[fd00:5e7::2]:80"), uid: 0, so: 0xfffff80002},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	for _, tc := range []struct {
		so       uint64
		pid, uid int
		ok       bool
	}{{0xfffff80001, 4242, 1001, true}, {0xfffff80002, 99, 0, true}, {0xdead, 0, 0, false}} {
		pid, uid, ok, err := findFreeBSDFileOwner(fbsdFilesSample(), tc.so)
		if err != nil || pid != tc.pid || uid != tc.uid || ok != tc.ok {
			t.Errorf("owner of %#x = %d %d %v %v, want %d %d %v", tc.so, pid, uid, ok, err, tc.pid, tc.uid, tc.ok)
		}
	}
	ks, err := parseFreeBSDKinfoProcs(append(fbsdKinfoSample(4242, 1, 1001, 1002), fbsdKinfoSample(1, 0, 0, 0)...), 8)
	if err != nil || len(ks) != 2 || ks[0] != (fbsdKinfo{4242, 1, 1001, 1002}) || ks[1].pid != 1 {
		t.Errorf("kinfo = %+v, %v", ks, err)
	}
	for name, bad := range map[string]func() error{
		"pcb short":   func() error { _, err := parseFreeBSDPcbList(fbsdGen()[:20]); return err },
		"pcb trunc":   func() error { _, err := parseFreeBSDPcbList(fbsdPcbSample()[:64+500]); return err },
		"file trunc":  func() error { _, _, _, err := findFreeBSDFileOwner(fbsdFilesSample()[:100], 1); return err },
		"kinfo small": func() error { _, err := parseFreeBSDKinfoProcs([]byte{8, 0, 0, 0, 0, 0, 0, 0}, 8); return err },
	} {
		if err := bad(); !errors.Is(err, errBadPcbList) {
			t.Errorf("%s: err = %v, want errBadPcbList", name, err)
		}
	}
}

func TestParseProcFiles(t *testing.T) {
	for _, tc := range []struct {
		stat  string
		ppid  int
		start uint64
		ok    bool
	}{
		{"42 (curl) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10", 7, 123456, true},
		{"42 (a) b) c) R 9 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0", 9, 77, true},
		{"42 (x) S", 0, 0, false},
		{"no paren", 0, 0, false},
	} {
		ppid, start, err := parseStat([]byte(tc.stat))
		if (err == nil) != tc.ok || ppid != tc.ppid || start != tc.start {
			t.Errorf("parseStat(%q) = %d %d %v", tc.stat, ppid, start, err)
		}
	}
	if got := parseCmdline([]byte("curl\x00-s\x00x y\x00")); got != "curl -s x y" {
		t.Errorf("cmdline %q", got)
	}
	if got := parseStatusUID([]byte("Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t5\n")); got != 1000 {
		t.Errorf("uid %d", got)
	}
	if got := parseStatusUID([]byte("Name:\tx\n")); got != -1 {
		t.Errorf("uid without line %d", got)
	}
	if got := parseCgroup([]byte("12:cpu:/old\n0::/user.slice/app.scope\n")); got != "/user.slice/app.scope" {
		t.Errorf("cgroup %q", got)
	}
	if got := parseCgroup([]byte("4:memory:/v1only\n")); got != "/v1only" {
		t.Errorf("cgroup v1 %q", got)
	}
	for _, tc := range []struct {
		in  string
		ino uint64
		ok  bool
	}{{"socket:[12345]", 12345, true}, {"socket:[]", 0, false}, {"pipe:[5]", 0, false}, {"/dev/null", 0, false}, {"socket:[0]", 0, false}} {
		ino, ok := socketInode([]byte(tc.in))
		if ino != tc.ino || ok != tc.ok {
			t.Errorf("socketInode(%q) = %d %v", tc.in, ino, ok)
		}
	}
}

// TestWriteFuzzSeeds writes the constructed samples as checked-in seed
// corpus entries (go test -run WriteFuzzSeeds -update).
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("only with -update")
	}
	seeds := map[string][][]byte{
		"FuzzParseDiagResponse": {diagMsg(sockDiagByFamily, 9, diagReply(1000, 424242)), diagMsg(nlmsgError, 9, diagErr(syscall.ENOENT))},
		"FuzzParseXNUPcbList":   {xnuSample()},
		"FuzzParseProcArgs2":    {procArgs2Sample()},
		"FuzzParseFreeBSD":      {fbsdPcbSample(), fbsdFilesSample(), fbsdKinfoSample(1, 0, 0, 0)},
		"FuzzParseStat":         {[]byte("42 (a) b) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10")},
	}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range list {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			body = strings.ReplaceAll(body, "\\x00", "\\x00")
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
