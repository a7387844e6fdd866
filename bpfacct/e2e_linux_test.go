package bpfacct

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Test hosts: side A (where the Accounter runs) and side B, joined by a veth.
const (
	hostA  = "198.18.0.1"
	hostB  = "198.18.0.2"
	vethA  = "tva"
	vethB  = "tvb"
	tcpSnk = 7000
	udpSnk = 7001
)

type testNet struct{ a, b string }

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and opens AF_PACKET sockets")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTestNet makes two namespaces tbpfacct<rand>a/b joined by a veth
// (tva 198.18.0.1 in a, tvb 198.18.0.2 in b) and removes them at cleanup.
func newTestNet(t testing.TB) testNet {
	t.Helper()
	var r [3]byte
	_, _ = rand.Read(r[:])
	base := "tbpfacct" + hex.EncodeToString(r[:])
	tn := testNet{a: base + "a", b: base + "b"}
	for _, ns := range []string{tn.a, tn.b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", tn.a, "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", tn.b)
	run(t, "ip", "-n", tn.a, "addr", "add", hostA+"/24", "dev", vethA)
	run(t, "ip", "-n", tn.b, "addr", "add", hostB+"/24", "dev", vethB)
	// No IPv6 link-local addresses: their duplicate detection, MLD reports
	// and router solicitations would cross the veth at random moments for
	// seconds and blur the counts compared at a window's edges.
	run(t, "ip", "-n", tn.a, "link", "set", vethA, "addrgenmode", "none")
	run(t, "ip", "-n", tn.b, "link", "set", vethB, "addrgenmode", "none")
	for _, c := range [][]string{{tn.a, vethA}, {tn.a, "lo"}, {tn.b, vethB}, {tn.b, "lo"}} {
		run(t, "ip", "-n", c[0], "link", "set", c[1], "up")
	}
	return tn
}

// helper is a running copy of the test binary inside a namespace.
type helper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startHelper(t testing.TB, ns, mode string, env ...string) *helper {
	t.Helper()
	return startHelperWrapped(t, ns, nil, mode, env...)
}

// startHelperWrapped runs the helper through wrap (a command and its
// arguments, such as setpriv with options) inside ns.
func startHelperWrapped(t testing.TB, ns string, wrap []string, mode string, env ...string) *helper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"netns", "exec", ns}, wrap...), self)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+mode)...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { _ = in.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return h
}

// line reads the helper's next output line, failing after d.
func (h *helper) line(t testing.TB, d time.Duration) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := h.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		if s == "" {
			t.Fatalf("helper %v ended without output", h.cmd.Args)
		}
		return s
	case <-time.After(d):
		t.Fatalf("helper %v: no output after %v", h.cmd.Args, d)
	}
	return ""
}

// accountResult is what the "account" helper reports: counter deltas over
// the traffic window, from the Accounter and from the kernel.
type accountResult struct {
	Iface       IfaceSnapshot
	Remotes     []RemoteStat
	KernelRx    uint64
	KernelTx    uint64
	KernelRxPkt uint64
	KernelTxPkt uint64
	DNS         int64
	OnBytesIn   int64
	OnBytesOut  int64
	Final       Traffic // totals since the start, after Run returned
	Backend     string
	BackendErr  string
}

func runHelper(mode string) int {
	var err error
	switch mode {
	case "sink":
		err = helperSink()
	case "account":
		err = helperAccount()
	case "send":
		err = helperSend()
	case "setup":
		err = helperSetUp()
	case "vanish":
		err = helperVanish()
	case "mixsink":
		err = helperMixSink()
	case "mix":
		err = helperMix()
	case "compare":
		err = helperCompare()
	case "ping":
		err = helperPing()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper", mode+":", err)
		return 1
	}
	return 0
}

// helperSink discards TCP and UDP on side B and answers DNS queries on port
// 53 until its stdin closes.
func helperSink() error {
	tl, err := net.Listen("tcp", net.JoinHostPort(hostB, strconv.Itoa(tcpSnk)))
	if err != nil {
		return err
	}
	ul, err := net.ListenPacket("udp", net.JoinHostPort(hostB, strconv.Itoa(udpSnk)))
	if err != nil {
		return err
	}
	dl, err := net.ListenPacket("udp", net.JoinHostPort(hostB, "53"))
	if err != nil {
		return err
	}
	go discardConns(tl)
	go func() {
		b := make([]byte, 65536)
		for {
			if _, _, err := ul.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	go func() {
		b := make([]byte, 512)
		for {
			n, from, err := dl.ReadFrom(b)
			if err != nil {
				return
			}
			var q layers.DNS
			if q.DecodeFromBytes(b[:n], nil) != nil || len(q.Questions) != 1 {
				continue
			}
			ans := q
			ans.QR, ans.RA = true, true
			ans.Answers = []layers.DNSResourceRecord{{Name: q.Questions[0].Name, Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 60, IP: net.ParseIP(hostB).To4()}}
			ans.ANCount = 1
			if out := serNoT(&ans); out != nil {
				_, _ = dl.WriteTo(out, from)
			}
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// helperSend pushes BPFACCT_TCP_BYTES over TCP, BPFACCT_UDP_PKTS datagrams of
// 1000 bytes and BPFACCT_DNS queries from side A to side B, or runs for
// BPFACCT_SECONDS as fast as it can over TCP.
func helperSend() error {
	dst := hostB
	if secs, _ := strconv.Atoi(os.Getenv("BPFACCT_SECONDS")); secs > 0 {
		c, err := net.Dial("tcp", net.JoinHostPort(dst, strconv.Itoa(tcpSnk)))
		if err != nil {
			return err
		}
		buf := make([]byte, 256<<10)
		end := time.Now().Add(time.Duration(secs) * time.Second)
		var n int64
		for time.Now().Before(end) {
			m, err := c.Write(buf)
			n += int64(m)
			if err != nil {
				return err
			}
		}
		c.Close()
		fmt.Println(n)
		return nil
	}
	tcpBytes, _ := strconv.Atoi(os.Getenv("BPFACCT_TCP_BYTES"))
	udpPkts, _ := strconv.Atoi(os.Getenv("BPFACCT_UDP_PKTS"))
	dnsN, _ := strconv.Atoi(os.Getenv("BPFACCT_DNS"))
	c, err := net.Dial("tcp", net.JoinHostPort(dst, strconv.Itoa(tcpSnk)))
	if err != nil {
		return err
	}
	if err := writeZeros(c, tcpBytes); err != nil {
		return err
	}
	c.Close()
	buf := make([]byte, 1000)
	u, err := net.Dial("udp", net.JoinHostPort(dst, strconv.Itoa(udpSnk)))
	if err != nil {
		return err
	}
	for i := range udpPkts {
		if _, err := u.Write(buf); err != nil {
			return err
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // stay far below the sink's socket buffer
		}
	}
	u.Close()
	d, err := net.Dial("udp", net.JoinHostPort(dst, "53"))
	if err != nil {
		return err
	}
	ans := make([]byte, 512)
	for i := range dnsN {
		q := &layers.DNS{ID: uint16(i), RD: true, QDCount: 1, Questions: []layers.DNSQuestion{{Name: []byte("host.test"), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
		if _, err := d.Write(serNoT(q)); err != nil {
			return err
		}
		_ = d.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := d.Read(ans); err != nil {
			return fmt.Errorf("dns answer %d: %w", i, err)
		}
	}
	fmt.Println("sent")
	return nil
}

// helperAccount runs an Accounter on BPFACCT_IFACE, prints "ready" once it
// captures, waits for a line on stdin (traffic done), and prints the
// accountResult as JSON.
func helperAccount() error {
	iface := os.Getenv("BPFACCT_IFACE")
	var dns, onIn, onOut atomic.Int64
	a, err := New(Config{
		RingOnly:      os.Getenv("BPFACCT_RING_ONLY") != "",
		Ifaces:        []string{iface},
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		PollInterval:  100 * time.Millisecond,
		StatsInterval: 50 * time.Millisecond,
		OnDNS: func(b []byte, tcp bool) {
			var d layers.DNS
			if d.DecodeFromBytes(b, nil) == nil && len(d.Answers) == 1 {
				dns.Add(1)
			}
		},
		OnBytes: func(_ string, in, out int64) { onIn.Add(in); onOut.Add(out) },
	})
	if err != nil {
		return err
	}
	if os.Getenv("BPFACCT_NO_DNS_CAPTURE") != "" {
		a.openDNS = func(ifaceInfo) (packetSource, error) { return nil, errors.New("test: no DNS capture") }
	}
	if os.Getenv("BPFACCT_REFUSE_BPF") != "" {
		a.openCounter = func(ifaceInfo, bool) (kernelSource, error) {
			return nil, fmt.Errorf("%w: test: %w", errBPFRefused, os.ErrPermission)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if s, ok := a.Snapshot().Iface(iface); ok && s.Capturing {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture on %s did not start", iface)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the first ring blocks settle
	k0, s0, err := kernelAndSnap(a, iface)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // block timeout (50ms) + stats interval
	k1, s1, err := kernelAndSnap(a, iface)
	if err != nil {
		return err
	}
	cancel()
	if err := <-errc; err != nil {
		return err
	}
	snap := a.Snapshot() // after the final flush: OnBytes has reported everything
	fin, _ := snap.Iface(iface)
	r := accountResult{
		KernelRx: k1.RxBytes - k0.RxBytes, KernelTx: k1.TxBytes - k0.TxBytes,
		KernelRxPkt: k1.RxPackets - k0.RxPackets, KernelTxPkt: k1.TxPackets - k0.TxPackets,
		DNS: dns.Load(), Remotes: snap.Remotes,
		OnBytesIn: onIn.Load(), OnBytesOut: onOut.Load(), Final: fin.Traffic,
	}
	r.Backend, err = a.Backend()
	if err != nil {
		r.BackendErr = err.Error()
	}
	r.Iface = s1
	r.Iface.Traffic = Traffic{
		BytesIn: s1.BytesIn - s0.BytesIn, BytesOut: s1.BytesOut - s0.BytesOut,
		PacketsIn: s1.PacketsIn - s0.PacketsIn, PacketsOut: s1.PacketsOut - s0.PacketsOut,
	}
	for p, t := range s1.ByProto {
		t0 := s0.ByProto[p]
		r.Iface.ByProto[p] = Traffic{t.BytesIn - t0.BytesIn, t.BytesOut - t0.BytesOut, t.PacketsIn - t0.PacketsIn, t.PacketsOut - t0.PacketsOut}
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func kernelAndSnap(a *Accounter, iface string) (IfaceStat, IfaceSnapshot, error) {
	st, err := IfaceCounters()
	if err != nil {
		return IfaceStat{}, IfaceSnapshot{}, err
	}
	s, _ := a.Snapshot().Iface(iface)
	for _, k := range st {
		if k.Name == iface {
			return k, s, nil
		}
	}
	return IfaceStat{}, s, fmt.Errorf("%s not in the kernel's counters", iface)
}

// helperSetUp toggles BPFACCT_IFACE down and up with SetIfaceUp and prints
// the flags seen after each step.
func helperSetUp() error {
	iface := os.Getenv("BPFACCT_IFACE")
	var steps []string
	for _, up := range []bool{false, true} {
		if err := SetIfaceUp(iface, up); err != nil {
			return err
		}
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		steps = append(steps, strconv.FormatBool(ifc.Flags&net.FlagUp != 0))
	}
	err := SetIfaceUp("tnope0", true)
	steps = append(steps, strconv.FormatBool(err != nil && errors.Is(err, ErrNoInterface)))
	fmt.Println(strings.Join(steps, ","))
	return nil
}

// serNoT serializes one layer outside a test (helpers have no testing.TB).
func serNoT(l gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := l.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		return nil
	}
	return buf.Bytes()
}

func within(got, want uint64, frac float64) bool {
	return math.Abs(float64(got)-float64(want)) <= frac*float64(want)
}

// TestCaptureVethEndToEnd runs the Accounter on one end of a veth while TCP,
// UDP and DNS traffic crosses it, and compares its counts with the kernel's.
//
// It runs once per way of counting: in the kernel (the default where the
// kernel takes the eBPF counter), from the ring (Config.RingOnly), and from
// the ring after the kernel refused the counter (the fallback).
func TestCaptureVethEndToEnd(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name, env, backend string
		refused            bool
	}{
		{"ebpf", "", BackendEBPF, false},
		// DNS answers passed up by the in-kernel counter's own socket.
		{"ebpf-dns", "BPFACCT_NO_DNS_CAPTURE=1", BackendEBPF, false},
		// DNS answers copied whole to the counting ring.
		{"ring-dns", "BPFACCT_RING_ONLY=1 BPFACCT_NO_DNS_CAPTURE=1", BackendRing, false},
		{"ring", "BPFACCT_RING_ONLY=1", BackendRing, false},
		{"fallback", "BPFACCT_REFUSE_BPF=1", BackendRing, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := captureVethEndToEnd(t, strings.Fields(tc.env), nil)
			if r.Backend != tc.backend {
				t.Errorf("Backend() = %q (%s), want %q", r.Backend, r.BackendErr, tc.backend)
			}
			if tc.refused && !strings.Contains(r.BackendErr, errBPFRefused.Error()) {
				t.Errorf("Backend() error %q does not say the kernel refused the counter", r.BackendErr)
			}
		})
	}
}

func captureVethEndToEnd(t *testing.T, env, wrap []string) accountResult {
	tn := newTestNet(t)
	sink := startHelper(t, tn.b, "sink")
	sink.line(t, 10*time.Second)
	acct := startHelperWrapped(t, tn.a, wrap, "account", append(env, "BPFACCT_IFACE="+vethA)...)
	acct.line(t, 20*time.Second)
	const tcpBytes, udpPkts, dnsN = 8 << 20, 2000, 20
	send := startHelper(t, tn.a, "send", "BPFACCT_TCP_BYTES="+strconv.Itoa(tcpBytes),
		"BPFACCT_UDP_PKTS="+strconv.Itoa(udpPkts), "BPFACCT_DNS="+strconv.Itoa(dnsN))
	send.line(t, 30*time.Second)
	_, _ = io.WriteString(acct.in, "done\n")
	var r accountResult
	if err := json.Unmarshal([]byte(acct.line(t, 20*time.Second)), &r); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel rx %d tx %d (pkts %d/%d); captured in %d out %d (pkts %d/%d); drops %d; dns %d",
		r.KernelRx, r.KernelTx, r.KernelRxPkt, r.KernelTxPkt, r.Iface.BytesIn, r.Iface.BytesOut,
		r.Iface.PacketsIn, r.Iface.PacketsOut, r.Iface.Drops, r.DNS)
	if !within(uint64(r.Iface.BytesOut), r.KernelTx, 0.01) || !within(uint64(r.Iface.BytesIn), r.KernelRx, 0.01) {
		t.Errorf("captured bytes in/out %d/%d, kernel rx/tx %d/%d: off by more than 1%%", r.Iface.BytesIn, r.Iface.BytesOut, r.KernelRx, r.KernelTx)
	}
	if !within(uint64(r.Iface.PacketsOut), r.KernelTxPkt, 0.01) || !within(uint64(r.Iface.PacketsIn), r.KernelRxPkt, 0.01) {
		t.Errorf("captured packets in/out %d/%d, kernel %d/%d", r.Iface.PacketsIn, r.Iface.PacketsOut, r.KernelRxPkt, r.KernelTxPkt)
	}
	if tcp := r.Iface.ByProto[ProtoTCP]; tcp.BytesOut < tcpBytes {
		t.Errorf("tcp out %d bytes, sent %d of payload", tcp.BytesOut, tcpBytes)
	}
	if udp := r.Iface.ByProto[ProtoUDP]; udp.PacketsOut < udpPkts+dnsN || udp.BytesOut < udpPkts*1000 || udp.PacketsIn < dnsN {
		t.Errorf("udp %+v: want at least %d packets out (%d bytes) and %d in", udp, udpPkts+dnsN, udpPkts*1000, dnsN)
	}
	if r.DNS != dnsN {
		t.Errorf("OnDNS got %d decodable answers, want %d", r.DNS, dnsN)
	}
	if r.Iface.Drops != 0 {
		t.Errorf("%d capture drops", r.Iface.Drops)
	}
	if r.OnBytesIn != r.Final.BytesIn || r.OnBytesOut != r.Final.BytesOut {
		t.Errorf("OnBytes summed to %d/%d, final snapshot says %d/%d", r.OnBytesIn, r.OnBytesOut, r.Final.BytesIn, r.Final.BytesOut)
	}
	var peer bool
	for _, rs := range r.Remotes {
		if rs.Addr == netip.MustParseAddr(hostB) && rs.Proto == ProtoTCP && rs.BytesOut >= tcpBytes {
			peer = true
		}
	}
	if !peer {
		t.Errorf("no tcp remote row for %s with >= %d bytes out: %+v", hostB, tcpBytes, r.Remotes)
	}
	return r
}

// TestInterfaceVanishes deletes the captured veth mid-capture: Run must log,
// drop it and keep going, and capture it again when it comes back.
func TestInterfaceVanishes(t *testing.T) {
	needRoot(t)
	tn := newTestNet(t)
	h := startHelper(t, tn.a, "vanish")
	if got := h.line(t, 10*time.Second); got != "capturing" {
		t.Fatalf("helper: %s", got)
	}
	run(t, "ip", "-n", tn.a, "link", "del", vethA)
	_, _ = io.WriteString(h.in, "deleted\n")
	if got := h.line(t, 10*time.Second); got != "dropped" {
		t.Fatalf("after delete: %s", got)
	}
	run(t, "ip", "-n", tn.a, "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", tn.b)
	run(t, "ip", "-n", tn.a, "link", "set", vethA, "up")
	if got := h.line(t, 10*time.Second); got != "recaptured" {
		t.Fatalf("after re-create: %s", got)
	}
	if got := h.line(t, 10*time.Second); got != "clean" {
		t.Fatalf("at stop: %s", got)
	}
}

// helperVanish follows TestInterfaceVanishes' steps with a default Accounter
// (every up, non-loopback interface).
func helperVanish() error {
	a, err := New(Config{PollInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	wait := func(capturing bool) error {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if s, ok := a.Snapshot().Iface(vethA); ok && s.Capturing == capturing {
				return nil
			}
			select {
			case err := <-errc:
				return fmt.Errorf("Run returned early: %v", err)
			default:
			}
		}
		return fmt.Errorf("%s capturing never became %v", vethA, capturing)
	}
	if err := wait(true); err != nil {
		return err
	}
	if s, _ := a.Snapshot().Iface("lo"); s.Capturing {
		return fmt.Errorf("loopback captured by default")
	}
	fmt.Println("capturing")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	if err := wait(false); err != nil {
		return err
	}
	fmt.Println("dropped")
	if err := wait(true); err != nil {
		return err
	}
	fmt.Println("recaptured")
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-time.After(5 * time.Second):
		return fmt.Errorf("Run did not return after cancel")
	}
	fmt.Println("clean")
	return nil
}

func TestSetIfaceUp(t *testing.T) {
	needRoot(t)
	tn := newTestNet(t)
	h := startHelper(t, tn.a, "setup", "BPFACCT_IFACE="+vethA)
	if got := h.line(t, 10*time.Second); got != "false,true,true" {
		t.Fatalf("flags after down, up, missing iface = %s, want false,true,true", got)
	}
}

// discardConns reads every connection l accepts to its end, until l closes.
func discardConns(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
	}
}

// writeZeros writes n zero bytes to w, 64 KiB at a time.
func writeZeros(w io.Writer, n int) error {
	buf := make([]byte, 64<<10)
	for left := n; left > 0; left -= len(buf) {
		if _, err := w.Write(buf[:min(left, len(buf))]); err != nil {
			return err
		}
	}
	return nil
}
