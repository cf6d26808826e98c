package harness

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/gossip-mesh/mesh/bench/internal/stats"
)

// BroadcastOptions configures the broadcast scenario.
type BroadcastOptions struct {
	// Count messages of Size bytes are sent, Interval apart.
	Count    int
	Size     int
	Interval time.Duration
	// Timeout is how long after its sending a message may take to reach
	// everyone.
	Timeout time.Duration
	// FormationTimeout bounds the formation that comes first.
	FormationTimeout time.Duration
	// Settle is the pause between formation and the first message, for the
	// connections that peer discovery adds after formation.
	Settle time.Duration
}

// DefaultBroadcastOptions are the options of a full run.
var DefaultBroadcastOptions = BroadcastOptions{
	Count: 20, Size: 64, Interval: 100 * time.Millisecond,
	Timeout: 10 * time.Second, FormationTimeout: 60 * time.Second, Settle: time.Second,
}

// BroadcastResult is the outcome of one broadcast run.
type BroadcastResult struct {
	System           System  `json:"system"`
	N                int     `json:"n"`
	FormationSeconds float64 `json:"formation_seconds"`
	Sent             int     `json:"sent"`
	// Complete counts the messages that reached all N-1 other members
	// within the timeout.
	Complete int `json:"complete"`
	// DeliveredPct is the share of (message, receiver) pairs delivered
	// within the timeout.
	DeliveredPct float64 `json:"delivered_pct"`
	// Latencies until all N-1 others had a message, over all messages; -1
	// means "not within the timeout" (the percentile fell on a message
	// that did not reach everyone).
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	TimeMs float64 `json:"timeout_ms"`
	Error  string  `json:"error,omitempty"`
}

// Broadcast forms a star cluster of n members, then sends o.Count
// broadcasts from the last member and measures, for each, the time until
// every other member has it.
//
// mesh: GossipBroadcast on the channel "bench"; each receiver's
// OnGossipBroadcast records the message and returns it when new, so it is
// relayed along the broadcast tree. memberlist: the sender queues the
// message on its TransmitLimitedQueue; each receiver records it in
// NotifyMsg and queues it on its own the first time.
func Broadcast(sys System, n int, o BroadcastOptions) BroadcastResult {
	res := BroadcastResult{System: sys, N: n, TimeMs: float64(o.Timeout.Milliseconds())}
	if n < 2 {
		res.Error = "broadcast needs at least two members"
		return res
	}
	recs := make([]*recorder, n)
	for i := range recs {
		recs[i] = newRecorder()
	}
	c, err := startCluster(clusterSpec{System: sys, N: n, Bootstrap: Star, Recorders: recs, Seed: uint64(n)})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if err := c.stop(); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}()
	elapsed, ok := waitFormed(c, o.FormationTimeout)
	res.FormationSeconds = elapsed.Seconds()
	if !ok {
		res.Error = "formation timed out"
		return res
	}
	time.Sleep(o.Settle)

	sender := n - 1
	send := func(msg []byte) {
		switch cl := c.(type) {
		case *meshCluster:
			cl.gossips[sender].GossipBroadcast(&bcastData{msgs: [][]byte{msg}})
		case *mlCluster:
			cl.delegates[sender].transmitQueue().QueueBroadcast(&mlBroadcast{msg: msg})
		}
	}
	sentAt := make([]time.Time, 0, o.Count)
	start := time.Now()
	for k := 0; k < o.Count; k++ {
		msg := make([]byte, max(o.Size, 8))
		binary.BigEndian.PutUint64(msg, uint64(k+1))
		recs[sender].record(msg)
		sentAt = append(sentAt, time.Now())
		send(msg)
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * o.Interval)))
	}
	res.Sent = len(sentAt)

	allArrived := func() bool {
		for i, r := range recs {
			if i == sender {
				continue
			}
			for k := range sentAt {
				if _, ok := r.arrival(uint64(k + 1)); !ok {
					return false
				}
			}
		}
		return true
	}
	deadline := sentAt[len(sentAt)-1].Add(o.Timeout)
	for !allArrived() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	lat := make([]float64, len(sentAt))
	delivered := 0
	for k, t0 := range sentAt {
		worst := 0.0
		for i, r := range recs {
			if i == sender {
				continue
			}
			t, ok := r.arrival(uint64(k + 1))
			if !ok || t.Sub(t0) > o.Timeout {
				worst = math.Inf(1)
				continue
			}
			delivered++
			worst = math.Max(worst, float64(t.Sub(t0))/float64(time.Millisecond))
		}
		lat[k] = worst
		if !math.IsInf(worst, 1) {
			res.Complete++
		}
	}
	res.DeliveredPct = 100 * float64(delivered) / float64(len(sentAt)*(n-1))
	s := stats.Summarize(lat)
	res.P50Ms, res.P99Ms, res.MaxMs = finite(s.P50), finite(s.P99), finite(s.Max)
	return res
}

// finite maps infinities and NaN to -1, which JSON can carry.
func finite(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return -1
	}
	return x
}
