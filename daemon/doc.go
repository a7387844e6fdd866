// Package daemon wires netshape together and owns its lifecycle: the state
// directory and its lock, the redirect backend, the proxy, the control API, and
// the removal of every rule on every way out.
package daemon
