package nftctl

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// chainSpec is one base chain of our table.
type chainSpec struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	hookName string
	prio     int32
}

// ruleSpec is one rule: its text in nft syntax (for humans and golden tests)
// and the expressions that implement it.
type ruleSpec struct {
	chain string
	text  string
	exprs []expr.Any
}

var (
	chainOut       = chainSpec{"out", nftables.ChainTypeNAT, nftables.ChainHookOutput, "output", -100}
	chainFilterOut = chainSpec{"filter_out", nftables.ChainTypeFilter, nftables.ChainHookOutput, "output", 0}
	chainFilterIn  = chainSpec{"filter_in", nftables.ChainTypeFilter, nftables.ChainHookInput, "input", 0}
)

// ruleset is the whole table for cfg, in order.
func ruleset(cfg Config) ([]chainSpec, []ruleSpec) {
	chains := []chainSpec{chainOut}
	var rs []ruleSpec
	add := func(c chainSpec, text string, e ...expr.Any) {
		rs = append(rs, ruleSpec{c.name, text, e})
	}

	add(chainOut, fmt.Sprintf("meta mark 0x%x return", cfg.Mark),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(cfg.Mark)},
		&expr.Verdict{Kind: expr.VerdictReturn})
	skip := append([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, cfg.Bypass...)
	for _, p := range skip {
		add(chainOut, daddrText(p)+" return", append(daddrMatch(p), &expr.Verdict{Kind: expr.VerdictReturn})...)
	}
	redir := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, cfg.Port)},
	}
	if last := cfg.lastPort(); last != cfg.Port {
		add(chainOut, fmt.Sprintf("meta l4proto tcp redirect to :%d-%d", cfg.Port, last), append(redir,
			&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, last)},
			&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 2, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})...)
	} else {
		add(chainOut, fmt.Sprintf("meta l4proto tcp redirect to :%d", cfg.Port), append(redir,
			&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})...)
	}

	if cfg.BlockQUIC || len(cfg.BlockedIfaces) > 0 {
		chains = append(chains, chainFilterOut)
	}
	if cfg.BlockQUIC {
		add(chainFilterOut, "meta l4proto udp udp dport 443 reject",
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, 443)},
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
	}
	if len(cfg.BlockedIfaces) > 0 {
		chains = append(chains, chainFilterIn)
		// Connections the out chain redirected to the proxy still carry the
		// interface of their original route here: let them reach the proxy,
		// which refuses them itself while the quota is used up.
		add(chainFilterOut, "ct status dnat accept",
			&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(ipsDstNAT), Xor: native32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
			&expr.Verdict{Kind: expr.VerdictAccept})
		for _, ifc := range cfg.BlockedIfaces {
			add(chainFilterOut, fmt.Sprintf("oifname %q drop", ifc),
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
				&expr.Verdict{Kind: expr.VerdictDrop})
			add(chainFilterIn, fmt.Sprintf("iifname %q drop", ifc),
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(ifc)},
				&expr.Verdict{Kind: expr.VerdictDrop})
		}
	}
	return chains, rs
}

// Text renders the table cfg would install, in nft syntax.
func Text(cfg Config) string {
	cfg = cfg.withDefaults()
	chains, rules := ruleset(cfg)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", cfg.Table)
	for _, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %d; policy accept;\n", c.name, c.typ, c.hookName, c.prio)
		for _, r := range rules {
			if r.chain == c.name {
				fmt.Fprintf(&b, "\t\t%s\n", r.text)
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// addTable queues, on conn, the creation of the whole table for cfg. When
// replace is set it first queues the deletion of any table of the same name (the
// "add table; delete table; table ..." idiom), so the batch replaces it atomically
// whether or not it exists.
func addTable(conn *nftables.Conn, cfg Config, replace bool) {
	t := &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet}
	if replace {
		conn.AddTable(t)
		conn.DelTable(t)
	}
	conn.AddTable(t)
	chains, rules := ruleset(cfg)
	byName := map[string]*nftables.Chain{}
	for _, c := range chains {
		prio := nftables.ChainPriority(c.prio)
		policy := nftables.ChainPolicyAccept
		byName[c.name] = conn.AddChain(&nftables.Chain{
			Name: c.name, Table: t, Type: c.typ, Hooknum: c.hook, Priority: &prio, Policy: &policy,
		})
	}
	for _, r := range rules {
		conn.AddRule(&nftables.Rule{Table: t, Chain: byName[r.chain], Exprs: r.exprs})
	}
}

func daddrText(p netip.Prefix) string {
	fam := "ip"
	if p.Addr().Is6() {
		fam = "ip6"
	}
	if p.IsSingleIP() {
		return fmt.Sprintf("%s daddr %s", fam, p.Addr())
	}
	return fmt.Sprintf("%s daddr %s", fam, p.Masked())
}

// daddrMatch matches packets whose destination is in p, guarding the family
// first as an inet-family table must.
func daddrMatch(p netip.Prefix) []expr.Any {
	p = p.Masked()
	a := p.Addr()
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if a.Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
	}
	if p.Bits() < a.BitLen() {
		mask := net.CIDRMask(p.Bits(), a.BitLen())
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()})
}

// ipsDstNAT is IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

func native32(v uint32) []byte {
	return binary.NativeEndian.AppendUint32(nil, v)
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes, NUL padded.
func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}
