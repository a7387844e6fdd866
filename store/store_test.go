package store

import (
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netshape.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return t0 }
	t.Cleanup(func() { s.Close() })
	return s, path
}

func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.path)
	if err != nil {
		t.Fatal(err)
	}
	s2.now = s.now
	t.Cleanup(func() { s2.Close() })
	return s2
}

func TestOpenMigratesEmptyDatabase(t *testing.T) {
	s, path := openTemp(t)
	var v int
	if err := s.db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("version %d, %v; want %d", v, err, SchemaVersion())
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v", mode, err)
	}
	var busy int
	if err := s.db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != int(BusyTimeout.Milliseconds()) {
		t.Fatalf("busy_timeout %d, %v", busy, err)
	}
	for _, tbl := range []string{"rules", "flows", "usage_minute", "usage_hour", "usage_day", "quota_state"} {
		var n int
		if err := s.db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, tbl).Scan(&n); err != nil || n != 1 {
			t.Errorf("table %s: %d, %v", tbl, n, err)
		}
	}
	// Reopening does not migrate again (it would fail: tables exist) and
	// keeps one version row.
	s = reopen(t, s)
	var rows int
	if err := s.db.QueryRow(`SELECT count(*), max(version) FROM schema_version`).Scan(&rows, &v); err != nil || rows != 1 || v != SchemaVersion() {
		t.Fatalf("after reopen: %d rows, version %d, %v", rows, v, err)
	}
	// A database from a newer netshape is refused, clearly.
	if _, err := s.db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path); !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("got %v, want ErrNewerSchema", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing dir":     filepath.Join(dir, "nope", "x.db"),
		"parent is file":  filepath.Join(file, "x.db"),
		"path is dir":     dir,
		"not a database":  notDB,
		"odd characters?": filepath.Join(dir, "nope?#%", "x.db"),
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(path)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the path: %v", err)
			}
		})
	}
	// A name with URI special characters is a plain file name.
	odd := filepath.Join(dir, "a?b#c%20d.db")
	s, err := Open(odd)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(odd); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
}

func TestRules(t *testing.T) {
	s, _ := openTemp(t)
	in := []policy.Rule{
		{App: "/usr/bin/firefox", Host: "*.YouTube.com", Action: policy.Allow, RateIn: 2e6, Note: "yt"},
		{User: "1000", Port: "8000-8080", Iface: "eth0", Action: policy.Deny, Expires: t0.Add(time.Hour)},
		{Host: "10.0.0.0/8", Action: policy.Allow, Quota: 5e9, Period: policy.PeriodMonth, ResetDay: 3,
			Over: policy.Over{Throttle: 64000}, Created: t0.Add(-time.Hour), Rate: 1e6, RateOut: 5e5},
	}
	var ids []int64
	for _, r := range in {
		id, err := s.AddRule(r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) || ids[0] <= 0 {
		t.Fatalf("ids %v", ids)
	}
	check := func(s *Store) {
		t.Helper()
		got, err := s.Rules()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(in) {
			t.Fatalf("got %d rules", len(got))
		}
		for i, r := range got {
			want, _ := in[i].Normalize()
			want.ID = ids[i]
			if want.Created.IsZero() {
				want.Created = t0
			}
			if !r.Expires.Equal(want.Expires) || !r.Created.Equal(want.Created) {
				t.Errorf("rule %d times: %v %v, want %v %v", i, r.Expires, r.Created, want.Expires, want.Created)
			}
			r.Expires, r.Created, want.Expires, want.Created = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if r != want {
				t.Errorf("rule %d:\n got %+v\nwant %+v", i, r, want)
			}
		}
	}
	check(s)
	s = reopen(t, s)
	check(s)

	if err := s.DeleteRule(ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteRule(12345); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	// Expired rules go, with their quota counters; others stay.
	if err := s.SaveQuotaStates([]QuotaState{{RuleID: ids[1], Used: 1}, {RuleID: ids[2], Used: 2}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneExpiredRules(t0.Add(59 * time.Minute)); err != nil || n != 0 {
		t.Fatalf("prune before expiry: %d, %v", n, err)
	}
	if n, err := s.PruneExpiredRules(t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("prune at expiry: %d, %v", n, err)
	}
	rules, _ := s.Rules()
	qs, _ := s.QuotaStates()
	if len(rules) != 1 || rules[0].ID != ids[2] || len(qs) != 1 || qs[0].RuleID != ids[2] {
		t.Fatalf("after prune: rules %+v quotas %+v", rules, qs)
	}
}

func TestAddRulesAllOrNothing(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.AddRules([]policy.Rule{{Action: policy.Allow}, {Host: "bad host", Action: policy.Deny}})
	if !errors.Is(err, policy.ErrInvalidRule) || !strings.Contains(err.Error(), "#2") {
		t.Fatalf("got %v, want ErrInvalidRule naming #2", err)
	}
	if rules, err := s.Rules(); err != nil || len(rules) != 0 {
		t.Fatalf("half-written: %v, %v", rules, err)
	}
}

func mkFlow(i int) flow.Flow {
	return flow.Flow{
		ID: uint64(i), Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.MustParseAddrPort("[fd00:5e7::1]:443"),
		Start: t0.Add(time.Duration(i) * time.Second), End: t0.Add(time.Duration(i)*time.Second + 1500*time.Millisecond),
		State: flow.StateClosed, PID: 100 + i, PPID: 1, Exe: "/usr/bin/curl", Cmdline: "curl x", UID: 1000, User: "alice",
		Cgroup: "/user.slice", Host: "x.example", HostSource: flow.HostSNI, Iface: "eth0", Verdict: "allow",
		RuleID: 3, BytesIn: int64(1000 * i), BytesOut: 10, Err: "",
	}
}

func TestFlows(t *testing.T) {
	s, _ := openTemp(t)
	var batch []flow.Flow
	for i := 1; i <= 50; i++ {
		batch = append(batch, mkFlow(i))
	}
	batch[3].Err, batch[3].Src = "reset by peer", netip.AddrPort{}
	if err := s.AddFlows(batch); err != nil {
		t.Fatal(err)
	}
	if err := s.AddFlows(nil); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	got, err := s.RecentFlows(10)
	if err != nil || len(got) != 10 {
		t.Fatalf("%d flows, %v", len(got), err)
	}
	if got[0].ID != 50 || got[9].ID != 41 {
		t.Errorf("order: first %d last %d", got[0].ID, got[9].ID)
	}
	if want := batch[49]; got[0] != want {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0], want)
	}
	all, _ := s.RecentFlows(1000)
	if len(all) != 50 || all[46].Err != "reset by peer" || all[46].Src.IsValid() {
		t.Errorf("flow 4: %+v", all[46])
	}
	for i, f := range all {
		if want := batch[49-i]; f != want {
			t.Errorf("flow %d round trip:\n got %+v\nwant %+v", want.ID, f, want)
		}
	}
	if none, err := s.RecentFlows(0); err != nil || none != nil {
		t.Errorf("limit 0: %v %v", none, err)
	}
}

// AddFlows binds up to flowsPerInsert rows to a statement: batches below,
// at and across that size store every row, each value in its column.
func TestAddFlowsBatchSizes(t *testing.T) {
	if n := strings.Count(flowCols, ",") + 1; n != nFlowCols {
		t.Fatalf("flowCols names %d columns, nFlowCols says %d", n, nFlowCols)
	}
	for _, n := range []int{1, flowsPerInsert - 1, flowsPerInsert, flowsPerInsert + 1, 3*flowsPerInsert + 5} {
		s, _ := openTemp(t)
		var batch []flow.Flow
		for i := 1; i <= n; i++ {
			f := mkFlow(i)
			f.Host, f.BytesOut = fmt.Sprintf("h%d.example", i), int64(i)
			batch = append(batch, f)
		}
		if err := s.AddFlows(batch); err != nil {
			t.Fatalf("%d flows: %v", n, err)
		}
		got, err := s.RecentFlows(1000)
		if err != nil || len(got) != n {
			t.Fatalf("%d flows: got %d back, %v", n, len(got), err)
		}
		for i, f := range got {
			if want := batch[n-1-i]; f != want {
				t.Errorf("batch of %d, flow %d:\n got %+v\nwant %+v", n, want.ID, f, want)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	s, _ := openTemp(t)
	day := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	rows := []UsageRow{
		// Day 1, 10:05 and 10:05:30 (same minute bucket), 23:59; day 2 00:00 and 13:20.
		{Minute: day.Add(10*time.Hour + 5*time.Minute), App: "firefox", Host: "www.youtube.com", Iface: "eth0", Category: "video", BytesIn: 1000, BytesOut: 10},
		{Minute: day.Add(10*time.Hour + 5*time.Minute + 30*time.Second), App: "firefox", Host: "www.youtube.com", Iface: "eth0", BytesIn: 500, BytesOut: 5},
		{Minute: day.Add(23*time.Hour + 59*time.Minute), App: "curl", Host: "example.com", Iface: "wlan0", BytesIn: 200, BytesOut: 20},
		{Minute: day.Add(24 * time.Hour), App: "curl", Host: "example.com", Iface: "eth0", BytesIn: 300, BytesOut: 30},
		{Minute: day.Add(37*time.Hour + 20*time.Minute), App: "steam", Host: "cdn.steamcontent.com", Iface: "eth0", Category: "gaming", BytesIn: 7000},
	}
	if err := s.AddUsage(rows); err != nil {
		t.Fatal(err)
	}
	var n int
	s.db.QueryRow(`SELECT count(*) FROM usage_minute`).Scan(&n)
	if n != 4 {
		t.Errorf("minute rows: %d, want 4 (two rows share a bucket)", n)
	}
	s = reopen(t, s)

	tests := []struct {
		name string
		q    UsageQuery
		want []UsageTotal
	}{
		{"all by app", UsageQuery{By: ByApp}, []UsageTotal{{"steam", 7000, 0}, {"firefox", 1500, 15}, {"curl", 500, 50}}},
		{"all total", UsageQuery{}, []UsageTotal{{"", 9000, 65}}},
		{"by day", UsageQuery{By: ByDay}, []UsageTotal{{"2025-06-01", 1700, 35}, {"2025-06-02", 7300, 30}}},
		{"by iface", UsageQuery{By: ByIface}, []UsageTotal{{"eth0", 8800, 45}, {"wlan0", 200, 20}}},
		{"by category", UsageQuery{By: ByCategory}, []UsageTotal{{"gaming", 7000, 0}, {"video", 1500, 15}, {"", 500, 50}}},
		{"by host, limit 1", UsageQuery{By: ByHost, Limit: 1}, []UsageTotal{{"cdn.steamcontent.com", 7000, 0}}},
		{"filter app", UsageQuery{By: ByDay, App: "curl"}, []UsageTotal{{"2025-06-01", 200, 20}, {"2025-06-02", 300, 30}}},
		{"filter category", UsageQuery{By: ByApp, Category: "video"}, []UsageTotal{{"firefox", 1500, 15}}},
		{"one minute", UsageQuery{From: day.Add(10*time.Hour + 5*time.Minute), To: day.Add(10*time.Hour + 6*time.Minute)},
			[]UsageTotal{{"", 1500, 15}}},
		{"minute range excludes the next minute", UsageQuery{From: day.Add(10 * time.Hour), To: day.Add(10*time.Hour + 5*time.Minute)}, nil},
		{"23:30 to 00:30 across midnight", UsageQuery{From: day.Add(23*time.Hour + 30*time.Minute), To: day.Add(24*time.Hour + 30*time.Minute), By: ByIface},
			[]UsageTotal{{"eth0", 300, 30}, {"wlan0", 200, 20}}},
		{"10:00 day 1 to 14:00 day 2 (hours, a day edge, minutes)", UsageQuery{From: day.Add(10*time.Hour + 5*time.Minute), To: day.Add(38 * time.Hour), By: ByApp},
			[]UsageTotal{{"steam", 7000, 0}, {"firefox", 1500, 15}, {"curl", 500, 50}}},
		{"day 2 only", UsageQuery{From: day.Add(24 * time.Hour), To: day.Add(48 * time.Hour), By: ByApp},
			[]UsageTotal{{"steam", 7000, 0}, {"curl", 300, 30}}},
		{"empty range", UsageQuery{From: day.Add(time.Hour), To: day.Add(time.Hour)}, nil},
	}
	run := func(s *Store) {
		t.Helper()
		for _, tt := range tests {
			got, err := s.Usage(tt.q)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s:\n got %v\nwant %v", tt.name, got, tt.want)
			}
		}
	}
	run(s)

	// After the minute and hour rows are gone, whole-day ranges still answer
	// from the day table; partial ones lose only what is gone.
	if err := s.Rollup(day.Add(72*time.Hour), Retention{Minute: time.Hour, Hour: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"usage_minute", "usage_hour"} {
		s.db.QueryRow(`SELECT count(*) FROM ` + tbl).Scan(&n)
		if n != 0 {
			t.Errorf("%s has %d rows after rollup", tbl, n)
		}
	}
	got, err := s.Usage(UsageQuery{From: day, To: day.Add(48 * time.Hour), By: ByDay})
	if err != nil || !slices.Equal(got, []UsageTotal{{"2025-06-01", 1700, 35}, {"2025-06-02", 7300, 30}}) {
		t.Errorf("day table after rollup: %v, %v", got, err)
	}
	if got, _ := s.Usage(UsageQuery{From: day.Add(10 * time.Hour), To: day.Add(11 * time.Hour)}); got != nil {
		t.Errorf("pruned hour still answers: %v", got)
	}

	if _, err := s.Usage(UsageQuery{By: "planet"}); err == nil {
		t.Error("bad group accepted")
	}
	if err := s.AddUsage([]UsageRow{{Minute: day, BytesIn: -1}}); err == nil {
		t.Error("negative bytes accepted")
	}
	if err := s.AddUsage([]UsageRow{{BytesIn: 1}}); err == nil {
		t.Error("row without time accepted")
	}
}

func TestRollupRetention(t *testing.T) {
	s, _ := openTemp(t)
	now := t0
	var flows []flow.Flow
	for i, age := range []time.Duration{time.Hour, 6 * 24 * time.Hour, 8 * 24 * time.Hour} {
		f := mkFlow(i + 1)
		f.End = now.Add(-age)
		flows = append(flows, f)
	}
	if err := s.AddFlows(flows); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUsage([]UsageRow{
		{Minute: now.Add(-time.Hour), App: "a", BytesIn: 1},
		{Minute: now.Add(-3 * 24 * time.Hour), App: "a", BytesIn: 2},
		{Minute: now.Add(-100 * 24 * time.Hour), App: "a", BytesIn: 4},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRules([]policy.Rule{
		{Action: policy.Deny, Expires: now.Add(-time.Second)},
		{Action: policy.Allow, Expires: now.Add(time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollup(now, DefaultRetention()); err != nil {
		t.Fatal(err)
	}
	count := func(tbl string) (n int) {
		s.db.QueryRow(`SELECT count(*) FROM ` + tbl).Scan(&n)
		return n
	}
	for tbl, want := range map[string]int{"flows": 2, "usage_minute": 1, "usage_hour": 2, "usage_day": 3, "rules": 1} {
		if got := count(tbl); got != want {
			t.Errorf("%s: %d rows, want %d", tbl, got, want)
		}
	}
	// Zero retention keeps everything.
	if err := s.Rollup(now.Add(100*365*24*time.Hour), Retention{}); err != nil {
		t.Fatal(err)
	}
	if got := count("usage_day"); got != 3 {
		t.Errorf("Retention{} deleted usage: %d rows", got)
	}
}

func TestQuotaStates(t *testing.T) {
	s, _ := openTemp(t)
	in := []QuotaState{
		{RuleID: -2, PeriodStart: t0, Used: 100, Granted: 0},
		{RuleID: 5, Used: 7, Granted: 1000},
	}
	if err := s.SaveQuotaStates(in); err != nil {
		t.Fatal(err)
	}
	in[0].Used = 250 // overwrite
	if err := s.SaveQuotaStates(in[:1]); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	got, err := s.QuotaStates()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RuleID != -2 || got[0].Used != 250 || !got[0].PeriodStart.Equal(t0) ||
		got[1] != (QuotaState{RuleID: 5, Used: 7, Granted: 1000}) {
		t.Errorf("got %+v", got)
	}
}

// TestDiskFull fills a database capped with max_page_count and checks that
// the write fails with ErrFull, nothing of the failed batch is kept and the
// store keeps working for reads.
func TestDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "full.db")
	s, err := open(path, "max_page_count(40)")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var full error
	written := 0
	for i := 0; i < 200 && full == nil; i++ {
		batch := make([]flow.Flow, 20)
		for j := range batch {
			batch[j] = mkFlow(i*20 + j)
			batch[j].Cmdline = strings.Repeat("x", 200)
		}
		if full = s.AddFlows(batch); full == nil {
			written += len(batch)
		}
	}
	if !errors.Is(full, ErrFull) || !strings.Contains(full.Error(), "free space") {
		t.Fatalf("got %v, want ErrFull with a hint", full)
	}
	got, err := s.RecentFlows(100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != written {
		t.Fatalf("%d flows stored, want %d (the failed batch must leave nothing)", len(got), written)
	}
	if _, err := s.AddRule(policy.Rule{Action: policy.Allow, Note: strings.Repeat("n", 1000)}); err != nil && !errors.Is(err, ErrFull) {
		t.Fatalf("rule on a full disk: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	s, _ := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				if err := s.AddUsage([]UsageRow{{Minute: t0, App: fmt.Sprint("app", w), Host: "h", BytesIn: 1}}); err != nil {
					errs <- err
				}
				if err := s.AddFlows([]flow.Flow{mkFlow(w*100 + i)}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := s.Usage(UsageQuery{})
	if err != nil || len(got) != 1 || got[0].BytesIn != 40 {
		t.Errorf("usage %v, %v; want 40 bytes", got, err)
	}
}

// A second handle (the CLI, a user's sqlite3) can read while the daemon writes.
func TestSecondReader(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.AddRule(policy.Rule{Action: policy.Deny, Host: "x.com"}); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var host string
	if err := db.QueryRow(`SELECT host FROM rules`).Scan(&host); err != nil || host != "x.com" {
		t.Fatalf("reader: %q, %v", host, err)
	}
}
