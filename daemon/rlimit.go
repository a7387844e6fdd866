package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// raiseFileLimit lifts the soft open-file limit to the hard one: every relayed
// connection costs two descriptors. It returns a warning when the limit stays low.
func raiseFileLimit() string {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return ""
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err == nil {
			rl = want
		}
	}
	if rl.Cur < 8192 {
		return fmt.Sprintf("open-file limit is %d: at most ~%d connections can be relayed (raise it with ulimit -n / LimitNOFILE)", rl.Cur, rl.Cur/2-64)
	}
	return ""
}
