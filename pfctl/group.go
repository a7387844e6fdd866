package pfctl

import (
	"fmt"
	"os/user"
	"regexp"
	"strconv"
	"strings"
)

var groupNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)

// ResolveGroup returns the numeric id of the loop-guard group name. It reads
// the group database (/etc/group, which is enough on FreeBSD); on macOS, where
// groups made with dseditgroup live in Directory Services and a cgo-free
// binary cannot see them, it falls back to `dscl . -read /Groups/NAME
// PrimaryGroupID` through r.
func ResolveGroup(r Runner, name string) (int, error) {
	if !groupNameRE.MatchString(name) {
		return 0, fmt.Errorf("loop-guard group name %q: %w", name, ErrBadConfig)
	}
	if g, err := user.LookupGroup(name); err == nil {
		if id, err := strconv.Atoi(g.Gid); err == nil && id > 0 {
			return id, nil
		}
	}
	out, errOut, err := r.Run(nil, "dscl", ".", "-read", "/Groups/"+name, "PrimaryGroupID")
	if err == nil {
		if id, ok := parseDsclGID(out); ok {
			return id, nil
		}
	}
	return 0, fmt.Errorf("loop-guard group %q not found (%s): create it (macOS: sudo dseditgroup -o create %s; FreeBSD: pw groupadd %s): %w",
		name, strings.TrimSpace(errOut), name, name, ErrBadConfig)
}

// parseDsclGID reads "PrimaryGroupID: 399" from dscl output.
func parseDsclGID(out string) (int, bool) {
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PrimaryGroupID:"); ok {
			id, err := strconv.Atoi(strings.TrimSpace(v))
			return id, err == nil && id > 0
		}
	}
	return 0, false
}
