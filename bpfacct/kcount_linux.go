package bpfacct

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	easm "github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// kernelCounter counts one interface's packets in the kernel: an eBPF
// socket filter on a plain AF_PACKET socket (no ring) adds each packet to
// per-CPU totals and to a per-remote hash, and returns 0, so no packet is
// queued, except DNS answers when passDNS is set (they are read with
// recvfrom, one per call).
//
// The remote map's keys carry a generation bit that the program reads from
// the gen map at each packet. collect flips it at each call and then reads
// and deletes the entries of the generation retired at the call before, which
// no program has touched since (a program runs for microseconds; calls are at
// least 10 ms apart). So every byte is read exactly once and the map holds
// only the remotes of the last two intervals.
type kernelCounter struct {
	fd      int
	prog    *ebpf.Program
	totals  *ebpf.Map
	remotes *ebpf.Map
	gen     *ebpf.Map
	cur     uint32 // generation the program writes now
	prev    kcTotals
	poll    time.Duration
	dropped uint64 // PACKET_STATISTICS resets at each read: the sum so far
	buf     []byte
	once    sync.Once
}

// kcProgram is the loaded program and its maps, before a socket holds it.
type kcProgram struct {
	prog                 *ebpf.Program
	totals, remotes, gen *ebpf.Map
}

func (p *kcProgram) close() {
	if p.prog != nil {
		p.prog.Close()
	}
	for _, m := range []*ebpf.Map{p.totals, p.remotes, p.gen} {
		if m != nil {
			m.Close()
		}
	}
}

// errBPFRefused wraps every failure to create the maps or load the program:
// the kernel does not let us count in it, and the ring path takes over.
var errBPFRefused = errors.New("the kernel refused the eBPF counter")

// loadCounterProgram creates the maps and loads the socket filter for link.
// maxRemotes bounds the remote map (it holds two generations).
func loadCounterProgram(link LinkType, maxRemotes int, passDNS bool) (_ *kcProgram, err error) {
	p := &kcProgram{}
	defer func() {
		if err != nil {
			p.close()
			err = fmt.Errorf("%w: %w", errBPFRefused, err)
		}
	}()
	p.totals, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_acct_totals", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: uint32(kcTotalsSize), MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create per-CPU totals map (needs CAP_BPF or root): %w", err)
	}
	p.remotes, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_acct_remotes", Type: ebpf.Hash, KeySize: kcRemoteKeySize,
		ValueSize: kcRemoteValSize, MaxEntries: uint32(2 * maxRemotes), Flags: unix.BPF_F_NO_PREALLOC})
	if err != nil {
		return nil, fmt.Errorf("create remote hash map: %w", err)
	}
	p.gen, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_acct_gen", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create generation map: %w", err)
	}
	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "ns_acct_count",
		Type:         ebpf.SocketFilter,
		Instructions: counterProgram(link, passDNS, p.totals.FD(), p.remotes.FD(), p.gen.FD()),
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		// A *ebpf.VerifierError prints the verifier log with %+v.
		return nil, fmt.Errorf("load socket filter program: %w", err)
	}
	return p, nil
}

// probeKernelCounting reports whether this kernel and these privileges let
// the counter load (nil) or why not.
func probeKernelCounting() error {
	p, err := loadCounterProgram(LinkEthernet, 1, true)
	if err != nil {
		return err
	}
	p.close()
	return nil
}

// openKernelCounter opens a packet socket on in with the counter attached.
// An error wrapping errBPFRefused means the kernel refused the program;
// others are the socket's (permission, interface gone) like openSource's.
func openKernelCounter(in ifaceInfo, maxRemotes int, passDNS bool, poll time.Duration) (_ kernelSource, err error) {
	p, err := loadCounterProgram(in.Link, maxRemotes, passDNS)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// Protocol 0 receives nothing until bind, so no packet is queued before
	// the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open AF_PACKET socket on %s: %w", in.Name, os.NewSyscallError("socket", err))
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, p.prog.FD()); err != nil {
		return nil, fmt.Errorf("%w: attach socket filter on %s (SO_ATTACH_BPF): %w", errBPFRefused, in.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: in.Index}); err != nil {
		return nil, fmt.Errorf("bind AF_PACKET socket to %s: %w", in.Name, os.NewSyscallError("bind", err))
	}
	kc := &kernelCounter{fd: fd, prog: p.prog, totals: p.totals, remotes: p.remotes, gen: p.gen, poll: poll}
	if passDNS {
		kc.buf = make([]byte, kcDNSSnap)
	}
	return kc, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// next waits up to the poll interval for a DNS answer the program passed up.
func (k *kernelCounter) next() ([]byte, int, time.Time, error) {
	fds := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(k.poll/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return nil, 0, time.Time{}, fmt.Errorf("poll counting socket: %w", err)
	}
	if n == 0 || err != nil {
		return nil, 0, time.Time{}, errNoPacket
	}
	if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
		serr, _ := unix.GetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		return nil, 0, time.Time{}, fmt.Errorf("counting socket reports an error (interface down or removed): %w", unix.Errno(serr))
	}
	if k.buf == nil {
		k.buf = make([]byte, 2048) // the program passes nothing up; drain whatever came
	}
	m, _, err := unix.Recvfrom(k.fd, k.buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil, 0, time.Time{}, errNoPacket
		}
		return nil, 0, time.Time{}, fmt.Errorf("read counting socket: %w", err)
	}
	return k.buf[:min(m, len(k.buf))], m, time.Now(), nil
}

// drops is how many passed-up packets the socket buffer could not hold (the
// counts themselves never drop), cumulative.
func (k *kernelCounter) drops() (uint64, error) {
	st, err := unix.GetsockoptTpacketStats(k.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return k.dropped, err
	}
	k.dropped += uint64(st.Drops)
	return k.dropped, nil
}

// collect adds what the kernel counted since the last call to c, then flips
// the remote generation. Called by one goroutine at a time.
func (k *kernelCounter) collect(c *counters) error {
	var errs []error
	if err := k.collectTotals(c); err != nil {
		errs = append(errs, err)
	}
	retired := k.cur ^ 1
	if err := k.drainRemotes(c, func(gen uint8) bool { return uint32(gen) == retired }); err != nil {
		errs = append(errs, err)
	}
	if err := k.gen.Put(uint32(0), retired); err != nil {
		errs = append(errs, fmt.Errorf("flip remote generation: %w", err))
	} else {
		k.cur = retired
	}
	return errors.Join(errs...)
}

func (k *kernelCounter) collectTotals(c *counters) error {
	var per [][]byte
	if err := k.totals.Lookup(uint32(0), &per); err != nil {
		return fmt.Errorf("read in-kernel totals: %w", err)
	}
	var now kcTotals
	for _, b := range per {
		now.addPerCPU(b)
	}
	c.addTotals(now.deltaTraffic(&k.prev, 0), now.deltaTraffic(&k.prev, kcOverflowSlot))
	k.prev = now
	return nil
}

// drainRemotes reads and deletes the remote entries whose generation take
// accepts and adds them to c.
func (k *kernelCounter) drainRemotes(c *counters, take func(gen uint8) bool) error {
	var (
		key  [kcRemoteKeySize]byte
		val  [kcRemoteValSize]byte
		dead [][kcRemoteKeySize]byte
	)
	rs := map[remoteKey]Traffic{}
	it := k.remotes.Iterate()
	for it.Next(&key, &val) {
		rk, gen, ok := decodeRemoteKey(key[:])
		if !ok {
			dead = append(dead, key)
			continue
		}
		if !take(gen) {
			continue
		}
		t := rs[rk]
		t.add(decodeRemoteVal(val[:]))
		rs[rk] = t
		dead = append(dead, key)
	}
	err := it.Err()
	if err != nil {
		err = fmt.Errorf("read in-kernel remote map: %w", err)
	}
	for _, d := range dead {
		if derr := k.remotes.Delete(d[:]); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) && err == nil {
			err = fmt.Errorf("delete in-kernel remote entry: %w", derr)
		}
	}
	c.addRemotes(rs)
	return err
}

// finish detaches the counter (closes the socket), then adds everything left
// in the maps to c and frees them. Idempotent.
func (k *kernelCounter) finish(c *counters) error {
	var err error
	k.once.Do(func() {
		unix.Close(k.fd)
		err = errors.Join(k.collectTotals(c), k.drainRemotes(c, func(uint8) bool { return true }))
		k.prog.Close()
		k.totals.Close()
		k.remotes.Close()
		k.gen.Close()
	})
	return err
}

// close is packetSource's close: it frees everything without reading.
func (k *kernelCounter) close() {
	k.once.Do(func() {
		unix.Close(k.fd)
		k.prog.Close()
		k.totals.Close()
		k.remotes.Close()
		k.gen.Close()
	})
}

// counterProgram returns the socket filter. In C it would read:
//
//	dir = skb->pkt_type == PACKET_OUTGOING; class = OTHER; key = {0}; ret = 0;
//	// the link and network headers, read as decode() reads them: with the
//	// same bounds, the same VLAN, IPv4 and IPv6 extension header walks
//	if IPv4: key.addr = dir ? daddr : saddr; key.family = 4; class = class(protocol)
//	if IPv6: key.addr = dir ? daddr : saddr; key.family = 6; walk <= 8 extension headers
//	         (a later fragment stops the walk); class = class(last next header)
//	if passDNS && TCP/UDP && source port == 53 (first fragment; IPv6: no
//	         extension header): ret = 65535
//	key.proto = class; key.gen = gen[0];
//	t = totals[0] (per CPU); t[class*2+dir] += {skb->len, 1};
//	if key.family:
//	        r = remotes[key] ?: (update(remotes, key, 0, BPF_NOEXIST), remotes[key]);
//	        if r: atomic r.bytes[dir] += skb->len, r.packets[dir] += 1;
//	        else t[8+class*2+dir] += {skb->len, 1};   // map full
//	return ret;
//
// A header load past the packet's end ends the walk there, as decode's
// bounds checks do: the packet is counted with what was learnt so far.
func counterProgram(link LinkType, passDNS bool, totalsFD, remotesFD, genFD int) easm.Instructions {
	const (
		key  = -24 // remote key, 20 bytes
		zval = -56 // zero remote value, 32 bytes
		buf  = -96 // header bytes, 40
		idx  = -100
		ret  = -104

		ctx   = easm.R6
		off   = easm.R7 // offset of the header being read; later the totals pointer
		class = easm.R8 // next-header number, then the class
		dir   = easm.R9

		count, other, classify, v4, v6 = "count", "other", "classify", "v4", "v6"
	)
	// load emits bpf_skb_load_bytes(ctx, offReg (+ off0), fp+buf, n) and a
	// jump to fail when the packet is too short.
	load := func(offReg easm.Register, off0 int32, n int32, fail string) easm.Instructions {
		is := easm.Instructions{easm.Mov.Reg(easm.R1, ctx)}
		if offReg == easm.R0 { // no register: a constant offset
			is = append(is, easm.Mov.Imm(easm.R2, off0))
		} else {
			is = append(is, easm.Mov.Reg(easm.R2, offReg), easm.Add.Imm(easm.R2, off0))
		}
		return append(is,
			easm.Mov.Reg(easm.R3, easm.RFP),
			easm.Add.Imm(easm.R3, buf),
			easm.Mov.Imm(easm.R4, n),
			easm.FnSkbLoadBytes.Call(),
			easm.JNE.Imm(easm.R0, 0, fail),
		)
	}
	be16 := func(dst easm.Register, at int16) easm.Instructions {
		return easm.Instructions{easm.LoadMem(dst, easm.RFP, buf+at, easm.Half), easm.HostTo(easm.BE, dst, easm.Half)}
	}
	// dnsCheck sets ret when the 2 bytes at reg+add (a source port) are 53.
	dnsCheck := func(reg easm.Register, add int32, skip string) easm.Instructions {
		is := load(reg, add, 2, skip)
		is = append(is, be16(easm.R1, 0)...)
		return append(is,
			easm.JNE.Imm(easm.R1, dnsPort, skip),
			easm.StoreImm(easm.RFP, ret, kcDNSSnap, easm.Word),
		)
	}

	is := easm.Instructions{
		easm.Mov.Reg(ctx, easm.R1),
		easm.LoadMem(dir, ctx, 4, easm.Word), // pkt_type
		easm.JEq.Imm(dir, kcPacketOutgoing, "isout"),
		easm.Mov.Imm(dir, 0),
		easm.Ja.Label("dirdone"),
		easm.Mov.Imm(dir, 1).WithSymbol("isout"),
		easm.Mov.Imm(class, 0).WithSymbol("dirdone"),
		easm.Mov.Imm(easm.R5, 0),
		easm.StoreMem(easm.RFP, key, easm.R5, easm.DWord),
		easm.StoreMem(easm.RFP, key+8, easm.R5, easm.DWord),
		easm.StoreImm(easm.RFP, key+16, 0, easm.Word),
		easm.StoreImm(easm.RFP, ret, 0, easm.Word),
	}
	if link == LinkEthernet {
		is = append(is, easm.Mov.Imm(off, 14))
		is = append(is, load(easm.R0, 12, 2, count)...)
		is = append(is, be16(easm.R1, 0)...)
		for i := range 2 {
			tag := fmt.Sprintf("vlan%d", i)
			is = append(is,
				easm.JEq.Imm(easm.R1, etherTypeVLAN, tag),
				easm.JNE.Imm(easm.R1, etherTypeQinQ, "ethertype"),
			)
			tagIs := load(off, 2, 2, count)
			tagIs[0] = tagIs[0].WithSymbol(tag)
			is = append(is, tagIs...)
			is = append(is, be16(easm.R1, 0)...)
			is = append(is, easm.Add.Imm(off, 4))
		}
		is = append(is,
			easm.JEq.Imm(easm.R1, etherTypeIPv4, v4).WithSymbol("ethertype"),
			easm.JEq.Imm(easm.R1, etherTypeIPv6, v6),
			easm.Ja.Label(count),
		)
	} else { // raw IP: the version is the first nibble
		is = append(is, easm.Mov.Imm(off, 0))
		is = append(is, load(easm.R0, 0, 1, count)...)
		is = append(is,
			easm.LoadMem(easm.R1, easm.RFP, buf, easm.Byte),
			easm.RSh.Imm(easm.R1, 4),
			easm.JEq.Imm(easm.R1, 4, v4),
			easm.JEq.Imm(easm.R1, 6, v6),
			easm.Ja.Label(count),
		)
	}

	// IPv4
	v4is := load(off, 0, 20, count)
	v4is[0] = v4is[0].WithSymbol(v4)
	is = append(is, v4is...)
	is = append(is,
		easm.LoadMem(easm.R1, easm.RFP, buf, easm.Byte),
		easm.RSh.Imm(easm.R1, 4),
		easm.JNE.Imm(easm.R1, 4, count),
		easm.LoadMem(easm.R1, easm.RFP, buf+12, easm.Word), // source
		easm.JEq.Imm(dir, 0, "v4store"),
		easm.LoadMem(easm.R1, easm.RFP, buf+16, easm.Word), // destination
		easm.StoreMem(easm.RFP, key, easm.R1, easm.Word).WithSymbol("v4store"),
		easm.StoreImm(easm.RFP, key+kcKeyFamilyOff, 4, easm.Byte),
		easm.LoadMem(class, easm.RFP, buf+9, easm.Byte),
	)
	if passDNS {
		is = append(is,
			easm.JEq.Imm(class, ipProtoTCP, "v4dns"),
			easm.JNE.Imm(class, ipProtoUDP, classify),
		)
		frag := be16(easm.R1, 6)
		frag[0] = frag[0].WithSymbol("v4dns")
		is = append(is, frag...)
		is = append(is,
			easm.And.Imm(easm.R1, 0x1fff),
			easm.JNE.Imm(easm.R1, 0, classify),
			easm.LoadMem(easm.R2, easm.RFP, buf, easm.Byte),
			easm.And.Imm(easm.R2, 0x0f),
			easm.LSh.Imm(easm.R2, 2),
			easm.Add.Reg(easm.R2, off),
			easm.Mov.Reg(easm.R5, easm.R2),
		)
		is = append(is, dnsCheck(easm.R5, 0, classify)...)
	}
	is = append(is, easm.Ja.Label(classify))

	// IPv6
	v6is := load(off, 0, 40, count)
	v6is[0] = v6is[0].WithSymbol(v6)
	is = append(is, v6is...)
	is = append(is,
		easm.LoadMem(easm.R1, easm.RFP, buf, easm.Byte),
		easm.RSh.Imm(easm.R1, 4),
		easm.JNE.Imm(easm.R1, 6, count),
		easm.JNE.Imm(dir, 0, "v6out"),
		easm.LoadMem(easm.R1, easm.RFP, buf+8, easm.DWord),
		easm.StoreMem(easm.RFP, key, easm.R1, easm.DWord),
		easm.LoadMem(easm.R1, easm.RFP, buf+16, easm.DWord),
		easm.StoreMem(easm.RFP, key+8, easm.R1, easm.DWord),
		easm.Ja.Label("v6addr"),
		easm.LoadMem(easm.R1, easm.RFP, buf+24, easm.DWord).WithSymbol("v6out"),
		easm.StoreMem(easm.RFP, key, easm.R1, easm.DWord),
		easm.LoadMem(easm.R1, easm.RFP, buf+32, easm.DWord),
		easm.StoreMem(easm.RFP, key+8, easm.R1, easm.DWord),
		easm.StoreImm(easm.RFP, key+kcKeyFamilyOff, 6, easm.Byte).WithSymbol("v6addr"),
		easm.LoadMem(class, easm.RFP, buf+6, easm.Byte),
	)
	if passDNS {
		is = append(is,
			easm.JEq.Imm(class, ipProtoTCP, "v6dns"),
			easm.JNE.Imm(class, ipProtoUDP, "v6walk"),
		)
		chk := dnsCheck(off, 40, "v6walk")
		chk[0] = chk[0].WithSymbol("v6dns")
		is = append(is, chk...)
	}
	is = append(is, easm.Add.Imm(off, 40).WithSymbol("v6walk"))
	for i := range 8 {
		ext, ah, frag, next := fmt.Sprintf("ext%d", i), fmt.Sprintf("ah%d", i), fmt.Sprintf("frag%d", i), fmt.Sprintf("next%d", i)
		is = append(is,
			easm.JEq.Imm(class, ipProtoHopOpts, ext),
			easm.JEq.Imm(class, ipProtoRouting, ext),
			easm.JEq.Imm(class, ipProtoDstOpts, ext),
			easm.JEq.Imm(class, ipProtoAH, ah),
			easm.JEq.Imm(class, ipProtoFrag, frag),
			easm.Ja.Label(classify),
		)
		// Hop-by-hop, routing and destination options count their length
		// in 8-octet units past the first 8; AH in 4-octet units past the
		// first 8 (RFC 8200 4.3, RFC 4302 2.2).
		skip := func(sym string, add, shift int32) {
			h := load(off, 0, 2, other)
			h[0] = h[0].WithSymbol(sym)
			is = append(is, h...)
			is = append(is,
				easm.LoadMem(class, easm.RFP, buf, easm.Byte),
				easm.LoadMem(easm.R1, easm.RFP, buf+1, easm.Byte),
				easm.Add.Imm(easm.R1, add),
				easm.LSh.Imm(easm.R1, shift),
				easm.Add.Reg(off, easm.R1),
				easm.Ja.Label(next),
			)
		}
		skip(ext, 1, 3)
		skip(ah, 2, 2)
		f := load(off, 0, 8, other)
		f[0] = f[0].WithSymbol(frag)
		is = append(is, f...)
		is = append(is, easm.LoadMem(class, easm.RFP, buf, easm.Byte))
		is = append(is, be16(easm.R1, 2)...)
		is = append(is,
			easm.And.Imm(easm.R1, 0xfff8),
			easm.Add.Imm(off, 8),
			easm.JNE.Imm(easm.R1, 0, classify),
			easm.Mov.Reg(easm.R1, easm.R1).WithSymbol(next), // landing pad
		)
	}
	is = append(is,
		easm.Ja.Label(classify),
		easm.Mov.Imm(class, 0).WithSymbol(other),
		easm.Ja.Label(count),

		easm.JEq.Imm(class, ipProtoTCP, "ctcp").WithSymbol(classify),
		easm.JEq.Imm(class, ipProtoUDP, "cudp"),
		easm.JEq.Imm(class, ipProtoICMP, "cicmp"),
		easm.JEq.Imm(class, ipProtoICMPv6, "cicmp"),
		easm.Mov.Imm(class, int32(ProtoOther)),
		easm.Ja.Label(count),
		easm.Mov.Imm(class, int32(ProtoTCP)).WithSymbol("ctcp"),
		easm.Ja.Label(count),
		easm.Mov.Imm(class, int32(ProtoUDP)).WithSymbol("cudp"),
		easm.Ja.Label(count),
		easm.Mov.Imm(class, int32(ProtoICMP)).WithSymbol("cicmp"),

		// count: class in R8, dir in R9, key filled but for proto and gen.
		easm.StoreMem(easm.RFP, key+kcKeyProtoOff, class, easm.Byte).WithSymbol(count),
		easm.StoreImm(easm.RFP, idx, 0, easm.Word),
		easm.LoadMapPtr(easm.R1, genFD),
		easm.Mov.Reg(easm.R2, easm.RFP),
		easm.Add.Imm(easm.R2, idx),
		easm.FnMapLookupElem.Call(),
		easm.JEq.Imm(easm.R0, 0, "totals"),
		easm.LoadMem(easm.R1, easm.R0, 0, easm.Word),
		easm.StoreMem(easm.RFP, key+kcKeyGenOff, easm.R1, easm.Byte),

		easm.LoadMapPtr(easm.R1, totalsFD).WithSymbol("totals"),
		easm.Mov.Reg(easm.R2, easm.RFP),
		easm.Add.Imm(easm.R2, idx),
		easm.FnMapLookupElem.Call(),
		easm.JEq.Imm(easm.R0, 0, "done"),
		easm.Mov.Reg(off, easm.R0), // totals pointer from here on
		easm.Mov.Reg(easm.R1, class),
		easm.LSh.Imm(easm.R1, 1),
		easm.Or.Reg(easm.R1, dir),
		easm.And.Imm(easm.R1, 7),
		easm.LSh.Imm(easm.R1, 4),
		easm.Mov.Reg(easm.R2, off),
		easm.Add.Reg(easm.R2, easm.R1),
		easm.LoadMem(easm.R3, ctx, 0, easm.Word), // skb->len
		easm.LoadMem(easm.R4, easm.R2, 0, easm.DWord),
		easm.Add.Reg(easm.R4, easm.R3),
		easm.StoreMem(easm.R2, 0, easm.R4, easm.DWord),
		easm.LoadMem(easm.R4, easm.R2, 8, easm.DWord),
		easm.Add.Imm(easm.R4, 1),
		easm.StoreMem(easm.R2, 8, easm.R4, easm.DWord),

		easm.LoadMem(easm.R1, easm.RFP, key+kcKeyFamilyOff, easm.Byte),
		easm.JEq.Imm(easm.R1, 0, "done"),
		easm.LoadMapPtr(easm.R1, remotesFD),
		easm.Mov.Reg(easm.R2, easm.RFP),
		easm.Add.Imm(easm.R2, key),
		easm.FnMapLookupElem.Call(),
		easm.JNE.Imm(easm.R0, 0, "radd"),
		easm.Mov.Imm(easm.R5, 0),
		easm.StoreMem(easm.RFP, zval, easm.R5, easm.DWord),
		easm.StoreMem(easm.RFP, zval+8, easm.R5, easm.DWord),
		easm.StoreMem(easm.RFP, zval+16, easm.R5, easm.DWord),
		easm.StoreMem(easm.RFP, zval+24, easm.R5, easm.DWord),
		easm.LoadMapPtr(easm.R1, remotesFD),
		easm.Mov.Reg(easm.R2, easm.RFP),
		easm.Add.Imm(easm.R2, key),
		easm.Mov.Reg(easm.R3, easm.RFP),
		easm.Add.Imm(easm.R3, zval),
		easm.Mov.Imm(easm.R4, int32(ebpf.UpdateNoExist)),
		easm.FnMapUpdateElem.Call(),
		easm.LoadMapPtr(easm.R1, remotesFD),
		easm.Mov.Reg(easm.R2, easm.RFP),
		easm.Add.Imm(easm.R2, key),
		easm.FnMapLookupElem.Call(),
		easm.JNE.Imm(easm.R0, 0, "radd"),
		// The remote map is full: count under the overflow slots.
		easm.Mov.Reg(easm.R1, class),
		easm.LSh.Imm(easm.R1, 1),
		easm.Or.Reg(easm.R1, dir),
		easm.And.Imm(easm.R1, 7),
		easm.Add.Imm(easm.R1, int32(kcOverflowSlot)),
		easm.LSh.Imm(easm.R1, 4),
		easm.Mov.Reg(easm.R2, off),
		easm.Add.Reg(easm.R2, easm.R1),
		easm.LoadMem(easm.R3, ctx, 0, easm.Word),
		easm.LoadMem(easm.R4, easm.R2, 0, easm.DWord),
		easm.Add.Reg(easm.R4, easm.R3),
		easm.StoreMem(easm.R2, 0, easm.R4, easm.DWord),
		easm.LoadMem(easm.R4, easm.R2, 8, easm.DWord),
		easm.Add.Imm(easm.R4, 1),
		easm.StoreMem(easm.R2, 8, easm.R4, easm.DWord),
		easm.Ja.Label("done"),

		easm.Mov.Reg(easm.R1, dir).WithSymbol("radd"),
		easm.And.Imm(easm.R1, 1),
		easm.LSh.Imm(easm.R1, 3),
		easm.Add.Reg(easm.R0, easm.R1),
		easm.LoadMem(easm.R3, ctx, 0, easm.Word),
		easm.AddAtomic.Mem(easm.R0, easm.R3, easm.DWord, 0),
		easm.Mov.Imm(easm.R3, 1),
		easm.AddAtomic.Mem(easm.R0, easm.R3, easm.DWord, 16),

		easm.LoadMem(easm.R0, easm.RFP, ret, easm.Word).WithSymbol("done"),
		easm.Return(),
	)
	return is
}
