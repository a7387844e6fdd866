package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Descriptors per relayed connection: the accepted and the upstream socket.
// A direction moving bytes holds a pipe (2 more) only while it moves them.
const fdsPerConn = 2

// fdReserve is kept for everything else: listeners, the database, capture
// rings, netlink and control sockets, pooled pipes (64 × 2) and pipes of
// flows moving bytes right now.
const fdReserve = 512

// fileLimit is what raiseFileLimit did.
type fileLimit struct {
	limit    uint64 // the soft open-file limit now
	maxConns int    // relayed connections that fit it
	warning  string // non-empty when the limit stays below what was asked
}

// raiseFileLimit lifts the open-file limit so that maxConns relayed
// connections fit (0: as far as the hard limit allows). Root may also raise
// the hard limit, up to the kernel's fs.nr_open; inside a container without
// CAP_SYS_RESOURCE it cannot, and the warning says how many connections fit.
func raiseFileLimit(maxConns int, nrOpenPath string) fileLimit {
	cur, max, err := getNoFile()
	if err != nil {
		return fileLimit{warning: "cannot read the open-file limit: " + err.Error()}
	}
	want := max
	if maxConns > 0 {
		want = uint64(maxConns)*fdsPerConn + fdReserve
		if want > max {
			// The hard limit too, when we may (root with CAP_SYS_RESOURCE).
			if nr := nrOpen(nrOpenPath); nr > 0 && want > nr {
				want = nr
			}
			if setNoFile(want, want) == nil {
				cur, max = want, want
			}
			want = min(want, max)
		}
	}
	if cur < want && setNoFile(want, max) == nil {
		cur = want
	}
	fl := fileLimit{limit: cur, maxConns: fits(cur)}
	switch {
	case maxConns > 0 && fl.maxConns < maxConns:
		fl.warning = fmt.Sprintf("open-file limit is %d (hard limit %d): it fits ~%d relayed connections, not --max-conns %d; new connections past that are refused (raise LimitNOFILE / ulimit -Hn, or run with CAP_SYS_RESOURCE)",
			cur, max, fl.maxConns, maxConns)
	case maxConns == 0 && cur < 8192:
		fl.warning = fmt.Sprintf("open-file limit is %d: at most ~%d connections can be relayed (raise it with ulimit -n / LimitNOFILE, or set --max-conns)", cur, fl.maxConns)
	}
	if maxConns > 0 {
		fl.maxConns = min(fl.maxConns, maxConns)
	}
	return fl
}

// fits is how many relayed connections an open-file limit holds.
func fits(limit uint64) int {
	if limit <= fdReserve {
		return 1 + int(limit)/(2*fdsPerConn) // a tiny limit still relays a little
	}
	return int((limit - fdReserve) / fdsPerConn)
}

// nrOpen is the kernel's ceiling for any open-file limit, 0 when unknown.
func nrOpen(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
