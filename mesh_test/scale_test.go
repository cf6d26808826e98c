package mesh_test

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// A 60-peer mesh in one process, on memnet, converges: every peer learns
// every other with its UID, has a route to it, and a broadcast reaches
// every peer. It runs everywhere, under the race detector too, so that
// every run has a mesh larger than discovery's degree, where peers reach
// most others over several hops.
func TestScale60(t *testing.T) {
	testScale(t, 60, 3*time.Minute)
}

// The same with 200 peers. Skipped with -short, and under the race
// detector (which makes it take minutes and gigabytes) unless MESH_LONG=1.
func TestScale200(t *testing.T) {
	if testing.Short() {
		t.Skip("a 200-peer mesh takes tens of seconds: run without -short")
	}
	if raceEnabled && !longTests() {
		t.Skip("a 200-peer mesh takes minutes under the race detector: run without -race, or set MESH_LONG=1")
	}
	testScale(t, 200, 5*time.Minute)
}

// The same with 1000 peers, with MESH_LONG=1.
func TestScale1000(t *testing.T) {
	if !longTests() {
		t.Skip("set MESH_LONG=1 to run a 1000-peer mesh")
	}
	testScale(t, 1000, 15*time.Minute)
}

func testScale(t *testing.T, size int, limit time.Duration) {
	checkNoGoroutineLeak(t)
	nw, rnd := newMemNetwork(t)
	// Sparse: each peer dials at most 8 others.
	o := memOptions{discovery: true, connLimit: 8, quiet: true}
	nodes := make([]*node, size)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, n := range nodes {
			if n == nil {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				n.router.Stop()
				<-sem
			}()
		}
		wg.Wait()
	})
	for i := range nodes {
		nodes[i] = newMemNode(t, nw, i, o)
	}
	// Each peer is given up to three earlier peers, as a program would be
	// given a few addresses to join by; discovery does the rest.
	start := time.Now()
	for i := 1; i < size; i++ {
		targets := rnd.Perm(i)[:min(i, 3)]
		nodes[i].connectToIndexes(targets...)
	}
	interval := time.Duration(size) * time.Millisecond
	progress := time.Now()
	eventuallyWithin(t, limit, interval, "every peer knows every peer", func() (bool, string) {
		ok, msg := knowsAll(nodes)
		if !ok && time.Since(progress) > 30*time.Second {
			progress = time.Now()
			t.Logf("%v: %s; %d connections", time.Since(start).Round(time.Second), msg, nw.Conns())
		}
		return ok, msg
	})
	knew := time.Since(start)
	eventuallyWithin(t, limit, interval, "routes everywhere", func() (bool, string) { return routesEverywhere(nodes) })
	routed := time.Since(start)
	src := nodes[size/2]
	src.rec.merge("hello all")
	src.gossip.GossipBroadcast(newSetData("hello all"))
	broadcast := eventuallyWithin(t, limit, 10*time.Millisecond, "the broadcast reaches every peer", func() (bool, string) {
		for _, n := range nodes {
			if !n.rec.has("hello all") {
				return false, fmt.Sprintf("peer %d lacks it", n.index)
			}
		}
		return true, ""
	})
	conns := 0
	for _, n := range nodes {
		conns += len(n.router.Ourself.Connections())
	}
	t.Logf("%d peers: every peer knew every other %v after the first dials, had a route to every other after %v; a broadcast reached all in %v; %.1f connections per peer",
		size, knew.Round(time.Millisecond), routed.Round(time.Millisecond), broadcast.Round(time.Millisecond), float64(conns)/float64(size))
}
