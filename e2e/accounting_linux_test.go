package e2e

import (
	"encoding/csv"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/internal/nstest"
)

// udpSink counts the UDP bytes it receives inside the server namespace.
func udpSink(t *testing.T, ns string, addr netip.AddrPort) *atomic.Int64 {
	t.Helper()
	var pc *net.UDPConn
	if err := nstest.Do(ns, func() error {
		var err error
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			k, err := pc.Read(buf)
			if err != nil {
				return
			}
			n.Add(int64(k))
		}
	}()
	return &n
}

// sendUDP sends count datagrams of size bytes from the client namespace.
func sendUDP(t *testing.T, ns string, dst netip.AddrPort, count, size int) {
	t.Helper()
	var c net.Conn
	if err := nstest.Do(ns, func() error {
		var err error
		c, err = net.Dial("udp", dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, size)
	for i := 0; i < count; i++ {
		c.Write(b) // errors (a blocked interface) are what some tests expect
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // stay under the receive buffer
		}
	}
}

func (e *env) ifaceReport() control.IfaceReport {
	e.t.Helper()
	var rep control.IfaceReport
	if err := json.Unmarshal([]byte(e.mustNetshape("iface", "--json")), &rep); err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func (e *env) cliIface() control.IfaceEntry {
	e.t.Helper()
	for _, i := range e.ifaceReport().Ifaces {
		if i.Name == e.CliIf {
			return i
		}
	}
	e.t.Fatalf("no %s in netshape iface", e.CliIf)
	return control.IfaceEntry{}
}

func (e *env) waitCapturing() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !e.cliIface().Capturing {
		if time.Now().After(deadline) {
			e.t.Fatal("capture never started on the client veth")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type usageRow struct {
	Key      string `json:"key"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
}

func (e *env) usage(args ...string) []usageRow {
	e.t.Helper()
	var rows []usageRow
	if err := json.Unmarshal([]byte(e.mustNetshape(append([]string{"usage", "--json"}, args...)...)), &rows); err != nil {
		e.t.Fatal(err)
	}
	return rows
}

func TestUsageReconcilesWithKernel(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.waitCapturing()
	before := e.cliIface()
	tcp := netip.AddrPortFrom(nstest.SrvV4, 8093)
	dataServer(t, listen(t, e.Srv, tcp))
	udp := netip.AddrPortFrom(nstest.SrvV4, 9999)
	sink := udpSink(t, e.Srv, udp)
	if got, _, err := download(t, e, tcp, 8_000_000); err != nil || got != 8_000_000 {
		t.Fatalf("download %d %v", got, err)
	}
	sendUDP(t, e.Cli, udp, 1000, 1000)
	deadline := time.Now().Add(5 * time.Second)
	for sink.Load() < 900_000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(600 * time.Millisecond) // two capture stats ticks (250 ms) so the last packets are counted
	after := e.cliIface()
	kernel := (after.KernelIn - before.KernelIn) + (after.KernelOut - before.KernelOut)

	var total int64
	for _, r := range e.usage("--by", "iface") {
		if r.Key == e.CliIf {
			total = r.BytesIn + r.BytesOut
		}
	}
	// The usage rows count from the capture's start, the kernel delta from
	// `before`: what flowed in between (ARP, NDP) is tiny next to 9 MB.
	if d := float64(total-kernel) / float64(kernel); d > 0.01 || d < -0.01 {
		t.Fatalf("usage by iface %d vs kernel %d: %.2f%% apart, want within 1%%", total, kernel, d*100)
	}
	var udpBytes int64
	var app int64
	for _, r := range e.usage("--by", "host", "--app", "unattributed") {
		if r.Key == "udp" {
			udpBytes = r.BytesIn + r.BytesOut
		}
	}
	for _, r := range e.usage("--by", "app") {
		if r.Key != "unattributed" {
			app += r.BytesIn + r.BytesOut
		}
	}
	if udpBytes < 1000*1000 {
		t.Fatalf("unattributed udp = %d bytes, want the 1 MB of datagrams (plus headers)", udpBytes)
	}
	if app < 8_000_000 {
		t.Fatalf("apps account for %d bytes, want the 8 MB download", app)
	}
	// CSV export parses.
	recs, err := csv.NewReader(strings.NewReader(e.mustNetshape("usage", "--csv", "--by", "app"))).ReadAll()
	if err != nil || len(recs) < 3 || recs[0][0] != "app" {
		t.Fatalf("csv %v %v", recs, err)
	}
	for _, r := range recs[1:] {
		if _, err := strconv.ParseInt(r[3], 10, 64); err != nil {
			t.Fatalf("csv row %v", r)
		}
	}
}

func TestIfaceQuotaBlocksTCPAndUDP(t *testing.T) {
	e := newEnv(t)
	e.start()
	e.waitCapturing()
	tcp := netip.AddrPortFrom(nstest.SrvV4, 8094)
	dataServer(t, listen(t, e.Srv, tcp))
	udp := netip.AddrPortFrom(nstest.SrvV4, 9998)
	sink := udpSink(t, e.Srv, udp)
	id := strings.TrimSpace(e.mustNetshape("rule", "add", "--iface", e.CliIf, "--action", "allow", "--quota", "5MB", "--period", "month", "--reset-day", "5"))

	t1 := time.Now()
	got, _, _ := download(t, e, tcp, 10_000_000)
	t.Logf("first download took %v", time.Since(t1))
	if got < 4_500_000 || got > 5_000_000+64<<10 {
		t.Fatalf("download over the quota got %d bytes, want about 5 MB (+ at most one chunk)", got)
	}
	// Blocked: UDP does not get through, nor does a new TCP connection.
	deadline := time.Now().Add(5 * time.Second)
	for !e.cliIface().Blocked && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !e.cliIface().Blocked {
		t.Fatal("interface not reported blocked after its quota ran out")
	}
	sink.Store(0)
	sendUDP(t, e.Cli, udp, 100, 500)
	time.Sleep(200 * time.Millisecond)
	if n := sink.Load(); n != 0 {
		t.Fatalf("%d UDP bytes passed a blocked interface", n)
	}
	t0 := time.Now()
	n0, _, derr := download(t, e, tcp, 100_000)
	t.Logf("blocked download took %v: %v", time.Since(t0), derr)
	if n := n0; n != 0 {
		t.Fatalf("TCP passed a blocked interface: %d bytes", n)
	}
	// A grant resumes both.
	e.mustNetshape("quota", "grant", id, "5MB")
	deadline = time.Now().Add(5 * time.Second)
	for e.cliIface().Blocked && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	sendUDP(t, e.Cli, udp, 100, 500)
	deadline = time.Now().Add(5 * time.Second)
	for sink.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if sink.Load() == 0 {
		t.Fatal("UDP still blocked after quota grant")
	}
	if n, _, err := download(t, e, tcp, 100_000); n != 100_000 {
		t.Fatalf("TCP after grant: %d bytes, %v", n, err)
	}
	// The count survives a restart.
	var qs []struct {
		Used int64 `json:"used"`
	}
	json.Unmarshal([]byte(e.mustNetshape("quotas", "--json")), &qs)
	used := qs[0].Used
	if err := e.stopProcess(); err != nil {
		t.Fatal(err)
	}
	e.start()
	json.Unmarshal([]byte(e.mustNetshape("quotas", "--json")), &qs)
	if len(qs) != 1 || qs[0].Used < used {
		t.Fatalf("after restart used %+v, want >= %d", qs, used)
	}
}
