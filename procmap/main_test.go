package procmap

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestMain doubles as a helper process: with PROCMAP_HELPER set, the test
// binary connects to PROCMAP_ADDR, prints its local address and then either
// waits for stdin to close ("hold"), exits at once ("exit"), or execs socat
// to connect again after reading a line ("exec"). "bpf" (Linux)
// holds a Map with the BPF fast path instead.
func TestMain(m *testing.M) {
	if os.Getenv("PROCMAP_HELPER") == "bpf" {
		os.Exit(bpfHelper())
	}
	if mode := os.Getenv("PROCMAP_HELPER"); mode != "" {
		os.Exit(helper(mode, os.Getenv("PROCMAP_ADDR")))
	}
	os.Exit(m.Run())
}

func helper(mode, addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper dial:", err)
		return 2
	}
	fmt.Println(c.LocalAddr().String())
	if mode == "exec" { // on a line from stdin, become socat and connect again
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		socat, err := exec.LookPath("socat")
		if err == nil {
			err = syscall.Exec(socat, []string{"socat", "-u", "TCP:" + addr, "-"}, os.Environ())
		}
		fmt.Fprintln(os.Stderr, "helper exec:", err)
		return 2
	}
	if mode == "hold" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the test closes stdin
	}
	return 0
}
