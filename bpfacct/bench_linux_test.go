package bpfacct

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkCaptureVeth measures capture fidelity at full veth speed: iperf3
// (or the Go sender when iperf3 is missing) pushes TCP from namespace A to B
// for BPFACCT_BENCH_SECONDS (default 4) while an Accounter captures on A's
// end. BPFACCT_IPERF_ARGS adds iperf3 client flags (for example "-u -b 0 -l 64"
// for a small-packet flood). Metrics: captured/kernel byte ratio (1.0 is perfect), capture drops
// and the traffic rate. Needs root. Run once:
//
//	go test -run '^$' -bench CaptureVeth -benchtime 1x ./bpfacct
func BenchmarkCaptureVeth(b *testing.B) {
	needRoot(b)
	secs := 4
	for range b.N {
		tn := newTestNet(b)
		var load func()
		if _, err := exec.LookPath("iperf3"); err == nil {
			srv := exec.Command("ip", "netns", "exec", tn.b, "iperf3", "-s", "-1", "-B", hostB)
			if err := srv.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
			time.Sleep(300 * time.Millisecond)
			load = func() {
				args := []string{"ip", "netns", "exec", tn.a, "iperf3", "-c", hostB, "-t", strconv.Itoa(secs)}
				args = append(args, strings.Fields(os.Getenv("BPFACCT_IPERF_ARGS"))...)
				run(b, args...)
			}
		} else {
			sink := startHelper(b, tn.b, "sink")
			sink.line(b, 10*time.Second)
			load = func() {
				s := startHelper(b, tn.a, "send", "BPFACCT_SECONDS="+strconv.Itoa(secs))
				s.line(b, time.Duration(secs+20)*time.Second)
			}
		}
		acct := startHelper(b, tn.a, "account", "BPFACCT_IFACE="+vethA)
		acct.line(b, 20*time.Second)
		start := time.Now()
		load()
		el := time.Since(start)
		_, _ = io.WriteString(acct.in, "done\n")
		var r accountResult
		if err := json.Unmarshal([]byte(acct.line(b, 20*time.Second)), &r); err != nil {
			b.Fatal(err)
		}
		kern := float64(r.KernelRx + r.KernelTx)
		capd := float64(r.Iface.BytesIn + r.Iface.BytesOut)
		b.ReportMetric(capd/kern, "captured/kernel")
		b.ReportMetric(float64(r.Iface.Drops), "drops")
		b.ReportMetric(kern*8/el.Seconds()/1e9, "Gbit/s")
		b.ReportMetric(float64(r.KernelRxPkt+r.KernelTxPkt)/el.Seconds(), "kernel-pkts/s")
		b.Logf("kernel %d bytes %d pkts; captured %d bytes %d pkts; drops %d", int64(kern), r.KernelRxPkt+r.KernelTxPkt,
			int64(capd), r.Iface.PacketsIn+r.Iface.PacketsOut, r.Iface.Drops)
	}
}

// BenchmarkCaptureOverhead measures what counting costs a bulk TCP transfer
// across a veth pair, in one run: the Go sender pushes TCP from namespace A
// to B for BPFACCT_BENCH_SECONDS (default 3) with no Accounter, with one
// counting from the ring (RingOnly) and with one counting in the kernel
// (eBPF), all on A's end. Metrics: throughput of each, the ratios to the
// uncaptured run, and the Accounter's CPU time per GB transferred. Needs
// root. Run once:
//
//	go test -run '^$' -bench CaptureOverhead -benchtime 1x ./bpfacct
func BenchmarkCaptureOverhead(b *testing.B) {
	needRoot(b)
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("BPFACCT_BENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	tn := newTestNet(b)
	sink := startHelper(b, tn.b, "sink")
	sink.line(b, 10*time.Second)
	modes := []struct{ name, env string }{{"none", ""}, {"ring", "BPFACCT_RING_ONLY=1"}, {"ebpf", ""}}
	var mbps, cpuPerGB [3]float64
	for range b.N {
		for i, m := range modes {
			var acct *helper
			if m.name != "none" {
				acct = startHelper(b, tn.a, "account", "BPFACCT_IFACE="+vethA, m.env)
				acct.line(b, 20*time.Second)
			}
			s := startHelper(b, tn.a, "send", "BPFACCT_SECONDS="+strconv.Itoa(secs))
			sent, err := strconv.ParseInt(s.line(b, time.Duration(secs+20)*time.Second), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			mbps[i] += float64(sent) / 1e6 / float64(secs)
			if acct == nil {
				continue
			}
			_, _ = io.WriteString(acct.in, "done\n")
			var r accountResult
			if err := json.Unmarshal([]byte(acct.line(b, 20*time.Second)), &r); err != nil {
				b.Fatal(err)
			}
			if want := map[string]string{"ring": BackendRing, "ebpf": BackendEBPF}[m.name]; r.Backend != want {
				b.Fatalf("%s run counted with %q (%s)", m.name, r.Backend, r.BackendErr)
			}
			_ = acct.in.Close()
			_ = acct.cmd.Wait()
			if st := acct.cmd.ProcessState; st != nil {
				cpuPerGB[i] += (st.UserTime() + st.SystemTime()).Seconds() * 1e3 / (float64(sent) / 1e9)
			}
		}
	}
	n := float64(b.N)
	for i, m := range modes {
		b.ReportMetric(mbps[i]/n, m.name+"-MB/s")
		if i > 0 {
			b.ReportMetric(mbps[i]/mbps[0], m.name+"/none")
			b.ReportMetric(cpuPerGB[i]/n, m.name+"-cpu-ms/GB")
		}
	}
}
