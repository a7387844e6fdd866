package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/mattn/go-runewidth"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/ui"
	"github.com/netshape/netshape/units"
)

func topCommand() *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "full-screen live view: rates per app and host, quotas, and pending connections to answer",
		Description: `Keys: q quit · tab apps/hosts · o sort (rate, total, name) · / filter · ↑/↓ pick a pending
connection · a A w p f t d D s answer it as in "netshape prompt".
With --once it prints one view (or --json, one JSON report) measured over --interval and exits.`,
		Flags: []cli.Flag{
			socketFlag,
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "refresh every `DURATION`"},
			&cli.BoolFlag{Name: "once", Usage: "measure over one interval, print, exit (for scripts)"},
			jsonFlag,
			&cli.StringFlag{Name: "throttle", Value: "100KB/s", Usage: "rate for the [t] answer"},
		},
		Action: func(c *cli.Context) error {
			iv := c.Duration("interval")
			if iv < 100*time.Millisecond {
				return fmt.Errorf("bad --interval %v: at least 100ms", iv)
			}
			rate, err := units.ParseRate(c.String("throttle"))
			if err != nil {
				return fmt.Errorf("bad --throttle: %w", err)
			}
			src := newSocketSource(client(c))
			if c.Bool("once") {
				return topOnce(c.Context, src, iv, c.Bool("json"), os.Stdout)
			}
			if c.Bool("json") {
				return errors.New("--json needs --once (top --once --json prints one report)")
			}
			if !term.IsTerminal(int(os.Stdout.Fd())) || !term.IsTerminal(int(os.Stdin.Fd())) {
				return errors.New("netshape top needs a terminal; for scripts use netshape top --once --json")
			}
			m := newTopModel(src, iv, rate)
			_, err = tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(c.Context)).Run()
			if errors.Is(err, tea.ErrProgramKilled) && c.Context.Err() != nil {
				return nil
			}
			return err
		},
	}
}

// topData is one refresh: what `top --once --json` prints.
type topData struct {
	Time    time.Time         `json:"time"`
	Status  control.Status    `json:"status"`
	Live    ui.Live           `json:"live"`
	Quotas  []quotaRow        `json:"quotas"`
	Pending []control.Pending `json:"pending"`
}

// topSource fetches data and answers questions; tests fake it.
type topSource interface {
	fetch(ctx context.Context) (topData, error)
	answer(ctx context.Context, id int64, a control.Answer) (control.AnswerResult, error)
}

// socketSource reads the control socket and computes rates from the byte
// deltas of /v1/flows?closed=1 between polls.
type socketSource struct {
	cl *control.Client
	tr *ui.Tracker
}

func newSocketSource(cl *control.Client) *socketSource {
	return &socketSource{cl: cl, tr: ui.NewTracker(ui.TrackerOptions{MaxApps: 200, MaxHosts: 500})}
}

func (s *socketSource) fetch(ctx context.Context) (topData, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d topData
	var fs []flow.Flow
	if err := s.cl.Get(ctx, "/v1/flows?closed=1", &fs); err != nil {
		return d, err
	}
	d.Time = time.Now()
	s.tr.Sample(d.Time, fs)
	d.Live = s.tr.Live(false)
	if err := s.cl.Get(ctx, "/v1/status", &d.Status); err != nil {
		return d, err
	}
	if err := s.cl.Get(ctx, "/v1/quotas", &d.Quotas); err != nil {
		return d, err
	}
	if err := s.cl.Get(ctx, "/v1/pending", &d.Pending); err != nil {
		return d, err
	}
	return d, nil
}

func (s *socketSource) answer(ctx context.Context, id int64, a control.Answer) (control.AnswerResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var res control.AnswerResult
	err := s.cl.Post(ctx, fmt.Sprintf("/v1/pending/%d", id), a, &res)
	return res, err
}

// topOnce samples twice, one interval apart, and prints the second.
func topOnce(ctx context.Context, src topSource, iv time.Duration, asJSON bool, w io.Writer) error {
	if _, err := src.fetch(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(iv):
	}
	d, err := src.fetch(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		if d.Quotas == nil {
			d.Quotas = []quotaRow{}
		}
		if d.Pending == nil {
			d.Pending = []control.Pending{}
		}
		return printJSON(d)
	}
	m := newTopModel(src, iv, 0)
	m.data, m.have, m.width, m.height = d, true, 80, 24
	_, err = fmt.Fprintln(w, m.View())
	return err
}

type (
	topTick    struct{}
	topFetched struct {
		d   topData
		err error
	}
	topAnswered struct {
		id  int64
		a   control.Answer
		res control.AnswerResult
		err error
	}
)

// topModel is the Bubble Tea model of `netshape top`.
type topModel struct {
	src      topSource
	interval time.Duration
	rate     float64 // for the [t] answer

	data topData
	have bool
	err  error

	width, height int
	hosts         bool // show hosts instead of apps
	sort          ui.SortKey
	filter        string
	filtering     bool
	sel           int // index into data.Pending
	skipped       map[int64]bool
	msg           string
}

func newTopModel(src topSource, iv time.Duration, rate float64) *topModel {
	return &topModel{src: src, interval: iv, rate: rate, width: 80, height: 24, skipped: map[int64]bool{}}
}

func (m *topModel) Init() tea.Cmd { return m.fetch() }

func (m *topModel) fetch() tea.Cmd {
	return func() tea.Msg {
		d, err := m.src.fetch(context.Background())
		return topFetched{d, err}
	}
}

func (m *topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case topTick:
		return m, m.fetch()
	case topFetched:
		if msg.err != nil {
			m.err = msg.err
		} else {
			m.err, m.data, m.have = nil, msg.d, true
			m.clampSel()
		}
		return m, tea.Tick(m.interval, func(time.Time) tea.Msg { return topTick{} })
	case topAnswered:
		var ae *control.Error
		switch {
		case errors.As(msg.err, &ae) && ae.Status == 404:
			m.msg = fmt.Sprintf("#%d is no longer waiting", msg.id)
		case msg.err != nil:
			m.msg = fmt.Sprintf("#%d: answer failed: %v", msg.id, msg.err)
			return m, nil
		default:
			m.msg = fmt.Sprintf("#%d: %s, released %d connection(s)", msg.id, msg.a.Action, msg.res.Released)
			if msg.res.RuleID != 0 {
				m.msg += fmt.Sprintf(", rule %d written", msg.res.RuleID)
			}
		}
		m.removePending(msg.id)
	case tea.KeyMsg:
		return m, m.key(msg)
	}
	return m, nil
}

func (m *topModel) removePending(id int64) {
	for i, p := range m.data.Pending {
		if p.ID == id {
			m.data.Pending = append(m.data.Pending[:i:i], m.data.Pending[i+1:]...)
			break
		}
	}
	m.clampSel()
}

func (m *topModel) clampSel() {
	if m.sel >= len(m.data.Pending) {
		m.sel = len(m.data.Pending) - 1
	}
	if m.sel < 0 {
		m.sel = 0
	}
}

func (m *topModel) key(k tea.KeyMsg) tea.Cmd {
	if m.filtering {
		switch k.Type {
		case tea.KeyEnter:
			m.filtering = false
		case tea.KeyEsc:
			m.filtering, m.filter = false, ""
		case tea.KeyBackspace:
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			m.filter += string(k.Runes)
		case tea.KeyCtrlC:
			return tea.Quit
		}
		return nil
	}
	switch k.String() {
	case "q", "ctrl+c":
		return tea.Quit
	case "tab":
		m.hosts = !m.hosts
	case "o":
		m.sort = (m.sort + 1) % 3
	case "/":
		m.filtering = true
	case "esc":
		m.filter = ""
	case "up":
		if m.sel > 0 {
			m.sel--
		}
	case "down":
		if m.sel < len(m.data.Pending)-1 {
			m.sel++
		}
	case "s":
		if p, ok := m.selected(); ok {
			m.skipped[p.ID] = true
			if m.sel < len(m.data.Pending)-1 {
				m.sel++
			}
		}
	default:
		if a, ok := answerForKey(k.String(), m.rate); ok {
			p, ok := m.selected()
			if !ok {
				m.msg = "nothing is waiting for an answer"
				return nil
			}
			src := m.src
			return func() tea.Msg {
				res, err := src.answer(context.Background(), p.ID, a)
				return topAnswered{id: p.ID, a: a, res: res, err: err}
			}
		}
	}
	return nil
}

// answerForKey maps the keys of `netshape prompt` to answers.
func answerForKey(k string, rate float64) (control.Answer, bool) {
	switch k {
	case "a":
		return control.Answer{Action: "allow"}, true
	case "A":
		return control.Answer{Action: "allow", Always: true, Scope: "host"}, true
	case "w":
		return control.Answer{Action: "allow", Always: true, Scope: "domain"}, true
	case "p":
		return control.Answer{Action: "allow", Always: true, Scope: "app"}, true
	case "f":
		return control.Answer{Action: "allow", For: "1h", Scope: "host"}, true
	case "t":
		if rate <= 0 {
			rate = 100e3
		}
		return control.Answer{Action: "allow", Rate: rate}, true
	case "d":
		return control.Answer{Action: "deny"}, true
	case "D":
		return control.Answer{Action: "deny", Always: true, Scope: "host"}, true
	}
	return control.Answer{}, false
}

func (m *topModel) selected() (control.Pending, bool) {
	if m.sel < 0 || m.sel >= len(m.data.Pending) {
		return control.Pending{}, false
	}
	return m.data.Pending[m.sel], true
}

var (
	topTitle = lipgloss.NewStyle().Bold(true).Reverse(true)
	topHead  = lipgloss.NewStyle().Bold(true)
	topSel   = lipgloss.NewStyle().Reverse(true)
	topWarn  = lipgloss.NewStyle().Bold(true)
)

// fit cuts s to w cells (adding … when cut) and pads it to w.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if runewidth.StringWidth(s) > w {
		s = runewidth.Truncate(s, w, "…")
	}
	return runewidth.FillRight(s, w)
}

func rateStr(r float64) string {
	if r < 0.5 {
		return "0 B/s"
	}
	return units.FormatRate(r)
}

// View renders the screen in exactly m.height lines of at most m.width cells.
func (m *topModel) View() string {
	w, h := max(m.width, 20), max(m.height, 8)
	var lines []string
	add := func(style *lipgloss.Style, s string) {
		s = fit(s, w)
		if style != nil {
			s = style.Render(s)
		}
		lines = append(lines, s)
	}
	d := m.data
	st := d.Status
	add(&topTitle, fmt.Sprintf(" netshape top  %s  in %s  out %s  %d open  %d pending", d.Time.Local().Format("15:04:05"),
		rateStr(d.Live.In), rateStr(d.Live.Out), d.Live.Open, len(d.Pending)))
	switch {
	case m.err != nil:
		add(&topWarn, " ! "+m.err.Error())
	case !m.have:
		add(nil, " connecting…")
	default:
		add(nil, fmt.Sprintf(" since start: %s in, %s out · %d flows, %d denied · default %s", units.FormatSize(st.BytesIn),
			units.FormatSize(st.BytesOut), st.Total, st.Denied, orDash(st.Default)))
	}

	// Pending questions, at most 3 lines plus the keys.
	if n := len(d.Pending); n > 0 {
		add(&topHead, fmt.Sprintf(" WAITING (%d) a:allow A:always w:domain p:app f:1h t:slow d:deny D:never s:skip ↑↓", n))
		first := max(0, min(m.sel-1, n-3))
		for i := first; i < n && i < first+3; i++ {
			p := d.Pending[i]
			host := p.Host
			if host == "" {
				host = p.Dst
			}
			who := p.User
			if who == "" {
				who = fmt.Sprintf("uid %d", p.UID)
			}
			mark := " "
			if m.skipped[p.ID] {
				mark = "-"
			}
			s := fmt.Sprintf(" %s#%-4d %-14s → %s:%d  %s  ×%d  %ds left", mark, p.ID, p.App, host, p.Port, who, p.Count,
				max(0, int(time.Until(p.Deadline).Seconds())))
			if i == m.sel {
				add(&topSel, s)
			} else {
				add(nil, s)
			}
		}
	}
	if m.msg != "" {
		add(nil, " "+m.msg)
	}

	// Quotas, at most 3.
	for i, q := range d.Quotas {
		if i == 3 {
			add(nil, fmt.Sprintf("   … %d more quotas (netshape quotas)", len(d.Quotas)-3))
			break
		}
		add(nil, quotaLine(q, w))
	}

	// The app or host table fills the rest, less the footer.
	what, rows := "APP", d.Live.Apps
	if m.hosts {
		what, rows = "HOST", d.Live.Hosts
	}
	if m.filter != "" {
		var keep []ui.Rate
		for _, r := range rows {
			if strings.Contains(strings.ToLower(r.Name), strings.ToLower(m.filter)) {
				keep = append(keep, r)
			}
		}
		rows = keep
	}
	rows = append([]ui.Rate(nil), rows...)
	ui.SortRates(rows, m.sort)
	nameW := max(8, w-46)
	add(&topHead, fmt.Sprintf(" %s %10s %10s %10s %10s", fit(what, nameW), "IN/s", "OUT/s", "TOTAL", "OPEN"))
	room := h - len(lines) - 1
	for i, r := range rows {
		if i >= room {
			break
		}
		add(nil, fmt.Sprintf(" %s %10s %10s %10s %10d", fit(r.Name, nameW), rateStr(r.In), rateStr(r.Out),
			units.FormatSize(r.BytesIn+r.BytesOut), r.Open))
	}
	if len(rows) == 0 && room > 0 {
		add(nil, " (no traffic yet)")
	}
	for len(lines) < h-1 {
		lines = append(lines, strings.Repeat(" ", w))
	}
	lines = lines[:h-1]
	foot := fmt.Sprintf(" q quit  tab apps/hosts  o sort: %s  / filter", m.sort)
	if m.filtering {
		foot = " filter: " + m.filter + "▏ (enter keep, esc clear)"
	} else if m.filter != "" {
		foot += ": " + m.filter
	}
	add(&topTitle, foot)
	return strings.Join(lines, "\n")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// quotaLine is one quota with a bar: # used, | forecast at period end.
func quotaLine(q quotaRow, w int) string {
	pct := 0.0
	if q.Limit > 0 {
		pct = float64(q.Used) / float64(q.Limit)
	}
	label := fmt.Sprintf(" quota #%d %s", q.Quota.ID, q.ScopeText)
	tail := fmt.Sprintf(" %3.0f%% %s/%s", pct*100, units.FormatSize(q.Used), units.FormatSize(q.Limit))
	if !q.PeriodEnd.IsZero() {
		tail += " fc " + units.FormatSize(q.Forecast)
	}
	switch {
	case q.Throttled:
		tail += " SLOWED"
	case q.Exhausted:
		tail += " USED UP"
	}
	barW := 20
	label = fit(label, max(10, w-barW-2-runewidth.StringWidth(tail)))
	bar := []rune(strings.Repeat("·", barW))
	for i := range min(barW, int(pct*float64(barW)+0.5)) {
		bar[i] = '#'
	}
	if !q.PeriodEnd.IsZero() && q.Limit > 0 {
		if fc := int(float64(q.Forecast) / float64(q.Limit) * float64(barW)); fc < barW {
			bar[max(0, fc)] = '|'
		} else {
			bar[barW-1] = '>'
		}
	}
	return label + "[" + string(bar) + "]" + tail
}
