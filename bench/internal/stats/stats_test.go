package stats

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3} // unsorted on purpose
	for _, tc := range []struct {
		p, want float64
	}{
		{0, 1}, {25, 2}, {50, 3}, {75, 4}, {100, 5}, {10, 1.4}, {99, 4.96},
	} {
		if got := Percentile(xs, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Percentile(%v, %v) = %v, want %v", xs, tc.p, got, tc.want)
		}
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its argument: %v", xs)
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("single sample: got %v, want 7", got)
	}
	for _, bad := range []struct {
		xs []float64
		p  float64
	}{{nil, 50}, {xs, -1}, {xs, 101}, {xs, math.NaN()}} {
		if got := Percentile(bad.xs, bad.p); !math.IsNaN(got) {
			t.Errorf("Percentile(%v, %v) = %v, want NaN", bad.xs, bad.p, got)
		}
	}
}

func TestSummarize(t *testing.T) {
	xs := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	s := Summarize(xs)
	if s.Count != 100 || s.Min != 1 || s.Max != 100 || s.Mean != 50.5 {
		t.Errorf("Summarize: %+v", s)
	}
	if math.Abs(s.P50-50.5) > 1e-9 || math.Abs(s.P99-99.01) > 1e-9 {
		t.Errorf("Summarize percentiles: p50 %v p99 %v", s.P50, s.P99)
	}
	if e := Summarize(nil); e.Count != 0 || !math.IsNaN(e.P50) || !math.IsNaN(e.Max) {
		t.Errorf("Summarize(nil) = %+v", e)
	}
}

func TestMinMedian(t *testing.T) {
	for _, tc := range []struct {
		xs          []int
		min, median int
	}{
		{nil, 0, 0},
		{[]int{4}, 4, 4},
		{[]int{9, 1, 5}, 1, 5},
		{[]int{10, 2, 8, 4}, 2, 4},
	} {
		lo, med := MinMedian(tc.xs)
		if lo != tc.min || med != tc.median {
			t.Errorf("MinMedian(%v) = %d, %d; want %d, %d", tc.xs, lo, med, tc.min, tc.median)
		}
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Duration(850 * time.Microsecond), "850µs"},
		{Duration(12345 * time.Microsecond), "12.3ms"},
		{Duration(420 * time.Millisecond), "420ms"},
		{Duration(1420 * time.Millisecond), "1.42s"},
		{Seconds(math.NaN()), "-"},
		{Seconds(0.0025), "2.5ms"},
		{Bytes(512), "512 B"},
		{Bytes(1536), "1.5 KiB"},
		{Bytes(23.4 * 1024 * 1024), "23.4 MiB"},
		{Count(0), "0"},
		{Count(999), "999"},
		{Count(1234567.4), "1,234,567"},
		{Count(-1000), "-1,000"},
		{Count(math.Inf(1)), "-"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
