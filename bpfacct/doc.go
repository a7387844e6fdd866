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
// IfaceCounters reads the kernel's own interface counters (/sys/class/net on
// Linux, the NET_RT_IFLIST routing sysctl on darwin and freebsd) and
// SetIfaceUp brings an interface up or down (netlink RTM_NEWLINK on Linux,
// SIOCSIFFLAGS elsewhere).
package bpfacct
