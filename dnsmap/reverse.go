package dnsmap

import (
	"net/netip"
	"strings"
)

// parseReverse returns the address a reverse-lookup name stands for:
// "4.3.2.1.in-addr.arpa." is 1.2.3.4, and the 32 nibbles under ip6.arpa an
// IPv6 address. Anything else (including RFC 2317 delegation names) is not.
func parseReverse(name string) (netip.Addr, bool) {
	name = strings.TrimSuffix(name, ".")
	if s, ok := cutSuffixFold(name, ".in-addr.arpa"); ok {
		var a [4]byte
		for i := 3; i >= 0; i-- {
			label := s
			if i > 0 {
				var found bool
				label, s, found = strings.Cut(s, ".")
				if !found {
					return netip.Addr{}, false
				}
			}
			if len(label) == 0 || len(label) > 3 || len(label) > 1 && label[0] == '0' {
				return netip.Addr{}, false
			}
			v := 0
			for _, c := range []byte(label) {
				if c < '0' || c > '9' {
					return netip.Addr{}, false
				}
				v = v*10 + int(c-'0')
			}
			if v > 255 {
				return netip.Addr{}, false
			}
			a[i] = byte(v)
		}
		return netip.AddrFrom4(a), true
	}
	if s, ok := cutSuffixFold(name, ".ip6.arpa"); ok {
		if len(s) != 63 {
			return netip.Addr{}, false
		}
		var a [16]byte
		for i := 0; i < 32; i++ {
			c := s[2*i]
			if i < 31 && s[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			case c >= 'A' && c <= 'F':
				v = c - 'A' + 10
			default:
				return netip.Addr{}, false
			}
			n := 31 - i // nibble index from the most significant
			a[n/2] |= v << (4 * (1 - n%2))
		}
		return netip.AddrFrom16(a), true
	}
	return netip.Addr{}, false
}

func cutSuffixFold(s, suffix string) (string, bool) {
	if len(s) < len(suffix) || !strings.EqualFold(s[len(s)-len(suffix):], suffix) {
		return "", false
	}
	return s[:len(s)-len(suffix)], true
}
