package bpfacct

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultSnaplen       = 128
	DefaultMaxRemotes    = 4096
	DefaultPollInterval  = time.Second
	DefaultStatsInterval = 250 * time.Millisecond
	DefaultRingBytes     = 8 << 20
)

// Sentinel errors, tested with errors.Is.
var (
	// ErrPermission: opening a capture socket was refused.
	ErrPermission = errors.New("bpfacct: permission denied (run as root; on Linux CAP_NET_RAW captures and CAP_NET_ADMIN sets links up or down)")
	// ErrUnsupported: this OS has no capture or interface backend.
	ErrUnsupported = errors.New("bpfacct: not supported on this operating system")
	// ErrRunning: Run was called while another Run of the same Accounter is going.
	ErrRunning = errors.New("bpfacct: Accounter is already running")
	// ErrNoInterface: the named interface does not exist.
	ErrNoInterface = errors.New("bpfacct: no such network interface")
	// ErrConfig: a Config field is out of range.
	ErrConfig = errors.New("bpfacct: invalid configuration")
)

// Config configures an Accounter. The zero value captures on every interface
// that is up and not loopback, with default sizes.
type Config struct {
	// Ifaces names the interfaces to capture on. Empty: every interface that is
	// up and not a loopback, following interfaces as they appear and vanish.
	// Named interfaces that do not exist yet are captured when they appear.
	Ifaces []string
	// Snaplen is how many bytes of each non-DNS packet are copied from the
	// kernel (default 128: enough for Ethernet + VLAN + IPv6 + extension
	// headers + TCP with options). DNS answers are always copied whole.
	Snaplen int
	// RingBytes is the size of each interface's capture ring (Linux) or read
	// buffer (BSD). Default 8 MiB. Rounded to whole 256 KiB blocks on Linux.
	RingBytes int
	// MaxRemotes caps the per-remote table of each interface (and of the
	// merged Snapshot). Default 4096.
	MaxRemotes int
	// PollInterval is how often the interface list is re-read. Default 1s.
	PollInterval time.Duration
	// StatsInterval is how often capture drops are read and OnBytes is called.
	// Default 250ms.
	StatsInterval time.Duration
	// OnDNS receives the TCP or UDP payload of every packet from source port
	// 53 whose payload was captured whole (TCP payloads keep their 2-byte
	// length prefixes and may hold part of a message or several). It runs on
	// a capture goroutine: it must be quick, safe for concurrent use, and copy
	// payload if it keeps it (the bytes are the kernel ring's).
	OnDNS func(payload []byte, tcp bool)
	// OnBytes receives, every StatsInterval and when a capture stops, the
	// bytes an interface carried since the previous call (only when some
	// did). It runs on the capture goroutine: keep it quick (feeding
	// interface quotas and meters is the intended use).
	OnBytes func(iface string, in, out int64)
	// RingOnly counts from the capture ring even where the kernel accepts the
	// eBPF counter (Linux): for comparisons, and as an escape hatch.
	RingOnly bool
	// Logger gets capture starts, stops and errors. Default: slog.Default().
	Logger *slog.Logger
}

// Backend names, as Accounter.Backend returns them.
const (
	// BackendEBPF: an eBPF socket filter counts in the kernel (Linux); no
	// packet is copied to user space but DNS answers.
	BackendEBPF = "ebpf"
	// BackendRing: every packet's headers are copied to an AF_PACKET ring
	// and counted in user space (Linux without the eBPF counter).
	BackendRing = "ring"
	// BackendBPF: every packet is read from /dev/bpf (darwin, freebsd).
	BackendBPF = "bpf"
)

// Accounter captures on interfaces and counts their traffic.
type Accounter struct {
	cfg     Config
	log     *slog.Logger
	running atomic.Bool

	mu     sync.Mutex
	ifaces map[string]*ifaceEntry // by name; kept after an interface vanishes
	// kernelErr is why the eBPF counter is not used (nil: it is).
	kernelErr error

	// openCounter opens the in-kernel counter on an interface (a seam for
	// the fallback tests).
	openCounter func(in ifaceInfo, passDNS bool) (kernelSource, error)
	// openDNS opens the DNS answers' own capture (a seam for tests).
	openDNS func(in ifaceInfo) (packetSource, error)
}

// kernelSource is a capture whose counting happens in the kernel: it yields
// only the DNS answers it was asked to pass up, and collect folds what the
// kernel counted into c.
type kernelSource interface {
	packetSource
	// collect adds what was counted since the last call to c.
	collect(c *counters) error
	// finish detaches the counter, adds what is left to c and frees it.
	finish(c *counters) error
}

// ifaceEntry is the Accounter's record of one interface.
type ifaceEntry struct {
	c         *counters
	capturing atomic.Bool
}

// New checks cfg, fills defaults and returns an Accounter. Nothing is opened
// until Run.
func New(cfg Config) (*Accounter, error) {
	if cfg.Snaplen == 0 {
		cfg.Snaplen = DefaultSnaplen
	}
	if cfg.RingBytes == 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if cfg.MaxRemotes == 0 {
		cfg.MaxRemotes = DefaultMaxRemotes
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	switch {
	case cfg.Snaplen < 64 || cfg.Snaplen > dnsSnaplen:
		return nil, fmt.Errorf("%w: Snaplen %d: use 64..65535 (128 reads all usual headers)", ErrConfig, cfg.Snaplen)
	case cfg.RingBytes < 1<<20:
		return nil, fmt.Errorf("%w: RingBytes %d: use at least 1 MiB", ErrConfig, cfg.RingBytes)
	case cfg.MaxRemotes < 1:
		return nil, fmt.Errorf("%w: MaxRemotes %d: use at least 1", ErrConfig, cfg.MaxRemotes)
	case cfg.PollInterval < 10*time.Millisecond || cfg.StatsInterval < 10*time.Millisecond:
		return nil, fmt.Errorf("%w: PollInterval and StatsInterval must be at least 10ms", ErrConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Accounter{cfg: cfg, log: log.With("pkg", "bpfacct"), ifaces: map[string]*ifaceEntry{}}
	a.openDNS = openDNSSource
	a.openCounter = func(in ifaceInfo, passDNS bool) (kernelSource, error) {
		return openKernelCounter(in, a.cfg.MaxRemotes, passDNS, min(a.cfg.StatsInterval, 100*time.Millisecond))
	}
	switch {
	case cfg.RingOnly:
		a.kernelErr = errRingOnly
	default:
		// Loading the program once costs about a millisecond and tells
		// Backend the truth before Run.
		a.kernelErr = probeKernelCounting()
	}
	return a, nil
}

var errRingOnly = errors.New("Config.RingOnly is set")

// Backend names how packets are counted: BackendEBPF, or the user-space
// capture (BackendRing on Linux, BackendBPF on darwin and freebsd, "none"
// elsewhere) together with the reason the eBPF counter is not used. The
// daemon logs it at start. It can change from BackendEBPF to BackendRing
// when the kernel refuses the counter on an interface later; captures that
// already count in the kernel keep doing so.
func (a *Accounter) Backend() (name string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kernelErr == nil {
		return BackendEBPF, nil
	}
	return captureBackend, a.kernelErr
}

func (a *Accounter) useKernel() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kernelErr == nil
}

// refuseKernel switches later captures to the ring for good.
func (a *Accounter) refuseKernel(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kernelErr == nil {
		a.kernelErr = err
		a.log.Warn("the kernel refused the eBPF counter; counting from a capture ring from now on", "err", err)
	}
}

// Run captures until ctx ends, then closes every capture and returns nil.
// It returns an error early only when captures cannot be opened at all
// (ErrPermission, ErrUnsupported) or the interface list cannot be read. An
// interface that vanishes or goes down is logged and dropped; it is captured
// again if it comes back.
func (a *Accounter) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer a.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	caps := map[string]*captureHandle{}
	var wg sync.WaitGroup
	defer func() {
		for _, h := range caps {
			h.cancel()
		}
		wg.Wait()
	}()
	failed := map[string]bool{} // interfaces whose last open failed (log once)
	first := true
	tick := time.NewTicker(a.cfg.PollInterval)
	defer tick.Stop()
	for {
		infos, err := listIfaces()
		if err != nil {
			if first {
				return fmt.Errorf("bpfacct: list interfaces: %w", err)
			}
			a.log.Warn("cannot list interfaces; keeping current captures", "err", err)
		}
		if err == nil {
			if err := a.reconcile(ctx, infos, caps, failed, &wg); err != nil && first {
				return err
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// captureHandle is one running capture.
type captureHandle struct {
	info   ifaceInfo
	cancel context.CancelFunc
	done   chan struct{}
	addrs  *atomic.Pointer[[]netip.Addr]
}

// reconcile starts captures for wanted interfaces and stops the others. It
// returns ErrPermission or ErrUnsupported when an open fails that way.
func (a *Accounter) reconcile(ctx context.Context, infos []ifaceInfo, caps map[string]*captureHandle, failed map[string]bool, wg *sync.WaitGroup) error {
	want := map[string]ifaceInfo{}
	for _, in := range infos {
		if a.wanted(in) {
			want[in.Name] = in
		}
	}
	for name, h := range caps {
		in, ok := want[name]
		select {
		case <-h.done:
			delete(caps, name) // ended by itself (error logged there); maybe restart below
			continue
		default:
		}
		if !ok || in.Index != h.info.Index || string(in.MAC) != string(h.info.MAC) || in.Link != h.info.Link {
			reason := "interface gone or down"
			if ok {
				reason = "interface changed"
			}
			a.log.Info("stopping capture", "iface", name, "reason", reason)
			h.cancel()
			<-h.done
			delete(caps, name)
			continue
		}
		addrs := in.Addrs
		h.addrs.Store(&addrs)
	}
	var openErr error
	for name, in := range want {
		if caps[name] != nil {
			continue
		}
		src, dns, err := a.open(in)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				err = fmt.Errorf("%w: open capture on %s: %w", ErrPermission, name, err)
			}
			if errors.Is(err, ErrPermission) || errors.Is(err, ErrUnsupported) {
				openErr = err
			}
			if !failed[name] {
				a.log.Warn("cannot capture on interface; will retry", "iface", name, "err", err)
				failed[name] = true
			}
			continue
		}
		delete(failed, name)
		e := a.entry(name)
		cctx, cancel := context.WithCancel(ctx)
		h := &captureHandle{info: in, cancel: cancel, done: make(chan struct{}), addrs: new(atomic.Pointer[[]netip.Addr])}
		addrs := in.Addrs
		h.addrs.Store(&addrs)
		caps[name] = h
		_, inKernel := src.(kernelSource)
		a.log.Info("capturing", "iface", name, "index", in.Index, "link", in.Link.String(), "snaplen", a.cfg.Snaplen, "in_kernel", inKernel)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(h.done)
			onDNS := a.cfg.OnDNS
			var dnsDone chan struct{}
			if dns != nil {
				dnsDone = make(chan struct{})
				go func() {
					defer close(dnsDone)
					a.captureDNS(cctx, in, h.addrs, dns)
				}()
				onDNS = nil
			}
			a.capture(cctx, name, in, h.addrs, e, src, onDNS)
			if dnsDone != nil {
				cancel()
				<-dnsDone
			}
		}()
	}
	return openErr
}

// open opens what counts on in: the in-kernel counter when the kernel takes
// it, else the capture ring; and, when OnDNS is set, DNS answers get a
// capture of their own that hands each one over at once (the counting ring
// delivers in blocks, and an app connects a moment after its answer
// arrives). When that capture cannot be opened, answers come with the
// counting source: the ring copies them whole, the in-kernel counter passes
// them (and only them) up.
func (a *Accounter) open(in ifaceInfo) (src, dns packetSource, err error) {
	if a.cfg.OnDNS != nil {
		if dns, err = a.openDNS(in); err != nil {
			dns = nil
			if !errors.Is(err, ErrUnsupported) {
				a.log.Debug("no separate DNS capture; answers come with the counting source", "iface", in.Name, "err", err)
			}
		}
	}
	closeDNS := func() {
		if dns != nil {
			dns.close()
			dns = nil
		}
	}
	if a.useKernel() {
		kc, err := a.openCounter(in, a.cfg.OnDNS != nil && dns == nil)
		if err == nil {
			return kc, dns, nil
		}
		if !errors.Is(err, errBPFRefused) {
			closeDNS()
			return nil, nil, err
		}
		a.refuseKernel(err)
	}
	src, err = openSource(in, a.cfg.Snaplen, a.cfg.RingBytes)
	if err != nil {
		closeDNS()
		return nil, nil, err
	}
	return src, dns, nil
}

func (a *Accounter) wanted(in ifaceInfo) bool {
	if !in.Up {
		return false
	}
	if len(a.cfg.Ifaces) == 0 {
		return !in.Loopback
	}
	return slices.Contains(a.cfg.Ifaces, in.Name)
}

func (a *Accounter) entry(name string) *ifaceEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.ifaces[name]
	if e == nil {
		e = &ifaceEntry{c: newCounters(a.cfg.MaxRemotes)}
		a.ifaces[name] = e
	}
	return e
}

// capture reads src until ctx ends or src fails, counting into e.
func (a *Accounter) capture(ctx context.Context, name string, in ifaceInfo, addrs *atomic.Pointer[[]netip.Addr], e *ifaceEntry, src packetSource, onDNS func([]byte, bool)) {
	e.capturing.Store(true)
	defer e.capturing.Store(false)
	var stop atomic.Bool
	unhook := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer unhook()

	c := e.c
	mac := in.MAC
	// With the in-kernel counter, the packets read here are DNS answers
	// passed up for OnDNS only: the kernel counted them already.
	kc, _ := src.(kernelSource)
	count := c
	if kc != nil {
		count = newCounters(1)
	}
	var (
		p                 packetInfo
		lastIn, lastOut   int64
		nextStats         = time.Now().Add(a.cfg.StatsInterval)
		dnsCut, undecoded uint64
		finished          bool // the in-kernel counter is closed
	)
	flush := func() {
		if kc != nil && !finished {
			if err := kc.collect(c); err != nil {
				a.log.Warn("cannot read the in-kernel counters", "iface", name, "err", err)
			}
		}
		c.mu.Lock()
		drops := c.drops - c.dropsBase
		c.mu.Unlock()
		if !finished {
			d, err := src.drops()
			if err != nil {
				a.log.Debug("cannot read capture statistics", "iface", name, "err", err)
			} else {
				drops = d
			}
		}
		c.makeRoom()
		c.mu.Lock()
		c.drops = c.dropsBase + drops
		c.dnsCut += dnsCut
		c.undecoded += undecoded
		t := c.totalsLocked()
		c.mu.Unlock()
		dnsCut, undecoded = 0, 0
		if a.cfg.OnBytes != nil && (t.BytesIn != lastIn || t.BytesOut != lastOut) {
			a.cfg.OnBytes(name, t.BytesIn-lastIn, t.BytesOut-lastOut)
		}
		lastIn, lastOut = t.BytesIn, t.BytesOut
	}
	// The counters may already hold totals from an earlier capture of the
	// same interface: OnBytes reports only what this one adds.
	c.mu.Lock()
	t0 := c.totalsLocked()
	c.mu.Unlock()
	lastIn, lastOut = t0.BytesIn, t0.BytesOut
	defer func() {
		flush()
		if kc != nil {
			// Detach first, then read what came in since the last flush.
			if err := kc.finish(c); err != nil {
				a.log.Warn("cannot read the in-kernel counters at stop", "iface", name, "err", err)
			}
			finished = true
			flush()
		}
		src.close()
		c.mu.Lock()
		c.dropsBase = c.drops
		c.mu.Unlock()
		a.log.Info("capture stopped", "iface", name)
	}()

	for !stop.Load() {
		data, wire, ts, err := src.next()
		if errors.Is(err, errNoPacket) {
			if time.Now().After(nextStats) {
				flush()
				nextStats = time.Now().Add(a.cfg.StatsInterval)
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("capture failed; dropping interface until it is back", "iface", name, "err", err)
			}
			return
		}
		if !countFrame(count, &p, data, wire, in.Link, mac, addrs, onDNS) && kc == nil {
			undecoded++
		}
		if p.HasPorts && p.SrcPort == dnsPort && len(p.Payload) > 0 && !p.Complete {
			dnsCut++
		}
		if ts.After(nextStats) {
			flush()
			nextStats = ts.Add(a.cfg.StatsInterval)
		}
	}
}

// captureDNS reads DNS answers from src (a capture that sees nothing else)
// and hands them to OnDNS. Nothing is counted here: the counting ring sees
// the same packets.
func (a *Accounter) captureDNS(ctx context.Context, in ifaceInfo, addrs *atomic.Pointer[[]netip.Addr], src packetSource) {
	defer src.close()
	var stop atomic.Bool
	unhook := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer unhook()
	scratch := newCounters(1)
	var p packetInfo
	for !stop.Load() {
		data, wire, _, err := src.next()
		if errors.Is(err, errNoPacket) {
			continue
		}
		if err != nil {
			return
		}
		countFrame(scratch, &p, data, wire, in.Link, in.MAC, addrs, a.cfg.OnDNS)
	}
}

// countFrame decodes one captured frame, counts it in c and hands a whole
// DNS answer to onDNS. It is the one path every frame takes, live or replayed
// from a pcap file in tests. It reports whether the headers decoded cleanly.
func countFrame(c *counters, p *packetInfo, data []byte, wire int, link LinkType, mac []byte, addrs *atomic.Pointer[[]netip.Addr], onDNS func([]byte, bool)) bool {
	err := decode(data, link, p)
	var as []netip.Addr
	if !p.HasEth && addrs != nil {
		if ap := addrs.Load(); ap != nil {
			as = *ap
		}
	}
	c.record(classify(p, wire, mac, as))
	if onDNS != nil && p.HasPorts && p.SrcPort == dnsPort && p.Complete && len(p.Payload) > 0 {
		onDNS(p.Payload, p.TCP)
	}
	return err == nil
}

// IfaceSnapshot is what one interface counted.
type IfaceSnapshot struct {
	Name string `json:"name"`
	// Capturing is false when the interface is gone, down, or could not be opened.
	Capturing bool `json:"capturing"`
	Traffic
	ByProto map[Proto]Traffic `json:"by_proto"`
	// Drops is how many packets the kernel could not put in the capture ring
	// (they are missing from the counts).
	Drops uint64 `json:"drops"`
	// DNSCut counts DNS answers not handed to OnDNS because they were cut.
	DNSCut uint64 `json:"dns_cut,omitempty"`
	// Undecoded counts frames whose headers could not be read in full; they
	// are counted, possibly under "other" and without a remote.
	Undecoded uint64 `json:"undecoded,omitempty"`
}

// RemoteStat is the traffic exchanged with one remote address over one
// protocol, summed over interfaces. Other rows (Addr invalid) hold remotes
// folded out of the bounded tables.
type RemoteStat struct {
	Addr  netip.Addr `json:"addr,omitzero"`
	Other bool       `json:"other,omitempty"`
	Proto Proto      `json:"proto"`
	Traffic
}

// Snapshot is a consistent-per-interface copy of the counters.
type Snapshot struct {
	Time   time.Time       `json:"time"`
	Ifaces []IfaceSnapshot `json:"ifaces"`
	// Remotes is sorted by total bytes, largest first, at most MaxRemotes
	// named rows, then the "other" rows.
	Remotes []RemoteStat `json:"remotes"`
}

// Iface returns the snapshot of the named interface.
func (s Snapshot) Iface(name string) (IfaceSnapshot, bool) {
	for _, i := range s.Ifaces {
		if i.Name == name {
			return i, true
		}
	}
	return IfaceSnapshot{}, false
}

// Snapshot copies the counters. It is safe to call at any time, from any
// goroutine, and costs one short lock per interface.
func (a *Accounter) Snapshot() Snapshot {
	a.mu.Lock()
	names := make([]string, 0, len(a.ifaces))
	entries := make(map[string]*ifaceEntry, len(a.ifaces))
	for n, e := range a.ifaces {
		names = append(names, n)
		entries[n] = e
	}
	a.mu.Unlock()
	slices.Sort(names)

	s := Snapshot{Time: time.Now()}
	remotes := map[remoteKey]Traffic{}
	var other [numProtos]Traffic
	for _, n := range names {
		e := entries[n]
		is := IfaceSnapshot{Name: n, Capturing: e.capturing.Load(), ByProto: make(map[Proto]Traffic, numProtos)}
		c := e.c
		c.mu.Lock()
		for p, t := range c.byProto {
			is.ByProto[Proto(p)] = t
			is.Traffic.add(t)
		}
		is.Drops, is.DNSCut, is.Undecoded = c.drops, c.dnsCut, c.undecoded
		for k, t := range c.remotes {
			r := remotes[k]
			r.add(*t)
			remotes[k] = r
		}
		for p, t := range c.other {
			other[p].add(t)
		}
		c.mu.Unlock()
		s.Ifaces = append(s.Ifaces, is)
	}
	s.Remotes = make([]RemoteStat, 0, min(len(remotes), a.cfg.MaxRemotes)+int(numProtos))
	for k, t := range remotes {
		s.Remotes = append(s.Remotes, RemoteStat{Addr: k.addr, Proto: k.proto, Traffic: t})
	}
	slices.SortFunc(s.Remotes, func(x, y RemoteStat) int {
		if c := cmp.Compare(y.Bytes(), x.Bytes()); c != 0 {
			return c
		}
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return cmp.Compare(x.Proto, y.Proto)
	})
	if len(s.Remotes) > a.cfg.MaxRemotes {
		for _, r := range s.Remotes[a.cfg.MaxRemotes:] {
			other[r.Proto].add(r.Traffic)
		}
		s.Remotes = s.Remotes[:a.cfg.MaxRemotes]
	}
	for p, t := range other {
		if t != (Traffic{}) {
			s.Remotes = append(s.Remotes, RemoteStat{Other: true, Proto: Proto(p), Traffic: t})
		}
	}
	return s
}

// ifaceInfo is what the capture needs to know about an interface.
type ifaceInfo struct {
	Name     string
	Index    int
	Up       bool
	Loopback bool
	MAC      net.HardwareAddr
	Link     LinkType
	Addrs    []netip.Addr
}

// listIfaces reads the interface list with its addresses.
func listIfaces() ([]ifaceInfo, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]ifaceInfo, 0, len(ifs))
	for _, ifc := range ifs {
		in := ifaceInfo{
			Name:     ifc.Name,
			Index:    ifc.Index,
			Up:       ifc.Flags&net.FlagUp != 0,
			Loopback: ifc.Flags&net.FlagLoopback != 0,
			MAC:      ifc.HardwareAddr,
			Link:     linkTypeOf(ifc),
		}
		if in.Link != LinkEthernet {
			in.MAC = nil
		}
		if as, err := ifc.Addrs(); err == nil {
			for _, a := range as {
				if pn, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(pn.IP); ok {
						in.Addrs = append(in.Addrs, ip.Unmap())
					}
				}
			}
		}
		out = append(out, in)
	}
	return out, nil
}

// errNoPacket is what packetSource.next returns when its poll timed out.
var errNoPacket = errors.New("bpfacct: no packet before the poll timeout")

// packetSource is the per-OS capture seam.
type packetSource interface {
	// next returns the next frame (valid until the next call), its length
	// on the wire and its capture time; errNoPacket when none arrived within
	// the poll timeout (~100 ms).
	next() (data []byte, wireLen int, ts time.Time, err error)
	// drops is the cumulative count of packets the kernel dropped.
	drops() (uint64, error)
	close()
}
