// Package pfctl is netshape's redirect backend for macOS and FreeBSD, built on
// pf. *PF implements daemon.Redirector.
//
// # What it installs
//
// Everything lives in one anchor we own: com.apple/netshape on macOS (the stock
// /etc/pf.conf already evaluates com.apple/* for rdr and filter rules) and
// netshape on FreeBSD, whose /etc/pf.conf needs two lines once:
//
//	rdr-anchor "netshape"   # with the other translation rules
//	anchor "netshape"       # with the filter rules
//
// Install checks that the main ruleset references the anchor and refuses with
// ErrAnchorNotReferenced otherwise. It never loads or flushes the main ruleset
// and never runs pfctl -d or -e: every -f/-F carries -a ANCHOR (checked before
// pfctl runs). The ruleset (see renderRules and testdata/*.rules.golden) sends
// new outbound TCP to lo0 with route-to, where "rdr pass on lo0" hands it to
// the proxy listener (127.0.0.1 / ::1, port 9040); pf can only redirect to a
// local listener, which is what this is. Loopback, link-local, the machine's
// own addresses and Config.Bypass are left alone. Optional rules block QUIC
// (outbound UDP 443) and all outbound traffic on interfaces whose quota ran out
// (SetBlockedIfaces, which reloads the anchor atomically).
//
// pf must be enabled. On macOS Install takes a reference with pfctl -E and
// saves the token in Config.StateDir; Remove releases it with pfctl -X, so pf
// goes off only if nobody else (Application Firewall, a VPN) holds a
// reference. FreeBSD's pfctl has no -E/-X: there Install only checks pf is
// enabled (ErrPFDisabled otherwise; pf_enable="YES" is the admin's choice).
// Cleanup, run at start or by `netshape cleanup`, releases a token a crashed
// run left in the state dir and flushes the anchor.
//
// # Loop guard: group, not user
//
// The proxy's own upstream connections must not be routed back to it. rdr
// cannot match the owner of a socket, so the guard sits on the route-to rule:
// "group != LoopGID". pf compares the credentials the socket was created with
// (xnu in_pcblookup_hash_exists: kauth_cred_getgid(so->so_cred), the
// effective gid; FreeBSD inp_cred). We match a group rather than a user
// because the daemon must stay uid 0 (it loads rules, opens /dev/pf, reads
// other processes' sockets) and "user != 0" would exempt every root process
// from the firewall, while root may set its effective gid to any group without
// losing privilege. So Install calls setegid(LoopGID) (process-wide on
// macOS and FreeBSD; credentials are per process) before loading the rules,
// and every socket the daemon creates afterwards, upstream dials included,
// carries the group; Remove restores the previous egid. DialControl has
// nothing to set per socket (neither pf can match a per-socket mark), so it
// refuses a dial with ErrLoopGuard if the guard is not in effect while the
// rules are installed, rather than let it loop. The cost: any other process
// an admin runs with that group is not redirected, so the group must be
// dedicated (_netshape on macOS, netshape on FreeBSD; ResolveGroup finds its
// id, via dscl on macOS where cgo-free os/user cannot see Directory Services).
// Rules carry the numeric gid: pfctl's parse.y accepts numbers and names for
// group (names go through getgrnam), and a number cannot fail a lookup.
//
// # Original destination
//
// OriginalDst asks DIOCNATLOOK on /dev/pf (direction PF_OUT, saddr the client,
// daddr the proxy's listen address). The struct layouts differ: 84 bytes with
// 4-byte port unions on Darwin (xnu bsd/net/pfvar.h), 76 bytes with 2-byte
// ports on FreeBSD (sys/net/pfvar.h); natlook.go builds and parses them with
// encoding/binary from one offset table per OS so golden tests pin the bytes
// on Linux. Only the ioctl call lives in pfctl_darwin.go / pfctl_freebsd.go.
//
// Nothing here was run on a Mac or a BSD; docs/macos.md lists the manual
// checks that must pass there.
package pfctl
