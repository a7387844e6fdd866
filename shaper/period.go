package shaper

import "time"

// periodAnchor is the start of the period that begins on the calendar day
// (y, m, d) shifted by k periods, in loc. Day overflow is normalized by
// time.Date; for months the reset day is clamped to the month's last day.
func periodAnchor(p Period, resetDay int, loc *time.Location, y int, m time.Month, d int, k int) time.Time {
	switch p {
	case Day:
		return midnight(y, m, d+k, loc)
	case Week:
		return midnight(y, m, d+7*k, loc)
	case Month:
		if resetDay < 1 {
			resetDay = 1
		}
		// First of the target month, then clamp the day.
		first := time.Date(y, m+time.Month(k), 1, 0, 0, 0, 0, loc)
		fy, fm, _ := first.Date()
		last := time.Date(fy, fm+1, 0, 0, 0, 0, 0, loc).Day()
		return midnight(fy, fm, min(resetDay, last), loc)
	}
	return time.Time{}
}

// midnight is the first instant of the calendar day (y, m, d) in loc. Where
// DST starts at midnight that day has no 00:00; time.Date then may answer an
// instant of the evening before, and the day really starts when the new zone
// offset does.
func midnight(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // normalized calendar day
	got := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if got.Before(want) {
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end
		}
	}
	return t
}

// periodBounds returns the period [start, end) that contains t. For None the
// start is the zero time and the end is the zero time (never).
func periodBounds(p Period, resetDay int, loc *time.Location, t time.Time) (start, end time.Time) {
	if p == None {
		return time.Time{}, time.Time{}
	}
	if loc == nil {
		loc = time.UTC
	}
	lt := t.In(loc)
	y, m, d := lt.Date()
	switch p {
	case Week:
		back := (int(lt.Weekday()) - resetDay + 7) % 7
		d -= back
	case Month:
		// Anchor in this month; the loop below fixes the case where the
		// reset day has not come yet.
		d = 1
	}
	// Find k with anchor(k) <= t < anchor(k+1). Starting from the calendar
	// guess, at most a couple of steps are needed; they also repair the rare
	// case where a nonexistent local midnight (DST at 00:00) moved an anchor.
	k := 0
	for i := 0; i < 8; i++ {
		s := periodAnchor(p, resetDay, loc, y, m, d, k)
		if t.Before(s) {
			k--
			continue
		}
		e := periodAnchor(p, resetDay, loc, y, m, d, k+1)
		if !t.Before(e) {
			k++
			continue
		}
		return s, e
	}
	// Unreachable for sane zones; fall back to a fixed-length day.
	s := t.Truncate(24 * time.Hour)
	return s, s.Add(24 * time.Hour)
}
