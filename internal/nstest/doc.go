// Package nstest builds throwaway network namespaces for end-to-end tests: a
// client namespace and a server namespace joined by a veth pair, with test
// addresses 198.18.0.1/24 and fd00:5e7::1/64 (client) and 198.18.0.2/24 and
// fd00:5e7::2/64 (server). Traffic never leaves them.
//
// Tests that use it need root; Require skips them with a message otherwise.
package nstest
