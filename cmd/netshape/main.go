// Command netshape is a per-process network firewall and traffic shaper.
//
// The commands are thin: `start` runs the daemon package, every other command
// is a client of the daemon's control socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/control"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	app := newApp()
	if err := app.RunContext(ctx, reorderArgs(app, os.Args)); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "netshape:", err)
		}
		os.Exit(code)
	}
}

var socketFlag = &cli.StringFlag{
	Name:    "socket",
	Usage:   "control socket `PATH` (default " + control.DefaultSocket + ")",
	EnvVars: []string{"NETSHAPE_SOCKET"},
}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON"}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "netshape",
		Usage:                "per-process network firewall and traffic shaper",
		Version:              version,
		EnableBashCompletion: true,
		Flags:                []cli.Flag{socketFlag},
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints errors once
		Commands: []*cli.Command{
			startCommand(),
			stopCommand(),
			statusCommand(),
			flowsCommand(),
			cleanupCommand(),
			ruleCommand(),
			pendingCommand(),
			answerCommand("allow"),
			answerCommand("deny"),
			promptCommand(),
			quotasCommand(),
			quotaCommand(),
			runCommand(),
			usageCommand(),
			ifaceCommand(),
			topCommand(),
		},
	}
}

func client(c *cli.Context) *control.Client {
	return control.NewClient(socketPath(c))
}

// socketPath is --socket given to the command or before it, else
// $NETSHAPE_SOCKET, else the default.
func socketPath(c *cli.Context) string {
	for _, x := range c.Lineage() {
		if s := x.String("socket"); s != "" {
			return s
		}
	}
	return control.SocketPath("")
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
