// Package sockmap relays TCP bytes between two local sockets inside the
// kernel: a BPF stream verdict program on a sockhash redirects every skb one
// socket receives to the send side of its peer, and counts the bytes in a BPF
// map. User space only hands the sockets over (with the bytes already queued
// on them), watches for the ends of stream and turns a FIN into a half-close
// and an RST into a reset of the peer.
//
// The kernel takes a socket only if nobody read from it yet (peeking is
// fine): its verdict program would resend bytes already read. Splice relays
// a pair with such a socket, or one that already has its FIN, by a
// user-space copy instead (Pair.Kernel is false).
//
// Not exact under retransmission: the kernel hands the verdict program
// every queued skb whole (tcp_read_skb ignores how much of an skb was
// already consumed), and TCP queues a retransmitted segment that partly
// overlaps bytes already received as it is. The overlap is then relayed a
// second time. On loopback this happens when the receive side prunes under
// memory pressure (a socket's redirected skbs stay charged to it until the
// peer sent them); TestHandoff saw 1 pair in about 300 streaming ones
// repeat up to 160 KiB, always with a retransmitting sender. A stream
// parser (tcp_read_sock honours the offset) would avoid it but is not
// implemented. Do not relay data that must arrive exact with this package.
//
// Linux only; Open returns ErrUnsupported elsewhere and when the kernel
// refuses the maps or the program.
package sockmap

// Measured here (BenchmarkSockmapVsSplice, loopback, kernel 6.18, 2 shared
// cores, -count 3 -benchtime 2x): sockmap moved 0.56-1.04x the bytes per
// second of the io.Copy splice relay (median 0.77 for one stream, 0.64 for
// eight) and cost 0.95-1.56x the machine's CPU per GB. This process's own
// CPU per GB is lower (0.66-1.0x) only because the kernel sends redirected
// skbs from a worker thread that getrusage does not charge to it. Splice
// wins; this package is kept for measurement and as a tested option.
