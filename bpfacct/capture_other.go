//go:build !linux && !darwin && !freebsd

package bpfacct

import "net"

func openSource(in ifaceInfo, snaplen, ringBytes int) (packetSource, error) {
	return nil, ErrUnsupported
}

func linkTypeOf(ifc net.Interface) LinkType {
	if len(ifc.HardwareAddr) == 6 {
		return LinkEthernet
	}
	return LinkRawIP
}

func openDNSSource(in ifaceInfo) (packetSource, error) { return nil, ErrUnsupported }

// captureBackend names the user-space capture path for Accounter.Backend.
const captureBackend = "none"
