package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ifaceCache maps a local address to the name of the interface that holds it,
// so each flow can say which interface it leaves by. It rereads the system's
// interfaces on a miss, at most once a second.
type ifaceCache struct {
	mu      sync.Mutex
	byAddr  map[netip.Addr]string
	lastRun time.Time
}

func (ic *ifaceCache) name(a netip.Addr) string {
	a = a.Unmap()
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if n, ok := ic.byAddr[a]; ok {
		return n
	}
	if time.Since(ic.lastRun) < time.Second {
		return ""
	}
	ic.lastRun = time.Now()
	m := map[netip.Addr]string{}
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					m[ip.Unmap()] = ifc.Name
				}
			}
		}
	}
	ic.byAddr = m
	return m[a]
}

// routeIface finds the interface a connection to dst would leave by, without
// sending anything: connecting a UDP socket (marked like upstream sockets, so
// policy routing agrees) makes the kernel pick the route and a source address.
// The answer is kept for routeTTL per destination address: the lookup is a
// socket, a mark, a connect and a close (8 syscalls) on the setup path of
// every connection while an interface rule exists, and routes seldom change.
func (p *Proxy) routeIface(dst netip.AddrPort) string {
	a := dst.Addr().Unmap()
	now := time.Now()
	if name, ok := p.routes.get(a, now); ok {
		return name
	}
	d := net.Dialer{Control: p.cfg.DialControl}
	c, err := d.Dial("udp", dst.String())
	if err != nil {
		return ""
	}
	defer c.Close()
	name := p.ifaces.name(c.LocalAddr().(*net.UDPAddr).AddrPort().Addr())
	if name != "" {
		p.routes.put(a, name, now)
	}
	return name
}

const (
	routeTTL       = 2 * time.Second
	routeCacheSize = 4096
)

// routeCache maps destination addresses to egress interface names for routeTTL.
type routeCache struct {
	mu sync.Mutex
	m  map[netip.Addr]routeEntry
}

type routeEntry struct {
	iface string
	at    time.Time
}

func (rc *routeCache) get(a netip.Addr, now time.Time) (string, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	e, ok := rc.m[a]
	if !ok || now.Sub(e.at) > routeTTL {
		return "", false
	}
	return e.iface, true
}

func (rc *routeCache) put(a netip.Addr, iface string, now time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.m == nil || len(rc.m) >= routeCacheSize {
		rc.m = make(map[netip.Addr]routeEntry) // bounded: start over
	}
	rc.m[a] = routeEntry{iface, now}
}
