package bpfacct

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/net/bpf"
)

// Ring geometry: TPACKET_V3 fills variable-size frames into blocks; a block
// is handed to user space when full or after blockTimeout. A block must hold
// the largest frame (a whole DNS answer), so it is 256 KiB.
const (
	blockSize    = 256 << 10
	frameSize    = 4096                 // only an accounting unit for the ring size in V3
	blockTimeout = 5 * time.Millisecond // DNS answers must reach dnsmap before the app's connect is decided
	pollTimeout  = 100 * time.Millisecond
)

type afpacketSource struct {
	tp *afpacket.TPacket
}

func openSource(in ifaceInfo, snaplen, ringBytes int) (packetSource, error) {
	blocks := max(ringBytes/blockSize, 2)
	tp, err := afpacket.NewTPacket(
		afpacket.OptInterface(in.Name),
		afpacket.TPacketVersion3,
		afpacket.OptFrameSize(frameSize),
		afpacket.OptBlockSize(blockSize),
		afpacket.OptNumBlocks(blocks),
		afpacket.OptBlockTimeout(blockTimeout),
		afpacket.OptPollTimeout(pollTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("open AF_PACKET ring on %s: %w", in.Name, err)
	}
	if err := setFilter(tp, in.Link, snaplen); err != nil {
		tp.Close()
		return nil, fmt.Errorf("attach snap-length filter on %s: %w", in.Name, err)
	}
	return &afpacketSource{tp: tp}, nil
}

// setFilter attaches snapFilter: snap bytes of every packet, DNS answers whole
// (snap 0 keeps DNS answers only).
func setFilter(tp *afpacket.TPacket, link LinkType, snap int) error {
	prog, err := snapFilter(link, snap, dnsSnaplen)
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	return tp.SetBPF(raw)
}

func (s *afpacketSource) next() ([]byte, int, time.Time, error) {
	data, ci, err := s.tp.ZeroCopyReadPacketData()
	if err != nil {
		if errors.Is(err, afpacket.ErrTimeout) {
			return nil, 0, time.Time{}, errNoPacket
		}
		if errors.Is(err, afpacket.ErrPoll) {
			return nil, 0, time.Time{}, fmt.Errorf("capture socket reports an error (interface down or removed): %w", err)
		}
		return nil, 0, time.Time{}, err
	}
	return data, ci.Length, ci.Timestamp, nil
}

func (s *afpacketSource) drops() (uint64, error) {
	_, v3, err := s.tp.SocketStats()
	if err != nil {
		return 0, err
	}
	return uint64(v3.Drops()), nil
}

func (s *afpacketSource) close() { s.tp.Close() }

func linkTypeOf(ifc net.Interface) LinkType {
	t := -1
	if b, err := os.ReadFile("/sys/class/net/" + ifc.Name + "/type"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			t = v
		}
	}
	return linkTypeFromARPHRD(t, len(ifc.HardwareAddr))
}

// The DNS capture: a TPACKET_V2 ring, whose frames are visible the moment
// the kernel writes them (a V3 ring hands over whole blocks, up to
// blockTimeout late), behind a filter that keeps DNS answers only.
const (
	dnsFrameSize = 1 << 17 // holds a whole 64 KiB answer plus headers
	dnsFrames    = 32
)

func openDNSSource(in ifaceInfo) (packetSource, error) {
	tp, err := afpacket.NewTPacket(
		afpacket.OptInterface(in.Name),
		afpacket.TPacketVersion2,
		afpacket.OptFrameSize(dnsFrameSize),
		afpacket.OptBlockSize(dnsFrameSize),
		afpacket.OptNumBlocks(dnsFrames),
		afpacket.OptPollTimeout(pollTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("open DNS capture on %s: %w", in.Name, err)
	}
	// A snap length of 0 for everything but DNS answers drops it in the kernel.
	if err := setFilter(tp, in.Link, 0); err != nil {
		tp.Close()
		return nil, fmt.Errorf("attach DNS filter on %s: %w", in.Name, err)
	}
	return &afpacketSource{tp: tp}, nil
}

// captureBackend names the user-space capture path for Accounter.Backend.
const captureBackend = "ring"
