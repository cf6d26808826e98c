package main

import (
	"fmt"
	"strings"

	"github.com/gossip-mesh/mesh/bench/internal/harness"
	"github.com/gossip-mesh/mesh/bench/internal/stats"
)

// Target is a goal for mesh and how this run measured against it.
type Target struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Met is "yes", "no", or "n/a" when the run did not measure it.
	Met string `json:"met"`
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// evaluateTargets compares mesh's figures in res with its goals. Targets
// the run did not measure are left out.
func evaluateTargets(res *Results) []Target {
	var out []Target
	for _, f := range []struct {
		n    int
		secs float64
	}{{60, 1}, {200, 3}} {
		for _, r := range res.Formation {
			if r.System != harness.Mesh || r.N != f.n {
				continue
			}
			got := stats.Seconds(r.Seconds)
			if !r.Converged {
				got = "timeout (" + got + ")"
			}
			out = append(out, Target{
				Name: fmt.Sprintf("formation N=%d %s", f.n, r.Bootstrap), Goal: fmt.Sprintf("< %gs", f.secs),
				Measured: got, Met: yesNo(r.Converged && r.Error == "" && r.Seconds < f.secs),
			})
		}
	}
	for _, r := range res.Scale {
		if r.N != 1000 {
			continue
		}
		got := stats.Seconds(r.FormationSeconds)
		if !r.Converged {
			got = "timeout; known min/median " + known(r.MinKnown, r.MedianKnown)
		}
		out = append(out, Target{Name: "formation N=1000 sparse, ConnLimit " + fmt.Sprint(r.ConnLimit), Goal: "< 15s", Measured: got, Met: yesNo(r.Converged && r.FormationSeconds < 15)})
	}
	var short []string
	allDelivered, anyBcast := true, false
	for _, r := range res.Broadcast {
		if r.System != harness.Mesh {
			continue
		}
		anyBcast = true
		switch {
		case r.Sent == 0:
			allDelivered = false
			short = append(short, fmt.Sprintf("N=%d: not run (%s)", r.N, r.Error))
		case r.Complete < r.Sent || r.Error != "":
			allDelivered = false
			short = append(short, fmt.Sprintf("N=%d: %d/%d complete, %.1f%% delivered", r.N, r.Complete, r.Sent, r.DeliveredPct))
		}
		if r.N == 60 {
			got := fmt.Sprintf("%.2fms", r.P99Ms)
			if r.P99Ms < 0 {
				got = "not every message arrived"
			}
			out = append(out, Target{Name: "broadcast p99 N=60", Goal: "< 3ms", Measured: got, Met: yesNo(r.P99Ms >= 0 && r.P99Ms < 3)})
		}
	}
	if anyBcast {
		got := "every message reached every peer at every N"
		if !allDelivered {
			got = strings.Join(short, "; ")
		}
		out = append(out, Target{Name: "broadcast delivery", Goal: "100%", Measured: got, Met: yesNo(allDelivered)})
	}
	limitOf := make(map[int]float64)
	for _, l := range res.Limit {
		if l.Error == "" {
			limitOf[l.Size] = l.MsgsPerSec
		}
	}
	for _, r := range res.Unicast {
		if r.System != harness.Mesh || !r.Encrypted {
			continue
		}
		switch r.Size {
		case 100:
			out = append(out, Target{Name: "encrypted unicast 100 B", Goal: ">= 500,000 msgs/s", Measured: stats.Count(r.MsgsPerSec) + " msgs/s", Met: yesNo(r.Error == "" && r.MsgsPerSec >= 500000)})
		default:
			l := limitOf[r.Size]
			if l <= 0 {
				continue
			}
			pct := 100 * r.MsgsPerSec / l
			out = append(out, Target{
				Name: "encrypted unicast " + sizeLabel(r.Size), Goal: ">= 50% of limit",
				Measured: fmt.Sprintf("%.0f%% (%s of %s msgs/s)", pct, stats.Count(r.MsgsPerSec), stats.Count(l)),
				Met:      yesNo(r.Error == "" && pct >= 50),
			})
		}
	}
	if t, ok := updateTarget(res.Update); ok {
		out = append(out, t)
	}
	for _, r := range res.Idle {
		if r.System != harness.Mesh || r.N != 60 {
			continue
		}
		ok := r.Error == ""
		out = append(out,
			Target{Name: "idle CPU N=60", Goal: "<= 0.4 CPU-s per 30s", Measured: fmt.Sprintf("%.2f CPU-s per 30s", r.CPUPer30s), Met: yesNo(ok && r.CPUPer30s <= 0.4)},
			Target{Name: "idle RSS N=60 (whole process)", Goal: "<= 40 MB", Measured: megabytes(r.RSSBytes), Met: yesNo(ok && r.RSSBytes > 0 && r.RSSBytes <= 40e6)},
			Target{
				Name: "idle goroutines N=60", Goal: fmt.Sprintf("<= 2 per connection end + %d per router", r.RouterGoroutines),
				Measured: fmt.Sprintf("%.2f per connection end (%d goroutines, %d ends, %d routers)", r.GoroutinesPerConnEnd, r.Goroutines, r.ConnectionEnds, r.Routers),
				Met:      yesNo(ok && r.ConnectionEnds > 0 && r.GoroutinesPerConnEnd <= 2),
			})
	}
	return out
}

// updateTarget compares what one connection change cost each leaf at the
// smallest and the largest N measured: it must not grow by more than a
// quarter plus 256 bytes, where the whole entry of the hub grows by about
// 30 bytes per connection. It needs two sizes, the larger at least four
// times the smaller.
func updateTarget(rs []harness.UpdateResult) (Target, bool) {
	var lo, hi *harness.UpdateResult
	for i := range rs {
		r := &rs[i]
		if r.Error != "" {
			return Target{Name: "update for one connection change", Goal: "does not grow with N", Measured: fmt.Sprintf("N=%d: %s", r.N, r.Error), Met: "no"}, true
		}
		if lo == nil || r.N < lo.N {
			lo = r
		}
		if hi == nil || r.N > hi.N {
			hi = r
		}
	}
	if lo == nil || hi.N < 4*lo.N {
		return Target{}, false
	}
	return Target{
		Name: "update for one connection change", Goal: "does not grow with N",
		Measured: fmt.Sprintf("%s per peer at N=%d, %s at N=%d", stats.Bytes(lo.EntryBytesPerPeer), lo.N, stats.Bytes(hi.EntryBytesPerPeer), hi.N),
		Met:      yesNo(lo.Quiet && hi.Quiet && hi.EntryBytesPerPeer <= 1.25*lo.EntryBytesPerPeer+256),
	}, true
}

func targetTable(ts []Target) *table {
	t := &table{title: "mesh against its targets", header: []string{"target", "goal", "measured", "met"}}
	for _, x := range ts {
		t.add(x.Name, x.Goal, x.Measured, x.Met)
	}
	return t
}
