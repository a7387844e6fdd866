package bpfacct

// ARPHRD_* values (linux/if_arp.h) of links whose frames carry no link header.
const (
	arphrdEther    = 1
	arphrdPPP      = 512
	arphrdTunnel   = 768 // ipip
	arphrdTunnel6  = 769
	arphrdSit      = 776
	arphrdIPGRE    = 778
	arphrdLoopback = 772
	arphrdRawIP    = 519
	arphrdNone     = 65534 // tun, wireguard
)

// linkTypeFromARPHRD maps a Linux ARPHRD type (-1: unknown) to the frame
// layout AF_PACKET SOCK_RAW delivers.
func linkTypeFromARPHRD(t, hwLen int) LinkType {
	switch t {
	case arphrdEther, arphrdLoopback:
		return LinkEthernet
	case arphrdNone, arphrdPPP, arphrdTunnel, arphrdTunnel6, arphrdSit, arphrdRawIP, arphrdIPGRE:
		return LinkRawIP
	}
	if hwLen == 6 {
		return LinkEthernet
	}
	return LinkRawIP
}
