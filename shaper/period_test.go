package shaper

import (
	"testing"
	"time"
	_ "time/tzdata" // zones for the DST cases, whatever the machine has
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPeriodBounds(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	sp := mustLoc(t, "America/Sao_Paulo") // DST began at midnight until 2019
	be := mustLoc(t, "Europe/Berlin")
	d := func(loc *time.Location, y int, m time.Month, day, h, min int) time.Time {
		return time.Date(y, m, day, h, min, 0, 0, loc)
	}
	for _, tc := range []struct {
		name       string
		p          Period
		reset      int
		loc        *time.Location
		t          time.Time
		start, end time.Time
		hours      float64 // expected length, 0: not checked
	}{
		{"day", Day, 0, be, d(be, 2025, 6, 1, 13, 0), d(be, 2025, 6, 1, 0, 0), d(be, 2025, 6, 2, 0, 0), 24},
		{"day spring forward is 23h", Day, 0, ny, d(ny, 2025, 3, 9, 12, 0), d(ny, 2025, 3, 9, 0, 0), d(ny, 2025, 3, 10, 0, 0), 23},
		{"day fall back is 25h", Day, 0, ny, d(ny, 2025, 11, 2, 1, 30), d(ny, 2025, 11, 2, 0, 0), d(ny, 2025, 11, 3, 0, 0), 25},
		{"day at midnight belongs to the new day", Day, 0, be, d(be, 2025, 6, 2, 0, 0), d(be, 2025, 6, 2, 0, 0), d(be, 2025, 6, 3, 0, 0), 24},
		{"day with no midnight (Sao Paulo 2018-11-04)", Day, 0, sp, d(sp, 2018, 11, 4, 12, 0), time.Date(2018, 11, 4, 3, 0, 0, 0, time.UTC), d(sp, 2018, 11, 5, 0, 0), 0},
		{"evening before a missing midnight", Day, 0, sp, time.Date(2018, 11, 4, 2, 30, 0, 0, time.UTC), d(sp, 2018, 11, 3, 0, 0), time.Date(2018, 11, 4, 3, 0, 0, 0, time.UTC), 0},
		{"week from monday", Week, 1, be, d(be, 2025, 3, 12, 9, 0), d(be, 2025, 3, 10, 0, 0), d(be, 2025, 3, 17, 0, 0), 0},
		{"week across DST end is 169h", Week, 1, be, d(be, 2025, 10, 28, 9, 0), d(be, 2025, 10, 27, 0, 0), d(be, 2025, 11, 3, 0, 0), 168},
		{"week across DST start", Week, 0, be, d(be, 2025, 3, 30, 9, 0), d(be, 2025, 3, 30, 0, 0), d(be, 2025, 4, 6, 0, 0), 167},
		{"week on sunday from sunday", Week, 0, ny, d(ny, 2025, 3, 9, 0, 0), d(ny, 2025, 3, 9, 0, 0), d(ny, 2025, 3, 16, 0, 0), 0},
		{"month reset 1", Month, 1, be, d(be, 2025, 2, 14, 0, 0), d(be, 2025, 2, 1, 0, 0), d(be, 2025, 3, 1, 0, 0), 0},
		{"month reset 0 means 1", Month, 0, be, d(be, 2025, 2, 14, 0, 0), d(be, 2025, 2, 1, 0, 0), d(be, 2025, 3, 1, 0, 0), 0},
		{"month reset 31 in february", Month, 31, be, d(be, 2025, 2, 14, 0, 0), d(be, 2025, 1, 31, 0, 0), d(be, 2025, 2, 28, 0, 0), 0},
		{"month reset 31 on feb 28", Month, 31, be, d(be, 2025, 2, 28, 10, 0), d(be, 2025, 2, 28, 0, 0), d(be, 2025, 3, 31, 0, 0), 0},
		{"month reset 31 leap year", Month, 31, be, d(be, 2024, 3, 1, 0, 0), d(be, 2024, 2, 29, 0, 0), d(be, 2024, 3, 31, 0, 0), 0},
		{"month reset 30 in april", Month, 30, be, d(be, 2025, 4, 30, 0, 0), d(be, 2025, 4, 30, 0, 0), d(be, 2025, 5, 30, 0, 0), 0},
		{"month reset 15 before the day", Month, 15, ny, d(ny, 2025, 1, 3, 0, 0), d(ny, 2024, 12, 15, 0, 0), d(ny, 2025, 1, 15, 0, 0), 0},
		{"month year end", Month, 1, ny, d(ny, 2025, 12, 31, 23, 59), d(ny, 2025, 12, 1, 0, 0), d(ny, 2026, 1, 1, 0, 0), 0},
		{"month one nanosecond before the reset", Month, 10, ny, d(ny, 2025, 3, 10, 0, 0).Add(-1), d(ny, 2025, 2, 10, 0, 0), d(ny, 2025, 3, 10, 0, 0), 0},
		{"time given in another zone", Day, 0, ny, time.Date(2025, 6, 2, 2, 0, 0, 0, time.UTC), d(ny, 2025, 6, 1, 0, 0), d(ny, 2025, 6, 2, 0, 0), 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, e := periodBounds(tc.p, tc.reset, tc.loc, tc.t)
			if !s.Equal(tc.start) || !e.Equal(tc.end) {
				t.Errorf("periodBounds(%v) = [%v, %v), want [%v, %v)", tc.t, s, e, tc.start, tc.end)
			}
			if tc.hours != 0 && e.Sub(s).Hours() != tc.hours {
				t.Errorf("length %v h, want %v h", e.Sub(s).Hours(), tc.hours)
			}
		})
	}
	if s, e := periodBounds(None, 0, be, t0); !s.IsZero() || !e.IsZero() {
		t.Errorf("None: [%v, %v), want zero times", s, e)
	}
}

// FuzzPeriodBounds checks the invariants for any instant, reset day and zone:
// the period contains t, the next period starts where this one ends, and its
// length is plausible.
func FuzzPeriodBounds(f *testing.F) {
	f.Add(int64(1741608000), uint8(3), uint8(31), uint8(0))
	f.Add(int64(1541300400), uint8(1), uint8(0), uint8(2))
	f.Add(int64(-86400*365*30), uint8(2), uint8(6), uint8(1))
	zones := []string{"UTC", "America/New_York", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Apia", "Asia/Tehran"}
	locs := make([]*time.Location, len(zones))
	for i, z := range zones {
		locs[i] = mustLoc(f, z)
	}
	f.Fuzz(func(t *testing.T, sec int64, period, reset, zone uint8) {
		sec %= 1 << 36 // about ±2000 years
		p := Period(period%3) + Day
		rd := int(reset)
		switch p {
		case Day:
			rd = 0
		case Week:
			rd %= 7
		case Month:
			rd %= 32
		}
		loc := locs[int(zone)%len(locs)]
		tm := time.Unix(sec, 0)
		s, e := periodBounds(p, rd, loc, tm)
		if tm.Before(s) || !tm.Before(e) {
			t.Fatalf("%v %d %s: %v not in [%v, %v)", p, rd, loc, tm, s, e)
		}
		maxLen := map[Period]time.Duration{Day: 26 * time.Hour, Week: 7*24*time.Hour + 2*time.Hour, Month: 32 * 24 * time.Hour}[p]
		minLen := map[Period]time.Duration{Day: 22 * time.Hour, Week: 7*24*time.Hour - 2*time.Hour, Month: 27 * 24 * time.Hour}[p]
		if l := e.Sub(s); l > maxLen || l < minLen {
			// Zones that skipped a whole calendar day (Apia 2011-12-30) are
			// the only excuse for a short day.
			if !(loc.String() == "Pacific/Apia" && l >= 0) {
				t.Fatalf("%v %d %s at %v: period length %v", p, rd, loc, tm, l)
			}
		}
		if s2, _ := periodBounds(p, rd, loc, e); !s2.Equal(e) {
			t.Fatalf("%v %d %s: next period starts at %v, want %v", p, rd, loc, s2, e)
		}
	})
}
