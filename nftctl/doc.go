// Package nftctl is the Linux redirect backend: it installs one nftables table
// (inet family, named "netshape" by default) over netlink with
// github.com/google/nftables, so no nft binary is needed, and reads each
// redirected connection's original destination with SO_ORIGINAL_DST.
//
// The table holds:
//
//	table inet netshape {
//	  chain out {                     # type nat hook output priority -100
//	    meta mark 0x5e7 return        # the proxy's own upstream sockets (loop guard)
//	    ip daddr 127.0.0.0/8 return
//	    ip6 daddr ::1 return
//	    ip daddr <bypass> return      # each --bypass CIDR
//	    meta l4proto tcp redirect to :9040-9043   # Config.Ports proxy ports (the daemon: 4)
//	  }
//	  chain filter_out { ... }        # type filter hook output priority 0: QUIC and interface blocks
//	  chain filter_in { ... }         # type filter hook input priority 0: interface blocks
//	}
//
// Every change is one netlink batch, which the kernel applies atomically: the
// table is either there whole or not at all. Removing the table removes
// everything netshape added; nothing else on the system is touched.
package nftctl
