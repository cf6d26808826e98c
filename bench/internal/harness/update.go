package harness

import (
	"errors"
	"fmt"
	"time"

	"github.com/gossip-mesh/mesh"
)

// UpdateResult is what one new connection of a peer with many costs the
// peers that learn of it: a star of N routers without peer discovery (a
// hub and N-1 leaves) forms and falls quiet, then a newcomer connects to
// the hub. The hub's entry lists N-1 connections, then N; sent whole to
// every leaf, as weave does, it would cost each leaf more the larger N.
// Mesh only.
type UpdateResult struct {
	N int `json:"n"`
	// EntryBytesPerPeer is what one leaf received, on average, from the
	// newcomer's arrival until the hub's new connection had reached every
	// leaf and the traffic stopped: topology entries and deltas (the hub's
	// change, the newcomer's entry).
	EntryBytesPerPeer float64 `json:"entry_bytes_per_peer"`
	// DigestBytesPerPeer is the same for digests, announcements, sync
	// requests and pulls. A router exchanges digests of the whole mesh as
	// anti-entropy while its topology changes, and whether one falls in
	// the window depends on timing: they are reported apart.
	DigestBytesPerPeer float64 `json:"digest_bytes_per_peer"`
	// Seconds is the time from the newcomer's start until every leaf saw
	// the hub's connection to it.
	Seconds float64 `json:"seconds"`
	// Quiet is false when the traffic had not stopped within the window
	// before the newcomer started or after it arrived.
	Quiet bool   `json:"quiet"`
	Error string `json:"error,omitempty"`
}

// UpdateOptions configures the update scenario.
type UpdateOptions struct {
	FormationTimeout time.Duration
	// Quiet is how long the leaves must receive nothing for the traffic to
	// count as stopped; QuietMax bounds each wait for it.
	Quiet, QuietMax time.Duration
}

// DefaultUpdateOptions are the options of a full run.
var DefaultUpdateOptions = UpdateOptions{FormationTimeout: 60 * time.Second, Quiet: 500 * time.Millisecond, QuietMax: 10 * time.Second}

// Update measures what one new connection of the hub of a star of n
// routers costs the leaves (see UpdateResult).
func Update(n int, o UpdateOptions) UpdateResult {
	res := UpdateResult{N: n}
	if n < 2 {
		res.Error = "the update scenario needs at least two routers"
		return res
	}
	opts := meshOptions{N: n, Bootstrap: Star, NoDiscovery: true, ConnLimit: n + 1}
	c, err := startMesh(opts)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	var errs []error
	defer func() {
		if err := c.stop(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			res.Error = err.Error()
		}
	}()
	if _, ok := waitFormed(c, o.FormationTimeout); !ok {
		errs = append(errs, errors.New("formation timed out"))
		return res
	}
	leaves := c.routers[1:n]
	quietBefore := waitQuiet(leaves, o.Quiet, o.QuietMax)
	entries0, digests0 := received(leaves)

	start := time.Now()
	if err := c.add(n, opts); err != nil {
		errs = append(errs, err)
		return res
	}
	hub, newcomer := c.routers[0], c.routers[n]
	if ierrs := newcomer.ConnectionMaker.InitiateConnections([]string{c.addrs[0]}, false); len(ierrs) > 0 {
		errs = append(errs, errors.Join(ierrs...))
		return res
	}
	deadline := start.Add(o.FormationTimeout)
	for !allSee(leaves, hub.Ourself.Name, newcomer.Ourself.Name) {
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("the hub's new connection did not reach every leaf within %v", o.FormationTimeout))
			return res
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.Seconds = time.Since(start).Seconds()
	quietAfter := waitQuiet(leaves, o.Quiet, o.QuietMax)
	res.Quiet = quietBefore && quietAfter
	entries1, digests1 := received(leaves)
	res.EntryBytesPerPeer = float64(entries1-entries0) / float64(len(leaves))
	res.DigestBytesPerPeer = float64(digests1-digests0) / float64(len(leaves))
	return res
}

// received sums the topology bytes the routers received: entries and
// deltas, and digests (announcements, sync requests and pulls included).
func received(rs []*mesh.Router) (entries, digests uint64) {
	for _, r := range rs {
		m := r.Metrics()
		entries += m.Received.Topology.Bytes
		digests += m.Received.Digest.Bytes
	}
	return entries, digests
}

// waitQuiet waits until the routers have received no topology for quiet,
// at most max, and reports whether they fell quiet.
func waitQuiet(rs []*mesh.Router, quiet, max time.Duration) bool {
	start := time.Now()
	e, d := received(rs)
	since := time.Now()
	for time.Since(start) < max {
		time.Sleep(quiet / 5)
		e1, d1 := received(rs)
		if e1 != e || d1 != d {
			e, d, since = e1, d1, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return true
		}
	}
	return false
}

// allSee reports whether every router knows of hub's connection to peer.
func allSee(rs []*mesh.Router, hub, peer mesh.PeerName) bool {
	for _, r := range rs {
		p := r.Peers.Fetch(hub)
		if p == nil {
			return false
		}
		found := false
		for _, c := range p.Connections() {
			if c.Name == peer {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
