// Package e2e holds netshape's end-to-end tests: they build the netshape
// binary, run it inside a throwaway network namespace (never the machine's own)
// with a test server in a second namespace, and drive real clients through it.
// They need root and skip with a message otherwise.
package e2e
