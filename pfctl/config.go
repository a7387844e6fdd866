package pfctl

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
)

// Defaults used when the matching Config field is zero.
const (
	DefaultListenPort    = 9040
	DefaultAnchorDarwin  = "com.apple/netshape"
	DefaultAnchorFreeBSD = "netshape"
	DefaultStateDir      = "/var/db/netshape"
	// DefaultLoopGroupDarwin and DefaultLoopGroupFreeBSD name the group the
	// daemon switches its effective gid to (see doc.go, "Loop guard").
	DefaultLoopGroupDarwin  = "_netshape"
	DefaultLoopGroupFreeBSD = "netshape"
)

// Config says what the pf backend installs.
type Config struct {
	// ListenPort is the proxy listener's port (default 9040).
	ListenPort uint16
	// ListenV4 and ListenV6 are the proxy's loopback listen addresses
	// (default 127.0.0.1 and ::1). The rdr rules send redirected connections there.
	ListenV4 netip.Addr
	ListenV6 netip.Addr
	// NoIPv6 leaves IPv6 TCP alone (no inet6 route-to/rdr rules).
	NoIPv6 bool
	// Bypass lists destinations that are never redirected. Loopback
	// (127.0.0.0/8, ::1) and link-local (169.254.0.0/16, fe80::/10) are always added.
	Bypass []netip.Prefix
	// BlockQUIC blocks outbound UDP to port 443 so browsers fall back to TCP,
	// which the proxy sees.
	BlockQUIC bool
	// StateDir holds the pf enable token between runs (default /var/db/netshape).
	StateDir string
	// Anchor is the pf anchor we own (default com.apple/netshape on macOS,
	// netshape on FreeBSD). The main ruleset must reference it; see doc.go.
	Anchor string
	// LoopGID is the numeric id of the loop-guard group: the route-to rule skips
	// sockets whose effective gid is LoopGID, and Install switches the daemon's
	// effective gid to it. Required; ResolveGroup finds it from a name.
	LoopGID int
	// OS selects the pf dialect, "darwin" or "freebsd". Empty means
	// runtime.GOOS, or "darwin" on other systems (so tests on Linux get one).
	OS string
}

// ifaceNameRE is what an interface name may look like in our rules: BSD names
// are short alphanumerics (en0, utun3, vtnet0, bridge100, lagg0.10).
var ifaceNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.]{0,14}$`)

// anchorRE keeps anchor paths to names pfctl and a shell both take literally.
var anchorRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

// withDefaults fills zero fields and checks the result.
func (c Config) withDefaults() (Config, error) {
	if c.OS == "" {
		c.OS = runtime.GOOS
		if c.OS != "darwin" && c.OS != "freebsd" {
			c.OS = "darwin"
		}
	}
	if c.OS != "darwin" && c.OS != "freebsd" {
		return c, fmt.Errorf("pf config: OS %q: want darwin or freebsd: %w", c.OS, ErrBadConfig)
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultListenPort
	}
	if !c.ListenV4.IsValid() {
		c.ListenV4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if !c.ListenV6.IsValid() {
		c.ListenV6 = netip.IPv6Loopback()
	}
	if !c.ListenV4.Is4() || !c.ListenV4.IsLoopback() {
		return c, fmt.Errorf("pf config: ListenV4 %v must be an IPv4 loopback address (pf can only redirect to a local listener): %w", c.ListenV4, ErrBadConfig)
	}
	if !c.ListenV6.Is6() || !c.ListenV6.IsLoopback() {
		return c, fmt.Errorf("pf config: ListenV6 %v must be ::1: %w", c.ListenV6, ErrBadConfig)
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if !filepath.IsAbs(c.StateDir) {
		return c, fmt.Errorf("pf config: StateDir %q must be an absolute path: %w", c.StateDir, ErrBadConfig)
	}
	if c.Anchor == "" {
		c.Anchor = DefaultAnchorDarwin
		if c.OS == "freebsd" {
			c.Anchor = DefaultAnchorFreeBSD
		}
	}
	if !anchorRE.MatchString(c.Anchor) {
		return c, fmt.Errorf("pf config: anchor %q: use letters, digits, '.', '_', '-' and '/': %w", c.Anchor, ErrBadConfig)
	}
	if c.LoopGID <= 0 {
		return c, fmt.Errorf("pf config: LoopGID %d: a dedicated non-zero group id is required for the loop guard (create the group, see docs/packaging.md): %w", c.LoopGID, ErrBadConfig)
	}
	bypass := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fe80::/10"),
	}
	for _, p := range c.Bypass {
		if !p.IsValid() {
			return c, fmt.Errorf("pf config: invalid bypass prefix %v: %w", p, ErrBadConfig)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked()
		if !slices.Contains(bypass, p) {
			bypass = append(bypass, p)
		}
	}
	c.Bypass = bypass
	return c, nil
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 address loses when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// cleanIfaces validates, dedups and sorts interface names for block rules.
func cleanIfaces(ifaces []string) ([]string, error) {
	out := make([]string, 0, len(ifaces))
	for _, name := range ifaces {
		name = strings.TrimSpace(name)
		if !ifaceNameRE.MatchString(name) {
			return nil, fmt.Errorf("pf block: interface name %q is not a BSD interface name: %w", name, ErrBadConfig)
		}
		if name == "lo0" {
			return nil, fmt.Errorf("pf block: refusing to block lo0, the proxy listens there: %w", ErrBadConfig)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}
