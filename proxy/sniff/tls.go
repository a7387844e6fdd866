package sniff

import (
	"encoding/binary"
	"fmt"
)

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22
	maxRecordLen        = 1 << 14 // RFC 8446 5.1: TLSPlaintext.length
	handshakeHeaderLen  = 4
	typeClientHello     = 1
	extServerName       = 0
	sniHostName         = 0
	// maxHelloLen bounds a ClientHello body: its variable parts all have
	// 1- or 2-byte lengths, so a larger claim is a lie.
	maxHelloLen = 2 + 32 + (1 + 255) + (2 + 65535) + (1 + 255) + (2 + 65535)
)

// Prebuilt so that the frequent "wait for more" answer does not allocate.
var (
	errTLSNeedMore = fmt.Errorf("sniff: TLS ClientHello incomplete: %w", ErrNeedMore)
	errTLSNoSNI    = fmt.Errorf("sniff: TLS ClientHello has no server_name extension: %w", ErrNoHost)
)

// ServerName returns the server_name (SNI) host name of the TLS ClientHello
// at the start of b. The ClientHello may be split over several TLS records;
// bytes after it are ignored. See the package doc for the error convention.
func ServerName(b []byte) (string, error) {
	body, err := clientHello(b)
	if err != nil {
		return "", err
	}
	return parseClientHello(body)
}

// checkRecordHeader checks the (possibly partial) record header at the start
// of b. The first record decides whether b is TLS at all; a later record that
// is not a handshake record breaks a ClientHello that spans records.
func checkRecordHeader(b []byte, first bool) error {
	bad := ErrMalformed
	if first {
		bad = ErrNotTLS
	}
	if len(b) == 0 {
		return errTLSNeedMore
	}
	if b[0] != recordTypeHandshake {
		return fmt.Errorf("sniff: TLS record type %d, want handshake (22): %w", b[0], bad)
	}
	if len(b) > 1 && b[1] != 3 {
		return fmt.Errorf("sniff: TLS record version major %d, want 3: %w", b[1], bad)
	}
	if len(b) > 2 && b[2] > 4 {
		return fmt.Errorf("sniff: TLS record version minor %d, want 0..4: %w", b[2], bad)
	}
	if len(b) < recordHeaderLen {
		return errTLSNeedMore
	}
	if n := binary.BigEndian.Uint16(b[3:5]); n == 0 || n > maxRecordLen {
		return fmt.Errorf("sniff: TLS record length %d, want 1..%d: %w", n, maxRecordLen, ErrMalformed)
	}
	return nil
}

// clientHello returns the body of the ClientHello handshake message carried by
// the records at the start of b. When the message sits in the first record the
// body is a sub-slice of b; when it spans records it is copied together.
func clientHello(b []byte) ([]byte, error) {
	var hdr [handshakeHeaderLen]byte
	var first []byte // fragment of the first record
	got, want := 0, -1
	off := 0
	for rec := 0; ; rec++ {
		rest := b[off:]
		if err := checkRecordHeader(rest, rec == 0); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(rest[3:5]))
		frag := rest[recordHeaderLen:]
		complete := len(frag) >= n
		if complete {
			frag = frag[:n]
		}
		if rec == 0 {
			first = frag
		}
		for i := 0; got+i < handshakeHeaderLen && i < len(frag); i++ {
			hdr[got+i] = frag[i]
		}
		got += len(frag)
		if got > 0 && hdr[0] != typeClientHello {
			return nil, fmt.Errorf("sniff: TLS handshake type %d, want ClientHello (1): %w", hdr[0], ErrNotTLS)
		}
		if want < 0 && got >= handshakeHeaderLen {
			n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			if n > maxHelloLen {
				return nil, fmt.Errorf("sniff: TLS ClientHello length %d exceeds %d: %w", n, maxHelloLen, ErrMalformed)
			}
			want = handshakeHeaderLen + n
		}
		if want >= 0 && got >= want {
			if len(first) >= want {
				return first[handshakeHeaderLen:want], nil
			}
			return assemble(b, rec+1, want), nil
		}
		if !complete {
			return nil, errTLSNeedMore
		}
		off += recordHeaderLen + n
	}
}

// assemble copies the fragments of the first nrec records (already checked by
// clientHello) into one buffer and returns the handshake body.
func assemble(b []byte, nrec, want int) []byte {
	buf := make([]byte, 0, want)
	for ; nrec > 0 && len(buf) < want; nrec-- {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		frag := b[recordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		if len(frag) > want-len(buf) {
			frag = frag[:want-len(buf)]
		}
		buf = append(buf, frag...)
		b = b[min(len(b), recordHeaderLen+n):]
	}
	return buf[handshakeHeaderLen:]
}

// parseClientHello finds the host_name in a ClientHello body (RFC 8446 4.1.2,
// RFC 6066 3).
func parseClientHello(s []byte) (string, error) {
	const fixed = 2 + 32 // legacy_version, random
	if len(s) < fixed {
		return "", malformed("ClientHello shorter than version and random")
	}
	s = s[fixed:]
	sid, s, ok := vec8(s)
	if !ok || len(sid) > 32 {
		return "", malformed("bad legacy_session_id")
	}
	suites, s, ok := vec16(s)
	if !ok || len(suites) == 0 || len(suites)%2 != 0 {
		return "", malformed("bad cipher_suites")
	}
	comp, s, ok := vec8(s)
	if !ok || len(comp) == 0 {
		return "", malformed("bad legacy_compression_methods")
	}
	if len(s) == 0 {
		return "", errTLSNoSNI // no extensions at all (old clients)
	}
	exts, s, ok := vec16(s)
	if !ok || len(s) != 0 {
		return "", malformed("bad extensions length")
	}
	for len(exts) > 0 {
		if len(exts) < 4 {
			return "", malformed("truncated extension header")
		}
		typ := binary.BigEndian.Uint16(exts)
		data, rest, ok := vec16(exts[2:])
		if !ok {
			return "", malformed("extension longer than the extensions block")
		}
		exts = rest
		if typ != extServerName {
			continue
		}
		list, rest, ok := vec16(data)
		if !ok || len(rest) != 0 || len(list) == 0 {
			return "", malformed("bad server_name list")
		}
		for len(list) > 0 {
			nameType := list[0]
			name, rest, ok := vec16(list[1:])
			if !ok {
				return "", malformed("server_name entry longer than its list")
			}
			list = rest
			if nameType == sniHostName {
				h, err := hostName(name)
				if err != nil {
					return "", fmt.Errorf("sniff: TLS server_name: %w", err)
				}
				return h, nil
			}
		}
		return "", errTLSNoSNI
	}
	return "", errTLSNoSNI
}

func malformed(what string) error {
	return fmt.Errorf("sniff: TLS ClientHello: %s: %w", what, ErrMalformed)
}

// vec8 splits a vector with a 1-byte length prefix off the front of s.
func vec8(s []byte) (v, rest []byte, ok bool) {
	if len(s) < 1 || int(s[0]) > len(s)-1 {
		return nil, nil, false
	}
	n := int(s[0])
	return s[1 : 1+n], s[1+n:], true
}

// vec16 splits a vector with a 2-byte length prefix off the front of s.
func vec16(s []byte) (v, rest []byte, ok bool) {
	if len(s) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(s))
	if n > len(s)-2 {
		return nil, nil, false
	}
	return s[2 : 2+n], s[2+n:], true
}
