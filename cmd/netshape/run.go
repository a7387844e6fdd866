package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/units"
)

// exitLimit is `netshape run`'s exit status when the command was killed for
// reaching its limit.
const exitLimit = 3

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a command with a data limit and/or a rate; kill it when the limit is reached",
		ArgsUsage: "-- CMD [ARGS…]",
		Description: `Every TCP flow of CMD and its descendants is counted and shaped by the running daemon.
When --limit is reached the command's process tree gets --kill-signal and netshape exits with
status 3, saying how many bytes were used. Otherwise it exits with the command's status.
Under sudo the command runs as the invoking user.`,
		Flags: []cli.Flag{
			socketFlag,
			&cli.StringFlag{Name: "limit", Usage: "data limit, both directions (e.g. 25MB)"},
			&cli.StringFlag{Name: "rate", Usage: "rate limit each way (e.g. 500KB/s)"},
			&cli.StringFlag{Name: "kill-signal", Value: "TERM", Usage: "signal sent when the limit is reached (TERM, KILL, INT, HUP)"},
		},
		Action: runAction,
	}
}

func runAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		return errors.New("no command: netshape run [--limit SIZE] [--rate RATE] -- CMD [ARGS…]")
	}
	var ru control.Run
	var err error
	if s := c.String("limit"); s != "" {
		if ru.Limit, err = units.ParseSize(s); err != nil {
			return fmt.Errorf("bad --limit: %w", err)
		}
	}
	if s := c.String("rate"); s != "" {
		if ru.Rate, err = units.ParseRate(s); err != nil {
			return fmt.Errorf("bad --rate: %w", err)
		}
	}
	sig, err := parseSignal(c.String("kill-signal"))
	if err != nil {
		return err
	}
	cl := client(c)
	// The command and its children are this process's descendants; a cgroup
	// of our own also catches children that re-parent themselves.
	ru.RootPID = os.Getpid()
	ru.Command = strings.Join(args, " ")
	cg := joinOwnCgroup()
	defer cg.remove()
	ru.Cgroup = cg.path()
	if err := cl.Post(c.Context, "/v1/runs", ru, &ru); err != nil {
		return err
	}
	defer cl.Do(context.Background(), "DELETE", "/v1/runs/"+strconv.FormatInt(ru.ID, 10), nil, nil)

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cred := invokingUser(); cred != nil {
		cmd.SysProcAttr.Credential = cred
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	killed := false
	var last control.Run
	for {
		select {
		case err := <-done:
			cl.Get(context.Background(), "/v1/runs/"+strconv.FormatInt(ru.ID, 10), &last)
			if ru.Limit > 0 && (last.Exhausted || last.Used >= ru.Limit) {
				// The daemon cut its flows at the limit: the rest of the tree goes too.
				if !killed {
					syscall.Kill(-cmd.Process.Pid, sig)
					cg.kill()
				}
				killed = true
			}
			if killed {
				return &exitError{code: exitLimit, err: fmt.Errorf("limit reached: %s used %s of %s; killed with SIG%s",
					args[0], units.FormatSize(last.Used), units.FormatSize(ru.Limit), strings.ToUpper(c.String("kill-signal")))}
			}
			fmt.Fprintf(os.Stderr, "netshape: %s used %s\n", args[0], units.FormatSize(last.Used))
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &exitError{code: ee.ExitCode(), err: errors.New("")}
			}
			return err
		case <-c.Context.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		case <-tick.C:
			if killed || ru.Limit == 0 {
				continue
			}
			if err := cl.Get(c.Context, "/v1/runs/"+strconv.FormatInt(ru.ID, 10), &last); err != nil {
				continue
			}
			if last.Exhausted || last.Used >= ru.Limit {
				killed = true
				syscall.Kill(-cmd.Process.Pid, sig)
				cg.kill()
			}
		}
	}
}

func parseSignal(s string) (syscall.Signal, error) {
	switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "SIG")) {
	case "TERM", "15":
		return syscall.SIGTERM, nil
	case "KILL", "9":
		return syscall.SIGKILL, nil
	case "INT", "2":
		return syscall.SIGINT, nil
	case "HUP", "1":
		return syscall.SIGHUP, nil
	}
	return 0, fmt.Errorf("bad --kill-signal %q: use TERM, KILL, INT or HUP", s)
}

// invokingUser is the user behind sudo, so the command does not run as root.
func invokingUser() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || uid == 0 {
		return nil
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}
}
