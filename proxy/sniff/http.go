package sniff

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

const (
	maxMethodLen   = 24
	maxRequestLine = 16 << 10 // longer request lines are refused by common servers too
	maxHeaderBytes = 64 << 10 // bytes scanned for a Host line before giving up
)

var (
	errHTTPNeedMore = fmt.Errorf("sniff: HTTP request header incomplete: %w", ErrNeedMore)
	errHTTPNoHost   = fmt.Errorf("sniff: HTTP request has no Host header: %w", ErrNoHost)
	errNotHTTP      = fmt.Errorf("sniff: request line is not METHOD SP target SP HTTP/1.x: %w", ErrNotHTTP)
)

// HTTPHost returns the host of the Host header of the HTTP/1.x request at the
// start of b, without its port. An IPv6 literal comes back without brackets.
// It answers as soon as the Host line is complete; the rest of the header
// need not have arrived. See the package doc for the error convention.
func HTTPHost(b []byte) (string, error) {
	line, rest, ok := cutLine(b)
	if !ok {
		if len(b) > maxRequestLine {
			return "", fmt.Errorf("sniff: HTTP request line longer than %d bytes: %w", maxRequestLine, ErrMalformed)
		}
		if err := checkRequestLine(b, true); err != nil {
			return "", err
		}
		return "", errHTTPNeedMore
	}
	if err := checkRequestLine(line, false); err != nil {
		return "", err
	}
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			if len(b)-len(rest) > maxHeaderBytes {
				return "", fmt.Errorf("sniff: no Host line in the first %d bytes of the HTTP header: %w", maxHeaderBytes, ErrMalformed)
			}
			return "", errHTTPNeedMore
		}
		if len(line) == 0 {
			return "", errHTTPNoHost // end of header
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding of some other field
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return "", fmt.Errorf("sniff: HTTP header line without a valid field name: %w", ErrMalformed)
		}
		if !isHost(line[:colon]) {
			continue
		}
		if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			return "", fmt.Errorf("sniff: HTTP Host header folded over lines: %w", ErrMalformed)
		}
		return hostHeader(trimOWS(line[colon+1:]))
	}
}

// cutLine cuts b at the first LF and drops a CR before it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, b, false
	}
	line = b[:i]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, b[i+1:], true
}

// checkRequestLine checks "METHOD SP request-target SP HTTP/1.D". When
// partial, l may stop anywhere and only what is there is checked.
func checkRequestLine(l []byte, partial bool) error {
	if partial {
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
	}
	i := 0
	for i < len(l) && (l[i] >= 'A' && l[i] <= 'Z' || l[i] == '-' || l[i] == '_') {
		i++
	}
	if i > maxMethodLen {
		return errNotHTTP
	}
	if i == len(l) {
		// Only a method so far. Clients send the request line in one
		// write, so a first message that is a few capitals and nothing
		// more is another protocol (a 1-byte "E" must not wait for a
		// rest that never comes), unless it begins a known method.
		if partial && knownMethodPrefix(l) {
			return nil
		}
		return errNotHTTP
	}
	if i == 0 || l[i] != ' ' {
		return errNotHTTP
	}
	i++
	start := i
	for i < len(l) && l[i] > ' ' && l[i] < 0x7f {
		i++
	}
	if i == len(l) {
		if partial {
			return nil
		}
		return errNotHTTP
	}
	if i == start || l[i] != ' ' {
		return errNotHTTP
	}
	v := l[i+1:]
	const proto = "HTTP/1.D"
	if len(v) > len(proto) || !partial && len(v) != len(proto) {
		return errNotHTTP
	}
	for k, c := range v {
		if k == len(proto)-1 {
			if c < '0' || c > '9' {
				return errNotHTTP
			}
		} else if c != proto[k] {
			return errNotHTTP
		}
	}
	return nil
}

// hostHeader validates a Host field value (RFC 9110 7.2: uri-host [":" port]).
func hostHeader(v []byte) (string, error) {
	if len(v) == 0 {
		return "", errHTTPNoHost
	}
	host := v
	var port []byte
	if v[0] == '[' {
		end := bytes.IndexByte(v, ']')
		if end < 0 {
			return "", fmt.Errorf("sniff: HTTP Host %q: unclosed '[': %w", v, ErrBadName)
		}
		host, port = v[1:end], v[end+1:]
		if len(port) > 0 && port[0] != ':' {
			return "", fmt.Errorf("sniff: HTTP Host %q: junk after ']': %w", v, ErrBadName)
		}
	} else if i := bytes.LastIndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i:]
	}
	if len(port) > 0 {
		port = port[1:]
		if len(port) > 5 || !allDigits(port) {
			return "", fmt.Errorf("sniff: HTTP Host %q: bad port: %w", v, ErrBadName)
		}
	}
	if v[0] == '[' {
		ip, err := netip.ParseAddr(string(host))
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", fmt.Errorf("sniff: HTTP Host %q: bad IPv6 literal: %w", v, ErrBadName)
		}
		return ip.String(), nil
	}
	h, err := hostName(host)
	if err != nil {
		return "", fmt.Errorf("sniff: HTTP Host: %w", err)
	}
	return h, nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isHost reports whether a field name is "Host", in any case.
func isHost(name []byte) bool {
	return len(name) == 4 && name[0]|0x20 == 'h' && name[1]|0x20 == 'o' && name[2]|0x20 == 's' && name[3]|0x20 == 't'
}

// isToken reports whether b is an RFC 9110 token (a field name).
func isToken(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// methods are the request methods whose first bytes alone are taken for the
// start of an HTTP request: RFC 9110's, PATCH, HTTP/2's preface (PRI) and
// the WebDAV, CalDAV and UPnP ones that clients send.
var methods = [...]string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
	"MKCALENDAR", "ACL", "BIND", "UNBIND", "REBIND", "CHECKOUT", "MERGE", "MKACTIVITY",
	"M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "LINK", "UNLINK",
}

// knownMethodPrefix reports whether p is a prefix of a known method.
func knownMethodPrefix(p []byte) bool {
	for _, m := range methods {
		if len(p) <= len(m) && m[:len(p)] == string(p) {
			return true
		}
	}
	return false
}
