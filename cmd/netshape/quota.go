package main

import (
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/netshape/netshape/units"
)

type quotaRow struct {
	Quota struct {
		ID           int64   `json:"id"`
		ThrottleRate float64 `json:"throttle_rate"`
	} `json:"quota"`
	ScopeText   string    `json:"scope_text"`
	Used        int64     `json:"used"`
	Granted     int64     `json:"granted"`
	Limit       int64     `json:"limit"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	Rate        float64   `json:"rate"`
	Forecast    int64     `json:"forecast"`
	Exhausted   bool      `json:"exhausted"`
	Throttled   bool      `json:"throttled"`
}

func quotasCommand() *cli.Command {
	return &cli.Command{
		Name:  "quotas",
		Usage: "show each quota: scope, used, limit, period end and the forecast at period end",
		Flags: []cli.Flag{socketFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			var raw []map[string]any
			if c.Bool("json") {
				if err := client(c).Get(c.Context, "/v1/quotas", &raw); err != nil {
					return err
				}
				return printJSON(raw)
			}
			var qs []quotaRow
			if err := client(c).Get(c.Context, "/v1/quotas", &qs); err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSCOPE\tUSED\tLIMIT\t%\tPERIOD ENDS\tFORECAST\tSTATE")
			for _, q := range qs {
				end, fc := "never", "-"
				if !q.PeriodEnd.IsZero() {
					end = q.PeriodEnd.Local().Format("2006-01-02 15:04")
					fc = units.FormatSize(q.Forecast)
				}
				state := "ok"
				switch {
				case q.Throttled:
					state = "throttled to " + units.FormatRate(q.Quota.ThrottleRate)
				case q.Exhausted:
					state = "used up: cut"
				case q.Limit > 0 && q.Used*100 >= q.Limit*80:
					state = "warning"
				}
				pct := 0.0
				if q.Limit > 0 {
					pct = float64(q.Used) * 100 / float64(q.Limit)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%.0f%%\t%s\t%s\t%s\n", q.Quota.ID, q.ScopeText, units.FormatSize(q.Used),
					units.FormatSize(q.Limit), pct, end, fc, state)
			}
			return w.Flush()
		},
	}
}

func quotaCommand() *cli.Command {
	return &cli.Command{
		Name:  "quota",
		Usage: "change a quota",
		Subcommands: []*cli.Command{{
			Name:      "grant",
			Usage:     "give a quota SIZE more for this period (e.g. netshape quota grant 3 500MB)",
			ArgsUsage: "ID SIZE",
			Flags:     []cli.Flag{socketFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 {
					return fmt.Errorf("usage: netshape quota grant ID SIZE (ids: netshape quotas)")
				}
				id, err := strconv.ParseInt(c.Args().Get(0), 10, 64)
				if err != nil {
					return fmt.Errorf("quota id %q is not a number", c.Args().Get(0))
				}
				n, err := units.ParseSize(c.Args().Get(1))
				if err != nil {
					return err
				}
				if err := client(c).Post(c.Context, fmt.Sprintf("/v1/quotas/%d/grant", id), map[string]int64{"bytes": n}, nil); err != nil {
					return err
				}
				fmt.Printf("granted %s more to quota %d for this period\n", units.FormatSize(n), id)
				return nil
			},
		}},
	}
}
