package bpfacct

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// IPv6 test hosts, added by addV6.
const (
	hostA6  = "fd00:5e7::1"
	hostB6  = "fd00:5e7::2"
	mixSink = 7010 // TCP: discards
	mixSrc  = 7011 // TCP: sends BPFACCT_MIX_BYTES, then closes
	mixEcho = 7012 // UDP: echoes
)

// addV6 gives the veth ends IPv6 addresses (no duplicate detection, so they
// are usable at once).
func addV6(t testing.TB, tn testNet) {
	t.Helper()
	run(t, "ip", "-n", tn.a, "addr", "add", hostA6+"/64", "dev", vethA, "nodad")
	run(t, "ip", "-n", tn.b, "addr", "add", hostB6+"/64", "dev", vethB, "nodad")
}

func mixBytes() int {
	n, _ := strconv.Atoi(os.Getenv("BPFACCT_MIX_BYTES"))
	return max(n, 1)
}

// helperMixSink serves mixSink, mixSrc and mixEcho on hostB and hostB6
// until its stdin closes.
func helperMixSink() error {
	n := mixBytes()
	for _, h := range []string{hostB, hostB6} {
		sl, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(mixSink)))
		if err != nil {
			return err
		}
		go discardConns(sl)
		ol, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(mixSrc)))
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ol.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					writeZeros(c, n)
				}()
			}
		}()
		ul, err := net.ListenPacket("udp", net.JoinHostPort(h, strconv.Itoa(mixEcho)))
		if err != nil {
			return err
		}
		go func() {
			b := make([]byte, 65536)
			for {
				m, from, err := ul.ReadFrom(b)
				if err != nil {
					return
				}
				_, _ = ul.WriteTo(b[:m], from)
			}
		}()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// helperMix, on side A, uploads and downloads BPFACCT_MIX_BYTES over TCP and
// exchanges 200 UDP echoes of 1000 bytes, with hostB and with hostB6.
func helperMix() error {
	n := mixBytes()
	buf := make([]byte, 1000) // one UDP echo
	for _, h := range []string{hostB, hostB6} {
		c, err := net.Dial("tcp", net.JoinHostPort(h, strconv.Itoa(mixSink)))
		if err != nil {
			return err
		}
		if err := writeZeros(c, n); err != nil {
			return err
		}
		c.Close()
		d, err := net.Dial("tcp", net.JoinHostPort(h, strconv.Itoa(mixSrc)))
		if err != nil {
			return err
		}
		got, err := io.Copy(io.Discard, d)
		d.Close()
		if err != nil || got != int64(n) {
			return fmt.Errorf("download from %s: %d bytes, %v", h, got, err)
		}
		u, err := net.Dial("udp", net.JoinHostPort(h, strconv.Itoa(mixEcho)))
		if err != nil {
			return err
		}
		for i := range 200 {
			if _, err := u.Write(buf); err != nil {
				return err
			}
			_ = u.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := u.Read(buf); err != nil {
				return fmt.Errorf("udp echo %d from %s: %w", i, h, err)
			}
		}
		u.Close()
	}
	fmt.Println("sent")
	return nil
}

// helperPing sends 5 ICMP echo requests of 300 bytes to BPFACCT_PING and
// waits for each reply (the kernel on the other side answers).
func helperPing() error {
	dst := netip.MustParseAddr(os.Getenv("BPFACCT_PING"))
	netw, typ, proto := "ip4:icmp", icmp.Type(ipv4.ICMPTypeEcho), 1
	if dst.Is6() {
		netw, typ, proto = "ip6:ipv6-icmp", ipv6.ICMPTypeEchoRequest, 58
	}
	c, err := icmp.ListenPacket(netw, "")
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for i := range 5 {
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: i, Data: make([]byte, 300)}}
		b, err := m.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		for {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("echo %d: %w", i, err)
			}
			if r, err := icmp.ParseMessage(proto, buf[:n]); err == nil && (r.Type == ipv4.ICMPTypeEchoReply || r.Type == ipv6.ICMPTypeEchoReply) {
				break
			}
		}
	}
	fmt.Println("pong")
	return nil
}

// compareResult is what the "compare" helper reports: per-protocol and
// per-remote deltas over the traffic window of an in-kernel Accounter and
// a ring Accounter capturing the same interface at the same time, plus the
// kernel's interface counters.
type compareResult struct {
	Backends [2]string
	ByProto  [2]map[Proto]Traffic
	Remotes  [2]map[string]Traffic // "addr/proto"
	Kernel   IfaceStat
}

func helperCompare() error {
	iface := os.Getenv("BPFACCT_IFACE")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var accts [2]*Accounter
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 2)
	var res compareResult
	for i, ringOnly := range []bool{false, true} {
		a, err := New(Config{Ifaces: []string{iface}, Logger: log, RingOnly: ringOnly,
			PollInterval: 100 * time.Millisecond, StatsInterval: 50 * time.Millisecond})
		if err != nil {
			return err
		}
		res.Backends[i], _ = a.Backend()
		accts[i] = a
		go func() { errc <- a.Run(ctx) }()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s0, _ := accts[0].Snapshot().Iface(iface)
		s1, _ := accts[1].Snapshot().Iface(iface)
		if s0.Capturing && s1.Capturing {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("captures on %s did not start", iface)
		}
	}
	settle := func() ([2]Snapshot, IfaceStat, error) {
		// The ring delivers within its block timeout; the kernel's totals
		// arrive at the next flush and its remotes one flush later.
		time.Sleep(400 * time.Millisecond)
		k, _, err := kernelAndSnap(accts[0], iface)
		return [2]Snapshot{accts[0].Snapshot(), accts[1].Snapshot()}, k, err
	}
	// IPv6 start-up chatter (duplicate detection of the link-local
	// addresses, MLD reports) goes on for a second or two after the links
	// come up: a packet at a window's edge may fall in one counter's window
	// and not the other's. Start once the link has been quiet for a while.
	if err := waitQuiet(iface, 1500*time.Millisecond, 10*time.Second); err != nil {
		return err
	}
	before, k0, err := settle()
	if err != nil {
		return err
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	after, k1, err := settle()
	if err != nil {
		return err
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			return err
		}
	}
	res.Kernel = IfaceStat{RxBytes: k1.RxBytes - k0.RxBytes, TxBytes: k1.TxBytes - k0.TxBytes,
		RxPackets: k1.RxPackets - k0.RxPackets, TxPackets: k1.TxPackets - k0.TxPackets}
	for i := range 2 {
		b, _ := before[i].Iface(iface)
		a, _ := after[i].Iface(iface)
		res.ByProto[i] = map[Proto]Traffic{}
		for p, t := range a.ByProto {
			res.ByProto[i][p] = sub(t, b.ByProto[p])
		}
		res.Remotes[i] = map[string]Traffic{}
		prev := map[string]Traffic{}
		for _, r := range before[i].Remotes {
			prev[fmt.Sprintf("%v/%v", r.Addr, r.Proto)] = r.Traffic
		}
		for _, r := range after[i].Remotes {
			k := fmt.Sprintf("%v/%v", r.Addr, r.Proto)
			if d := sub(r.Traffic, prev[k]); d != (Traffic{}) {
				res.Remotes[i][k] = d
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// waitQuiet waits until iface's kernel counters stay still for quiet.
func waitQuiet(iface string, quiet, limit time.Duration) error {
	var last IfaceStat
	since := time.Now()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := IfaceCounters()
		if err != nil {
			return err
		}
		for _, k := range st {
			if k.Name != iface {
				continue
			}
			if k.RxPackets != last.RxPackets || k.TxPackets != last.TxPackets {
				last, since = k, time.Now()
			}
		}
		if time.Since(since) >= quiet {
			return nil
		}
	}
	return fmt.Errorf("%s never went quiet for %v", iface, quiet)
}

func sub(a, b Traffic) Traffic {
	return Traffic{a.BytesIn - b.BytesIn, a.BytesOut - b.BytesOut, a.PacketsIn - b.PacketsIn, a.PacketsOut - b.PacketsOut}
}

// TestKernelCountsMatchRing counts one known mix of traffic twice at once,
// in the kernel and from the ring, on the same veth end: TCP up and down,
// UDP both ways, ICMP echo both ways (pings from each side), each over IPv4
// and IPv6. Per protocol, per direction and per remote the two must agree to
// the byte, and their totals must match the kernel's interface counters.
func TestKernelCountsMatchRing(t *testing.T) {
	needRoot(t)
	tn := newTestNet(t)
	addV6(t, tn)
	const n = 2 << 20
	sink := startHelper(t, tn.b, "mixsink", "BPFACCT_MIX_BYTES="+strconv.Itoa(n))
	sink.line(t, 10*time.Second)
	cmp := startHelper(t, tn.a, "compare", "BPFACCT_IFACE="+vethA)
	cmp.line(t, 20*time.Second)
	mix := startHelper(t, tn.a, "mix", "BPFACCT_MIX_BYTES="+strconv.Itoa(n))
	mix.line(t, 30*time.Second)
	for _, c := range [][]string{{tn.a, hostB}, {tn.a, hostB6}, {tn.b, hostA}, {tn.b, hostA6}} {
		p := startHelper(t, c[0], "ping", "BPFACCT_PING="+c[1])
		if got := p.line(t, 10*time.Second); got != "pong" {
			t.Fatalf("ping %s: %s", c[1], got)
		}
	}
	_, _ = io.WriteString(cmp.in, "done\n")
	var r compareResult
	if err := json.Unmarshal([]byte(cmp.line(t, 20*time.Second)), &r); err != nil {
		t.Fatal(err)
	}
	if r.Backends != [2]string{BackendEBPF, BackendRing} {
		t.Fatalf("backends %v, want [ebpf ring]", r.Backends)
	}
	kern, ring := r.ByProto[0], r.ByProto[1]
	var total Traffic
	for p := range numProtos {
		t.Logf("%-5v kernel %+v ring %+v", p, kern[p], ring[p])
		if kern[p] != ring[p] {
			t.Errorf("%v: in-kernel %+v, ring %+v", p, kern[p], ring[p])
		}
		total.add(kern[p])
	}
	if uint64(total.BytesIn) != r.Kernel.RxBytes || uint64(total.BytesOut) != r.Kernel.TxBytes ||
		uint64(total.PacketsIn) != r.Kernel.RxPackets || uint64(total.PacketsOut) != r.Kernel.TxPackets {
		t.Errorf("in-kernel totals %+v, interface counters %+v", total, r.Kernel)
	}
	for _, p := range []Proto{ProtoTCP, ProtoUDP, ProtoICMP} {
		if tr := kern[p]; tr.BytesIn == 0 || tr.BytesOut == 0 {
			t.Errorf("%v: %+v, want traffic both ways", p, tr)
		}
	}
	if kern[ProtoTCP].BytesIn < 2*n || kern[ProtoTCP].BytesOut < 2*n {
		t.Errorf("tcp %+v: want at least %d bytes each way", kern[ProtoTCP], 2*n)
	}
	for _, h := range []string{hostB, hostB6} {
		for _, p := range []Proto{ProtoTCP, ProtoUDP, ProtoICMP} {
			k := netip.MustParseAddr(h).String() + "/" + p.String()
			if tr := r.Remotes[0][k]; tr.PacketsIn == 0 || tr.PacketsOut == 0 {
				t.Errorf("in-kernel remote %s: %+v, want traffic both ways", k, tr)
			}
		}
	}
	for k, tr := range r.Remotes[0] {
		if r.Remotes[1][k] != tr {
			t.Errorf("remote %s: in-kernel %+v, ring %+v", k, tr, r.Remotes[1][k])
		}
	}
	for k, tr := range r.Remotes[1] {
		if _, ok := r.Remotes[0][k]; !ok {
			t.Errorf("remote %s: ring %+v, none in the kernel", k, tr)
		}
	}
}

// TestFallbackWithoutCapBPF runs the Accounter as root without CAP_BPF,
// CAP_SYS_ADMIN and CAP_PERFMON (dropped from the bounding set by setpriv):
// with unprivileged BPF disabled the kernel refuses the counter, and the
// ring must count instead, as well as ever.
func TestFallbackWithoutCapBPF(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux) to drop capabilities")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_bpf_disabled"); err != nil || strings.TrimSpace(string(b)) == "0" {
		t.Skip("unprivileged BPF is allowed here: dropping capabilities would not make the kernel refuse the counter")
	}
	r := captureVethEndToEnd(t, nil, []string{"setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon", "--"})
	if r.Backend != BackendRing || !strings.Contains(r.BackendErr, errBPFRefused.Error()) {
		t.Errorf("Backend() = %q, %q; want %q and the kernel's refusal", r.Backend, r.BackendErr, BackendRing)
	}
	t.Logf("backend %s: %s", r.Backend, r.BackendErr)
}
