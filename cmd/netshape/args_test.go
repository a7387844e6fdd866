package main

import (
	"slices"
	"testing"
)

func TestReorderArgs(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"ns", "allow", "3", "--always"}, []string{"ns", "allow", "--always", "3"}},
		{[]string{"ns", "allow", "3", "--for", "2h", "--rate", "1MB/s"}, []string{"ns", "allow", "--for", "2h", "--rate", "1MB/s", "3"}},
		{[]string{"ns", "--socket", "/s", "deny", "7", "--always"}, []string{"ns", "--socket", "/s", "deny", "--always", "7"}},
		{[]string{"ns", "rule", "rm", "5", "--socket=/x"}, []string{"ns", "rule", "rm", "--socket=/x", "5"}},
		{[]string{"ns", "status"}, []string{"ns", "status"}},
		{[]string{"ns", "run", "--limit", "2MB", "--", "curl", "-s", "-o", "x"}, []string{"ns", "run", "--limit", "2MB", "--", "curl", "-s", "-o", "x"}},
		{[]string{"ns", "run", "--", "sh", "-c", "x"}, []string{"ns", "run", "--", "sh", "-c", "x"}},
	} {
		if got := reorderArgs(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
