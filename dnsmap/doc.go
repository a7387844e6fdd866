// Package dnsmap learns which host name an application meant for an IP address
// from the DNS answers seen on the wire, so that a connection to 142.250.1.1
// can be shown and matched as www.youtube.com.
//
// The capture code hands every DNS message it sees to ObserveUDP (one message
// per datagram) or ObserveTCP (a TCP segment payload from port 53, with 2-byte
// length prefixes). Answers teach IP → name: CNAME chains are followed so the
// IP maps to the name that was asked (the question), not to the CDN name at
// the end of the chain. The proxy asks Name on its hot path.
//
// Names live as long as their TTL plus a bounded grace period (applications
// keep connections and cached addresses past the TTL). Memory is bounded: the
// map keeps at most MaxEntries IPs, evicting the least recently used, and a
// few names per IP (most recent first).
//
// PTR is a fallback for IPs no answer was seen for: it returns a cached
// reverse name at once and otherwise starts one background lookup (bounded
// concurrency, deduplicated, negatively cached, with a timeout), so it never
// delays a flow. PTR answers seen on the wire fill the same cache.
package dnsmap
