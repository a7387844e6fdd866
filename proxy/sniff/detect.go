package sniff

import (
	"errors"
	"fmt"

	"github.com/netshape/netshape/flow"
)

var (
	errDetectNeedMore = fmt.Errorf("sniff: no bytes yet: %w", ErrNeedMore)
	errUnknown        = fmt.Errorf("sniff: first bytes are neither TLS (%w) nor HTTP/1.x (%w)", ErrNotTLS, ErrNotHTTP)
)

// Detect finds the host name in the first bytes of a connection, whichever of
// TLS or HTTP/1.x it is. source is flow.HostSNI ("sni") or flow.HostHTTP
// ("http") once the protocol is recognised, even when err is not nil (for
// example TLS without SNI gives "sni" and ErrNoHost). When b is neither, err
// wraps both ErrNotTLS and ErrNotHTTP and source is "".
func Detect(b []byte) (host, source string, err error) {
	if len(b) == 0 {
		return "", "", errDetectNeedMore
	}
	if b[0] == recordTypeHandshake {
		host, err = ServerName(b)
		if errors.Is(err, ErrNotTLS) {
			return "", "", errUnknown
		}
		return host, flow.HostSNI, err
	}
	host, err = HTTPHost(b)
	if errors.Is(err, ErrNotHTTP) {
		return "", "", errUnknown
	}
	return host, flow.HostHTTP, err
}
