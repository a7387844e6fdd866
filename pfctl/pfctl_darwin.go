package pfctl

import (
	"log/slog"
	"unsafe"

	"golang.org/x/sys/unix"
)

// New returns the pf backend for this system: pfctl at /sbin/pfctl and
// DIOCNATLOOK on /dev/pf with the darwin struct layout.
func New(cfg Config, log *slog.Logger) (*PF, error) {
	return newForOS("darwin", cfg, log)
}

// ioctlNatlook is the only system call of the package: DIOCNATLOOK on /dev/pf,
// the kernel reading and rewriting buf in place.
func ioctlNatlook(fd int, req uint, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
