package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("invalid size or rate")

// MaxBytes is the largest size or per-second rate accepted: 1 PB. Anything
// larger is a typo, not a wish.
const MaxBytes = 1e15

type unit struct {
	name string
	mult float64 // bytes per unit
}

// Longest names first so that "KiB" is not read as "K" + "iB".
var sizeUnits = []unit{
	{"kibit", 1024.0 / 8}, {"mibit", 1024 * 1024.0 / 8}, {"gibit", 1024 * 1024 * 1024.0 / 8},
	{"kbit", 1000.0 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8}, {"tbit", 1e12 / 8},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"bit", 1.0 / 8},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
	{"", 1},
}

func parse(s, what string) (float64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%w: empty %s", ErrSyntax, what)
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, suffix := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("%w: %s %q must start with a number, e.g. 2MB or 500KB/s", ErrSyntax, what, s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q: bad number %q", ErrSyntax, what, s, num)
	}
	for _, u := range sizeUnits {
		if suffix == u.name {
			b := v * u.mult
			if b > MaxBytes || math.IsInf(b, 0) || math.IsNaN(b) {
				return 0, fmt.Errorf("%w: %s %q is larger than 1 PB", ErrSyntax, what, s)
			}
			return b, nil
		}
	}
	return 0, fmt.Errorf("%w: %s %q has unknown unit %q (use B, KB, MB, GB, KiB, MiB, GiB, kbit, Mbit, Gbit)", ErrSyntax, what, s, t[i:])
}

// ParseSize parses a byte count such as "25MB", "1.5GiB" or "4096". It must be
// positive and whole bytes after scaling are rounded down.
func ParseSize(s string) (int64, error) {
	if strings.Contains(s, "/") {
		return 0, fmt.Errorf("%w: size %q looks like a rate; sizes have no /s", ErrSyntax, s)
	}
	v, err := parse(s, "size")
	if err != nil {
		return 0, err
	}
	if v < 1 {
		return 0, fmt.Errorf("%w: size %q must be at least 1 byte", ErrSyntax, s)
	}
	return int64(v), nil
}

// ParseRate parses a rate in bytes per second, such as "500KB/s", "10Mbit/s",
// "2MB/s" or "1MBps". The "/s" may be omitted.
func ParseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	lt := strings.ToLower(t)
	switch {
	case strings.HasSuffix(lt, "/s"):
		t = t[:len(t)-2]
	case strings.HasSuffix(lt, "ps") && len(lt) > 2 && (lt[len(lt)-3] == 'b' || lt[len(lt)-3] == 't'):
		t = t[:len(t)-2]
	}
	v, err := parse(t, "rate")
	if err != nil {
		return 0, fmt.Errorf("%w (in %q)", err, s)
	}
	if v < 1 {
		return 0, fmt.Errorf("%w: rate %q must be at least 1 byte per second", ErrSyntax, s)
	}
	return v, nil
}

// FormatSize formats n bytes with SI units: "1.5 MB", "512 B".
func FormatSize(n int64) string {
	f := float64(n)
	neg := ""
	if f < 0 {
		neg, f = "-", -f
	}
	for _, u := range []struct {
		s string
		v float64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if f >= u.v {
			return neg + trim(f/u.v) + " " + u.s
		}
	}
	return fmt.Sprintf("%s%d B", neg, int64(f))
}

// FormatRate formats a rate in bytes per second: "2 MB/s".
func FormatRate(bps float64) string {
	return FormatSize(int64(bps)) + "/s"
}

func trim(f float64) string {
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
