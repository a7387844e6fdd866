package nftctl

import (
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/netshape/netshape/internal/nstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

var goldenConfigs = []struct {
	name string
	cfg  Config
}{
	{"default", Config{Port: 9040}},
	{"bypass", Config{Port: 9040, Bypass: []netip.Prefix{
		netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("fd00:5e7::7/128")}}},
	{"quic_blocked_iface", Config{Port: 9041, Mark: 0x77, BlockQUIC: true, BlockedIfaces: []string{"usb0", "wwan0"}}},
	{"port_range", Config{Port: 9040, Ports: 4}},
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestGoldenText(t *testing.T) {
	for _, tc := range goldenConfigs {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, tc.name+".nft", Text(tc.cfg))
		})
	}
}

// TestGoldenNetlink pins the exact netlink messages Install sends.
func TestGoldenNetlink(t *testing.T) {
	for _, tc := range goldenConfigs {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			n := New(tc.cfg, nil)
			n.dial = func() (*nftables.Conn, error) {
				return nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
					for _, m := range req {
						fmt.Fprintf(&b, "type=%#x flags=%#x %s\n", uint16(m.Header.Type), uint16(m.Header.Flags), hex.EncodeToString(m.Data))
					}
					return req, nil
				}))
			}
			if err := n.Install(); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".netlink", b.String())
		})
	}
}

func TestBadConfigTextIsStable(t *testing.T) {
	// Defaults fill in: an empty config still names the table and the mark.
	s := Text(Config{Port: 1})
	for _, want := range []string{"table inet netshape", "meta mark 0x5e7 return", "redirect to :1", "ip daddr 127.0.0.0/8 return", "ip6 daddr ::1 return"} {
		if !strings.Contains(s, want) {
			t.Errorf("Text lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "filter_out") {
		t.Errorf("no filter chain expected without blocks:\n%s", s)
	}
}

// TestKernelLifecycle installs, inspects, replaces and removes the table in a
// throwaway namespace, against the real kernel.
func TestKernelLifecycle(t *testing.T) {
	p := nstest.NewPair(t, "tnft")
	fd, err := nstest.FD(p.Cli)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cfg := goldenConfigs[1].cfg
	n := New(cfg, nil)
	n.dial = func() (*nftables.Conn, error) { return nftables.New(nftables.WithNetNSFd(fd)) }

	rulesIn := func() map[string]int {
		conn, err := n.dial()
		if err != nil {
			t.Fatal(err)
		}
		tbl := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}
		chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, c := range chains {
			if c.Table.Name != DefaultTable {
				continue
			}
			rs, err := conn.GetRules(tbl, c)
			if err != nil {
				t.Fatal(err)
			}
			got[c.Name] = len(rs)
		}
		return got
	}

	if err := n.Cleanup(); err != nil {
		t.Fatalf("Cleanup with nothing installed: %v", err)
	}
	if err := n.Install(); err != nil {
		t.Fatal(err)
	}
	_, want := ruleset(n.cfg)
	if got := rulesIn(); got["out"] != len(want) || len(got) != 1 {
		t.Fatalf("after Install: chains/rules %v, want out=%d", got, len(want))
	}
	// Install again replaces rather than duplicates.
	if err := n.Install(); err != nil {
		t.Fatal(err)
	}
	if got := rulesIn(); got["out"] != len(want) {
		t.Fatalf("after second Install: %v", got)
	}
	if err := n.SetBlockedIfaces([]string{p.CliIf}); err != nil {
		t.Fatal(err)
	}
	if got := rulesIn(); got["filter_out"] != 2 || got["filter_in"] != 1 { // ct status dnat accept + the drop
		t.Fatalf("after SetBlockedIfaces: %v", got)
	}
	// A second backend (a new run after a crash) cleans up what the first left.
	n2 := New(cfg, nil)
	n2.dial = n.dial
	if err := n2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if ok, err := n.Installed(); err != nil || ok {
		t.Fatalf("Installed after Cleanup = %v, %v", ok, err)
	}
	for i := 0; i < 2; i++ {
		if err := n.Remove(); err != nil {
			t.Fatalf("Remove #%d: %v", i, err)
		}
	}
}

// MarkFD and DialControl put the configured mark on a socket, which the out
// chain's first rule returns unredirected (the loop guard). SO_MARK needs
// CAP_NET_ADMIN.
func TestMarkFD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting SO_MARK needs root (CAP_NET_ADMIN)")
	}
	n := New(Config{Port: 9040, Mark: 0x77}, nil)
	mark := func(fd int) int {
		t.Helper()
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := n.MarkFD(fd); err != nil {
		t.Fatal(err)
	}
	if got := mark(fd); got != 0x77 {
		t.Errorf("MarkFD: SO_MARK %#x, want 0x77", got)
	}
	if err := n.MarkFD(-1); err == nil || !strings.Contains(err.Error(), "SO_MARK") {
		t.Errorf("MarkFD on a bad descriptor: %v", err)
	}

	var got int
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		if err := n.DialControl(network, address, c); err != nil {
			return err
		}
		return c.Control(func(fd uintptr) { got = mark(int(fd)) })
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got != 0x77 {
		t.Errorf("DialControl: SO_MARK %#x, want 0x77", got)
	}
}
