// Package flow defines Flow, the one record of a TCP connection that travels from
// the proxy to policy, shaper, control and store.
//
// It lives in its own tiny package (outside the layout in DEVELOPERS.md) because
// every other package needs the type and none of them should have to import
// another's machinery to get it.
package flow
