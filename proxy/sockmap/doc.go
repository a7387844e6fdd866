// Package sockmap relays TCP bytes between two local sockets inside the
// kernel: a BPF stream verdict program on a sockhash redirects every skb one
// socket receives to the send side of its peer, and counts the bytes in a BPF
// map. User space only hands the sockets over (with the bytes already queued
// on them), watches for the ends of stream and turns a FIN into a half-close
// and an RST into a reset of the peer.
//
// Linux only; Open returns ErrUnsupported elsewhere and when the kernel
// refuses the maps or the program.
package sockmap
