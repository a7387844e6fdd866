//go:build darwin || freebsd

package bpfacct

import (
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// IfaceCounters returns the kernel's counters of every interface, from the
// routing sysctl's interface list (see parseIfList for the layout).
func IfaceCounters() ([]IfaceStat, error) {
	mib := []int32{unix.CTL_NET, unix.AF_ROUTE, 0, unix.AF_UNSPEC, ifListSysctl, 0}
	// Ask for the size, then the data; retry if the list grew in between.
	for range 3 {
		var n uintptr
		if err := sysctl(mib, nil, &n); err != nil {
			return nil, fmt.Errorf("bpfacct: size of interface list sysctl: %w", err)
		}
		buf := make([]byte, n+n/8+512)
		n = uintptr(len(buf))
		if err := sysctl(mib, &buf[0], &n); err != nil {
			if err == unix.ENOMEM {
				continue
			}
			return nil, fmt.Errorf("bpfacct: read interface list sysctl: %w", err)
		}
		return parseIfList(buf[:n], ifListLayoutHere())
	}
	return nil, fmt.Errorf("bpfacct: interface list kept growing while read; try again")
}

func sysctl(mib []int32, old *byte, oldlen *uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS___SYSCTL, uintptr(unsafe.Pointer(&mib[0])), uintptr(len(mib)),
		uintptr(unsafe.Pointer(old)), uintptr(unsafe.Pointer(oldlen)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// SetIfaceUp sets (up) or clears IFF_UP on the named interface with the
// SIOCGIFFLAGS / SIOCSIFFLAGS ioctls. It needs root.
func SetIfaceUp(name string, up bool) error {
	if _, err := net.InterfaceByName(name); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNoInterface, name, err)
	}
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("%w: %s: name too long", ErrNoInterface, name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("bpfacct: open socket for interface ioctl: %w", err)
	}
	defer unix.Close(fd)
	// struct ifreq: char ifr_name[16]; union { short ifru_flags[2]; ... } (32 bytes).
	var ifr [32]byte
	copy(ifr[:], name)
	if err := ioctl(fd, unix.SIOCGIFFLAGS, &ifr); err != nil {
		return fmt.Errorf("bpfacct: read flags of %s: %w", name, err)
	}
	flags := *(*uint16)(unsafe.Pointer(&ifr[16]))
	if up {
		flags |= iffUp
	} else {
		flags &^= iffUp
	}
	*(*uint16)(unsafe.Pointer(&ifr[16])) = flags
	if err := ioctl(fd, unix.SIOCSIFFLAGS, &ifr); err != nil {
		if err == unix.EPERM || err == unix.EACCES {
			return fmt.Errorf("%w: set %s up=%v: %w", ErrPermission, name, up, err)
		}
		return fmt.Errorf("bpfacct: set %s up=%v: %w", name, up, err)
	}
	return nil
}

func ioctl(fd int, req uint, ifr *[32]byte) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(ifr)))
	if e != 0 {
		return e
	}
	return nil
}
