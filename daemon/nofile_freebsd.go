package daemon

import "golang.org/x/sys/unix"

// FreeBSD's rlimit fields are signed.

func getNoFile() (cur, max uint64, err error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, err
	}
	return uint64(rl.Cur), uint64(rl.Max), nil
}

func setNoFile(cur, max uint64) error {
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: int64(cur), Max: int64(max)})
}
