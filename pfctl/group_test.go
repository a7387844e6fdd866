package pfctl

import (
	"errors"
	"strings"
	"testing"
)

type dsclRunner struct {
	out, errOut string
	err         error
	calls       []string
}

func (r *dsclRunner) Run(_ []byte, name string, args ...string) (string, string, error) {
	r.calls = append(r.calls, name+" "+strings.Join(args, " "))
	return r.out, r.errOut, r.err
}

func TestParseDsclGID(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"PrimaryGroupID: 399\n", 399, true},
		{"AppleMetaNodeLocation: /Local/Default\nPrimaryGroupID: 501\n", 501, true},
		{"PrimaryGroupID: 0\n", 0, false},
		{"PrimaryGroupID: abc\n", 0, false},
		{"No such key: PrimaryGroupID\n", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseDsclGID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseDsclGID(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestResolveGroup(t *testing.T) {
	// A name no /etc/group has: the dscl fallback answers.
	r := &dsclRunner{out: "PrimaryGroupID: 399\n"}
	gid, err := ResolveGroup(r, "_netshape_test_nonexistent")
	if err != nil || gid != 399 {
		t.Fatalf("ResolveGroup = %d, %v", gid, err)
	}
	if want := "dscl . -read /Groups/_netshape_test_nonexistent PrimaryGroupID"; len(r.calls) != 1 || r.calls[0] != want {
		t.Errorf("ran %q, want %q", r.calls, want)
	}
	r = &dsclRunner{errOut: "<dscl_cmd> DS Error: -14136 (eDSRecordNotFound)", err: exitError(56)}
	if _, err := ResolveGroup(r, "_netshape_test_nonexistent"); !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "dseditgroup") {
		t.Errorf("missing group: %v, want ErrBadConfig with the fix", err)
	}
	if _, err := ResolveGroup(r, "-x; rm"); !errors.Is(err, ErrBadConfig) {
		t.Errorf("bad name: %v", err)
	}
}
