// Package bpfacct counts every packet on the machine's interfaces, beside the
// proxy: bytes and packets in and out per interface, per remote address and per
// protocol (tcp, udp, icmp, other), plus the capture's own drops. It also hands
// DNS answers (UDP or TCP payloads from source port 53) to a callback so the
// dnsmap package can learn which names the addresses belong to.
//
// Capture uses github.com/gopacket/gopacket: afpacket (a TPACKET_V3 ring, pure
// Go) on Linux and bsdbpf on darwin and freebsd. Only headers are read: a
// classic BPF program attached to the socket returns a small snap length
// (Config.Snaplen, 128 bytes by default) for every packet and a large one
// (65535) for UDP/TCP packets whose source port is 53, so DNS answers arrive
// whole while bulk traffic costs a few hundred bytes of ring per packet. The
// kernel still reports each packet's length on the wire, which is what is
// counted. A malformed packet too short for the filter's loads is dropped by
// the kernel filter and so not counted (well-formed packets always fit).
//
// Direction: on Ethernet-like links a frame whose source MAC is the interface's
// own is outgoing; on links without a link header (tun, wireguard, ppp, BSD
// DLT_NULL) a packet whose source address is one of the interface's addresses
// is outgoing. Everything else is incoming. Loopback is skipped by default:
// there every packet is seen twice with the same MAC, so both count as out. The remote address is the
// destination of an outgoing packet and the source of an incoming one.
//
// Memory is bounded: the per-remote table of each interface holds at most
// Config.MaxRemotes entries; when it is full, the smaller half is folded into
// an "other" row per protocol, and new remotes fold there until room is made.
//
// Counting in the kernel (Linux, the default where the kernel allows it):
// instead of the ring, an eBPF socket filter (BPF_PROG_TYPE_SOCKET_FILTER,
// SO_ATTACH_BPF) on a plain AF_PACKET socket classifies each packet as the
// decoder does (same headers, same bounds, skb->len as the byte count),
// adds it to per-CPU totals by protocol and direction and to a hash of
// remotes keyed by {address, protocol, generation}, and returns 0, so no
// packet reaches user space; only DNS answers are passed up, and only when
// their own capture cannot be opened. The capture goroutine reads the totals
// at each StatsInterval; remote rows arrive one interval later (each
// generation is read and deleted once no packet can still touch it, so no
// byte is lost or counted twice). Differences from the ring, all for odd
// packets: direction comes from the kernel's packet type (PACKET_OUTGOING)
// rather than the source MAC or address (they agree but for frames a bridge
// forwards with a foreign source MAC, or a router sends from an address not
// its own); headers past the ring's snap length are still read (IPv6
// extension header chains longer than Snaplen); Undecoded stays 0; a remote
// map full for an interval (2*MaxRemotes entries) counts the rest under the
// "other" rows. When the kernel refuses the program (no CAP_BPF, old
// kernel, Config.RingOnly), the ring path counts as before; Backend says
// which and why.
//
// IfaceCounters reads the kernel's own interface counters (/sys/class/net on
// Linux, the NET_RT_IFLIST routing sysctl on darwin and freebsd) and
// SetIfaceUp brings an interface up or down (netlink RTM_NEWLINK on Linux,
// SIOCSIFFLAGS elsewhere).
package bpfacct
