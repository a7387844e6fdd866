// Package control is netshape's local API: HTTP+JSON over a unix socket that is
// 0600 (or 0660 with a group) and checks every peer's credentials from the
// kernel (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS and FreeBSD). Peers
// that are not root, not the daemon's own user and not in the configured group
// get 403. The CLI is a client of it (Client); every query has a JSON form.
package control
