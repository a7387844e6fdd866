package dnsmap

import (
	"context"
	"encoding/binary"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver does reverse lookups for PTR. *net.Resolver satisfies it.
type Resolver interface {
	LookupAddr(ctx context.Context, addr string) (names []string, err error)
}

// Config tunes a Map. The zero value of every field picks the default shown.
type Config struct {
	// MaxEntries bounds the number of IPs remembered (default 65536). The
	// least recently used IP goes first; maps of 2048 entries and more are
	// split in shards (by a seeded hash of the IP) with an LRU each.
	MaxEntries int
	// NamesPerIP bounds the names remembered per IP, most recent first (default 4).
	NamesPerIP int
	// Grace is how long a name still answers after its TTL ran out (default 10m).
	Grace time.Duration
	// MaxTTL caps the TTL taken from answers (default 24h).
	MaxTTL time.Duration
	// Now is the clock tests inject. By default the Map reads the monotonic
	// clock only (half the price of time.Now on Name's hot path); like every
	// monotonic clock it may stand still while the system is suspended, so a
	// name can outlive its TTL by the length of a suspend.
	Now func() time.Time
	// Logger receives debug logs about skipped messages (default: discard).
	Logger *slog.Logger

	// Resolver does PTR lookups (default net.DefaultResolver).
	Resolver Resolver
	// PTRTimeout bounds one reverse lookup (default 3s).
	PTRTimeout time.Duration
	// PTRConcurrency bounds the reverse lookups in flight (default 4); when
	// all are busy, PTR starts none and a later call tries again.
	PTRConcurrency int
	// PTRTTL is how long a reverse name is cached (default 1h).
	PTRTTL time.Duration
	// PTRNegativeTTL is how long a failed reverse lookup is remembered (default 5m).
	PTRNegativeTTL time.Duration
	// PTRMaxEntries bounds the reverse cache, failures included (default 4096).
	PTRMaxEntries int
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxEntries, 65536)
	def(&c.NamesPerIP, 4)
	defd(&c.Grace, 10*time.Minute)
	defd(&c.MaxTTL, 24*time.Hour)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	defd(&c.PTRTimeout, 3*time.Second)
	def(&c.PTRConcurrency, 4)
	defd(&c.PTRTTL, time.Hour)
	defd(&c.PTRNegativeTTL, 5*time.Minute)
	def(&c.PTRMaxEntries, 4096)
}

// Stats counts what a Map has seen.
type Stats struct {
	Observed  uint64 // DNS messages parsed (queries and responses)
	Malformed uint64 // messages that did not parse, skipped
	Truncated uint64 // observed messages cut short after a whole answer section, learned from
	Partial   uint64 // incomplete messages at the end of a TCP segment, skipped
	Entries   int    // IPs with at least one name
	Evicted   uint64 // IPs dropped to stay under MaxEntries

	PTRLookups uint64 // reverse lookups started
	PTRFailed  uint64 // reverse lookups that failed or gave no usable name
	PTRDropped uint64 // reverse lookups not started because all slots were busy
	PTRCached  int    // reverse cache entries, failures included
}

// Map maps IP addresses to the host names DNS answers gave them. It is safe
// for concurrent use. Close it to stop background PTR lookups.
type Map struct {
	cfg    Config
	now    func() int64 // ns since New; every deadline below is on this scale
	grace  int64        // ns
	maxTTL int64        // ns
	seed   uint64
	shift  uint // hash >> shift picks the shard
	shards []shard

	observed, malformed, truncated, partial, evicted atomic.Uint64

	ptr ptrCache
}

type shard struct {
	mu   sync.Mutex
	m    map[netip.Addr]*entry
	lru  entry // sentinel: lru.next is the most recently used
	max  int
	_pad [64]byte // keep hot locks on separate cache lines
}

type entry struct {
	ip         netip.Addr
	prev, next *entry
	names      []named // most recently observed first
}

type named struct {
	name    string
	expires int64 // when the TTL runs out, on the Map's clock
}

// New returns an empty Map.
func New(cfg Config) *Map {
	cfg.setDefaults()
	n := 1
	for n < 64 && cfg.MaxEntries/(2*n) >= 1024 {
		n *= 2
	}
	m := &Map{
		cfg:    cfg,
		grace:  int64(cfg.Grace),
		maxTTL: int64(cfg.MaxTTL),
		seed:   rand.Uint64(),
		shift:  uint(64 - bits.TrailingZeros(uint(n))),
		shards: make([]shard, n),
	}
	for i := range m.shards {
		s := &m.shards[i]
		s.m = make(map[netip.Addr]*entry)
		s.lru.next, s.lru.prev = &s.lru, &s.lru
		s.max = cfg.MaxEntries / n
	}
	if cfg.Now == nil {
		epoch := time.Now()
		m.now = func() int64 { return int64(time.Since(epoch)) } // monotonic reading only
	} else {
		epoch := cfg.Now()
		m.now = func() int64 { return int64(cfg.Now().Sub(epoch)) }
	}
	m.ptr.init(m)
	return m
}

// key is the form an address is stored and looked up under: v4-mapped IPv6
// as IPv4, no zone.
func key(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}

func (m *Map) shardFor(ip netip.Addr) *shard {
	a := ip.As16()
	x := binary.LittleEndian.Uint64(a[:8]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(a[8:]), 29) ^ m.seed
	x *= 0x9e3779b97f4a7c15
	return &m.shards[x>>m.shift] // shift 64 gives 0: one shard
}

// Name returns the most recently observed name for ip whose TTL plus grace has
// not run out. It is cheap and never blocks on I/O.
func (m *Map) Name(ip netip.Addr) (name string, ok bool) {
	ip = key(ip)
	s := m.shardFor(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[ip]
	if e == nil {
		return "", false // a miss costs no clock reading
	}
	now := m.now()
	for _, n := range e.names {
		if now < n.expires+m.grace {
			s.touch(e)
			return n.name, true
		}
	}
	s.remove(e) // every name is stale
	return "", false
}

// Names returns every name remembered for ip that has not run out, most
// recently observed first.
func (m *Map) Names(ip netip.Addr) []string {
	ip = key(ip)
	now := m.now()
	s := m.shardFor(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[ip]
	if e == nil {
		return nil
	}
	var out []string
	for _, n := range e.names {
		if now < n.expires+m.grace {
			out = append(out, n.name)
		}
	}
	return out
}

// add records that ip was given name with ttl seconds to live, at now.
func (m *Map) add(ip netip.Addr, name string, ttl uint32, now int64) {
	ip = key(ip)
	if !ip.IsValid() {
		return
	}
	exp := now + min(int64(ttl)*int64(time.Second), m.maxTTL)
	s := m.shardFor(ip)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[ip]
	if e == nil {
		if len(s.m) >= s.max {
			s.remove(s.lru.prev)
			m.evicted.Add(1)
		}
		e = &entry{ip: ip, names: make([]named, 0, m.cfg.NamesPerIP)}
		s.m[ip] = e
		s.pushFront(e)
	} else {
		s.touch(e)
	}
	// Move (or insert) name to the front, dropping the oldest beyond the cap.
	i := 0
	for i < len(e.names) && e.names[i].name != name {
		i++
	}
	if i == len(e.names) {
		if len(e.names) < cap(e.names) {
			e.names = e.names[:len(e.names)+1]
		} else {
			i = len(e.names) - 1 // overwrite the oldest
		}
	} else {
		exp = max(exp, e.names[i].expires)
	}
	copy(e.names[1:i+1], e.names[:i])
	e.names[0] = named{name: name, expires: exp}
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.lru, s.lru.next
	e.next.prev, s.lru.next = e, e
}

func (s *shard) touch(e *entry) {
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFront(e)
}

func (s *shard) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(s.m, e.ip)
}

// Stats returns the counters.
func (m *Map) Stats() Stats {
	st := Stats{
		Observed:  m.observed.Load(),
		Malformed: m.malformed.Load(),
		Truncated: m.truncated.Load(),
		Partial:   m.partial.Load(),
		Evicted:   m.evicted.Load(),
	}
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		st.Entries += len(s.m)
		s.mu.Unlock()
	}
	m.ptr.stats(&st)
	return st
}

// Close stops the background PTR lookups and waits for them. The map still
// answers Name afterwards; PTR only answers from its cache. Close is idempotent.
func (m *Map) Close() error {
	m.ptr.close()
	return nil
}
