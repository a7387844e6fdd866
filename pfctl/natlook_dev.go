package pfctl

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
)

// devNatLooker asks the kernel through /dev/pf. The device is opened on first
// use and kept open until Close (PF.Remove closes it).
type devNatLooker struct {
	layout natlookLayout

	mu sync.Mutex
	f  *os.File
}

func (d *devNatLooker) NatLook(client, proxy netip.AddrPort) (netip.AddrPort, error) {
	buf, err := d.layout.buildNatlook(client, proxy)
	if err != nil {
		return netip.AddrPort{}, err
	}
	f, err := d.open()
	if err != nil {
		return netip.AddrPort{}, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("DIOCNATLOOK: %w", err)
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = ioctlNatlook(int(fd), d.layout.ioctlRequest(), buf) }); err != nil {
		return netip.AddrPort{}, fmt.Errorf("DIOCNATLOOK: %w", err)
	}
	switch {
	case errors.Is(ioErr, syscall.ENOENT):
		return netip.AddrPort{}, fmt.Errorf("DIOCNATLOOK: %w", ErrNotRedirected)
	case ioErr != nil:
		return netip.AddrPort{}, fmt.Errorf("DIOCNATLOOK on /dev/pf: %w", ioErr)
	}
	return d.layout.parseNatlook(buf)
}

func (d *devNatLooker) open() (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f != nil {
		return d.f, nil
	}
	f, err := os.OpenFile("/dev/pf", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/pf for DIOCNATLOOK (needs root): %w", err)
	}
	d.f = f
	return f, nil
}

// Close closes /dev/pf; a later NatLook opens it again.
func (d *devNatLooker) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
