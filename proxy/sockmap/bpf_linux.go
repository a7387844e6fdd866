package sockmap

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// objects are the kernel side of a Relay.
//
//   - verdict: a SOCKHASH keyed by socket cookie that holds every relayed
//     socket under its own cookie. The stream verdict program is attached to
//     it, so a socket in it no longer queues what it receives for reading:
//     the program sees each skb first.
//   - targets: a SOCKHASH without programs keyed by socket cookie whose
//     value is the peer: targets[cookie(a)] = b, targets[cookie(b)] = a.
//     Being in it makes b a valid redirect target but does not change how b
//     receives.
//   - counts: a HASH cookie → u64 of bytes redirected from that socket.
//
// Two socket maps and not one: a socket becomes "redirected" when it enters
// the map the program is attached to. With one map, map[cookie(a)] = b would
// start redirecting b's bytes before map[cookie(b)] = a exists, and the
// program would drop them.
type objects struct {
	verdict, targets, counts *ebpf.Map
	prog                     *ebpf.Program
}

// program is the stream verdict program:
//
//	if skb->len == 0 { return SK_DROP }   // the FIN's own skb: see below
//	key = bpf_get_socket_cookie(skb)
//	ret = bpf_sk_redirect_hash(skb, targets, &key, 0)   // 0: the peer's egress
//	if ret == SK_PASS { if c = counts[key] { atomic c += skb->len } }
//	return ret
//
// The receive queue hands the program the FIN as an skb without data. A
// redirect would queue it on the peer, and if user space has shut the peer
// for writing by the time the kernel's worker sends it, the worker fails
// with EPIPE and sets it as the peer's socket error, which looks like a
// reset (TestSmoke caught this). Dropping it loses nothing: TCP took note
// of the FIN when it arrived.
func program(targets, counts *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // ctx
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // skb->len
		asm.JEq.Imm(asm.R7, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, targets.FD()),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.JNE.Imm(asm.R8, 1, "out"), // SK_PASS = 1
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.AddAtomic.Mem(asm.R0, asm.R7, asm.DWord, 0),
		asm.Mov.Reg(asm.R0, asm.R8).WithSymbol("out"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"), // SK_DROP
		asm.Return(),
	}
}

func loadObjects(maxPairs int) (*objects, error) {
	o := &objects{}
	var err error
	sockhash := func(name string) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * maxPairs)})
	}
	if o.verdict, err = sockhash("ns_verdict"); err != nil {
		return nil, o.fail(fmt.Errorf("create the verdict sockhash: %w", err))
	}
	if o.targets, err = sockhash("ns_targets"); err != nil {
		return nil, o.fail(fmt.Errorf("create the targets sockhash: %w", err))
	}
	if o.counts, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_counts", Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: uint32(2 * maxPairs)}); err != nil {
		return nil, o.fail(fmt.Errorf("create the byte counter map: %w", err))
	}
	o.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "ns_relay",
		Type:         ebpf.SkSKB,
		AttachType:   ebpf.AttachSkSKBStreamVerdict,
		License:      "GPL",
		Instructions: program(o.targets, o.counts),
	})
	if err != nil {
		return nil, o.fail(fmt.Errorf("load the stream verdict program: %w", err))
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: o.verdict.FD(), Program: o.prog, Attach: ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		return nil, o.fail(fmt.Errorf("attach the stream verdict program to the sockhash: %w", err))
	}
	return o, nil
}

func (o *objects) fail(err error) error {
	return errors.Join(err, o.close())
}

func (o *objects) close() error {
	var errs []error
	if o.prog != nil {
		errs = append(errs, o.prog.Close())
	}
	for _, m := range []*ebpf.Map{o.verdict, o.targets, o.counts} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
