// Package proxy is netshape's transparent TCP proxy: it accepts the
// connections the kernel redirects to it, recovers where each was going,
// identifies it (process, host name), asks policy, optionally holds it for a
// prompt answer, dials the original destination with a socket the redirect
// rules skip, and relays both directions.
//
// The relay keeps both sides as *net.TCPConn and copies with io.CopyN in
// bounded chunks so Linux moves the bytes with splice(2) while byte counters,
// shaping and quotas still see every chunk. It propagates half-close
// (CloseWrite) and resets, waits for both directions, and never leaks a
// goroutine or a file descriptor. Everything the proxy does not own (procmap,
// dnsmap, policy, shaper, store) reaches it through the Hooks seam, so the
// proxy stays a small loop.
package proxy
