package proxy

import (
	"testing"
	"time"
)

// An idle relayed connection holds its two sockets and nothing else: no
// splice pipe waits with it.
func TestIdleRelayHoldsNoPipe(t *testing.T) {
	h := newHarness(t, Hooks{})
	h.server(echoServer)
	before := countFDs(t)
	const n = 200
	for i := 0; i < n; i++ {
		echo(t, h.dial(), "x")
	}
	// Drained pipes kept for the next burst are the pool's, not a connection's.
	// The last connections still linger for bytes, the first are parked:
	// neither holds a pipe.
	h.p.pipes.drain()
	if per := float64(countFDs(t)-before) / n; per > 4.2 {
		t.Fatalf("%.2f descriptors per lingering or parked connection, want 4 (no pipes held)", per)
	}
	time.Sleep(50 * time.Millisecond) // let the relay loops linger out and park
	h.p.pipes.drain()
	// Per connection: the client, the accepted socket, the upstream socket
	// and the server's socket, all in this process; pipes would add 4 more.
	per := float64(countFDs(t)-before) / n
	t.Logf("%.2f descriptors per relayed connection (client and server included)", per)
	if per > 4.2 {
		t.Fatalf("%.2f descriptors per idle relayed connection, want 4 (no pipes held)", per)
	}
}
