package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Test addresses.
var (
	CliV4 = netip.MustParseAddr("198.18.0.1")
	SrvV4 = netip.MustParseAddr("198.18.0.2")
	CliV6 = netip.MustParseAddr("fd00:5e7::1")
	SrvV6 = netip.MustParseAddr("fd00:5e7::2")
)

// Require skips t unless the test can build namespaces.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (Debian package iproute2)")
	}
}

// Pair is a client and a server namespace joined by a veth pair.
type Pair struct {
	Cli, Srv     string // namespace names
	CliIf, SrvIf string // veth names inside them
	t            testing.TB
}

// NewPair creates two namespaces with a veth between them and removes them
// when the test ends.
func NewPair(t testing.TB, prefix string) *Pair {
	t.Helper()
	Require(t)
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	p := &Pair{Cli: prefix + "c" + id, Srv: prefix + "s" + id, CliIf: "v" + id + "c", SrvIf: "v" + id + "s", t: t}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", p.Cli).Run()
		exec.Command("ip", "netns", "del", p.Srv).Run()
	})
	for _, ns := range []string{p.Cli, p.Srv} {
		Must(t, "ip", "netns", "add", ns)
		Must(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	Must(t, "ip", "link", "add", p.CliIf, "netns", p.Cli, "type", "veth", "peer", "name", p.SrvIf, "netns", p.Srv)
	for _, c := range [][]string{
		{"-n", p.Cli, "addr", "add", CliV4.String() + "/24", "dev", p.CliIf},
		{"-n", p.Srv, "addr", "add", SrvV4.String() + "/24", "dev", p.SrvIf},
		{"-n", p.Cli, "addr", "add", CliV6.String() + "/64", "dev", p.CliIf, "nodad"},
		{"-n", p.Srv, "addr", "add", SrvV6.String() + "/64", "dev", p.SrvIf, "nodad"},
		{"-n", p.Cli, "link", "set", p.CliIf, "up"},
		{"-n", p.Srv, "link", "set", p.SrvIf, "up"},
	} {
		Must(t, "ip", c...)
	}
	return p
}

// Must runs a command and fails the test if it fails.
func Must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Cmd returns a command that runs inside namespace ns.
func Cmd(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Do runs f on an OS thread that has entered namespace ns. Sockets f creates
// belong to ns and may be used from any goroutine afterwards. The thread is
// discarded afterwards, so no other goroutine ever runs in ns by accident.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the runtime ends this thread when the goroutine exits.
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// FD opens namespace ns for APIs that take a namespace file descriptor. The
// caller closes it.
func FD(ns string) (int, error) {
	return unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
}
