package units

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"4096", 4096}, {"2MB", 2_000_000}, {"2mb", 2_000_000}, {"2 MB", 2_000_000},
		{"1.5GiB", 3 << 29}, {"25MB", 25_000_000}, {"1KiB", 1024}, {"1KB", 1000}, {"1k", 1000},
		{"8bit", 1}, {"1Mbit", 125_000}, {"2GB", 2_000_000_000}, {"1TiB", 1 << 40}, {"512B", 512},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	for _, in := range []string{"", "MB", "-1MB", "0", "0.5", "2XB", "1..2MB", "2MB/s", "1e3", "99999999PB", "1.5.5", " ", "NaN"} {
		if v, err := ParseSize(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseSize(%q) = %d, %v; want ErrSyntax", in, v, err)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"500KB/s", 500_000}, {"10Mbit/s", 1_250_000}, {"1MB/s", 1e6}, {"2MiB/s", 2 << 20},
		{"1MBps", 1e6}, {"8bit/s", 1}, {"100", 100}, {"1.5GB/s", 1.5e9}, {"10mbit", 1.25e6}, {"10Mbps", 10e6},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRateErrors(t *testing.T) {
	for _, in := range []string{"", "/s", "fast", "0KB/s", "-5MB/s", "1bit/s", "5 parsecs", "10Q/s"} {
		if v, err := ParseRate(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseRate(%q) = %v, %v; want ErrSyntax", in, v, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {999, "999 B"}, {1000, "1 KB"}, {1_500_000, "1.5 MB"}, {2_000_000_000, "2 GB"}, {-2000, "-2 KB"}} {
		if got := FormatSize(tc.n); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := FormatRate(2e6); got != "2 MB/s" {
		t.Errorf("FormatRate = %q", got)
	}
}
