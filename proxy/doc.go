// Package proxy is netshape's transparent TCP proxy: it accepts the
// connections the kernel redirects to it, recovers where each was going,
// identifies it (process, host name), asks policy, optionally holds it for a
// prompt answer, dials the original destination with a socket the redirect
// rules skip, and relays both directions.
//
// On Linux, flows that need not wait live on event loops (loop_linux.go):
// one goroutine per CPU with an edge-triggered epoll set accepts,
// identifies, decides, dials (non-blocking) and relays (small bursts copied,
// larger ones spliced), running the hooks inline with raw system calls, with
// no goroutine per connection; an idle flow costs its two sockets and a
// little heap. A flow that must
// block (a prompt, a rate limit, also one added mid-flow) is handed to the
// goroutine relay below, which every OS has.
//
// The goroutine relay keeps both sides as *net.TCPConn and copies in bounded chunks
// (1 MiB, or what the flow's limiter grants) so that byte counters, shaping
// and quotas see every chunk. On Linux it moves the bytes
// with its own splice(2) loop through pooled 1 MiB pipes, taken only while
// bytes move (splice_linux.go); elsewhere with io.CopyN. A direction with
// nothing to read waits a few milliseconds in the runtime's poller, then
// parks in an epoll set of the proxy's own without a goroutine
// (park_linux.go), so an idle connection costs its two sockets and a little
// heap. It propagates half-close (CloseWrite) and resets, waits for both
// directions, and never leaks a goroutine or a file descriptor. MaxConns
// caps concurrent flows; past it a connection is reset at once. Everything the proxy does not own (procmap,
// dnsmap, policy, shaper, store) reaches it through the Hooks seam, so the
// proxy stays a small loop.
package proxy
