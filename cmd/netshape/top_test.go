package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/mattn/go-runewidth"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/ui"
)

// fakeTop is a topSource with canned data that records answers.
type fakeTop struct {
	mu      sync.Mutex
	d       topData
	err     error
	answers []control.Answer
	ids     []int64
}

func (f *fakeTop) fetch(context.Context) (topData, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d, f.err
}

func (f *fakeTop) answer(_ context.Context, id int64, a control.Answer) (control.AnswerResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, id)
	f.answers = append(f.answers, a)
	return control.AnswerResult{Released: 1}, nil
}

func sampleTop() topData {
	now := time.Now()
	d := topData{Time: now, Status: control.Status{Running: true, BytesIn: 5e9, BytesOut: 3e8, Total: 420, Denied: 3, Default: "ask"}}
	d.Live = ui.Live{In: 1.25e6, Out: 3.2e4, Open: 12,
		Apps: []ui.Rate{
			{Name: "firefox", In: 1e6, Out: 2e4, BytesIn: 4e9, BytesOut: 1e8, Open: 8},
			{Name: "curl", In: 2.5e5, Out: 1.2e4, BytesIn: 3e6, BytesOut: 1e4, Open: 1},
			{Name: "a-very-long-application-name-that-does-not-fit-anywhere-at-all-in-80-columns", In: 1, BytesIn: 9e9, Open: 3},
		},
		Hosts: []ui.Rate{{Name: "cdn.example.com", In: 1e6, BytesIn: 4e9}, {Name: "198.18.0.2", In: 10, BytesIn: 10}},
	}
	for i := range 30 {
		d.Live.Apps = append(d.Live.Apps, ui.Rate{Name: fmt.Sprintf("app%02d", i), BytesIn: int64(i)})
	}
	q := quotaRow{ScopeText: "app firefox", Used: 6e9, Limit: 1e10, Forecast: 1.4e10, PeriodEnd: now.Add(48 * time.Hour)}
	q.Quota.ID = 4
	d.Quotas = []quotaRow{q}
	d.Pending = []control.Pending{
		{ID: 7, App: "curl", Dst: "198.18.0.2", Port: 443, Host: "api.example.com", User: "alice", Count: 2, Deadline: now.Add(25 * time.Second)},
		{ID: 9, App: "ssh", Dst: "198.18.0.3", Port: 22, UID: 1000, Count: 1, Deadline: now.Add(20 * time.Second)},
	}
	return d
}

func loaded(t *testing.T, f *fakeTop) *topModel {
	t.Helper()
	m := newTopModel(f, time.Second, 5e4)
	msg := m.Init()()
	m.Update(msg)
	return m
}

func checkScreen(t *testing.T, v string, w, h int) []string {
	t.Helper()
	lines := strings.Split(v, "\n")
	if len(lines) != h {
		t.Errorf("%d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if n := runewidth.StringWidth(stripANSI(l)); n > w {
			t.Errorf("line %d is %d cells wide (> %d): %q", i+1, n, w, stripANSI(l))
		}
	}
	return lines
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < '@' || s[j] > '~') {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestTopViewFits80x24(t *testing.T) {
	m := loaded(t, &fakeTop{d: sampleTop()})
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	v := stripANSI(m.View())
	checkScreen(t, v, 80, 24)
	for _, want := range []string{"in 1.25 MB/s", "firefox", "WAITING (2)", "D:never s:skip", "#7", "api.example.com:443", "quota #4", "app firefox", "q quit", "…"} {
		if !strings.Contains(v, want) {
			t.Errorf("view lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "app00") {
		t.Errorf("rows beyond the screen were drawn:\n%s", v)
	}
	for _, size := range [][2]int{{40, 10}, {120, 40}, {20, 8}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		checkScreen(t, stripANSI(m.View()), size[0], size[1])
	}
}

func TestTopKeys(t *testing.T) {
	f := &fakeTop{d: sampleTop()}
	m := loaded(t, f)
	press := func(k string) tea.Cmd {
		var msg tea.KeyMsg
		switch k {
		case "tab":
			msg = tea.KeyMsg{Type: tea.KeyTab}
		case "down":
			msg = tea.KeyMsg{Type: tea.KeyDown}
		case "enter":
			msg = tea.KeyMsg{Type: tea.KeyEnter}
		case "esc":
			msg = tea.KeyMsg{Type: tea.KeyEsc}
		default:
			msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd := m.Update(msg)
		return cmd
	}
	// Hosts view.
	press("tab")
	if v := m.View(); !strings.Contains(v, "cdn.example.com") || strings.Contains(v, "\n firefox ") {
		t.Fatalf("tab did not switch to hosts:\n%s", v)
	}
	press("tab")
	// Sort by name puts "a-very-long…" first.
	press("o")
	press("o")
	if m.sort != ui.SortName {
		t.Fatalf("sort %v", m.sort)
	}
	v := stripANSI(m.View())
	if strings.Index(v, "a-very-long") > strings.Index(v, "app00") || strings.Index(v, "app00") > strings.Index(v, "app01") || strings.Contains(v, "\n firefox ") {
		t.Fatalf("not sorted by name:\n%s", v)
	}
	// Filter.
	press("/")
	press("c")
	press("u")
	press("enter")
	v = stripANSI(m.View())
	if !strings.Contains(v, "\n curl ") || strings.Contains(v, "\n firefox ") || strings.Contains(v, "app00") {
		t.Fatalf("filter cu:\n%s", v)
	}
	press("esc")
	if m.filter != "" {
		t.Fatal("esc did not clear the filter")
	}
	// Answer the second pending item with "always" (A).
	press("down")
	cmd := press("A")
	if cmd == nil {
		t.Fatal("A gave no command")
	}
	m.Update(cmd())
	if len(f.ids) != 1 || f.ids[0] != 9 || f.answers[0] != (control.Answer{Action: "allow", Always: true, Scope: "host"}) {
		t.Fatalf("answers %v %+v", f.ids, f.answers)
	}
	if len(m.data.Pending) != 1 || !strings.Contains(m.View(), "#9: allow, released 1") {
		t.Fatalf("after answer: %+v\n%s", m.data.Pending, m.View())
	}
	// t uses the --throttle rate; d denies the remaining one.
	m.Update(press("t")())
	if f.answers[1].Rate != 5e4 || f.ids[1] != 7 {
		t.Fatalf("t answer %+v", f.answers[1])
	}
	if cmd := press("d"); cmd != nil {
		t.Fatal("answer with nothing pending sent something")
	}
	if cmd := press("q"); cmd == nil || cmd() != tea.Quit() {
		t.Fatal("q does not quit")
	}
}

func TestTopFetchError(t *testing.T) {
	f := &fakeTop{err: errors.New("netshape is not running")}
	m := loaded(t, f)
	v := stripANSI(m.View())
	checkScreen(t, v, 80, 24)
	if !strings.Contains(v, "! netshape is not running") {
		t.Fatalf("error not shown:\n%s", v)
	}
}

func TestAnswerKeysMatchPrompt(t *testing.T) {
	for _, k := range []string{"a", "A", "w", "p", "f", "t", "d", "D"} {
		if !strings.Contains(promptKeys, "["+k+"]") {
			t.Errorf("key %s is not a prompt key", k)
		}
		if _, ok := answerForKey(k, 1); !ok {
			t.Errorf("key %s gives no answer", k)
		}
	}
	if _, ok := answerForKey("x", 1); ok {
		t.Error("x answers")
	}
}

func TestTopOnceJSON(t *testing.T) {
	f := &fakeTop{d: sampleTop()}
	var sb strings.Builder
	if err := topOnce(context.Background(), f, time.Millisecond, false, &sb); err != nil {
		t.Fatal(err)
	}
	checkScreen(t, stripANSI(strings.TrimSuffix(sb.String(), "\n")), 80, 24)
	f.err = errors.New("down")
	if err := topOnce(context.Background(), f, time.Millisecond, true, &sb); err == nil {
		t.Fatal("no error when the daemon is down")
	}
}

var topScreenshot = flag.String("screenshot", "", "write the 80×24 view with sample data to this text `file` (for docs/)")

// TestTopScreenshot renders the view for docs/: go test ./cmd/netshape -run TopScreenshot -screenshot=$PWD/docs/top.txt
func TestTopScreenshot(t *testing.T) {
	if *topScreenshot == "" {
		t.Skip("only with -screenshot=FILE")
	}
	m := loaded(t, &fakeTop{d: sampleTop()})
	m.data.Live.Apps = m.data.Live.Apps[:3]
	m.data.Live.Apps[2] = ui.Rate{Name: "apt", In: 4.1e5, Out: 8e3, BytesIn: 5.6e7, BytesOut: 1e6, Open: 2}
	m.msg = "#5: allow, released 1 connection(s), rule 14 written"
	if err := os.WriteFile(*topScreenshot, []byte(stripANSI(m.View())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
