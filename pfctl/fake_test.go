package pfctl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// altqNoise is what macOS pfctl prints on stderr before everything else.
const altqNoise = "No ALTQ support in kernel\nALTQ related functions disabled\n"

// Main rulesets as pfctl -s rules / -s nat print them.
const (
	darwinMainRules = "scrub-anchor \"com.apple/*\" all fragment reassemble\nanchor \"com.apple/*\" all\n"
	darwinMainNat   = "nat-anchor \"com.apple/*\" all\nrdr-anchor \"com.apple/*\" all\n"
	bsdMainRules    = "block drop in all\npass out all flags S/SA keep state\nanchor \"netshape\" all\n"
	bsdMainNat      = "rdr-anchor \"netshape\" all\n"
	bsdInfoEnabled  = "Status: Enabled for 0 days 01:02:03          Debug: Urgent\n\nState Table                          Total             Rate\n  current entries                        4\n"
	bsdInfoDisabled = "Status: Disabled for 0 days 00:00:00         Debug: Urgent\n"
)

// exitError stands in for *exec.ExitError.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// fakePF is a Runner that simulates the parts of pf that pfctl changes, with
// pfctl's real output formats, and records every command.
type fakePF struct {
	t      *testing.T
	goos   string
	anchor string // the anchor the PF under test uses

	mainRules, mainNat, info string
	enabled                  bool
	tokens                   map[string]bool // live enable references
	nextToken                uint64
	anchors                  map[string]string // anchor -> loaded ruleset
	// alreadyEnabledNoToken makes -E answer like plain -e on an enabled pf.
	alreadyEnabledNoToken bool

	fail  map[string]string // command line -> stderr of a failure (exit 1)
	calls []string
}

func newFakePF(t *testing.T, goos string) *fakePF {
	f := &fakePF{t: t, goos: goos, tokens: map[string]bool{}, anchors: map[string]string{},
		nextToken: 13845789437398547195, fail: map[string]string{}}
	if goos == "darwin" {
		f.anchor = DefaultAnchorDarwin
		f.mainRules, f.mainNat = darwinMainRules, darwinMainNat
	} else {
		f.anchor = DefaultAnchorFreeBSD
		f.mainRules, f.mainNat, f.info = bsdMainRules, bsdMainNat, bsdInfoEnabled
		f.enabled = true
	}
	return f
}

func (f *fakePF) Run(stdin []byte, name string, args ...string) (string, string, error) {
	line := name + " " + strings.Join(args, " ")
	f.calls = append(f.calls, line)
	noise := ""
	if f.goos == "darwin" {
		noise = altqNoise
	}
	if name != "pfctl" {
		f.t.Errorf("unexpected command %q", line)
		return "", "", exitError(127)
	}
	if msg, ok := f.fail[line]; ok {
		return "", noise + msg, exitError(1)
	}
	switch {
	case line == "pfctl -s rules":
		return f.mainRules, noise, nil
	case line == "pfctl -s nat":
		return f.mainNat, noise, nil
	case line == "pfctl -s info" && f.goos == "freebsd":
		return f.info, "", nil
	case line == "pfctl -E" && f.goos == "darwin":
		if f.alreadyEnabledNoToken {
			return "", noise + "pf already enabled\n", exitError(1)
		}
		state := "pf enabled"
		if f.enabled {
			state = "pf already enabled"
		}
		f.enabled = true
		tok := fmt.Sprint(f.nextToken)
		f.nextToken++
		f.tokens[tok] = true
		return "", noise + state + "\nToken : " + tok + "\n", nil
	case len(args) == 2 && args[0] == "-X" && f.goos == "darwin":
		if !f.tokens[args[1]] {
			return "", noise + "pfctl: DIOCSTOPREF: Invalid argument\n", exitError(1)
		}
		delete(f.tokens, args[1])
		if len(f.tokens) == 0 {
			f.enabled = false
			return "", noise + "pf disabled\n", nil
		}
		return "", noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-f" && args[3] == "-":
		f.anchors[args[1]] = string(stdin)
		return "", noise, nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-F" && args[3] == "all":
		delete(f.anchors, args[1])
		return "", noise + "rules cleared\nnat cleared\n0 tables deleted.\n", nil
	}
	f.t.Errorf("fake pfctl does not know %q", line)
	return "", noise + "pfctl: unknown command\n", exitError(1)
}

// takeCalls returns and forgets the recorded commands.
func (f *fakePF) takeCalls() []string {
	c := f.calls
	f.calls = nil
	return c
}

// fakeCreds records setegid calls instead of changing the test's gid.
type fakeCreds struct {
	egid int
	fail error
	sets []int
}

func (c *fakeCreds) Getegid() int { return c.egid }
func (c *fakeCreds) Setegid(gid int) error {
	if c.fail != nil {
		return c.fail
	}
	c.sets = append(c.sets, gid)
	c.egid = gid
	return nil
}

// fakeNatLooker records its arguments and answers dst.
type fakeNatLooker struct {
	client, proxy netip.AddrPort
	dst           netip.AddrPort
	err           error
	closed        int
}

func (n *fakeNatLooker) NatLook(client, proxy netip.AddrPort) (netip.AddrPort, error) {
	n.client, n.proxy = client, proxy
	return n.dst, n.err
}

func (n *fakeNatLooker) Close() error { n.closed++; return nil }

var errFake = errors.New("fake failure")
