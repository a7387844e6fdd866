package main

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/units"
)

func ruleCommand() *cli.Command {
	return &cli.Command{
		Name:  "rule",
		Usage: "add, list and remove rules",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a rule (prints its id); it applies to new flows at once, and a deny also cuts matching live ones",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					socketFlag,
					&cli.StringFlag{Name: "app", Usage: "program: exe path or name"},
					&cli.StringFlag{Name: "user", Usage: "user name or uid"},
					&cli.StringFlag{Name: "host", Usage: "host name, *.domain, IP or CIDR"},
					&cli.StringFlag{Name: "port", Usage: "port or range (8000-8080)"},
					&cli.StringFlag{Name: "iface", Usage: "interface"},
					&cli.StringFlag{Name: "action", Required: true, Usage: "allow, deny or ask"},
					&cli.StringFlag{Name: "rate", Usage: "rate limit each way, e.g. 500KB/s"},
					&cli.StringFlag{Name: "rate-in", Usage: "download rate limit"},
					&cli.StringFlag{Name: "rate-out", Usage: "upload rate limit"},
					&cli.StringFlag{Name: "quota", Usage: "byte budget, e.g. 2GB"},
					&cli.StringFlag{Name: "period", Usage: "quota period: day, week, month or none"},
					&cli.IntFlag{Name: "reset-day", Usage: "day the quota period starts: 1-28 (month), 1-7 Monday first (week)"},
					&cli.StringFlag{Name: "over", Usage: "when the quota runs out: cut (default) or throttle:RATE"},
					&cli.StringFlag{Name: "for", Usage: "expire after `DUR` (30m, 2h, 7d)"},
					&cli.StringFlag{Name: "note", Usage: "free text"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return fmt.Errorf("unexpected argument %q: every rule field is a flag (--app, --host, ...)", c.Args().First())
					}
					spec := control.RuleSpec{
						App: c.String("app"), User: c.String("user"), Host: c.String("host"), Port: c.String("port"),
						Iface: c.String("iface"), Action: c.String("action"), Rate: c.String("rate"),
						RateIn: c.String("rate-in"), RateOut: c.String("rate-out"), Quota: c.String("quota"),
						Period: c.String("period"), ResetDay: c.Int("reset-day"), Over: c.String("over"),
						For: c.String("for"), Note: c.String("note"),
					}
					var res struct {
						ID int64 `json:"id"`
					}
					if err := client(c).Post(c.Context, "/v1/rules", spec, &res); err != nil {
						return err
					}
					fmt.Println(res.ID)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list rules (negative ids come from the config file)",
				Flags: []cli.Flag{socketFlag, jsonFlag},
				Action: func(c *cli.Context) error {
					var rs []policy.Rule
					if err := client(c).Get(c.Context, "/v1/rules", &rs); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(rs)
					}
					w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ID\tACTION\tAPP\tUSER\tHOST\tPORT\tIFACE\tRATE IN/OUT\tQUOTA\tEXPIRES\tNOTE")
					for _, r := range rs {
						in, out := r.Rates()
						rate, quota, exp := "-", "-", "-"
						if in > 0 || out > 0 {
							rate = rateOrDash(in) + "/" + rateOrDash(out)
						}
						if r.Quota > 0 {
							quota = units.FormatSize(r.Quota) + "/" + string(r.Period)
						}
						if !r.Expires.IsZero() {
							exp = time.Until(r.Expires).Round(time.Second).String()
						}
						fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Action, dash(r.App), dash(r.User),
							dash(r.Host), dash(r.Port), dash(r.Iface), rate, quota, exp, r.Note)
					}
					return w.Flush()
				},
			},
			{
				Name:      "rm",
				Usage:     "remove a rule",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{socketFlag},
				Action: func(c *cli.Context) error {
					id, err := oneID(c, "rule")
					if err != nil {
						return err
					}
					return client(c).Do(c.Context, "DELETE", "/v1/rules/"+strconv.FormatInt(id, 10), nil, nil)
				},
			},
		},
	}
}

func rateOrDash(r float64) string {
	if r <= 0 {
		return "-"
	}
	return units.FormatRate(r)
}

func oneID(c *cli.Context, what string) (int64, error) {
	if c.NArg() != 1 {
		return 0, fmt.Errorf("give one %s id (see `netshape %s list`)", what, what)
	}
	id, err := strconv.ParseInt(c.Args().First(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s id %q is not a number", what, c.Args().First())
	}
	return id, nil
}

func pendingCommand() *cli.Command {
	return &cli.Command{
		Name:  "pending",
		Usage: "list connections held for an answer",
		Flags: []cli.Flag{socketFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var ps []control.Pending
			if err := client(c).Get(c.Context, "/v1/pending", &ps); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(ps)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tAPP\tPID\tUSER\tHOST\tDST\tCONNS\tWAITING\tTODAY")
			for _, p := range ps {
				fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, p.App, p.PID, dash(p.User), dash(p.Host),
					dstString(p), p.Count, time.Since(p.Since).Round(time.Second), units.FormatSize(p.TodayIn+p.TodayOut))
			}
			return w.Flush()
		},
	}
}

func dstString(p control.Pending) string {
	if strings.Contains(p.Dst, ":") {
		return "[" + p.Dst + "]:" + strconv.Itoa(int(p.Port))
	}
	return p.Dst + ":" + strconv.Itoa(int(p.Port))
}

func answerCommand(action string) *cli.Command {
	flags := []cli.Flag{
		socketFlag,
		&cli.BoolFlag{Name: "always", Usage: "also write a rule, so the question is not asked again"},
		&cli.StringFlag{Name: "scope", Value: "host", Usage: "what the rule covers: host, domain or app (any host)"},
	}
	usage := "deny a held connection (the client gets a reset)"
	if action == "allow" {
		usage = "let a held connection through"
		flags = append(flags,
			&cli.StringFlag{Name: "for", Usage: "write a rule that expires after `DUR` (30m, 2h, 7d)"},
			&cli.StringFlag{Name: "rate", Usage: "throttle it to `RATE` (e.g. 200KB/s)"})
	}
	return &cli.Command{
		Name:      action,
		Usage:     usage,
		ArgsUsage: "ID",
		Flags:     flags,
		Action: func(c *cli.Context) error {
			id, err := oneID(c, "pending")
			if err != nil {
				return err
			}
			a := control.Answer{Action: action, Always: c.Bool("always"), Scope: c.String("scope")}
			if action == "allow" {
				a.For = c.String("for")
				if r := c.String("rate"); r != "" {
					if a.Rate, err = units.ParseRate(r); err != nil {
						return err
					}
				}
			}
			res, err := answer(c, id, a)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("%s: released %d connection(s)", action, res.Released)
			if res.RuleID != 0 {
				msg += fmt.Sprintf(", rule %d written", res.RuleID)
			}
			fmt.Println(msg)
			return nil
		},
	}
}

func answer(c *cli.Context, id int64, a control.Answer) (control.AnswerResult, error) {
	var res control.AnswerResult
	err := client(c).Post(c.Context, "/v1/pending/"+url.PathEscape(strconv.FormatInt(id, 10)), a, &res)
	return res, err
}
