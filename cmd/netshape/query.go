package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/units"
)

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show whether netshape runs, and its counters",
		Flags: []cli.Flag{socketFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var s control.Status
			if err := client(c).Get(c.Context, "/v1/status", &s); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(s)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "running\tyes, pid %d, since %s\n", s.PID, s.Started.Format(time.DateTime))
			fmt.Fprintf(w, "backend\t%s\n", s.Backend)
			fmt.Fprintf(w, "listen\t%s\n", strings.Join(s.Listen, ", "))
			fmt.Fprintf(w, "flows\t%d active, %d total, %d denied, %d failed\n", s.Active, s.Total, s.Denied, s.Failed)
			if s.Refused > 0 {
				fmt.Fprintf(w, "refused\t%d (at the limit of %d connections; see --max-conns)\n", s.Refused, s.MaxConns)
			}
			fmt.Fprintf(w, "bytes\t%s in, %s out\n", units.FormatSize(s.BytesIn), units.FormatSize(s.BytesOut))
			if s.Default != "" {
				fmt.Fprintf(w, "default\t%s\n", s.Default)
			}
			fmt.Fprintf(w, "rules\t%d\npending\t%d\n", s.Rules, s.Pending)
			printFastPaths(w, s)
			for _, wr := range s.Warnings {
				fmt.Fprintf(w, "warning\t%s\n", wr)
			}
			return w.Flush()
		},
	}
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:  "stop",
		Usage: "ask the daemon to remove its rules and exit",
		Flags: []cli.Flag{socketFlag},
		Action: func(c *cli.Context) error {
			cl := client(c)
			if err := cl.Post(c.Context, "/v1/stop", nil, nil); err != nil {
				return err
			}
			if err := cl.WaitGone(c.Context, 10*time.Second); err != nil {
				return err
			}
			fmt.Println("netshape stopped")
			return nil
		},
	}
}

func flowsCommand() *cli.Command {
	return &cli.Command{
		Name:  "flows",
		Usage: "list active flows (and recently closed ones with --closed)",
		Flags: []cli.Flag{socketFlag, jsonFlag, &cli.BoolFlag{Name: "closed", Usage: "include the last 1000 closed flows"}},
		Action: func(c *cli.Context) error {
			path := "/v1/flows"
			if c.Bool("closed") {
				path += "?closed=1"
			}
			var fs []flow.Flow
			if err := client(c).Get(c.Context, path, &fs); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(fs)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATE\tAPP\tPID\tUSER\tHOST\tDST\tIN\tOUT\tAGE\tVERDICT")
			for _, f := range fs {
				end := f.End
				if end.IsZero() {
					end = time.Now()
				}
				host := f.Host
				if host == "" {
					host = "-"
				}
				user := f.User
				if user == "" {
					user = "-"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, f.State, f.App(), f.PID, user, host, f.Dst,
					units.FormatSize(f.BytesIn), units.FormatSize(f.BytesOut), end.Sub(f.Start).Round(time.Second), dash(f.Verdict))
			}
			return w.Flush()
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printFastPaths prints how flows are relayed and how process lookup and
// capture run, and why not their fast path when they do not.
func printFastPaths(w io.Writer, s control.Status) {
	if s.Relay != "" {
		fmt.Fprintf(w, "relay\t%s\n", s.Relay)
	}
	if s.Procmap != "" {
		line := s.Procmap
		if b := s.ProcmapBPF; b != nil {
			line += fmt.Sprintf(" (%d found by their connect record; fell back: %d without one, %d stale, %d errors)",
				b.Hits, b.Misses, b.Stale, b.Errors)
		}
		if s.ProcmapNote != "" {
			line += " (without its BPF fast path: " + s.ProcmapNote + ")"
		}
		fmt.Fprintf(w, "process lookup\t%s\n", line)
	}
	if s.Capture != "" {
		line := s.Capture
		if s.CaptureNote != "" {
			line += " (reads every packet; in-kernel counting is off: " + s.CaptureNote + ")"
		}
		fmt.Fprintf(w, "capture\t%s\n", line)
	}
}
