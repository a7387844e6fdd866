// Package procmap maps a TCP connection to the process that owns its client
// socket, so the proxy can name the application behind every flow.
//
// The proxy calls [Map.Lookup] with the client's address (flow.Src) and the
// original destination (flow.Dst); that pair is the client socket's own
// 4-tuple, because the redirect only rewrites conntrack/pf state.
//
// Per system:
//   - Linux: NETLINK_SOCK_DIAG (inet_diag, SOCK_DIAG_BY_FAMILY with the exact
//     4-tuple) gives the socket's uid and inode; the inode is mapped to a pid
//     through the /proc/PID/fd links ("socket:[INODE]") with a cache that is
//     refreshed on a miss (new pids first, then pids whose fd count changed,
//     then everything) and pruned of dead pids; exe, cmdline, ppid and cgroup
//     come from /proc/PID.
//     With Options.BPF (root, initial pid namespace), a fast path comes
//     first: a sock_ops program built with cilium/ebpf's asm package (no C)
//     and linked to the cgroup2 root records, at BPF_SOCK_OPS_TCP_CONNECT_CB
//     (inside connect(2), in the connecting process, after the local port is
//     chosen), 4-tuple → {tgid, uid, time, last exec time, cgroup id} in an
//     LRU hash, for connections of the caller's network namespace only
//     (bpf_get_netns_cookie). A raw tracepoint program on sched_process_exec
//     supplies the exec times. Lookup takes the record with one
//     BPF_MAP_LOOKUP_AND_DELETE_ELEM and serves the process details from a
//     cache validated by a pidfd (alive, started before the connect, same
//     exec and cgroup); anything else (connected before attach, evicted,
//     exited owner) falls through to sock_diag. Links, never pins: the kernel
//     detaches both programs when the process exits. [Map.Backend] reports
//     which path is in use and why BPF is not.
//   - macOS: sysctl net.inet.tcp.pcblist_n (xsocket_n.so_e_pid/so_last_pid),
//     kern.procargs2 for exe and argv, kern.proc.pid for ppid.
//   - FreeBSD: sysctl net.inet.tcp.pcblist (xinpcb.xi_socket.xso_so), kern.file
//     to find which process holds that socket, kern.proc.pid/pathname/args.
//
// The record parsers for macOS and FreeBSD are pure functions over bytes that
// build on every system, so they are tested and fuzzed on Linux.
//
// A connection whose owner cannot be found is not an error for the proxy:
// Lookup then returns what it knows (the uid when the socket still exists,
// PID 0) together with an error wrapping [ErrNotFound].
package procmap
