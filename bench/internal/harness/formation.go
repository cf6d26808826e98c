package harness

import (
	"time"
)

// FormationResult is the outcome of one formation run.
type FormationResult struct {
	System    System    `json:"system"`
	Bootstrap Bootstrap `json:"bootstrap"`
	N         int       `json:"n"`
	// Converged is false when the run timed out.
	Converged bool `json:"converged"`
	// Seconds runs from the last member's start (mesh: Start and
	// InitiateConnections; memberlist: Create and Join) until every member
	// knows all N; on timeout, until the timeout.
	Seconds float64 `json:"seconds"`
	// StartSpanSeconds runs from the first member's start to the last's.
	StartSpanSeconds float64 `json:"start_span_seconds"`
	// BytesSent counts what all members wrote (TCP, and UDP for
	// memberlist) from the first start until formation was seen.
	BytesSent int64 `json:"bytes_sent"`
	// MinKnown and MedianKnown tell how many members (itself included)
	// the least and the median member knew at the end; -1 when they could
	// not be counted within 15 s.
	MinKnown    int    `json:"min_known"`
	MedianKnown int    `json:"median_known"`
	Error       string `json:"error,omitempty"`
}

// Formation starts a cluster of n members with the given bootstrap and
// measures how long it takes every member to know all the others.
func Formation(sys System, b Bootstrap, n int, timeout time.Duration) FormationResult {
	res := FormationResult{System: sys, Bootstrap: b, N: n}
	c, err := startCluster(clusterSpec{System: sys, N: n, Bootstrap: b, Seed: uint64(n)})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	elapsed, ok := waitFormed(c, timeout)
	res.BytesSent = c.bytesSent()
	res.Converged = ok
	res.Seconds = elapsed.Seconds()
	first, origin := c.startTimes()
	res.StartSpanSeconds = origin.Sub(first).Seconds()
	if ok {
		res.MinKnown, res.MedianKnown = n, n
	} else {
		res.MinKnown, res.MedianKnown = minMedianKnown(c)
	}
	if err := c.stop(); err != nil {
		res.Error = err.Error()
	}
	return res
}
