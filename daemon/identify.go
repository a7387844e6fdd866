package daemon

import (
	"context"
	"errors"
	"net/netip"

	"github.com/netshape/netshape/bpfacct"
	"github.com/netshape/netshape/dnsmap"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/procmap"
)

// identify fills in the process that owns f's client socket. A socket whose
// owner cannot be found leaves the flow "unknown" (with the uid if known):
// never an error that drops the connection.
func (d *Daemon) identify(f *flow.Flow) {
	p, err := d.procs.Lookup(f.Src, f.Dst)
	if err != nil && !errors.Is(err, procmap.ErrNotFound) {
		d.log.Debug("process lookup failed", "flow", f.ID, "err", err)
	}
	setProc(f, p)
}

// setProc records on f the process that owns it.
func setProc(f *flow.Flow, p procmap.Proc) {
	f.PID, f.PPID, f.Exe, f.Cmdline = p.PID, p.PPID, p.Exe, p.Cmdline
	f.UID, f.User, f.Cgroup = p.UID, p.User, p.Cgroup
}

// identifyFast is identify when the BPF connect recorder has the
// connection; false leaves the slower lookup to identify on a goroutine.
func (d *Daemon) identifyFast(f *flow.Flow) bool {
	p, ok := d.procs.LookupFast(f.Src, f.Dst)
	if ok {
		setProc(f, p)
	}
	return ok
}

// dnsName is the name the app resolved for ip, learnt from DNS answers seen on
// the wire.
func (d *Daemon) dnsName(ip netip.Addr) (string, string) {
	if n, ok := d.names.Name(ip); ok {
		return n, flow.HostDNS
	}
	return "", ""
}

// laterName is a name that costs the flow no wait: DNS again (the answer may
// have been captured since the accept), else a cached reverse lookup (one is
// started in the background when none is cached).
func (d *Daemon) laterName(ip netip.Addr) (string, string) {
	if n, ok := d.names.Name(ip); ok {
		return n, flow.HostDNS
	}
	if d.cfg.PTR {
		if n, ok := d.names.PTR(ip); ok {
			return n, flow.HostPTR
		}
	}
	return "", ""
}

// startCapture runs interface accounting, which also feeds DNS answers to
// dnsmap. A system where capture cannot run still proxies; it says so.
func (d *Daemon) startCapture(ctx context.Context) {
	if !d.cfg.Capture {
		return
	}
	a, err := bpfacct.New(bpfacct.Config{
		Ifaces: d.cfg.Ifaces,
		OnDNS: func(p []byte, tcp bool) {
			if tcp {
				d.names.ObserveTCP(p)
			} else {
				d.names.ObserveUDP(p)
			}
		},
		OnBytes: d.ifaceBytes,
		Logger:  d.log.With("part", "capture"),
	})
	if err != nil {
		d.warn("interface capture is off: " + err.Error())
		return
	}
	d.acct = a
	if name, err := a.Backend(); err != nil {
		d.log.Info("interface accounting reads every packet (its in-kernel counter is off)", "backend", name, "reason", err)
	} else {
		d.log.Debug("interface accounting", "backend", name)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := a.Run(ctx); err != nil {
			d.warn("interface capture stopped: " + err.Error() + " (host names from DNS and interface accounting are unavailable)")
		}
	}()
}

func (d *Daemon) newNameMaps() {
	// The BPF connect recorder makes a lookup ~3 µs instead of a sock_diag
	// query and a /proc scan (tens of µs to ms) on every connection's setup
	// path; where the kernel or permissions refuse it, sock_diag answers.
	d.procs = procmap.New(procmap.Options{Logger: d.log.With("part", "procmap"), BPF: true, BPFIgnoreSelf: true})
	if name, err := d.procs.Backend(); err != nil {
		d.log.Info("process lookup without its BPF fast path (slower per connection)", "backend", name, "reason", err)
	} else {
		d.log.Debug("process lookup", "backend", name)
	}
	d.names = dnsmap.New(dnsmap.Config{Logger: d.log.With("part", "dnsmap")})
}
