package sniff

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned (wrapped) by ServerName, HTTPHost and Detect. Test them with errors.Is.
var (
	// ErrNeedMore means the bytes are a valid prefix: call again with more.
	ErrNeedMore = errors.New("incomplete message, need more bytes")
	// ErrNotTLS means the bytes are not the start of a TLS handshake.
	ErrNotTLS = errors.New("not a TLS ClientHello")
	// ErrNotHTTP means the bytes are not the start of an HTTP/1.x request.
	ErrNotHTTP = errors.New("not an HTTP/1.x request")
	// ErrMalformed means the bytes start like the protocol but break its rules.
	ErrMalformed = errors.New("malformed message")
	// ErrNoHost means the message is complete but carries no host name.
	ErrNoHost = errors.New("no host name in message")
	// ErrBadName means the message carries a name that is not a valid host name.
	ErrBadName = errors.New("invalid host name")
)

const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// hostName validates b as a DNS host name and returns it lower-cased, without
// a trailing dot. Letters, digits, '-' and '_' are allowed in labels (the
// underscore appears in real service names); labels are 1..63 bytes and the
// name at most 253. It allocates only the returned string.
func hostName(b []byte) (string, error) {
	if n := len(b); n > 0 && b[n-1] == '.' {
		b = b[:n-1]
	}
	if len(b) == 0 {
		return "", fmt.Errorf("sniff: empty name: %w", ErrBadName)
	}
	if len(b) > maxNameLen {
		return "", fmt.Errorf("sniff: name of %d bytes is longer than %d: %w", len(b), maxNameLen, ErrBadName)
	}
	upper := false
	label := 0
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			if label == 0 {
				return "", fmt.Errorf("sniff: empty label at byte %d: %w", i, ErrBadName)
			}
			label = 0
			continue
		default:
			return "", fmt.Errorf("sniff: byte 0x%02x at %d not allowed in a host name: %w", c, i, ErrBadName)
		}
		label++
		if label > maxLabelLen {
			return "", fmt.Errorf("sniff: label longer than %d bytes: %w", maxLabelLen, ErrBadName)
		}
	}
	if label == 0 {
		return "", fmt.Errorf("sniff: name ends with an empty label: %w", ErrBadName)
	}
	if !upper {
		return string(b), nil
	}
	var sb strings.Builder
	sb.Grow(len(b))
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		sb.WriteByte(c)
	}
	return sb.String(), nil
}
