package dnsmap

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// ptrCache holds reverse names, failures (name ""), and the lookups in flight.
type ptrCache struct {
	m   *Map
	ctx context.Context
	end context.CancelFunc
	wg  sync.WaitGroup
	sem chan struct{}

	mu       sync.Mutex
	cache    map[netip.Addr]ptrEntry
	inflight map[netip.Addr]struct{}
	closed   bool

	lookups, failed, dropped uint64 // under mu
}

type ptrEntry struct {
	name    string // "" for a failed lookup
	expires int64
}

func (p *ptrCache) init(m *Map) {
	p.m = m
	p.ctx, p.end = context.WithCancel(context.Background())
	p.sem = make(chan struct{}, m.cfg.PTRConcurrency)
	p.cache = make(map[netip.Addr]ptrEntry)
	p.inflight = make(map[netip.Addr]struct{})
}

// PTR returns the cached reverse name of ip. When none is cached (and no
// failure is remembered) it starts a background lookup, unless one for ip is
// already running or all lookup slots are busy, and returns ok=false at once;
// a later call finds the answer.
func (m *Map) PTR(ip netip.Addr) (name string, ok bool) {
	p := &m.ptr
	ip = key(ip)
	if !ip.IsValid() {
		return "", false
	}
	now := m.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, hit := p.cache[ip]; hit && now < e.expires {
		return e.name, e.name != ""
	}
	if _, busy := p.inflight[ip]; busy || p.closed {
		return "", false
	}
	select {
	case p.sem <- struct{}{}:
	default:
		p.dropped++
		return "", false
	}
	p.inflight[ip] = struct{}{}
	p.lookups++
	p.wg.Add(1)
	go p.lookup(ip)
	return "", false
}

func (p *ptrCache) lookup(ip netip.Addr) {
	defer p.wg.Done()
	defer func() { <-p.sem }()
	ctx, cancel := context.WithTimeout(p.ctx, p.m.cfg.PTRTimeout)
	names, err := p.m.cfg.Resolver.LookupAddr(ctx, ip.String())
	cancel()
	name := ""
	for _, n := range names {
		if v, ok := normalize(n); ok {
			name = v
			break
		}
	}
	ttl := p.m.cfg.PTRTTL
	if name == "" {
		ttl = p.m.cfg.PTRNegativeTTL
		p.m.cfg.Logger.Debug("dnsmap: reverse lookup gave no name", "ip", ip, "names", names, "err", err)
	}
	now := p.m.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inflight, ip)
	if name == "" {
		p.failed++
	}
	if p.ctx.Err() != nil {
		return // closed: the failure is ours, not the resolver's
	}
	p.put(ip, ptrEntry{name: name, expires: now + int64(ttl)}, now)
}

// store records a PTR answer seen on the wire: ttl seconds plus the grace
// forward names get, capped by MaxTTL.
func (p *ptrCache) store(ip netip.Addr, name string, ttl uint32, now int64) {
	ip = key(ip)
	exp := now + min(int64(ttl)*int64(time.Second)+p.m.grace, p.m.maxTTL)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.put(ip, ptrEntry{name: name, expires: exp}, now)
}

// put adds or replaces an entry, evicting one when full. Called under mu.
func (p *ptrCache) put(ip netip.Addr, e ptrEntry, now int64) {
	if _, ok := p.cache[ip]; !ok && len(p.cache) >= p.m.cfg.PTRMaxEntries {
		p.evictOne(now)
	}
	p.cache[ip] = e
}

// evictOne drops an expired entry if it finds one among the first few it
// looks at, else an arbitrary one (map order is random). Called under mu.
func (p *ptrCache) evictOne(now int64) {
	var victim netip.Addr
	seen := 0
	for ip, e := range p.cache {
		if e.expires <= now {
			delete(p.cache, ip)
			return
		}
		if seen == 0 {
			victim = ip
		}
		if seen++; seen == 8 {
			break
		}
	}
	delete(p.cache, victim)
}

func (p *ptrCache) stats(st *Stats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st.PTRLookups, st.PTRFailed, st.PTRDropped = p.lookups, p.failed, p.dropped
	st.PTRCached = len(p.cache)
}

func (p *ptrCache) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.end()
	p.wg.Wait()
}
