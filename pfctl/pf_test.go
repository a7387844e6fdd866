package pfctl

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testGID = 399

type harness struct {
	pf    *PF
	sim   *fakePF
	creds *fakeCreds
	nl    *fakeNatLooker
	dir   string
}

func newHarness(t *testing.T, goos string, mod func(*Config)) *harness {
	t.Helper()
	sim := newFakePF(t, goos)
	return newHarnessWith(t, sim, t.TempDir(), goos, mod)
}

func newHarnessWith(t *testing.T, sim *fakePF, dir, goos string, mod func(*Config)) *harness {
	t.Helper()
	cfg := Config{OS: goos, LoopGID: testGID, StateDir: dir}
	if mod != nil {
		mod(&cfg)
	}
	nl := &fakeNatLooker{}
	p := NewWithRunner(cfg, sim, nl, nil)
	creds := &fakeCreds{egid: 0}
	p.creds = creds
	return &harness{pf: p, sim: sim, creds: creds, nl: nl, dir: dir}
}

func (h *harness) tokenFile() (string, bool) {
	b, err := os.ReadFile(filepath.Join(h.dir, tokenFile))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// assertClean checks that nothing of ours is left in pf or in the process.
func (h *harness) assertClean(t *testing.T) {
	t.Helper()
	if r, ok := h.sim.anchors[h.sim.anchor]; ok {
		t.Errorf("anchor %q still holds rules:\n%s", h.sim.anchor, r)
	}
	if h.sim.goos == "darwin" && len(h.sim.tokens) != 0 {
		t.Errorf("pf enable references still held: %v", h.sim.tokens)
	}
	if tok, ok := h.tokenFile(); ok {
		t.Errorf("token file still present with %q", tok)
	}
	if h.creds.egid != 0 {
		t.Errorf("effective gid is %d, want it restored to 0", h.creds.egid)
	}
}

func TestInstallRemoveDarwin(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	if err := h.pf.Install(); err != nil {
		t.Fatalf("Install: %v", err)
	}
	A := DefaultAnchorDarwin
	wantCalls := []string{
		"pfctl -a " + A + " -F all", // stale anchor of a previous run, if any
		"pfctl -s rules",
		"pfctl -s nat",
		"pfctl -a " + A + " -f -",
		"pfctl -E",
	}
	if got := h.sim.takeCalls(); !slices.Equal(got, wantCalls) {
		t.Errorf("Install ran\n%q\nwant\n%q", got, wantCalls)
	}
	rules, _ := h.pf.Rules()
	if h.sim.anchors[A] != rules || !strings.Contains(rules, "rdr pass on lo0 inet proto tcp") {
		t.Errorf("anchor holds\n%s\nwant\n%s", h.sim.anchors[A], rules)
	}
	if !h.sim.enabled || len(h.sim.tokens) != 1 {
		t.Errorf("pf enabled=%v refs=%v, want enabled with one reference", h.sim.enabled, h.sim.tokens)
	}
	tok, ok := h.tokenFile()
	if !ok || !h.sim.tokens[tok] {
		t.Errorf("token file holds %q (present %v), want the live token %v", tok, ok, h.sim.tokens)
	}
	if h.creds.egid != testGID {
		t.Errorf("egid %d after Install, want loop-guard gid %d", h.creds.egid, testGID)
	}
	if err := h.pf.Install(); !errors.Is(err, ErrAlreadyInstalled) {
		t.Errorf("second Install: %v, want ErrAlreadyInstalled", err)
	}
	h.sim.takeCalls()

	if err := h.pf.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got, want := h.sim.takeCalls(), []string{"pfctl -a " + A + " -F all", "pfctl -X " + tok}; !slices.Equal(got, want) {
		t.Errorf("Remove ran %q, want %q", got, want)
	}
	h.assertClean(t)
	if h.sim.enabled {
		t.Error("pf still enabled although our reference was the only one")
	}
	if h.nl.closed == 0 {
		t.Error("Remove did not close the natlook device")
	}
	// Remove is idempotent and runs nothing the second time.
	if err := h.pf.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if got := h.sim.takeCalls(); len(got) != 0 {
		t.Errorf("second Remove ran %q", got)
	}
}

func TestInstallKeepsOtherReferences(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	h.sim.enabled = true // the Application Firewall holds a reference
	h.sim.tokens["42"] = true
	if err := h.pf.Install(); err != nil {
		t.Fatal(err)
	}
	if err := h.pf.Remove(); err != nil {
		t.Fatal(err)
	}
	if !h.sim.enabled || !h.sim.tokens["42"] || len(h.sim.tokens) != 1 {
		t.Errorf("after Remove: enabled=%v tokens=%v; the other holder's reference must survive", h.sim.enabled, h.sim.tokens)
	}
}

func TestInstallAfterCrash(t *testing.T) {
	sim := newFakePF(t, "darwin")
	dir := t.TempDir()
	first := newHarnessWith(t, sim, dir, "darwin", nil)
	if err := first.pf.Install(); err != nil {
		t.Fatal(err)
	}
	staleTok, _ := first.tokenFile()
	sim.takeCalls()

	// The process dies: no Remove. A new run starts with the same state dir.
	second := newHarnessWith(t, sim, dir, "darwin", nil)
	if err := second.pf.Install(); err != nil {
		t.Fatalf("Install after crash: %v", err)
	}
	calls := sim.takeCalls()
	if len(calls) < 2 || calls[0] != "pfctl -X "+staleTok || calls[1] != "pfctl -a "+DefaultAnchorDarwin+" -F all" {
		t.Errorf("Install after crash began with %q, want the stale token released then the anchor flushed", calls)
	}
	if sim.tokens[staleTok] || len(sim.tokens) != 1 {
		t.Errorf("references %v: stale %s must be gone, one new held", sim.tokens, staleTok)
	}
	if err := second.pf.Remove(); err != nil {
		t.Fatal(err)
	}
	second.assertClean(t)
}

func TestCleanupStale(t *testing.T) {
	tests := []struct {
		name      string
		token     string // in the file; "" = no file
		live      bool   // the kernel still knows it
		wantCalls []string
	}{
		{"nothing left", "", false, []string{"pfctl -a com.apple/netshape -F all"}},
		{"live token", "777", true, []string{"pfctl -X 777", "pfctl -a com.apple/netshape -F all"}},
		{"token from before a reboot", "778", false, []string{"pfctl -X 778", "pfctl -a com.apple/netshape -F all"}},
		{"garbage file", "rm -rf /", false, []string{"pfctl -a com.apple/netshape -F all"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "darwin", nil)
			h.sim.anchors[DefaultAnchorDarwin] = "pass out all\n"
			if tt.token != "" {
				if err := os.WriteFile(filepath.Join(h.dir, tokenFile), []byte(tt.token+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.live {
				h.sim.tokens[tt.token] = true
				h.sim.enabled = true
			}
			if err := h.pf.Cleanup(); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if got := h.sim.takeCalls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("Cleanup ran %q, want %q", got, tt.wantCalls)
			}
			h.assertClean(t)
			if err := h.pf.Cleanup(); err != nil {
				t.Fatalf("second Cleanup: %v", err)
			}
		})
	}
}

func TestInstallFailureLeavesNothing(t *testing.T) {
	A := DefaultAnchorDarwin
	tests := []struct {
		name     string
		goos     string
		prep     func(h *harness)
		wantIs   error
		wantText string
	}{
		{"anchor load rejected", "darwin", func(h *harness) {
			h.sim.fail["pfctl -a "+A+" -f -"] = "stdin:5: syntax error\npfctl: Syntax error in config file: pf rules not loaded\n"
		}, nil, "syntax error"},
		{"enable fails", "darwin", func(h *harness) {
			h.sim.fail["pfctl -E"] = "pfctl: DIOCSTARTREF: Cannot allocate memory\n"
		}, nil, "Cannot allocate memory"},
		{"main ruleset lost com.apple anchors", "darwin", func(h *harness) {
			h.sim.mainRules, h.sim.mainNat = "pass all\n", ""
		}, ErrAnchorNotReferenced, "sudo pfctl -f /etc/pf.conf"},
		{"pfctl -s rules fails", "darwin", func(h *harness) {
			h.sim.fail["pfctl -s rules"] = "pfctl: /dev/pf: Permission denied\n"
		}, nil, "Permission denied"},
		{"setegid refused", "darwin", func(h *harness) { h.creds.fail = errFake }, errFake, "loop-guard group 399"},
		{"freebsd pf disabled", "freebsd", func(h *harness) { h.sim.info = bsdInfoDisabled }, ErrPFDisabled, "pf_enable"},
		{"freebsd pf.conf lacks rdr-anchor", "freebsd", func(h *harness) { h.sim.mainNat = "" }, ErrAnchorNotReferenced, `rdr-anchor "netshape"`},
		{"freebsd anchor load rejected", "freebsd", func(h *harness) {
			h.sim.fail["pfctl -a netshape -f -"] = "pfctl: DIOCADDRULE: Operation not supported by device\n"
		}, nil, "Operation not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.goos, nil)
			tt.prep(h)
			err := h.pf.Install()
			if err == nil {
				t.Fatal("Install succeeded, want an error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not say %q", err, tt.wantText)
			}
			if strings.Contains(err.Error(), "ALTQ") {
				t.Errorf("error %q carries pfctl's ALTQ noise", err)
			}
			h.assertClean(t)
			if h.sim.goos == "darwin" && h.sim.enabled {
				t.Error("pf left enabled by a failed Install")
			}
			if err := h.pf.DialControl("tcp", "192.0.2.1:443", nil); err != nil {
				t.Errorf("DialControl after failed Install: %v", err)
			}
			// A failed Install can be retried once the cause is gone.
			*h.sim = *newFakePF(t, tt.goos)
			h.creds.fail = nil
			if err := h.pf.Install(); err != nil {
				t.Fatalf("retry Install: %v", err)
			}
			if err := h.pf.Remove(); err != nil {
				t.Fatal(err)
			}
			h.assertClean(t)
		})
	}
}

func TestRemoveRetriesFailedStep(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	if err := h.pf.Install(); err != nil {
		t.Fatal(err)
	}
	flush := "pfctl -a " + DefaultAnchorDarwin + " -F all"
	h.sim.fail[flush] = "pfctl: DIOCXBEGIN: Device busy\n"
	err := h.pf.Remove()
	if err == nil || !strings.Contains(err.Error(), "Device busy") {
		t.Fatalf("Remove with failing flush: %v", err)
	}
	// While rules may still redirect, the token and the loop guard stay.
	if len(h.sim.tokens) != 1 || h.creds.egid != testGID {
		t.Errorf("after failed flush: tokens %v egid %d; both must stay until the rules are gone", h.sim.tokens, h.creds.egid)
	}
	delete(h.sim.fail, flush)
	if err := h.pf.Remove(); err != nil {
		t.Fatalf("retried Remove: %v", err)
	}
	h.assertClean(t)
}

func TestFreeBSDLifecycle(t *testing.T) {
	h := newHarness(t, "freebsd", nil)
	if err := h.pf.Install(); err != nil {
		t.Fatal(err)
	}
	want := []string{"pfctl -a netshape -F all", "pfctl -s rules", "pfctl -s nat", "pfctl -s info", "pfctl -a netshape -f -"}
	if got := h.sim.takeCalls(); !slices.Equal(got, want) {
		t.Errorf("Install ran %q, want %q (no -E/-e on FreeBSD)", got, want)
	}
	if _, ok := h.tokenFile(); ok {
		t.Error("token file written on FreeBSD")
	}
	if err := h.pf.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := h.sim.takeCalls(); !slices.Equal(got, []string{"pfctl -a netshape -F all"}) {
		t.Errorf("Remove ran %q", got)
	}
	h.assertClean(t)
	if !h.sim.enabled {
		t.Error("pf was switched off; netshape must never disable pf")
	}
}

func TestEnableWithoutToken(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	h.sim.enabled = true
	h.sim.alreadyEnabledNoToken = true
	if err := h.pf.Install(); err != nil {
		t.Fatalf("Install with pf already enabled and no token: %v", err)
	}
	if _, ok := h.tokenFile(); ok {
		t.Error("token file written without a token")
	}
	h.sim.takeCalls()
	if err := h.pf.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, c := range h.sim.takeCalls() {
		if strings.HasPrefix(c, "pfctl -X") {
			t.Errorf("Remove ran %q without holding a token", c)
		}
	}
}

func TestSetBlockedIfaces(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	A := DefaultAnchorDarwin
	if err := h.pf.SetBlockedIfaces([]string{"en5"}); err != nil {
		t.Fatal(err)
	}
	if got := h.sim.takeCalls(); len(got) != 0 {
		t.Errorf("SetBlockedIfaces before Install ran %q", got)
	}
	if err := h.pf.Install(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.sim.anchors[A], "block return out quick on en5 all\n") {
		t.Errorf("Install did not apply the earlier block:\n%s", h.sim.anchors[A])
	}
	h.sim.takeCalls()
	if err := h.pf.SetBlockedIfaces([]string{"utun3", "en0", "en0"}); err != nil {
		t.Fatal(err)
	}
	if got := h.sim.takeCalls(); !slices.Equal(got, []string{"pfctl -a " + A + " -f -"}) {
		t.Errorf("reload ran %q, want one atomic anchor load", got)
	}
	got := h.sim.anchors[A]
	if strings.Contains(got, "on en5") || !strings.Contains(got, "block return out quick on en0 all\nblock return out quick on utun3 all\n") {
		t.Errorf("anchor after reload:\n%s", got)
	}
	before := got
	h.sim.fail["pfctl -a "+A+" -f -"] = "pfctl: DIOCXCOMMIT: Device busy\n"
	if err := h.pf.SetBlockedIfaces(nil); err == nil {
		t.Error("failed reload reported success")
	}
	if h.sim.anchors[A] != before {
		t.Error("failed reload changed the anchor")
	}
	if r, _ := h.pf.Rules(); r != before {
		t.Error("failed reload changed the remembered block list")
	}
	delete(h.sim.fail, "pfctl -a "+A+" -f -")
	if err := h.pf.SetBlockedIfaces(nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.sim.anchors[A], "block return out quick on") {
		t.Errorf("unblock left block rules:\n%s", h.sim.anchors[A])
	}
	for _, bad := range [][]string{{"lo0"}, {"en0; pass all"}, {""}, {"en0 "}, {"averyveryverylongname0"}} {
		if err := h.pf.SetBlockedIfaces(bad); !errors.Is(err, ErrBadConfig) && !(bad[0] == "en0 " && err == nil) {
			t.Errorf("SetBlockedIfaces(%q) = %v, want ErrBadConfig", bad, err)
		}
	}
	if err := h.pf.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestDialControlLoopGuard(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	if err := h.pf.DialControl("tcp4", "192.0.2.1:443", nil); err != nil {
		t.Errorf("before Install: %v (no rules, nothing to guard)", err)
	}
	if err := h.pf.Install(); err != nil {
		t.Fatal(err)
	}
	if err := h.pf.DialControl("tcp4", "192.0.2.1:443", nil); err != nil {
		t.Errorf("installed, egid is the loop group: %v", err)
	}
	h.creds.egid = 20 // something switched the gid back behind our back
	err := h.pf.DialControl("tcp4", "192.0.2.1:443", nil)
	if !errors.Is(err, ErrLoopGuard) || !strings.Contains(err.Error(), "192.0.2.1:443") {
		t.Errorf("egid changed: %v, want ErrLoopGuard naming the destination", err)
	}
	h.creds.egid = testGID
	if err := h.pf.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := h.pf.DialControl("tcp4", "192.0.2.1:443", nil); err != nil {
		t.Errorf("after Remove: %v", err)
	}
}

func TestOriginalDst(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	want := netip.MustParseAddrPort("198.18.0.7:443")
	h.nl.dst = want
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got, err := h.pf.OriginalDst(srv.(*net.TCPConn))
	if err != nil || got != want {
		t.Fatalf("OriginalDst = %v, %v; want %v", got, err, want)
	}
	if h.nl.client != cli.LocalAddr().(*net.TCPAddr).AddrPort() || h.nl.proxy != ln.Addr().(*net.TCPAddr).AddrPort() {
		t.Errorf("natlook asked client %v proxy %v; want client %v proxy %v", h.nl.client, h.nl.proxy, cli.LocalAddr(), ln.Addr())
	}
	h.nl.err = ErrNotRedirected
	if _, err := h.pf.OriginalDst(srv.(*net.TCPConn)); !errors.Is(err, ErrNotRedirected) {
		t.Errorf("lookup miss: %v, want ErrNotRedirected", err)
	}
	if _, err := h.pf.OriginalDst(nil); err == nil {
		t.Error("nil conn accepted")
	}
}

func TestCheckScoped(t *testing.T) {
	const A = "com.apple/netshape"
	tests := []struct {
		args []string
		ok   bool
	}{
		{[]string{"-a", A, "-f", "-"}, true},
		{[]string{"-a", A, "-F", "all"}, true},
		{[]string{"-E"}, true},
		{[]string{"-X", "123"}, true},
		{[]string{"-s", "rules"}, true},
		{[]string{"-f", "-"}, false},                      // would replace the main ruleset
		{[]string{"-F", "all"}, false},                    // would flush everything
		{[]string{"-Fa"}, false},                          // short form
		{[]string{"-a", "com.apple", "-F", "all"}, false}, // Apple's anchors
		{[]string{"-d"}, false},
		{[]string{"-e"}, false},
	}
	for _, tt := range tests {
		err := checkScoped(A, tt.args)
		if (err == nil) != tt.ok {
			t.Errorf("checkScoped(%q) = %v, want ok=%v", tt.args, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrUnsafeCommand) {
			t.Errorf("checkScoped(%q) = %v, want ErrUnsafeCommand", tt.args, err)
		}
	}
}

func TestReferencesAnchor(t *testing.T) {
	tests := []struct {
		out, kw, anchor string
		want            bool
	}{
		{darwinMainRules, "anchor", "com.apple/netshape", true},
		{darwinMainNat, "rdr-anchor", "com.apple/netshape", true},
		{darwinMainNat, "anchor", "com.apple/netshape", false}, // nat-anchor is not anchor
		{darwinMainRules, "anchor", "com.apple/sub/netshape", false},
		{darwinMainRules, "anchor", "netshape", false},
		{bsdMainRules, "anchor", "netshape", true},
		{"anchor \"netshapes\" all\n", "anchor", "netshape", false},
		{"anchor \"*\" all\n", "anchor", "netshape", true},
		{"  anchor \"netshape\" all\n", "anchor", "netshape", true},
		{"", "anchor", "netshape", false},
	}
	for _, tt := range tests {
		if got := referencesAnchor(tt.out, tt.kw, tt.anchor); got != tt.want {
			t.Errorf("referencesAnchor(%q, %q, %q) = %v, want %v", tt.out, tt.kw, tt.anchor, got, tt.want)
		}
	}
}

func TestParseEnableToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{altqNoise + "pf enabled\nToken : 13845789437398547195\n", "13845789437398547195"},
		{altqNoise + "pf already enabled\nToken : 7\n", "7"},
		{"Token: 42", "42"},
		{altqNoise + "pf already enabled\n", ""},
		{"Token : 123456789012345678901234\n", ""}, // longer than a u_int64_t
		{"Token : -1\n", ""},
	}
	for _, tt := range tests {
		if got := parseEnableToken(tt.in); got != tt.want {
			t.Errorf("parseEnableToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no loop gid", func(c *Config) { c.LoopGID = 0 }},
		{"root group", func(c *Config) { c.LoopGID = -1 }},
		{"non-loopback v4", func(c *Config) { c.ListenV4 = netip.MustParseAddr("192.0.2.1") }},
		{"v6 as v4", func(c *Config) { c.ListenV4 = netip.IPv6Loopback() }},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }},
		{"anchor with quote", func(c *Config) { c.Anchor = `x" all` }},
		{"unknown os", func(c *Config) { c.OS = "openbsd" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "darwin", tt.mod)
			if err := h.pf.Install(); !errors.Is(err, ErrBadConfig) {
				t.Errorf("Install: %v, want ErrBadConfig", err)
			}
			if got := h.sim.takeCalls(); len(got) != 0 {
				t.Errorf("bad config still ran %q", got)
			}
		})
	}
}

func TestCommandErrorUnwraps(t *testing.T) {
	h := newHarness(t, "darwin", nil)
	h.sim.fail["pfctl -s rules"] = "pfctl: /dev/pf: Permission denied\n"
	err := h.pf.Install()
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Cmd != "pfctl -s rules" {
		t.Fatalf("error %v is not a *CommandError for pfctl -s rules", err)
	}
	var ee exitError
	if !errors.As(err, &ee) || ee != 1 {
		t.Errorf("exit status not reachable through the error: %v", err)
	}
}
