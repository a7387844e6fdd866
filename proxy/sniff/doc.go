// Package sniff reads the host name a client means from the first bytes it
// sends on a TCP connection: the server_name (SNI) of a TLS ClientHello, or the
// Host header of a plain HTTP/1.x request.
//
// The proxy calls these functions on the bytes it has buffered so far. Every
// function answers in one of three ways:
//
//   - a host name (validated and lower-cased), with a nil error;
//   - an error wrapping ErrNeedMore: b is a valid but incomplete prefix, read
//     more bytes (up to the caller's own limit) and call again with all of them;
//   - any other error: stop waiting. ErrNotTLS / ErrNotHTTP mean the bytes are
//     some other protocol, ErrMalformed that they start like the protocol but
//     break its rules, ErrNoHost that the message is complete but names no host,
//     ErrBadName that the name it carries is not a valid host name.
//
// The input is untrusted: no length in it is believed before it is checked
// against the bytes present, nothing panics, and on the happy path the only
// allocation is the returned string.
package sniff
