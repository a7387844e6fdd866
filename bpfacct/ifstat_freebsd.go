package bpfacct

import "golang.org/x/sys/unix"

// NET_RT_IFLIST answers with struct if_msghdr in the FreeBSD 11+ layout
// (x/sys/unix still describes the FreeBSD 10 one, so no cross-check here).
const ifListSysctl = unix.NET_RT_IFLIST

func ifListLayoutHere() ifListLayout { return freebsdIfList() }
