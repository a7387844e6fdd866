package sockmap

import (
	"io"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Kernel behaviours the Relay's design rests on. If one of these fails on
// a new kernel, revisit the hand-off or the flush in relay_linux.go.

// linkRaw puts a pair in the maps the way linkTargetsLocked and
// linkVerdictsLocked do, without the hand-off and without a kick.
func linkRaw(t *testing.T, o *objects, ch chain) (ca uint64) {
	t.Helper()
	fa, fb := fdOf(t, ch.a), fdOf(t, ch.b)
	ca, _ = unix.GetsockoptUint64(fa, unix.SOL_SOCKET, unix.SO_COOKIE)
	cb, _ := unix.GetsockoptUint64(fb, unix.SOL_SOCKET, unix.SO_COOKIE)
	for _, err := range []error{
		o.counts.Put(ca, uint64(0)), o.counts.Put(cb, uint64(0)),
		o.targets.Update(ca, uint64(fb), ebpf.UpdateNoExist), o.targets.Update(cb, uint64(fa), ebpf.UpdateNoExist),
		o.verdict.Update(ca, uint64(fa), ebpf.UpdateNoExist), o.verdict.Update(cb, uint64(fb), ebpf.UpdateNoExist),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

func loadTestObjects(t *testing.T) *objects {
	needRoot(t)
	o, err := loadObjects(16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.close() })
	return o
}

func count(t *testing.T, o *objects, c uint64) uint64 {
	var n uint64
	if err := o.counts.Lookup(c, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQueuedBytesNeedKick: bytes queued before a socket enters the verdict
// sockhash stay queued until sk_data_ready runs; SO_RCVLOWAT runs it.
func TestQueuedBytesNeedKick(t *testing.T) {
	o := loadTestObjects(t)
	ch := newChain(t, listener(t))
	ch.cli.Write([]byte("queued"))
	waitQueued(t, ch.a, 6)
	ca := linkRaw(t, o, ch)
	time.Sleep(50 * time.Millisecond)
	if n := count(t, o, ca); n != 0 {
		t.Fatalf("the program saw %d queued bytes without a kick; the kick is no longer needed", n)
	}
	if err := unix.SetsockoptInt(fdOf(t, ch.a), unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	ch.srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(ch.srv, buf); err != nil || string(buf) != "queued" {
		t.Fatalf("after the kick the server read %q, %v", buf, err)
	}
}

// TestPartlyReadSkbRedirectedWhole: the verdict program gets a partly read
// skb whole, so the bytes already read are sent again. This is why Splice
// relays a socket that was read from in user space.
func TestPartlyReadSkbRedirectedWhole(t *testing.T) {
	o := loadTestObjects(t)
	ch := newChain(t, listener(t))
	ch.cli.Write([]byte("hello"))
	waitQueued(t, ch.a, 5)
	io.ReadFull(ch.a, make([]byte, 2)) // "he" read by user space
	linkRaw(t, o, ch)
	unix.SetsockoptInt(fdOf(t, ch.a), unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	ch.cli.Close()
	ch.srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	got, _ := io.ReadAll(ch.srv)
	if string(got) != "hello" {
		t.Fatalf("server read %q; the kernel no longer repeats read bytes (%q would be right), Splice could hand read-from sockets to the kernel again", got, "llo")
	}
}

// TestBytesReceivedCountsFIN: tcpi_bytes_received counts the FIN as a
// byte (dataReceived corrects it) and tcpi_bytes_acked counts the SYN.
func TestBytesReceivedCountsFIN(t *testing.T) {
	needRoot(t)
	ch := newChain(t, listener(t))
	ch.cli.Write([]byte("12345"))
	ch.cli.CloseWrite()
	io.ReadFull(ch.a, make([]byte, 5))
	time.Sleep(20 * time.Millisecond)
	ti, err := unix.GetsockoptTCPInfo(fdOf(t, ch.a), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	if !finReceived(ti.State) || ti.Bytes_received != 6 || dataReceived(ti) != 5 {
		t.Fatalf("after 5 bytes and a FIN: state %d, bytes_received %d, dataReceived %d; want a FIN state, 6, 5", ti.State, ti.Bytes_received, dataReceived(ti))
	}
	w, err := written(fdOf(t, ch.cli), true)
	if err != nil || w != 1+5+1 {
		t.Fatalf("written = %d, %v; want SYN+5+FIN = 7", w, err)
	}
}

// TestReadSoFar: Splice's precondition check counts bytes read, not bytes
// peeked or still queued, with or without a FIN.
func TestReadSoFar(t *testing.T) {
	needRoot(t)
	l := listener(t)
	for _, tc := range []struct {
		name      string
		peek, rd  int
		fin       bool
		wantRead  uint64
		wantState uint8
	}{
		{"untouched", 0, 0, false, 0, tcpEstablished},
		{"peeked", 10, 0, false, 0, tcpEstablished},
		{"partly read", 10, 4, false, 4, tcpEstablished},
		{"read to empty", 0, 10, false, 10, tcpEstablished},
		{"untouched, FIN", 0, 0, true, 0, 8},
		{"read to empty, FIN", 0, 10, true, 10, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := newChain(t, l)
			ch.cli.Write([]byte("0123456789"))
			if tc.fin {
				ch.cli.CloseWrite()
			}
			waitQueued(t, ch.a, 10)
			fd := fdOf(t, ch.a)
			if tc.peek > 0 {
				if n, _, err := unix.Recvfrom(fd, make([]byte, tc.peek), unix.MSG_PEEK); err != nil || n != tc.peek {
					t.Fatalf("peek: %d, %v", n, err)
				}
			}
			if tc.rd > 0 {
				if _, err := io.ReadFull(ch.a, make([]byte, tc.rd)); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; tc.fin; i++ { // wait for CLOSE_WAIT
				ti, _ := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
				if ti != nil && finReceived(ti.State) || i > 2000 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			read, state, err := readSoFar(fd)
			if err != nil || read != tc.wantRead || state != tc.wantState {
				t.Fatalf("readSoFar = %d, state %d, %v; want %d, state %d", read, state, err, tc.wantRead, tc.wantState)
			}
		})
	}
}
