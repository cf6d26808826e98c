// Package stats holds the small statistics and formatting helpers of the
// benchmark harness: percentiles, medians and human-readable figures.
package stats

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 <= p <= 100) of xs, by linear
// interpolation between the two closest ranks (the method most spreadsheet
// and statistics packages use by default). xs need not be sorted and is not
// modified. It returns NaN when xs is empty or p is out of range.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || p < 0 || p > 100 || math.IsNaN(p) {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return sortedPercentile(s, p)
}

func sortedPercentile(s []float64, p float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	if lo == hi {
		return s[lo]
	}
	frac := rank - float64(lo)
	return s[lo] + frac*(s[hi]-s[lo])
}

// Summary describes a sample.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Summarize returns the summary of xs; every figure is NaN when xs is
// empty (Count is then 0).
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		nan := math.NaN()
		return Summary{Min: nan, Mean: nan, P50: nan, P99: nan, Max: nan}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		Count: len(s),
		Min:   s[0],
		Mean:  sum / float64(len(s)),
		P50:   sortedPercentile(s, 50),
		P99:   sortedPercentile(s, 99),
		Max:   s[len(s)-1],
	}
}

// MinMedian returns the smallest and the median of xs (the lower of the
// two middle values for an even count), or 0, 0 when xs is empty.
func MinMedian(xs []int) (lowest, median int) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[0], s[(len(s)-1)/2]
}

// Duration formats d with a precision suited to its magnitude: "850µs",
// "12.3ms", "1.42s".
func Duration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + Duration(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// Seconds formats a duration given in seconds, as Duration does.
func Seconds(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "-"
	}
	return Duration(time.Duration(s * float64(time.Second)))
}

// Bytes formats a byte count with binary prefixes: "512 B", "1.5 KiB",
// "23.4 MiB".
func Bytes(n float64) string {
	if math.IsNaN(n) {
		return "-"
	}
	const unit = 1024
	if math.Abs(n) < unit {
		return fmt.Sprintf("%.0f B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	v := n / unit
	i := 0
	for math.Abs(v) >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// Count formats a large number with thousands separators: 1234567 becomes
// "1,234,567". Fractions are rounded.
func Count(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	neg := x < 0
	n := uint64(math.Round(math.Abs(x)))
	s := fmt.Sprint(n)
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := 0; i < len(s); i++ {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
