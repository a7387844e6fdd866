package dnsmap

import (
	"encoding/binary"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

const (
	// maxChain bounds how many CNAME hops are followed from a question.
	maxChain = 16
	// maxQuestions bounds the questions looked at in one message (real
	// messages have one): chain walks cost questions × hops × answers.
	maxQuestions = 4
)

// ObserveUDP learns from one DNS message (a UDP payload). Queries and
// unsuccessful responses are counted and otherwise ignored; malformed
// messages are skipped and counted.
func (m *Map) ObserveUDP(payload []byte) {
	m.observe(payload)
}

// ObserveTCP learns from a TCP segment payload of a DNS connection: messages
// each preceded by a 2-byte length. Whole messages are taken; an incomplete
// one at the end (or a segment that starts mid-message) is skipped and counted.
func (m *Map) ObserveTCP(payload []byte) {
	for b := payload; len(b) > 0; {
		if len(b) < 2 {
			m.partial.Add(1)
			return
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n > len(b) {
			m.partial.Add(1)
			return
		}
		if !m.observe(b[:n]) {
			return // lost framing: what follows cannot be trusted
		}
		b = b[n:]
	}
}

// observe parses and learns from one message; it reports whether it parsed.
// A message cut short after a complete answer section (a capture snaplen
// too small for the additional section, say) is still learned from: every
// answer record in it parsed whole.
func (m *Map) observe(b []byte) bool {
	var msg dns.Msg
	if err := msg.Unpack(b); err != nil {
		if len(msg.Answer) == 0 || len(msg.Question) == 0 {
			m.malformed.Add(1)
			m.cfg.Logger.Debug("dnsmap: skipping malformed DNS message", "len", len(b), "err", err)
			return false
		}
		m.truncated.Add(1)
	}
	m.observed.Add(1)
	if msg.Response && msg.Opcode == dns.OpcodeQuery && msg.Rcode == dns.RcodeSuccess {
		m.learn(&msg)
	}
	return true
}

// learn maps the addresses in the answer section to the question names whose
// CNAME chains lead to them. Addresses no question leads to map to their own
// owner name.
func (m *Map) learn(msg *dns.Msg) {
	now := m.now()
	used := make([]bool, len(msg.Answer))
	for _, q := range msg.Question[:min(len(msg.Question), maxQuestions)] {
		qname, ok := normalize(q.Name)
		if !ok {
			continue
		}
		// Walk the chain qname → cname → ... keeping the smallest TTL so far.
		owner, ttl := q.Name, ^uint32(0)
		for hop := 0; hop <= maxChain; hop++ {
			next := ""
			for i, rr := range msg.Answer {
				h := rr.Header()
				if !strings.EqualFold(h.Name, owner) {
					continue
				}
				switch rr := rr.(type) {
				case *dns.A:
					m.addIP(rr.A, qname, min(ttl, h.Ttl), now)
					used[i] = true
				case *dns.AAAA:
					m.addIP(rr.AAAA, qname, min(ttl, h.Ttl), now)
					used[i] = true
				case *dns.HTTPS:
					m.addHints(&rr.SVCB, qname, min(ttl, h.Ttl), now)
				case *dns.SVCB:
					m.addHints(rr, qname, min(ttl, h.Ttl), now)
				case *dns.PTR:
					if ip, ok := parseReverse(q.Name); ok {
						if name, ok := normalize(rr.Ptr); ok {
							m.ptr.store(ip, name, min(ttl, h.Ttl), now)
						}
					}
				case *dns.CNAME:
					if next == "" {
						next, ttl = rr.Target, min(ttl, h.Ttl)
					}
				}
			}
			if next == "" || strings.EqualFold(next, owner) {
				break
			}
			owner = next
		}
	}
	for i, rr := range msg.Answer {
		if used[i] {
			continue
		}
		var ip []byte
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if name, ok := normalize(rr.Header().Name); ok {
			m.addIP(ip, name, rr.Header().Ttl, now)
		}
	}
}

func (m *Map) addIP(b []byte, name string, ttl uint32, now int64) {
	if ip, ok := netip.AddrFromSlice(b); ok {
		m.add(ip, name, ttl, now)
	}
}

// addHints maps the ipv4hint/ipv6hint addresses of an SVCB/HTTPS record.
func (m *Map) addHints(rr *dns.SVCB, name string, ttl uint32, now int64) {
	for _, kv := range rr.Value {
		switch kv := kv.(type) {
		case *dns.SVCBIPv4Hint:
			for _, ip := range kv.Hint {
				m.addIP(ip.To4(), name, ttl, now)
			}
		case *dns.SVCBIPv6Hint:
			for _, ip := range kv.Hint {
				m.addIP(ip, name, ttl, now)
			}
		}
	}
}

// normalize turns a DNS name in presentation form into the form the rest of
// netshape uses: lower case, no trailing dot. Names with escapes or bytes
// outside letters, digits, '-', '_' and '.' are refused, as are empty labels
// and the root.
func normalize(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	upper := false
	label := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			if label == 0 {
				return "", false
			}
			label = 0
			continue
		default:
			return "", false
		}
		if label++; label > 63 {
			return "", false
		}
	}
	if label == 0 {
		return "", false
	}
	if upper {
		s = strings.ToLower(s)
	}
	return s, true
}
