//go:build darwin || freebsd

package bpfacct

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/bsdbpf"
)

// bsdbpf reads from /dev/bpf* with a read buffer of RingBytes (capped by the
// kernel's bpf maxbufsize sysctl). It offers no filter and no statistics, so
// here every packet is copied whole (DNS answers included) and drops are not
// reported.
type bpfSource struct {
	s *bsdbpf.BPFSniffer
}

func openSource(in ifaceInfo, snaplen, ringBytes int) (src packetSource, err error) {
	defer func() {
		// bsdbpf panics when no /dev/bpf* device can be opened.
		if r := recover(); r != nil {
			src, err = nil, fmt.Errorf("%w: open /dev/bpf* for %s: %v", ErrPermission, in.Name, r)
		}
	}()
	tv := syscall.Timeval{Usec: 100_000}
	s, err := bsdbpf.NewBPFSniffer(in.Name, &bsdbpf.Options{
		ReadBufLen: min(ringBytes, 1<<20),
		Timeout:    &tv,
		Immediate:  true,
	})
	if err != nil {
		if pe := os.ErrPermission; err == syscall.EACCES || err == syscall.EPERM {
			return nil, fmt.Errorf("%w: bpf on %s: %w", ErrPermission, in.Name, pe)
		}
		return nil, fmt.Errorf("open bpf on %s: %w", in.Name, err)
	}
	return &bpfSource{s: s}, nil
}

func (b *bpfSource) next() ([]byte, int, time.Time, error) {
	data, ci, err := b.s.ReadPacketData()
	if err != nil {
		if err == syscall.EINTR || err == syscall.EAGAIN {
			return nil, 0, time.Time{}, errNoPacket
		}
		return nil, 0, time.Time{}, err
	}
	if len(data) == 0 { // read timed out with nothing
		return nil, 0, time.Time{}, errNoPacket
	}
	return data, ci.Length, ci.Timestamp, nil
}

func (b *bpfSource) drops() (uint64, error) { return 0, nil }

func (b *bpfSource) close() { _ = b.s.Close() }

// linkTypeOf: Ethernet-like interfaces have a 6-byte address; the others
// (lo0, utun, tun, gif, wg) use DLT_NULL.
func linkTypeOf(ifc net.Interface) LinkType {
	if len(ifc.HardwareAddr) == 6 {
		return LinkEthernet
	}
	return LinkNull
}

// openDNSSource: the BSD capture has no filter, so DNS answers come with the
// counting capture.
func openDNSSource(in ifaceInfo) (packetSource, error) { return nil, ErrUnsupported }

// captureBackend names the user-space capture path for Accounter.Backend.
const captureBackend = "bpf"
