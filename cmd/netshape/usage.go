package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/bpfacct"
	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/units"
)

type usageTotal struct {
	Key      string `json:"key"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
}

func usageCommand() *cli.Command {
	return &cli.Command{
		Name:  "usage",
		Usage: "usage history: bytes by app, host, interface, category or day",
		Flags: []cli.Flag{
			socketFlag, jsonFlag,
			&cli.BoolFlag{Name: "csv", Usage: "print CSV"},
			&cli.StringFlag{Name: "by", Value: "app", Usage: "group by app, host, iface, category or day (UTC days)"},
			&cli.StringFlag{Name: "since", Usage: "only the last `DUR` (90m, 24h, 7d)"},
			&cli.StringFlag{Name: "from", Usage: "from `DATE` (2006-01-02, local time, or RFC 3339)"},
			&cli.StringFlag{Name: "to", Usage: "up to `DATE` (exclusive)"},
			&cli.StringFlag{Name: "app", Usage: "only this app"},
			&cli.StringFlag{Name: "host", Usage: "only this host"},
			&cli.StringFlag{Name: "iface", Usage: "only this interface"},
		},
		Action: func(c *cli.Context) error {
			v := url.Values{"by": {c.String("by")}}
			now := time.Now()
			if s := c.String("since"); s != "" {
				if c.IsSet("from") {
					return fmt.Errorf("use --since or --from, not both")
				}
				d, err := parseDays(s)
				if err != nil {
					return err
				}
				v.Set("from", now.Add(-d).Format(time.RFC3339))
			}
			for _, k := range []string{"from", "to"} {
				if s := c.String(k); s != "" {
					t, err := parseDate(s)
					if err != nil {
						return fmt.Errorf("bad --%s: %w", k, err)
					}
					v.Set(k, t.Format(time.RFC3339))
				}
			}
			for _, k := range []string{"app", "host", "iface"} {
				if s := c.String(k); s != "" {
					v.Set(k, s)
				}
			}
			var ts []usageTotal
			if err := client(c).Get(c.Context, "/v1/usage?"+v.Encode(), &ts); err != nil {
				return err
			}
			switch {
			case c.Bool("json"):
				return printJSON(ts)
			case c.Bool("csv"):
				w := csv.NewWriter(os.Stdout)
				w.Write([]string{c.String("by"), "bytes_in", "bytes_out", "bytes_total"})
				for _, t := range ts {
					w.Write([]string{t.Key, strconv.FormatInt(t.BytesIn, 10), strconv.FormatInt(t.BytesOut, 10), strconv.FormatInt(t.BytesIn+t.BytesOut, 10)})
				}
				w.Flush()
				return w.Error()
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "%s\tIN\tOUT\tTOTAL\n", strings.ToUpper(c.String("by")))
			var tin, tout int64
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", dash(t.Key), units.FormatSize(t.BytesIn), units.FormatSize(t.BytesOut), units.FormatSize(t.BytesIn+t.BytesOut))
				tin, tout = tin+t.BytesIn, tout+t.BytesOut
			}
			fmt.Fprintf(w, "total\t%s\t%s\t%s\n", units.FormatSize(tin), units.FormatSize(tout), units.FormatSize(tin+tout))
			return w.Flush()
		},
	}
}

// parseDays is time.ParseDuration plus "Nd" for days.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if d, err := strconv.Atoi(n); err == nil && d > 0 {
			return time.Duration(d) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bad duration %q: use 90m, 24h or 7d", s)
	}
	return d, nil
}

func parseDate(s string) (time.Time, error) {
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: use 2006-01-02 or RFC 3339", s)
}

func ifaceCommand() *cli.Command {
	upDown := func(up bool) *cli.Command {
		name, verb := "down", "switch off"
		if up {
			name, verb = "up", "switch on"
		}
		return &cli.Command{
			Name:      name,
			Usage:     verb + " an interface",
			ArgsUsage: "IF",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"}},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("usage: netshape iface %s IF", name)
				}
				ifc := c.Args().First()
				if !c.Bool("yes") {
					fmt.Printf("%s interface %s? Connections over it will stop. [y/N] ", verb, ifc)
					line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
					if a := strings.TrimSpace(strings.ToLower(line)); a != "y" && a != "yes" {
						return fmt.Errorf("not confirmed; nothing changed")
					}
				}
				if err := bpfacct.SetIfaceUp(ifc, up); err != nil {
					return err
				}
				fmt.Printf("%s is %s\n", ifc, name)
				return nil
			},
		}
	}
	return &cli.Command{
		Name:        "iface",
		Usage:       "interfaces: kernel counters, what netshape captured and relayed, rates (--watch)",
		Flags:       []cli.Flag{socketFlag, jsonFlag, &cli.BoolFlag{Name: "watch", Usage: "print rates every second until interrupted"}},
		Subcommands: []*cli.Command{upDown(false), upDown(true)},
		Action: func(c *cli.Context) error {
			rep, err := ifaceReport(c)
			if err != nil {
				return err
			}
			if !c.Bool("watch") {
				if c.Bool("json") {
					return printJSON(rep)
				}
				return printIfaces(rep)
			}
			prev := rep
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-c.Context.Done():
					return nil
				case <-t.C:
				}
				cur, err := ifaceReport(c)
				if err != nil {
					return err
				}
				printRates(c, prev, cur)
				prev = cur
			}
		},
	}
}

// ifaceReport asks the daemon, or reads the kernel counters itself when no
// daemon runs.
func ifaceReport(c *cli.Context) (control.IfaceReport, error) {
	var rep control.IfaceReport
	err := client(c).Get(c.Context, "/v1/iface", &rep)
	if err == nil {
		return rep, nil
	}
	ks, kerr := bpfacct.IfaceCounters()
	if kerr != nil {
		return rep, kerr
	}
	rep = control.IfaceReport{Time: time.Now()}
	for _, k := range ks {
		rep.Ifaces = append(rep.Ifaces, control.IfaceEntry{Name: k.Name, Up: k.Up, KernelIn: int64(k.RxBytes), KernelOut: int64(k.TxBytes)})
	}
	return rep, nil
}

func printIfaces(rep control.IfaceReport) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "IFACE\tSTATE\tKERNEL IN\tKERNEL OUT\tCAPTURED IN\tCAPTURED OUT\tPROXIED IN\tPROXIED OUT\tUNATTRIBUTED (udp/icmp/other/tcp)\tDROPS")
	for _, e := range rep.Ifaces {
		state := "down"
		switch {
		case e.Blocked:
			state = "blocked (quota)"
		case e.Up:
			state = "up"
		}
		un := "-"
		if e.Capturing {
			var parts []string
			for _, p := range []string{"udp", "icmp", "other", "tcp"} {
				t := e.ByProto[p]
				if p == "tcp" {
					t = [2]int64{max(0, t[0]-e.ProxiedIn), max(0, t[1]-e.ProxiedOut)}
				}
				parts = append(parts, units.FormatSize(t[0]+t[1]))
			}
			un = strings.Join(parts, " / ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Name, state, units.FormatSize(e.KernelIn), units.FormatSize(e.KernelOut),
			units.FormatSize(e.CapturedIn), units.FormatSize(e.CapturedOut), units.FormatSize(e.ProxiedIn), units.FormatSize(e.ProxiedOut), un, e.Drops)
	}
	if !rep.Capture {
		fmt.Fprintln(w, "(netshape is not running or not capturing: kernel counters only)")
	}
	return w.Flush()
}

func printRates(c *cli.Context, prev, cur control.IfaceReport) {
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	old := map[string]control.IfaceEntry{}
	for _, e := range prev.Ifaces {
		old[e.Name] = e
	}
	var parts []string
	for _, e := range cur.Ifaces {
		o := old[e.Name]
		in := float64(e.KernelIn-o.KernelIn) / dt
		out := float64(e.KernelOut-o.KernelOut) / dt
		parts = append(parts, fmt.Sprintf("%s ↓%s ↑%s", e.Name, units.FormatRate(in), units.FormatRate(out)))
	}
	if c.Bool("json") {
		printJSON(cur)
		return
	}
	fmt.Printf("%s  %s\n", cur.Time.Local().Format("15:04:05"), strings.Join(parts, "   "))
}
