package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/units"
)

const promptKeys = `[a] allow once   [A] always (host)   [w] always (domain)   [p] always (any host for app)
[f] allow 1 hour [t] allow throttled  [d] deny once         [D] deny always   [s] skip`

func promptCommand() *cli.Command {
	return &cli.Command{
		Name:  "prompt",
		Usage: "answer held connections interactively, one key per answer",
		Flags: []cli.Flag{
			socketFlag,
			&cli.StringFlag{Name: "throttle", Value: "100KB/s", Usage: "rate for the [t] answer"},
		},
		Action: func(c *cli.Context) error {
			rate, err := units.ParseRate(c.String("throttle"))
			if err != nil {
				return fmt.Errorf("bad --throttle: %w", err)
			}
			in := os.Stdin
			if term.IsTerminal(int(in.Fd())) {
				old, err := term.MakeRaw(int(in.Fd()))
				if err != nil {
					return fmt.Errorf("terminal: %w", err)
				}
				defer term.Restore(int(in.Fd()), old)
			}
			p := &prompt{c: c, out: os.Stdout, rate: rate, items: map[int64]control.Pending{}}
			return p.run(c.Context, in)
		},
	}
}

type prompt struct {
	c       *cli.Context
	out     io.Writer
	rate    float64
	items   map[int64]control.Pending
	current int64
	skipped map[int64]bool
}

// say prints lines in raw mode (\r\n).
func (p *prompt) say(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	fmt.Fprint(p.out, strings.ReplaceAll(s, "\n", "\r\n")+"\r\n")
}

func (p *prompt) run(ctx context.Context, in io.Reader) error {
	keys := make(chan byte)
	go func() {
		r := bufio.NewReader(in)
		for {
			b, err := r.ReadByte()
			if err != nil {
				close(keys)
				return
			}
			keys <- b
		}
	}()
	events := make(chan control.Event, 64)
	go p.follow(ctx, events)
	p.say("netshape prompt: waiting for connections to answer (q to quit)")
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			p.event(e)
		case k, ok := <-keys:
			if !ok || k == 'q' || k == 3 || k == 4 { // q, Ctrl-C, Ctrl-D
				return nil
			}
			p.key(ctx, k)
		}
	}
}

// follow streams events, reconnecting (daemon restarts) until ctx ends.
func (p *prompt) follow(ctx context.Context, events chan<- control.Event) {
	cl := client(p.c)
	wasDown := false
	for ctx.Err() == nil {
		body, err := cl.Stream(ctx, "/v1/events")
		if err != nil {
			if !wasDown {
				events <- control.Event{Type: "down", Message: err.Error()}
				wasDown = true
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		wasDown = false
		events <- control.Event{Type: "reset"} // the stream starts with every pending item
		dec := json.NewDecoder(body)
		for {
			var e control.Event
			if err := dec.Decode(&e); err != nil {
				break
			}
			events <- e
		}
		body.Close()
		if ctx.Err() == nil {
			events <- control.Event{Type: "down", Message: "connection to netshape lost; reconnecting"}
			wasDown = true
		}
	}
}

func (p *prompt) event(e control.Event) {
	switch e.Type {
	case "reset":
		p.items = map[int64]control.Pending{}
		p.current = 0
	case "hello":
		p.say("connected to netshape %s", e.Message)
	case "down":
		p.say("netshape is not answering (%s); retrying…", e.Message)
		p.items = map[int64]control.Pending{}
		p.current = 0
	case "pending":
		if e.Pending != nil {
			p.items[e.Pending.ID] = *e.Pending
		}
	case "resolved":
		if _, ok := p.items[e.ID]; ok {
			delete(p.items, e.ID)
			if e.ID == p.current {
				p.say("  #%d resolved: %s", e.ID, e.Message)
				p.current = 0
			}
		}
	case "quota", "warning":
		p.say("! %s", e.Message)
	}
	p.show()
}

// show presents the oldest unanswered item when none is on screen.
func (p *prompt) show() {
	if p.current != 0 {
		return
	}
	ids := make([]int64, 0, len(p.items))
	for id := range p.items {
		if !p.skipped[id] {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	it := p.items[ids[0]]
	p.current = it.ID
	host := it.Host
	if host == "" {
		host = "(no name)"
	} else {
		host += " [" + it.HostSource + "]"
	}
	who := it.User
	if who == "" {
		who = fmt.Sprintf("uid %d", it.UID)
	}
	more := ""
	if n := len(ids) - 1; n > 0 {
		more = fmt.Sprintf("   (%d more waiting)", n)
	}
	p.say("\n#%d %s (pid %d, %s) wants %s  %s  — %d connection(s), %s today, answer within %s%s",
		it.ID, it.App, it.PID, who, host, dstString(it), it.Count, units.FormatSize(it.TodayIn+it.TodayOut),
		time.Until(it.Deadline).Round(time.Second), more)
	if it.Exe != "" {
		p.say("   %s", it.Exe)
	}
	p.say("%s", promptKeys)
}

func (p *prompt) key(ctx context.Context, k byte) {
	if p.current == 0 {
		return
	}
	id := p.current
	var a control.Answer
	switch k {
	case 'a':
		a = control.Answer{Action: "allow"}
	case 'A':
		a = control.Answer{Action: "allow", Always: true, Scope: "host"}
	case 'w':
		a = control.Answer{Action: "allow", Always: true, Scope: "domain"}
	case 'p':
		a = control.Answer{Action: "allow", Always: true, Scope: "app"}
	case 'f':
		a = control.Answer{Action: "allow", For: "1h", Scope: "host"}
	case 't':
		a = control.Answer{Action: "allow", Rate: p.rate}
	case 'd':
		a = control.Answer{Action: "deny"}
	case 'D':
		a = control.Answer{Action: "deny", Always: true, Scope: "host"}
	case 's':
		if p.skipped == nil {
			p.skipped = map[int64]bool{}
		}
		p.skipped[id] = true
		p.current = 0
		p.show()
		return
	default:
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var res control.AnswerResult
	err := client(p.c).Post(ctx, fmt.Sprintf("/v1/pending/%d", id), a, &res)
	var ae *control.Error
	switch {
	case errors.As(err, &ae) && ae.Status == 404:
		p.say("  #%d is no longer waiting", id)
	case err != nil:
		p.say("  answer failed: %v", err)
		return
	default:
		msg := fmt.Sprintf("  #%d: %s, released %d connection(s)", id, a.Action, res.Released)
		if res.RuleID != 0 {
			msg += fmt.Sprintf(", rule %d written", res.RuleID)
		}
		p.say("%s", msg)
	}
	delete(p.items, id)
	p.current = 0
	p.show()
}
