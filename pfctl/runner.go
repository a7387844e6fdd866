package pfctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Runner runs one external command (pfctl, dscl) and returns what it printed.
// All pfctl calls go through it, so tests replace it with a fake that records
// the commands and replays pfctl's real output.
type Runner interface {
	// Run runs name with args, feeding stdin (may be nil). err is non-nil when
	// the command could not run or exited non-zero; stdout and stderr are
	// returned in both cases.
	Run(stdin []byte, name string, args ...string) (stdout, stderr string, err error)
}

// CommandError is a command that ran and failed; Stderr is what it said.
type CommandError struct {
	Cmd    string // the command line, for the message
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(pfctlNoise(e.Stderr))
	if msg == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

// pfctlNoise drops the two lines macOS pfctl prints on stderr on every call
// ("No ALTQ support in kernel" / "ALTQ related functions disabled") so error
// messages show what matters.
func pfctlNoise(s string) string {
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		t := strings.TrimSpace(line)
		if t == "No ALTQ support in kernel" || t == "ALTQ related functions disabled" || t == "" {
			continue
		}
		keep = append(keep, t)
	}
	return strings.Join(keep, "\n")
}

// ExecRunner runs commands with os/exec. Commands are looked up by absolute
// path on the pf systems (/sbin/pfctl, /usr/bin/dscl) so $PATH cannot swap them.
type ExecRunner struct {
	// Timeout bounds each command (default 20s): a hung pfctl must not hang Install.
	Timeout time.Duration
}

var _ Runner = ExecRunner{}

// Run implements Runner.
func (r ExecRunner) Run(stdin []byte, name string, args ...string) (string, string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, commandPath(name), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	return out.String(), errb.String(), err
}

func commandPath(name string) string {
	switch name {
	case "pfctl":
		return "/sbin/pfctl"
	case "dscl":
		return "/usr/bin/dscl"
	}
	return name
}
